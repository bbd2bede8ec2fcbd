"""Virtual clusters through the API on sim zones: the seed's use cases, update, delete,
the project-scoped paths, an unplaceable cluster and a rolled-back one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from federator.config import Settings
from tests.conftest import LiveBroker, make_settings, sim_zone
from tests.functional import vcluster_support as vc

Factory = Callable[..., LiveBroker]


def local_only(tmp_path: Path, hosts: int = 4, **options: Any) -> Settings:
    return make_settings(
        tmp_path,
        zones=[sim_zone("local", "local", hosts=hosts, volume_pool_gb=100, **options)],
        policy={"version": "vc-1", "zones": {"local": {}}},
    )


@pytest.fixture
def live(tmp_path: Path, live_broker_factory: Factory) -> LiveBroker:
    return live_broker_factory(local_only(tmp_path))


def test_use_case_2_lands_on_two_hosts_with_attached_host_local_volumes(live: LiveBroker) -> None:
    cid = vc.create(live, vc.use_case_2())
    c = vc.wait(live, cid)
    assert c["status"] == "ACTIVE", c
    m = vc.members(c)
    s1, s2, v1, v2 = (m[n] for n in ("db-server-1", "db-server-2", "db-vol-1", "db-vol-2"))
    assert s1["host"] != s2["host"]
    assert v1["host"] == s1["host"] and v2["host"] == s2["host"]
    assert v1["pool"] != v2["pool"]
    assert v1["attached_to"] == s1["id"] and v2["attached_to"] == s2["id"]
    assert {s1["status"], s2["status"]} == {"ACTIVE"}
    assert {v1["status"], v2["status"]} == {"in-use"}
    servers = live.client.get(f"{live.compute}/servers").json()["servers"]
    assert {s1["id"], s2["id"]} <= {s["id"] for s in servers}
    vols = live.client.get(f"{live.url}/volume/v3/admin/volumes/detail")
    assert vols.status_code == 200, vols.text


def test_delete_removes_every_member_and_claim(live: LiveBroker) -> None:
    cid = vc.create(live, vc.use_case_1())
    c = vc.wait(live, cid)
    assert c["status"] == "ACTIVE", c
    r = live.client.delete(f"{live.compute}/vclusters/{cid}")
    assert r.status_code == 202
    live.wait_settled()
    assert live.client.get(f"{live.compute}/vclusters/{cid}").status_code == 404
    assert live.client.get(f"{live.compute}/servers").json()["servers"] == []
