"""Group commit: many writers' units of work in one SQLite write transaction.

On SQLite every write transaction of a process queues on the database's write gate, and
under load the cost of a transaction is not its statements but the hand-over: the thread
holding the gate must win the interpreter lock back from every other runnable thread after
each call into SQLite, so each ``BEGIN``, statement and ``COMMIT`` waits its turn. A
:class:`GroupCommit` lets threads hand their unit of work (a function of a session) to
whichever of them holds the gate: that leader runs every pending unit in one transaction,
each inside its own savepoint, commits once, and hands each caller its own result or
exception. A caller returns only once its work is committed (or has failed), exactly as
with its own transaction, so nothing a caller was told is done can be lost.

* Units first run one after another with no savepoint. If one raises, that attempt is
  rolled back and the batch runs again with each unit in a savepoint of its own: a unit
  may therefore run more than once, and only its last run's changes are committed; it
  keeps no state outside the session but what it returns (or overwrites).
* A unit that raises an ``Exception`` has its savepoint rolled back and gets the exception;
  the others are not affected. A unit that raises :class:`Discard` has its savepoint
  rolled back and gets the value it carries (a refusal that is an answer, not an error).
* A ``BaseException`` (the process is being torn down) rolls the whole transaction back;
  it reaches its own caller, and the other units go back to the queue to run again, since
  none of their work was committed.
* When the commit itself fails, every unit of the batch gets that error.

On PostgreSQL there is no gate to share, so each unit runs in a transaction of its own.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from sqlalchemy.orm import Session

if TYPE_CHECKING:
    from federator.storage.db import Database

T = TypeVar("T")

MAX_BATCH = 64
"""Units one transaction takes at most, so a long queue cannot hold the gate for long."""


class Discard(Exception):
    """Raised by a unit of work to roll its own changes back and answer ``value``."""

    def __init__(self, value: Any) -> None:
        super().__init__("discarded")
        self.value = value


@dataclass(eq=False)
class _Unit(Generic[T]):
    fn: Callable[[Session], T]
    done: bool = False
    result: Any = None
    error: BaseException | None = None


class GroupCommit:
    """Runs units of work on one database, batching them on SQLite (see module doc)."""

    def __init__(self, db: Database, *, max_batch: int = MAX_BATCH) -> None:
        self.db = db
        self.max_batch = max_batch
        self._cond = threading.Condition()
        self._pending: deque[_Unit[Any]] = deque()
        self._leading = False
        self.batches = 0
        self.units = 0

    def run(self, fn: Callable[[Session], T]) -> T:
        """Run ``fn(session)`` in a write transaction and return what it returns, once
        that transaction has committed.

        :raises: whatever ``fn`` raised (its changes rolled back), or the commit's error.
        """
        if not self.db.is_sqlite or self.db.writing_here():
            # No gate to share (PostgreSQL), or the caller holds it already: a
            # transaction of its own, as a nested write always was.
            try:
                with self.db.write() as s:
                    return fn(s)
            except Discard as d:
                value: T = d.value
                return value
        unit: _Unit[T] = _Unit(fn)
        with self._cond:
            self._pending.append(unit)
            while not unit.done:
                if self._leading:
                    self._cond.wait()
                    continue
                self._leading = True
                batch = [
                    self._pending.popleft() for _ in range(min(self.max_batch, len(self._pending)))
                ]
                self._cond.release()
                try:
                    self._execute(batch)
                finally:
                    self._cond.acquire()
                    self._leading = False
                    self._cond.notify_all()
        if unit.error is not None:
            raise unit.error
        result: T = unit.result
        return result

    def _execute(self, batch: list[_Unit[Any]]) -> None:
        """Run ``batch`` in one transaction; every unit ends done, or back in the queue.

        Optimistic first: the units run one after the other with no savepoint (two
        statements fewer each). If one raises, that attempt is rolled back whole and the
        batch runs again with each unit in its own savepoint.
        """
        if len(batch) == 1:
            self._alone(batch[0])
        elif not self._attempt(batch, savepoints=False):
            self._attempt(batch, savepoints=True)

    def _alone(self, unit: _Unit[Any]) -> None:
        """A batch of one: its own transaction, rolled back whole on any exception."""
        try:
            with self.db.write() as s:
                unit.result = unit.fn(s)
        except Discard as d:
            unit.result = d.value
        except BaseException as exc:
            unit.error = exc
        else:
            self.batches += 1
            self.units += 1
        unit.done = True

    def _attempt(self, batch: list[_Unit[Any]], *, savepoints: bool) -> bool:
        """One transaction over ``batch``. False (nothing committed, every unit reset)
        when, without savepoints, a unit raised an ``Exception``."""
        torn: _Unit[Any] | None = None
        try:
            with self.db.write() as s:
                for unit in batch:
                    try:
                        if savepoints:
                            with s.begin_nested():
                                unit.result = unit.fn(s)
                        else:
                            unit.result = unit.fn(s)
                    except Discard as d:
                        if not savepoints:
                            raise _Retry from None
                        unit.result = d.value
                    except Exception as exc:
                        if not savepoints:
                            raise _Retry from None
                        unit.error = exc
                    except BaseException as exc:
                        unit.error = exc
                        torn = unit
                        raise
        except _Retry:
            for unit in batch:
                unit.result = unit.error = None
            return False
        except BaseException as exc:
            if torn is not None:
                torn.done = True
                others = [u for u in batch if u is not torn]
                for u in others:
                    u.result = u.error = None
                with self._cond:
                    self._pending.extendleft(reversed(others))
                return True
            for unit in batch:
                unit.error = exc
                unit.result = None
                unit.done = True
            return True
        self.batches += 1
        self.units += len(batch)
        for unit in batch:
            unit.done = True
        return True


class _Retry(Exception):
    """A unit failed in an attempt without savepoints: roll back, run with them."""
