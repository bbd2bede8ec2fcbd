"""Prefer hosts with more free vCPUs (spread) or fewer (pack): Nova's ``CPUWeigher``."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from federator.scheduler.hoststate import HostTable
from federator.scheduler.request import HostRequest
from federator.scheduler.weighers.base import HostWeigher


class VcpuWeigher(HostWeigher):
    """Scores ``vcpus * cpu_ratio - vcpus_used``, unrounded, floored at 0.

    As Nova's ``CPUWeigher``: free vCPUs counted with the allocation ratio, but
    not rounded down as the filter's capacity is (4 physical vCPUs at ratio 1.5
    score 6.0 free, 3 at 1.5 score 4.5), and ``minval = 0``.
    """

    name = "VcpuWeigher"
    free_capacity = True
    minval = 0.0

    def weigh(
        self, table: HostTable, idx: NDArray[np.intp], req: HostRequest
    ) -> NDArray[np.float64]:
        free: NDArray[np.float64] = (
            table.vcpus_phys[idx].astype(np.float64) * table.cpu_ratio[idx] - table.vcpus_used[idx]
        )
        return free
