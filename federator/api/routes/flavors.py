"""/flavors: the sizes operators define in the configuration."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from federator.api.deps import BaseUrlDep, BrokerDep
from federator.api.microversion import MicroversionDep, Version
from federator.api.views import flavor_view
from federator.broker import Broker
from federator.config import FlavorConfig
from federator.exception import NotFound

router = APIRouter(prefix="/flavors", tags=["flavors"])


# Listings as sent, by (base URL, detail, microversion). The flavors come from the
# configuration and never change while it is loaded, so each listing is built and
# serialised once; the list object it was built from is kept with it, and a different
# configuration (another list) builds it afresh. Bounded, because the base URL comes from
# the client's Host header.
_LISTINGS: dict[tuple[str, bool, Version], tuple[list[FlavorConfig], bytes]] = {}
_LISTINGS_MAX = 256


def _render(flavors: list[FlavorConfig], base: str, detail: bool, mv: Version) -> bytes:
    body = {"flavors": [flavor_view(f, base, detail, mv) for f in flavors]}
    # The encoding FastAPI's own JSON responses use.
    return json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


async def _listing(broker: Broker, base: str, detail: bool, mv: Version) -> Response:
    """The flavor listing, from the cache; a miss is rendered in a worker thread, so a
    large listing never holds up the event loop."""
    flavors = broker.settings.flavors
    key = (base, detail, mv)
    hit = _LISTINGS.get(key)
    if hit is not None and hit[0] is flavors:
        raw = hit[1]
    else:
        raw = await run_in_threadpool(_render, flavors, base, detail, mv)
        if len(_LISTINGS) >= _LISTINGS_MAX:
            _LISTINGS.clear()
        _LISTINGS[key] = (flavors, raw)
    return Response(raw, media_type="application/json")


@router.get("")
async def list_flavors(
    broker: BrokerDep, base: BaseUrlDep, mv: MicroversionDep, is_public: str | None = None
) -> Response:
    return await _listing(broker, base, False, mv)


@router.get("/detail")
async def list_flavors_detail(
    broker: BrokerDep, base: BaseUrlDep, mv: MicroversionDep, is_public: str | None = None
) -> Response:
    return await _listing(broker, base, True, mv)


def _by_id(broker: Broker, flavor_id: str) -> FlavorConfig:
    # By id only: OpenStack clients look names up by listing after a 404 here.
    for f in broker.settings.flavors:
        if f.id == flavor_id:
            return f
    raise NotFound(kind="flavor", ident=flavor_id)


# The rest read only the configuration: no I/O, so no worker thread either.


@router.get("/{flavor_id}")
async def show_flavor(
    flavor_id: str, broker: BrokerDep, base: BaseUrlDep, mv: MicroversionDep
) -> dict[str, Any]:
    return {"flavor": flavor_view(_by_id(broker, flavor_id), base, True, mv)}


@router.get("/{flavor_id}/os-extra_specs")
async def flavor_extra_specs(flavor_id: str, broker: BrokerDep) -> dict[str, Any]:
    """The flavor's extra specs from the configuration (``openstack flavor show`` asks)."""
    return {"extra_specs": dict(_by_id(broker, flavor_id).extra_specs)}


@router.get("/{flavor_id}/os-extra_specs/{key}")
async def flavor_extra_spec(flavor_id: str, key: str, broker: BrokerDep) -> dict[str, Any]:
    """One extra spec, ``{key: value}``; 404 when the flavor does not have it.

    :raises NotFound: no such flavor, or no such key.
    """
    specs = _by_id(broker, flavor_id).extra_specs
    if key not in specs:
        raise NotFound(f"flavor {flavor_id} has no extra spec {key}", kind="extra spec", ident=key)
    return {key: specs[key]}
