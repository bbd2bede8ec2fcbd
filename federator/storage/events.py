"""The ``monitor_events`` table: what the monitor found in the zones and what it did.

Kinds: ``orphan`` (a remote instance no record accounts for, with the action taken),
``vanished`` (a recorded instance missing from its zone), ``zone_down`` / ``zone_up``
(health transitions) and ``drift`` (the zone runs more instances than the broker has
allocated). Rows are only ever added; readers filter by zone and kind, newest first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal, get_args

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from federator.storage.db import Database
from federator.storage.models import MonitorEvent, utcnow

EventKind = Literal["orphan", "vanished", "zone_down", "zone_up", "drift", "volume", "vcluster"]
EVENT_KINDS: Final[tuple[str, ...]] = get_args(EventKind)
MAX_DETAIL = 2000


@dataclass(frozen=True, slots=True)
class EventView:
    id: int
    zone: str
    kind: str
    instance_uuid: str | None
    remote_id: str | None
    action: str
    detail: str
    created_at: datetime


def add_event(
    s: Session,
    *,
    zone: str,
    kind: EventKind,
    instance_uuid: str | None = None,
    remote_id: str | None = None,
    action: str = "",
    detail: str = "",
) -> None:
    """Add an event to the caller's transaction (so it commits with the change it notes)."""
    s.add(
        MonitorEvent(
            zone=zone,
            kind=kind,
            instance_uuid=instance_uuid,
            remote_id=remote_id,
            action=action,
            detail=detail[:MAX_DETAIL],
            created_at=utcnow(),
        )
    )


def record_event(
    db: Database,
    *,
    zone: str,
    kind: EventKind,
    instance_uuid: str | None = None,
    remote_id: str | None = None,
    action: str = "",
    detail: str = "",
) -> None:
    """Record one event in its own transaction."""
    with db.write() as s:
        add_event(
            s,
            zone=zone,
            kind=kind,
            instance_uuid=instance_uuid,
            remote_id=remote_id,
            action=action,
            detail=detail,
        )


def list_events(
    db: Database, *, zone: str | None = None, kind: str | None = None, limit: int = 100
) -> list[EventView]:
    """Events newest first, optionally of one zone and one kind."""
    q = select(MonitorEvent)
    if zone is not None:
        q = q.where(MonitorEvent.zone == zone)
    if kind is not None:
        q = q.where(MonitorEvent.kind == kind)
    q = q.order_by(MonitorEvent.id.desc()).limit(limit)
    with db.read() as s:
        return [
            EventView(
                id=e.id,
                zone=e.zone,
                kind=e.kind,
                instance_uuid=e.instance_uuid,
                remote_id=e.remote_id,
                action=e.action,
                detail=e.detail,
                created_at=e.created_at,
            )
            for e in s.scalars(q)
        ]


@dataclass(frozen=True, slots=True)
class OrphanHistory:
    """What was recorded about one orphan: its first sighting and the last action."""

    first_seen: datetime
    last_action: str


def orphan_history(db: Database, uuids: Iterable[str]) -> Mapping[str, OrphanHistory]:
    """The orphan events already recorded for ``uuids``, by uuid."""
    wanted = list(uuids)
    if not wanted:
        return {}
    first = (
        select(
            MonitorEvent.instance_uuid,
            func.min(MonitorEvent.created_at).label("first"),
            func.max(MonitorEvent.id).label("last_id"),
        )
        .where(MonitorEvent.kind == "orphan", MonitorEvent.instance_uuid.in_(wanted))
        .group_by(MonitorEvent.instance_uuid)
        .subquery()
    )
    q = select(first.c.instance_uuid, first.c.first, MonitorEvent.action).join(
        MonitorEvent, MonitorEvent.id == first.c.last_id
    )
    with db.read() as s:
        return {
            uuid: OrphanHistory(first_seen=seen, last_action=action)
            for uuid, seen, action in s.execute(q)
            if uuid is not None
        }
