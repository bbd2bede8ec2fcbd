"""Server groups through the real OpenStack clients, unchanged: ``openstack server group``
(which negotiates microversion 2.64 by itself), ``openstack server create --hint group=``
and openstacksdk. Outputs are checked on ``-f json``, and where the servers landed is read
back from the broker's API as admin."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from federator.config import Settings
from tests.conftest import LiveBroker, make_settings
from tests.functional.test_openstack_clients import openstack_env, os_json, run_openstack

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:::openstack")]

HOST = "OS-EXT-SRV-ATTR:host"
AZ = "OS-EXT-AZ:availability_zone"


@pytest.fixture
def live(tmp_path: Path, live_broker_factory: Callable[[Settings], LiveBroker]) -> LiveBroker:
    return live_broker_factory(make_settings(tmp_path))


def api_group(live: LiveBroker, gid: str) -> dict[str, Any]:
    r = live.client.get(
        f"{live.compute}/os-server-groups/{gid}",
        headers={"OpenStack-API-Version": "compute 2.64"},
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()["server_group"]
    return body


def boot(env: dict[str, str], name: str, group_id: str) -> dict[str, Any]:
    """``openstack server create ... --hint group=GROUP --wait NAME``."""
    args = ("server", "create", "--flavor", "m1.small", "--image", "cirros")
    server: dict[str, Any] = os_json(env, *args, "--hint", f"group={group_id}", "--wait", name)
    return server


def test_openstack_cli_server_groups(live: LiveBroker, tmp_path: Path) -> None:
    env = openstack_env(live, tmp_path)
    create = ("server", "group", "create")

    anti = os_json(env, *create, "--policy", "anti-affinity", "spread")
    assert (anti["name"], anti["policy"], anti["rules"], anti["members"]) == (
        "spread",
        "anti-affinity",
        {},
        [],
    )
    assert anti["project_id"] == "admin"
    together = os_json(env, *create, "--policy", "affinity", "together")
    assert together["policy"] == "affinity"
    soft = os_json(env, *create, "--policy", "soft-anti-affinity", "soft")
    assert soft["policy"] == "soft-anti-affinity"
    # The CLI sends rule values as text; the broker takes "2" as Nova does.
    pairs = os_json(
        env, *create, "--policy", "anti-affinity", "--rule", "max_server_per_host=2", "pairs"
    )
    assert pairs["rules"] == {"max_server_per_host": 2}
    # The broker's own rule key goes through the CLI unchanged.
    zonal = os_json(env, *create, "--policy", "anti-affinity", "--rule", "scope=zone", "zonal")
    assert (zonal["policy"], zonal["rules"]) == ("anti-affinity", {"scope": "zone"})
    assert api_group(live, zonal["id"])["rules"] == {"scope": "zone"}

    listed = os_json(env, "server", "group", "list")
    assert [(g["Name"], g["Policy"]) for g in listed] == [
        ("spread", "anti-affinity"),
        ("together", "affinity"),
        ("soft", "soft-anti-affinity"),
        ("pairs", "anti-affinity"),
        ("zonal", "anti-affinity"),
    ]
    assert {g["ID"] for g in listed} == {g["id"] for g in (anti, together, soft, pairs, zonal)}

    # Three members of the anti-affinity group: three distinct local hosts.
    booted = [boot(env, f"spread-{n}", anti["id"]) for n in (1, 2, 3)]
    assert {s["status"] for s in booted} == {"ACTIVE"}
    ids = [s["id"] for s in booted]
    hosts = [live.server(sid)[HOST] for sid in ids]
    assert [live.server(sid)[AZ] for sid in ids] == ["local"] * 3
    assert len(set(hosts)) == 3 and all(h.startswith("local-host-") for h in hosts)

    shown = os_json(env, "server", "group", "show", "spread")  # by name
    assert shown["id"] == anti["id"]
    assert sorted(shown["members"]) == sorted(ids)
    places = {m["id"]: m["host"] for m in api_group(live, anti["id"])["federator:members"]}
    assert places == dict(zip(ids, hosts, strict=True))

    # Zone scope: the second member goes to another availability zone.
    by_zone = [boot(env, f"zonal-{n}", zonal["id"]) for n in (1, 2)]
    assert [live.server(s["id"])[AZ] for s in by_zone] == ["local", "aws-standin"]

    for name in ("together", "soft"):
        done = run_openstack(env, "server", "group", "delete", name)
        assert done.returncode == 0, done.stderr
    left = os_json(env, "server", "group", "list")
    assert [g["Name"] for g in left] == ["spread", "pairs", "zonal"]
    gone = run_openstack(env, "server", "group", "show", "together")
    assert gone.returncode == 1
    assert "No ServerGroup found for together" in gone.stderr
    # Deleting a group leaves its members running.
    assert run_openstack(env, "server", "group", "delete", anti["id"]).returncode == 0
    assert {live.server(sid)["status"] for sid in ids} == {"ACTIVE"}


def test_openstacksdk_server_groups(live: LiveBroker) -> None:
    conn = live.sdk()
    try:
        group = conn.compute.create_server_group(name="sdk-spread", policy="anti-affinity")
        assert (group.name, group.policy, group.member_ids) == ("sdk-spread", "anti-affinity", [])
        ruled = conn.compute.create_server_group(
            name="sdk-pairs", policy="anti-affinity", rules={"max_server_per_host": 2}
        )
        assert ruled.rules == {"max_server_per_host": 2}
        assert [g.name for g in conn.compute.server_groups()] == ["sdk-spread", "sdk-pairs"]

        image = conn.image.find_image("cirros")
        flavor = conn.compute.find_flavor("m1.small")
        servers = [
            conn.compute.create_server(
                name=f"sdk-{n}",
                flavor_id=flavor.id,
                image_id=image.id,
                networks="none",
                scheduler_hints={"group": group.id},
            )
            for n in (1, 2)
        ]
        for server in servers:
            conn.compute.wait_for_server(server, interval=0.1, wait=30)
        fetched = conn.compute.get_server_group(group.id)
        assert (fetched.id, fetched.name, fetched.policy) == (
            group.id,
            "sdk-spread",
            "anti-affinity",
        )
        assert sorted(fetched.member_ids) == sorted(s.id for s in servers)
        hosts = {live.server(s.id)[HOST] for s in servers}
        assert len(hosts) == 2

        conn.compute.delete_server_group(group)
        with pytest.raises(pytest.importorskip("openstack.exceptions").NotFoundException):
            conn.compute.get_server_group(group.id)
        assert [g.name for g in conn.compute.server_groups()] == ["sdk-pairs"]
        assert {live.server(s.id)["status"] for s in servers} == {"ACTIVE"}
    finally:
        conn.close()
