"""Zone leases on SQLite and PostgreSQL: take, renew, refuse while held, take over after
expiry, give up on a clean stop; nodes racing for one lease never both get it; and the
monitor of a node without a zone's lease leaves that zone's jobs to its owner."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from federator.broker import Broker
from federator.monitor import leases
from federator.monitor.leases import VCLUSTERS, LeaseKeeper
from federator.storage.db import Database
from federator.storage.models import ApiBase
from tests.conftest import make_settings, sim_zone

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
PERIOD = 10.0
T0 = 1_000_000.0


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """An API database with its tables, on the backend under test."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'api.sqlite'}"
    else:
        make: Callable[[], str] = request.getfixturevalue("pg_database_factory")
        url = make()
    database = Database("api", url)
    ApiBase.metadata.create_all(database.engine)
    yield database
    database.dispose()


def test_a_free_lease_is_taken_then_renewed_keeping_its_start(db: Database) -> None:
    taken = leases.acquire(db, "cloud-a", "node-1", PERIOD, now=T0)
    assert taken == leases.Lease("cloud-a", "node-1", T0, T0 + PERIOD)
    renewed = leases.acquire(db, "cloud-a", "node-1", PERIOD, now=T0 + 4)
    assert renewed == leases.Lease("cloud-a", "node-1", T0, T0 + 4 + PERIOD)
    assert leases.list_leases(db) == {"cloud-a": renewed}


def test_a_live_lease_is_refused_to_another_node_and_left_as_it_was(db: Database) -> None:
    held = leases.acquire(db, "cloud-a", "node-1", PERIOD, now=T0)
    assert leases.acquire(db, "cloud-a", "node-2", PERIOD, now=T0 + PERIOD - 0.001) is None
    assert leases.list_leases(db) == {"cloud-a": held}
    # Leases of other zones are independent.
    other = leases.acquire(db, "cloud-b", "node-2", PERIOD, now=T0 + 1)
    assert other is not None and other.owner == "node-2"


def test_an_expired_lease_is_taken_over_and_its_old_owner_cannot_renew_it(
    db: Database,
) -> None:
    leases.acquire(db, "cloud-a", "node-1", PERIOD, now=T0)
    later = T0 + PERIOD
    taken = leases.acquire(db, "cloud-a", "node-2", PERIOD, now=later)
    assert taken == leases.Lease("cloud-a", "node-2", later, later + PERIOD)
    assert leases.acquire(db, "cloud-a", "node-1", PERIOD, now=later + 1) is None
    assert leases.list_leases(db)["cloud-a"].owner == "node-2"


def test_a_node_renews_its_own_expired_lease_nobody_took(db: Database) -> None:
    leases.acquire(db, "cloud-a", "node-1", PERIOD, now=T0)
    again = leases.acquire(db, "cloud-a", "node-1", PERIOD, now=T0 + 3 * PERIOD)
    assert again == leases.Lease("cloud-a", "node-1", T0, T0 + 4 * PERIOD)


def test_released_leases_are_free_at_once(db: Database) -> None:
    for zone in ("cloud-a", "cloud-b"):
        leases.acquire(db, zone, "node-1", PERIOD, now=T0)
    leases.acquire(db, "local", "node-2", PERIOD, now=T0)
    assert leases.release(db, "node-1") == 2
    assert set(leases.list_leases(db)) == {"local"}
    taken = leases.acquire(db, "cloud-a", "node-2", PERIOD, now=T0 + 1)
    assert taken is not None and taken.acquired_at == T0 + 1
    assert leases.release(db, "node-2", ["cloud-a"]) == 1
    assert set(leases.list_leases(db)) == {"local"}


def _race(db: Database, zone: str, nodes: list[str], now: float) -> list[leases.Lease | None]:
    """Every node asks for ``zone``'s lease at the same moment, each on its own thread."""
    barrier = threading.Barrier(len(nodes))
    results: list[leases.Lease | None] = [None] * len(nodes)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait(10)
            results[i] = leases.acquire(db, zone, nodes[i], PERIOD, now=now)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(nodes))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    return results


