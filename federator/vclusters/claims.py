"""Claiming a gang plan: every member's capacity in one transaction, or nothing.

Each member claims as it would alone: a server the conditional updates of
:func:`federator.compute.claims.take` (its zone within the ranking's ceilings and not
bursting where they are high-water marks, its host within capacity, an allocation row), a
volume those of :func:`federator.volumes.claims.take` (its zone's storage ceilings, its
pool's room, a volume allocation row). All of them run in one write transaction; the
first refusal rolls the whole transaction back and names the member and what refused it.
Concurrent plans over the same capacity, in one process or many, therefore never leave a
cluster partly claimed, and never put a host, pool, zone or quota over its limit.

Rows are taken in one order by every cluster claim: zone by zone (by name), within a zone
the zone's row, then its hosts by id, then its pools by id. A single server's or a single
volume's claim takes its zone's row before its host's or pool's too, so no two claims wait
for each other in a cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from federator.compute import claims as server_claims
from federator.compute.context import ComputeContext
from federator.storage.models import Host, StoragePool
from federator.vclusters.inputs import ZoneCeilings
from federator.vclusters.planner import SERVER, Assignment, Member, Plan
from federator.volumes import claims as storage_claims

__all__ = ["PlanClaim", "claim_plan"]


@dataclass(frozen=True, slots=True)
class PlanClaim:
    """What claiming a plan did: ``ok``, or nothing at all because ``member``'s claim was
    refused (``outcome``: ``zone_limit``, ``host_full`` or ``pool_full``) by ``resource``
    (``zone local``, ``host local-host-001 of zone local``, ``pool p of zone local``).
    ``usage``: each claimed host's counters after the claim."""

    ok: bool
    member: str | None = None
    outcome: str | None = None
    resource: str | None = None
    usage: tuple[server_claims.Usage, ...] = ()


@dataclass(frozen=True, slots=True)
class _Step:
    assignment: Assignment
    member: Member
    uuid: str
    place_id: int | None  # host id for a server on a host, pool id for a volume

    def order(self) -> tuple[str, int, int]:
        kind = 0 if self.member.kind == SERVER else 1
        return (self.assignment.zone, kind, -1 if self.place_id is None else self.place_id)


def claim_plan(
    ctx: ComputeContext,
    plan: Plan,
    members: Sequence[Member],
    uuids: Mapping[str, str],
    ceilings: Mapping[str, ZoneCeilings],
    *,
    also: Callable[[Session], None] | None = None,
) -> PlanClaim:
    """Claim every member's place in ``plan`` at once, or none of them.

    ``uuids`` maps each member's name to the id its allocation is recorded under (the
    server's instance id, the volume's id); ``ceilings`` are the ranking's, per zone, as
    :func:`federator.vclusters.inputs.gather` returned them with the zones the plan was
    made from. On success the scheduler's host cache is brought up to date. ``also`` runs
    in the same transaction once every claim holds (the caller's records of the members),
    so the claims and what they are for are written together or not at all.

    :raises ValueError: ``plan`` has no assignment (it failed), or a member, its id or its
        zone's ceilings are missing.
    """
    if not plan.ok or not plan.assignments:
        raise ValueError("only a plan that places every member can be claimed")
    by_name = {m.name: m for m in members}
    for a in plan.assignments:
        if a.member not in by_name or a.member not in uuids or a.zone not in ceilings:
            raise ValueError(f"member {a.member!r} has no size, id or zone ceilings to claim")
    with ctx.api.write() as s:
        steps, missing = _steps(s, plan.assignments, by_name, uuids)
        if missing is not None:
            s.rollback()
            return missing
        usage: dict[int, server_claims.Usage] = {}
        for step in sorted(steps, key=_Step.order):
            refused = _take(s, step, ceilings[step.assignment.zone], usage)
            if refused is not None:
                s.rollback()
                if refused.outcome == server_claims.ClaimOutcome.HOST_FULL.value:
                    assert step.place_id is not None
                    ctx.hosts.refresh_host(step.place_id)
                return refused
        if also is not None:
            also(s)
    for u in usage.values():
        ctx.hosts.set_usage(u.host_id, u.vcpus_used, u.ram_used_mb, u.disk_used_gb, u.instances)
    return PlanClaim(True, usage=tuple(usage.values()))


