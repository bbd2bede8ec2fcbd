"""Hosts through the API: state and load, disable, maintenance, and draining a host by
moving its instances to other hosts of its availability zone, crash-safely."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from drivers.sim.driver import SimDriver
from federator.compute import claims
from federator.driver import Capabilities, PowerState
from federator.storage.models import Allocation, Host, Instance, Migration
from tests.conftest import LiveBroker, make_settings, sim_zone, start_live_broker
from tests.functional.capacity import check_drivers, check_ledger
from tests.functional.support import boot_settled

Factory = Callable[..., LiveBroker]
POLICY = {"version": "hosts-test", "zones": {}}
BROKER = "/federator/v1"


@pytest.fixture
def live(tmp_path: Path, live_broker_factory: Factory) -> LiveBroker:
    """One local zone of four 8 GiB hosts: 001 and 002 in availability zone ``az-a``,
    003 and 004 in the zone's own, ``local``."""
    zone = sim_zone("local", "local", aggregate=False, hosts=4, host_ram_mb=8192, host_vcpus=8)
    zone["aggregates"] = [
        {"name": "rack-a", "hosts": ["local-host-00[12]"], "availability_zone": "az-a"},
        {"name": "rack-b", "hosts": ["local-host-00[34]"]},
    ]
    return live_broker_factory(make_settings(tmp_path, zones=[zone], policy=POLICY))


def host_url(live: LiveBroker, name: str, action: str = "") -> str:
    return f"{live.url}{BROKER}/hosts/local/{name}" + (f"/{action}" if action else "")


def show(live: LiveBroker, name: str) -> dict[str, Any]:
    r = live.client.get(host_url(live, name))
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def post(live: LiveBroker, name: str, action: str, body: Any = None) -> dict[str, Any]:
    r = live.client.post(host_url(live, name, action), json=body)
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    return answer


def host_of(live: LiveBroker, sid: str) -> str:
    host: str = live.server(sid)["OS-EXT-SRV-ATTR:host"]
    return host


def explain_hosts(live: LiveBroker, az: str | None = None) -> dict[str, dict[str, Any]]:
    body: dict[str, Any] = {"flavor": "m1.small", "image": "cirros"}
    if az:
        body["availability_zone"] = az
    r = live.client.post(f"{live.url}{BROKER}/policy/explain", json=body)
    assert r.status_code == 200, r.text
    return {h["host"]: h for z in r.json()["explain"]["zones"] for h in z.get("hosts", [])}


def boot_on(live: LiveBroker, count: int, az: str, prefix: str) -> list[str]:
    return [boot_settled(live, f"{prefix}-{n}", availability_zone=az)["id"] for n in range(count)]


def test_list_and_show_hosts(live: LiveBroker) -> None:
    sid = boot_settled(live, "web", availability_zone="az-a")["id"]
    where = host_of(live, sid)
    r = live.client.get(f"{live.url}{BROKER}/hosts")
    listed = {h["name"]: h for h in r.json()["hosts"]}
    assert sorted(listed) == [f"local-host-00{n}" for n in range(1, 5)]
    h = listed[where]
    assert (h["zone"], h["availability_zone"], h["enabled"], h["state"]) == (
        "local",
        "az-a",
        True,
        "enabled",
    )
    assert [a["name"] for a in h["aggregates"]] == ["rack-a"]
    assert (h["disabled_reason"], h["maintenance"], h["disabled_by_admin"]) == (None, None, None)
    assert h["capacity"]["vcpus"] == {
        "total": 8,
        "allocation_ratio": 4.0,
        "schedulable": 32,
        "used": 1,
    }
    assert h["capacity"]["ram_mb"] == {
        "total": 8192,
        "allocation_ratio": 1.0,
        "schedulable": 8192,
        "used": 1024,
    }
    assert h["capacity"]["disk_gb"]["used"] == 10
    assert h["instances"] == 1
    assert h["metadata"] == {"availability_zone": ["az-a"]}

    shown = show(live, where)
    assert shown["host"] == h
    assert shown["servers"] == [
        {"id": sid, "name": "web", "status": "ACTIVE", "task_state": None, "project_id": "admin"}
    ]
    only = live.client.get(f"{live.url}{BROKER}/hosts", params={"zone": "nope"})
    assert only.json() == {"hosts": []}
    missing = live.client.get(host_url(live, "nope"))
    assert missing.status_code == 404
    assert missing.json()["itemNotFound"]["message"] == "host nope of zone local could not be found"
    assert live.client.post(host_url(live, "nope", "enable")).status_code == 404
    bad = live.client.post(host_url(live, where, "disable"), json={"why": "x"})
    assert bad.status_code == 400, bad.text


