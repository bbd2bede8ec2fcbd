"""Child zones' capabilities: poll what each remote cloud says it can still take.

A child zone (another broker, or any cloud whose driver implements ``capacity()``)
reports its availability zones and free room. The parent keeps the last report on the
zone row together with its own usage counters for that zone read just *before* asking:
placement then allows usage up to ``counters at poll + free room``, so every claim made
after the poll counts against the room without waiting for the next one. Reading the
counters first errs on the safe side: a claim that lands between the two reads is both
in the counters and (once created in the child) missing from the child's room.

A failed poll clears the report, so placement falls back to the policy's quota and to
the capacity errors the child raises, instead of trusting stale figures.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import update

from federator.driver import DriverError, ZoneCapacity
from federator.storage.db import Database
from federator.storage.models import Zone, utcnow

LOG = logging.getLogger(__name__)


def usage_counters(db: Database, zone: str) -> dict[str, int] | None:
    """The zone's claimed usage now, as the base a report's room is added to."""
    with db.read() as s:
        row = s.get(Zone, zone)
        if row is None:
            return None
        return {"ram_mb": row.ram_used_mb, "vcpus": row.vcpus_used, "instances": row.instances}


def report_document(report: ZoneCapacity, base: dict[str, int]) -> dict[str, Any]:
    """The JSON kept on the zone row (and shown by the zones API)."""
    return {
        "availability_zones": [
            {
                "name": az.name,
                "available": az.available,
                "free": {
                    "ram_mb": az.free_ram_mb,
                    "vcpus": az.free_vcpus,
                    "instances": az.free_instances,
                },
            }
            for az in report.availability_zones
        ],
        "free": {
            "ram_mb": report.free_ram_mb,
            "vcpus": report.free_vcpus,
            "instances": report.free_instances,
        },
        "base": base,
        "detail": report.detail,
    }


def store_report(db: Database, zone: str, document: dict[str, Any] | None) -> None:
    """Keep ``document`` as the zone's capabilities (None clears them)."""
    with db.write() as s:
        s.execute(
            update(Zone)
            .where(Zone.name == zone)
            .values(capabilities=document, capabilities_at=utcnow() if document else None)
        )


def poll_capabilities(db: Database, zone: str, ask: Any, *, attempts: int = 3) -> str:
    """Ask ``ask()`` (a driver's ``capacity``) and keep the answer; returns a summary.

    The zone's usage counters are read before and after asking. When they moved (a claim
    or a release while the child was answering), the child may or may not have counted
    that instance, so the report is asked again, up to ``attempts`` times; the last one is
    kept with the counters read before it, which can only understate the room.

    :raises DriverError: the child could not be asked (its report is cleared first).
    """
    report: ZoneCapacity | None = None
    base: dict[str, int] | None = None
    for _ in range(attempts):
        base = usage_counters(db, zone)
        if base is None:
            return "zone not registered"
        try:
            report = ask()
        except DriverError:
            store_report(db, zone, None)
            raise
        if report is None or usage_counters(db, zone) == base:
            break
    if report is None or base is None:
        store_report(db, zone, None)
        return "reports no capacity"
    store_report(db, zone, report_document(report, base))
    return "free " + ", ".join(
        f"{name} {'unbounded' if value is None else value}"
        for name, value in (
            ("ram_mb", report.free_ram_mb),
            ("vcpus", report.free_vcpus),
            ("instances", report.free_instances),
        )
    )
