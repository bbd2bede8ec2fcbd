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


def _servers(live: LiveBroker) -> list[dict[str, Any]]:
    body: list[dict[str, Any]] = live.client.get(f"{live.compute}/servers/detail").json()["servers"]
    return body


def _ledger_empty(live: LiveBroker) -> None:
    """No claim is left: no allocation rows, every zone, host and pool counter at 0."""
    from sqlalchemy import func, select

    from federator.storage.models import Allocation, Host, StoragePool, VolumeAllocation, Zone

    with live.broker.ctx.api.read() as s:
        assert s.scalar(select(func.count()).select_from(Allocation)) == 0
        assert s.scalar(select(func.count()).select_from(VolumeAllocation)) == 0
        assert s.scalar(select(func.sum(Host.instances))) in (0, None)
        assert s.scalar(select(func.sum(Zone.instances))) in (0, None)
        assert s.scalar(select(func.sum(Zone.volumes))) in (0, None)
        assert s.scalar(select(func.sum(StoragePool.used_gb))) in (0, None)


def _sim(live: LiveBroker, zone: str) -> Any:
    return live.broker.ctx.drivers[zone]


def _in_cloud(live: LiveBroker, zone: str) -> tuple[list[str], list[str]]:
    """The instance and volume ids the zone's sim cloud holds."""
    driver = _sim(live, zone)
    servers = [i.uuid for batch in driver.list_instances() for i in batch]
    storage = driver.block_storage()
    volumes = [v.uuid for batch in storage.list_volumes() for v in batch] if storage else []
    return servers, volumes


def test_use_case_1_puts_the_volume_in_its_servers_host_pool_attached(live: LiveBroker) -> None:
    c = vc.wait(live, vc.create(live, vc.use_case_1()))
    assert c["status"] == "ACTIVE", c
    m = vc.members(c)
    srv, vol = m["web-server"], m["web-vol"]
    assert vol["host"] == srv["host"] and vol["attached_to"] == srv["id"]
    assert vol["availability_zone"] == srv["availability_zone"]
    shown = live.server(srv["id"])
    assert shown["metadata"]["vcluster"] == c["id"]


def test_project_scoped_paths_route_to_the_same_handlers(live: LiveBroker) -> None:
    client = live.client
    project = live.broker.identity.validate(client.headers["X-Auth-Token"]).project.id
    for prefix in (f"{live.url}/v2/{project}", f"{live.compute}/{project}"):
        r = client.post(f"{prefix}/vclusters", json=vc.use_case_1())
        assert r.status_code == 202, r.text
        cid = r.json()["vcluster"]["id"]
        assert client.get(f"{prefix}/vclusters/{cid}").json()["vcluster"]["id"] == cid
        assert cid in {v["id"] for v in client.get(f"{prefix}/vclusters").json()["vclusters"]}
    other = client.get(f"{live.url}/v2/another-project/vclusters")
    assert other.status_code == 400 and "another-project" in other.text


def test_an_unplaceable_cluster_is_error_with_nothing_created(live: LiveBroker) -> None:
    body = {"vcluster": {
        "name": "wide",
        "instances": [vc.server(f"s{i}") for i in range(5)],
        "groupings": [vc.grouping("apart", "anti-affinity", *(f"s{i}" for i in range(5)))],
    }}  # fmt: skip
    explained = live.client.post(f"{live.compute}/vclusters/explain", json=body).json()["plan"]
    assert explained["placeable"] is False and explained["fault"]["blocked_by"] == "apart"
    c = vc.wait(live, vc.create(live, body))
    assert c["status"] == "ERROR"
    assert c["fault"]["code"] == "federator.placement.group_policy"
    assert "apart" in c["fault"]["message"]
    assert all(m["id"] is None and m["status"] == "ERROR" for m in c["instances"])
    assert _servers(live) == []
    assert _in_cloud(live, "local") == ([], [])
    _ledger_empty(live)


