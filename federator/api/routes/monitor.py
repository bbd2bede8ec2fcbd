"""Broker extension: monitor jobs and their last runs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter

from federator.api.deps import BrokerDep

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
