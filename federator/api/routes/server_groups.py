"""/os-server-groups: create, list, show and delete server groups, as Nova serves them.

Below 2.64 a group has ``policies`` (a list of exactly one) and ``metadata``; from 2.64 it
has ``policy`` and ``rules``. The soft policies need 2.15, ``project_id`` and ``user_id``
are shown from 2.13. The rule key ``scope`` is the broker's extension (2.64 form only).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from federator.api import microversion as mv
from federator.api.deps import BrokerDep, ContextDep
from federator.api.microversion import MicroversionDep
from federator.api.schemas import ServerGroupCreate, ServerGroupCreateBody
from federator.exception import BadRequest
from federator.groups.rules import ANTI_AFFINITY, POLICIES
from federator.groups.service import GroupView

router = APIRouter(prefix="/os-server-groups", tags=["server groups"])
MAX_LIMIT = 1000


def _refuse(field: str, message: str) -> BadRequest:
    return BadRequest(
        f"invalid request: {field}: {message}", problems=[{"field": field, "message": message}]
    )


def _policy(body: ServerGroupCreate, version: mv.Version) -> str:
    """The one policy of the body, in the form ``version`` takes.

    :raises BadRequest: the wrong form for the version, or an unknown policy.
    """
    allowed = POLICIES if version >= mv.V2_15 else (POLICIES[0], POLICIES[1])
    if version >= mv.V2_64:
        if body.policies is not None:
            raise _refuse("server_group.policies", "unknown field from 2.64: give 'policy'")
        if body.policy is None:
            raise _refuse("server_group.policy", "this field is required")
        field, policy = "server_group.policy", body.policy
    else:
        for name in ("policy", "rules"):
            if getattr(body, name) is not None:
                raise _refuse(f"server_group.{name}", "unknown field before microversion 2.64")
        if body.policies is None:
            raise _refuse("server_group.policies", "this field is required")
        if len(body.policies) != 1:
            raise _refuse("server_group.policies", "give exactly one policy")
        field, policy = "server_group.policies[0]", body.policies[0]
    if policy not in allowed:
        extra = "" if version >= mv.V2_15 else " (the soft policies need microversion 2.15)"
        raise _refuse(field, f"{policy!r} is not one of {', '.join(allowed)}{extra}")
    return policy


@router.post("")
def create_server_group(
    body: ServerGroupCreateBody, broker: BrokerDep, rc: ContextDep, version: MicroversionDep
) -> dict[str, Any]:
    g = body.server_group
    policy = _policy(g, version)
    rules = g.rules
    max_per_host = rules.max_server_per_host if rules else None
    if max_per_host is not None and policy != ANTI_AFFINITY:
        raise _refuse(
            "server_group.rules.max_server_per_host",
            f"only the anti-affinity policy takes this rule, not {policy}",
        )
    view = broker.groups.create(
        rc,
        name=g.name,
        policy=policy,
        max_server_per_host=max_per_host,
        scope=(rules.scope if rules and rules.scope else "host"),
    )
    return {"server_group": group_view(view, version)}


class GroupListQuery(BaseModel):
    all_projects: str | None = None
    limit: int | None = Field(default=None, ge=0)
    offset: int = Field(default=0, ge=0)


@router.get("")
def list_server_groups(
    broker: BrokerDep,
    rc: ContextDep,
    version: MicroversionDep,
    q: Annotated[GroupListQuery, Query()],
) -> dict[str, Any]:
    everyone = q.all_projects is not None and q.all_projects.lower() not in ("0", "false", "no")
    limit = MAX_LIMIT if q.limit is None else min(q.limit, MAX_LIMIT)
    views = broker.groups.list(rc, all_projects=everyone, limit=limit, offset=q.offset)
    return {"server_groups": [group_view(v, version) for v in views]}


@router.get("/{group_id}")
def show_server_group(
    group_id: str, broker: BrokerDep, rc: ContextDep, version: MicroversionDep
) -> dict[str, Any]:
    view = broker.groups.get(rc, group_id)
    body = group_view(view, version)
    body["federator:members"] = [
        {
            "id": p.uuid,
            "zone": p.zone,
            "availability_zone": p.availability_zone,
            "host": p.host,
            "rule_kept_by": p.kept_by,
        }
        for p in view.places
    ]
    body["federator:remote_groups"] = [{"zone": z, "id": r} for z, r in view.remote]
    return {"server_group": body}


@router.delete("/{group_id}", status_code=204)
def delete_server_group(group_id: str, broker: BrokerDep, rc: ContextDep) -> Response:
    broker.groups.delete(rc, group_id)
    return Response(status_code=204)


def group_view(v: GroupView, version: mv.Version) -> dict[str, Any]:
    """A group as Nova shows it at ``version``."""
    body: dict[str, Any] = {"id": v.uuid, "name": v.name, "members": list(v.members)}
    if version >= mv.V2_64:
        body["policy"] = v.policy
        rules: dict[str, Any] = {}
        if v.max_server_per_host is not None:
            rules["max_server_per_host"] = v.max_server_per_host
        if v.scope != "host":
            rules["scope"] = v.scope
        body["rules"] = rules
    else:
        body["policies"] = [v.policy]
        body["metadata"] = {}
    if version >= mv.V2_13:
        body["project_id"] = v.project_id
        body["user_id"] = v.user_id
    return body
