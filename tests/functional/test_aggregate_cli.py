"""The host aggregate commands of the blueprint and ``federator host``, against a live
broker: outputs and errors, not just exit codes."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from federator.cli.main import app
from tests.conftest import LiveBroker, make_settings, member_of, sim_zone
from tests.functional.support import FEDERATOR, boot_settled
from tests.functional.test_cli import cli, field, ok, refused, row, runner

Factory = Callable[..., LiveBroker]


@pytest.fixture
def live(tmp_path: Path, live_broker_factory: Factory) -> LiveBroker:
    return live_broker_factory(make_settings(tmp_path))


def as_json(live: LiveBroker, *args: str) -> Any:
    return json.loads(ok(live, *args, "--json"))


def test_every_blueprint_command(live: LiveBroker) -> None:
    listed = ok(live, "aggregate-list")
    assert row(listed, "local")[:3] == ["1", "local", "-"]
    assert "local-host-001, local-host-002" in listed

    created = ok(live, "aggregate-create", "fast", "az-fast")
    assert field(created, "name") == "fast"
    assert field(created, "availability zone") == "az-fast"
    agg_id = field(created, "id")
    plain = as_json(live, "aggregate-create", "plain")["aggregate"]
    assert (plain["name"], plain["availability_zone"]) == ("plain", None)

    details = ok(live, "aggregate-details", "fast")  # by name
    assert (field(details, "id"), field(details, "hosts")) == (agg_id, "-")
    assert as_json(live, "aggregate-details", agg_id)["aggregate"]["name"] == "fast"

    added = ok(live, "aggregate-add-host", agg_id, "local-host-004")
    assert field(added, "hosts") == "local-host-004"
    meta = ok(live, "aggregate-set-metadata", agg_id, "ssd=true", "rack=r1")
    assert field(meta, "metadata") == "rack=r1, ssd=true"
    removed_key = as_json(live, "aggregate-set-metadata", "fast", "rack=")["aggregate"]
    assert removed_key["metadata"] == {"availability_zone": "az-fast", "ssd": "true"}

    renamed = ok(live, "aggregate-update", agg_id, "faster")
    assert (field(renamed, "name"), field(renamed, "availability zone")) == ("faster", "az-fast")
    moved = ok(live, "aggregate-update", "faster", "faster", "az-2")
    assert field(moved, "availability zone") == "az-2"
    hosts = {h["name"]: h for h in as_json(live, "host", "list")}
    assert hosts["local-host-004"]["availability_zone"] == "az-2"

    left = ok(live, "aggregate-remove-host", "faster", "local-host-004")
    assert field(left, "hosts") == "-"
    assert "aggregate faster (id " in ok(live, "aggregate-delete", "faster")
    assert "faster" not in ok(live, "aggregate-list")
    assert [a["name"] for a in as_json(live, "aggregate-list")] == ["local", "plain"]


def test_commands_print_the_api_error_and_fail(live: LiveBroker) -> None:
    assert "still holds 4 host(s)" in refused(live, "aggregate-delete", "local")
    assert "host nope could not be found" in refused(live, "aggregate-add-host", "local", "nope")
    assert "already in aggregate 'local'" in refused(
        live, "aggregate-add-host", "local", "local-host-001"
    )
    assert "exists already" in refused(live, "aggregate-create", "LOCAL")
    assert "virtual zone 'aws-standin'" in refused(live, "aggregate-create", "x", "aws-standin")
    assert "aggregate nope could not be found" in refused(live, "aggregate-details", "nope")
    assert "could not be found" in refused(live, "aggregate-remove-host", "local", "nope-host")
    ok(live, "aggregate-create", "empty")
    assert "local-host-001 is not in aggregate 'empty'" in refused(
        live, "aggregate-remove-host", "empty", "local-host-001"
    )
    bad = cli(live, "aggregate-set-metadata", "local", "novalue")
    assert bad.exit_code == 2 and "'novalue' is not KEY=VALUE" in bad.stderr
    member = live.os_env(user=member_of("project-a"), project="project-a")
    denied = runner.invoke(app, ["aggregate-list", "--url", live.url], env=member)
    assert denied.exit_code == 1 and "HTTP 403" in denied.stderr


def test_host_commands(live: LiveBroker) -> None:
    sid = boot_settled(live, "web")["id"]
    on = live.server(sid)["OS-EXT-SRV-ATTR:host"]

    listed = ok(live, "host", "list")
    cells = row(listed, on)
    assert cells[:5] == ["local", on, "local", "local", "enabled"]
    assert cells[5:] == ["1 of 32", "1024 of 8192", "10 of 200", "1"]

    shown = ok(live, "host", "show", on)
    assert field(shown, "aggregates") == "local"
    assert field(shown, "ram") == "1024 of 8192 MB (8192 MB x 1)"
    assert row(shown, sid)[1:3] == ["web", "ACTIVE"]
    assert as_json(live, "host", "show", f"local/{on}")["servers"][0]["id"] == sid

    disabled = ok(live, "host", "disable", on, "--reason", "broken fan")
    assert field(disabled, "state") == "disabled: broken fan"
    assert field(ok(live, "host", "enable", on, "--zone", "local"), "state") == "enabled"

    entered = ok(live, "host", "maintenance", on, "--reason", "kernel upgrade")
    assert field(entered, "state") == "maintenance: kernel upgrade"
    assert row(entered, sid)[1] == "web"  # still running here
    drained = ok(live, "host", "drain", on)
    moved = row(drained, sid)
    assert moved[2:4] == ["moved", on] and moved[4].startswith("local-host-")
    assert "moved 1, stayed 0, failed 0" in drained
    assert live.server(sid)["OS-EXT-SRV-ATTR:host"] != on
    assert field(ok(live, "host", "maintenance", on, "--exit"), "state") == "enabled"

    assert "no host is named nope" in refused(live, "host", "show", "nope")
    assert "could not be found" in refused(live, "host", "enable", "nope", "--zone", "local")


def test_drain_fails_when_instances_stay(tmp_path: Path, live_broker_factory: Factory) -> None:
    zone = sim_zone("local", "local", hosts=1)
    live = live_broker_factory(
        make_settings(tmp_path, zones=[zone], policy={"version": "t", "zones": {}})
    )
    sid = boot_settled(live, "alone")["id"]
    result = cli(live, "host", "drain", "local-host-001")
    assert result.exit_code == 1
    assert row(result.stdout, sid)[2] == "stayed"
    assert "1 instance(s) remain on local-host-001" in result.stderr


def test_the_installed_command(live: LiveBroker) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    done = subprocess.run(
        [str(FEDERATOR), "aggregate-list", "--json"],
        env={**env, **live.os_env()},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert [a["name"] for a in json.loads(done.stdout)] == ["local"]
