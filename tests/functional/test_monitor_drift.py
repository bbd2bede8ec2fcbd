"""Drift between the broker and its zones, seen through the API and the CLI: an instance
that vanished, one whose state changed behind the broker's back, and an orphan."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from typer.testing import CliRunner

from drivers.sim.driver import SimDriver
from federator.cli.main import app
from federator.config import Settings
from federator.driver import FlavorSpec, InstanceSpec, PowerState
from federator.monitor.orphans import find_orphans
from federator.monitor.sync import sync_zone
from tests.conftest import LiveBroker, make_settings
from tests.functional.support import three_zones

BROKER = "/federator/v1"
STRAY = "00000000-0000-4000-8000-0000000000bb"
POLICY = {
    "version": "drift-1",
    "allow_explicit_virtual_az": True,
    "orphans": {"action": "quarantine", "min_age_seconds": 0},
}


def _live(tmp_path: Path, factory: Callable[[Settings], LiveBroker]) -> LiveBroker:
    settings = make_settings(
        tmp_path, zones=three_zones(), policy=POLICY, monitor={"vanish_grace_seconds": 0}
    )
    return factory(settings)


def _sim(live: LiveBroker, zone: str) -> SimDriver:
    driver = live.broker.drivers[zone]
    assert isinstance(driver, SimDriver)
    return driver


def _boot(live: LiveBroker, name: str) -> str:
    sid = live.boot(name, availability_zone="cloud-a")
    live.wait_status(sid, "ACTIVE")
    return sid


def test_vanished_and_drifted_instances_show_in_the_api(
    tmp_path: Path, live_broker_factory: Callable[[Settings], LiveBroker]
) -> None:
    live = _live(tmp_path, live_broker_factory)
    gone, stopped, fine = _boot(live, "gone"), _boot(live, "stopped"), _boot(live, "fine")
    untouched = live.server(fine)
    sim = _sim(live, "cloud-a")
    sim.ex_vanish(gone)
    sim.ex_set_state(stopped, PowerState.SHUTOFF)

    report = sync_zone(live.broker.ctx, "cloud-a")
    assert (report.seen, report.changed, report.vanished) == (2, 1, 1)

    srv = live.server(gone)
    assert srv["status"] == "ERROR"
    assert srv["federator:fault"]["reason"] == "vanished"
    assert srv["federator:fault"]["code"] == "federator.monitor.vanished"
    assert "zone cloud-a" in srv["fault"]["message"]
    assert live.server(stopped)["status"] == "SHUTOFF"
    assert live.server(fine) == untouched

    again = sync_zone(live.broker.ctx, "cloud-a")
    assert (again.changed, again.vanished) == (0, 0)

    events = live.client.get(f"{live.url}{BROKER}/monitor/events?kind=vanished").json()
    (event,) = events["events"]
    assert (event["zone"], event["instance_uuid"], event["action"]) == ("cloud-a", gone, "error")

    zones = {z["name"]: z for z in live.client.get(f"{live.url}{BROKER}/zones").json()["zones"]}
    assert zones["cloud-a"]["remote_usage"] == {"instances": 2, "vcpus": 2, "ram_mb": 2048}
    assert zones["cloud-a"]["usage"]["instances"] == 3  # the ERROR instance keeps its claim
    assert zones["local"]["remote_usage"] is None

    # Deleting the vanished instance completes at once and gives its capacity back.
    r = live.client.delete(f"{live.compute}/servers/{gone}")
    assert r.status_code == 204, r.text
    live.wait_settled()
    assert live.client.get(f"{live.compute}/servers/{gone}").status_code == 404
    zone = live.client.get(f"{live.url}{BROKER}/zones/cloud-a").json()["zone"]
    assert zone["usage"]["instances"] == 2


def test_orphans_are_quarantined_and_listed_by_the_cli(
    tmp_path: Path, live_broker_factory: Callable[[Settings], LiveBroker]
) -> None:
    live = _live(tmp_path, live_broker_factory)
    mine = _boot(live, "mine")
    before = live.server(mine)
    sim = _sim(live, "cloud-a")
    sim.create(
        InstanceSpec(
            uuid=STRAY,
            name="stray",
            flavor=FlavorSpec("m1.tiny", 1, 512, 1),
            image="cirros",
            project_id="elsewhere",
            broker_id=live.broker.settings.broker_id,
        )
    )

    report = find_orphans(live.broker.ctx, "cloud-a")
    assert (report.orphans, report.acted) == (1, 1)
    assert sim.get(STRAY).state is PowerState.SHUTOFF
    assert live.server(mine) == before
    assert live.client.get(f"{live.compute}/servers/{STRAY}").status_code == 404

    runner = CliRunner()
    result = runner.invoke(
        app,
        ["monitor", "events", "--kind", "orphan", "--json", "--url", live.url],
        env=live.os_env(),
    )
    assert result.exit_code == 0, result.output
    (event,) = json.loads(result.stdout)["events"]
    assert (event["instance_uuid"], event["action"]) == (STRAY, "quarantine")
    assert "stopped" in event["detail"]

    table = runner.invoke(
        app, ["monitor", "events", "--zone", "cloud-a", "--url", live.url], env=live.os_env()
    )
    assert table.exit_code == 0 and "quarantine" in table.stdout

    bad = live.client.get(f"{live.url}{BROKER}/monitor/events?kind=bogus")
    assert bad.status_code == 400
    assert bad.json()["code"] == "federator.request.invalid"
