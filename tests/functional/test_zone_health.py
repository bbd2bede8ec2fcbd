"""A zone whose credentials are rejected is marked down, shown down, and skipped."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from drivers.sim.driver import SimDriver
from federator.config import Settings
from federator.monitor import jobs
from tests.conftest import LiveBroker, make_settings, sim_zone

POLICY = {
    "version": "health-1",
    "zones": {
        "local": {
            "thresholds": {"instances": {"high": 0, "low": 0}},
            "overflow": ["cloud-a", "cloud-b"],
        },
    },
}


def test_auth_failure_marks_zone_down_and_boots_skip_it(
    tmp_path: Path, live_broker_factory: Callable[[Settings], LiveBroker]
) -> None:
    settings = make_settings(
        tmp_path,
        zones=[
            sim_zone("local", "local", hosts=1),
            sim_zone("cloud-a", "virtual", expose_hosts=False),
            sim_zone("cloud-b", "virtual", expose_hosts=False),
        ],
        policy=POLICY,
    )
    live = live_broker_factory(settings)
    cloud_a = live.broker.drivers["cloud-a"]
    assert isinstance(cloud_a, SimDriver)
    cloud_a.ex_inject("auth", 1)

    first = live.boot("a1")
    live.wait_settled()
    srv = live.server(first)
    assert (srv["status"], srv["OS-EXT-AZ:availability_zone"]) == ("ACTIVE", "cloud-b")
    assert srv["federator:placement"]["zone"] == "cloud-b"

    azs = live.client.get(f"{live.compute}/os-availability-zone").json()["availabilityZoneInfo"]
    state = {z["zoneName"]: z["zoneState"]["available"] for z in azs}
    assert state == {"local": True, "cloud-a": False, "cloud-b": True}

    # No more injected failures, but the zone stays down until a health probe succeeds:
    second = live.boot("a2")
    live.wait_settled()
    assert live.server(second)["OS-EXT-AZ:availability_zone"] == "cloud-b"
    assert cloud_a.health().ok  # the sim itself is fine again...
    listed = [b for batch in cloud_a.list_instances() for b in batch]
    assert listed == []  # ...and nothing was left behind in the zone that refused us

    # The monitor's health job brings the zone back, and it is first in line again.
    assert jobs.refresh_zone(live.broker.ctx, "cloud-a").startswith("ok")
    third = live.boot("a3")
    live.wait_settled()
    assert live.server(third)["OS-EXT-AZ:availability_zone"] == "cloud-a"
