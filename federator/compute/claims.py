"""Atomic capacity claims in the API database.

A claim is one transaction of conditional updates: the zone's counters move only if the
zone stays within the policy's ceilings (high-water marks or quotas), the host's counters
move only if the host stays within its schedulable capacity, and the allocation row is
written with them. Either everything moves or nothing does, so concurrent requests, in one
process or many, never put a host, a zone or a quota over its limit. Releases undo exactly
what the allocation row recorded, once.

Moving an instance to another host of its zone (a drain) claims in two steps: the
destination host's counters take the instance's resources along with a ``migrations`` row
(:func:`reserve_move`); then either the allocation moves to the destination and the
source host's counters are given back (:func:`finish_move`), or the destination's are
given back (:func:`undo_move`), the row going in the same transaction. The zone's
counters never move: the instance stays in its zone.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Connection,
    Integer,
    and_,
    bindparam,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.orm import Session

from federator.policy.evaluate import Limits
from federator.storage.batching import Discard
from federator.storage.db import Database
from federator.storage.models import (
    Allocation,
    BuildRequest,
    Host,
    Migration,
    Zone,
    utcnow,
)


class ClaimOutcome(enum.Enum):
    OK = "ok"
    ZONE_LIMIT = "zone_limit"  # a ceiling, the bursting flag or the zone's state refused it
    HOST_FULL = "host_full"  # the host has no room (or was disabled) by now
    GROUP_CONFLICT = "group_conflict"  # a member committed meanwhile: the rule says no


class ClaimGuard(Protocol):
    """A check a claim runs first in its transaction (a server group's rule); it may lock
    rows, and says why the claim must not go ahead, or None."""

    def check(self, s: Session, zone: str, host_id: int | None) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Usage:
    """A host's counters after a claim or release (to refresh the scheduler's cache)."""

    host_id: int
    vcpus_used: int
    ram_used_mb: int
    disk_used_gb: int
    instances: int


@dataclass(frozen=True, slots=True)
class ClaimResult:
    outcome: ClaimOutcome
    host_usage: Usage | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Resources:
    vcpus: int
    ram_mb: int
    disk_gb: int


def claim(
    db: Database,
    *,
    instance_uuid: str,
    zone: str,
    host_id: int | None,
    host_name: str | None,
    res: Resources,
    limits: Limits,
    require_not_bursting: bool,
    placement: dict[str, Any] | None = None,
    guard: ClaimGuard | None = None,
) -> ClaimResult:
    """Claim ``res`` for ``instance_uuid`` in ``zone`` (and on ``host_id``), atomically.

    ``guard`` runs first, before any counter moves, so the rows it locks are always taken
    before the zone's and the host's (one lock order, no deadlock).
    """
    # Every statement is built before the write gate is taken; the gate covers only
    # running them.
    prepared = _prepare(
        instance_uuid=instance_uuid,
        zone=zone,
        host_id=host_id,
        res=res,
        limits=limits,
        require_not_bursting=require_not_bursting,
    )
    record = (
        update(BuildRequest)
        .where(BuildRequest.instance_uuid == instance_uuid)
        .values(
            zone=zone,
            host=host_name,
            placement=placement or {},
            attempts=BuildRequest.attempts + 1,
            updated_at=utcnow(),
        )
    )

    def run(s: Session) -> ClaimResult:
        if guard is not None:
            refused = guard.check(s, zone, host_id)
            if refused is not None:
                raise Discard(ClaimResult(ClaimOutcome.GROUP_CONFLICT, detail=refused))
        conn = s.connection()
        result = _run(conn, prepared)
        if result.outcome is not ClaimOutcome.OK:
            raise Discard(result)  # a refusal: the zone's update, if done, rolls back
        conn.execute(record)
        return result

    # Concurrent claims share a transaction on SQLite (group commit), each in its own
    # savepoint: one refused does not undo another.
    return db.batched(run)


def take(
    s: Session,
    *,
    instance_uuid: str,
    zone: str,
    host_id: int | None,
    res: Resources,
    limits: Limits,
    require_not_bursting: bool,
) -> ClaimResult:
    """One instance's claim inside the caller's transaction ``s``: the zone's conditional
    update, the host's (when ``host_id`` is set), then the allocation row.

    A refusal (``ZONE_LIMIT``, ``HOST_FULL``) may leave the zone's update done in ``s``:
    the caller rolls the transaction back on any outcome but ``OK``. Several calls in one
    transaction claim several instances all or nothing; to take rows in one order, make
    them zone by zone and, within a zone, by host id.
    """
    prepared = _prepare(
        instance_uuid=instance_uuid,
        zone=zone,
        host_id=host_id,
        res=res,
        limits=limits,
        require_not_bursting=require_not_bursting,
    )
    return _run(s.connection(), prepared)


@dataclass(frozen=True, slots=True)
class _Prepared:
    """One claim's statements and their parameters, ready before the transaction.

    The statements are built once per shape and take every figure as a bound parameter,
    so a claim neither builds nor compiles SQL: it only binds values.
    """

    zone: Any
    zone_params: dict[str, Any]
    host: Any | None
    host_params: dict[str, Any]
    host_id: int | None
    allocation: dict[str, Any]


@functools.cache
def _zone_take(not_bursting: bool, ram_limit: bool, vcpu_limit: bool, count_limit: bool) -> Any:
    """The zone's conditional UPDATE for one shape of ceiling: it adds the claim's figures
    only while the zone is available (and not bursting, and within the ceilings set)."""
    ram: BindParameter[int] = bindparam("c_ram", type_=Integer)
    vcpus: BindParameter[int] = bindparam("c_vcpus", type_=Integer)
    disk: BindParameter[int] = bindparam("c_disk", type_=Integer)
    cond: list[ColumnElement[bool]] = [Zone.name == bindparam("c_zone"), Zone.state == "available"]
    if not_bursting:
        cond.append(Zone.bursting.is_(False))
    if ram_limit:
        cond.append(Zone.ram_used_mb + ram <= bindparam("c_ram_limit"))
    if vcpu_limit:
        cond.append(Zone.vcpus_used + vcpus <= bindparam("c_vcpu_limit"))
    if count_limit:
        cond.append(Zone.instances + 1 <= bindparam("c_count_limit"))
    return (
        update(Zone)
        .where(and_(*cond))
        .values(
            ram_used_mb=Zone.ram_used_mb + ram,
            vcpus_used=Zone.vcpus_used + vcpus,
            disk_used_gb=Zone.disk_used_gb + disk,
            instances=Zone.instances + 1,
            updated_at=bindparam("c_at"),
        )
    )


_ALLOCATE = insert(Allocation)


def _prepare(
    *,
    instance_uuid: str,
    zone: str,
    host_id: int | None,
    res: Resources,
    limits: Limits,
    require_not_bursting: bool,
) -> _Prepared:
    now = utcnow()
    figures = {"c_ram": res.ram_mb, "c_vcpus": res.vcpus, "c_disk": res.disk_gb, "c_at": now}
    zone_params: dict[str, Any] = {**figures, "c_zone": zone}
    for key, limit in (
        ("c_ram_limit", limits.ram_mb),
        ("c_vcpu_limit", limits.vcpus),
        ("c_count_limit", limits.instances),
    ):
        if limit is not None:  # the statement of this shape names only the limits set
            zone_params[key] = limit
    shape = _zone_take(
        require_not_bursting,
        limits.ram_mb is not None,
        limits.vcpus is not None,
        limits.instances is not None,
    )
    return _Prepared(
        zone=shape,
        zone_params=zone_params,
        host=None if host_id is None else _HOST_TAKE,
        host_params={**figures, "c_host": host_id},
        host_id=host_id,
        allocation={
            "instance_uuid": instance_uuid,
            "zone": zone,
            "host_id": host_id,
            "vcpus": res.vcpus,
            "ram_mb": res.ram_mb,
            "disk_gb": res.disk_gb,
        },
    )


def _run(conn: Connection, p: _Prepared) -> ClaimResult:
    """Run a prepared claim as Core statements on the transaction's connection: nothing
    in the session holds the rows they change, and the ORM's per-statement work would
    only lengthen the time the write gate is held."""
    moved = conn.execute(p.zone, p.zone_params)
    if moved.rowcount != 1:
        return ClaimResult(ClaimOutcome.ZONE_LIMIT)
    usage: Usage | None = None
    if p.host is not None and p.host_id is not None:
        row = conn.execute(p.host, p.host_params).first()
        if row is None:
            return ClaimResult(ClaimOutcome.HOST_FULL)
        usage = Usage(p.host_id, row[0], row[1], row[2], row[3])
    conn.execute(_ALLOCATE, [p.allocation])
    return ClaimResult(ClaimOutcome.OK, usage)


@dataclass(frozen=True, slots=True)
class Released:
    zone: str
    host_usage: Usage | None


def release(db: Database, instance_uuid: str) -> Released | None:
    """Give back what ``instance_uuid`` holds; None when it holds nothing (idempotent)."""
    with db.write() as s:
        alloc = s.execute(
            delete(Allocation)
            .where(Allocation.instance_uuid == instance_uuid)
            .returning(
                Allocation.zone,
                Allocation.host_id,
                Allocation.vcpus,
                Allocation.ram_mb,
                Allocation.disk_gb,
            )
        ).first()
        if alloc is None:
            return None
        zone, host_id, vcpus, ram_mb, disk_gb = alloc
        s.execute(
            update(Zone)
            .where(Zone.name == zone)
            .values(
                ram_used_mb=Zone.ram_used_mb - ram_mb,
                vcpus_used=Zone.vcpus_used - vcpus,
                disk_used_gb=Zone.disk_used_gb - disk_gb,
                instances=Zone.instances - 1,
                updated_at=utcnow(),
            )
        )
        usage = None if host_id is None else _give_back(s, host_id, vcpus, ram_mb, disk_gb)
    return Released(zone, usage)


def allocation_of(db: Database, instance_uuid: str) -> tuple[str, str | None] | None:
    """(zone, host name) the instance holds capacity on, or None."""
    with db.read() as s:
        row = s.execute(
            select(Allocation.zone, Host.name)
            .outerjoin(Host, Host.id == Allocation.host_id)
            .where(Allocation.instance_uuid == instance_uuid)
        ).first()
        return None if row is None else (row[0], row[1])


def set_bursting(db: Database, zone: str, bursting: bool) -> bool:
    """Flip a local zone's hysteresis flag; True when this call changed it."""
    with db.write() as s:
        result = s.execute(
            update(Zone)
            .where(Zone.name == zone, Zone.bursting.is_(not bursting))
            .values(bursting=bursting, updated_at=utcnow())
        )
        changed: bool = result.rowcount == 1  # type: ignore[attr-defined]
        return changed


