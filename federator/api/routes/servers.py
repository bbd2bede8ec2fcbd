"""/servers: create, list, list detail, show, delete, and the actions (start, stop, reboot,
pause, unpause, suspend, resume)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from federator.api.deps import BaseUrlDep, BrokerDep, ContextDep
from federator.api.microversion import MicroversionDep
from federator.api.rendering import JsonResponse, json_response
from federator.api.schemas import ServerActionBody, ServerCreateBody
from federator.api.views import server_brief, server_detail
from federator.broker import Broker
from federator.compute.records import ListFilters, ServerView
from federator.compute.service import BootRequest, RequestContext
from federator.exception import BadRequest

router = APIRouter(prefix="/servers", tags=["servers"])


@router.post("", status_code=202, response_class=JsonResponse)
def create_server(
    body: ServerCreateBody, broker: BrokerDep, rc: ContextDep, base: BaseUrlDep
) -> JsonResponse:
    s = body.server
    image = s.image()
    if not image:
        raise BadRequest(
            "an image is required: give imageRef or a boot device in block_device_mapping_v2",
            problems=[{"field": "server.imageRef", "message": "this field is required"}],
        )
    hint = body.group_hint()
    views = broker.compute.boot(
        rc,
        BootRequest(
            name=s.name,
            flavor_ref=s.flavorRef,
            image_ref=image,
            availability_zone=s.availability_zone,
            metadata=dict(s.metadata),
            min_count=s.min_count,
            max_count=s.max_count or s.min_count,
            group=hint[0] if hint else None,
            group_field=hint[1] if hint else "os:scheduler_hints.group",
        ),
    )
    first = views[0]
    server = server_brief(first, base)
    server.update({"OS-DCF:diskConfig": "MANUAL", "security_groups": [{"name": "default"}]})
    return json_response({"server": server}, status_code=202)


class ServerListQuery(BaseModel):
    """Filters and paging shared by GET /servers and /servers/detail. Unknown query
    parameters are ignored, as Nova does (clients send e.g. ``deleted=False``)."""

    limit: int | None = Field(default=None, ge=0)
    marker: str | None = None
    name: str | None = None
    status: str | None = None
    availability_zone: str | None = None
    host: str | None = None
    all_tenants: str | None = None
    project_id: str | None = None


ListQuery = Annotated[ServerListQuery, Query()]


def _list(broker: Broker, rc: RequestContext, q: ServerListQuery) -> list[ServerView]:
    cap = broker.settings.api.default_limit
    effective = cap if q.limit is None else min(q.limit, cap)
    everyone = q.all_tenants is not None and q.all_tenants.lower() not in ("0", "false", "no")
    filters = ListFilters(
        project_id=q.project_id if rc.is_admin else None,
        name=q.name,
        status=q.status.upper() if q.status else None,
        availability_zone=q.availability_zone,
        host=q.host if rc.is_admin else None,
    )
    return broker.compute.list(rc, filters, all_tenants=everyone, limit=effective, marker=q.marker)


@router.get("", response_class=JsonResponse)
def list_servers(broker: BrokerDep, rc: ContextDep, base: BaseUrlDep, q: ListQuery) -> JsonResponse:
    return json_response({"servers": [server_brief(v, base) for v in _list(broker, rc, q)]})


@router.get("/detail", response_class=JsonResponse)
def list_servers_detail(
    broker: BrokerDep, rc: ContextDep, base: BaseUrlDep, q: ListQuery, mv: MicroversionDep
) -> JsonResponse:
    servers = _list(broker, rc, q)
    attached = broker.volumes.attached_to([v.uuid for v in servers])
    return json_response(
        {
            "servers": [
                server_detail(
                    v,
                    base,
                    mv,
                    admin=rc.is_admin,
                    flavors=broker.settings.flavor,
                    volumes=attached.get(v.uuid, ()),
                )
                for v in servers
            ]
        }
    )


@router.get("/{server_id}")
def show_server(
    server_id: str, broker: BrokerDep, rc: ContextDep, base: BaseUrlDep, mv: MicroversionDep
) -> dict[str, Any]:
    v = broker.compute.get(rc, server_id)
    volumes = broker.volumes.attached_to([v.uuid]).get(v.uuid, ())
    return {
        "server": server_detail(
            v, base, mv, admin=rc.is_admin, flavors=broker.settings.flavor, volumes=volumes
        )
    }


@router.delete("/{server_id}", status_code=204)
def delete_server(server_id: str, broker: BrokerDep, rc: ContextDep) -> Response:
    broker.compute.delete(rc, server_id)
    return Response(status_code=204)


@router.post("/{server_id}/action", status_code=202)
def server_action(
    server_id: str, body: ServerActionBody, broker: BrokerDep, rc: ContextDep
) -> Response:
    given = body.model_fields_set
    if len(given) != 1:
        raise BadRequest(
            "give exactly one action: os-start, os-stop, reboot, pause, unpause, suspend or resume",
            problems=[{"field": "body", "message": "exactly one action is required"}],
        )
    (name,) = given
    if name == "reboot":
        hard = body.reboot is not None and body.reboot.type == "HARD"
        broker.compute.action(rc, server_id, "reboot", hard=hard)
    else:
        broker.compute.action(rc, server_id, name.removeprefix("os_"))
    return Response(status_code=202)
