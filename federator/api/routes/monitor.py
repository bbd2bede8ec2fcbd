"""Broker extension: monitor jobs and their last runs, and what the monitor found."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from federator.api.deps import BrokerDep
from federator.api.views import iso
from federator.monitor.leases import list_leases
from federator.storage.events import EventKind, list_events

router = APIRouter(prefix="/monitor", tags=["monitor (broker)"])


def _stamp(t: float | None) -> str | None:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if t else None


def _leases(broker: BrokerDep) -> list[dict[str, Any]]:
    """Every lease this node wants (its zones and the cluster-wide pseudo-zones), as the
    database has it: who holds it, since and until when; ``owner`` None when nobody ever
    held it or its last holder gave it up, ``expired`` when its holder stopped renewing it
    and nobody took it over yet."""
    keeper = broker.monitor.leases
    recorded = list_leases(broker.dbs.api)
    now = keeper.clock()
    out = []
    for zone in keeper.zones:
        lease = recorded.get(zone)
        out.append(
            {
                "zone": zone,
                "owner": lease.owner if lease else None,
                "acquired_at": _stamp(lease.acquired_at) if lease else None,
                "expires_at": _stamp(lease.expires_at) if lease else None,
                "expired": lease is not None and not lease.live(now),
                "held_here": keeper.holds(zone),
            }
        )
    return out


@router.get("")
def monitor_status(broker: BrokerDep) -> dict[str, Any]:
    """Jobs of this node (``skipped``: runs that did nothing because another node holds the
    job's zone lease), the zone leases of every node sharing the database, and the build
    workers."""
    jobs = []
    for r in broker.monitor.records.values():
        jobs.append(
            {
                "name": r.name,
                "lease": r.lease,
                "runs": r.runs,
                "skipped": r.skipped,
                "failures": r.failures,
                "last_started": _stamp(r.last_started),
                "last_duration_ms": (
                    round(r.last_duration * 1000, 2) if r.last_duration is not None else None
                ),
                "last_result": r.last_result,
                "last_error": r.last_error or None,
            }
        )
    return {
        "node": broker.settings.node_id,
        "jobs": jobs,
        "leases": _leases(broker),
        "workers": {"count": broker.settings.workers.count, "busy": broker.workers.busy},
        "databases": _databases(broker),
    }


def _databases(broker: BrokerDep) -> dict[str, dict[str, Any]]:
    """This node's write transactions per database since it started: how many, the
    seconds spent waiting for the process's SQLite write gate, and the seconds they held
    it (on PostgreSQL, which has no gate, the seconds they took, overlapping)."""
    out: dict[str, dict[str, Any]] = {}
    for db, _kind in broker.dbs.all():
        stats = db.write_gate_stats()
        out[db.name] = {
            "writes": stats.count,
            "write_wait_s": round(stats.wait_s, 6),
            "write_held_s": round(stats.held_s, 6),
        }
    return out


class EventQuery(BaseModel):
    """Filters of GET /monitor/events."""

    model_config = ConfigDict(extra="ignore")

    zone: str | None = None
    kind: EventKind | None = None
    limit: int = Field(default=100, ge=1, le=1000)


@router.get("/events")
def monitor_events(broker: BrokerDep, q: Annotated[EventQuery, Query()]) -> dict[str, Any]:
    """Orphans found and what was done, vanished instances, zone health changes and usage
    drift, newest first."""
    events = list_events(broker.dbs.api, zone=q.zone, kind=q.kind, limit=q.limit)
    return {
        "events": [
            {
                "id": e.id,
                "zone": e.zone,
                "kind": e.kind,
                "instance_uuid": e.instance_uuid,
                "remote_id": e.remote_id,
                "action": e.action or None,
                "detail": e.detail,
                "created_at": iso(e.created_at),
            }
            for e in events
        ]
    }
