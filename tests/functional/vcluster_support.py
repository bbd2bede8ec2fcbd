"""Helpers for virtual-cluster tests: bodies, waiting for a cluster to settle."""

from __future__ import annotations

import time
from collections.abc import Collection
from typing import Any

import httpx
from sqlalchemy import select

from federator.storage.models import (
    Allocation,
    BuildRequest,
    Host,
    Instance,
    InstanceMapping,
    RequestSpec,
    StoragePool,
    VClusterMember,
    Volume,
    VolumeAllocation,
    Zone,
)
from tests.conftest import LiveBroker

SETTLED = frozenset({"ACTIVE", "ERROR", "DEGRADED"})


def server(name: str, flavor: str = "m1.small", **spec: Any) -> dict[str, Any]:
    return {"name": name, "type": "server",
            "spec": {"imageRef": "cirros", "flavorRef": flavor, **spec}}  # fmt: skip


def volume(name: str, size: int = 10, **spec: Any) -> dict[str, Any]:
    return {"name": name, "type": "volume", "spec": {"size": size, "volume_type": "", **spec}}


def grouping(name: str, rule: str, *members: str, **spec: Any) -> dict[str, Any]:
    return {"name": name, "membersRef": list(members), "spec": {"rule": rule, **spec}}


def use_case_1() -> dict[str, Any]:
    return {"vcluster": {
        "name": "web",
        "instances": [server("web-server"), volume("web-vol")],
        "groupings": [grouping("together", "affinity", "web-server", "web-vol")],
    }}  # fmt: skip


def use_case_2() -> dict[str, Any]:
    return {"vcluster": {
        "name": "db",
        "instances": [server("db-server-1"), volume("db-vol-1"), server("db-server-2"),
                      volume("db-vol-2")],
        "groupings": [
            grouping("group-1", "affinity", "db-server-1", "db-vol-1"),
            grouping("group-2", "affinity", "db-server-2", "db-vol-2"),
            grouping("group-3", "anti-affinity", "db-server-1", "db-server-2"),
            grouping("group-4", "anti-affinity", "db-vol-1", "db-vol-2"),
        ],
    }}  # fmt: skip


def create(live: LiveBroker, body: dict[str, Any], client: httpx.Client | None = None) -> str:
    r = (client or live.client).post(f"{live.compute}/vclusters", json=body)
    assert r.status_code == 202, r.text
    assert r.json()["vcluster"]["status"] == "BUILD"
    cid: str = r.json()["vcluster"]["id"]
    return cid


def show(live: LiveBroker, cid: str, client: httpx.Client | None = None) -> dict[str, Any]:
    r = (client or live.client).get(f"{live.compute}/vclusters/{cid}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()["vcluster"]
    return body


def wait(live: LiveBroker, cid: str, timeout: float = 60.0) -> dict[str, Any]:
    """The cluster once it has settled (ACTIVE, ERROR or DEGRADED) and no task is left."""
    live.wait_settled(timeout)
    deadline = time.monotonic() + timeout
    while True:
        c = show(live, cid)
        if c["status"] in SETTLED:
            return c
        assert time.monotonic() < deadline, f"vcluster {cid} still {c['status']}"
        live.wait_settled(timeout)


def members(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in c["instances"]}


# --- larger clusters and what they leave behind -------------------------------------------


def spread(
    grouping_name: str,
    rule: str,
    count: int,
    *,
    prefix: str = "node",
    extra: tuple[dict[str, Any], ...] = (),
    **spec: Any,
) -> dict[str, Any]:
    """A cluster of ``count`` m1.small servers (``<prefix>-0`` ...) in one grouping
    ``grouping_name`` of ``rule`` (``spec`` adds to its spec, e.g. ``scope="zone"``);
    ``extra`` members join the cluster outside the grouping."""
    names = [f"{prefix}-{n}" for n in range(count)]
    return {"vcluster": {
        "name": grouping_name,
        "instances": [server(n) for n in names] + list(extra),
        "groupings": [grouping(grouping_name, rule, *names, **spec)],
    }}  # fmt: skip


def member_ids(live: LiveBroker, cid: str) -> dict[str, str]:
    """Every member's own id (server or volume uuid) by name, read from the broker's
    database: the API shows no id for a member that was never placed."""
    with live.broker.ctx.api.read() as s:
        rows = s.execute(
            select(VClusterMember.name, VClusterMember.uuid).where(
                VClusterMember.cluster_uuid == cid
            )
        ).all()
    return {name: uuid for name, uuid in rows}


def leftovers(live: LiveBroker, uuids: Collection[str]) -> dict[str, list[str]]:
    """What the broker's databases still hold for ``uuids``, by table: claims (server and
    volume allocations), build requests, request specs, instance mappings, live volume rows
    and live instance records in any cell. Empty lists everywhere: nothing is left."""
    ids = list(uuids)
    ctx = live.broker.ctx
    found: dict[str, list[str]] = {}
    with ctx.api.read() as s:
        found["allocations"] = list(
            s.scalars(select(Allocation.instance_uuid).where(Allocation.instance_uuid.in_(ids)))
        )
        found["volume_allocations"] = list(
            s.scalars(
                select(VolumeAllocation.volume_uuid).where(VolumeAllocation.volume_uuid.in_(ids))
            )
        )
        found["build_requests"] = list(
            s.scalars(select(BuildRequest.instance_uuid).where(BuildRequest.instance_uuid.in_(ids)))
        )
        found["request_specs"] = list(
            s.scalars(select(RequestSpec.instance_uuid).where(RequestSpec.instance_uuid.in_(ids)))
        )
        found["instance_mappings"] = list(
            s.scalars(
                select(InstanceMapping.instance_uuid).where(InstanceMapping.instance_uuid.in_(ids))
            )
        )
        found["volumes"] = list(
            s.scalars(select(Volume.uuid).where(Volume.uuid.in_(ids), Volume.deleted.is_(False)))
        )
    found["instances"] = []
    for cell, db in ctx.cells.items():
        with db.read() as s:
            found["instances"] += [
                f"{cell}:{u}"
                for u in s.scalars(
                    select(Instance.uuid).where(Instance.uuid.in_(ids), Instance.deleted.is_(False))
                )
            ]
    return found


def used_capacity(live: LiveBroker) -> list[str]:
    """Every host, zone and storage pool whose usage counters are not all zero, with them
    (``local/local-host-0: ...``); an empty list when the broker holds no claim at all."""
    used: list[str] = []
    with live.broker.ctx.api.read() as s:
        for h in s.scalars(select(Host)):
            on_host = (h.vcpus_used, h.ram_used_mb, h.disk_used_gb, h.instances)
            if any(on_host):
                used.append(f"host {h.zone}/{h.name}: {on_host}")
        for z in s.scalars(select(Zone)):
            in_zone = (z.vcpus_used, z.ram_used_mb, z.disk_used_gb, z.instances,
                        z.volume_gb_used, z.volumes)  # fmt: skip
            if any(in_zone):
                used.append(f"zone {z.name}: {in_zone}")
        for p in s.scalars(select(StoragePool)):
            if p.used_gb or p.volumes:
                used.append(f"pool {p.zone}/{p.name}: {(p.used_gb, p.volumes)}")
    return used
