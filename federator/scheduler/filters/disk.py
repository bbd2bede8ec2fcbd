"""Reject hosts without enough schedulable free disk."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from federator.scheduler.filters.base import HostFilter, ratio_note, resource_text
from federator.scheduler.hoststate import HostTable
from federator.scheduler.request import HostRequest


class DiskFilter(HostFilter):
    """Passes hosts with enough free disk (physical x allocation ratio - used);
    an aggregate's ``disk_allocation_ratio`` metadata lowers the ratio."""

    name = "DiskFilter"

    def mask(self, table: HostTable, sl: slice, req: HostRequest) -> NDArray[np.bool_]:
        return table.free_disk_gb(sl) >= req.disk_gb

    def explain(self, table: HostTable, i: int, req: HostRequest) -> str:
        figures = resource_text(
            "disk", " GB", int(table.disk_cap[i]), int(table.disk_used[i]), req.disk_gb
        )
        return figures + ratio_note(table, "disk", i)
