"""Prefer hosts with more free vCPUs (spread) or fewer (pack)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from federator.scheduler.hoststate import HostTable
from federator.scheduler.request import HostRequest
from federator.scheduler.weighers.base import HostWeigher


class VcpuWeigher(HostWeigher):
    """Scores schedulable free vCPUs."""

    name = "VcpuWeigher"
    free_capacity = True

    def weigh(
        self, table: HostTable, idx: NDArray[np.intp], req: HostRequest
    ) -> NDArray[np.float64]:
        return (table.vcpus_cap[idx] - table.vcpus_used[idx]).astype(np.float64)