def _steps(
    s: Session,
    assignments: Sequence[Assignment],
    members: Mapping[str, Member],
    uuids: Mapping[str, str],
) -> tuple[list[_Step], PlanClaim | None]:
    """Each assignment with the id of its host or pool; a refusal naming the first place
    that no longer exists."""
    host_keys = {(a.zone, a.host) for a in assignments if _is_server(members, a) and a.host}
    pool_keys = {(a.zone, a.pool) for a in assignments if not _is_server(members, a)}
    hosts: dict[tuple[str, str], int] = {}
    pools: dict[tuple[str, str], int] = {}
    if host_keys:
        rows = s.execute(
            select(Host.zone, Host.name, Host.id).where(
                tuple_(Host.zone, Host.name).in_(sorted(host_keys))
            )
        )
        hosts = {(z, n): i for z, n, i in rows}
    if pool_keys:
        rows = s.execute(
            select(StoragePool.zone, StoragePool.name, StoragePool.id).where(
                tuple_(StoragePool.zone, StoragePool.name).in_(sorted(pool_keys))
            )
        )
        pools = {(z, n): i for z, n, i in rows}
    steps = []
    for a in assignments:
        m = members[a.member]
        place_id: int | None = None
        if m.kind == SERVER and a.host is not None:
            place_id = hosts.get((a.zone, a.host))
            if place_id is None:
                return [], _refusal(a, server_claims.ClaimOutcome.HOST_FULL.value)
        elif m.kind != SERVER:
            place_id = pools.get((a.zone, a.pool or ""))
            if place_id is None:
                return [], _refusal(a, storage_claims.StorageOutcome.POOL_FULL.value)
        steps.append(_Step(a, m, uuids[a.member], place_id))
    return steps, None


def _is_server(members: Mapping[str, Member], a: Assignment) -> bool:
    return members[a.member].kind == SERVER


def _take(
    s: Session, step: _Step, ceiling: ZoneCeilings, usage: dict[int, server_claims.Usage]
) -> PlanClaim | None:
    """Run one member's claim in ``s``; the refusal, or None when it holds."""
    a, m = step.assignment, step.member
    if m.kind == SERVER:
        result = server_claims.take(
            s,
            instance_uuid=step.uuid,
            zone=a.zone,
            host_id=step.place_id,
            res=server_claims.Resources(m.vcpus, m.ram_mb, m.disk_gb),
            limits=ceiling.limits,
            require_not_bursting=ceiling.thresholded,
        )
        if result.outcome is not server_claims.ClaimOutcome.OK:
            return _refusal(a, result.outcome.value)
        if result.host_usage is not None:
            usage[result.host_usage.host_id] = result.host_usage
        return None
    assert step.place_id is not None
    claim = storage_claims.StorageClaim(
        step.uuid, a.zone, m.size_gb, ceiling.gb_limit, ceiling.volumes_limit,
        ceiling.storage_thresholded,
    )  # fmt: skip
    outcome = storage_claims.take(s, claim, step.place_id)
    if outcome is not storage_claims.StorageOutcome.OK:
        return _refusal(a, outcome.value)
    return None


def _refusal(a: Assignment, outcome: str) -> PlanClaim:
    if outcome == server_claims.ClaimOutcome.ZONE_LIMIT.value:
        resource = f"zone {a.zone}"
    elif a.pool is not None and outcome == storage_claims.StorageOutcome.POOL_FULL.value:
        resource = f"pool {a.pool} of zone {a.zone}"
    else:
        resource = f"host {a.host} of zone {a.zone}"
    return PlanClaim(False, member=a.member, outcome=outcome, resource=resource)