def test_nodes_racing_for_a_free_or_an_expired_lease_never_both_win(db: Database) -> None:
    nodes = [f"node-{i}" for i in range(8)]
    for round_ in range(5):
        zone = f"zone-{round_}"
        # A lease nobody ever held: the INSERT race.
        won = [r for r in _race(db, zone, nodes, T0) if r is not None]
        assert len(won) == 1, won
        assert leases.list_leases(db)[zone] == won[0]
        # The same lease once expired: the conditional UPDATE race, its holder included.
        later = T0 + PERIOD
        again = [r for r in _race(db, zone, nodes, later) if r is not None]
        assert len(again) == 1, again
        assert again[0].expires_at == later + PERIOD
        assert leases.list_leases(db)[zone] == again[0]


def test_the_keeper_holds_what_it_renewed_until_its_own_expiry(db: Database) -> None:
    now = [T0]
    one = LeaseKeeper(db, "node-1", ["cloud-a", VCLUSTERS], PERIOD, clock=lambda: now[0])
    two = LeaseKeeper(db, "node-2", ["cloud-a", VCLUSTERS], PERIOD, clock=lambda: now[0])
    assert one.renew() == "2 of 2 lease(s) held"
    assert two.renew() == "0 of 2 lease(s) held"
    assert one.held() == ["cloud-a", VCLUSTERS] and two.held() == []
    # Node one stops renewing (a crash): it stops holding at the expiry it wrote, and
    # node two takes the zones at its first heartbeat after it.
    now[0] = T0 + PERIOD
    assert not one.holds("cloud-a")
    two.renew()
    assert two.held() == ["cloud-a", VCLUSTERS]
    one.renew()
    assert one.held() == []
    # A clean stop gives the leases up: the other node takes them at once.
    assert two.release() == 2
    assert two.held() == []
    one.renew()
    assert one.held() == ["cloud-a", VCLUSTERS]


# --- the monitor -------------------------------------------------------------------------


def _open(tmp_path: Path, node: str, database: dict[str, Any] | None = None) -> Broker:
    """A broker on the databases shared by every node of the test; its jobs tick hourly,
    so only the runs a test asks for happen."""
    hour = 3600.0
    settings = make_settings(
        tmp_path,
        node_id=node,
        zones=[sim_zone("local", "local", hosts=1), sim_zone("cloud-a", "virtual")],
        policy={"version": "leases-1"},
        database=database,
        monitor={
            "zone_lease_seconds": hour,
            "heartbeat_interval": hour,
            "load_interval": hour,
            "sync_interval": hour,
            "orphan_interval": hour,
            "vcluster_interval": hour,
        },
    )
    broker = Broker.open(settings)
    broker.start(workers=False)
    return broker


def test_only_the_lease_holder_runs_zone_jobs_and_a_clean_stop_hands_them_over(
    tmp_path: Path,
) -> None:
    first = _open(tmp_path, "node-1")
    second = _open(tmp_path, "node-2")
    try:
        assert first.monitor.leases.held() == ["local", "cloud-a", VCLUSTERS]
        assert second.monitor.leases.held() == []
        for job in ("sync:local", "load:cloud-a", "orphans:cloud-a", "vclusters"):
            done = first.monitor.run_now(job)
            skipped = second.monitor.run_now(job)
            assert (done.runs, done.skipped) == (1, 0), job
            assert (skipped.runs, skipped.skipped) == (0, 1), job
        # Per-process jobs run everywhere.
        assert second.monitor.run_now("hosts-cache").runs == 1
        assert "0 of 3 lease(s) held" in second.monitor.run_now("heartbeat").last_result

        first.stop()
        assert "3 of 3 lease(s) held" in second.monitor.run_now("heartbeat").last_result
        assert second.monitor.run_now("sync:local").runs == 1
        owners = {z: lease.owner for z, lease in leases.list_leases(second.dbs.api).items()}
        assert owners == {"local": "node-2", "cloud-a": "node-2", VCLUSTERS: "node-2"}
    finally:
        first.stop()
        second.stop()
