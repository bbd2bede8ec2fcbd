"""Host aggregates through the API (os-aggregates, Nova's v2.1 shapes): every Nova rule with
its answer, availability zones from aggregates, and hosts that register disabled until
they join an aggregate."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from federator.config import Settings
from federator.monitor.jobs import refresh_zone
from tests.conftest import LiveBroker, make_settings, sim_zone, start_live_broker
from tests.functional.capacity import check_drivers, check_ledger
from tests.functional.support import boot_settled

Factory = Callable[..., LiveBroker]
HOSTS = [f"local-host-00{n}" for n in range(1, 5)]
# One local zone and nothing to overflow to.
POLICY = {"version": "aggregates-test", "zones": {}}


@pytest.fixture
def live(tmp_path: Path, live_broker_factory: Factory) -> LiveBroker:
    """The built-in zones (aws-standin simulated): local has four hosts, all in the
    aggregate ``local`` its configuration declares."""
    return live_broker_factory(make_settings(tmp_path))


def aggs(live: LiveBroker) -> str:
    return f"{live.compute}/os-aggregates"


def create(live: LiveBroker, name: str, az: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name}
    if az is not None:
        body["availability_zone"] = az
    r = live.client.post(aggs(live), json={"aggregate": body})
    assert r.status_code == 200, r.text
    created: dict[str, Any] = r.json()["aggregate"]
    return created


def act(live: LiveBroker, agg_id: int, action: str, body: Any) -> httpx.Response:
    return live.client.post(f"{aggs(live)}/{agg_id}/action", json={action: body})


def add(live: LiveBroker, agg_id: int, host: str) -> dict[str, Any]:
    r = act(live, agg_id, "add_host", {"host": host})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()["aggregate"]
    return body


def listing(live: LiveBroker) -> list[dict[str, Any]]:
    r = live.client.get(aggs(live))
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()["aggregates"]
    return found


def hosts(live: LiveBroker) -> dict[str, dict[str, Any]]:
    r = live.client.get(f"{live.url}/federator/v1/hosts")
    assert r.status_code == 200, r.text
    return {h["name"]: h for h in r.json()["hosts"]}


def refused(r: httpx.Response, status: int, *needles: str) -> str:
    """An error answer: the status, Nova's wrapper key and a message naming the problem."""
    assert r.status_code == status, r.text
    body = r.json()
    key = {400: "badRequest", 403: "forbidden", 404: "itemNotFound", 409: "conflictingRequest"}
    assert body[key[status]]["message"] == body["message"]
    for needle in needles:
        assert needle in body["message"], body["message"]
    message: str = body["message"]
    return message


# --- shapes and CRUD -----------------------------------------------------------------------


def test_the_declared_aggregate_holds_the_local_hosts(live: LiveBroker) -> None:
    (local,) = listing(live)
    # No uuid at 2.1: Nova shows it from microversion 2.41 (see test_microversions.py).
    assert set(local) == {
        "id", "name", "availability_zone", "hosts", "metadata",
        "created_at", "updated_at", "deleted_at", "deleted",
    }  # fmt: skip
    assert (local["name"], local["availability_zone"], local["hosts"]) == ("local", None, HOSTS)
    assert (local["metadata"], local["deleted"], local["deleted_at"]) == ({}, False, None)
    for h in hosts(live).values():
        assert (h["enabled"], h["availability_zone"]) == (True, "local")
        assert h["aggregates"] == [{"id": local["id"], "name": "local"}]


