"""The ``openstack`` command, unchanged, drives the broker's volumes in every kind of zone.

The same round trip runs in the local zone (sim hosts), in the AWS zone of the embedded
default (EBS on the in-process moto stand-in, read back through its EC2 API) and in a
remote OpenStack zone (a second broker, read back through its own Cinder API): create a
1 GB volume, attach it to a server of its zone (``in-use``, listed by the server), fail to
delete it while attached (400), detach and delete it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from federator.config import Settings, _default_flavors, default_policy_path
from tests.conftest import LiveBroker, make_settings, sim_zone, start_live_broker
from tests.functional.test_openstack_clients import openstack_env, os_json, os_ok, run_openstack

Factory = Callable[..., LiveBroker]

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:::openstack")]


def explicit_policy(**zones: Any) -> dict[str, Any]:
    """The default policy, letting requests name virtual zones."""
    doc: dict[str, Any] = json.loads(default_policy_path().read_text(encoding="utf-8"))
    doc.pop("$schema", None)
    doc["allow_explicit_virtual_az"] = True
    doc["zones"].update(zones)
    return doc


def round_trip(
    live: LiveBroker, home: Path, zone: str, check: Callable[[str, str | None], None]
) -> None:
    """Create, attach, refuse delete, detach, delete in ``zone``; ``check(volume_id,
    server_id)`` reads the zone's own view after each step (server None: not attached)."""
    env = openstack_env(live, home)
    placement = [] if zone == "local" else ["--availability-zone", zone]
    vol = os_json(env, "volume", "create", "--size", "1", *placement, "data")
    assert (vol["size"], vol["name"]) == (1, "data")
    live.wait_settled()
    shown = os_json(env, "volume", "show", "data")
    assert (shown["status"], shown["availability_zone"]) == ("available", zone), shown
    check(vol["id"], None)

    server = os_json(
        env, "server", "create", "--flavor", "m1.small", "--image", "cirros",
        "--availability-zone", zone, "--wait", "app",
    )  # fmt: skip
    assert server["OS-EXT-AZ:availability_zone"] == zone
    os_ok(env, "server", "add", "volume", "app", "data")
    live.wait_settled()
    shown = os_json(env, "volume", "show", "data")
    assert shown["status"] == "in-use"
    assert [a["server_id"] for a in shown["attachments"]] == [server["id"]]
    listed = os_json(env, "server", "volume", "list", "app")
    assert [(v["Volume ID"], v["Server ID"]) for v in listed] == [(vol["id"], server["id"])]
    assert listed[0]["Device"].startswith("/dev/")
    (row,) = os_json(env, "volume", "list")
    assert row["Status"] == "in-use"
    assert [a["server_id"] for a in row["Attached to"]] == [server["id"]]
    check(vol["id"], server["id"])

    refused = run_openstack(env, "volume", "delete", "data")
    assert refused.returncode != 0
    assert "400" in refused.stderr and "in-use" in refused.stderr, refused.stderr
    assert os_json(env, "volume", "show", "data")["status"] == "in-use"

    os_ok(env, "server", "remove", "volume", "app", "data")
    live.wait_settled()
    assert os_json(env, "volume", "show", "data")["status"] == "available"
    assert os_json(env, "server", "volume", "list", "app") == []
    check(vol["id"], None)

    os_ok(env, "volume", "set", "--name", "renamed", "--description", "kept", "data")
    assert os_json(env, "volume", "show", "renamed")["description"] == "kept"
    os_ok(env, "volume", "delete", "renamed")
    live.wait_settled()
    assert os_json(env, "volume", "list") == []
    gone = run_openstack(env, "volume", "show", vol["id"])
    assert gone.returncode != 0 and f"No Volume found for {vol['id']}" in gone.stderr


# --- local ------------------------------------------------------------------------------


def test_round_trip_in_the_local_zone(tmp_path: Path, live_broker_factory: Factory) -> None:
    live = live_broker_factory(make_settings(tmp_path))
    driver = live.broker.drivers["local"]
    storage = driver.block_storage()
    assert storage is not None

    def check(volume: str, server: str | None) -> None:
        remote = storage.get_volume(volume)
        assert [a.server_uuid for a in remote.attachments] == ([server] if server else [])

    round_trip(live, tmp_path, "local", check)


# --- AWS (EBS on the embedded default's moto stand-in) -----------------------------------


