"""/flavors: the sizes operators define in the configuration."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from federator.api.deps import BaseUrlDep, BrokerDep
from federator.api.microversion import MicroversionDep
from federator.api.views import flavor_view
from federator.broker import Broker
from federator.config import FlavorConfig
from federator.exception import NotFound

router = APIRouter(prefix="/flavors", tags=["flavors"])


@router.get("")
def list_flavors(
    broker: BrokerDep, base: BaseUrlDep, mv: MicroversionDep, is_public: str | None = None
) -> dict[str, Any]:
    return {"flavors": [flavor_view(f, base, False, mv) for f in broker.settings.flavors]}


@router.get("/detail")
def list_flavors_detail(
    broker: BrokerDep, base: BaseUrlDep, mv: MicroversionDep, is_public: str | None = None
) -> dict[str, Any]:
    return {"flavors": [flavor_view(f, base, True, mv) for f in broker.settings.flavors]}


def _by_id(broker: Broker, flavor_id: str) -> FlavorConfig:
    # By id only: OpenStack clients look names up by listing after a 404 here.
    for f in broker.settings.flavors:
        if f.id == flavor_id:
            return f
    raise NotFound(kind="flavor", ident=flavor_id)


@router.get("/{flavor_id}")
def show_flavor(
    flavor_id: str, broker: BrokerDep, base: BaseUrlDep, mv: MicroversionDep
) -> dict[str, Any]:
    return {"flavor": flavor_view(_by_id(broker, flavor_id), base, True, mv)}


@router.get("/{flavor_id}/os-extra_specs")
def flavor_extra_specs(flavor_id: str, broker: BrokerDep) -> dict[str, Any]:
    """The flavor's extra specs from the configuration (``openstack flavor show`` asks)."""
    return {"extra_specs": dict(_by_id(broker, flavor_id).extra_specs)}


@router.get("/{flavor_id}/os-extra_specs/{key}")
def flavor_extra_spec(flavor_id: str, key: str, broker: BrokerDep) -> dict[str, Any]:
    """One extra spec, ``{key: value}``; 404 when the flavor does not have it.

    :raises NotFound: no such flavor, or no such key.
    """
    specs = _by_id(broker, flavor_id).extra_specs
    if key not in specs:
        raise NotFound(f"flavor {flavor_id} has no extra spec {key}", kind="extra spec", ident=key)
    return {key: specs[key]}
