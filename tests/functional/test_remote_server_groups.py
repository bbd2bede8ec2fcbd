"""Server groups that burst into a child zone keep their rule there.

A parent broker (in this process) has a local sim zone of two hosts whose policy
overflows to ``child``, a virtual zone backed by the ``openstack`` driver signed in to a
child broker (a separate ``federator serve`` process, two sim hosts) as the member of
project ``parent-a``. A hard anti-affinity group fills the local hosts as its rule allows,
then bursts to the child: there the parent leaves the hosts to the child, which keeps the
rule itself through a server group the parent made for it. The child's admin sees that
group, its members and their hosts; the next member, refused by the child's group on
every host, ends in ERROR although the child has room for it. An affinity group bursting
to the child gets an affinity group there. With the zone's ``server_groups`` option off,
the child counts as one host instead, and no group is made there.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from federator.config import load_settings
from tests.conftest import (
    PASSWORD,
    LiveBroker,
    member_of,
    settings_data,
    sim_zone,
    start_live_broker,
    write_config,
)
from tests.daemon import Daemon

pytestmark = pytest.mark.slow

PROJECT = "parent-a"
PARENT_ID = "parent-a"
V2_64 = {"OpenStack-API-Version": "compute 2.64"}
WORKERS = {"count": 4, "poll_interval": 0.05}
HOST_RAM_MB = 8192  # room for 8 m1.small per host: only the groups' rules bound the tests
REMOTE = "the remote cloud, through its own server group"

Federation = tuple[LiveBroker, Daemon, httpx.Client]


def _child(tmp: Path) -> Daemon:
    work = tmp / "child"
    work.mkdir()
    data = settings_data(
        work,
        zones=[sim_zone("local", "local", hosts=2, host_ram_mb=HOST_RAM_MB, host_vcpus=16)],
        policy={"version": "child.1", "zones": {}},
        tenants=(PROJECT,),
        workers=WORKERS,
    )
    return Daemon.start(write_config(work / "federator.toml", data), work, "child")


def _parent(
    tmp: Path, child: Daemon, *, local_ram_mb: int, server_groups: bool
) -> tuple[LiveBroker, Callable[[], None]]:
    work = tmp / "parent"
    work.mkdir()
    child_zone = {
        "name": "child",
        "driver": "openstack",
        "kind": "virtual",
        "options": {
            "auth": {
                "auth_url": f"{child.url}/identity",
                "username": member_of(PROJECT),
                "password": PASSWORD,
                "project_name": PROJECT,
            },
            "wait_timeout": 30,
            "poll_interval": 0.05,
            "api_timeout": 10,
            "server_groups": server_groups,
        },
    }
    data = settings_data(
        work,
        zones=[
            sim_zone("local", "local", hosts=2, host_ram_mb=local_ram_mb, host_vcpus=16),
            child_zone,
        ],
        policy={"version": "parent.1", "zones": {"local": {"overflow": ["child"]}}},
        workers=WORKERS,
        broker_id=PARENT_ID,
    )
    return start_live_broker(load_settings(None, **data))


@pytest.fixture
def federate(tmp_path: Path) -> Iterator[Callable[..., Federation]]:
    """``federate(local_ram_mb=..., server_groups=...)``: the child, the parent, and an
    admin client of the child."""
    cleanups: list[Callable[[], None]] = []

    def start(*, local_ram_mb: int = HOST_RAM_MB, server_groups: bool = True) -> Federation:
        child = _child(tmp_path)
        cleanups.append(child.kill)
        parent, stop = _parent(
            tmp_path, child, local_ram_mb=local_ram_mb, server_groups=server_groups
        )
        cleanups.append(stop)
        admin = httpx.Client(timeout=30, headers=child.headers)
        cleanups.append(admin.close)
        return parent, child, admin

    yield start
    for cleanup in reversed(cleanups):
        cleanup()


# --- the parent ---------------------------------------------------------------------------


def _make_group(parent: LiveBroker, name: str, policy: str, max_per_host: int | None) -> str:
    body: dict[str, Any] = {"name": name, "policy": policy}
    if max_per_host is not None:
        body["rules"] = {"max_server_per_host": max_per_host}
    r = parent.client.post(
        f"{parent.compute}/os-server-groups", json={"server_group": body}, headers=V2_64
    )
    assert r.status_code == 200, r.text
    gid: str = r.json()["server_group"]["id"]
    return gid


def _group(parent: LiveBroker, gid: str) -> dict[str, Any]:
    r = parent.client.get(f"{parent.compute}/os-server-groups/{gid}", headers=V2_64)
    assert r.status_code == 200, r.text
    group: dict[str, Any] = r.json()["server_group"]
    return group


def _settled(parent: LiveBroker, sid: str, timeout: float = 60) -> dict[str, Any]:
    """The server once it is ACTIVE or ERROR with no task in progress."""
    deadline = time.monotonic() + timeout
    while True:
        srv = parent.server(sid)
        if srv["status"] in ("ACTIVE", "ERROR") and not srv["OS-EXT-STS:task_state"]:
            return srv
        if time.monotonic() > deadline:
            raise AssertionError(f"{sid} did not settle: {srv['status']}")
        time.sleep(0.05)


def _boot_member(parent: LiveBroker, name: str, gid: str) -> dict[str, Any]:
    """Boot one member of ``gid`` and wait for its verdict (members are placed one after
    another, so where each goes depends only on the ones before it)."""
    # The hint sits beside "server", as Nova has it (LiveBroker.boot puts extras inside).
    body = {
        "server": {"name": name, "flavorRef": "m1.small", "imageRef": "cirros"},
        "os:scheduler_hints": {"group": gid},
    }
    r = parent.client.post(f"{parent.compute}/servers", json=body)
    assert r.status_code == 202, r.text
    return _settled(parent, r.json()["server"]["id"])


def _az(srv: dict[str, Any]) -> str:
    az: str = srv["OS-EXT-AZ:availability_zone"]
    return az


# --- the child, as its admin sees it --------------------------------------------------------


def _child_groups(child: Daemon, admin: httpx.Client) -> list[dict[str, Any]]:
    r = admin.get(
        f"{child.url}/compute/v2.1/os-server-groups",
        params={"all_projects": "True"},
        headers=V2_64,
    )
    assert r.status_code == 200, r.text
    groups: list[dict[str, Any]] = r.json()["server_groups"]
    return groups


def _child_servers(child: Daemon, admin: httpx.Client) -> dict[str, dict[str, Any]]:
    """Every server of the child, by the parent's instance uuid in its metadata."""
    r = admin.get(f"{child.url}/compute/v2.1/servers/detail", params={"all_tenants": "1"})
    assert r.status_code == 200, r.text
    return {s["metadata"]["federator:instance-uuid"]: s for s in r.json()["servers"]}


