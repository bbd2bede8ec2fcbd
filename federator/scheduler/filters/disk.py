"""Reject hosts without enough schedulable free disk."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from federator.scheduler.filters.base import HostFilter, resource_text
from federator.scheduler.hoststate import HostTable
from federator.scheduler.request import HostRequest


class DiskFilter(HostFilter):
    """Passes hosts with enough free disk (physical x allocation ratio - used)."""

    name = "DiskFilter"

    def mask(self, table: HostTable, sl: slice, req: HostRequest) -> NDArray[np.bool_]:
        return table.free_disk_gb(sl) >= req.disk_gb

    def explain(self, table: HostTable, i: int, req: HostRequest) -> str:
        return resource_text(
            "disk", " GB", int(table.disk_cap[i]), int(table.disk_used[i]), req.disk_gb
        )
