"""``kill -9`` of ``federator serve`` while it builds a virtual cluster, then a restart.

The cluster has 20 members: ten servers kept on distinct hosts, each with a volume affine
to it (in its host's pool, attached to it). The sim takes BOOT_DELAY_MS per server, so the
build (one server after another) lasts seconds and the kill lands inside it, at a point
the test checks in the databases and the sim's state store after the kill:

* ``early``: right after the create was accepted (nothing, or only the claims, done);
* ``mid``: some servers exist in the sim, the cluster still BUILD;
* ``late``: most servers exist, the cluster still BUILD;
* ``volumes``: every server exists and some volumes (the sim takes VOLUME_DELAY_MS per
  volume), the cluster still BUILD.

After the restart the cluster ends ACTIVE with every member, or ERROR with nothing left:
the sim's stored servers and volumes are exactly the ACTIVE members the broker records (no
orphan running with nothing tracking it, none lost), and the ledger is exact (host, pool
and zone counters equal the sums of their allocations; no claim leaked).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from federator.broker import Databases
from federator.config import Settings, load_settings
from federator.driver import Driver
from federator.plugins import load_driver
from federator.storage.models import Task, VCluster
from tests.conftest import settings_data, sim_zone, write_config
from tests.daemon import Daemon, tail
from tests.functional import vcluster_support as vc
from tests.functional.test_vcluster_races import (
    check_api,
    check_clouds,
    check_groupings,
    check_records,
)

pytestmark = pytest.mark.slow

SERVERS = 10
HOSTS = 12
BOOT_DELAY_MS = 250  # ten servers one after another: a build of about 2.5 s
VOLUME_DELAY_MS = 150
# (servers, volumes) the cluster must show built before the kill
KILL_AFTER = {"early": (0, 0), "mid": (2, 0), "late": (7, 0), "volumes": (SERVERS, 2)}


def cluster_body() -> dict[str, Any]:
    servers = [f"s{j}" for j in range(SERVERS)]
    return {"vcluster": {
        "name": "crash",
        "instances": [*(vc.server(s) for s in servers),
                      *(vc.volume(f"v{j}", 5) for j in range(SERVERS))],
        "groupings": [
            vc.grouping("apart", "anti-affinity", *servers),
            *(vc.grouping(f"with-{j}", "affinity", f"s{j}", f"v{j}") for j in range(SERVERS)),
        ],
    }}  # fmt: skip


@pytest.fixture
def config(tmp_path: Path) -> Path:
    data = settings_data(
        tmp_path,
        zones=[
            sim_zone(
                "local",
                "local",
                hosts=HOSTS,
                boot_delay_ms=BOOT_DELAY_MS,
                volume_delay_ms=VOLUME_DELAY_MS,
            )
        ],
        policy={"version": "vc-crash", "zones": {"local": {}}},
        workers={"count": 4, "poll_interval": 0.1},
    )
    return write_config(tmp_path / "federator.toml", data)


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    """Every daemon a test starts; any still running at the end is killed."""
    started: list[Daemon] = []
    yield started
    for d in started:
        d.kill()


@contextmanager
def sim_drivers(settings: Settings) -> Iterator[dict[str, Driver]]:
    """The zones' drivers on the broker's data directory: the sim's state store as the
    broker left it (the broker itself need not run)."""
    drivers = {}
    try:
        for z in settings.zones:
            drivers[z.name] = load_driver(z, settings.broker_id, settings.data_dir)
        yield drivers
    finally:
        for d in drivers.values():
            d.close()


def sim_servers(settings: Settings) -> set[str]:
    """The servers in the sim's state store."""
    with sim_drivers(settings) as drivers:
        return {r.uuid for d in drivers.values() for b in d.list_instances() for r in b}


def sim_volumes(settings: Settings) -> set[str]:
    """The volumes in the sim's state store."""
    with sim_drivers(settings) as drivers:
        found = set()
        for d in drivers.values():
            storage = d.block_storage()
            if storage is not None:
                found |= {v.uuid for b in storage.list_volumes() for v in b}
        return found