def test_create_show_update_metadata_and_delete(live: LiveBroker) -> None:
    agg = create(live, "fast", "az-fast")
    assert (agg["name"], agg["availability_zone"], agg["hosts"]) == ("fast", "az-fast", [])
    assert agg["metadata"] == {"availability_zone": "az-fast"}
    assert isinstance(agg["id"], int) and "uuid" not in agg

    shown = live.client.get(f"{aggs(live)}/{agg['id']}").json()["aggregate"]
    assert shown == agg
    # The clients look names up as ids first and need a 404.
    refused(live.client.get(f"{aggs(live)}/fast"), 404, "aggregate fast could not be found")
    refused(live.client.get(f"{aggs(live)}/999"), 404, "aggregate 999")

    r = live.client.put(f"{aggs(live)}/{agg['id']}", json={"aggregate": {"name": "faster"}})
    assert r.status_code == 200, r.text
    assert (r.json()["aggregate"]["name"], r.json()["aggregate"]["availability_zone"]) == (
        "faster",
        "az-fast",
    )
    r = live.client.put(
        f"{aggs(live)}/{agg['id']}", json={"aggregate": {"availability_zone": "az-2"}}
    )
    assert r.json()["aggregate"]["metadata"] == {"availability_zone": "az-2"}

    r = act(live, agg["id"], "set_metadata", {"metadata": {"ssd": "true", "rack": "r1"}})
    assert r.json()["aggregate"]["metadata"] == {
        "availability_zone": "az-2",
        "rack": "r1",
        "ssd": "true",
    }
    # null removes a key (an absent one is no error); the AZ key is the AZ.
    r = act(live, agg["id"], "set_metadata", {"metadata": {"rack": None, "nope": None}})
    assert r.json()["aggregate"]["metadata"] == {"availability_zone": "az-2", "ssd": "true"}
    r = act(live, agg["id"], "set_metadata", {"metadata": {"availability_zone": None}})
    assert r.json()["aggregate"]["availability_zone"] is None
    assert r.json()["aggregate"]["updated_at"] is not None

    r = live.client.delete(f"{aggs(live)}/{agg['id']}")
    assert r.status_code == 200, r.text
    refused(live.client.get(f"{aggs(live)}/{agg['id']}"), 404)
    assert [a["name"] for a in listing(live)] == ["local"]


def test_members_are_forbidden(live: LiveBroker) -> None:
    member = live.member("project-a")
    refused(member.get(aggs(live)), 403, "admin role")
    refused(member.post(aggs(live), json={"aggregate": {"name": "x"}}), 403)
    refused(member.get(f"{live.url}/federator/v1/hosts"), 403)
    assert [a["name"] for a in listing(live)] == ["local"]


# --- Nova's rules: each refusal names the problem and changes nothing ------------------------


