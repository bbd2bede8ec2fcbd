"""Soft server-group policies: prefer the group's rule, fall back when no host keeps it.

Nova's ``ServerGroupSoftAffinityWeigher`` and ``ServerGroupSoftAntiAffinityWeigher``: the
score is the number of the group's members already on the host (or, for a group whose
rules apply per availability zone, in the host's availability zone), positive for
soft-affinity and negated for soft-anti-affinity. Each scores only requests of its own
policy; for every other request it scores every host 0, so it changes nothing.

The default multiplier is 10, where Nova's is 1: the capacity weighers each add up to 1
after normalisation, so with 1 a soft rule would lose to spread weighing as often as not,
and "prefer the rule" would mean little.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from federator.scheduler.hoststate import HostTable
from federator.scheduler.request import HostRequest, SoftGroup
from federator.scheduler.weighers.base import HostWeigher


def _members_at(table: HostTable, idx: NDArray[np.intp], req: HostRequest) -> NDArray[np.float64]:
    """Members of the request's group on each host at ``idx`` (or in its AZ)."""
    counts = np.zeros(idx.size, dtype=np.float64)
    if req.group_counts:
        where = {
            i: n
            for i, n in ((table.index_of(req.zone, h), n) for h, n in req.group_counts.items())
            if i is not None
        }
        if where:
            positions = np.fromiter(where.keys(), dtype=np.intp, count=len(where))
            values = np.fromiter(where.values(), dtype=np.float64, count=len(where))
            lookup = np.zeros(len(table), dtype=np.float64)
            lookup[positions] = values
            counts += lookup[idx]
    if req.group_az_counts:
        by_code = np.zeros(len(table.az_codes), dtype=np.float64)
        for az, n in req.group_az_counts.items():
            code = table.az_codes.get(az)
            if code is not None:
                by_code[code] = n
        counts += by_code[table.az_code[idx]]
    return counts


class _SoftGroupWeigher(HostWeigher):
    policy: SoftGroup
    sign: float
    default_multiplier = 10.0

    def weigh(
        self, table: HostTable, idx: NDArray[np.intp], req: HostRequest
    ) -> NDArray[np.float64]:
        if req.soft_group != self.policy:
            return np.zeros(idx.size, dtype=np.float64)
        return self.sign * _members_at(table, idx, req)


class SoftAffinityWeigher(_SoftGroupWeigher):
    """Prefers hosts that already hold members of the request's soft-affinity group."""

    name = "ServerGroupSoftAffinityWeigher"
    policy = "soft-affinity"
    sign = 1.0


class SoftAntiAffinityWeigher(_SoftGroupWeigher):
    """Prefers hosts holding fewer members of the request's soft-anti-affinity group."""

    name = "ServerGroupSoftAntiAffinityWeigher"
    policy = "soft-anti-affinity"
    sign = -1.0
