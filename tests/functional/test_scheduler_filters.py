"""The aggregate filters end to end: aggregates made through os-aggregates, flavor extra
specs and image properties from the configuration, boots through the API, and explain
naming the filter that turned each host down."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from federator.broker import Broker
from federator.config import Settings
from federator.exception import ConfigError
from tests.conftest import LiveBroker, make_settings, sim_zone
from tests.functional.support import boot_as, boot_settled, fault_reason

Factory = Callable[..., LiveBroker]
HOSTS = [f"local-host-00{n}" for n in range(1, 5)]
POLICY = {"version": "filters-test", "zones": {}}  # one local zone, nothing to overflow to
SSD_SPEC = {"aggregate_instance_extra_specs:ssd": "true"}
FLAVORS = [
    {"id": "2", "name": "m1.small", "vcpus": 1, "ram_mb": 1024, "disk_gb": 10},
    {"id": "20", "name": "ssd.medium", "vcpus": 1, "ram_mb": 2048, "disk_gb": 10,
     "extra_specs": SSD_SPEC},
]  # fmt: skip
IMAGES = [
    {"id": "5a2b4a3c-8c1e-4c39-9e0b-6a1f0c1d2e01", "name": "cirros"},
    {"id": "img-ubuntu", "name": "ubuntu", "properties": {"os_distro": "ubuntu"}},
    {"id": "img-windows", "name": "windows", "properties": {"os_distro": "windows"}},
]


def settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Four sim hosts of 4 GiB and 4 vCPUs in one local zone, all in aggregate ``local``."""
    return make_settings(
        tmp_path,
        zones=[sim_zone("local", "local", hosts=4, host_ram_mb=4096, host_vcpus=4)],
        policy=POLICY,
        flavors=FLAVORS,
        images=IMAGES,
        **overrides,
    )


@pytest.fixture
def live(tmp_path: Path, live_broker_factory: Factory) -> LiveBroker:
    return live_broker_factory(settings(tmp_path, tenants=["project-c"]))


def aggregate(live: LiveBroker, name: str, hosts: list[str], **metadata: str) -> int:
    """Create an aggregate through the API, add ``hosts`` and set ``metadata``."""
    r = live.client.post(f"{live.compute}/os-aggregates", json={"aggregate": {"name": name}})
    assert r.status_code == 200, r.text
    agg_id: int = r.json()["aggregate"]["id"]
    action = f"{live.compute}/os-aggregates/{agg_id}/action"
    for host in hosts:
        r = live.client.post(action, json={"add_host": {"host": host}})
        assert r.status_code == 200, r.text
    r = live.client.post(action, json={"set_metadata": {"metadata": metadata}})
    assert r.status_code == 200, r.text
    assert r.json()["aggregate"]["metadata"] == metadata
    return agg_id


def explain_hosts(live: LiveBroker, flavor: str, **extra: Any) -> dict[str, dict[str, Any]]:
    r = live.client.post(
        f"{live.url}/federator/v1/policy/explain",
        json={"flavor": flavor, "image": extra.pop("image", "cirros"), **extra},
    )
    assert r.status_code == 200, r.text
    (local,) = [z for z in r.json()["explain"]["zones"] if z["zone"] == "local"]
    return {h["host"]: h for h in local["hosts"]}


def host_of(server: dict[str, Any]) -> str:
    assert server["status"] == "ACTIVE", server.get("federator:fault")
    host: str = server["OS-EXT-SRV-ATTR:host"]
    return host


def test_a_flavor_extra_spec_keeps_boots_on_matching_hosts(live: LiveBroker) -> None:
    r = live.client.get(f"{live.compute}/flavors/20/os-extra_specs")
    assert (r.status_code, r.json()) == (200, {"extra_specs": SSD_SPEC})
    r = live.client.get(f"{live.compute}/flavors/20/os-extra_specs/nope")
    assert r.status_code == 404, r.text

    aggregate(live, "fast", HOSTS[:2], ssd="true")
    aggregate(live, "slow", HOSTS[2:3], ssd="false")  # local-host-004 says nothing of ssd

    hosts = explain_hosts(live, "ssd.medium")
    assert {h for h, v in hosts.items() if v["passed"]} == set(HOSTS[:2])
    mismatch = "flavor extra spec aggregate_instance_extra_specs:ssd=true"
    assert hosts[HOSTS[2]]["rejected_by"] == "AggregateInstanceExtraSpecsFilter"
    assert hosts[HOSTS[2]]["detail"] == f"aggregate metadata ssd=false does not match {mismatch}"
    assert hosts[HOSTS[3]]["rejected_by"] == "AggregateInstanceExtraSpecsFilter"
    assert (
        hosts[HOSTS[3]]["detail"] == f"aggregate metadata has no key ssd ({mismatch} requires it)"
    )

    # 2 GiB each on 4 GiB hosts: the two ssd hosts take four, never a non-ssd host.
    placed = [host_of(boot_settled(live, f"ssd-{n}", flavorRef="ssd.medium")) for n in range(4)]
    assert sorted(placed) == sorted(HOSTS[:2] * 2)

    # The ssd hosts are full: the next one is buried in cell0, saying which filters refused.
    buried = boot_settled(live, "ssd-overflow", flavorRef="ssd.medium")
    assert buried["status"] == "ERROR"
    assert buried["federator:cell"] == "cell0"
    assert fault_reason(buried) == "no_valid_host"
    message = buried["federator:fault"]["message"]
    assert "AggregateInstanceExtraSpecsFilter removed 2 host(s)" in message, message
    assert "RamFilter 2" in message, message

    # Explain now names both reasons; the flavor without extra specs still fits elsewhere.
    hosts = explain_hosts(live, "ssd.medium")
    assert [hosts[h]["rejected_by"] for h in HOSTS] == [
        "RamFilter",
        "RamFilter",
        "AggregateInstanceExtraSpecsFilter",
        "AggregateInstanceExtraSpecsFilter",
    ]
    assert hosts[HOSTS[0]]["detail"].startswith("free ram 0 MB < requested 2048 MB")
    assert host_of(boot_settled(live, "plain", flavorRef="m1.small")) in HOSTS[2:]