def test_disabled_and_maintenance_hosts_take_no_vm(live: LiveBroker) -> None:
    disabled = post(live, "local-host-001", "disable", {"reason": "broken fan"})["host"]
    assert (disabled["enabled"], disabled["state"], disabled["disabled_reason"]) == (
        False,
        "disabled",
        "broken fan",
    )
    assert disabled["disabled_by_admin"] == {"reason": "broken fan"}
    sid = boot_settled(live, "kept", availability_zone="local")["id"]
    entered = post(live, host_of(live, sid), "maintenance", {"reason": "kernel upgrade"})
    assert entered["host"]["state"] == "maintenance"
    assert entered["host"]["maintenance"]["reason"] == "kernel upgrade"
    assert entered["host"]["maintenance"]["since"]
    assert [s["id"] for s in entered["servers"]] == [sid]  # still running there
    in_maintenance = host_of(live, sid)
    other = ({"local-host-003", "local-host-004"} - {in_maintenance}).pop()

    verdicts = explain_hosts(live)
    assert verdicts["local-host-001"]["rejected_by"] == "EnabledFilter"
    assert verdicts["local-host-001"]["detail"] == "disabled: broken fan"
    assert verdicts[in_maintenance]["detail"] == "maintenance: kernel upgrade"
    for n in range(4):
        assert (
            host_of(live, boot_settled(live, f"local-{n}", availability_zone="local")["id"])
            == other
        )
    for n in range(3):
        srv = boot_settled(live, f"az-a-{n}", availability_zone="az-a")
        assert srv["OS-EXT-SRV-ATTR:host"] == "local-host-002"
    assert live.server(sid)["status"] == "ACTIVE"

    # Ending maintenance, and enabling, give the hosts back to the scheduler.
    assert post(live, in_maintenance, "maintenance/exit")["host"]["enabled"] is True
    assert post(live, "local-host-001", "enable")["host"]["enabled"] is True
    placed = {host_of(live, boot_settled(live, f"back-{n}")["id"]) for n in range(8)}
    assert {"local-host-001", in_maintenance} <= placed
    check_drivers(check_ledger(live.broker.dbs), live.broker.drivers)


def test_drain_moves_every_instance_within_its_availability_zone(live: LiveBroker) -> None:
    sids = boot_on(live, 6, "az-a", "a")  # spread over 001 and 002
    boot_on(live, 2, "local", "b")
    on_001 = [sid for sid in sids if host_of(live, sid) == "local-host-001"]
    assert len(on_001) == 3
    stopped = on_001[0]
    r = live.client.post(f"{live.compute}/servers/{stopped}/action", json={"os-stop": None})
    assert r.status_code == 202, r.text
    live.wait_status(stopped, "SHUTOFF")

    answer = post(live, "local-host-001", "drain", {"reason": "disk swap"})
    assert (answer["moved"], answer["stayed"], answer["failed"]) == (3, 0, 0)
    assert {m["id"] for m in answer["moves"]} == set(on_001)
    for m in answer["moves"]:
        assert (m["outcome"], m["from"], m["to"]) == ("moved", "local-host-001", "local-host-002")
        assert m["status"] == ("SHUTOFF" if m["id"] == stopped else "ACTIVE")
    drained = answer["host"]
    assert (drained["state"], drained["instances"], drained["moving"]) == ("maintenance", 0, 0)
    assert drained["maintenance"]["reason"] == "disk swap"
    assert drained["capacity"]["ram_mb"]["used"] == 0
    assert show(live, "local-host-001")["servers"] == []

    driver = live.broker.drivers["local"]
    for sid in on_001:
        srv = live.server(sid)
        assert srv["OS-EXT-SRV-ATTR:host"] == "local-host-002"
        assert srv["OS-EXT-STS:task_state"] is None
        assert srv["status"] == ("SHUTOFF" if sid == stopped else "ACTIVE")
        remote = driver.get(sid)
        assert remote.host == "local-host-002"
        assert remote.state is (PowerState.SHUTOFF if sid == stopped else PowerState.ACTIVE)
    with live.broker.dbs.api.read() as s:
        assert s.scalars(select(Migration)).all() == []
    ledger = check_ledger(live.broker.dbs)
    check_drivers(ledger, live.broker.drivers)
    assert {h.name: h.instances for h in ledger.hosts} == {
        "local-host-001": 0,
        "local-host-002": 6,
        "local-host-003": 1,
        "local-host-004": 1,
    }
    # The moved instances keep working.
    r = live.client.post(f"{live.compute}/servers/{stopped}/action", json={"os-start": None})
    assert r.status_code == 202, r.text
    live.wait_status(stopped, "ACTIVE")


