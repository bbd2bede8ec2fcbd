"""Server groups under concurrency: hard rules hold when many members race for few hosts,
in one broker and in two broker processes sharing PostgreSQL; soft rules bend and say so;
zone scope spreads members over availability zones (local and virtual zones alike).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from federator import errors
from federator.config import Settings
from tests.conftest import LiveBroker, make_settings, settings_data, sim_zone, write_config
from tests.daemon import Daemon
from tests.functional.capacity import COMPUTE, Answer, boot_concurrently, list_servers

pytestmark = pytest.mark.slow

MV = {"OpenStack-API-Version": "compute 2.64"}
SMALL_MB = 1024


def _policy(overflow: list[str] | None = None, **virtual: dict[str, Any]) -> dict[str, Any]:
    zones: dict[str, Any] = {
        "local": {
            "thresholds": {"ram_percent": {"high": 100, "low": 90}},
            "overflow": overflow or [],
        }
    }
    zones.update(virtual)
    return {"version": "groups.1", "zones": zones, "rules": []}


def _local(hosts: int, per_host: int, **extra: Any) -> dict[str, Any]:
    return sim_zone(
        "local", "local", hosts=hosts, host_ram_mb=per_host * SMALL_MB, host_vcpus=64, **extra
    )


def _group(client: httpx.Client, url: str, policy: str, **rules: Any) -> str:
    body: dict[str, Any] = {"name": f"g-{policy}", "policy": policy}
    if rules:
        body["rules"] = rules
    r = client.post(f"{url}{COMPUTE}/os-server-groups", json={"server_group": body}, headers=MV)
    assert r.status_code == 200, r.text
    gid: str = r.json()["server_group"]["id"]
    return gid


def _hint(gid: str) -> dict[str, Any]:
    return {"os:scheduler_hints": {"group": gid}}


def _boot(live: LiveBroker, name: str, gid: str) -> str:
    body = {"server": {"name": name, "flavorRef": "m1.small", "imageRef": "cirros"}, **_hint(gid)}
    r = live.client.post(f"{live.compute}/servers", json=body)
    assert r.status_code == 202, r.text
    sid: str = r.json()["server"]["id"]
    return sid


def _members(live: LiveBroker, gid: str) -> dict[str, dict[str, Any]]:
    """Every server of the group, by id, after the queue emptied."""
    r = live.client.get(f"{live.compute}/os-server-groups/{gid}", headers=MV)
    assert r.status_code == 200, r.text
    servers = list_servers(live.client, live.url)
    members = r.json()["server_group"]["members"]
    return {sid: servers[sid] for sid in members}


def _boot_group(live: LiveBroker, gid: str, count: int, name: str = "m") -> list[str]:
    answers = boot_concurrently(
        live.url,
        count,
        clients=min(count, 32),
        name=name,
        headers=live.auth_headers,
        extra=_hint(gid),
    )
    assert Counter(a.status for a in answers) == {202: count}
    live.wait_settled(timeout=120)
    return [a.server_id for a in answers if a.server_id]


def _fault(srv: dict[str, Any]) -> dict[str, Any]:
    fault: dict[str, Any] = srv["federator:fault"]
    return fault


# --- one broker --------------------------------------------------------------------------


@pytest.mark.parametrize(("hosts", "per_host"), [(100, 1), (50, 2)])
def test_anti_affinity_under_a_boot_storm_never_doubles_up(
    tmp_path: Path,
    live_broker_factory: Callable[[Settings], LiveBroker],
    hosts: int,
    per_host: int,
) -> None:
    live = live_broker_factory(
        make_settings(
            tmp_path,
            zones=[_local(hosts, 8)],
            policy=_policy(),
            workers={"count": 16, "poll_interval": 0.2},
        )
    )
    rules = {"max_server_per_host": per_host} if per_host > 1 else {}
    gid = _group(live.client, live.url, "anti-affinity", **rules)
    ids = _boot_group(live, gid, hosts * per_host)

    members = _members(live, gid)
    assert set(members) == set(ids)
    assert Counter(s["status"] for s in members.values()) == {"ACTIVE": hosts * per_host}
    per = Counter(s["OS-EXT-SRV-ATTR:host"] for s in members.values())
    assert len(per) == hosts and set(per.values()) == {per_host}

    # One more has nowhere to go: cell0, with the group's own fault naming the rule.
    extra = _boot(live, "one-too-many", gid)
    live.wait_settled()
    srv = live.server(extra)
    assert srv["status"] == "ERROR" and srv["federator:cell"] == "cell0"
    fault = _fault(srv)
    assert fault["code"] == errors.GROUP_POLICY and fault["reason"] == "group_policy"
    assert gid in fault["message"] and "anti-affinity" in fault["message"]
    assert f"max_server_per_host={per_host}" in fault["message"]
    assert srv["federator:placement"]["group"]["id"] == gid


def test_affinity_members_share_one_host_and_the_rest_go_to_cell0(
    tmp_path: Path, live_broker_factory: Callable[[Settings], LiveBroker]
) -> None:
    live = live_broker_factory(
        make_settings(
            tmp_path,
            zones=[_local(4, 10)],
            policy=_policy(),
            workers={"count": 16, "poll_interval": 0.2},
        )
    )
    gid = _group(live.client, live.url, "affinity")
    _boot_group(live, gid, 30)
    members = _members(live, gid)
    active = [s for s in members.values() if s["status"] == "ACTIVE"]
    assert len(active) == 10, "one host of room for 10 m1.small"
    assert len({s["OS-EXT-SRV-ATTR:host"] for s in active}) == 1
    buried = [s for s in members.values() if s["status"] == "ERROR"]
    assert len(buried) == 20
    assert {_fault(s)["reason"] for s in buried} == {"group_policy"}
    assert all("affinity" in _fault(s)["message"] for s in buried)


def test_soft_affinity_prefers_the_group_host_then_relaxes_and_says_so(
    tmp_path: Path, live_broker_factory: Callable[[Settings], LiveBroker]
) -> None:
    live = live_broker_factory(
        make_settings(
            tmp_path,
            zones=[_local(4, 10)],
            policy=_policy(),
            workers={"count": 16, "poll_interval": 0.2},
        )
    )
    gid = _group(live.client, live.url, "soft-affinity")
    first = _boot(live, "first", gid)
    home = live.wait_status(first, "ACTIVE")["OS-EXT-SRV-ATTR:host"]
    _boot_group(live, gid, 29)
    members = _members(live, gid)
    assert Counter(s["status"] for s in members.values()) == {"ACTIVE": 30}
    hosts = Counter(s["OS-EXT-SRV-ATTR:host"] for s in members.values())
    assert hosts[home] == 10, "the group's host was filled first"
    for srv in members.values():
        group = srv["federator:placement"]["group"]
        assert group["policy"] == "soft-affinity"
        if srv["OS-EXT-SRV-ATTR:host"] != home:
            assert group["relaxed"] is True and "relaxed" in group["detail"]
    assert sum(1 for s in members.values() if s["federator:placement"]["group"]["relaxed"]) >= 20


def test_soft_anti_affinity_spreads_then_shares_hosts(
    tmp_path: Path, live_broker_factory: Callable[[Settings], LiveBroker]
) -> None:
    policy = {**_policy(), "weighing": "pack"}
    live = live_broker_factory(make_settings(tmp_path, zones=[_local(4, 10)], policy=policy))
    gid = _group(live.client, live.url, "soft-anti-affinity")
    ids = []
    for i in range(6):  # one after another: a soft rule takes no lock, so racers may share
        ids.append(_boot(live, f"s{i}", gid))
        live.wait_settled()
    servers = [live.server(i) for i in ids]
    assert {s["status"] for s in servers} == {"ACTIVE"}
    hosts = Counter(s["OS-EXT-SRV-ATTR:host"] for s in servers)
    # Even with pack weighing, the first four take one host each; two share.
    assert len(hosts) == 4 and sorted(hosts.values()) == [1, 1, 2, 2]
    relaxed = [s for s in servers if s["federator:placement"]["group"]["relaxed"]]
    assert len(relaxed) == 2


# --- zone scope --------------------------------------------------------------------------


def _zoned(tmp_path: Path, factory: Callable[[Settings], LiveBroker]) -> LiveBroker:
    cloud = {"hosts": 4, "host_ram_mb": 16384, "host_vcpus": 16, "expose_hosts": False}
    return factory(
        make_settings(
            tmp_path,
            zones=[
                _local(4, 8),
                sim_zone("cloud-a", "virtual", **cloud),
                sim_zone("cloud-b", "virtual", **cloud),
            ],
            policy=_policy(
                ["cloud-a", "cloud-b"],
                **{
                    "cloud-a": {"quota": {"instances": 10}},
                    "cloud-b": {"quota": {"instances": 10}},
                },
            ),
        )
    )


def test_zone_scoped_anti_affinity_puts_each_member_in_its_own_availability_zone(
    tmp_path: Path, live_broker_factory: Callable[[Settings], LiveBroker]
) -> None:
    live = _zoned(tmp_path, live_broker_factory)
    gid = _group(live.client, live.url, "anti-affinity", scope="zone")
    shown = live.client.get(f"{live.compute}/os-server-groups/{gid}", headers=MV).json()
    assert shown["server_group"]["rules"] == {"scope": "zone"}
    ids = [_boot(live, f"dr{i}", gid) for i in range(3)]
    live.wait_settled()
    azs = sorted(live.server(i)["OS-EXT-AZ:availability_zone"] for i in ids)
    assert azs == ["cloud-a", "cloud-b", "local"]

    fourth = live.server(_boot(live, "dr3", gid))
    live.wait_settled()
    fourth = live.server(fourth["id"])
    assert fourth["status"] == "ERROR"
    fault = _fault(fourth)
    assert fault["reason"] == "group_policy" and "scope zone" in fault["message"]
    for zone in ("local", "cloud-a", "cloud-b"):
        assert f"availability zone {zone}" in fault["message"]


def test_zone_scoped_affinity_keeps_members_in_the_first_members_zone(
    tmp_path: Path, live_broker_factory: Callable[[Settings], LiveBroker]
) -> None:
    live = _zoned(tmp_path, live_broker_factory)
    gid = _group(live.client, live.url, "affinity", scope="zone")
    ids = _boot_group(live, gid, 12, name="near")
    servers = [live.server(i) for i in ids]
    assert {s["status"] for s in servers} == {"ACTIVE"}
    assert {s["OS-EXT-AZ:availability_zone"] for s in servers} == {"local"}
    assert len({s["OS-EXT-SRV-ATTR:host"] for s in servers}) > 1, "zone scope: any host of it"


def test_a_virtual_zone_that_cannot_keep_the_rule_counts_as_one_host(
    tmp_path: Path, live_broker_factory: Callable[[Settings], LiveBroker]
) -> None:
    live = _zoned(tmp_path, live_broker_factory)
    gid = _group(live.client, live.url, "anti-affinity")
    ids = [_boot(live, f"spread{i}", gid) for i in range(7)]
    live.wait_settled()
    servers = [live.server(i) for i in ids]
    where = Counter(s["OS-EXT-AZ:availability_zone"] for s in servers if s["status"] == "ACTIVE")
    assert where == {"local": 4, "cloud-a": 1, "cloud-b": 1}
    buried = [s for s in servers if s["status"] == "ERROR"]
    assert [_fault(s)["reason"] for s in buried] == ["group_policy"]
    shown = live.client.get(f"{live.compute}/os-server-groups/{gid}", headers=MV).json()
    kept = {m["zone"]: m["rule_kept_by"] for m in shown["server_group"]["federator:members"]}
    assert "one host" in kept["cloud-a"] and "host scheduler" in kept["local"]


def test_deleting_members_frees_their_hosts_for_the_group(
    tmp_path: Path, live_broker_factory: Callable[[Settings], LiveBroker]
) -> None:
    live = live_broker_factory(make_settings(tmp_path, zones=[_local(3, 8)], policy=_policy()))
    gid = _group(live.client, live.url, "anti-affinity")
    ids = [_boot(live, f"x{i}", gid) for i in range(3)]
    live.wait_settled()
    assert live.client.delete(f"{live.compute}/servers/{ids[0]}").status_code == 204
    live.wait_settled()
    again = _boot(live, "again", gid)
    live.wait_settled()
    assert live.server(again)["status"] == "ACTIVE"
    members = live.client.get(f"{live.compute}/os-server-groups/{gid}", headers=MV).json()
    assert ids[0] not in members["server_group"]["members"]
    assert again in members["server_group"]["members"]


# --- two brokers on one PostgreSQL ------------------------------------------------------


@pytest.fixture
def pg_brokers(tmp_path: Path, pg_database_factory: Callable[[], str]) -> Iterator[list[Daemon]]:
    """Two ``federator serve`` processes sharing PostgreSQL databases and a sim zone of
    100 hosts (its state in a shared data directory)."""
    database = {
        "api_url": pg_database_factory(),
        "cell0_url": pg_database_factory(),
        "cells": {"cell1": pg_database_factory()},
    }
    started: list[Daemon] = []
    try:
        for n in (1, 2):
            data = settings_data(
                tmp_path,
                zones=[_local(100, 4)],
                policy=_policy(),
                database=database,
                workers={"count": 12, "poll_interval": 0.2},
            )
            data["node_id"] = f"node-{n}"
            config = write_config(tmp_path / f"broker-{n}.toml", data)
            started.append(Daemon.start(config, tmp_path, n, timeout=60))
        yield started
    finally:
        for d in started:
            d.kill()


def _settle(daemon: Daemon, expect: int, timeout: float = 120) -> dict[str, dict[str, Any]]:
    with httpx.Client(headers=daemon.headers, timeout=30) as client:
        deadline = time.monotonic() + timeout
        while True:
            servers = list_servers(client, daemon.url)
            busy = [
                s for s in servers.values() if s["status"] == "BUILD" or s["OS-EXT-STS:task_state"]
            ]
            if len(servers) == expect and not busy:
                return servers
            assert time.monotonic() < deadline, f"{len(busy)} of {len(servers)} still busy"
            time.sleep(0.1)


@pytest.mark.postgres
def test_two_brokers_on_postgresql_never_put_two_members_on_one_host(
    pg_brokers: list[Daemon],
) -> None:
    a, b = pg_brokers
    for run in range(5):
        with httpx.Client(headers=a.headers, timeout=30) as client:
            gid = _group(client, a.url, "anti-affinity")
        halves: list[list[Answer]] = [[], []]

        def storm(
            n: int, d: Daemon, gid: str = gid, run: int = run, out: list[list[Answer]] = halves
        ) -> None:
            out[n] = boot_concurrently(
                d.url, 50, clients=16, name=f"r{run}-{n}", headers=d.headers, extra=_hint(gid)
            )

        threads = [threading.Thread(target=storm, args=(n, d)) for n, d in enumerate((a, b))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(x.status == 202 for half in halves for x in half)
        servers = _settle(a, 100)
        mine = {x.server_id for half in halves for x in half}
        assert set(servers) == mine
        assert Counter(s["status"] for s in servers.values()) == {"ACTIVE": 100}
        per_host = Counter(s["OS-EXT-SRV-ATTR:host"] for s in servers.values())
        assert max(per_host.values()) == 1, f"run {run}: hosts with two members"
        assert len(per_host) == 100
        with httpx.Client(headers=a.headers, timeout=30) as client:
            for sid in mine:
                assert client.delete(f"{a.url}{COMPUTE}/servers/{sid}").status_code == 204
            _settle(a, 0)
            assert client.delete(f"{a.url}{COMPUTE}/os-server-groups/{gid}").status_code == 204


def test_explain_with_a_group_names_the_rule_per_zone(
    tmp_path: Path, live_broker_factory: Callable[[Settings], LiveBroker]
) -> None:
    live = _zoned(tmp_path, live_broker_factory)
    gid = _group(live.client, live.url, "anti-affinity")
    for i in range(5):  # one at a time, so the order of zones is the policy's
        _boot(live, f"e{i}", gid)
        live.wait_settled()
    before = len(list_servers(live.client, live.url))
    r = live.client.post(
        f"{live.url}/federator/v1/policy/explain",
        json={"flavor": "m1.small", "image": "cirros", "group": gid},
    )
    assert r.status_code == 200, r.text
    plan = r.json()["explain"]
    assert plan["group"]["id"] == gid and plan["group"]["members_placed"] == 5
    zones = {z["zone"]: z for z in plan["zones"]}
    # 4 local hosts and cloud-a hold members: only cloud-b can take the next one.
    assert plan["decision"] == {"zone": "cloud-b", "host": None}
    assert zones["cloud-a"]["group"]["allowed"] is False
    assert "already holds 1" in zones["cloud-a"]["group"]["detail"]
    local_hosts = zones["local"]["hosts"]
    assert {h["rejected_by"] for h in local_hosts} == {"AntiAffinityFilter"}
    assert len(list_servers(live.client, live.url)) == before, "explain reserves nothing"
    missing = live.client.post(
        f"{live.url}/federator/v1/policy/explain",
        json={
            "flavor": "m1.small",
            "image": "cirros",
            "group": "0" * 8 + "-0000-0000-0000-" + "0" * 12,
        },
    )
    assert missing.status_code == 400 and missing.json()["problems"][0]["field"] == "group"


def test_draining_a_host_keeps_the_groups_rule(
    tmp_path: Path, live_broker_factory: Callable[[Settings], LiveBroker]
) -> None:
    # Pack weighing: without the rule the drain would move the member onto the fuller
    # host, which holds the other member.
    policy = {**_policy(), "weighing": "pack"}
    live = live_broker_factory(make_settings(tmp_path, zones=[_local(3, 8)], policy=policy))
    gid = _group(live.client, live.url, "anti-affinity")
    ids = [_boot(live, f"d{i}", gid) for i in range(2)]
    plain = [live.boot(f"plain{i}") for i in range(2)]
    live.wait_settled()
    where = {i: live.server(i)["OS-EXT-SRV-ATTR:host"] for i in ids}
    source = where[ids[0]]
    r = live.client.post(
        f"{live.url}/federator/v1/hosts/local/{source}/drain", json={"reason": "test"}
    )
    assert r.status_code == 200, r.text
    live.wait_settled()
    after = {i: live.server(i)["OS-EXT-SRV-ATTR:host"] for i in ids}
    assert source not in after.values()
    assert len(set(after.values())) == 2, "the moved member did not join the other one"
    assert {live.server(i)["status"] for i in [*ids, *plain]} == {"ACTIVE"}


def test_a_drain_will_not_split_an_affinity_group_and_says_why(
    tmp_path: Path, live_broker_factory: Callable[[Settings], LiveBroker]
) -> None:
    live = live_broker_factory(make_settings(tmp_path, zones=[_local(3, 8)], policy=_policy()))
    gid = _group(live.client, live.url, "affinity")
    ids = [_boot(live, f"t{i}", gid) for i in range(2)]
    live.wait_settled()
    (home,) = {live.server(i)["OS-EXT-SRV-ATTR:host"] for i in ids}
    r = live.client.post(f"{live.url}/federator/v1/hosts/local/{home}/drain", json={})
    live.wait_settled()
    assert {live.server(i)["OS-EXT-SRV-ATTR:host"] for i in ids} == {home}
    assert gid in r.text and "rule leaves no other host" in r.text
