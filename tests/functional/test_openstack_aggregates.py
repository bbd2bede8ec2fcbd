"""``openstack aggregate ...`` and openstacksdk's aggregate calls, unchanged, against a live
broker (the clients negotiate microversion 2.64 for os-aggregates and the broker answers
in its shapes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import LiveBroker
from tests.functional.support import boot_settled
from tests.functional.test_openstack_clients import (
    live,  # noqa: F401 - the fixture
    openstack_env,
    os_json,
    os_ok,
    run_openstack,
)

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:::openstack")]


def test_openstack_aggregate_commands(live: LiveBroker, tmp_path: Path) -> None:  # noqa: F811
    env = openstack_env(live, tmp_path)

    created = os_json(env, "aggregate", "create", "--zone", "az1", "agg1")
    assert (created["name"], created["availability_zone"], created["hosts"]) == ("agg1", "az1", [])
    listed = os_json(env, "aggregate", "list", "--long")
    assert [(a["Name"], a["Availability Zone"]) for a in listed] == [
        ("local", None),
        ("agg1", "az1"),
    ]
    assert listed[0]["Hosts"] == [f"local-host-00{n}" for n in range(1, 5)]

    added = os_json(env, "aggregate", "add", "host", "agg1", "local-host-001")
    assert added["hosts"] == ["local-host-001"]
    shown = os_json(env, "aggregate", "show", "agg1")
    assert (shown["id"], shown["availability_zone"], shown["hosts"]) == (
        created["id"],
        "az1",
        ["local-host-001"],
    )

    os_ok(env, "aggregate", "set", "--property", "ssd=true", "--name", "agg2", "--zone", "az2",
          "agg1")  # fmt: skip
    shown = os_json(env, "aggregate", "show", "agg2")
    assert (shown["name"], shown["availability_zone"], shown["properties"]) == (
        "agg2",
        "az2",
        {"ssd": "true"},
    )
    zones = os_json(env, "availability", "zone", "list", "--long")
    assert {(z["Zone Name"], z["Host Name"]) for z in zones if z["Zone Name"] == "az2"} == {
        ("az2", "local-host-001")
    }
    os_ok(env, "aggregate", "unset", "--property", "ssd", "agg2")
    assert os_json(env, "aggregate", "show", "agg2")["properties"] == {}

    # A boot into the aggregate's availability zone lands on its host.
    server = os_json(
        env, "server", "create", "--image", "cirros", "--flavor", "m1.tiny",
        "--availability-zone", "az2", "--wait", "in-az2",
    )  # fmt: skip
    assert server["OS-EXT-SRV-ATTR:host"] == "local-host-001"

    # Nova's rules come back as the clients' errors, with the broker's message.
    refused = run_openstack(env, "aggregate", "remove", "host", "agg2", "local-host-001")
    assert refused.returncode != 0
    assert "runs 1 instance(s)" in refused.stderr
    refused = run_openstack(env, "aggregate", "delete", "local")
    assert refused.returncode != 0 and "still holds 4 host(s)" in refused.stderr

    os_ok(env, "server", "delete", "--wait", "in-az2")
    removed = os_json(env, "aggregate", "remove", "host", "agg2", "local-host-001")
    assert removed["hosts"] == []
    os_ok(env, "aggregate", "delete", "agg2")
    assert [a["Name"] for a in os_json(env, "aggregate", "list")] == ["local"]
    gone = run_openstack(env, "aggregate", "show", "agg2")
    assert gone.returncode != 0


def test_openstacksdk_aggregates(live: LiveBroker) -> None:  # noqa: F811
    openstack = pytest.importorskip("openstack")
    env = live.os_env()
    conn = openstack.connect(
        auth_url=env["OS_AUTH_URL"],
        username=env["OS_USERNAME"],
        password=env["OS_PASSWORD"],
        project_name=env["OS_PROJECT_NAME"],
        user_domain_name="Default",
        project_domain_name="Default",
        region_name="RegionOne",
    )
    try:
        agg = conn.compute.create_aggregate(name="sdk-agg", availability_zone="sdk-az")
        agg = conn.compute.add_host_to_aggregate(agg, "local-host-002")
        assert agg.hosts == ["local-host-002"]
        agg = conn.compute.set_aggregate_metadata(agg, {"gpu": "a100"})
        assert agg.metadata == {"availability_zone": "sdk-az", "gpu": "a100"}
        found = conn.compute.find_aggregate("sdk-agg")
        assert found is not None and found.id == agg.id
        assert "sdk-az" in {z.name for z in conn.compute.availability_zones()}
        sid = boot_settled(live, "sdk-vm", availability_zone="sdk-az")["id"]
        assert live.server(sid)["OS-EXT-SRV-ATTR:host"] == "local-host-002"
        with pytest.raises(openstack.exceptions.NotFoundException):
            conn.compute.remove_host_from_aggregate(agg, "local-host-003")
        with pytest.raises(openstack.exceptions.ConflictException):
            conn.compute.delete_aggregate(agg)
    finally:
        conn.close()