# --- the tests ------------------------------------------------------------------------------


@pytest.mark.parametrize("max_per_host", [None, 2])
def test_anti_affinity_group_bursts_to_the_child_and_the_child_keeps_its_rule(
    federate: Callable[..., Federation], max_per_host: int | None
) -> None:
    parent, child, admin = federate()
    per_host = max_per_host or 1
    gid = _make_group(parent, "spread", "anti-affinity", max_per_host)

    # Two local hosts and two child hosts take per_host members each; the local hosts
    # fill first, as the policy prefers them.
    members = [_boot_member(parent, f"spread-{n}", gid) for n in range(4 * per_host)]
    assert [m["status"] for m in members] == ["ACTIVE"] * len(members), [
        m.get("fault") for m in members
    ]
    assert [_az(m) for m in members] == ["local"] * (2 * per_host) + ["child"] * (2 * per_host)
    local_hosts = [m["OS-EXT-SRV-ATTR:host"] for m in members[: 2 * per_host]]
    assert sorted(local_hosts.count(h) for h in set(local_hosts)) == [per_host, per_host]
    remote = {m["id"] for m in members if _az(m) == "child"}

    # The child has room for many more, but its group refuses one more member on each
    # of its hosts: the member fails (the parent has no other zone to try) and the child
    # keeps nothing of it.
    refused = _boot_member(parent, "spread-refused", gid)
    assert refused["status"] == "ERROR", refused
    message = refused["fault"]["message"]
    refusal = (
        f"child: the remote cloud could not build it: server group federator:{PARENT_ID}:{gid}"
    )
    assert refusal in message, message
    assert "cannot take another member" in message, message
    assert parent.client.delete(f"{parent.compute}/servers/{refused['id']}").status_code == 204
    parent.wait_settled()

    # Exactly one server group in the child: the parent's rule, named for the parent's
    # group, holding exactly the members the parent sent there, within the rule per host.
    groups = _child_groups(child, admin)
    assert len(groups) == 1, groups
    remote_group = groups[0]
    assert remote_group["name"] == f"federator:{PARENT_ID}:{gid}"
    assert remote_group["policy"] == "anti-affinity"
    assert remote_group["rules"].get("max_server_per_host") == max_per_host
    in_child = _child_servers(child, admin)
    assert set(in_child) == remote
    assert sorted(remote_group["members"]) == sorted(in_child[u]["id"] for u in remote)
    child_hosts = [in_child[u]["OS-EXT-SRV-ATTR:host"] for u in remote]
    assert all(h for h in child_hosts), child_hosts
    assert sorted(child_hosts.count(h) for h in set(child_hosts)) == [per_host, per_host]

    # The parent shows every member and names the remote group it made.
    shown = _group(parent, gid)
    assert sorted(shown["members"]) == sorted(m["id"] for m in members)
    assert shown["federator:remote_groups"] == [{"zone": "child", "id": remote_group["id"]}]
    kept_by = {p["id"]: p["rule_kept_by"] for p in shown["federator:members"]}
    assert {u for u, k in kept_by.items() if k == REMOTE} == remote

    # Deleting the parent's group deletes the remote one; every member keeps running.
    r = parent.client.delete(f"{parent.compute}/os-server-groups/{gid}")
    assert r.status_code == 204, r.text
    parent.wait_settled()
    assert _child_groups(child, admin) == []
    r = admin.get(f"{child.url}/compute/v2.1/os-server-groups/{remote_group['id']}")
    assert r.status_code == 404, r.text
    assert [parent.server(m["id"])["status"] for m in members] == ["ACTIVE"] * len(members)
    assert {u: s["status"] for u, s in _child_servers(child, admin).items()} == dict.fromkeys(
        remote, "ACTIVE"
    )


