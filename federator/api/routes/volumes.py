"""/volume/v3/{project_id}: Cinder's volumes, types, availability zones, limits and quotas.

Status codes as Cinder has them: create and delete 202, update 200; deleting a volume that
is attached or busy 400; a project over its volume quota 413. ``GET /volume/`` and
``GET /volume/v3/`` describe the version, without a token, for the clients' discovery.
Volume lists filter on ``metadata`` as Cinder does: a dict literal (``{'k': 'v'}``, or
JSON) whose every pair the volume's metadata must hold.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse

from federator.api import volume_views as views
from federator.api.deps import BrokerDep, ContextDep, RootUrlDep, get_context
from federator.api.schemas import VolumeCreateBody, VolumeUpdateBody
from federator.api.volume_microversion import V3_45, V3_62, VolumeVersionDep
from federator.compute.service import RequestContext
from federator.exception import BadRequest, Forbidden, NotFound
from federator.volumes.service import CreateVolume, VolumeFilters

VOLUME_PREFIX = "/volume"
MAX_LIMIT = 1000

versions = APIRouter(prefix=VOLUME_PREFIX, tags=["block storage"])


@versions.get("")
@versions.get("/")
def volume_root(root: RootUrlDep) -> JSONResponse:
    return JSONResponse(views.versions(root), status_code=300)


@versions.get("/v3")
@versions.get("/v3/")
def volume_v3(root: RootUrlDep) -> dict[str, Any]:
    return views.versions(root)


def project_context(project_id: str, rc: ContextDep) -> RequestContext:
    """The caller, who may use another project's URL only as an admin."""
    if project_id != rc.project_id and not rc.is_admin:
        raise Forbidden(
            reason=f"the URL names project {project_id}; this token is scoped to project "
            f"{rc.project_id}"
        )
    return rc


ProjectContext = Annotated[RequestContext, Depends(project_context)]
router = APIRouter(
    prefix=f"{VOLUME_PREFIX}/v3/{{project_id}}",
    tags=["block storage"],
    dependencies=[Depends(get_context)],
)


def _base(root: str, project_id: str) -> str:
    return f"{root}{VOLUME_PREFIX}/v3/{project_id}"


# --- volumes ------------------------------------------------------------------------------


@router.post("/volumes", status_code=202)
def create_volume(
    project_id: str,
    body: VolumeCreateBody,
    broker: BrokerDep,
    rc: ProjectContext,
    version: VolumeVersionDep,
    root: RootUrlDep,
) -> dict[str, Any]:
    v = body.volume
    unsupported = v.unsupported_source()
    if unsupported is not None:
        raise BadRequest(
            reason=f"volume.{unsupported}: creating a volume from another source is not "
            "supported; create a blank volume",
            problems=[{"field": f"volume.{unsupported}", "message": "not supported"}],
        )
    view = broker.volumes.create(
        rc,
        CreateVolume(
            size=v.size,
            name=v.name,
            description=v.description,
            volume_type=v.volume_type,
            availability_zone=v.availability_zone,
            metadata=v.metadata or {},
            multiattach=bool(v.multiattach),
        ),
    )
    return {"volume": _detail(broker, view, project_id, root, version, rc)}


def _detail(
    broker: Any, view: Any, project_id: str, root: str, version: Any, rc: RequestContext
) -> dict[str, Any]:
    return views.volume_detail(
        view,
        _base(root, project_id),
        version,
        is_admin=rc.is_admin,
        vtype=broker.settings.volumes.type(view.volume_type),
    )


