"""Broker extension: hypervisor hosts, their state and what runs on them; enable, disable,
maintenance and drain (admin only, like every /federator/v1 call)."""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query
from pydantic import BaseModel, ConfigDict, StringConstraints

from federator.api.deps import BrokerDep
from federator.api.views import iso
from federator.hosts.maintenance import Drainer, MoveReport
from federator.hosts.service import HostService, HostView, ServerOnHost

router = APIRouter(prefix="/hosts", tags=["hosts (broker)"])

Reason = Annotated[str, StringConstraints(max_length=255, strip_whitespace=True)]


class ReasonBody(BaseModel):
    """Why, in a few words; shown with the host and by the scheduler's explain."""

    model_config = ConfigDict(extra="forbid")

    reason: Reason = ""


OptionalReason = Annotated[ReasonBody | None, Body()]


def _capacity(total: int, ratio: float, used: int) -> dict[str, Any]:
    return {
        "total": total,
        "allocation_ratio": ratio,
        "schedulable": math.floor(total * ratio),
        "used": used,
    }


def host_body(v: HostView) -> dict[str, Any]:
    return {
        "id": v.id,
        "zone": v.zone,
        "name": v.name,
        "availability_zone": v.az,
        "aggregates": [{"id": i, "name": n} for i, n in v.aggregates],
        "enabled": v.enabled,
        "state": v.state,
        "disabled_reason": v.disabled_reason or None,
        "reported": v.reported,
        "disabled_by_admin": ({"reason": v.admin_reason or None} if v.admin_disabled else None),
        "maintenance": (
            {"reason": v.maintenance_reason, "since": iso(v.maintenance_since)}
            if v.maintenance
            else None
        ),
        "capacity": {
            "vcpus": _capacity(v.vcpus, v.cpu_ratio, v.vcpus_used),
            "ram_mb": _capacity(v.ram_mb, v.ram_ratio, v.ram_used_mb),
            "disk_gb": _capacity(v.disk_gb, v.disk_ratio, v.disk_used_gb),
        },
        "instances": v.instances,
        "moving": v.moving,
        "metadata": {k: list(vals) for k, vals in v.metadata.items()},
        "updated_at": iso(v.updated_at),
    }


def server_body(s: ServerOnHost) -> dict[str, Any]:
    return {
        "id": s.uuid,
        "name": s.name,
        "status": s.status,
        "task_state": s.task_state,
        "project_id": s.project_id,
    }


def move_body(m: MoveReport) -> dict[str, Any]:
    return {
        "id": m.uuid,
        "name": m.name or None,
        "outcome": m.outcome,
        "from": m.source,
        "to": m.target,
        "status": m.status,
        "detail": m.detail or None,
    }


def _service(broker: BrokerDep) -> HostService:
    return HostService(broker.ctx)


ServiceDep = Annotated[HostService, Depends(_service)]


class HostQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    zone: str | None = None


@router.get("")
def list_hosts(
    broker: BrokerDep, service: ServiceDep, q: Annotated[HostQuery, Query()]
) -> dict[str, Any]:
    Drainer(broker.ctx).reconcile()
    return {"hosts": [host_body(v) for v in service.list_hosts(q.zone)]}


@router.get("/{zone}/{name}")
def show_host(zone: str, name: str, broker: BrokerDep, service: ServiceDep) -> dict[str, Any]:
    Drainer(broker.ctx).reconcile()
    view = service.get(zone, name)
    return {
        "host": host_body(view),
        "servers": [server_body(s) for s in service.servers(zone, name)],
    }


@router.post("/{zone}/{name}/enable")
def enable_host(zone: str, name: str, service: ServiceDep) -> dict[str, Any]:
    """Lift an administrator's disable and maintenance."""
    return {"host": host_body(service.enable(zone, name))}


@router.post("/{zone}/{name}/disable")
def disable_host(
    zone: str, name: str, service: ServiceDep, body: OptionalReason = None
) -> dict[str, Any]:
    reason = body.reason if body is not None else ""
    return {"host": host_body(service.disable(zone, name, reason))}


@router.post("/{zone}/{name}/maintenance")
def enter_maintenance(
    zone: str, name: str, service: ServiceDep, body: OptionalReason = None
) -> dict[str, Any]:
    """The host takes no new instances; the answer lists what still runs on it."""
    reason = body.reason if body is not None else ""
    view = service.enter_maintenance(zone, name, reason)
    return {
        "host": host_body(view),
        "servers": [server_body(s) for s in service.servers(zone, name)],
    }


@router.post("/{zone}/{name}/maintenance/exit")
def exit_maintenance(zone: str, name: str, service: ServiceDep) -> dict[str, Any]:
    return {"host": host_body(service.exit_maintenance(zone, name))}


@router.post("/{zone}/{name}/drain")
def drain_host(
    zone: str, name: str, broker: BrokerDep, service: ServiceDep, body: OptionalReason = None
) -> dict[str, Any]:
    """Move every instance of the host to other hosts of its availability zone; the answer
    reports each instance: moved (and where), stayed (and why) or failed (and why)."""
    reason = body.reason if body is not None else ""
    report = Drainer(broker.ctx).drain(zone, name, reason)
    return {
        "host": host_body(service.get(zone, name)),
        "moves": [move_body(m) for m in report.moves],
        "moved": report.count("moved"),
        "stayed": report.count("stayed"),
        "failed": report.count("failed"),
    }