def reserve_move(
    db: Database,
    *,
    instance_uuid: str,
    source_host_id: int,
    dest_host_id: int,
    was_active: bool,
    node: str,
    guard: ClaimGuard | None = None,
) -> Usage | None:
    """Claim the instance's allocated resources on ``dest_host_id`` for a move.

    None (and nothing changed) when the instance holds no allocation on the source host,
    is already moving, the destination is disabled or has no room by now, or ``guard``
    (its server group's rule, run first) refuses the destination.
    """
    with db.write() as s:
        if guard is not None:
            zone = s.scalar(select(Host.zone).where(Host.id == dest_host_id))
            if zone is None or guard.check(s, zone, dest_host_id) is not None:
                s.rollback()
                return None
        alloc = s.get(Allocation, instance_uuid)
        if alloc is None or alloc.host_id != source_host_id:
            return None
        if s.get(Migration, instance_uuid) is not None:
            return None
        res = Resources(alloc.vcpus, alloc.ram_mb, alloc.disk_gb)
        row = s.execute(
            _take_on_host(
                res,
                Host.id == dest_host_id,
                Host.id != source_host_id,
                Host.zone == alloc.zone,
            )
        ).first()
        if row is None:
            s.rollback()
            return None
        s.add(
            Migration(
                instance_uuid=instance_uuid,
                node=node,
                zone=alloc.zone,
                source_host_id=source_host_id,
                dest_host_id=dest_host_id,
                was_active=was_active,
                vcpus=alloc.vcpus,
                ram_mb=alloc.ram_mb,
                disk_gb=alloc.disk_gb,
            )
        )
    return Usage(dest_host_id, row[0], row[1], row[2], row[3])


