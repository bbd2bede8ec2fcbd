"""Reject hosts an operator has disabled."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from federator.scheduler.filters.base import HostFilter
from federator.scheduler.hoststate import HostTable
from federator.scheduler.request import HostRequest


class EnabledFilter(HostFilter):
    """Passes enabled hosts only."""

    name = "EnabledFilter"

    def mask(self, table: HostTable, sl: slice, req: HostRequest) -> NDArray[np.bool_]:
        return table.enabled[sl]

    def explain(self, table: HostTable, i: int, req: HostRequest) -> str:
        return "host is enabled" if table.enabled[i] else "host is disabled"
