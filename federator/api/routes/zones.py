"""Availability zones (os-availability-zone): the zones and those host aggregates give;
and the broker's zones with their load."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from sqlalchemy import case, func, select

from federator.api.deps import BrokerDep, require_admin
from federator.api.views import iso
from federator.broker import Broker
from federator.exception import NotFound
from federator.hosts.inventory import zone_loads
from federator.hosts.membership import aggregate_zones
from federator.policy.evaluate import threshold_figures
from federator.storage.models import Host, Zone

az_router = APIRouter(prefix="/os-availability-zone", tags=["availability zones"])
zone_router = APIRouter(prefix="/zones", tags=["zones (broker)"])


def _zones(broker: Broker) -> list[Zone]:
    with broker.dbs.api.read() as s:
        rows = list(s.scalars(select(Zone)))
        for r in rows:
            s.expunge(r)
    order = {z.name: i for i, z in enumerate(broker.settings.zones)}
    return sorted((r for r in rows if r.name in order), key=lambda r: order[r.name])


def _aggregate_azs(broker: Broker) -> dict[str, str]:
    """Availability zones given by host aggregates (holding hosts), each with its zone."""
    names = {z.name for z in broker.settings.zones}
    found = aggregate_zones(broker.dbs.api)
    return {az: found[az] for az in sorted(found) if az not in names}


@az_router.get("")
def list_azs(broker: BrokerDep) -> dict[str, Any]:
    """Every zone, then every availability zone a host aggregate gives (available while
    the zone holding its hosts is)."""
    zones = _zones(broker)
    state = {z.name: z.state == "available" for z in zones}
    info = [
        {"zoneName": z.name, "zoneState": {"available": state[z.name]}, "hosts": None}
        for z in zones
    ]
    info += [
        {"zoneName": az, "zoneState": {"available": state.get(zone, False)}, "hosts": None}
        for az, zone in _aggregate_azs(broker).items()
    ]
    return {"availabilityZoneInfo": info}


@az_router.get("/detail", dependencies=[Depends(require_admin)])
def list_azs_detail(broker: BrokerDep) -> dict[str, Any]:
    """Availability zones with their hosts: admin only, as in Nova (clients fall back to
    the list). A host is listed under its availability zone: its aggregate's, else its
    zone's."""
    with broker.dbs.api.read() as s:
        hosts = list(s.scalars(select(Host).order_by(Host.zone, Host.name)))
    by_az: dict[str, dict[str, Any]] = {}
    for h in hosts:
        by_az.setdefault(h.az, {})[h.name] = {
            "nova-compute": {
                "available": h.enabled,
                "active": h.enabled,
                "updated_at": iso(h.updated_at),
            }
        }
    info = []
    zones = _zones(broker)
    for z in zones:
        remote = broker.drivers[z.name].capabilities().host_scheduling is False
        info.append(
            {
                "zoneName": z.name,
                "zoneState": {"available": z.state == "available"},
                "hosts": by_az.get(z.name)
                or (
                    {
                        f"{z.name}-virtual": {
                            "nova-compute": {
                                "available": z.state == "available",
                                "active": z.state == "available",
                                "updated_at": iso(z.updated_at),
                            }
                        }
                    }
                    if remote
                    else None
                ),
            }
        )
    state = {z.name: z.state == "available" for z in zones}
    for az, zone in _aggregate_azs(broker).items():
        info.append(
            {
                "zoneName": az,
                "zoneState": {"available": state.get(zone, False)},
                "hosts": by_az.get(az),
            }
        )
    return {"availabilityZoneInfo": info}


def _zone_body(broker: Broker, z: Zone, host_counts: dict[str, tuple[int, int]]) -> dict[str, Any]:
    zc = broker.settings.zone(z.name)
    policy = broker.policies.current.policy
    load = zone_loads(broker.dbs.api)[z.name]
    total, enabled = host_counts.get(z.name, (0, 0))
    zp = policy.zones.get(z.name)
    stand_in = broker.stand_in
    return {
        "name": z.name,
        "kind": z.kind,
        "driver": z.driver,
        "label": zc.label,
        # The embedded default's EC2 imitation backing this zone, if it is that zone.
        "stand_in": stand_in.public() if stand_in is not None and stand_in.zone == z.name else None,
        "cell": z.cell,
        "state": z.state,
        "state_detail": z.state_detail,
        "bursting": z.bursting,
        "hosts": {"total": total, "enabled": enabled},
        "usage": {
            "instances": z.instances,
            "vcpus": z.vcpus_used,
            "ram_mb": z.ram_used_mb,
            "disk_gb": z.disk_used_gb,
        },
        "capacity": {"vcpus": z.vcpus_total, "ram_mb": z.ram_total_mb, "disk_gb": z.disk_total_gb},
        # The monitor's count from the driver's listing (virtual zones; null until
        # measured). Placement uses "usage", which moves atomically with allocations.
        "remote_usage": (
            {"instances": z.remote_instances, "vcpus": z.remote_vcpus, "ram_mb": z.remote_ram_mb}
            if z.remote_instances is not None
            else None
        ),
        # What a child zone last reported it can still take (see monitor.capabilities).
        "capabilities": (
            {**z.capabilities, "reported_at": iso(z.capabilities_at)}
            if z.capabilities is not None and z.capabilities_at is not None
            else None
        ),
        "thresholds": threshold_figures(policy, load),
        "quota": zp.quota.model_dump() if zp is not None and zp.quota is not None else None,
        "overflow": list(zp.overflow) if zp is not None and zp.overflow else [],
        "updated_at": iso(z.updated_at),
    }


def _host_counts(broker: Broker) -> dict[str, tuple[int, int]]:
    with broker.dbs.api.read() as s:
        rows = s.execute(
            select(Host.zone, func.count(), func.sum(case((Host.enabled, 1), else_=0))).group_by(
                Host.zone
            )
        ).all()
    return {r[0]: (int(r[1]), int(r[2] or 0)) for r in rows}


@zone_router.get("")
def list_zones(broker: BrokerDep) -> dict[str, Any]:
    counts = _host_counts(broker)
    return {"zones": [_zone_body(broker, z, counts) for z in _zones(broker)]}


@zone_router.get("/{name}")
def show_zone(name: str, broker: BrokerDep) -> dict[str, Any]:
    counts = _host_counts(broker)
    for z in _zones(broker):
        if z.name == name:
            return {"zone": _zone_body(broker, z, counts)}
    raise NotFound(kind="zone", ident=name)
