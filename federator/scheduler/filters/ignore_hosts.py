"""Skip hosts that already failed this request."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from federator.scheduler.filters.base import HostFilter, all_pass, holds_name, positions_in_slice
from federator.scheduler.hoststate import HostTable
from federator.scheduler.request import HostRequest


class IgnoreHostsFilter(HostFilter):
    """Rejects ``req.ignore_hosts``: hosts a reschedule must not try again."""

    name = "IgnoreHostsFilter"

    def mask(self, table: HostTable, sl: slice, req: HostRequest) -> NDArray[np.bool_]:
        passed = all_pass(table, sl)
        if req.ignore_hosts:
            passed[positions_in_slice(table, sl, req.zone, req.ignore_hosts)] = False
        return passed

    def explain(self, table: HostTable, i: int, req: HostRequest) -> str:
        n = len(req.ignore_hosts)
        if holds_name(table, i, req.zone, req.ignore_hosts):
            return f"host already failed this request ({n} hosts ignored)"
        return f"host has not failed this request ({n} hosts ignored)"