def stored(settings: Settings, cid: str) -> tuple[str, str, tuple[int, int]]:
    """The stopped broker's view: the cluster's status and phase, and its (running,
    queued) tasks of any kind."""
    dbs = Databases.from_settings(settings)
    try:
        with dbs.api.read() as s:
            c = s.get(VCluster, cid)
            assert c is not None
            tasks = dict(s.execute(select(Task.state, func.count()).group_by(Task.state)).all())
            return c.status, c.phase, (tasks.get("running", 0), tasks.get("queued", 0))
    finally:
        dbs.dispose()


def built(client: httpx.Client, url: str, cid: str) -> tuple[int, int]:
    """How many servers are ACTIVE and volumes made (no longer BUILD/creating)."""
    r = client.get(f"{url}/compute/v2.1/vclusters/{cid}")
    assert r.status_code == 200, r.text
    c = r.json()["vcluster"]
    assert c["status"] == "BUILD", f"the build ended before the kill point: {c['status']}"
    servers = sum(m["type"] == "server" and m["status"] == "ACTIVE" for m in c["instances"])
    volumes = sum(
        m["type"] == "volume" and m["status"] not in ("BUILD", "creating") for m in c["instances"]
    )
    return servers, volumes


def wait_settled(daemon: Daemon, cid: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=10, headers=daemon.headers) as client:
        while True:
            r = client.get(f"{daemon.url}/compute/v2.1/vclusters/{cid}")
            assert r.status_code == 200, r.text
            c: dict[str, Any] = r.json()["vcluster"]
            if c["status"] not in ("BUILD", "DELETING"):
                return c
            assert time.monotonic() < deadline, f"still {c['status']}:\n{tail(daemon.log)}"
            time.sleep(0.1)


@pytest.mark.parametrize("point", list(KILL_AFTER))
def test_sigkill_during_a_cluster_build_then_restart_leaves_all_or_nothing(
    tmp_path: Path, config: Path, daemons: list[Daemon], point: str
) -> None:
    settings = load_settings(config)
    first = Daemon.start(config, tmp_path, 1)
    daemons.append(first)
    with httpx.Client(timeout=30, headers=first.headers) as client:
        r = client.post(f"{first.url}/compute/v2.1/vclusters", json=cluster_body())
        assert r.status_code == 202, r.text
        cid = r.json()["vcluster"]["id"]
        deadline = time.monotonic() + 30
        want_servers, want_volumes = KILL_AFTER[point]
        while True:
            servers_built, volumes_built = built(client, first.url, cid)
            if servers_built >= want_servers and volumes_built >= want_volumes:
                break
            assert time.monotonic() < deadline, f"the build did not progress:\n{tail(first.log)}"
            time.sleep(0.02)
    first.kill()

    # The kill landed inside the build: the cluster is not done and its task is unfinished.
    status, phase, (running, queued) = stored(settings, cid)
    assert (status, phase) in {("BUILD", "planning"), ("BUILD", "building")}, (status, phase)
    assert running + queued >= 1
    in_sim, volumes_in_sim = sim_servers(settings), sim_volumes(settings)
    if want_volumes:
        assert len(in_sim) == SERVERS
        assert want_volumes <= len(volumes_in_sim) < SERVERS, f"{len(volumes_in_sim)} volumes"
    else:
        assert want_servers <= len(in_sim) < SERVERS, f"{len(in_sim)} servers at the kill"

    second = Daemon.start(config, tmp_path, 2)
    daemons.append(second)
    cluster = wait_settled(second, cid)
    with httpx.Client(timeout=30, headers=second.headers) as client:
        servers, volumes = check_api(client, second.url, [cluster])
    assert second.stop() == 0, tail(second.log)

    assert cluster["status"] in ("ACTIVE", "ERROR"), cluster
    if cluster["status"] == "ACTIVE":
        assert (len(servers), len(volumes)) == (SERVERS, SERVERS)
        check_groupings([cluster])
    else:
        assert (servers, volumes) == ({}, {})
    assert stored(settings, cid)[2] == (0, 0), "tasks left unfinished after the restart"
    dbs = Databases.from_settings(settings)
    try:
        check_records(dbs, servers, volumes, [cid] if cluster["status"] == "ERROR" else [])
    finally:
        dbs.dispose()
    with sim_drivers(settings) as drivers:
        check_clouds(drivers, servers, volumes)