@dataclass(frozen=True, slots=True)
class MoveResult:
    """A move finished: whether the allocation moved (False: the instance was deleted
    meanwhile and its reservation on the destination was given back)."""

    moved: bool
    source_host_id: int
    dest_host_id: int


def finish_move(db: Database, instance_uuid: str) -> MoveResult | None:
    """The instance now runs on the destination: point its allocation there and give the
    source host's counters back. None when no move of it is pending (idempotent)."""
    with db.write() as s:
        mig = s.execute(
            delete(Migration)
            .where(Migration.instance_uuid == instance_uuid)
            .returning(
                Migration.source_host_id,
                Migration.dest_host_id,
                Migration.vcpus,
                Migration.ram_mb,
                Migration.disk_gb,
            )
        ).first()
        if mig is None:
            return None
        source, dest, vcpus, ram_mb, disk_gb = mig
        moved = s.execute(
            update(Allocation)
            .where(Allocation.instance_uuid == instance_uuid, Allocation.host_id == source)
            .values(host_id=dest)
        )
        # A delete that released the allocation meanwhile gave the source back already.
        give_back = source if moved.rowcount == 1 else dest  # type: ignore[attr-defined]
        _give_back(s, give_back, vcpus, ram_mb, disk_gb)
    return MoveResult(give_back == source, source, dest)


