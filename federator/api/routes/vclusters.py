"""/vclusters: virtual clusters (seed 003) of servers and volumes placed all or nothing.

Served under the compute API (``/compute/v2.1/vclusters``) and, as the seed writes it,
under ``/v2/{tenant_id}/vclusters`` and ``/compute/v2.1/{project_id}/vclusters``: the
project in such a path must be the token's (Nova's rule for its project-id URLs).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request, Response

from federator.api.deps import BrokerDep, ContextDep
from federator.compute.service import RequestContext
from federator.exception import BadRequest

router = APIRouter(prefix="/vclusters", tags=["virtual clusters"])
JsonBody = Annotated[Any, Body()]


def project_in_path(request: Request, rc: ContextDep) -> RequestContext:
    """:raises BadRequest: the path names another project than the token's."""
    named = request.path_params.get("tenant_id") or request.path_params.get("project_id")
    if named is not None and named != rc.project_id:
        raise BadRequest(
            f"Malformed request URL: URL's project_id {named!r} doesn't match the token's "
            f"project_id {rc.project_id!r}"
        )
    return rc


Caller = Annotated[RequestContext, Depends(project_in_path)]


@router.post("", status_code=202)
def create_vcluster(body: JsonBody, broker: BrokerDep, rc: Caller) -> dict[str, Any]:
    return {"vcluster": broker.vclusters.create(rc, body).as_dict()}


@router.post("/explain")
def explain_vcluster(body: JsonBody, broker: BrokerDep, rc: Caller) -> dict[str, Any]:
    return {"plan": broker.vclusters.explain(rc, body)}


@router.get("")
def list_vclusters(
    broker: BrokerDep, rc: Caller, all_tenants: Annotated[str | None, Query()] = None
) -> dict[str, Any]:
    everyone = all_tenants is not None and all_tenants.lower() not in ("0", "false", "no")
    return {"vclusters": [v.as_dict() for v in broker.vclusters.list(rc, all_tenants=everyone)]}


@router.get("/{vcluster_id}")
def show_vcluster(vcluster_id: str, broker: BrokerDep, rc: Caller) -> dict[str, Any]:
    return {"vcluster": broker.vclusters.get(rc, vcluster_id).as_dict()}


@router.put("/{vcluster_id}", status_code=202)
def update_vcluster(
    vcluster_id: str, body: JsonBody, broker: BrokerDep, rc: Caller
) -> dict[str, Any]:
    return {"vcluster": broker.vclusters.update(rc, vcluster_id, body).as_dict()}


@router.delete("/{vcluster_id}", status_code=202)
def delete_vcluster(vcluster_id: str, broker: BrokerDep, rc: Caller) -> Response:
    broker.vclusters.delete(rc, vcluster_id)
    return Response(status_code=202)
