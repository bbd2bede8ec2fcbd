"""Parent and child zones: three brokers on 127.0.0.1 (seed 000).

Two children run as separate ``federator serve`` processes; two parents run in this
process. Parent A's local zone holds 2 m1.small, then it overflows to child 1 (room for 3)
and child 2 (room for 3, one of them taken by parent B, which uses child 2 as well). Each
parent signs in to a child as a member of its own project, so neither sees the other's
servers. The parents learn each child's availability zones and free room from the
monitor's poll of ``/federator/v1/capacity``, and forward no more than that.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from federator.config import load_settings
from tests.conftest import (
    PASSWORD,
    LiveBroker,
    issue_token,
    member_of,
    settings_data,
    sim_zone,
    start_live_broker,
    write_config,
)
from tests.daemon import Daemon

pytestmark = pytest.mark.slow

SMALL_MB = 1024  # m1.small
LOAD_INTERVAL = 0.5
FAILURES_TO_DOWN = 2
MONITOR = {
    "load_interval": LOAD_INTERVAL,
    "sync_interval": 0.5,
    "orphan_interval": 1.0,
    "failures_to_down": FAILURES_TO_DOWN,
    "vanish_grace_seconds": 0,
}
WORKERS = {"count": 4, "poll_interval": 0.05}


def _deadline_wait(what: str, check: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def _child(tmp: Path, name: str, ram_mb: int, tenants: tuple[str, ...]) -> Daemon:
    work = tmp / name
    work.mkdir()
    data = settings_data(
        work,
        zones=[sim_zone("local", "local", hosts=1, host_ram_mb=ram_mb, host_vcpus=16)],
        policy={"version": f"{name}.1", "zones": {}},
        tenants=tenants,
        workers=WORKERS,
        monitor=MONITOR,
    )
    return Daemon.start(write_config(work / "federator.toml", data), work, name)


def _child_zone(name: str, child: Daemon, project: str) -> dict[str, Any]:
    return {
        "name": name,
        "driver": "openstack",
        "kind": "virtual",
        "label": f"child broker {name}",
        "options": {
            "auth": {
                "auth_url": f"{child.url}/identity",
                "username": member_of(project),
                "password": PASSWORD,
                "project_name": project,
            },
            "wait_timeout": 30,
            "poll_interval": 0.05,
            "api_timeout": 5,
        },
    }


def _parent(
    tmp: Path, name: str, local_ram_mb: int, children: list[dict[str, Any]]
) -> tuple[LiveBroker, Callable[[], None]]:
    work = tmp / name
    work.mkdir()
    data = settings_data(
        work,
        zones=[
            sim_zone("local", "local", hosts=1, host_ram_mb=local_ram_mb, host_vcpus=16),
            *children,
        ],
        policy={
            "version": f"{name}.1",
            "zones": {"local": {"overflow": [c["name"] for c in children]}},
            # A stray carrying this parent's tags in a child is deleted at once.
            "orphans": {"action": "delete", "min_age_seconds": 0},
        },
        workers=WORKERS,
        monitor=MONITOR,
        broker_id=name,
    )
    return start_live_broker(load_settings(None, **data), monitor=True)


@pytest.fixture
def federation(tmp_path: Path) -> Iterator[dict[str, Any]]:
    child1 = _child(tmp_path, "child1", 3 * SMALL_MB, ("parent-a",))
    child2 = _child(tmp_path, "child2", 3 * SMALL_MB, ("parent-a", "parent-b"))
    stops: list[Callable[[], None]] = []
    try:
        a, stop_a = _parent(
            tmp_path,
            "parent-a",
            2 * SMALL_MB,
            [
                _child_zone("child1", child1, "parent-a"),
                _child_zone("child2", child2, "parent-a"),
            ],
        )
        stops.append(stop_a)
        b, stop_b = _parent(tmp_path, "parent-b", 512, [_child_zone("child2", child2, "parent-b")])
        stops.append(stop_b)
        yield {"child1": child1, "child2": child2, "a": a, "b": b}
    finally:
        for stop in reversed(stops):
            stop()
        for child in (child1, child2):
            child.kill()


def _zone(parent: LiveBroker, name: str) -> dict[str, Any]:
    r = parent.client.get(f"{parent.url}/federator/v1/zones/{name}")
    assert r.status_code == 200, r.text
    zone: dict[str, Any] = r.json()["zone"]
    return zone


def _reported(parent: LiveBroker, name: str) -> dict[str, Any] | None:
    caps: dict[str, Any] | None = _zone(parent, name)["capabilities"]
    return caps


def _settle(parent: LiveBroker, sid: str, timeout: float = 30) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        srv = parent.server(sid)
        return srv if srv["status"] in ("ACTIVE", "ERROR") else None

    got: dict[str, Any] = _deadline_wait(f"server {sid} to settle", done, timeout)
    return got


def _status(parent: LiveBroker, sid: str, status: str, timeout: float = 15) -> None:
    _deadline_wait(
        f"{sid} to be {status} in {parent.url}",
        lambda: parent.server(sid)["status"] == status,
        timeout,
    )


def _child_servers(child: Daemon, client: httpx.Client) -> dict[str, dict[str, Any]]:
    """Servers of a child as ``client`` sees them, by the parent's uuid in their metadata
    (every project's for an admin; a member's own whatever it asks)."""
    r = client.get(f"{child.url}/compute/v2.1/servers/detail", params={"all_tenants": "1"})
    assert r.status_code == 200, r.text
    out = {}
    for srv in r.json()["servers"]:
        uuid = srv["metadata"].get("federator:instance-uuid")
        assert uuid, srv["metadata"]
        out[uuid] = srv
    return out


def _member(child: Daemon, project: str) -> httpx.Client:
    token = issue_token(child.url, member_of(project), PASSWORD, project)
    return httpx.Client(timeout=30, headers={"X-Auth-Token": token})


def _az(srv: dict[str, Any]) -> str:
    az: str = srv["OS-EXT-AZ:availability_zone"]
    return az


def test_parent_fills_local_then_child1_then_child2_then_cell0(
    federation: dict[str, Any],
) -> None:
    a: LiveBroker = federation["a"]
    b: LiveBroker = federation["b"]
    child1: Daemon = federation["child1"]
    child2: Daemon = federation["child2"]
    for parent, zone in ((a, "child1"), (a, "child2"), (b, "child2")):
        _deadline_wait(f"{zone}'s report", lambda p=parent, z=zone: _reported(p, z), 20)

    # What a child reports: its availability zones and the room its policy leaves.
    caps = _reported(a, "child1")
    assert caps is not None
    assert [z["name"] for z in caps["availability_zones"]] == ["local"]
    assert caps["availability_zones"][0]["available"] is True
    assert caps["free"]["ram_mb"] == 3 * SMALL_MB
    assert caps["free"]["instances"] is None  # nothing bounds the count

    # Parent B (no local room for m1.small) forwards one server to child 2.
    b1 = b.boot("b-1")
    assert _az(_settle(b, b1)) == "child2"
    b.broker.monitor.run_now("load:child2")
    a.broker.monitor.run_now("load:child2")
    caps = _reported(a, "child2")
    assert caps is not None and caps["free"]["ram_mb"] == 2 * SMALL_MB, caps

    placed: dict[str, dict[str, Any]] = {}
    for i in range(1, 9):
        sid = a.boot(f"a-{i}")
        placed[sid] = _settle(a, sid)
    order = [(_az(s), s["status"]) for s in placed.values()]
    assert order == [
        ("local", "ACTIVE"),
        ("local", "ACTIVE"),
        ("child1", "ACTIVE"),
        ("child1", "ACTIVE"),
        ("child1", "ACTIVE"),
        ("child2", "ACTIVE"),
        ("child2", "ACTIVE"),
        ("", "ERROR"),
    ], order
    ids = list(placed)
    last = placed[ids[-1]]
    assert last["fault"]["code"] == 500
    message = last["fault"]["message"]
    assert "child1: the zone reported no room for this request" in message, message
    # Child 2's report can lag a forward still in flight when it was polled; the child's
    # own refusal is then the backstop. Either way the parent names it.
    assert (
        "child2: the zone reported no room for this request" in message
        or "child2: the remote cloud could not build it: no valid host" in message
    ), message

    # The parent lists its own servers, forwarded ones included, and nothing of B's.
    r = a.client.get(f"{a.compute}/servers/detail", params={"all_tenants": "1"})
    listed = {s["id"]: s for s in r.json()["servers"]}
    assert set(listed) == set(ids)
    assert b1 not in listed
    assert {_az(listed[i]) for i in ids[2:5]} == {"child1"}

    # Each child holds exactly what each parent forwarded, and its members see only
    # their own project's servers.
    admin1 = httpx.Client(timeout=30, headers=child1.headers)
    assert set(_child_servers(child1, admin1)) == set(ids[2:5])
    with _member(child2, "parent-a") as pa, _member(child2, "parent-b") as pb:
        assert set(_child_servers(child2, pa)) == set(ids[5:7])
        assert set(_child_servers(child2, pb)) == {b1}
        r = pa.get(f"{child2.url}/federator/v1/capacity")
        assert r.status_code == 200 and r.json()["capacity"]["free"]["ram_mb"] == 0, r.text
    # Neither parent takes the other's servers in child 2 for orphans.
    for parent in (a, b):
        parent.broker.monitor.run_now("orphans:child2")
        r = parent.client.get(f"{parent.url}/federator/v1/monitor/events")
        assert [e for e in r.json()["events"] if e["kind"] == "orphan"] == []

    # Instances deleted in a child behind the parent's back are found vanished, and a
    # stray carrying the parent's tags is an orphan the parent deletes (its policy says
    # so); the other parent's server in the same child is never taken for one.
    with _member(child2, "parent-a") as pa:
        gone = _child_servers(child2, pa)[ids[6]]["id"]
        assert pa.delete(f"{child2.url}/compute/v2.1/servers/{gone}").status_code == 204
        _deadline_wait("the vanished record", lambda: a.server(ids[6])["status"] == "ERROR", 15)
        assert "vanished from zone child2" in a.server(ids[6])["fault"]["message"]
        stray_uuid = str(uuid.uuid4())
        r = pa.post(
            f"{child2.url}/compute/v2.1/servers",
            json={
                "server": {
                    "name": "stray",
                    "flavorRef": "m1.small",
                    "imageRef": "cirros",
                    "metadata": {
                        "federator:instance-uuid": stray_uuid,
                        "federator:broker-id": "parent-a",
                    },
                }
            },
        )
        assert r.status_code == 202, r.text
        _deadline_wait(
            "parent A to delete its orphan",
            lambda: stray_uuid not in _child_servers(child2, pa),
            20,
        )

    def orphan_deleted() -> bool:
        # The event is written once the driver's delete has returned, which is after the
        # stray has left the child's listing.
        found = a.client.get(f"{a.url}/federator/v1/monitor/events").json()["events"]
        return any(e["kind"] == "orphan" and e["action"] == "delete" for e in found)

    _deadline_wait("parent A to record the orphan it deleted", orphan_deleted, 20)
    events = a.client.get(f"{a.url}/federator/v1/monitor/events").json()["events"]
    orphans = [e for e in events if e["kind"] == "orphan"]  # newest first
    shown = "\n".join(f"{e['action']}: {e['detail']}" for e in events)
    assert {e["instance_uuid"] for e in orphans} == {stray_uuid}, shown
    # Seen while still building (no launch time yet), it may first be noted, then deleted.
    assert [e["action"] for e in orphans] in (["delete"], ["delete", "log"]), shown
    with _member(child2, "parent-b") as pb:
        assert set(_child_servers(child2, pb)) == {b1}
    assert a.client.delete(f"{a.compute}/servers/{ids[6]}").status_code == 204

    # Lifecycle through the parent reaches the child...
    target = ids[2]
    r = a.client.post(f"{a.compute}/servers/{target}/action", json={"os-stop": None})
    assert r.status_code == 202, r.text
    _status(a, target, "SHUTOFF")
    assert _child_servers(child1, admin1)[target]["status"] == "SHUTOFF"
    r = a.client.post(f"{a.compute}/servers/{target}/action", json={"os-start": None})
    assert r.status_code == 202, r.text
    _status(a, target, "ACTIVE")
    assert _child_servers(child1, admin1)[target]["status"] == "ACTIVE"
    # ...and what happens in the child comes back through sync.
    remote_id = _child_servers(child1, admin1)[target]["id"]
    r = admin1.post(f"{child1.url}/compute/v2.1/servers/{remote_id}/action", json={"os-stop": None})
    assert r.status_code == 202, r.text
    _status(a, target, "SHUTOFF")
    r = a.client.delete(f"{a.compute}/servers/{target}")
    assert r.status_code == 204, r.text
    _deadline_wait(
        "the delete", lambda: a.client.get(f"{a.compute}/servers/{target}").status_code == 404, 15
    )
    assert target not in _child_servers(child1, admin1)
    admin1.close()

    # Child 2 gets room again; child 1 has some too but dies: the parent marks it down
    # within the configured interval and the next boot skips it.
    r = a.client.delete(f"{a.compute}/servers/{ids[5]}")
    assert r.status_code == 204, r.text
    killed = time.monotonic()
    child1.kill()
    _deadline_wait("child1 down", lambda: _zone(a, "child1")["state"] == "down", 10)
    took = time.monotonic() - killed
    bound = (FAILURES_TO_DOWN + 1) * LOAD_INTERVAL + 1.0
    assert took <= bound, f"child1 marked down after {took:.2f}s (bound {bound}s)"
    print(f"child1 marked down {took:.2f}s after SIGKILL (bound {bound}s)")
    explained = a.client.post(
        f"{a.url}/federator/v1/policy/explain", json={"flavor": "m1.small", "image": "cirros"}
    ).json()["explain"]
    verdicts = {z["zone"]: z["verdicts"] for z in explained["zones"]}
    assert verdicts["child1"][0]["check"] == "zone.down", verdicts["child1"]
    sid = a.boot("a-after-kill")
    assert _az(_settle(a, sid)) == "child2"


def test_rejected_credentials_mark_the_child_down_without_showing_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    child = _child(tmp_path, "child1", 2 * SMALL_MB, ("parent-a",))
    zone = _child_zone("child1", child, "parent-a")
    wrong = "not-the-password-3f9c"
    zone["options"]["auth"]["password"] = wrong
    parent, stop = _parent(tmp_path, "parent-a", 512, [zone])
    try:
        _deadline_wait("child1 down", lambda: _zone(parent, "child1")["state"] == "down", 10)
        shown = _zone(parent, "child1")
        assert "rejected the broker's credentials" in shown["state_detail"], shown
        assert shown["capabilities"] is None  # no report is kept from a zone that is down
        sid = parent.boot("needs-the-child")
        srv = _settle(parent, sid)
        assert srv["status"] == "ERROR"
        assert "child1: zone is unavailable" in srv["fault"]["message"], srv["fault"]
        everything = parent.client.get(f"{parent.url}/federator/v1/zones").text
        everything += parent.client.get(f"{parent.url}/federator/v1/monitor").text
        everything += str(srv)
        assert wrong not in everything
        assert wrong not in caplog.text
        assert "rejected the broker's credentials" in caplog.text
    finally:
        stop()
        child.kill()
