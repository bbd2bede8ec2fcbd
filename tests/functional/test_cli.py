"""The API client commands, run in-process against a live broker."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from federator.cli.main import app
from federator.config import Settings
from tests.conftest import LiveBroker, make_settings, sim_zone, write_policy

runner = CliRunner()


def cli(broker: LiveBroker | str, *args: str) -> Result:
    """``federator <args> --url ...`` as the broker's admin (no credentials for a bare URL)."""
    if isinstance(broker, str):
        return runner.invoke(app, [*args, "--url", broker])
    return runner.invoke(app, [*args, "--url", broker.url], env=broker.os_env())


def ok(broker: LiveBroker | str, *args: str) -> str:
    result = cli(broker, *args)
    assert result.exit_code == 0, f"{args}: exit {result.exit_code}\n{result.output}"
    return result.stdout


def refused(broker: LiveBroker | str, *args: str) -> str:
    """The command failed cleanly: status 1, an error line, no traceback."""
    result = cli(broker, *args)
    assert result.exit_code == 1, f"{args}: exit {result.exit_code}\n{result.output}"
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert result.stderr.startswith("error: "), result.stderr
    return result.stderr


def row(output: str, key: str) -> list[str]:
    """The cells of the one table row holding ``key``."""
    lines = [line for line in output.splitlines() if key in line and "│" in line]
    assert len(lines) == 1, f"{key!r} in {len(lines)} rows of:\n{output}"
    return [c.strip() for c in lines[0].strip().strip("│").split("│")]


def field(output: str, name: str) -> str:
    """The value of ``name`` in a field/value table."""
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if len(cells) == 2 and cells[0] == name:
            return cells[1]
    raise AssertionError(f"no field {name!r} in:\n{output}")


