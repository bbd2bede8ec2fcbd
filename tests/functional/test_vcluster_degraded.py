"""A virtual cluster through the API with the monitor running: a member that vanishes from
its cloud makes the cluster DEGRADED with a fault naming it; a member that goes ERROR and
recovers takes the cluster to DEGRADED and back to ACTIVE."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from drivers.sim.driver import SimDriver
from federator.config import Settings
from federator.driver import PowerState
from tests.conftest import LiveBroker, make_settings, sim_zone
from tests.functional import vcluster_support as vc

Factory = Callable[..., LiveBroker]
BROKER = "/federator/v1"
# The jobs that matter here run often; the others stay out of the way.
MONITOR = {
    "sync_interval": 0.2,
    "vcluster_interval": 0.2,
    "vanish_grace_seconds": 0,
    "orphan_interval": 3600,
}


@pytest.fixture
def live(tmp_path: Path, live_broker_factory: Factory) -> LiveBroker:
    settings: Settings = make_settings(
        tmp_path,
        zones=[sim_zone("local", "local", hosts=2, volume_pool_gb=100)],
        policy={"version": "vc-degraded-1", "zones": {"local": {}}},
        monitor=MONITOR,
    )
    return live_broker_factory(settings, monitor=True)


def _sim(live: LiveBroker) -> SimDriver:
    driver = live.broker.drivers["local"]
    assert isinstance(driver, SimDriver)
    return driver


def _until(live: LiveBroker, cid: str, status: str, timeout: float = 30.0) -> dict[str, Any]:
    """The cluster as shown once its status is ``status``, polled until ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        c = vc.show(live, cid)
        if c["status"] == status:
            return c
        assert time.monotonic() < deadline, f"vcluster {cid} still {c['status']}: {c}"
        time.sleep(0.05)


def test_a_vanished_member_server_makes_the_cluster_degraded_with_a_fault(
    live: LiveBroker,
) -> None:
    cid = vc.create(live, vc.use_case_1())
    c = vc.wait(live, cid)
    assert c["status"] == "ACTIVE", c
    assert "fault" not in c
    sid = vc.members(c)["web-server"]["id"]
    jobs = {j["name"] for j in live.client.get(f"{live.url}{BROKER}/monitor").json()["jobs"]}
    assert "vclusters" in jobs

    assert _sim(live).ex_vanish(sid)
    c = _until(live, cid, "DEGRADED")
    f = c["fault"]
    assert f["code"] == "federator.vcluster.degraded"
    assert "server web-server" in f["message"]
    [detail] = f["details"]
    assert detail.startswith(f"server web-server ({sid}): instance vanished from zone local")
    assert f["created"]
    m = vc.members(c)
    assert m["web-server"]["status"] == "ERROR"
    # The sim detaches a vanished server's volumes: the volume is fine, and not named.
    assert m["web-vol"]["status"] in ("in-use", "available")
    events = live.client.get(f"{live.url}{BROKER}/monitor/events").json()["events"]
    mine = [e for e in events if e["kind"] == "vcluster"]
    assert [(e["instance_uuid"], e["action"], e["zone"]) for e in mine] == [
        (sid, "degraded", "local")
    ]


def test_a_member_in_error_degrades_the_cluster_until_it_recovers(live: LiveBroker) -> None:
    cid = vc.create(live, vc.use_case_2())
    c = vc.wait(live, cid)
    assert c["status"] == "ACTIVE", c
    sid = vc.members(c)["db-server-2"]["id"]

    _sim(live).ex_set_state(sid, PowerState.ERROR)
    c = _until(live, cid, "DEGRADED")
    assert c["fault"]["details"] == [f"server db-server-2 ({sid}): is ERROR"]

    _sim(live).ex_set_state(sid, PowerState.ACTIVE)
    c = _until(live, cid, "ACTIVE")
    assert "fault" not in c
    assert {m["status"] for m in c["instances"]} == {"ACTIVE", "in-use"}
