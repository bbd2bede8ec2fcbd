"""Typed dependencies shared by the routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from federator.broker import Broker
from federator.compute.service import RequestContext

COMPUTE_PREFIX = "/compute/v2.1"
BROKER_PREFIX = "/federator/v1"


def get_broker(request: Request) -> Broker:
    broker: Broker = request.app.state.broker
    return broker


def get_context(request: Request) -> RequestContext:
    """Who is asking. Until identity lands the broker trusts these headers; bind it to
    127.0.0.1 (the default) or put it behind a proxy that sets them."""
    h = request.headers
    roles = {r.strip() for r in h.get("x-roles", "admin").split(",") if r.strip()}
    return RequestContext(
        project_id=h.get("x-project-id", "default"),
        user_id=h.get("x-user-id", "default"),
        is_admin="admin" in roles,
    )


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/") + COMPUTE_PREFIX


BrokerDep = Annotated[Broker, Depends(get_broker)]
ContextDep = Annotated[RequestContext, Depends(get_context)]
BaseUrlDep = Annotated[str, Depends(base_url)]
