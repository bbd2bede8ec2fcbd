"""Engines and transactions.

Every database (the API database, cell0, and each cell) is a :class:`Database`: an engine
plus two kinds of transaction. ``read()`` is an ordinary transaction. ``write()`` takes the
write lock up front on SQLite (``BEGIN IMMEDIATE``), so two writers never deadlock upgrading
a shared lock, and busy writers wait (``busy_timeout``) instead of failing. Within one
process, writers to a SQLite file also queue on a lock first: SQLite's busy handler polls
with sleeps of up to 100 ms, which under a burst of writers turns into seconds of tail
latency, while a lock hands over the moment the writer before commits. On PostgreSQL
both are plain READ COMMITTED transactions; claims rely on conditional ``UPDATE`` statements,
which PostgreSQL re-evaluates after a row lock wait.

Every ``write()`` adds to cheap counters (:class:`WriteGateStats`): how long writers waited
for the gate and how long they held it. :func:`write_gate_stats` reads them for every
database of the process, so a benchmark can tell queueing from work.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from federator.storage.batching import GroupCommit

LOG = logging.getLogger(__name__)
T = TypeVar("T")
SQLITE_BUSY_TIMEOUT_MS = 30_000


@dataclass(frozen=True, slots=True)
class WriteGateStats:
    """Totals over every ``write()`` of a database since it was opened.

    ``wait_s``: seconds spent waiting for the process's write gate (always ~0 on
    PostgreSQL, which has no gate); ``held_s``: seconds from holding the gate until the
    transaction ended (commit or rollback included), summed over writers, so on
    PostgreSQL, where writers overlap, it may exceed the wall time; ``count``: writes.
    A nested ``write()`` counts its own time as well as its enclosing one's.
    """

    wait_s: float = 0.0
    held_s: float = 0.0
    count: int = 0

    def __add__(self, other: WriteGateStats) -> WriteGateStats:
        return WriteGateStats(
            self.wait_s + other.wait_s, self.held_s + other.held_s, self.count + other.count
        )


# Every open Database of the process, for write_gate_stats(); weak so that it keeps none.
_OPEN: weakref.WeakSet[Database] = weakref.WeakSet()


class Database:
    """One database: an engine and its transactions.

    :param name: short label used in logs and errors ("api", "cell0", "cell1").
    """

    def __init__(self, name: str, url: str, *, pool_size: int = 20) -> None:
        self.name = name
        self.url = url
        parsed = make_url(url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        kwargs: dict[str, Any] = {"future": True}
        if self.is_sqlite:
            database = parsed.database
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
            kwargs["pool_size"] = pool_size
            kwargs["max_overflow"] = pool_size
        else:
            kwargs["pool_size"] = pool_size
            kwargs["max_overflow"] = pool_size * 2
            kwargs["pool_pre_ping"] = True
        self.engine: Engine = create_engine(url, **kwargs)
        if self.is_sqlite:
            _install_sqlite_hooks(self.engine)
        self._reader = sessionmaker(self.engine, expire_on_commit=False)
        self._writer = sessionmaker(
            self.engine.execution_options(sqlite_begin="IMMEDIATE"), expire_on_commit=False
        )
        # Re-entrant so that a nested write fails on busy_timeout as before, not hangs.
        self._write_gate: AbstractContextManager[object] = (
            threading.RLock() if self.is_sqlite else nullcontext()
        )
        self._local = threading.local()
        self.group = GroupCommit(self)
        # Guards only the three counters below; held for a few additions per write.
        self._stats_lock = threading.Lock()
        self._wait_s = 0.0
        self._held_s = 0.0
        self._writes = 0
        _OPEN.add(self)

    def write_gate_stats(self) -> WriteGateStats:
        """The write counters of this database so far (see :class:`WriteGateStats`)."""
        with self._stats_lock:
            return WriteGateStats(self._wait_s, self._held_s, self._writes)

    def describe(self) -> str:
        """The URL without its password, safe for logs and errors."""
        return make_url(self.url).render_as_string(hide_password=True)

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A transaction for reading; ended (not committed) when the block exits.

        Objects read stay usable afterwards, detached with their loaded values.
        """
        with self._reader() as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A transaction that commits on success and rolls back on any exception."""
        asked = time.perf_counter()
        with self._write_gate:
            got = time.perf_counter()
            self._local.depth = getattr(self._local, "depth", 0) + 1
            try:
                with self._writer() as session:
                    try:
                        yield session
                        session.commit()
                    except BaseException:
                        session.rollback()
                        raise
            finally:
                self._local.depth -= 1
                done = time.perf_counter()
                with self._stats_lock:
                    self._wait_s += got - asked
                    self._held_s += done - got
                    self._writes += 1

    def writing_here(self) -> bool:
        """Whether the calling thread is inside a :meth:`write` of this database."""
        return bool(getattr(self._local, "depth", 0))

    def batched(self, fn: Callable[[Session], T]) -> T:
        """Run ``fn(session)`` in a write transaction, possibly shared with other threads'
        units of work (group commit on SQLite: :mod:`federator.storage.batching`); returns
        what ``fn`` returns once its work has committed.

        ``fn`` must not open another write on this database, and may run in another
        thread than the caller's. It may raise :class:`~federator.storage.batching.Discard`
        to roll its own changes back and answer the value it carries.
        """
        return self.group.run(fn)

    def dispose(self) -> None:
        self.engine.dispose()


def write_gate_stats() -> dict[str, WriteGateStats]:
    """The write counters of every database open in this process, summed by name
    ("api", "cell0", ...); a name opened twice (say, by two brokers) adds up."""
    totals: dict[str, WriteGateStats] = {}
    for db in list(_OPEN):
        totals[db.name] = totals.get(db.name, WriteGateStats()) + db.write_gate_stats()
    return totals


def _install_sqlite_hooks(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" hook issue BEGIN itself (pysqlite's implicit BEGIN
        # would otherwise defer the write lock and invite SQLITE_BUSY on upgrade).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")
