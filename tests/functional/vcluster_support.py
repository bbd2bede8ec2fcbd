"""Helpers for virtual-cluster tests: bodies, waiting for a cluster to settle."""

from __future__ import annotations

import time
from typing import Any

import httpx

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
