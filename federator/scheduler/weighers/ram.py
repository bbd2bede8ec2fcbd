"""Prefer hosts with more free RAM (spread) or less (pack): Nova's ``RAMWeigher``."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from federator.scheduler.hoststate import HostTable
from federator.scheduler.request import HostRequest
from federator.scheduler.weighers.base import HostWeigher


class RamWeigher(HostWeigher):
    """Scores free physical RAM in MB, ``ram_mb - ram_used_mb``, floored at 0.

    As Nova's ``RAMWeigher`` scores ``HostState.free_ram_mb`` (``memory_mb -
    memory_mb_used`` from the resource tracker): the allocation ratio lets the
    filter admit more, but the weigher prefers the host with the most RAM really
    free. ``minval = 0`` scores a host overcommitted beyond its physical RAM 0.
    """

    name = "RamWeigher"
    free_capacity = True
    minval = 0.0

    def weigh(
        self, table: HostTable, idx: NDArray[np.intp], req: HostRequest
    ) -> NDArray[np.float64]:
        return (table.ram_phys[idx] - table.ram_used[idx]).astype(np.float64)