def test_instances_with_nowhere_to_go_stay_and_are_reported(
    tmp_path: Path, live_broker_factory: Factory
) -> None:
    zone = sim_zone("local", "local", hosts=2, host_ram_mb=2048, host_vcpus=2)
    live = live_broker_factory(make_settings(tmp_path, zones=[zone], policy=POLICY))
    sids = [boot_settled(live, f"vm-{n}")["id"] for n in range(4)]  # both hosts full
    on_001 = sorted(s for s in sids if host_of(live, s) == "local-host-001")
    answer = post(live, "local-host-001", "drain")
    assert (answer["moved"], answer["stayed"], answer["failed"]) == (0, 2, 0)
    for m in answer["moves"]:
        assert (m["outcome"], m["to"], m["status"]) == ("stayed", None, "ACTIVE")
        assert "no other host of availability zone local has 1024 MB RAM" in m["detail"]
        assert "RamFilter removed 1" in m["detail"]
    assert answer["host"]["maintenance"]["reason"] == "draining"
    assert sorted(s for s in sids if host_of(live, s) == "local-host-001") == on_001
    for sid in on_001:
        assert live.server(sid)["OS-EXT-STS:task_state"] is None
    check_drivers(check_ledger(live.broker.dbs), live.broker.drivers)


def test_a_failed_move_leaves_the_instance_running_on_its_source(live: LiveBroker) -> None:
    sid = boot_settled(live, "solo", availability_zone="az-a")["id"]
    source = host_of(live, sid)
    driver = live.broker.drivers["local"]
    assert isinstance(driver, SimDriver)
    driver.ex_inject("transient")
    answer = post(live, source, "drain")
    (move,) = answer["moves"]
    assert (move["outcome"], move["to"], move["status"]) == ("failed", None, "ACTIVE")
    assert "relocating" in move["detail"] and "temporarily unavailable" in move["detail"]
    srv = live.server(sid)
    assert (srv["OS-EXT-SRV-ATTR:host"], srv["status"], srv["OS-EXT-STS:task_state"]) == (
        source,
        "ACTIVE",
        None,
    )
    assert driver.get(sid).host == source
    check_drivers(check_ledger(live.broker.dbs), live.broker.drivers)
    # A second drain, with the fault gone, moves it.
    again = post(live, source, "drain")
    assert again["moved"] == 1
    assert host_of(live, sid) != source
    check_drivers(check_ledger(live.broker.dbs), live.broker.drivers)


def _interrupted_move(live: LiveBroker, sid: str, target: str, *, relocated: bool) -> None:
    """The state a crash leaves: the move claimed (and maybe carried out by the driver),
    the record marked, nothing settled."""
    api = live.broker.dbs.api
    with api.read() as s:
        alloc = s.get_one(Allocation, sid)
        dest = s.scalars(select(Host.id).where(Host.name == target)).one()
    assert claims.reserve_move(
        api,
        instance_uuid=sid,
        source_host_id=alloc.host_id or 0,
        dest_host_id=dest,
        was_active=True,
        node=live.broker.settings.node_id,
    )
    with live.broker.dbs.cells["cell1"].write() as s:
        s.execute(update(Instance).where(Instance.uuid == sid).values(task_state="migrating"))
    driver = live.broker.drivers["local"]
    driver.stop(sid)
    if relocated:
        driver.migrate(sid, target)


