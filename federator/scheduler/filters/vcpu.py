"""Reject hosts without enough schedulable free vCPUs."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from federator.scheduler.filters.base import HostFilter, ratio_note, resource_text
from federator.scheduler.hoststate import HostTable
from federator.scheduler.request import HostRequest


class VcpuFilter(HostFilter):
    """Passes hosts with enough free vCPUs (physical x allocation ratio - used);
    an aggregate's ``cpu_allocation_ratio`` metadata lowers the ratio."""

    name = "VcpuFilter"

    def mask(self, table: HostTable, sl: slice, req: HostRequest) -> NDArray[np.bool_]:
        return table.free_vcpus(sl) >= req.vcpus

    def explain(self, table: HostTable, i: int, req: HostRequest) -> str:
        figures = resource_text(
            "vcpus", "", int(table.vcpus_cap[i]), int(table.vcpus_used[i]), req.vcpus
        )
        return figures + ratio_note(table, "cpu", i)
