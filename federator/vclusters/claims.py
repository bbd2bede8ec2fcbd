"""Claiming a gang plan: every member's capacity in one transaction, or nothing.

The claims are those a single server's and a single volume's would make
(:func:`federator.compute.claims.take`, :func:`federator.volumes.claims.take`), batched:

* per zone, one conditional update of its counters by what all the zone's servers ask,
  within the ranking's ceilings and not bursting where they are high-water marks; one by
  what all its volumes ask, within the storage ceilings. The ceilings are absolute, so the
  total fits exactly when every member's claim in turn would;
* per host, its servers' total added only while the host stays within capacity, and per
  pool its volumes' total only while the pool keeps room: one conditional update for all
  hosts (all pools) of a zone, each row with its own amount and condition, every row
  having to match;
* one insert of every allocation row and one of every volume allocation row.

All of them run in one write transaction; the first refusal rolls the whole transaction
back and names the member and what refused it. Concurrent plans over the same capacity,
in one process or many, therefore never leave a cluster partly claimed, and never put a
host, pool, zone or quota over its limit.

Rows are taken in one order by every cluster claim: zone by zone (by name), within a zone
the zone's row, then its hosts by id, then its pools by id (on PostgreSQL a ``SELECT ...
FOR UPDATE`` in id order takes a zone's hosts or pools before they are updated; SQLite's
write transaction holds the whole database). A single server's or a single volume's claim
takes its zone's row before its host's or pool's too, so no two claims wait for each
other in a cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, and_, case, insert, or_, select, update
from sqlalchemy.orm import Session

from federator.compute import claims as server_claims
from federator.compute.context import ComputeContext
from federator.storage.models import (
    Allocation,
    Host,
    StoragePool,
    VolumeAllocation,
    Zone,
    utcnow,
)
from federator.vclusters.inputs import ZoneCeilings
from federator.vclusters.model import SERVER, Assignment, Member, Plan
from federator.volumes import claims as storage_claims

__all__ = ["PlanClaim", "claim_plan"]

# The tables, not the mapped classes: Core statements skip the ORM's work per statement
# (no object in the session is affected by these counters).
_ZONES = cast(Table, Zone.__table__)
_HOSTS = cast(Table, Host.__table__)
_POOLS = cast(Table, StoragePool.__table__)
_ALLOCATIONS = cast(Table, Allocation.__table__)
_VOLUME_ALLOCATIONS = cast(Table, VolumeAllocation.__table__)
_ROWS_PER_UPDATE = 500
"""Hosts (pools) one update takes at most: a few bound parameters each, well within any
database's limit."""

_HOST_FULL = server_claims.ClaimOutcome.HOST_FULL.value
_POOL_FULL = storage_claims.StorageOutcome.POOL_FULL.value
_ZONE_LIMIT = server_claims.ClaimOutcome.ZONE_LIMIT.value


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


