"""Atomic storage claims in the API database.

As for servers (:mod:`federator.compute.claims`), a claim is one transaction of
conditional updates: the zone's storage counters move only while the zone stays within
its ceilings (the gb_percent high-water mark or a quota) and is not bursting when that is
required, the pool's only while it keeps room, and the allocation row and the volume's
location are written with them. Concurrent creates, in one process or many, never over-fill
a pool, a zone's ceiling or a quota. A release gives back exactly what the allocation
recorded, once.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, or_, select, update
from sqlalchemy.orm import Session

from federator.storage.db import Database
from federator.storage.models import StoragePool, Volume, VolumeAllocation, Zone, utcnow

__all__ = [
    "PoolChoice",
    "StorageClaim",
    "StorageOutcome",
    "claim",
    "free_pools",
    "release",
    "take",
]


class StorageOutcome(enum.Enum):
    OK = "ok"
    ZONE_LIMIT = "zone_limit"  # a ceiling, the bursting flag or the zone's state refused it
    POOL_FULL = "pool_full"  # the pool has no room (or is no longer reported) by now
    GONE = "gone"  # the volume is no longer waiting to be placed


@dataclass(frozen=True, slots=True)
class PoolChoice:
    id: int
    name: str
    host: str | None
    az: str
    free_gb: int | None


@dataclass(frozen=True, slots=True)
class StorageClaim:
    volume_uuid: str
    zone: str
    size_gb: int
    gb_limit: int | None
    volumes_limit: int | None
    require_not_bursting: bool


def free_pools(
    db: Database,
    zone: str,
    size_gb: int,
    *,
    az: str | None,
    pack: bool,
    exclude: frozenset[int] = frozenset(),
    limit: int = 8,
) -> list[PoolChoice]:
    """The reported pools of ``zone`` with room for ``size_gb`` (in availability zone ``az``
    when given), emptiest first (``pack``: fullest first); unbounded pools come last when
    packing and first when spreading.

    Two queries, each ordered by ``free_gb`` alone so the (zone, free_gb) index hands rows
    over in order and the database stops at ``limit`` instead of sorting every pool of the
    zone (a CASE or a tie-break column in one ORDER BY defeats the index).
    """
    cols = (
        StoragePool.id, StoragePool.name, StoragePool.host, StoragePool.az, StoragePool.free_gb
    )  # fmt: skip
    base = select(*cols).where(StoragePool.zone == zone, StoragePool.reported.is_(True))
    if az is not None:
        base = base.where(StoragePool.az == az)
    if exclude:
        base = base.where(StoragePool.id.not_in(exclude))
    order = StoragePool.free_gb.asc() if pack else StoragePool.free_gb.desc()
    bounded = base.where(StoragePool.free_gb >= size_gb).order_by(order).limit(limit)
    unbounded = base.where(StoragePool.free_gb.is_(None)).order_by(StoragePool.id).limit(limit)
    with db.read() as s:
        sized = [PoolChoice(r[0], r[1], r[2], r[3], r[4]) for r in s.execute(bounded).all()]
        open_ended = [PoolChoice(r[0], r[1], r[2], r[3], r[4]) for r in s.execute(unbounded)]
    return (sized + open_ended if pack else open_ended + sized)[:limit]


def claim(
    db: Database, c: StorageClaim, pool: PoolChoice, placement: dict[str, Any]
) -> StorageOutcome:
    """Claim ``c.size_gb`` in ``pool`` of ``c.zone`` for the volume, atomically, and record
    where the volume is. Only a volume still ``creating`` and holding nothing is placed."""
    with db.write() as s:
        placed = s.execute(
            update(Volume)
            .where(
                Volume.uuid == c.volume_uuid,
                Volume.status == "creating",
                Volume.pool_id.is_(None),
                Volume.deleted.is_(False),
            )
            .values(
                zone=c.zone,
                pool_id=pool.id,
                host=pool.host,
                availability_zone=pool.az,
                placement=placement,
                updated_at=utcnow(),
            )
        )
        if placed.rowcount != 1:  # type: ignore[attr-defined]
            s.rollback()
            return StorageOutcome.GONE
        outcome = take(s, c, pool.id)
        if outcome is not StorageOutcome.OK:
            s.rollback()
    return outcome


def take(s: Session, c: StorageClaim, pool_id: int) -> StorageOutcome:
    """One volume's storage claim inside the caller's transaction ``s``: the zone's
    conditional update, the pool's, then the allocation row (the volume's own row is the
    caller's).

    ``ZONE_LIMIT`` or ``POOL_FULL`` may leave the zone's update done in ``s``: the caller
    rolls the transaction back on any outcome but ``OK``. Several calls in one transaction
    claim several volumes all or nothing; to take rows in one order, make them zone by
    zone and, within a zone, by pool id.
    """
    zone_cond: list[ColumnElement[bool]] = [Zone.name == c.zone, Zone.state == "available"]
    if c.require_not_bursting:
        zone_cond.append(Zone.storage_bursting.is_(False))
    if c.gb_limit is not None:
        zone_cond.append(Zone.volume_gb_used + c.size_gb <= c.gb_limit)
    if c.volumes_limit is not None:
        zone_cond.append(Zone.volumes + 1 <= c.volumes_limit)
    moved = s.execute(
        update(Zone)
        .where(and_(*zone_cond))
        .values(
            volume_gb_used=Zone.volume_gb_used + c.size_gb,
            volumes=Zone.volumes + 1,
            updated_at=utcnow(),
        )
    )
    if moved.rowcount != 1:  # type: ignore[attr-defined]
        return StorageOutcome.ZONE_LIMIT
    taken = s.execute(
        update(StoragePool)
        .where(
            StoragePool.id == pool_id,
            StoragePool.zone == c.zone,
            StoragePool.reported.is_(True),
            or_(StoragePool.free_gb.is_(None), StoragePool.free_gb >= c.size_gb),
        )
        .values(
            used_gb=StoragePool.used_gb + c.size_gb,
            free_gb=StoragePool.free_gb - c.size_gb,
            volumes=StoragePool.volumes + 1,
            updated_at=utcnow(),
        )
    )
    if taken.rowcount != 1:  # type: ignore[attr-defined]
        return StorageOutcome.POOL_FULL
    s.add(
        VolumeAllocation(volume_uuid=c.volume_uuid, zone=c.zone, pool_id=pool_id, size_gb=c.size_gb)
    )
    return StorageOutcome.OK


def release(db: Database, volume_uuid: str, *, unplace: bool = False) -> bool:
    """Give back what the volume holds; False when it holds nothing (idempotent).
    ``unplace`` also clears the volume's location, so it can be placed again."""
    with db.write() as s:
        row = s.execute(
            delete(VolumeAllocation)
            .where(VolumeAllocation.volume_uuid == volume_uuid)
            .returning(VolumeAllocation.zone, VolumeAllocation.pool_id, VolumeAllocation.size_gb)
        ).first()
        if unplace:
            s.execute(
                update(Volume)
                .where(Volume.uuid == volume_uuid)
                .values(zone=None, pool_id=None, host=None, availability_zone=None)
            )
        if row is None:
            return False
        zone, pool_id, size_gb = row
        s.execute(
            update(Zone)
            .where(Zone.name == zone)
            .values(
                volume_gb_used=Zone.volume_gb_used - size_gb,
                volumes=Zone.volumes - 1,
                updated_at=utcnow(),
            )
        )
        s.execute(
            update(StoragePool)
            .where(StoragePool.id == pool_id)
            .values(
                used_gb=StoragePool.used_gb - size_gb,
                free_gb=StoragePool.free_gb + size_gb,
                volumes=StoragePool.volumes - 1,
                updated_at=utcnow(),
            )
        )
    return True


def set_storage_bursting(db: Database, zone: str, bursting: bool) -> bool:
    """Flip a zone's storage hysteresis flag; True when this call changed it."""
    with db.write() as s:
        result = s.execute(
            update(Zone)
            .where(Zone.name == zone, Zone.storage_bursting.is_(not bursting))
            .values(storage_bursting=bursting, updated_at=utcnow())
        )
        changed: bool = result.rowcount == 1  # type: ignore[attr-defined]
        return changed