def _listing(
    request: Request,
    project_id: str,
    broker: BrokerDep,
    rc: RequestContext,
    *,
    limit: int | None,
    marker: str | None,
    sort: str | None,
    name: str | None,
    status: str | None,
    all_tenants: str | None,
    availability_zone: str | None,
    metadata: str | None = None,
) -> tuple[list[Any], str | None, VolumeFilters]:
    everyone = _truthy(all_tenants)
    if everyone and not rc.is_admin:
        everyone = False  # Cinder ignores all_tenants for non-admins
    size = min(limit or broker.settings.api.default_limit, MAX_LIMIT)
    if limit is not None and limit < 0:
        raise BadRequest(reason="limit: must be a non-negative integer")
    desc = True
    if sort:
        key, _, direction = sort.partition(":")
        if key not in ("created_at", "id") or direction not in ("", "asc", "desc"):
            raise BadRequest(reason=f"sort: {sort!r} is not supported; use created_at[:asc|desc]")
        desc = direction != "asc"
    filters = VolumeFilters(
        project_id=None if everyone else rc.project_id,
        name=name,
        status=status,
        availability_zone=availability_zone,
        metadata=_metadata_filter(metadata),
    )
    rows = broker.volumes.list_volumes(filters, limit=size, marker=marker, sort_desc=desc)
    nxt = rows[-1].id if len(rows) == size and rows else None
    return rows, nxt, filters


def _metadata_filter(raw: str | None) -> Mapping[str, str] | None:
    """The ``metadata`` filter as Cinder reads it (``ast.literal_eval``): a dict of keys to
    values, scalar values compared as text.

    :raises BadRequest: it is not such a dict.
    """
    if raw is None:
        return None
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        value = None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, (str, int, float, bool)) for k, v in value.items()
    ):
        raise BadRequest(
            reason="metadata: not a dict of keys to values, such as {'key': 'value'}",
            problems=[{"field": "metadata", "message": "expected a dict literal"}],
        )
    return {k: str(v) for k, v in value.items()}


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("1", "true", "yes", "")


def _next_link(request: Request, marker: str) -> list[dict[str, str]]:
    params = dict(request.query_params)
    params["marker"] = marker
    query = urlencode(params)
    return [{"rel": "next", "href": f"{str(request.url).split('?')[0]}?{query}"}]


@router.get("/volumes")
@router.get("/volumes/detail")
def list_volumes(
    request: Request,
    project_id: str,
    broker: BrokerDep,
    rc: ProjectContext,
    version: VolumeVersionDep,
    root: RootUrlDep,
    limit: Annotated[int | None, Query()] = None,
    marker: Annotated[str | None, Query()] = None,
    sort: Annotated[str | None, Query()] = None,
    name: Annotated[str | None, Query()] = None,
    status: Annotated[str | None, Query()] = None,
    all_tenants: Annotated[str | None, Query()] = None,
    availability_zone: Annotated[str | None, Query()] = None,
    metadata: Annotated[str | None, Query()] = None,
    with_count: Annotated[str | None, Query()] = None,
) -> dict[str, Any]:
    rows, nxt, filters = _listing(
        request,
        project_id,
        broker,
        rc,
        limit=limit,
        marker=marker,
        sort=sort,
        name=name,
        status=status,
        all_tenants=all_tenants,
        availability_zone=availability_zone,
        metadata=metadata,
    )
    if request.url.path.endswith("/detail"):
        items = [_detail(broker, v, project_id, root, version, rc) for v in rows]
    else:
        items = [views.volume_summary(v, _base(root, project_id)) for v in rows]
    body: dict[str, Any] = {"volumes": items}
    if nxt is not None:
        body["volumes_links"] = _next_link(request, nxt)
    if version >= V3_45 and _truthy(with_count):
        body["count"] = broker.volumes.count_volumes(filters)
    return body


@router.get("/volumes/{volume_id}")
def show_volume(
    project_id: str,
    volume_id: str,
    broker: BrokerDep,
    rc: ProjectContext,
    version: VolumeVersionDep,
    root: RootUrlDep,
) -> dict[str, Any]:
    view = broker.volumes.get(rc, volume_id)
    return {"volume": _detail(broker, view, project_id, root, version, rc)}


