"""Broker extension: monitor jobs and their last runs, and what the monitor found."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from federator.api.deps import BrokerDep
from federator.api.views import iso
from federator.storage.events import EventKind, list_events

router = APIRouter(prefix="/monitor", tags=["monitor (broker)"])


@router.get("")
def monitor_status(broker: BrokerDep) -> dict[str, Any]:
    jobs = []
    for r in broker.monitor.records.values():
        jobs.append(
            {
                "name": r.name,
                "runs": r.runs,
                "failures": r.failures,
                "last_started": (
                    datetime.fromtimestamp(r.last_started, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                    if r.last_started
                    else None
                ),
                "last_duration_ms": (
                    round(r.last_duration * 1000, 2) if r.last_duration is not None else None
                ),
                "last_result": r.last_result,
                "last_error": r.last_error or None,
            }
        )
    return {
        "jobs": jobs,
        "workers": {"count": broker.settings.workers.count, "busy": broker.workers.busy},
    }


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
