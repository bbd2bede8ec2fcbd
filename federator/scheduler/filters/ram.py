"""Reject hosts without enough schedulable free RAM."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from federator.scheduler.filters.base import HostFilter, ratio_note, resource_text
from federator.scheduler.hoststate import HostTable
from federator.scheduler.request import HostRequest


class RamFilter(HostFilter):
    """Passes hosts with enough free RAM (physical x allocation ratio - used);
    an aggregate's ``ram_allocation_ratio`` metadata lowers the ratio."""

    name = "RamFilter"

    def mask(self, table: HostTable, sl: slice, req: HostRequest) -> NDArray[np.bool_]:
        return table.free_ram_mb(sl) >= req.ram_mb

    def explain(self, table: HostTable, i: int, req: HostRequest) -> str:
        figures = resource_text(
            "ram", " MB", int(table.ram_cap[i]), int(table.ram_used[i]), req.ram_mb
        )
        return figures + ratio_note(table, "ram", i)