@pytest.fixture
def embedded(
    tmp_path: Path, live_broker_factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> LiveBroker:
    monkeypatch.delenv("FEDERATOR_CONFIG", raising=False)
    return live_broker_factory(make_settings(tmp_path, embedded=True, policy=explicit_policy()))


def ebs(endpoint: str) -> Any:
    return boto3.session.Session(
        aws_access_key_id="any", aws_secret_access_key="any", region_name="us-east-1"
    ).client("ec2", endpoint_url=endpoint)


def test_round_trip_in_the_aws_zone(embedded: LiveBroker, tmp_path: Path) -> None:
    zone = embedded.client.get(f"{embedded.url}/federator/v1/zones/aws-standin")
    assert zone.status_code == 200, zone.text
    client = ebs(zone.json()["zone"]["stand_in"]["endpoint"])

    def check(volume: str, server: str | None) -> None:
        found = client.describe_volumes(
            Filters=[{"Name": "tag:federator:volume-uuid", "Values": [volume]}]
        )["Volumes"]
        assert len(found) == 1, found
        assert found[0]["Size"] == 1
        attached = [a["InstanceId"] for a in found[0].get("Attachments", [])]
        if server is None:
            assert attached == []
            return
        instances = client.describe_instances(
            Filters=[{"Name": "tag:federator:instance-uuid", "Values": [server]}]
        )["Reservations"]
        (instance,) = [i for r in instances for i in r["Instances"]]
        assert attached == [instance["InstanceId"]]
        assert found[0]["AvailabilityZone"] == instance["Placement"]["AvailabilityZone"]

    try:
        round_trip(embedded, tmp_path, "aws-standin", check)
    finally:
        client.close()


# --- a remote OpenStack (a second broker) ------------------------------------------------


@pytest.fixture
def parent_and_child(
    tmp_path: Path, live_broker_factory: Factory
) -> Iterator[tuple[LiveBroker, LiveBroker]]:
    (tmp_path / "child").mkdir()
    (tmp_path / "parent").mkdir()
    child_settings = make_settings(
        tmp_path / "child",
        zones=[sim_zone("local", "local", hosts=2, volume_pool_gb=100, volume_shared=True)],
        policy={"version": "child-1", "zones": {}},
        flavors=[f.model_dump() for f in _default_flavors()],
    )
    child, stop = start_live_broker(child_settings)
    options = {
        "auth": {
            "auth_url": f"{child.url}/identity",
            "username": "admin",
            "password": child.admin_password,
            "project_name": "admin",
        },
        "wait_timeout": 30,
        "poll_interval": 0.02,
    }
    settings: Settings = make_settings(
        tmp_path / "parent",
        zones=[
            sim_zone("local", "local", hosts=2),
            {"name": "remote", "driver": "openstack", "kind": "virtual", "options": options},
        ],
        policy={"version": "p-1", "allow_explicit_virtual_az": True, "zones": {}},
    )
    try:
        yield live_broker_factory(settings), child
    finally:
        stop()


def test_round_trip_in_a_remote_openstack_zone(
    parent_and_child: tuple[LiveBroker, LiveBroker], tmp_path: Path
) -> None:
    parent, child = parent_and_child
    cinder = f"{child.url}/volume/v3/admin"

    def check(volume: str, server: str | None) -> None:
        listed = child.client.get(f"{cinder}/volumes/detail")
        assert listed.status_code == 200, listed.text
        mine = [v for v in listed.json()["volumes"] if volume in json.dumps(v["metadata"])]
        assert len(mine) == 1, listed.json()
        attached = [a["server_id"] for a in mine[0]["attachments"]]
        if server is None:
            assert attached == []
            return
        servers = child.client.get(f"{child.compute}/servers/detail").json()["servers"]
        remote = [s["id"] for s in servers if server in json.dumps(s["metadata"])]
        assert attached == remote

    round_trip(parent, tmp_path, "remote", check)


def test_cross_az_attach_is_refused_in_a_remote_openstack_zone(
    parent_and_child: tuple[LiveBroker, LiveBroker], tmp_path: Path
) -> None:
    parent, child = parent_and_child
    env = openstack_env(parent, tmp_path)
    remote = os_json(env, "volume", "create", "--size", "1", "--availability-zone", "remote", "r")
    local = os_json(env, "volume", "create", "--size", "1", "l")
    parent.wait_settled()
    assert os_json(env, "volume", "show", "r")["availability_zone"] == "remote"
    assert os_json(env, "volume", "show", "l")["availability_zone"] == "local"
    for name, zone in (("here", "local"), ("there", "remote")):
        os_ok(env, "server", "create", "--flavor", "m1.small", "--image", "cirros",
              "--availability-zone", zone, "--wait", name)  # fmt: skip
    for server, volume in (("here", "r"), ("there", "l")):
        refused = run_openstack(env, "server", "add", "volume", server, volume)
        assert refused.returncode != 0
        assert "'local'" in refused.stderr and "'remote'" in refused.stderr, refused.stderr
    parent.wait_settled()
    for vid in (remote["id"], local["id"]):
        assert os_json(env, "volume", "show", vid)["attachments"] == []
    listed = child.client.get(f"{child.url}/volume/v3/admin/volumes/detail").json()["volumes"]
    assert [(v["status"], v["attachments"]) for v in listed] == [("available", [])]