def server_json(broker: LiveBroker, sid: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(ok(broker, "server", "show", sid, "--json"))["server"]
    return body


@pytest.fixture
def tiny_broker(
    tmp_path: Path, live_broker_factory: Callable[[Settings], LiveBroker]
) -> LiveBroker:
    """One local host with room for one m1.small; no overflow anywhere."""
    settings = make_settings(
        tmp_path,
        zones=[sim_zone("local", "local", hosts=1, host_ram_mb=1024, host_vcpus=1)],
        policy={"version": "t1", "zones": {}},
    )
    return live_broker_factory(settings)


# --- servers ---------------------------------------------------------------------------


def test_create_wait_then_list_shows_it_active_in_local(live_broker: LiveBroker) -> None:
    out = ok(
        live_broker,
        "server",
        "create",
        "web",
        "--flavor",
        "m1.small",
        "--image",
        "cirros",
        "--property",
        "role=front",
        "--wait",
    )
    assert row(out, "web")[2] == "ACTIVE"

    _, name, status, az, host = row(ok(live_broker, "server", "list"), "web")
    assert (name, status, az) == ("web", "ACTIVE", "local")
    assert host.startswith("local-host-")

    listed = json.loads(ok(live_broker, "server", "list", "--json"))
    assert [(s["name"], s["status"], s["OS-EXT-AZ:availability_zone"]) for s in listed] == [
        ("web", "ACTIVE", "local")
    ]
    assert listed[0]["metadata"] == {"role": "front"}

    long = row(ok(live_broker, "server", "list", "--long"), "web")
    assert long[5:8] == ["m1.small", "cell1", "-"]


def test_create_count_waits_for_every_server(live_broker: LiveBroker) -> None:
    out = ok(
        live_broker,
        "server",
        "create",
        "batch",
        "--flavor",
        "m1.tiny",
        "--image",
        "cirros",
        "--count",
        "3",
        "--wait",
        "--json",
    )
    final = json.loads(out)
    assert sorted(s["name"] for s in final) == ["batch-1", "batch-2", "batch-3"]
    assert {s["status"] for s in final} == {"ACTIVE"}


def test_list_follows_pages_unless_limited(
    tmp_path: Path, live_broker_factory: Callable[[Settings], LiveBroker]
) -> None:
    broker = live_broker_factory(make_settings(tmp_path, api={"default_limit": 2}))
    ids = {broker.boot(f"p{i}", flavor="m1.tiny") for i in range(5)}
    broker.wait_settled()

    everything = json.loads(ok(broker, "server", "list", "--json"))
    assert {s["id"] for s in everything} == ids

    page = json.loads(ok(broker, "server", "list", "--limit", "1", "--json"))
    assert len(page) == 1
    after = json.loads(ok(broker, "server", "list", "--marker", page[0]["id"], "--json"))
    assert {s["id"] for s in after} == ids - {page[0]["id"]}

    named = json.loads(ok(broker, "server", "list", "--name", "^p[34]$", "--json"))
    assert sorted(s["name"] for s in named) == ["p3", "p4"]


def test_show_gives_every_field_and_the_placement(live_broker: LiveBroker) -> None:
    sid = live_broker.boot("shown")
    srv = live_broker.wait_status(sid, "ACTIVE")
    version = live_broker.client.get(f"{live_broker.url}/federator/v1/health").json()[
        "policy_version"
    ]

    out = ok(live_broker, "server", "show", sid)
    assert field(out, "id") == sid
    assert field(out, "status") == "ACTIVE"
    assert field(out, "OS-EXT-AZ:availability_zone") == "local"
    assert field(out, "policy version") == version
    assert field(out, "zone") == "local"
    assert field(out, "host") == srv["OS-EXT-SRV-ATTR:host"]
    assert "under high water" in field(out, "reason")

    # By exact name too.
    assert field(ok(live_broker, "server", "show", "shown"), "id") == sid


def test_stop_start_reboot_round_trip(live_broker: LiveBroker) -> None:
    sid = live_broker.boot("cycle")
    live_broker.wait_status(sid, "ACTIVE")

    assert (
        ok(live_broker, "server", "stop", sid, "--wait").strip() == f"server cycle ({sid}): SHUTOFF"
    )
    assert server_json(live_broker, sid)["status"] == "SHUTOFF"
    assert (
        ok(live_broker, "server", "start", sid, "--wait").strip() == f"server cycle ({sid}): ACTIVE"
    )
    assert ok(live_broker, "server", "reboot", sid, "--hard", "--wait").strip().endswith("ACTIVE")

    # Stopping twice in a row is refused by the broker, not by the client.
    ok(live_broker, "server", "stop", sid, "--wait")
    err = refused(live_broker, "server", "stop", sid)
    assert "HTTP 409 federator.instance.invalid_state" in err


def test_delete_wait_then_show_is_not_found(live_broker: LiveBroker) -> None:
    sid = live_broker.boot("doomed")
    live_broker.wait_status(sid, "ACTIVE")

    assert ok(live_broker, "server", "delete", sid, "--wait").strip() == f"server {sid} deleted"
    err = refused(live_broker, "server", "show", sid)
    assert err.strip() == (
        f"error: HTTP 404 federator.resource.not_found: server {sid} could not be found"
    )


def test_delete_carries_on_past_a_missing_server(live_broker: LiveBroker) -> None:
    sid = live_broker.boot("one")
    live_broker.wait_status(sid, "ACTIVE")
    result = cli(live_broker, "server", "delete", "no-such-server", sid, "--wait")
    assert result.exit_code == 1
    assert f"server {sid} deleted" in result.stdout
    assert "server no-such-server could not be found" in result.stderr


def test_unknown_flavor_is_refused_naming_it(live_broker: LiveBroker) -> None:
    err = refused(live_broker, "server", "create", "x", "--flavor", "m9.huge", "--image", "cirros")
    assert "HTTP 400 federator.request.invalid" in err
    assert "m9.huge" in err
    assert "server.flavorRef: unknown flavor" in err


def test_bad_property_is_a_usage_error(live_broker: LiveBroker) -> None:
    result = cli(
        live_broker,
        "server",
        "create",
        "x",
        "--flavor",
        "m1.tiny",
        "--image",
        "cirros",
        "--property",
        "novalue",
    )
    assert result.exit_code == 2
    assert "--property expects KEY=VALUE" in result.stderr


def test_unreachable_broker_is_one_clean_line() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    for args in (("server", "list"), ("zone", "list"), ("monitor", "status")):
        err = refused(url, *args)
        assert err.startswith(f"error: cannot reach the broker at {url}: "), err
        assert len(err.strip().splitlines()) == 1


def test_server_buried_in_cell0(tiny_broker: LiveBroker) -> None:
    result = cli(
        tiny_broker,
        "server",
        "create",
        "big",
        "--flavor",
        "m1.small",
        "--image",
        "cirros",
        "--count",
        "2",
        "--wait",
    )
    assert result.exit_code == 1, result.output
    statuses = {row(result.stdout, f"big-{n}")[2] for n in (1, 2)}
    assert statuses == {"ACTIVE", "ERROR"}
    assert "is in ERROR: federator.placement.no_valid_host" in result.stderr

    (buried,) = json.loads(ok(tiny_broker, "server", "list", "--status", "ERROR", "--json"))
    out = ok(tiny_broker, "server", "show", buried["id"])
    assert field(out, "status") == "ERROR"
    assert field(out, "reason") == "no_valid_host"
    assert field(out, "code") == "federator.placement.no_valid_host"
    assert field(out, "federator:cell") == "cell0"
    assert field(out, "policy version") == "t1"

    err = refused(tiny_broker, "server", "start", buried["id"])
    assert "HTTP 409 federator.instance.invalid_state" in err
    assert "cell0" in err

    long = row(ok(tiny_broker, "server", "list", "--long"), buried["id"])
    assert long[-1] == "no_valid_host"


# --- zones, availability zones, flavors, monitor -------------------------------------------


def test_zone_list_shows_bursting_and_thresholds(live_broker: LiveBroker) -> None:
    out = ok(live_broker, "zone", "list")
    name, kind, state, bursting, hosts, ram, vcpu, _instances, quota = row(out, " local ")
    assert (name, kind, state, bursting, hosts) == ("local", "local", "available", "no", "4/4")
    assert ram == "0% (high 75%, low 50%)"
    assert vcpu == "0% (high 90%, low 70%)"
    assert quota == "-"
    assert row(out, "aws-standin")[-1] == "instances=8, volumes=16, gigabytes=500"

    zones = json.loads(ok(live_broker, "zone", "list", "--json"))
    assert [z["name"] for z in zones] == ["local", "aws-standin", "sim-cloud-b"]

    # Three m1.large fill local to its 75% mark; the fourth overflows and local bursts.
    for n in range(4):
        live_broker.boot(f"large-{n}", flavor="m1.large")
    live_broker.wait_settled()
    out = ok(live_broker, "zone", "list")
    local = row(out, " local ")
    assert local[3] == "yes"
    assert local[5] == "75% (high 75%, low 50%)"
    assert local[7] == "3"
    assert row(out, "aws-standin")[7] == "1"

    shown = ok(live_broker, "zone", "show", "local")
    assert field(shown, "bursting") == "yes"
    assert row(shown, "RAM") == ["RAM", "75%", "75%", "50%", "between low and high"]


def test_zone_show_places_usage_against_the_marks(live_broker: LiveBroker) -> None:
    out = ok(live_broker, "zone", "show", "local")
    assert field(out, "bursting") == "no"
    assert field(out, "state") == "available"
    assert row(out, "RAM") == ["RAM", "0%", "75%", "50%", "below low"]
    assert row(out, "vCPU") == ["vCPU", "0%", "90%", "70%", "below low"]

    err = refused(live_broker, "zone", "show", "atlantis")
    assert "HTTP 404 federator.resource.not_found: zone atlantis could not be found" in err


def test_az_and_flavor_listings(live_broker: LiveBroker) -> None:
    assert row(ok(live_broker, "az", "list"), "sim-cloud-b") == ["sim-cloud-b", "yes"]
    assert row(ok(live_broker, "az", "list", "--long"), "local-host-003")[:4] == [
        "local",
        "yes",
        "local-host-003",
        "nova-compute",
    ]

    assert row(ok(live_broker, "flavor", "list"), "m1.medium") == [
        "3",
        "m1.medium",
        "2",
        "4096",
        "40",
    ]
    assert field(ok(live_broker, "flavor", "show", "4"), "ram") == "8192"
    assert field(ok(live_broker, "flavor", "show", "m1.large"), "id") == "4"
    assert "flavor nope could not be found" in refused(live_broker, "flavor", "show", "nope")


def test_monitor_status(live_broker: LiveBroker) -> None:
    out = ok(live_broker, "monitor", "status")
    assert "build workers: 0 busy of 8" in out
    assert json.loads(ok(live_broker, "monitor", "status", "--json"))["workers"]["count"] == 8


# --- policy --------------------------------------------------------------------------------


def test_policy_explain_prints_the_decision(live_broker: LiveBroker) -> None:
    out = ok(
        live_broker,
        "policy",
        "explain",
        "--flavor",
        "m1.small",
        "--image",
        "cirros",
        "--max-hosts",
        "2",
    )
    lines = out.splitlines()
    assert lines[0].startswith("Decision: zone local, host local-host-")
    assert "Zone local (local): rank 1" in out
    assert "accepted by threshold: under high water" in out
    assert "ram_percent_high=75" in out
    assert "hosts: 4 of 4 passed the filters" in out
    assert "Zone aws-standin (virtual): rank 2" in out
    assert len([line for line in lines if "local-host-" in line and "│" in line]) == 2

    body = json.loads(
        ok(live_broker, "policy", "explain", "--flavor", "m1.small", "--image", "cirros", "--json")
    )
    assert body["explain"]["decision"]["zone"] == "local"

    err = refused(live_broker, "policy", "explain", "--flavor", "m9", "--image", "cirros")
    assert "flavor 'm9' does not exist" in err


def test_policy_show_and_reload(
    tmp_path: Path, live_broker_factory: Callable[[Settings], LiveBroker]
) -> None:
    broker = live_broker_factory(make_settings(tmp_path, policy={"version": "p1", "zones": {}}))
    out = ok(broker, "policy", "show")
    assert field(out, "version") == "p1"
    assert field(out, "source") == str(tmp_path / "policy.json")

    assert ok(broker, "policy", "reload").startswith("policy unchanged: version p1")
    write_policy(tmp_path / "policy.json", {"version": "p2", "zones": {}})
    assert ok(broker, "policy", "reload").startswith("policy reloaded: version p2")

    write_policy(
        tmp_path / "policy.json", {"version": "", "zones": {"atlantis": {}}, "surprise": 1}
    )
    err = refused(broker, "policy", "reload")
    assert "HTTP 422 federator.policy.invalid" in err
    problems = [line.strip() for line in err.splitlines()[1:]]
    assert len(problems) >= 2
    assert all(p.startswith("$") for p in problems)
    assert any("atlantis" in p for p in problems)
    assert field(ok(broker, "policy", "show"), "version") == "p2"