@pytest.mark.parametrize("relocated", [True, False])
def test_a_move_interrupted_by_a_crash_is_settled_after_restart(
    tmp_path: Path, live_broker_factory: Factory, relocated: bool
) -> None:
    zone = sim_zone("local", "local", hosts=2)
    settings = make_settings(tmp_path, zones=[zone], policy=POLICY)
    first, stop = start_live_broker(settings)
    sid = boot_settled(first, "moving")["id"]
    source = host_of(first, sid)
    target = ({"local-host-001", "local-host-002"} - {source}).pop()
    _interrupted_move(first, sid, target, relocated=relocated)
    stop()  # the "crash": nothing was settled
    with first.broker.dbs.api.read() as s:
        assert [m.instance_uuid for m in s.scalars(select(Migration))] == [sid]

    live = live_broker_factory(settings)
    with live.broker.dbs.api.read() as s:  # settled as the broker started
        assert s.scalars(select(Migration)).all() == []
    listed = live.client.get(f"{live.url}{BROKER}/hosts").json()["hosts"]
    assert [h["moving"] for h in listed] == [0, 0]
    srv = live.server(sid)
    expected = target if relocated else source
    assert (srv["OS-EXT-SRV-ATTR:host"], srv["status"], srv["OS-EXT-STS:task_state"]) == (
        expected,
        "ACTIVE",
        None,
    )
    remote = live.broker.drivers["local"].get(sid)
    assert (remote.host, remote.state) == (expected, PowerState.ACTIVE)
    with live.broker.dbs.api.read() as s:
        assert s.scalars(select(Migration)).all() == []
    check_drivers(check_ledger(live.broker.dbs), live.broker.drivers)


def test_drain_needs_a_driver_that_moves_instances(
    live: LiveBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(SimDriver, "capabilities", lambda self: Capabilities(host_scheduling=True))
    r = live.client.post(host_url(live, "local-host-001", "drain"))
    assert r.status_code == 409, r.text
    assert "cannot move an instance from one host to another" in r.json()["message"]
    assert show(live, "local-host-001")["host"]["enabled"] is True  # nothing changed


def test_drain_needs_a_zone_whose_hosts_the_broker_schedules(
    tmp_path: Path, live_broker_factory: Factory
) -> None:
    settings = make_settings(tmp_path, zones=[sim_zone("local", "local", hosts=1)], policy=POLICY)
    _, stop = start_live_broker(settings)
    stop()
    # The same zone, now opaque: its host is still known, no longer scheduled.
    opaque = sim_zone("local", "local", hosts=1, expose_hosts=False)
    live = live_broker_factory(make_settings(tmp_path, zones=[opaque], policy=POLICY))
    r = live.client.post(host_url(live, "local-host-001", "drain"))
    assert r.status_code == 409, r.text
    assert "does not let the broker schedule hosts" in r.json()["message"]
    assert show(live, "local-host-001")["host"]["maintenance"] is None  # nothing changed


def test_host_calls_need_the_admin_role(live: LiveBroker) -> None:
    member: httpx.Client = live.member("project-a")
    for method, url in (
        ("GET", f"{live.url}{BROKER}/hosts"),
        ("POST", host_url(live, "local-host-001", "drain")),
        ("POST", host_url(live, "local-host-001", "disable")),
    ):
        assert member.request(method, url).status_code == 403
    assert show(live, "local-host-001")["host"]["enabled"] is True


@pytest.mark.postgres
def test_aggregates_and_drain_on_postgresql(
    tmp_path: Path, live_broker_factory: Factory, pg_database_factory: Callable[[], str]
) -> None:
    database = {
        "api_url": pg_database_factory(),
        "cell0_url": pg_database_factory(),
        "cells": {"cell1": pg_database_factory()},
    }
    zone = sim_zone("local", "local", hosts=3)
    live = live_broker_factory(
        make_settings(tmp_path, zones=[zone], policy=POLICY, database=database)
    )
    r = live.client.post(
        f"{live.compute}/os-aggregates",
        json={"aggregate": {"name": "pair", "availability_zone": "az-pair"}},
    )
    assert r.status_code == 200, r.text
    agg_id = r.json()["aggregate"]["id"]
    for h in ("local-host-001", "local-host-002"):
        added = live.client.post(
            f"{live.compute}/os-aggregates/{agg_id}/action", json={"add_host": {"host": h}}
        )
        assert added.status_code == 200, added.text
    dup = live.client.post(f"{live.compute}/os-aggregates", json={"aggregate": {"name": "PAIR"}})
    assert dup.status_code == 409, dup.text
    sids = boot_on(live, 4, "az-pair", "pg")
    source = host_of(live, sids[0])
    answer = post(live, source, "drain")
    assert answer["failed"] == answer["stayed"] == 0
    assert {host_of(live, sid) for sid in sids} == ({"local-host-001", "local-host-002"} - {source})
    check_drivers(check_ledger(live.broker.dbs), live.broker.drivers)