def test_affinity_group_bursting_to_the_child_gets_an_affinity_group_there(
    federate: Callable[..., Federation],
) -> None:
    # Local hosts of two m1.small each, filled by servers outside any group.
    parent, child, admin = federate(local_ram_mb=2048)
    fillers = [parent.boot(f"filler-{n}") for n in range(4)]
    assert {_az(_settled(parent, sid)) for sid in fillers} == {"local"}

    gid = _make_group(parent, "together", "affinity", None)
    members = [_boot_member(parent, f"together-{n}", gid) for n in range(3)]
    assert [(m["status"], _az(m)) for m in members] == [("ACTIVE", "child")] * 3, [
        m.get("fault") for m in members
    ]

    groups = _child_groups(child, admin)
    assert [(g["name"], g["policy"]) for g in groups] == [
        (f"federator:{PARENT_ID}:{gid}", "affinity")
    ]
    in_child = _child_servers(child, admin)
    remote = {m["id"] for m in members}
    assert set(in_child) == remote
    assert sorted(groups[0]["members"]) == sorted(in_child[u]["id"] for u in remote)
    assert len({in_child[u]["OS-EXT-SRV-ATTR:host"] for u in remote}) == 1
    assert _group(parent, gid)["federator:remote_groups"] == [
        {"zone": "child", "id": groups[0]["id"]}
    ]


def test_without_server_groups_the_child_counts_as_one_host(
    federate: Callable[..., Federation],
) -> None:
    parent, child, admin = federate(server_groups=False)
    gid = _make_group(parent, "spread", "anti-affinity", None)
    members = [_boot_member(parent, f"spread-{n}", gid) for n in range(3)]
    assert [(m["status"], _az(m)) for m in members] == [
        ("ACTIVE", "local"),
        ("ACTIVE", "local"),
        ("ACTIVE", "child"),
    ], [m.get("fault") for m in members]

    refused = _boot_member(parent, "spread-refused", gid)
    assert refused["status"] == "ERROR", refused
    message = refused["fault"]["message"]
    assert "zone child (which counts as one host for the group)" in message, message

    assert _child_groups(child, admin) == []
    assert set(_child_servers(child, admin)) == {members[2]["id"]}
    assert _group(parent, gid)["federator:remote_groups"] == []


def test_a_remote_group_deleted_behind_the_brokers_back_is_made_again(
    federate: Callable[..., Federation],
) -> None:
    parent, child, admin = federate(local_ram_mb=2048)
    fillers = [parent.boot(f"filler-{n}") for n in range(4)]
    assert {_az(_settled(parent, sid)) for sid in fillers} == {"local"}
    gid = _make_group(parent, "apart", "anti-affinity", None)
    first = _boot_member(parent, "apart-0", gid)
    assert (first["status"], _az(first)) == ("ACTIVE", "child")
    (old,) = _child_groups(child, admin)
    gone = admin.delete(f"{child.url}/compute/v2.1/os-server-groups/{old['id']}")
    assert gone.status_code == 204

    second = _boot_member(parent, "apart-1", gid)
    assert (second["status"], _az(second)) == ("ACTIVE", "child"), second.get("fault")
    (new,) = _child_groups(child, admin)
    assert new["id"] != old["id"] and new["name"] == old["name"]
    assert _group(parent, gid)["federator:remote_groups"] == [{"zone": "child", "id": new["id"]}]
    assert new["members"] == [_child_servers(child, admin)[second["id"]]["id"]]
