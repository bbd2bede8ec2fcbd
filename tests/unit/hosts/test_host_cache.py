"""The scheduler's host cache with claims in flight: a hold shows in the table at once,
survives every refresh from the database, and goes exactly once when its claim settles."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, update

from federator.compute.claims import Usage
from federator.hosts.inventory import HostCache
from federator.storage.db import Database
from federator.storage.models import ApiBase, Host, Zone


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database("api", f"sqlite:///{tmp_path / 'api.sqlite'}")
    ApiBase.metadata.create_all(database.engine)
    with database.write() as s:
        s.add(Zone(name="a", kind="local", driver="sim", cell="cell1"))
        s.flush()
        for name in ("a1", "a2"):
            s.add(Host(zone="a", name=name, az="a", vcpus=8, ram_mb=8192, disk_gb=100,
                       enabled=True))  # fmt: skip
    yield database
    database.dispose()


def used(cache: HostCache, name: str) -> tuple[int, int, int, int]:
    t = cache.table
    i = t.index_of("a", name)
    assert i is not None
    return int(t.vcpus_used[i]), int(t.ram_used[i]), int(t.disk_used[i]), int(t.instances[i])


def host_id(db: Database, name: str) -> int:
    with db.read() as s:
        found = s.scalar(select(Host.id).where(Host.name == name))
    assert found is not None
    return int(found)


def test_a_hold_shows_at_once_and_survives_refreshes_and_reloads(db: Database) -> None:
    cache = HostCache(db)
    cache.reload()
    hold = cache.hold("a", "a1", 2, 2048, 20)
    assert used(cache, "a1") == (2, 2048, 20, 1)
    # Another claim committed meanwhile: the database says 1 vCPU; the hold stays on top.
    with db.write() as s:
        s.execute(
            update(Host)
            .where(Host.name == "a1")
            .values(vcpus_used=1, ram_used_mb=512, disk_used_gb=5, instances=1)
        )
    cache.refresh_zone("a")
    assert used(cache, "a1") == (3, 2560, 25, 2)
    cache.reload()
    assert used(cache, "a1") == (3, 2560, 25, 2)
    # The claim commits: the database's figures now include it, and the hold goes.
    cache.settle(hold, Usage(host_id(db, "a1"), 3, 2560, 25, 2))
    assert used(cache, "a1") == (3, 2560, 25, 2)
    cache.reload()
    assert used(cache, "a1") == (1, 512, 5, 1)  # the database's own figures (no claim row)


def test_a_refused_claim_gives_its_hold_back(db: Database) -> None:
    cache = HostCache(db)
    cache.reload()
    first = cache.hold("a", "a2", 1, 1024, 10)
    second = cache.hold("a", "a2", 1, 1024, 10)
    assert used(cache, "a2") == (2, 2048, 20, 2)
    cache.settle(first)
    assert used(cache, "a2") == (1, 1024, 10, 1)
    cache.settle(second, Usage(host_id(db, "a2"), 1, 1024, 10, 1))
    assert used(cache, "a2") == (1, 1024, 10, 1)
    assert cache.hold("a", "nowhere", 1, 1, 1) is None
    cache.settle(None)  # nothing held: nothing happens


def test_holds_made_by_racing_threads_add_up_exactly(db: Database) -> None:
    cache = HostCache(db)
    cache.reload()
    barrier = threading.Barrier(8)

    def run() -> None:
        barrier.wait()
        for _ in range(50):
            h = cache.hold("a", "a1", 1, 10, 1)
            cache.settle(h)
            cache.hold("a", "a1", 1, 10, 1)

    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert used(cache, "a1") == (400, 4000, 400, 400)
