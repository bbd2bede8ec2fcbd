"""/os-aggregates: host aggregates in Nova's v2.1 shapes (admin only, as Nova's policy).

Ids are numbers; a name or any other id answers 404 ``itemNotFound``, which is what the
OpenStack clients need to look an aggregate up by name (they then list and match).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from federator.api.deps import BrokerDep, require_admin
from federator.api.microversion import V2_41, MicroversionDep, Version
from federator.config import AggregateName
from federator.exception import BadRequest
from federator.hosts.aggregates import AggregateService, AggregateView

router = APIRouter(
    prefix="/os-aggregates", tags=["aggregates"], dependencies=[Depends(require_admin)]
)

HostName = Annotated[str, StringConstraints(min_length=1, max_length=255, strip_whitespace=True)]
MetaKey = Annotated[str, StringConstraints(min_length=1, max_length=255)]
MetaValue = Annotated[str, StringConstraints(max_length=255)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AggregateCreate(_Body):
    name: AggregateName
    availability_zone: str | None = None


class AggregateCreateBody(_Body):
    aggregate: AggregateCreate


class AggregateUpdate(_Body):
    """What to change; an availability zone given as null is removed."""

    name: AggregateName | None = None
    availability_zone: str | None = None


class AggregateUpdateBody(_Body):
    aggregate: AggregateUpdate


class HostRef(_Body):
    host: HostName


class Metadata(_Body):
    metadata: dict[MetaKey, MetaValue | None] = Field(max_length=128)


class AggregateActionBody(_Body):
    add_host: HostRef | None = None
    remove_host: HostRef | None = None
    set_metadata: Metadata | None = None


def _ts(ts: datetime | None) -> str | None:
    return None if ts is None else ts.strftime("%Y-%m-%dT%H:%M:%S.%f")


def aggregate_body(a: AggregateView, mv: Version) -> dict[str, Any]:
    """An aggregate as Nova shows it at microversion ``mv`` (its uuid from 2.41)."""
    body: dict[str, Any] = {
        "id": a.id,
        "name": a.name,
        "availability_zone": a.availability_zone,
        "hosts": list(a.hosts),
        "metadata": dict(a.metadata),
        "created_at": _ts(a.created_at),
        "updated_at": _ts(a.updated_at),
        "deleted_at": None,
        "deleted": False,
    }
    if mv >= V2_41:
        body["uuid"] = a.uuid
    return body


def _service(broker: BrokerDep) -> AggregateService:
    return AggregateService(broker.ctx)


ServiceDep = Annotated[AggregateService, Depends(_service)]


@router.get("")
def list_aggregates(service: ServiceDep, mv: MicroversionDep) -> dict[str, Any]:
    return {"aggregates": [aggregate_body(a, mv) for a in service.list_aggregates()]}


@router.post("")
def create_aggregate(
    body: AggregateCreateBody, service: ServiceDep, mv: MicroversionDep
) -> dict[str, Any]:
    a = body.aggregate
    return {"aggregate": aggregate_body(service.create(a.name, a.availability_zone), mv)}


@router.get("/{aggregate_id}")
def show_aggregate(aggregate_id: str, service: ServiceDep, mv: MicroversionDep) -> dict[str, Any]:
    return {"aggregate": aggregate_body(service.get(aggregate_id), mv)}


@router.put("/{aggregate_id}")
def update_aggregate(
    aggregate_id: str, body: AggregateUpdateBody, service: ServiceDep, mv: MicroversionDep
) -> dict[str, Any]:
    a = body.aggregate
    given = a.model_fields_set
    if not given:
        raise BadRequest(
            "give the aggregate's new name or availability_zone",
            problems=[{"field": "aggregate", "message": "name or availability_zone is required"}],
        )
    if "name" in given and a.name is None:
        raise BadRequest(
            "an aggregate's name cannot be null",
            problems=[{"field": "aggregate.name", "message": "must be a string"}],
        )
    changes: dict[str, Any] = {"name": a.name}
    if "availability_zone" in given:
        changes["availability_zone"] = a.availability_zone
    return {"aggregate": aggregate_body(service.update(aggregate_id, **changes), mv)}


@router.delete("/{aggregate_id}")
def delete_aggregate(aggregate_id: str, service: ServiceDep) -> Response:
    service.delete(aggregate_id)
    return Response(status_code=200)


@router.post("/{aggregate_id}/action")
def aggregate_action(
    aggregate_id: str, body: AggregateActionBody, service: ServiceDep, mv: MicroversionDep
) -> dict[str, Any]:
    given = body.model_fields_set
    if len(given) != 1:
        raise BadRequest(
            "give exactly one action: add_host, remove_host or set_metadata",
            problems=[{"field": "body", "message": "exactly one action is required"}],
        )
    if body.add_host is not None:
        view = service.add_host(aggregate_id, body.add_host.host)
    elif body.remove_host is not None:
        view = service.remove_host(aggregate_id, body.remove_host.host)
    elif body.set_metadata is not None:
        view = service.set_metadata(aggregate_id, body.set_metadata.metadata)
    else:
        action = next(iter(given))
        raise BadRequest(
            f"{action} needs a body",
            problems=[{"field": action, "message": "must be an object"}],
        )
    return {"aggregate": aggregate_body(view, mv)}
