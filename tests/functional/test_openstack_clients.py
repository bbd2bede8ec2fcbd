"""The real OpenStack clients, unchanged, against a live broker: the ``openstack`` command
(python-openstackclient, one process per command, about a second each) and openstacksdk.

They authenticate against the broker's /identity, find compute and image in its catalog,
and resolve names the way they do against OpenStack (a 404 on ``GET /<collection>/<name>``,
then a listing). Outputs are checked, not just exit codes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from federator.config import Settings
from tests.conftest import LiveBroker, make_settings, require

Factory = Callable[[Settings], LiveBroker]
OPENSTACK = Path(sys.executable).parent / "openstack"
CIRROS = "5a2b4a3c-8c1e-4c39-9e0b-6a1f0c1d2e01"
UBUNTU = "5a2b4a3c-8c1e-4c39-9e0b-6a1f0c1d2e02"

# The SDK warns about its own deprecations; they are not the broker's to fix.
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:::openstack")]


def openstack_env(live: LiveBroker, home: Path, **who: str) -> dict[str, str]:
    """A clean environment: no OS_* of the caller's, no clouds.yaml, the broker's OS_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env["HOME"] = str(home)
    return {**env, **live.os_env(**who)}


def run_openstack(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    require(OPENSTACK.exists(), "python-openstackclient (the test extra)")
    return subprocess.run(
        [str(OPENSTACK), *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def os_json(env: dict[str, str], *args: str) -> Any:
    done = run_openstack(env, *args, "-f", "json")
    assert done.returncode == 0, f"openstack {' '.join(args)}:\n{done.stderr}"
    return json.loads(done.stdout)


def os_ok(env: dict[str, str], *args: str) -> None:
    done = run_openstack(env, *args)
    assert done.returncode == 0, f"openstack {' '.join(args)}:\n{done.stderr}"


@pytest.fixture
def live(tmp_path: Path, live_broker_factory: Factory) -> LiveBroker:
    return live_broker_factory(make_settings(tmp_path))


def test_openstack_cli_runs_the_server_lifecycle(live: LiveBroker, tmp_path: Path) -> None:
    env = openstack_env(live, tmp_path)

    flavors = os_json(env, "flavor", "list")
    assert {(f["ID"], f["Name"]) for f in flavors} == {
        ("1", "m1.tiny"),
        ("2", "m1.small"),
        ("3", "m1.medium"),
        ("4", "m1.large"),
    }
    small = os_json(env, "flavor", "show", "m1.small")
    assert (small["id"], small["vcpus"], small["ram"], small["disk"]) == ("2", 1, 1024, 10)

    zones = os_json(env, "availability", "zone", "list", "--long")
    assert {z["Zone Name"] for z in zones} == {"local", "aws-standin", "sim-cloud-b"}
    # The command lists the compute zones (a row per host) and the volume zones (no host).
    hostless = sorted(z["Zone Name"] for z in zones if not z["Host Name"])
    assert hostless == ["aws-standin", "local", "sim-cloud-b"]
    local_hosts = {z["Host Name"] for z in zones if z["Zone Name"] == "local" and z["Host Name"]}
    assert local_hosts == {f"local-host-00{n}" for n in range(1, 5)}

    # --image by name (through the image service), --wait until ACTIVE.
    web = os_json(
        env,
        "server", "create", "web",
        "--image", "cirros", "--flavor", "m1.small", "--availability-zone", "local",
        "--property", "tier=web", "--wait",
    )  # fmt: skip
    assert web["status"] == "ACTIVE"
    assert web["OS-EXT-AZ:availability_zone"] == "local"
    assert web["OS-EXT-SRV-ATTR:host"].startswith("local-host-")
    assert web["image"] == f"cirros ({CIRROS})"
    # The CLI negotiates 2.64 for servers: from 2.47 the flavor is embedded, not a link
    # ("m1.small (2)"), and printed as openstacksdk parsed it.
    assert web["flavor"]["original_name"] == "m1.small"
    assert (web["flavor"]["vcpus"], web["flavor"]["ram"], web["flavor"]["disk"]) == (1, 1024, 10)
    assert web["properties"] == {"tier": "web"}
    assert web["project_id"] == "admin"

    # --image by id, --flavor by id, two at once.
    first = os_json(
        env,
        "server", "create", "batch", "--image", UBUNTU, "--flavor", "1", "--min", "2", "--max", "2",
    )  # fmt: skip
    assert first["name"] == "batch-1"
    live.wait_settled()

    listed = os_json(env, "server", "list", "--long")
    assert sorted(s["Name"] for s in listed) == ["batch-1", "batch-2", "web"]
    by_name = {s["Name"]: s for s in listed}
    assert by_name["web"]["Image Name"] == "cirros"
    # From 2.47 the column is "Flavor", filled from the embedded flavor's original_name.
    assert by_name["web"]["Flavor"] == "m1.small"
    assert by_name["web"]["Availability Zone"] == "local"
    assert by_name["batch-2"]["Image ID"] == UBUNTU
    assert by_name["batch-2"]["Flavor"] == "m1.tiny"
    assert {s["Status"] for s in listed} == {"ACTIVE"}

    named = os_json(env, "server", "list", "--name", "^batch", "--status", "ACTIVE")
    assert sorted(s["Name"] for s in named) == ["batch-1", "batch-2"]
    # Newest first, one page at a time.
    page = os_json(env, "server", "list", "--limit", "1")
    assert len(page) == 1
    rest = os_json(env, "server", "list", "--marker", page[0]["ID"], "--limit", "5")
    assert {s["ID"] for s in rest} | {page[0]["ID"]} == {s["ID"] for s in listed}
    assert page[0]["ID"] not in {s["ID"] for s in rest}

    shown = os_json(env, "server", "show", "web")
    assert (shown["id"], shown["status"]) == (web["id"], "ACTIVE")
    assert shown["addresses"]

    os_ok(env, "server", "stop", "web")
    live.wait_settled()
    assert live.server(web["id"])["status"] == "SHUTOFF"
    os_ok(env, "server", "start", "web")
    os_ok(env, "server", "reboot", "batch-1")
    live.wait_settled()
    assert live.server(web["id"])["status"] == "ACTIVE"
    assert live.server(by_name["batch-1"]["ID"])["status"] == "ACTIVE"

    os_ok(env, "server", "delete", "--wait", "batch-2")
    gone = live.client.get(f"{live.compute}/servers/{by_name['batch-2']['ID']}")
    assert gone.status_code == 404


def test_openstacksdk_drives_the_broker(live: LiveBroker) -> None:
    conn = live.sdk()
    try:
        flavor = conn.compute.find_flavor("m1.small")
        assert (flavor.id, flavor.vcpus, flavor.ram) == ("2", 1, 1024)
        image = conn.image.find_image("cirros")
        assert image.id == CIRROS
        zones = {z.name for z in conn.compute.availability_zones()}
        assert zones == {"local", "aws-standin", "sim-cloud-b"}

        server = conn.compute.create_server(
            name="sdk-vm",
            flavor_id=flavor.id,
            image_id=image.id,
            networks="none",
            availability_zone="local",
            metadata={"owner": "sdk"},
        )
        server = conn.compute.wait_for_server(server, interval=0.1, wait=30)
        assert (server.status, server.availability_zone) == ("ACTIVE", "local")
        assert server.metadata == {"owner": "sdk"}
        assert [s.id for s in conn.compute.servers()] == [server.id]
        # The cloud layer needs addresses on every server.
        assert [s.name for s in conn.list_servers()] == ["sdk-vm"]

        conn.compute.stop_server(server)
        conn.compute.wait_for_server(server, status="SHUTOFF", interval=0.1, wait=30)
        conn.compute.start_server(server)
        conn.compute.wait_for_server(server, status="ACTIVE", interval=0.1, wait=30)
        conn.compute.reboot_server(server, "HARD")
        live.wait_settled()
        assert conn.compute.get_server(server.id).status == "ACTIVE"

        conn.compute.delete_server(server)
        conn.compute.wait_for_delete(server, interval=0.1, wait=30)
        assert conn.compute.find_server("sdk-vm") is None
    finally:
        conn.close()


def test_lookups_answer_as_the_clients_expect(live: LiveBroker) -> None:
    """Names 404 on ``GET /<collection>/<name>``, then the listings find them."""
    http, root = live.client, live.url
    versions = http.get(f"{root}/image")
    assert versions.status_code == 300
    assert versions.json()["versions"][0]["links"][0]["href"] == f"{root}/image/v2/"
    assert http.get(f"{root}/image/v2/images/cirros").status_code == 404
    image = http.get(f"{root}/image/v2/images/{CIRROS}").json()
    assert (image["id"], image["name"], image["status"], image["visibility"]) == (
        CIRROS,
        "cirros",
        "active",
        "public",
    )
    named = http.get(f"{root}/image/v2/images", params={"name": "cirros"}).json()["images"]
    assert [i["id"] for i in named] == [CIRROS]
    both = http.get(f"{root}/image/v2/images", params={"id": f"in:{CIRROS},{UBUNTU}"})
    assert sorted(i["name"] for i in both.json()["images"]) == ["cirros", "ubuntu-24.04"]
    assert http.get(f"{root}/image/v2/images", params={"name": "nope"}).json()["images"] == []

    assert http.get(f"{live.compute}/flavors/m1.small").status_code == 404
    specs = http.get(f"{live.compute}/flavors/2/os-extra_specs")
    assert specs.json() == {"extra_specs": {}}
    assert http.get(f"{live.compute}/flavors/9/os-extra_specs").status_code == 404

    sid = live.boot("web-1")
    live.boot("db-1")
    live.wait_settled()
    assert http.get(f"{live.compute}/servers/web-1").status_code == 404
    found = http.get(
        f"{live.compute}/servers/detail", params={"name": "^web-[0-9]$", "deleted": "False"}
    )
    assert [s["id"] for s in found.json()["servers"]] == [sid]
    # At microversion 2.1 (no version header) image and flavor are references by id.
    server = live.server(sid)
    assert server["image"]["id"] == CIRROS
    assert server["flavor"]["id"] == "2"
