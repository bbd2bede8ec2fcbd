"""The FastAPI application factory."""

from __future__ import annotations

from fastapi import APIRouter, Depends, FastAPI
from starlette.types import ASGIApp

from federator import __version__
from federator.api import errors
from federator.api.deps import BROKER_PREFIX, COMPUTE_PREFIX, get_context, require_admin
from federator.api.microversion import requested_version
from federator.api.middleware import RequestIdAndLimit
from federator.api.routes import (
    aggregates,
    capacity,
    flavors,
    hosts,
    identity,
    images,
    monitor,
    policy,
    server_groups,
    servers,
    vclusters,
    versions,
    volume_attachments,
    volumes,
    zones,
)
from federator.broker import Broker


def create_app(broker: Broker) -> FastAPI:
    """The API for ``broker``: identity under /identity, compute under /compute/v2.1, images
    under /image, broker extensions under /federator/v1 (admin only, except the capacity a
    parent broker polls); the OpenAPI document
    at /openapi.json.

    Every call needs a valid ``X-Auth-Token`` except version discovery, token issue, the
    health check and the OpenAPI document.
    """
    app = FastAPI(
        title="federator",
        version=__version__,
        description=(
            "Hybrid-cloud federation broker. OpenStack Compute v2.1 shapes for servers, "
            "flavors and availability zones; broker extensions for zones, policy and monitor."
        ),
    )
    app.state.broker = broker
    errors.install(app)
    compute = APIRouter(
        prefix=COMPUTE_PREFIX, dependencies=[Depends(get_context), Depends(requested_version)]
    )
    compute.include_router(servers.router)
    compute.include_router(flavors.router)
    compute.include_router(zones.az_router)
    compute.include_router(aggregates.router)
    compute.include_router(server_groups.router)
    compute.include_router(volume_attachments.router)
    compute.include_router(vclusters.router)
    # The seed's project-scoped paths for virtual clusters (the project must be the token's).
    scoped = [
        APIRouter(prefix=prefix, dependencies=[Depends(get_context), Depends(requested_version)])
        for prefix in (COMPUTE_PREFIX + "/{project_id}", "/v2/{tenant_id}")
    ]
    for r in scoped:
        r.include_router(vclusters.router)
    extensions = APIRouter(prefix=BROKER_PREFIX, dependencies=[Depends(require_admin)])
    extensions.include_router(zones.zone_router)
    extensions.include_router(hosts.router)
    extensions.include_router(policy.router)
    extensions.include_router(monitor.router)
    shared = APIRouter(prefix=BROKER_PREFIX, dependencies=[Depends(get_context)])
    shared.include_router(capacity.router)
    # FastAPI tries every route of every included router in order until one matches, so the
    # compute API, which clients call most, comes right after the version documents; no
    # two of these routers serve overlapping paths, so the order changes nothing else.
    app.include_router(versions.router)
    app.include_router(compute)
    app.include_router(identity.router)
    app.include_router(images.router)
    app.include_router(volumes.versions)
    app.include_router(volumes.router)
    app.include_router(extensions)
    app.include_router(shared)
    for r in scoped:
        app.include_router(r)
    return app


def asgi_app(broker: Broker) -> ASGIApp:
    """The application as served: request ids and the body limit wrap everything."""
    return RequestIdAndLimit(create_app(broker), broker.settings.api.max_body_bytes)
