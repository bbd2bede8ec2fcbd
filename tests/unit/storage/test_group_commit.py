"""Group commit (federator.storage.batching): units of work from racing threads share one
SQLite transaction, and each caller gets exactly its own outcome."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from federator.compute import queue as taskqueue
from federator.storage import migrate
from federator.storage.batching import Discard
from federator.storage.db import Database
from federator.storage.models import Task


class Crash(BaseException):
    """Stands for the process being torn down inside a unit: nothing catches it."""


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    d = Database("api", f"sqlite:///{tmp_path / 'api.sqlite'}", pool_size=40)
    migrate.ensure_current(d, "api", initialise_empty=True)
    yield d
    d.dispose()


def _insert(name: str) -> Callable[[Session], int]:
    def unit(s: Session) -> int:
        row = taskqueue.task_row(name, "build")
        key = s.connection().execute(insert(Task).returning(Task.id), [row]).scalar_one()
        return int(key)

    return unit


def _count(db: Database, name: str | None = None) -> int:
    with db.read() as s:
        stmt = select(func.count()).select_from(Task)
        if name is not None:
            stmt = stmt.where(Task.instance_uuid == name)
        return int(s.scalar(stmt) or 0)


class Outcomes:
    """Runs units in threads and keeps what each caller got back."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.got: dict[str, Any] = {}
        self.threads: list[threading.Thread] = []

    def start(self, name: str, unit: Callable[[Session], Any]) -> None:
        def run() -> None:
            try:
                self.got[name] = ("ok", self.db.batched(unit))
            except BaseException as exc:
                self.got[name] = ("raised", exc)

        t = threading.Thread(target=run, name=name)
        self.threads.append(t)
        t.start()

    def join(self) -> None:
        for t in self.threads:
            t.join(30)
            assert not t.is_alive()


def _queue_length(db: Database) -> int:
    with db.group._cond:
        return len(db.group._pending)


def _hold_leader(db: Database, outcomes: Outcomes) -> threading.Event:
    """Start a leader whose unit waits, holding the gate, until the event returned is set;
    units started meanwhile queue behind it and form the next batch together."""
    release = threading.Event()

    def leader(s: Session) -> int:
        release.wait(30)
        return _insert("leader")(s)

    outcomes.start("leader", leader)
    deadline = time.monotonic() + 10
    while db.group.batches == 0 and not db.group._leading:
        assert time.monotonic() < deadline
        time.sleep(0.001)
    return release


def _await_queue(db: Database, n: int) -> None:
    deadline = time.monotonic() + 10
    while _queue_length(db) < n:
        assert time.monotonic() < deadline, _queue_length(db)
        time.sleep(0.001)


def test_racing_threads_each_get_their_own_committed_row(db: Database) -> None:
    outcomes = Outcomes(db)
    names = [f"t{i}" for i in range(200)]
    barrier = threading.Barrier(20)

    def worker(k: int) -> None:
        barrier.wait()
        for name in names[k::20]:
            outcomes.got[name] = ("ok", db.batched(_insert(name)))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert _count(db) == 200
    ids = [outcomes.got[n][1] for n in names]
    assert len(set(ids)) == 200
    with db.read() as s:
        by_id = {k: v for k, v in s.execute(select(Task.id, Task.instance_uuid)).all()}
    assert all(by_id[outcomes.got[n][1]] == n for n in names)  # each got its own row
    assert db.group.units == 200


def test_units_queued_behind_a_leader_share_one_transaction(db: Database) -> None:
    outcomes = Outcomes(db)
    release = _hold_leader(db, outcomes)
    for i in range(5):
        outcomes.start(f"f{i}", _insert(f"f{i}"))
    _await_queue(db, 5)
    writes = db.write_gate_stats().count
    release.set()
    outcomes.join()
    assert all(v[0] == "ok" for v in outcomes.got.values()), outcomes.got
    assert _count(db) == 6
    # the leader's transaction, then one for the five that queued behind it
    assert db.group.batches == 2 and db.group.units == 6
    # two write transactions in all (the leader's ends after this was read)
    assert db.write_gate_stats().count - writes == 2


def test_a_failing_unit_fails_alone_and_the_others_commit(db: Database) -> None:
    outcomes = Outcomes(db)
    release = _hold_leader(db, outcomes)

    def bad(s: Session) -> int:
        _insert("bad")(s)
        raise ValueError("no such flavor")

    def refused(s: Session) -> int:
        _insert("refused")(s)
        raise Discard(-1)

    outcomes.start("a", _insert("a"))
    _await_queue(db, 1)
    outcomes.start("bad", bad)
    _await_queue(db, 2)
    outcomes.start("refused", refused)
    _await_queue(db, 3)
    outcomes.start("b", _insert("b"))
    _await_queue(db, 4)
    release.set()
    outcomes.join()
    kind, exc = outcomes.got["bad"]
    assert kind == "raised" and isinstance(exc, ValueError) and "no such flavor" in str(exc)
    assert outcomes.got["refused"] == ("ok", -1)
    assert outcomes.got["a"][0] == outcomes.got["b"][0] == "ok"
    assert _count(db, "bad") == 0 and _count(db, "refused") == 0
    assert _count(db, "a") == 1 and _count(db, "b") == 1 and _count(db, "leader") == 1


def test_a_torn_unit_takes_nothing_with_it_and_the_others_run_again(db: Database) -> None:
    outcomes = Outcomes(db)
    release = _hold_leader(db, outcomes)
    runs: dict[str, int] = {}

    def counted(name: str) -> Callable[[Session], int]:
        def unit(s: Session) -> int:
            runs[name] = runs.get(name, 0) + 1
            return _insert(name)(s)

        return unit

    def torn(s: Session) -> int:
        _insert("torn")(s)
        raise Crash

    outcomes.start("a", counted("a"))
    _await_queue(db, 1)
    outcomes.start("torn", torn)
    _await_queue(db, 2)
    outcomes.start("b", counted("b"))
    _await_queue(db, 3)
    release.set()
    outcomes.join()
    kind, exc = outcomes.got["torn"]
    assert kind == "raised" and isinstance(exc, Crash)
    assert outcomes.got["a"][0] == outcomes.got["b"][0] == "ok"
    assert _count(db, "torn") == 0
    assert _count(db, "a") == 1 and _count(db, "b") == 1  # committed once, not twice
    assert runs["a"] == 2 and runs["b"] == 1  # a ran before the tear and again after


@pytest.mark.postgres
def test_postgresql_runs_each_unit_in_its_own_transaction(
    pg_database_factory: Callable[[], str],
) -> None:
    d = Database("api", pg_database_factory(), pool_size=4)
    try:
        migrate.ensure_current(d, "api", initialise_empty=True)

        def refused(s: Session) -> int:
            _insert("refused")(s)
            raise Discard(7)

        assert d.batched(refused) == 7
        key = d.batched(_insert("kept"))
        assert isinstance(key, int)
        assert _count(d, "refused") == 0 and _count(d, "kept") == 1
        assert d.group.batches == 0  # no gate to share: nothing was batched
    finally:
        d.dispose()
