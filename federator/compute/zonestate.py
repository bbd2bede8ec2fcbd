"""Zone health: consecutive failures mark a zone down, one success brings it back.

Each transition is also recorded as a ``zone_down`` or ``zone_up`` monitor event.
"""

from __future__ import annotations

import logging

from sqlalchemy import update

from federator.storage.db import Database
from federator.storage.events import add_event
from federator.storage.models import Zone, utcnow

LOG = logging.getLogger(__name__)


def record_zone_failure(
    db: Database, zone: str, detail: str, *, threshold: int = 3, force_down: bool = False
) -> bool:
    """Count a failure; returns True when the zone is (now) down."""
    with db.write() as s:
        row = s.get(Zone, zone)
        if row is None:
            return False
        row.consecutive_failures += 1
        row.state_detail = detail[:2000]
        row.updated_at = utcnow()
        if (force_down or row.consecutive_failures >= threshold) and row.state != "down":
            row.state = "down"
            add_event(s, zone=zone, kind="zone_down", detail=detail)
            LOG.error("zone %s marked down: %s", zone, detail)
        return row.state == "down"


def record_zone_success(db: Database, zone: str, detail: str = "") -> None:
    with db.write() as s:
        result = s.execute(
            update(Zone)
            .where(Zone.name == zone, Zone.state != "available")
            .values(
                state="available", consecutive_failures=0, state_detail=detail, updated_at=utcnow()
            )
        )
        if result.rowcount:  # type: ignore[attr-defined]
            add_event(s, zone=zone, kind="zone_up", detail=detail)
            LOG.warning("zone %s is available again", zone)
        s.execute(
            update(Zone)
            .where(Zone.name == zone, Zone.consecutive_failures != 0)
            .values(consecutive_failures=0)
        )