@dataclass(frozen=True, slots=True)
class _Refused:
    """A refusal, and the host to re-read into the scheduler's cache when it was one."""

    claim: PlanClaim
    host_id: int | None = None  # the host that refused, whose cached figures were stale


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

    The refusal reported is the first in this order: a host or pool of the plan that no
    longer exists (in the plan's order); then zone by zone (by name) the servers' ceilings,
    their hosts (by id), the volumes' ceilings, their pools (by id). It names the member
    whose claim, made one by one in that order, is the first the resource refuses.

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
        steps.sort(key=_Step.order)
        by_zone: dict[str, list[_Step]] = {}
        for step in steps:
            by_zone.setdefault(step.assignment.zone, []).append(step)
        lock = not ctx.api.is_sqlite
        usage: dict[int, server_claims.Usage] = {}
        for zone, in_zone in by_zone.items():  # in name order: ``steps`` are sorted
            refused = _claim_zone(s, zone, in_zone, ceilings[zone], lock, usage)
            if refused is not None:
                s.rollback()
                if refused.host_id is not None:
                    ctx.hosts.refresh_host(refused.host_id)
                return refused.claim
        _record(s, steps)
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
    hosts = _ids(s, _HOSTS, host_keys)
    pools = _ids(s, _POOLS, pool_keys)
    steps = []
    for a in assignments:
        m = members[a.member]
        place_id: int | None = None
        if m.kind == SERVER and a.host is not None:
            place_id = hosts.get((a.zone, a.host))
            if place_id is None:
                return [], _refusal(a, _HOST_FULL)
        elif m.kind != SERVER:
            place_id = pools.get((a.zone, a.pool or ""))
            if place_id is None:
                return [], _refusal(a, _POOL_FULL)
        steps.append(_Step(a, m, uuids[a.member], place_id))
    return steps, None


def _ids(
    s: Session, table: Table, keys: Iterable[tuple[str, str | None]]
) -> dict[tuple[str, str], int]:
    """The ids of the named rows of ``table`` (hosts or pools), by (zone, name)."""
    names: dict[str, list[str | None]] = {}
    for zone, name in sorted(keys, key=lambda k: (k[0], k[1] or "")):
        names.setdefault(zone, []).append(name)
    if not names:
        return {}
    # Zone by zone, so the (zone, name) unique index finds each row; a row-value IN over
    # (zone, name) pairs makes SQLite scan the whole index instead.
    c = table.c
    rows = s.execute(
        select(c.zone, c.name, c.id).where(
            or_(*(and_(c.zone == zone, c.name.in_(ns)) for zone, ns in names.items()))
        )
    )
    return {(zone, name): i for zone, name, i in rows}


def _is_server(members: Mapping[str, Member], a: Assignment) -> bool:
    return members[a.member].kind == SERVER


def _claim_zone(
    s: Session,
    zone: str,
    steps: Sequence[_Step],
    ceiling: ZoneCeilings,
    lock: bool,
    usage: dict[int, server_claims.Usage],
) -> _Refused | None:
    """Claim what ``steps`` (sorted: servers, then volumes, each by place id) take in
    ``zone``; the refusal, or None when every claim holds. ``lock``: take the hosts' and
    pools' rows in id order first. Each claimed host's counters go into ``usage``."""
    servers = [st for st in steps if st.member.kind == SERVER]
    volumes = [st for st in steps if st.member.kind != SERVER]
    if servers:
        refused = _claim_servers(s, zone, servers, ceiling, lock, usage)
        if refused is not None:
            return refused
    if volumes:
        return _claim_volumes(s, zone, volumes, ceiling, lock)
    return None


def _claim_servers(
    s: Session,
    zone: str,
    steps: Sequence[_Step],
    ceiling: ZoneCeilings,
    lock: bool,
    usage: dict[int, server_claims.Usage],
) -> _Refused | None:
    """The servers' claims in ``zone`` (``steps`` hostless first, then by host id): the
    zone's counters, then their hosts'; the refusal, or None when they all hold."""
    z = _ZONES.c
    vcpus = sum(st.member.vcpus for st in steps)
    ram_mb = sum(st.member.ram_mb for st in steps)
    disk_gb = sum(st.member.disk_gb for st in steps)
    # As compute.claims.take's, for the total: the ceilings are absolute.
    cond: list[ColumnElement[bool]] = [z.name == zone, z.state == "available"]
    if ceiling.thresholded:
        cond.append(z.bursting.is_(False))
    limits = ceiling.limits
    if limits.ram_mb is not None:
        cond.append(z.ram_used_mb + ram_mb <= limits.ram_mb)
    if limits.vcpus is not None:
        cond.append(z.vcpus_used + vcpus <= limits.vcpus)
    if limits.instances is not None:
        cond.append(z.instances + len(steps) <= limits.instances)
    moved = s.execute(
        update(_ZONES)
        .where(*cond)
        .values(
            ram_used_mb=z.ram_used_mb + ram_mb,
            vcpus_used=z.vcpus_used + vcpus,
            disk_used_gb=z.disk_used_gb + disk_gb,
            instances=z.instances + len(steps),
            updated_at=utcnow(),
        )
    )
    if moved.rowcount != 1:  # type: ignore[attr-defined]
        first = _zone_crossing(s, zone, steps, ceiling)
        return _Refused(_refusal(steps[first].assignment, _ZONE_LIMIT))
    on_host: dict[int, list[_Step]] = {}
    for st in steps:
        if st.place_id is not None:
            on_host.setdefault(st.place_id, []).append(st)
    ids = sorted(on_host)
    for at in range(0, len(ids), _ROWS_PER_UPDATE):
        chunk = ids[at : at + _ROWS_PER_UPDATE]
        if lock:
            s.execute(
                select(_HOSTS.c.id)
                .where(_HOSTS.c.id.in_(chunk))
                .order_by(_HOSTS.c.id)
                .with_for_update()
            )
        rows = s.execute(_take_on_hosts({i: on_host[i] for i in chunk})).all()
        for host_id, v, r, d, n in sorted(rows, key=lambda row: int(row[0])):
            usage[host_id] = server_claims.Usage(host_id, v, r, d, n)
        if len(rows) != len(chunk):
            full = min(set(chunk) - {row[0] for row in rows})
            first = _host_crossing(s, full, on_host[full])
            return _Refused(_refusal(on_host[full][first].assignment, _HOST_FULL), full)
    return None


def _take_on_hosts(on_host: Mapping[int, Sequence[_Step]]) -> Any:
    """The conditional UPDATE adding each host's servers to it, every host only while it
    stays enabled and within capacity (allocation ratios applied), as
    ``compute.claims``'s claim on one host; it returns each claimed host's id and new
    usage, and no row for a host that refused."""
    h = _HOSTS.c
    vcpus = _per_row(h.id, {i: sum(st.member.vcpus for st in on) for i, on in on_host.items()})
    ram = _per_row(h.id, {i: sum(st.member.ram_mb for st in on) for i, on in on_host.items()})
    disk = _per_row(h.id, {i: sum(st.member.disk_gb for st in on) for i, on in on_host.items()})
    count = _per_row(h.id, {i: len(on) for i, on in on_host.items()})
    return (
        update(_HOSTS)
        .where(
            h.id.in_(list(on_host)),
            h.enabled.is_(True),
            h.ram_used_mb + ram <= h.ram_mb * h.ram_ratio,
            h.vcpus_used + vcpus <= h.vcpus * h.cpu_ratio,
            h.disk_used_gb + disk <= h.disk_gb * h.disk_ratio,
        )
        .values(
            ram_used_mb=h.ram_used_mb + ram,
            vcpus_used=h.vcpus_used + vcpus,
            disk_used_gb=h.disk_used_gb + disk,
            instances=h.instances + count,
            updated_at=utcnow(),
        )
        .returning(h.id, h.vcpus_used, h.ram_used_mb, h.disk_used_gb, h.instances)
    )


def _claim_volumes(
    s: Session, zone: str, steps: Sequence[_Step], ceiling: ZoneCeilings, lock: bool
) -> _Refused | None:
    """The volumes' claims in ``zone`` (``steps`` by pool id): the zone's storage counters,
    then their pools'; the refusal, or None when they all hold."""
    z = _ZONES.c
    gb = sum(st.member.size_gb for st in steps)
    # As volumes.claims.take's, for the total: the ceilings are absolute.
    cond: list[ColumnElement[bool]] = [z.name == zone, z.state == "available"]
    if ceiling.storage_thresholded:
        cond.append(z.storage_bursting.is_(False))
    if ceiling.gb_limit is not None:
        cond.append(z.volume_gb_used + gb <= ceiling.gb_limit)
    if ceiling.volumes_limit is not None:
        cond.append(z.volumes + len(steps) <= ceiling.volumes_limit)
    moved = s.execute(
        update(_ZONES)
        .where(*cond)
        .values(
            volume_gb_used=z.volume_gb_used + gb,
            volumes=z.volumes + len(steps),
            updated_at=utcnow(),
        )
    )
    if moved.rowcount != 1:  # type: ignore[attr-defined]
        first = _storage_crossing(s, zone, steps, ceiling)
        return _Refused(_refusal(steps[first].assignment, _ZONE_LIMIT))
    in_pool: dict[int, list[_Step]] = {}
    for st in steps:
        assert st.place_id is not None  # a volume's pool was found by _steps
        in_pool.setdefault(st.place_id, []).append(st)
    ids = sorted(in_pool)
    p = _POOLS.c
    for at in range(0, len(ids), _ROWS_PER_UPDATE):
        chunk = ids[at : at + _ROWS_PER_UPDATE]
        if lock:
            s.execute(select(p.id).where(p.id.in_(chunk)).order_by(p.id).with_for_update())
        size = _per_row(p.id, {i: sum(st.member.size_gb for st in in_pool[i]) for i in chunk})
        count = _per_row(p.id, {i: len(in_pool[i]) for i in chunk})
        taken = s.execute(
            update(_POOLS)
            .where(
                p.id.in_(chunk),
                p.zone == zone,
                p.reported.is_(True),
                or_(p.free_gb.is_(None), p.free_gb >= size),
            )
            .values(
                used_gb=p.used_gb + size,
                free_gb=p.free_gb - size,
                volumes=p.volumes + count,
                updated_at=utcnow(),
            )
            .returning(p.id)
        ).all()
        if len(taken) != len(chunk):
            full = min(set(chunk) - {row[0] for row in taken})
            first = _pool_crossing(s, zone, full, in_pool[full])
            return _Refused(_refusal(in_pool[full][first].assignment, _POOL_FULL))
    return None


def _per_row(key: ColumnElement[int], amounts: Mapping[int, int]) -> Any:
    """What to add to each row: one number when every row gets the same, else a CASE on
    the row's ``key``."""
    values = set(amounts.values())
    if len(values) == 1:
        return values.pop()
    return case(dict(amounts), value=key)


def _record(s: Session, steps: Sequence[_Step]) -> None:
    """Every member's allocation row, in two inserts."""
    allocations = [
        {
            "instance_uuid": st.uuid,
            "zone": st.assignment.zone,
            "host_id": st.place_id,
            "vcpus": st.member.vcpus,
            "ram_mb": st.member.ram_mb,
            "disk_gb": st.member.disk_gb,
        }
        for st in steps
        if st.member.kind == SERVER
    ]
    volumes = [
        {
            "volume_uuid": st.uuid,
            "zone": st.assignment.zone,
            "pool_id": st.place_id,
            "size_gb": st.member.size_gb,
        }
        for st in steps
        if st.member.kind != SERVER
    ]
    if allocations:
        s.execute(insert(_ALLOCATIONS), allocations)
    if volumes:
        s.execute(insert(_VOLUME_ALLOCATIONS), volumes)


# --- which member a batched update refused --------------------------------------------------
# The row it refused on is read as it is (the update did not change it), and the members'
# claims are taken in turn against it, as one by one claims would have been.


def _zone_crossing(s: Session, zone: str, steps: Sequence[_Step], ceiling: ZoneCeilings) -> int:
    """The index of the first of ``steps`` (servers) the zone's ceilings refuse."""
    z = _ZONES.c
    row = s.execute(
        select(z.state, z.bursting, z.ram_used_mb, z.vcpus_used, z.instances).where(z.name == zone)
    ).first()
    if row is None or row.state != "available" or (ceiling.thresholded and row.bursting):
        return 0
    lim = ceiling.limits
    return _first_over(
        (row.ram_used_mb, row.vcpus_used, row.instances),
        (lim.ram_mb, lim.vcpus, lim.instances),
        ((st.member.ram_mb, st.member.vcpus, 1) for st in steps),
    )


def _storage_crossing(s: Session, zone: str, steps: Sequence[_Step], ceiling: ZoneCeilings) -> int:
    """The index of the first of ``steps`` (volumes) the zone's storage ceilings refuse."""
    z = _ZONES.c
    row = s.execute(
        select(z.state, z.storage_bursting, z.volume_gb_used, z.volumes).where(z.name == zone)
    ).first()
    if (
        row is None
        or row.state != "available"
        or (ceiling.storage_thresholded and row.storage_bursting)
    ):
        return 0
    return _first_over(
        (row.volume_gb_used, row.volumes),
        (ceiling.gb_limit, ceiling.volumes_limit),
        ((st.member.size_gb, 1) for st in steps),
    )


def _host_crossing(s: Session, host_id: int, steps: Sequence[_Step]) -> int:
    """The index of the first of ``steps`` (servers on the host) the host refuses."""
    h = _HOSTS.c
    row = s.execute(
        select(
            h.enabled,
            h.vcpus_used,
            h.ram_used_mb,
            h.disk_used_gb,
            h.vcpus * h.cpu_ratio,
            h.ram_mb * h.ram_ratio,
            h.disk_gb * h.disk_ratio,
        ).where(h.id == host_id)
    ).first()
    if row is None or not row[0]:
        return 0
    return _first_over(
        row[1:4],
        row[4:7],
        ((st.member.vcpus, st.member.ram_mb, st.member.disk_gb) for st in steps),
    )


def _pool_crossing(s: Session, zone: str, pool_id: int, steps: Sequence[_Step]) -> int:
    """The index of the first of ``steps`` (volumes in the pool) the pool refuses."""
    p = _POOLS.c
    row = s.execute(select(p.zone, p.reported, p.free_gb).where(p.id == pool_id)).first()
    if row is None or row.zone != zone or not row.reported:
        return 0
    return _first_over((0,), (row.free_gb,), ((st.member.size_gb,) for st in steps))


def _first_over(
    used: Sequence[int], room: Sequence[float | None], claims: Iterable[Sequence[int]]
) -> int:
    """The index of the first of ``claims`` (amounts, one per counter) that, added in turn
    to ``used``, takes a counter over its ``room`` (None: no bound); 0 when none does (the
    row refused them all for something else: its state, a flag)."""
    total = list(used)
    for i, amounts in enumerate(claims):
        for k, amount in enumerate(amounts):
            total[k] += amount
            bound = room[k]
            if bound is not None and total[k] > bound:
                return i
    return 0


def _refusal(a: Assignment, outcome: str) -> PlanClaim:
    if outcome == _ZONE_LIMIT:
        resource = f"zone {a.zone}"
    elif a.pool is not None and outcome == _POOL_FULL:
        resource = f"pool {a.pool} of zone {a.zone}"
    else:
        resource = f"host {a.host} of zone {a.zone}"
    return PlanClaim(False, member=a.member, outcome=outcome, resource=resource)