def test_every_refusal_is_clear_and_changes_nothing(live: LiveBroker) -> None:
    local = listing(live)[0]
    fast = create(live, "fast", "az-fast")
    slow = create(live, "slow", "az-slow")
    add(live, fast["id"], "local-host-001")
    sid = boot_settled(live, "pinned", availability_zone="az-fast")["id"]
    assert live.server(sid)["OS-EXT-SRV-ATTR:host"] == "local-host-001"
    before = listing(live), hosts(live)

    cases: list[tuple[httpx.Response, int, tuple[str, ...]]] = [
        # names are unique, whatever their case
        (
            live.client.post(aggs(live), json={"aggregate": {"name": "FAST"}}),
            409,
            ("an aggregate named 'fast' exists already",),
        ),
        (
            live.client.put(f"{aggs(live)}/{slow['id']}", json={"aggregate": {"name": "Fast"}}),
            409,
            ("'fast' exists already",),
        ),
        # deleting an aggregate that holds hosts
        (live.client.delete(f"{aggs(live)}/{local['id']}"), 409, ("still holds 4 host(s)",)),
        # unknown host; host already in it; host not in it
        (act(live, slow["id"], "add_host", {"host": "nope"}), 404, ("host nope",)),
        (act(live, local["id"], "add_host", {"host": "local-host-002"}), 409, ("already in",)),
        (act(live, slow["id"], "remove_host", {"host": "local-host-002"}), 404, ("not in",)),
        # a host is in one availability zone at most
        (
            act(live, slow["id"], "add_host", {"host": "local-host-001"}),
            409,
            ("aggregate 'fast', of availability zone 'az-fast'", "one availability zone"),
        ),
        # a host running servers never changes availability zone
        (
            live.client.put(
                f"{aggs(live)}/{fast['id']}", json={"aggregate": {"availability_zone": "az-x"}}
            ),
            409,
            ("local-host-001 runs 1 instance(s)", "to availability zone 'az-x'"),
        ),
        (
            act(live, fast["id"], "set_metadata", {"metadata": {"availability_zone": None}}),
            409,
            ("runs 1 instance(s)",),
        ),
        (
            act(live, fast["id"], "remove_host", {"host": "local-host-001"}),
            409,
            ("runs 1 instance(s)", "removing it from aggregate 'fast'"),
        ),
        # the local aggregate getting an AZ would move local-host-001 out of az-fast
        (
            act(live, local["id"], "set_metadata", {"metadata": {"availability_zone": "az-l"}}),
            409,
            ("also in aggregate 'fast'",),
        ),
        # an availability zone named after a virtual zone
        (
            live.client.post(
                aggs(live), json={"aggregate": {"name": "x", "availability_zone": "sim-cloud-b"}}
            ),
            400,
            ("virtual zone 'sim-cloud-b'",),
        ),
        # bad bodies
        (live.client.post(aggs(live), json={"aggregate": {}}), 400, ("aggregate.name",)),
        (live.client.post(aggs(live), json={"aggregate": {"name": "  "}}), 400, ("name",)),
        (
            live.client.post(aggs(live), json={"aggregate": {"name": "x", "zone": "a"}}),
            400,
            ("unknown field",),
        ),
        (
            live.client.post(
                aggs(live), json={"aggregate": {"name": "x", "availability_zone": "a:b"}}
            ),
            400,
            ("':'",),
        ),
        (live.client.put(f"{aggs(live)}/{slow['id']}", json={"aggregate": {}}), 400, ()),
        (
            live.client.post(
                f"{aggs(live)}/{slow['id']}/action",
                json={"add_host": {"host": "h"}, "remove_host": {"host": "h"}},
            ),
            400,
            ("exactly one action",),
        ),
        (act(live, slow["id"], "set_metadata", {"metadata": {"k": 1}}), 400, ("metadata.k",)),
        (act(live, slow["id"], "add_host", {}), 400, ("add_host.host",)),
        (act(live, slow["id"], "reboot", {}), 400, ("unknown field",)),
        (act(live, 999, "add_host", {"host": "local-host-002"}), 404, ("aggregate 999",)),
    ]
    for response, status, needles in cases:
        refused(response, status, *needles)
    assert (listing(live), hosts(live)) == before


def test_hosts_move_between_availability_zones_while_empty(live: LiveBroker) -> None:
    fast = create(live, "fast", "az-fast")
    add(live, fast["id"], "local-host-003")
    assert hosts(live)["local-host-003"]["availability_zone"] == "az-fast"
    r = live.client.put(
        f"{aggs(live)}/{fast['id']}", json={"aggregate": {"availability_zone": "az-quick"}}
    )
    assert r.status_code == 200, r.text
    assert hosts(live)["local-host-003"]["availability_zone"] == "az-quick"
    r = act(live, fast["id"], "remove_host", {"host": "local-host-003"})
    assert r.status_code == 200, r.text
    h = hosts(live)["local-host-003"]
    assert (h["availability_zone"], h["enabled"]) == ("local", True)  # still in "local"


# --- availability zones ----------------------------------------------------------------------


