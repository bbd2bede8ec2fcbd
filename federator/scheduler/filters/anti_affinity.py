"""Keep members of an anti-affinity group on different hosts."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from federator.scheduler.filters.base import HostFilter, all_pass, holds_name, positions_in_slice
from federator.scheduler.hoststate import HostTable
from federator.scheduler.request import HostRequest


class AntiAffinityFilter(HostFilter):
    """Rejects hosts already holding a member of the request's anti-affinity group."""

    name = "AntiAffinityFilter"

    def mask(self, table: HostTable, sl: slice, req: HostRequest) -> NDArray[np.bool_]:
        passed = all_pass(table, sl)
        if req.anti_affinity_hosts:
            passed[positions_in_slice(table, sl, req.zone, req.anti_affinity_hosts)] = False
        return passed

    def explain(self, table: HostTable, i: int, req: HostRequest) -> str:
        n = len(req.anti_affinity_hosts)
        if holds_name(table, i, req.zone, req.anti_affinity_hosts):
            return f"host already holds a member of the anti-affinity group (group on {n} hosts)"
        return f"host holds no member of the anti-affinity group (group on {n} hosts)"
