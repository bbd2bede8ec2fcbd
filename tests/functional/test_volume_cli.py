"""``federator volume``, end to end against a live broker whose one local sim zone holds
volumes in a shared zone pool: outputs and errors, not just exit codes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from drivers.sim.blockstorage import SimBlockStorage
from federator.cli.client import BLOCK_STORAGE, Client, ClientError, Credentials
from federator.cli.main import app
from federator.config import Settings
from tests.conftest import ADMIN, PASSWORD, LiveBroker, make_settings, member_of, sim_zone
from tests.functional.test_cli import cli, field, ok, refused, row, runner

ZONE = "local"


@pytest.fixture
def broker(tmp_path: Path, live_broker_factory: Callable[[Settings], LiveBroker]) -> LiveBroker:
    """Two local sim hosts; volumes in one shared pool, so any server can take any volume;
    at most 4 volumes a project, pages of 2."""
    settings = make_settings(
        tmp_path,
        zones=[sim_zone(ZONE, "local", hosts=2, volume_pools="zone")],
        policy={"version": "t1", "zones": {}},
        volumes={"project_volumes": 4},
        api={"default_limit": 2},
    )
    return live_broker_factory(settings)


def as_json(live: LiveBroker, *args: str) -> Any:
    return json.loads(ok(live, *args, "--json"))


def volumes_url(live: LiveBroker, project: str = ADMIN) -> str:
    return f"{live.url}/volume/v3/{project}/volumes"


def api_volume(live: LiveBroker, vid: str) -> dict[str, Any]:
    r = live.client.get(f"{volumes_url(live)}/{vid}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()["volume"]
    return body


def make_volume(live: LiveBroker, name: str, *more: str) -> dict[str, Any]:
    """``volume create NAME --size 1 --wait --json`` (exit status 0)."""
    made = as_json(live, "volume", "create", name, "--size", "1", *more, "--wait")
    volume: dict[str, Any] = made["volume"]
    return volume


def boot(live: LiveBroker, name: str) -> dict[str, Any]:
    args = ("server", "create", name, "--flavor", "m1.small", "--image", "cirros", "--wait")
    [server] = as_json(live, *args)
    assert server["status"] == "ACTIVE"
    found: dict[str, Any] = server
    return found


def test_lifecycle_create_attach_detach_delete(broker: LiveBroker) -> None:
    live = broker
    out = ok(
        live, "volume", "create", "data", "--size", "2", "--description", "the database",
        "--property", "role=db", "--wait",
    )  # fmt: skip
    vid = field(out, "id")
    assert (field(out, "name"), field(out, "status"), field(out, "size")) == (
        "data",
        "available",
        "2",
    )
    assert field(out, "availability_zone") == ZONE
    assert field(out, "metadata") == "role=db"
    stored = api_volume(live, vid)
    assert (stored["status"], stored["description"], stored["metadata"]) == (
        "available",
        "the database",
        {"role": "db"},
    )

    assert row(ok(live, "volume", "list"), vid) == [vid, "data", "available", "2", ZONE, "-"]
    long = row(ok(live, "volume", "list", "--long"), vid)
    assert long[6:9] == ["__DEFAULT__", "false", "role=db"]
    assert field(ok(live, "volume", "show", "data"), "id") == vid  # by name
    assert as_json(live, "volume", "show", vid)["volume"]["volume_type_id"]  # 3.63 or later

    changed = ok(live, "volume", "set", vid, "--name", "db", "--property", "tier=gold")
    assert field(changed, "name") == "db"
    assert api_volume(live, vid)["metadata"] == {"role": "db", "tier": "gold"}  # merged
    assert as_json(live, "volume", "set", "db", "--no-property", "--property", "a=b")["volume"][
        "metadata"
    ] == {"a": "b"}

    server = boot(live, "vm")
    sid = server["id"]
    attached = ok(live, "volume", "attach", "vm", "db", "--wait")  # both by name
    assert attached.strip() == f"volume db ({vid}) attached to server vm ({sid}) as /dev/vdb"
    assert row(ok(live, "volume", "list"), vid) == [
        vid, "db", "in-use", "2", ZONE, "vm on /dev/vdb",
    ]  # fmt: skip
    nova = live.client.get(f"{live.compute}/servers/{sid}/os-volume_attachments")
    assert nova.json()["volumeAttachments"] == [
        {"id": vid, "volumeId": vid, "serverId": sid, "device": "/dev/vdb"}
    ]
    shown = ok(live, "volume", "show", vid)
    assert field(shown, "attached to") == "vm on /dev/vdb"
    assert row(shown, sid)[:4] == [sid, "vm", "/dev/vdb", server["OS-EXT-SRV-ATTR:host"]]

    busy = refused(live, "volume", "delete", "db")
    assert busy.splitlines() == [
        f"error: HTTP 400 federator.request.invalid: Invalid volume: volume {vid} is in-use, "
        f"attached to server {sid}; only an available or error volume that is not attached "
        "can be deleted"
    ]
    assert api_volume(live, vid)["status"] == "in-use"

    detached = ok(live, "volume", "detach", sid, vid, "--wait")
    assert detached.strip() == f"volume db ({vid}) detached from server vm ({sid})"
    assert row(ok(live, "volume", "list"), vid)[2:] == ["available", "2", ZONE, "-"]
    assert nova_attachments(live, sid) == []

    gone = ok(live, "volume", "delete", "db", "--wait")
    assert gone.strip() == f"volume {vid} deleted"
    assert live.client.get(f"{volumes_url(live)}/{vid}").status_code == 404
    assert as_json(live, "volume", "list") == []


def nova_attachments(live: LiveBroker, sid: str) -> list[dict[str, Any]]:
    r = live.client.get(f"{live.compute}/servers/{sid}/os-volume_attachments")
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()["volumeAttachments"]
    return found


def test_attach_without_wait_then_the_api_errors(broker: LiveBroker) -> None:
    live = broker
    sid = boot(live, "vm")["id"]
    vid = make_volume(live, "disk")["id"]
    accepted = as_json(live, "volume", "attach", sid, vid, "--device", "/dev/vdc")
    assert accepted == {
        "volumeAttachment": {"id": vid, "volumeId": vid, "serverId": sid, "device": "/dev/vdc"}
    }
    live.wait_settled()
    assert api_volume(live, vid)["status"] == "in-use"

    other = make_volume(live, "other")["id"]
    taken = refused(live, "volume", "attach", "vm", other, "--device", "/dev/vdc")
    assert taken.strip() == (
        "error: HTTP 409 federator.resource.conflict: The supplied device path (/dev/vdc) is "
        "in use."
    )
    again = refused(live, "volume", "attach", "vm", "disk")
    assert f"volume {vid} is already attached to server {sid}" in again
    assert "HTTP 409" in again
    assert "server nope could not be found" in refused(live, "volume", "attach", "nope", "disk")
    assert "Volume nope could not be found" in refused(live, "volume", "attach", "vm", "nope")
    assert refused(live, "volume", "detach", "vm", "other").strip() == (
        f"error: HTTP 404 federator.resource.not_found: Volume attachment {other} could not be "
        "found"
    )
    assert api_volume(live, other)["status"] == "available"


def test_create_errors_name_the_field(broker: LiveBroker) -> None:
    live = broker
    gold = refused(live, "volume", "create", "x", "--size", "1", "--type", "gold")
    assert gold.splitlines() == [
        "error: HTTP 400 federator.request.invalid: volume.volume_type: volume type 'gold' "
        "could not be found",
        "  volume.volume_type: unknown type 'gold'",
    ]
    huge = refused(live, "volume", "create", "x", "--size", "100000")
    assert "volume.size: 100000 is not a size in GB between 1 and 16384" in huge
    nowhere = refused(live, "volume", "create", "x", "--size", "1", "--availability-zone", "mars")
    assert "volume.availability_zone: availability zone 'mars' is invalid" in nowhere
    usage = cli(live, "volume", "create", "x", "--size", "1", "--property", "novalue")
    assert usage.exit_code == 2 and "--property expects KEY=VALUE, got 'novalue'" in usage.stderr
    assert as_json(live, "volume", "list") == []  # nothing was created

    for n in range(4):
        make_volume(live, f"v{n}")
    over = refused(live, "volume", "create", "fifth", "--size", "1")
    assert over.startswith("error: HTTP 413 ")
    assert "VolumeLimitExceeded: maximum number of volumes allowed (4) exceeded" in over


def test_create_wait_ends_in_error_with_the_fault(broker: LiveBroker) -> None:
    live = broker
    storage = live.broker.ctx.drivers[ZONE].block_storage()
    assert isinstance(storage, SimBlockStorage)
    storage.ex_inject("permanent")
    failed = cli(live, "volume", "create", "doomed", "--size", "1", "--wait")
    assert failed.exit_code == 1, failed.output
    vid = field(failed.stdout, "id")
    assert field(failed.stdout, "status") == "error"
    assert "Fault" in failed.stdout
    assert failed.stderr.startswith(f"error: volume doomed ({vid}) is error: federator.")
    fault = api_volume(live, vid)["fault"]
    assert f"{fault['code']}: {fault['message']}" in " ".join(failed.stderr.split())
    assert row(ok(live, "volume", "list", "--long"), vid)[2] == "error"
    assert ok(live, "volume", "delete", vid, "--wait").strip() == f"volume {vid} deleted"


def test_show_delete_and_set_errors(broker: LiveBroker) -> None:
    live = broker
    assert refused(live, "volume", "show", "nope").strip() == (
        "error: HTTP 404 federator.resource.not_found: Volume nope could not be found"
    )
    make_volume(live, "twin")
    make_volume(live, "twin")
    assert "2 volumes are named 'twin'; give an id" in refused(live, "volume", "show", "twin")
    kept = make_volume(live, "kept")
    partly = cli(live, "volume", "delete", "nope", "kept")
    assert partly.exit_code == 1
    assert partly.stdout.strip() == f"volume {kept['id']} delete accepted"
    assert "Volume nope could not be found" in partly.stderr
    nothing = cli(live, "volume", "set", "twin")
    assert nothing.exit_code == 2
    assert "give at least one of --name, --description, --property" in nothing.stderr


def test_list_follows_pages_and_filters(broker: LiveBroker) -> None:
    """Pages of 2 (the broker's default limit): without --limit every page is read."""
    live = broker
    made = [make_volume(live, name)["id"] for name in ("a", "b", "c")]
    newest_first = list(reversed(made))
    assert [v["id"] for v in as_json(live, "volume", "list")] == newest_first
    assert [v["id"] for v in as_json(live, "volume", "list", "--limit", "1")] == made[2:]
    after = as_json(live, "volume", "list", "--marker", made[2])
    assert [v["id"] for v in after] == newest_first[1:]
    assert [v["name"] for v in as_json(live, "volume", "list", "--name", "b")] == ["b"]
    assert as_json(live, "volume", "list", "--status", "in-use") == []
    assert len(as_json(live, "volume", "list", "--status", "available")) == 3


def test_each_project_uses_its_own_endpoint(broker: LiveBroker) -> None:
    """The path comes from the token's catalog: a member's calls go to its project's URL
    and see only its volumes; the admin sees them with --all-projects."""
    live = broker
    mine = make_volume(live, "admins")["id"]
    member = live.os_env(user=member_of("project-a"), project="project-a")
    made = runner.invoke(
        app,
        ["volume", "create", "theirs", "--size", "1", "--wait", "--json", "--url", live.url],
        env=member,
    )
    assert made.exit_code == 0, made.output
    theirs = json.loads(made.stdout)["volume"]
    assert theirs["os-vol-tenant-attr:tenant_id"] == "project-a"
    listed = runner.invoke(app, ["volume", "list", "--json", "--url", live.url], env=member)
    assert [v["id"] for v in json.loads(listed.stdout)] == [theirs["id"]]
    assert [v["id"] for v in as_json(live, "volume", "list")] == [mine]
    everyone = {v["id"] for v in as_json(live, "volume", "list", "--all-projects")}
    assert everyone == {mine, theirs["id"]}

    admin = Credentials(username=ADMIN, password=PASSWORD, project_name=ADMIN)
    with Client(live.url, credentials=admin) as client:
        assert client.endpoint(BLOCK_STORAGE) == f"/volume/v3/{ADMIN}"
        with pytest.raises(ClientError, match="lists no object-store service"):
            client.endpoint("object-store")
