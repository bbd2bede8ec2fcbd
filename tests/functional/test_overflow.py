"""Overflow to virtual zones, end to end through the API.

The acceptance scenario: a local zone of 4 hosts x 8 GiB fills to its 75% RAM high-water
mark, then bursts to cloud-a (quota 3) and cloud-b (quota 2); the next request is buried
in cell0; the local zone keeps bursting until its RAM falls below the 50% low-water mark.
Then the weighing, the request rules and driver failures, all driven over HTTP.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from federator.config import Settings
from tests.conftest import LiveBroker, make_settings, sim_zone, write_policy
from tests.functional.support import (
    GIB,
    all_servers,
    az,
    boot_as,
    boot_settled,
    delete_settled,
    fault_reason,
    overflow_policy,
    three_zones,
    zones,
)

Factory = Callable[[Settings], LiveBroker]


def _placed(server: dict[str, Any], zone: str) -> None:
    assert server["status"] == "ACTIVE", server.get("federator:fault")
    assert az(server) == zone
    assert server["federator:cell"] == "cell1"


def _check_placement(server: dict[str, Any], version: str, local_used_mb: int) -> None:
    """The placement record names the policy version and the load the decision saw."""
    placement = server["federator:placement"]
    assert placement["policy_version"] == version
    assert server["federator:policy_version"] == version
    assert placement["zone"] == az(server)
    local = placement["load"]["local"]
    assert local["ram_used_mb"] == local_used_mb
    assert local["ram_total_mb"] == 32 * GIB
    assert {"cloud-a", "cloud-b"} <= set(placement["load"])
    assert any(v["zone"] == az(server) and v["accepted"] for v in placement["verdicts"])


def test_overflow_quota_cell0_and_hysteresis(tmp_path: Path, live_broker_factory: Factory) -> None:
    live = live_broker_factory(
        make_settings(tmp_path, zones=three_zones(), policy=overflow_policy("acc-1"))
    )
    local: list[str] = []
    for n in range(24):
        server = boot_settled(live, f"local-{n}")
        _placed(server, "local")
        _check_placement(server, "acc-1", n * GIB)
        local.append(server["id"])
    z = zones(live)
    assert z["local"]["bursting"] is False
    assert z["local"]["usage"]["instances"] == 24
    assert z["local"]["usage"]["ram_mb"] == 24 * GIB
    assert z["local"]["thresholds"]["ram_percent"] == 75.0

    cloud_a = []
    for n in range(3):
        server = boot_settled(live, f"a-{n}")
        _placed(server, "cloud-a")
        _check_placement(server, "acc-1", 24 * GIB)
        assert server["federator:placement"]["load"]["cloud-a"]["instances"] == n
        cloud_a.append(server["id"])
    for n in range(2):
        server = boot_settled(live, f"b-{n}")
        _placed(server, "cloud-b")
        _check_placement(server, "acc-1", 24 * GIB)
    z = zones(live)
    assert z["local"]["bursting"] is True
    assert z["local"]["usage"]["instances"] == 24
    assert z["cloud-a"]["usage"]["instances"] == 3
    assert z["cloud-a"]["quota"]["instances"] == 3
    assert z["cloud-b"]["usage"]["instances"] == 2
    assert z["cloud-b"]["bursting"] is False

    buried = boot_settled(live, "one-too-many")
    sid = buried["id"]
    assert buried["status"] == "ERROR"
    assert buried["federator:cell"] == "cell0"
    assert fault_reason(buried) == "no_valid_host"
    assert buried["federator:fault"]["code"] == "federator.placement.no_valid_host"
    message = buried["federator:fault"]["message"]
    assert buried["fault"]["message"] == message
    assert "local: bursting" in message
    assert "cloud-a: over quota" in message
    assert "cloud-b: over quota" in message
    assert buried["federator:placement"]["policy_version"] == "acc-1"
    listed = {s["id"]: s for s in all_servers(live)}
    assert len(listed) == 30
    assert listed[sid]["status"] == "ERROR"
    assert fault_reason(listed[sid]) == "no_valid_host"
    # Nothing was claimed for it.
    z = zones(live)
    assert [z[n]["usage"]["instances"] for n in ("local", "cloud-a", "cloud-b")] == [24, 3, 2]

    r = live.client.post(f"{live.compute}/servers/{sid}/action", json={"os-start": None})
    assert r.status_code == 409
    assert r.json()["code"] == "federator.instance.invalid_state"
    assert "cell0" in r.json()["message"]
    assert live.client.delete(f"{live.compute}/servers/{sid}").status_code == 204
    assert live.client.get(f"{live.compute}/servers/{sid}").status_code == 404

    # Hysteresis: 20 GiB of 32 (62.5%) is below high water but not below low water, so
    # new requests keep overflowing (cloud-a has room again after one delete).
    delete_settled(live, *local[:4], cloud_a[0])
    z = zones(live)
    assert z["local"]["usage"]["ram_mb"] == 20 * GIB
    assert z["local"]["bursting"] is True
    server = boot_settled(live, "still-bursting")
    _placed(server, "cloud-a")
    verdict = next(v for v in server["federator:placement"]["verdicts"] if v["zone"] == "local")
    assert verdict["check"] == "hysteresis.ram_percent"
    assert verdict["figures"]["ram_percent"] == 62.5
    assert zones(live)["local"]["bursting"] is True

    # Below low water (15 GiB = 46.9%) the zone takes requests again.
    delete_settled(live, *local[4:9])
    assert zones(live)["local"]["usage"]["ram_mb"] == 15 * GIB
    server = boot_settled(live, "home-again")
    _placed(server, "local")
    _check_placement(server, "acc-1", 15 * GIB)
    z = zones(live)
    assert z["local"]["bursting"] is False
    assert z["local"]["usage"]["instances"] == 16
    assert z["cloud-a"]["usage"]["instances"] == 3


def _host(server: dict[str, Any]) -> str:
    host: str = server["OS-EXT-SRV-ATTR:host"]
    return host


def test_spread_and_pack_weighing(tmp_path: Path, live_broker_factory: Factory) -> None:
    hosts: dict[str, set[str]] = {}
    for weighing in ("spread", "pack"):
        work = tmp_path / weighing
        work.mkdir()
        policy = overflow_policy(weighing, weighing=weighing)
        live = live_broker_factory(make_settings(work, zones=three_zones(), policy=policy))
        servers = [boot_settled(live, f"{weighing}-{n}") for n in range(4)]
        for server in servers:
            _placed(server, "local")
        hosts[weighing] = {_host(s) for s in servers}
    assert len(hosts["spread"]) == 4
    assert len(hosts["pack"]) == 1


# --- rules ---------------------------------------------------------------------------


def _small_local(tmp_path: Path, policy: dict[str, Any], **cloud_a: Any) -> Settings:
    """A local zone of 2 hosts x 8 GiB: the 75% mark is 12 m1.small, capacity 16."""
    zones = three_zones(local_hosts=2, cloud_a=cloud_a)
    return make_settings(tmp_path, zones=zones, policy=policy, tenants=["t-pinned", "t-other"])


def test_stay_local_tenant_ignores_thresholds_up_to_capacity(
    tmp_path: Path, live_broker_factory: Factory
) -> None:
    rule = {"name": "pinned", "action": "stay_local", "match": {"tenants": ["t-pinned"]}}
    live = live_broker_factory(_small_local(tmp_path, overflow_policy(rules=[rule])))
    for n in range(16):
        server = boot_as(live, "t-pinned", f"pinned-{n}")
        _placed(server, "local")
        assert server["federator:placement"]["matched_rules"] == ["pinned"]
    full = boot_as(live, "t-pinned", "pinned-full")
    assert full["status"] == "ERROR"
    assert full["federator:cell"] == "cell0"
    assert fault_reason(full) == "no_valid_host"
    assert "rule 'pinned' does not allow zone 'cloud-a'" in full["federator:fault"]["message"]
    # Another tenant is not pinned: it overflows.
    other = boot_as(live, "t-other", "free")
    _placed(other, "cloud-a")
    assert other["federator:placement"]["matched_rules"] == []


def test_restrict_rule_sends_a_flavor_to_one_virtual_zone(
    tmp_path: Path, live_broker_factory: Factory
) -> None:
    rule = {"name": "tiny-b", "action": "restrict", "azs": ["cloud-b"], "match": {"flavors": ["1"]}}
    live = live_broker_factory(_small_local(tmp_path, overflow_policy(rules=[rule])))
    tiny = boot_settled(live, "tiny", flavor="m1.tiny")
    _placed(tiny, "cloud-b")
    assert tiny["federator:placement"]["matched_rules"] == ["tiny-b"]
    small = boot_settled(live, "small", flavor="m1.small")
    _placed(small, "local")
    # cloud-b's quota (2) binds the restricted flavor too.
    boot_settled(live, "tiny-2", flavor="m1.tiny")
    third = boot_settled(live, "tiny-3", flavor="m1.tiny")
    assert third["federator:cell"] == "cell0"
    assert fault_reason(third) == "quota_exceeded"


def test_deny_rule_buries_with_policy_denied(tmp_path: Path, live_broker_factory: Factory) -> None:
    rule = {"name": "no-debian", "action": "deny", "match": {"images": ["debian-12"]}}
    live = live_broker_factory(_small_local(tmp_path, overflow_policy(rules=[rule])))
    denied = boot_settled(live, "deb", image="debian-12")
    assert denied["status"] == "ERROR"
    assert denied["federator:cell"] == "cell0"
    assert fault_reason(denied) == "policy_denied"
    assert "no-debian" in denied["federator:fault"]["message"]
    _placed(boot_settled(live, "cirros"), "local")
    assert zones(live)["local"]["usage"]["instances"] == 1


def test_explicit_virtual_az_needs_the_policy_switch(
    tmp_path: Path, live_broker_factory: Factory
) -> None:
    live = live_broker_factory(_small_local(tmp_path, overflow_policy("closed")))
    refused = boot_settled(live, "named", availability_zone="cloud-a")
    assert refused["federator:cell"] == "cell0"
    assert fault_reason(refused) == "policy_denied"
    assert "allow_explicit_virtual_az" in refused["federator:fault"]["message"]
    # A local zone may always be named.
    _placed(boot_settled(live, "named-local", availability_zone="local"), "local")

    write_policy(tmp_path / "policy.json", overflow_policy("open", allow_explicit_virtual_az=True))
    r = live.client.post(f"{live.url}/federator/v1/policy/reload")
    assert r.status_code == 200, r.text
    allowed = boot_settled(live, "named-again", availability_zone="cloud-a")
    _placed(allowed, "cloud-a")
    assert allowed["federator:placement"]["policy_version"] == "open"
    assert zones(live)["local"]["usage"]["instances"] == 1


# --- driver failures -----------------------------------------------------------------


def _always_overflow(rules: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """High water at 0%: every request overflows, to cloud-a first."""
    return overflow_policy("burst", quota_a=None, quota_b=None, high=0, low=0, rules=rules or [])


def test_capacity_failure_falls_through_to_the_next_zone(
    tmp_path: Path, live_broker_factory: Factory
) -> None:
    settings = _small_local(tmp_path, _always_overflow(), failure_rate=1.0, failure_kind="capacity")
    live = live_broker_factory(settings)
    for n in range(3):
        server = boot_settled(live, f"fall-{n}")
        _placed(server, "cloud-b")
    z = zones(live)
    assert z["cloud-a"]["usage"]["instances"] == 0
    assert z["cloud-a"]["usage"]["ram_mb"] == 0
    assert z["cloud-a"]["state"] == "available"
    assert z["cloud-b"]["usage"]["instances"] == 3
    assert z["local"]["usage"]["instances"] == 0


def test_permanent_failure_buries_with_the_provider_message(
    tmp_path: Path, live_broker_factory: Factory
) -> None:
    settings = _small_local(
        tmp_path, _always_overflow(), failure_rate=1.0, failure_kind="permanent"
    )
    live = live_broker_factory(settings)
    server = boot_settled(live, "doomed")
    assert server["status"] == "ERROR"
    assert server["federator:cell"] == "cell0"
    assert fault_reason(server) == "build_failed"
    assert "request rejected (simulated failure)" in server["federator:fault"]["message"]
    assert "cloud-a" in server["federator:fault"]["message"]
    z = zones(live)
    assert z["cloud-a"]["usage"]["instances"] == 0
    assert z["cloud-b"]["usage"]["instances"] == 0


def test_sim_capacity_is_never_exceeded(tmp_path: Path, live_broker_factory: Factory) -> None:
    """cloud-a holds three m1.small (one 3 GiB host) and has no quota: the sim refuses the
    fourth, the broker moves on to cloud-b, and its figures match what the sims hold."""
    zone_list = [
        sim_zone("local", "local", hosts=1, host_ram_mb=8192, host_vcpus=8),
        sim_zone("cloud-a", "virtual", expose_hosts=False, hosts=1, host_ram_mb=3 * GIB),
        sim_zone("cloud-b", "virtual", expose_hosts=False),
    ]
    live = live_broker_factory(make_settings(tmp_path, zones=zone_list, policy=_always_overflow()))
    placed = [az(boot_settled(live, f"vm-{n}")) for n in range(5)]
    assert placed == ["cloud-a"] * 3 + ["cloud-b"] * 2
    held = {
        name: sum(len(batch) for batch in live.broker.drivers[name].list_instances())
        for name in ("cloud-a", "cloud-b")
    }
    assert held == {"cloud-a": 3, "cloud-b": 2}
    z = zones(live)
    assert z["cloud-a"]["usage"]["instances"] == 3
    assert z["cloud-a"]["usage"]["ram_mb"] == 3 * GIB
    assert z["cloud-b"]["usage"]["instances"] == 2