def test_explain_shows_each_members_place_before_anything_is_created(live: LiveBroker) -> None:
    r = live.client.post(f"{live.compute}/vclusters/explain", json=vc.use_case_2())
    assert r.status_code == 200, r.text
    p = r.json()["plan"]
    assert p["placeable"] is True
    where = {i["name"]: i for i in p["instances"]}
    assert where["db-server-1"]["host"] != where["db-server-2"]["host"]
    assert where["db-vol-1"]["host"] == where["db-server-1"]["host"]
    assert where["db-vol-1"]["pool"] and where["db-vol-1"]["pool"] != where["db-vol-2"]["pool"]
    assert _servers(live) == []
    _ledger_empty(live)


def test_a_bad_body_names_the_json_path_and_creates_nothing(live: LiveBroker) -> None:
    body = vc.use_case_2()
    body["vcluster"]["groupings"][0]["membersRef"][1] = "nobody"
    r = live.client.post(f"{live.compute}/vclusters", json=body)
    assert r.status_code == 400
    assert "vcluster.groupings[0].membersRef[1]" in r.text
    assert live.client.get(f"{live.compute}/vclusters").json()["vclusters"] == []


def test_update_adds_a_third_server_on_a_third_host_and_removes_a_volume(
    live: LiveBroker,
) -> None:
    cid = vc.create(live, vc.use_case_2())
    c = vc.wait(live, cid)
    assert c["status"] == "ACTIVE", c
    gone_volume = vc.members(c)["db-vol-2"]["id"]
    body = vc.use_case_2()
    root = body["vcluster"]
    root["instances"] = [i for i in root["instances"] if i["name"] != "db-vol-2"]
    root["instances"].append(vc.server("db-server-3"))
    root["groupings"] = [g for g in root["groupings"] if "db-vol-2" not in g["membersRef"]]
    root["groupings"].append(
        vc.grouping("group-3", "anti-affinity", "db-server-1", "db-server-2", "db-server-3")
    )
    root["groupings"] = [
        g for n, g in enumerate(root["groupings"]) if not (g["name"] == "group-3" and n < 2)
    ]
    r = live.client.put(f"{live.compute}/vclusters/{cid}", json=body)
    assert r.status_code == 202, r.text
    c = vc.wait(live, cid)
    assert c["status"] == "ACTIVE", c
    m = vc.members(c)
    assert set(m) == {"db-server-1", "db-server-2", "db-server-3", "db-vol-1"}
    assert len({m[f"db-server-{i}"]["host"] for i in (1, 2, 3)}) == 3
    vol = live.client.get(f"{live.url}/volume/v3/{c['project_id']}/volumes/{gone_volume}")
    assert vol.status_code == 404


def test_an_update_that_would_break_a_grouping_is_409_and_changes_nothing(
    live: LiveBroker,
) -> None:
    cid = vc.create(live, vc.use_case_2())
    before = vc.wait(live, cid)
    assert before["status"] == "ACTIVE", before
    body = vc.use_case_2()
    root = body["vcluster"]
    extra = [f"db-server-{i}" for i in (3, 4, 5)]  # five servers apart on four hosts
    root["instances"] += [vc.server(n) for n in extra]
    root["groupings"][2]["membersRef"] += extra
    r = live.client.put(f"{live.compute}/vclusters/{cid}", json=body)
    assert r.status_code == 409, r.text
    assert "group-3" in r.text
    after = vc.show(live, cid)
    assert after["status"] == "ACTIVE"
    assert after["instances"] == before["instances"]
    assert len(_servers(live)) == 2


def test_a_member_refused_on_every_host_rolls_the_whole_cluster_back(
    tmp_path: Path, live_broker_factory: Factory
) -> None:
    settings = make_settings(
        tmp_path,
        zones=[
            sim_zone("local", "local", hosts=2, volume_pool_gb=100),
            sim_zone("cloud", "virtual", expose_hosts=False, hosts=4, volume_pool_gb=500),
        ],
        policy={"version": "vc-rb", "zones": {"local": {"overflow": ["cloud"]}, "cloud": {}}},
    )
    live = live_broker_factory(settings)
    names = ["a", "b", "c", "bad"]
    body = {"vcluster": {
        "name": "rb",
        "instances": [vc.server(n) for n in names] + [vc.volume("a-vol")],
        "groupings": [vc.grouping("apart", "soft-anti-affinity", *names),
                      vc.grouping("disk", "affinity", "a", "a-vol")],
    }}  # fmt: skip
    for zone in ("local", "cloud"):
        _sim(live, zone).ex_refuse_name("bad")
    c = vc.wait(live, vc.create(live, body))
    assert c["status"] == "ERROR", c
    assert "bad" in c["fault"]["message"]
    assert _servers(live) == []
    for zone in ("local", "cloud"):
        assert _in_cloud(live, zone) == ([], [])
    _ledger_empty(live)


