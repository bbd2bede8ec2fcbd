"""Keep members of an affinity group on the hosts the group already uses."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from federator.scheduler.filters.base import HostFilter, all_pass, holds_name, positions_in_slice
from federator.scheduler.hoststate import HostTable
from federator.scheduler.request import HostRequest


class AffinityFilter(HostFilter):
    """Passes only ``req.affinity_hosts`` once the affinity group has members.

    ``affinity_hosts`` None (no group) or empty (group not placed yet) passes
    every host.
    """

    name = "AffinityFilter"

    def mask(self, table: HostTable, sl: slice, req: HostRequest) -> NDArray[np.bool_]:
        if not req.affinity_hosts:
            return all_pass(table, sl)
        passed = ~all_pass(table, sl)
        passed[positions_in_slice(table, sl, req.zone, req.affinity_hosts)] = True
        return passed

    def explain(self, table: HostTable, i: int, req: HostRequest) -> str:
        if req.affinity_hosts is None:
            return "no affinity group"
        if not req.affinity_hosts:
            return "affinity group has no members yet; any host qualifies"
        n = len(req.affinity_hosts)
        if holds_name(table, i, req.zone, req.affinity_hosts):
            return f"host is one of the {n} hosts holding the affinity group"
        return f"host is not one of the {n} hosts holding the affinity group"
