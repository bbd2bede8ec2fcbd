"""Keep members of an affinity group on the host (or availability zone) the group uses."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from federator.scheduler.filters.base import (
    HostFilter,
    all_pass,
    az_mask,
    holds_name,
    positions_in_slice,
)
from federator.scheduler.hoststate import HostTable
from federator.scheduler.request import HostRequest


class AffinityFilter(HostFilter):
    """Passes only ``req.affinity_hosts`` once the affinity group has members, and only
    hosts of ``req.affinity_azs`` for a group whose rule applies per availability zone.

    ``affinity_hosts`` None (no group) or empty (group not placed yet) passes
    every host; so does an empty or unset ``affinity_azs``.
    """

    name = "AffinityFilter"

    def mask(self, table: HostTable, sl: slice, req: HostRequest) -> NDArray[np.bool_]:
        passed = all_pass(table, sl)
        if req.affinity_hosts:
            passed[:] = False
            passed[positions_in_slice(table, sl, req.zone, req.affinity_hosts)] = True
        if req.affinity_azs:
            passed &= az_mask(table, sl, req.affinity_azs)
        return passed

    def explain(self, table: HostTable, i: int, req: HostRequest) -> str:
        if req.affinity_azs and table.az_at(i) not in req.affinity_azs:
            zones = ", ".join(sorted(req.affinity_azs))
            return f"host is outside availability zone {zones}, where the affinity group is"
        if req.affinity_hosts is None:
            return "no affinity group"
        if not req.affinity_hosts:
            return "affinity group has no members yet; any host qualifies"
        n = len(req.affinity_hosts)
        if holds_name(table, i, req.zone, req.affinity_hosts):
            return f"host is one of the {n} hosts holding the affinity group"
        return f"host is not one of the {n} hosts holding the affinity group"
