"""Prefer hosts with more free RAM (spread) or less (pack)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from federator.scheduler.hoststate import HostTable
from federator.scheduler.request import HostRequest
from federator.scheduler.weighers.base import HostWeigher


class RamWeigher(HostWeigher):
    """Scores schedulable free RAM in MB."""

    name = "RamWeigher"
    free_capacity = True

    def weigh(
        self, table: HostTable, idx: NDArray[np.intp], req: HostRequest
    ) -> NDArray[np.float64]:
        return (table.ram_cap[idx] - table.ram_used[idx]).astype(np.float64)