@router.put("/volumes/{volume_id}")
def update_volume(
    project_id: str,
    volume_id: str,
    body: VolumeUpdateBody,
    broker: BrokerDep,
    rc: ProjectContext,
    version: VolumeVersionDep,
    root: RootUrlDep,
) -> dict[str, Any]:
    u = body.volume
    given = u.model_fields_set
    fields = set()
    name, description = u.name, u.description
    if "name" in given or "display_name" in given:
        fields.add("name")
        name = u.name if "name" in given else u.display_name
    if "description" in given or "display_description" in given:
        fields.add("description")
        description = u.description if "description" in given else u.display_description
    if "metadata" in given:
        fields.add("metadata")
    if not fields:
        raise BadRequest(reason="volume: give at least one of name, description, metadata")
    view = broker.volumes.update(
        rc,
        volume_id,
        name=name,
        description=description,
        metadata=u.metadata,
        fields=frozenset(fields),
    )
    return {"volume": _detail(broker, view, project_id, root, version, rc)}


@router.delete("/volumes/{volume_id}", status_code=202)
def delete_volume(
    project_id: str, volume_id: str, broker: BrokerDep, rc: ProjectContext
) -> Response:
    broker.volumes.delete(rc, volume_id)
    return Response(status_code=202)


@router.post("/volumes/{volume_id}/action")
def volume_action(
    project_id: str, volume_id: str, body: dict[str, Any], broker: BrokerDep, rc: ProjectContext
) -> Response:
    broker.volumes.get(rc, volume_id)
    names = ", ".join(sorted(body)) or "(none)"
    raise BadRequest(reason=f"volume action {names} is not supported by this cloud")


# --- types, availability zones, limits, quotas --------------------------------------------


@router.get("/types")
def list_types(broker: BrokerDep, rc: ProjectContext) -> dict[str, Any]:
    return {"volume_types": [views.volume_type(t) for t in broker.settings.volumes.types]}


@router.get("/types/default")
def default_type(broker: BrokerDep, rc: ProjectContext, version: VolumeVersionDep) -> Any:
    if version < V3_62:
        raise NotFound(kind="Volume type", ident="default")
    t = broker.settings.volumes.type(broker.settings.volumes.default_type)
    assert t is not None
    return {"volume_type": views.volume_type(t)}


@router.get("/types/{type_id}")
def show_type(type_id: str, broker: BrokerDep, rc: ProjectContext) -> dict[str, Any]:
    t = broker.settings.volumes.type(type_id)
    if t is None:
        raise NotFound(kind="Volume type", ident=type_id)
    return {"volume_type": views.volume_type(t)}


@router.get("/os-availability-zone")
def availability_zones(broker: BrokerDep, rc: ProjectContext) -> dict[str, Any]:
    return {
        "availabilityZoneInfo": [
            {"zoneName": name, "zoneState": {"available": up}}
            for name, up in broker.volumes.availability_zones()
        ]
    }


@router.get("/limits")
def limits(broker: BrokerDep, rc: ProjectContext) -> dict[str, Any]:
    count, gigabytes = broker.volumes.usage(rc.project_id)
    cfg = broker.settings.volumes
    return views.limits(count, gigabytes, cfg.project_volumes, cfg.project_gigabytes)


@router.get("/os-quota-sets/{target}")
def quota_set(
    target: str,
    broker: BrokerDep,
    rc: ProjectContext,
    usage: Annotated[str | None, Query()] = None,
) -> dict[str, Any]:
    if target != rc.project_id and not rc.is_admin:
        raise Forbidden(reason=f"only an admin may read project {target}'s quotas")
    count, gigabytes = broker.volumes.usage(target)
    cfg = broker.settings.volumes
    figures = {
        "volumes": (cfg.project_volumes, count),
        "gigabytes": (cfg.project_gigabytes, gigabytes),
        "per_volume_gigabytes": (cfg.max_size_gb, 0),
        "snapshots": (0, 0),
        "backups": (0, 0),
        "backup_gigabytes": (0, 0),
        "groups": (0, 0),
    }
    body: dict[str, Any] = {"id": target}
    for key, (limit, used) in figures.items():
        cap = -1 if limit is None else limit
        body[key] = (
            {"limit": cap, "in_use": used, "reserved": 0, "allocated": 0}
            if _truthy(usage) and usage is not None and usage.lower() != "false"
            else cap
        )
    return {"quota_set": body}