def test_tenant_isolated_hosts_take_only_their_projects(live: LiveBroker) -> None:
    aggregate(live, "team-a", HOSTS[:1], filter_tenant_id="project-a,project-c")

    # Every host is empty, so the tie goes to the first host; project-b may not use it.
    hosts = explain_hosts(live, "m1.small", project_id="project-b")
    assert hosts[HOSTS[0]]["rejected_by"] == "AggregateMultiTenancyIsolation"
    assert hosts[HOSTS[0]]["detail"] == (
        "aggregate metadata filter_tenant_id=project-a,project-c does not include project project-b"
    )
    assert all(hosts[h]["passed"] for h in HOSTS[1:])
    assert explain_hosts(live, "m1.small", project_id="project-a")[HOSTS[0]]["passed"]

    assert host_of(boot_as(live, "project-b", "b1")) == HOSTS[1]
    assert host_of(boot_as(live, "project-a", "a1")) == HOSTS[0]  # admitted: emptiest first
    assert host_of(boot_as(live, "project-c", "c1")) in HOSTS


def test_image_properties_isolate_aggregates(live: LiveBroker) -> None:
    aggregate(live, "windows", HOSTS[:2], os_distro="windows")

    hosts = explain_hosts(live, "m1.small", image="ubuntu")
    for h in HOSTS[:2]:
        assert hosts[h]["rejected_by"] == "AggregateImagePropertiesIsolation"
        assert hosts[h]["detail"] == (
            "aggregate metadata os_distro=windows does not match image property os_distro=ubuntu"
        )
    assert all(hosts[h]["passed"] for h in HOSTS[2:])

    ubuntu = [host_of(boot_settled(live, f"u{n}", imageRef="ubuntu")) for n in range(3)]
    assert set(ubuntu) <= set(HOSTS[2:])
    # An image with the aggregate's value, or with no os_distro at all, goes anywhere.
    assert host_of(boot_settled(live, "w", imageRef="windows")) in HOSTS[:2]
    assert explain_hosts(live, "m1.small", image="cirros")[HOSTS[0]]["passed"]


def test_the_configured_filters_run_and_unknown_ones_stop_the_start(
    tmp_path: Path, live_broker_factory: Factory
) -> None:
    (tmp_path / "bad").mkdir()
    (tmp_path / "ok").mkdir()
    with pytest.raises(ConfigError) as exc:
        Broker.open(settings(tmp_path / "bad", scheduler={"filters": ["enabled", "ssd_only"]}))
    assert "filter 'ssd_only', which is not installed (installed: affinity," in exc.value.message

    # Without aggregate_extra_specs an ssd flavor may land anywhere.
    live = live_broker_factory(
        settings(
            tmp_path / "ok",
            scheduler={"filters": ["enabled", "ram", "vcpu", "disk"], "max_instances_per_host": 9},
        )
    )
    aggregate(live, "fast", HOSTS[3:], ssd="true")
    hosts = explain_hosts(live, "ssd.medium")
    assert all(h["passed"] for h in hosts.values())
    assert host_of(boot_settled(live, "anywhere", flavorRef="ssd.medium")) == HOSTS[0]


def test_a_drain_keeps_an_instance_on_hosts_its_flavor_may_use(live: LiveBroker) -> None:
    aggregate(live, "fast", [HOSTS[0], HOSTS[2]], ssd="true")
    server = boot_settled(live, "db", flavorRef="ssd.medium")
    assert host_of(server) == HOSTS[0]

    # Every other host is empty: without the extra spec the move would go to 002.
    r = live.client.post(f"{live.url}/federator/v1/hosts/local/{HOSTS[0]}/drain", json={})
    assert r.status_code == 200, r.text
    (move,) = r.json()["moves"]
    assert (move["outcome"], move["from"], move["to"]) == ("moved", HOSTS[0], HOSTS[2])
    assert host_of(live.server(server["id"])) == HOSTS[2]
