"""Keep members of an anti-affinity group apart: on different hosts, or, for a group whose
rules apply per availability zone, in different availability zones."""

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


class AntiAffinityFilter(HostFilter):
    """Rejects hosts in ``req.anti_affinity_hosts`` (each already holds as many members of
    the request's anti-affinity group as the group allows per host) and hosts of an
    availability zone in ``req.anti_affinity_azs``."""

    name = "AntiAffinityFilter"

    def mask(self, table: HostTable, sl: slice, req: HostRequest) -> NDArray[np.bool_]:
        passed = all_pass(table, sl)
        if req.anti_affinity_hosts:
            passed[positions_in_slice(table, sl, req.zone, req.anti_affinity_hosts)] = False
        if req.anti_affinity_azs:
            passed &= ~az_mask(table, sl, req.anti_affinity_azs)
        return passed

    def explain(self, table: HostTable, i: int, req: HostRequest) -> str:
        n = len(req.anti_affinity_hosts)
        if holds_name(table, i, req.zone, req.anti_affinity_hosts):
            return (
                "host already holds as many members of the anti-affinity group as the group "
                f"allows ({n} host(s) are full for the group)"
            )
        if table.az_at(i) in req.anti_affinity_azs:
            return (
                f"availability zone {table.az_at(i)} already holds as many members of the "
                "anti-affinity group as the group allows"
            )
        return f"host holds no member of the anti-affinity group ({n} host(s) are full for it)"