def test_an_aggregate_availability_zone_is_listed_and_takes_boots(live: LiveBroker) -> None:
    fast = create(live, "fast", "az-fast")
    for h in ("local-host-003", "local-host-004"):
        add(live, fast["id"], h)

    r = live.client.get(f"{live.compute}/os-availability-zone")
    names = [z["zoneName"] for z in r.json()["availabilityZoneInfo"]]
    assert names == ["local", "aws-standin", "sim-cloud-b", "az-fast"]
    detail = live.client.get(f"{live.compute}/os-availability-zone/detail").json()
    by_name = {z["zoneName"]: z for z in detail["availabilityZoneInfo"]}
    assert sorted(by_name["az-fast"]["hosts"]) == ["local-host-003", "local-host-004"]
    assert sorted(by_name["local"]["hosts"]) == ["local-host-001", "local-host-002"]
    assert by_name["az-fast"]["zoneState"] == {"available": True}
    member = live.member("project-a")
    listed = member.get(f"{live.compute}/os-availability-zone").json()["availabilityZoneInfo"]
    assert "az-fast" in {z["zoneName"] for z in listed}

    placed = {boot_settled(live, f"f{n}", availability_zone="az-fast")["id"] for n in range(6)}
    on = {live.server(sid)["OS-EXT-SRV-ATTR:host"] for sid in placed}
    assert on == {"local-host-003", "local-host-004"}
    for sid in placed:
        srv = live.server(sid)
        assert srv["status"] == "ACTIVE"
        assert srv["federator:placement"]["zone"] == "local"
    # The zone's own name now holds only the hosts left in it.
    local = {boot_settled(live, f"l{n}", availability_zone="local")["id"] for n in range(4)}
    assert {live.server(sid)["OS-EXT-SRV-ATTR:host"] for sid in local} == {
        "local-host-001",
        "local-host-002",
    }
    refused(
        live.client.post(
            f"{live.compute}/servers",
            json={"server": {"name": "x", "flavorRef": "1", "imageRef": "cirros",
                             "availability_zone": "az-none"}},
        ),
        400,
        "availability zone 'az-none' does not exist",
    )  # fmt: skip

    explained = live.client.post(
        f"{live.url}/federator/v1/policy/explain",
        json={"flavor": "m1.small", "image": "cirros", "availability_zone": "az-fast"},
    ).json()["explain"]
    assert explained["decision"]["zone"] == "local"
    assert explained["decision"]["host"] in {"local-host-003", "local-host-004"}
    zone = next(z for z in explained["zones"] if z["zone"] == "local")
    rejected = {h["host"]: h for h in zone["hosts"] if not h["passed"]}
    assert set(rejected) == {"local-host-001", "local-host-002"}
    assert {h["rejected_by"] for h in rejected.values()} == {"AvailabilityZoneFilter"}
    check_drivers(check_ledger(live.broker.dbs), live.broker.drivers)


# --- hosts register disabled until they join an aggregate ------------------------------------


def test_a_new_host_takes_no_vm_until_it_joins_an_aggregate(
    tmp_path: Path, live_broker_factory: Factory
) -> None:
    zone = sim_zone("local", "local", hosts=1, host_ram_mb=4096, host_vcpus=4)
    zone["aggregates"] = [{"name": "rack-1", "hosts": ["local-host-001"]}]
    live = live_broker_factory(make_settings(tmp_path, zones=[zone], policy=POLICY))
    driver = live.broker.drivers["local"]
    assert driver.ex_add_hosts(1) == ["local-host-002"]  # type: ignore[attr-defined]
    refresh_zone(live.broker.ctx, "local")
    live.broker.hosts.reload()

    new = hosts(live)["local-host-002"]
    assert (new["enabled"], new["state"], new["disabled_reason"]) == (
        False,
        "disabled",
        "not in any aggregate",
    )
    assert new["aggregates"] == []
    r = live.client.get(f"{live.url}/federator/v1/zones/local")
    assert r.json()["zone"]["hosts"] == {"total": 2, "enabled": 1}
    assert r.json()["zone"]["capacity"]["ram_mb"] == 4096

    # Fill the old host: the next boot finds no host, and the fault says why.
    for n in range(4):
        assert boot_settled(live, f"fill-{n}")["status"] == "ACTIVE"
    stuck = boot_settled(live, "stuck")
    assert stuck["status"] == "ERROR"
    assert "EnabledFilter removed 1 host(s)" in stuck["fault"]["message"]
    explained = live.client.post(
        f"{live.url}/federator/v1/policy/explain", json={"flavor": "m1.small", "image": "cirros"}
    ).json()["explain"]
    verdicts = {h["host"]: h for z in explained["zones"] for h in z.get("hosts", [])}
    assert verdicts["local-host-002"]["rejected_by"] == "EnabledFilter"
    assert verdicts["local-host-002"]["detail"] == "disabled: not in any aggregate"

    rack = listing(live)[0]
    add(live, rack["id"], "local-host-002")
    assert hosts(live)["local-host-002"]["enabled"] is True
    placed = boot_settled(live, "now")
    assert (placed["status"], placed["OS-EXT-SRV-ATTR:host"]) == ("ACTIVE", "local-host-002")

    # Leaving its last aggregate disables it again; what runs there stays.
    r = act(live, rack["id"], "remove_host", {"host": "local-host-002"})
    assert r.status_code == 200, r.text
    assert hosts(live)["local-host-002"]["disabled_reason"] == "not in any aggregate"
    assert live.server(placed["id"])["status"] == "ACTIVE"
    assert boot_settled(live, "again")["status"] == "ERROR"
    check_drivers(check_ledger(live.broker.dbs), live.broker.drivers)