@pytest.mark.slow
def test_every_member_is_listed_by_the_openstack_cli(live: LiveBroker, tmp_path: Path) -> None:
    from tests.functional.test_openstack_clients import openstack_env, os_json

    c = vc.wait(live, vc.create(live, vc.use_case_2()))
    assert c["status"] == "ACTIVE", c
    m = vc.members(c)
    env = openstack_env(live, tmp_path)
    servers = {s["ID"]: s for s in os_json(env, "server", "list")}
    assert {m["db-server-1"]["id"], m["db-server-2"]["id"]} == set(servers)
    assert {s["Name"] for s in servers.values()} == {"db-server-1", "db-server-2"}
    volumes = {v["ID"]: v for v in os_json(env, "volume", "list")}
    assert {m["db-vol-1"]["id"], m["db-vol-2"]["id"]} == set(volumes)
    assert {v["Status"] for v in volumes.values()} == {"in-use"}


def test_tenancy_and_the_project_volume_quota(tmp_path: Path, live_broker_factory: Factory) -> None:
    settings = make_settings(
        tmp_path,
        zones=[sim_zone("local", "local", hosts=4, volume_pool_gb=100)],
        policy={"version": "vc-t", "zones": {"local": {}}},
        tenants=["proj-a", "proj-b"],
        volumes={"project_volumes": 1},
    )
    live = live_broker_factory(settings)
    a, b = live.member("proj-a"), live.member("proj-b")
    refused = a.post(f"{live.compute}/vclusters", json=vc.use_case_2())
    assert refused.status_code == 413, refused.text
    assert "volumes" in refused.text
    assert a.get(f"{live.compute}/vclusters").json()["vclusters"] == []
    cid = vc.create(live, vc.use_case_1(), client=a)
    assert vc.wait(live, cid)["status"] == "ACTIVE"
    assert b.get(f"{live.compute}/vclusters/{cid}").status_code == 404
    assert b.delete(f"{live.compute}/vclusters/{cid}").status_code == 404
    assert b.get(f"{live.compute}/vclusters").json()["vclusters"] == []
    everyone = live.client.get(f"{live.compute}/vclusters?all_tenants=1").json()["vclusters"]
    assert [c["id"] for c in everyone] == [cid]


def test_a_member_refused_once_is_placed_again_with_its_volume_under_the_rules(
    live: LiveBroker,
) -> None:
    live.broker.ctx.drivers["local"].ex_inject("capacity", 1)  # the first create fails
    c = vc.wait(live, vc.create(live, vc.use_case_2()))
    assert c["status"] == "ACTIVE", c
    m = vc.members(c)
    s1, s2, v1, v2 = (m[n] for n in ("db-server-1", "db-server-2", "db-vol-1", "db-vol-2"))
    assert s1["host"] != s2["host"]
    assert (v1["host"], v2["host"]) == (s1["host"], s2["host"])
    assert v1["attached_to"] == s1["id"] and v2["attached_to"] == s2["id"]
    servers, volumes = _in_cloud(live, "local")
    assert sorted(servers) == sorted([s1["id"], s2["id"]])
    assert sorted(volumes) == sorted([v1["id"], v2["id"]])
    assert len(_servers(live)) == 2
    from sqlalchemy import func, select

    from federator.storage.models import VClusterMember

    with live.broker.ctx.api.read() as s:
        retried = s.scalar(select(func.sum(VClusterMember.attempts)))
    assert retried == 1  # the refused member was placed again once


@pytest.mark.parametrize("example", ["vcluster-web.json", "vcluster-db.json"])
def test_the_documented_examples_become_active(live: LiveBroker, example: str) -> None:
    import json

    body = json.loads((Path(__file__).parents[2] / "docs" / "examples" / example).read_text())
    c = vc.wait(live, vc.create(live, body))
    assert c["status"] == "ACTIVE", c
    for m in c["instances"]:
        if m["type"] == "volume":
            assert m["attached_to"] and m["status"] == "in-use"
