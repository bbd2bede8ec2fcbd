"""Version discovery documents (root, compute) and the broker's health check."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from federator.api import microversion
from federator.api.deps import BROKER_PREFIX, COMPUTE_PREFIX, BrokerDep

router = APIRouter(tags=["versions"])


def _compute_version(request: Request) -> dict[str, Any]:
    base = str(request.base_url).rstrip("/")
    return {
        "id": "v2.1",
        "status": "CURRENT",
        "version": str(microversion.MAX),
        "min_version": str(microversion.MIN),
        "updated": "2026-11-21T00:00:00Z",
        "links": [{"rel": "self", "href": f"{base}{COMPUTE_PREFIX}/"}],
    }


@router.get("/")
def root(request: Request) -> JSONResponse:
    base = str(request.base_url).rstrip("/")
    return JSONResponse(
        {
            "versions": [
                _compute_version(request),
                {
                    "id": "federator-v1",
                    "status": "CURRENT",
                    "links": [{"rel": "self", "href": f"{base}{BROKER_PREFIX}/"}],
                },
            ]
        },
        status_code=300,
    )


@router.get(COMPUTE_PREFIX)
@router.get(COMPUTE_PREFIX + "/")
def compute_version(request: Request) -> dict[str, Any]:
    return {"version": _compute_version(request)}


@router.get(BROKER_PREFIX + "/health")
def health(broker: BrokerDep) -> dict[str, Any]:
    return {
        "status": "ok",
        "broker_id": broker.settings.broker_id,
        "node_id": broker.settings.node_id,
        "policy_version": broker.policies.current.policy.version,
    }