def test_a_zone_declaring_no_aggregate_takes_nothing_until_an_admin_acts(
    tmp_path: Path, live_broker_factory: Factory
) -> None:
    zone = sim_zone("local", "local", aggregate=False, hosts=2)
    live = live_broker_factory(make_settings(tmp_path, zones=[zone], policy=POLICY))
    assert listing(live) == []
    assert {h["disabled_reason"] for h in hosts(live).values()} == {"not in any aggregate"}
    assert boot_settled(live, "nowhere")["status"] == "ERROR"
    agg = create(live, "rack")
    add(live, agg["id"], "local-host-001")
    assert boot_settled(live, "somewhere")["OS-EXT-SRV-ATTR:host"] == "local-host-001"


def test_declared_aggregates_are_applied_at_every_start(
    tmp_path: Path, live_broker_factory: Factory
) -> None:
    zone = sim_zone("local", "local", aggregate=False, hosts=4)
    zone["aggregates"] = [
        {"name": "low", "hosts": ["local-host-00[12]"], "availability_zone": "az-low"},
        {"name": "all", "hosts": ["*"], "metadata": {"ssd": "true"}},
    ]
    settings: Settings = make_settings(tmp_path, zones=[zone], policy=POLICY)
    live, stop = start_live_broker(settings)
    declared = {a["name"]: a for a in listing(live)}
    assert declared["low"]["hosts"] == ["local-host-001", "local-host-002"]
    assert declared["low"]["availability_zone"] == "az-low"
    assert declared["all"]["hosts"] == HOSTS
    assert declared["all"]["metadata"] == {"ssd": "true"}
    seen = hosts(live)
    assert [seen[h]["availability_zone"] for h in HOSTS] == ["az-low", "az-low", "local", "local"]
    assert seen["local-host-001"]["metadata"] == {"availability_zone": ["az-low"], "ssd": ["true"]}

    # An administrator's removal lasts until the next start, which applies the patterns.
    r = act(live, declared["all"]["id"], "remove_host", {"host": "local-host-004"})
    assert r.status_code == 200, r.text
    stop()
    again = live_broker_factory(settings)
    assert {a["name"]: a["hosts"] for a in listing(again)} == {
        "low": ["local-host-001", "local-host-002"],
        "all": HOSTS,
    }


def test_servers_show_and_filter_by_their_hosts_availability_zone(live: LiveBroker) -> None:
    fast = create(live, "fast", "az-fast")
    add(live, fast["id"], "local-host-001")
    pinned = boot_settled(live, "pinned", availability_zone="az-fast")
    assert pinned["OS-EXT-AZ:availability_zone"] == "az-fast"
    # A server the scheduler put on that host without asking is in az-fast too, as in Nova.
    others = [boot_settled(live, f"free-{i}")["id"] for i in range(4)]
    shown = {sid: live.server(sid) for sid in others}
    for srv in shown.values():
        expected = "az-fast" if srv["OS-EXT-SRV-ATTR:host"] == "local-host-001" else "local"
        assert srv["OS-EXT-AZ:availability_zone"] == expected

    def listed(az: str) -> set[str]:
        r = live.client.get(
            f"{live.compute}/servers/detail", params={"availability_zone": az, "all_tenants": 1}
        )
        assert r.status_code == 200, r.text
        return {s["id"] for s in r.json()["servers"]}

    in_fast = {pinned["id"]} | {
        sid for sid, srv in shown.items() if srv["OS-EXT-SRV-ATTR:host"] == "local-host-001"
    }
    assert listed("az-fast") == in_fast
    assert listed("local") == set(others) - in_fast
    assert listed("nowhere") == set()