def undo_move(db: Database, instance_uuid: str) -> int | None:
    """The instance stays where it was: give the destination's reservation back; returns
    the destination host id, or None when no move of it is pending (idempotent)."""
    with db.write() as s:
        mig = s.execute(
            delete(Migration)
            .where(Migration.instance_uuid == instance_uuid)
            .returning(Migration.dest_host_id, Migration.vcpus, Migration.ram_mb, Migration.disk_gb)
        ).first()
        if mig is None:
            return None
        dest, vcpus, ram_mb, disk_gb = mig
        _give_back(s, dest, vcpus, ram_mb, disk_gb)
    return int(dest)


def _give_back(s: Session, host_id: int, vcpus: int, ram_mb: int, disk_gb: int) -> Usage | None:
    """Take one instance's resources off a host's counters; its usage after, if it exists."""
    row = s.execute(
        update(Host)
        .where(Host.id == host_id)
        .values(
            ram_used_mb=Host.ram_used_mb - ram_mb,
            vcpus_used=Host.vcpus_used - vcpus,
            disk_used_gb=Host.disk_used_gb - disk_gb,
            instances=Host.instances - 1,
            updated_at=utcnow(),
        )
        .returning(Host.vcpus_used, Host.ram_used_mb, Host.disk_used_gb, Host.instances)
    ).first()
    return None if row is None else Usage(host_id, row[0], row[1], row[2], row[3])


def _take_on_host(res: Resources, *which: Any) -> Any:
    """The conditional UPDATE that adds ``res`` to one enabled host (chosen by ``which``)
    only while it stays within capacity (allocation ratios applied); it returns the
    host's new usage, or no row when the host is full, disabled or not the one meant."""
    return _host_take(res.ram_mb, res.vcpus, res.disk_gb, utcnow(), *which)


def _host_take(ram: Any, vcpus: Any, disk: Any, at: Any, *which: Any) -> Any:
    """:func:`_take_on_host` with figures that are values or bound parameters."""
    return (
        update(Host)
        .where(
            *which,
            Host.enabled.is_(True),
            Host.ram_used_mb + ram <= Host.ram_mb * Host.ram_ratio,
            Host.vcpus_used + vcpus <= Host.vcpus * Host.cpu_ratio,
            Host.disk_used_gb + disk <= Host.disk_gb * Host.disk_ratio,
        )
        .values(
            ram_used_mb=Host.ram_used_mb + ram,
            vcpus_used=Host.vcpus_used + vcpus,
            disk_used_gb=Host.disk_used_gb + disk,
            instances=Host.instances + 1,
            updated_at=at,
        )
        .returning(Host.vcpus_used, Host.ram_used_mb, Host.disk_used_gb, Host.instances)
    )


_HOST_TAKE = _host_take(
    bindparam("c_ram", type_=Integer),
    bindparam("c_vcpus", type_=Integer),
    bindparam("c_disk", type_=Integer),
    bindparam("c_at"),
    Host.id == bindparam("c_host"),
)
""":func:`_take_on_host` by host id, built once, with the claim's figures bound."""
