"""Three ``federator serve`` processes on one PostgreSQL: each zone's monitor jobs run in
one of them only, and when that one is killed (SIGKILL) another takes the zone over within
two lease periods and the zone's sync goes on."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import settings_data, sim_zone, write_config
from tests.daemon import Daemon
from tests.functional.lease_support import await_take_over
from tests.functional.lease_support import owners as _owners
from tests.functional.lease_support import runs as _runs
from tests.functional.lease_support import status as _status
from tests.functional.lease_support import wait_for as _wait

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

ZONES = ("local", "cloud-a")
LEASES = (*ZONES, "*vclusters")
SYNC_INTERVAL = 0.5
LEASE_SECONDS = 3.0
NODES = ("node-1", "node-2", "node-3")


def _config(tmp_path: Path, node: str, database: dict[str, Any]) -> Path:
    data = settings_data(
        tmp_path,
        zones=[sim_zone("local", "local", hosts=1), sim_zone("cloud-a", "virtual")],
        policy={"version": "leases-1"},
        database=database,
        workers={"count": 2, "poll_interval": 0.2},
        monitor={
            "zone_lease_seconds": LEASE_SECONDS,
            "heartbeat_interval": 0.5,
            "load_interval": 1.0,
            "sync_interval": SYNC_INTERVAL,
            "orphan_interval": 1.0,
            "vcluster_interval": 1.0,
        },
    )
    data["node_id"] = node
    return write_config(tmp_path / f"{node}.toml", data)


def test_each_zone_syncs_in_one_node_and_moves_to_another_when_its_owner_is_killed(
    tmp_path: Path, pg_database_factory: Callable[[], str], daemons: list[Daemon]
) -> None:
    make = pg_database_factory
    database = {"api_url": make(), "cell0_url": make(), "cells": {"cell1": make()}}
    for node in NODES:
        daemons.append(Daemon.start(_config(tmp_path, node, database), tmp_path, node, timeout=90))
    by_node = dict(zip(NODES, daemons, strict=True))

    # Every lease is held, and every node sees the same owner for it.
    _wait("every lease held", lambda: None not in _owners(daemons[0]).values(), 15, daemons)
    owners = _owners(daemons[0])
    assert set(owners) == set(LEASES)
    assert all(_owners(d) == owners for d in daemons[1:])
    for node, d in by_node.items():
        for lease in _status(d)["leases"]:
            assert lease["held_here"] == (lease["owner"] == node), (node, lease)
            since = datetime.fromisoformat(lease["acquired_at"])
            until = datetime.fromisoformat(lease["expires_at"])
            assert since <= datetime.now(UTC) < until + timedelta(seconds=1), lease

    # Over several sync intervals each zone's sync runs in its owner only, once an interval.
    before = {(n, z): _runs(d, f"sync:{z}") for n, d in by_node.items() for z in ZONES}
    t0 = time.monotonic()
    owner_local = by_node[str(owners["local"])]
    start_local = before[(str(owners["local"]), "local")]
    _wait(
        "eight syncs of local",
        lambda: _runs(owner_local, "sync:local") >= start_local + 8,
        30,
        daemons,
    )
    after = {(n, z): _runs(d, f"sync:{z}") for n, d in by_node.items() for z in ZONES}
    elapsed = time.monotonic() - t0
    assert _owners(daemons[0]) == owners  # nothing moved meanwhile
    for zone in ZONES:
        grown = {n: after[(n, zone)] - before[(n, zone)] for n in NODES}
        owner = str(owners[zone])
        assert all(grown[n] == 0 for n in NODES if n != owner), (zone, grown)
        assert all(after[(n, zone)] == 0 for n in NODES if n != owner), (zone, after)
        assert 1 <= grown[owner] <= elapsed / SYNC_INTERVAL + 2, (zone, grown, elapsed)

    # SIGKILL the owner of local: another node holds every lease it had within two periods.
    victim = str(owners["local"])
    lost = [z for z, o in owners.items() if o == victim]
    survivors = [d for n, d in by_node.items() if n != victim]
    killed_at = time.monotonic()
    by_node[victim].kill()

    new_owners = await_take_over(survivors, victim, lost, killed_at, LEASE_SECONDS)

    # The zone's sync goes on, in its new owner only.
    survivor_nodes = [n for n in NODES if n != victim]
    before = {(n, z): _runs(by_node[n], f"sync:{z}") for n in survivor_nodes for z in ZONES}
    heir = by_node[str(new_owners["local"])]
    start = _runs(heir, "sync:local")
    _wait("syncs of local after the take-over", lambda: _runs(heir, "sync:local") >= start + 4, 20,
          survivors)  # fmt: skip
    after = {(n, z): _runs(by_node[n], f"sync:{z}") for n in survivor_nodes for z in ZONES}
    assert _owners(survivors[0]) == new_owners
    for zone in ZONES:
        owner = str(new_owners[zone])
        assert after[(owner, zone)] > before[(owner, zone)], zone
        others = [n for n in survivor_nodes if n != owner]
        assert all(after[(n, zone)] == before[(n, zone)] for n in others), (zone, after, before)
