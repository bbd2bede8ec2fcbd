"""Reject hosts that take no instances: disabled (by an administrator, in no aggregate,
no longer reported by the driver) or in maintenance."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from federator.scheduler.filters.base import HostFilter
from federator.scheduler.hoststate import HostTable
from federator.scheduler.request import HostRequest


class EnabledFilter(HostFilter):
    """Passes enabled hosts only; explains a rejection with the host's reason
    (``disabled: not in any aggregate``, ``maintenance: kernel upgrade``)."""

    name = "EnabledFilter"

    def mask(self, table: HostTable, sl: slice, req: HostRequest) -> NDArray[np.bool_]:
        return table.enabled[sl]

    def explain(self, table: HostTable, i: int, req: HostRequest) -> str:
        if table.enabled[i]:
            return "host is enabled"
        return table.reason_at(i) or "host is disabled"
