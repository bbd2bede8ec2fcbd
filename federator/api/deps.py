"""Typed dependencies shared by the routes: the broker, who is asking, base URLs."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from federator.broker import Broker
from federator.compute.service import RequestContext
from federator.exception import Forbidden
from federator.identity.model import TokenInfo

COMPUTE_PREFIX = "/compute/v2.1"
BROKER_PREFIX = "/federator/v1"
IDENTITY_PREFIX = "/identity"
IMAGE_PREFIX = "/image"
AUTH_HEADER = "x-auth-token"


# The dependencies below do no blocking I/O, so they are ``async``: FastAPI runs a plain
# ``def`` dependency in a worker thread, and every request would pay a thread hop for each.


async def get_broker(request: Request) -> Broker:
    broker: Broker = request.app.state.broker
    return broker


async def get_token(request: Request, broker: Annotated[Broker, Depends(get_broker)]) -> TokenInfo:
    """The caller's valid token (``X-Auth-Token``).

    A token this process validated recently is answered from memory on the event loop;
    any other is checked against the database in a worker thread, so the loop never waits
    on a query.

    :raises Unauthorized: none given, or unknown, expired or revoked.
    """
    token = request.headers.get(AUTH_HEADER)
    info = broker.identity.validate_cached(token)
    if info is not None:
        return info
    return await run_in_threadpool(broker.identity.validate, token)


async def get_context(token: Annotated[TokenInfo, Depends(get_token)]) -> RequestContext:
    """Who is asking, as the compute layer needs it."""
    return RequestContext(
        project_id=token.project.id, user_id=token.user.id, is_admin=token.is_admin
    )


async def require_admin(rc: Annotated[RequestContext, Depends(get_context)]) -> RequestContext:
    """:raises Forbidden: the caller's token does not carry the admin role."""
    if not rc.is_admin:
        raise Forbidden(reason="this call needs the admin role")
    return rc


async def root_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


async def base_url(request: Request, root: Annotated[str, Depends(root_url)]) -> str:
    return root + COMPUTE_PREFIX


BrokerDep = Annotated[Broker, Depends(get_broker)]
TokenDep = Annotated[TokenInfo, Depends(get_token)]
ContextDep = Annotated[RequestContext, Depends(get_context)]
BaseUrlDep = Annotated[str, Depends(base_url)]
RootUrlDep = Annotated[str, Depends(root_url)]
