"""The work queue between the API and the workers, kept in the API database.

The API enqueues a task in the same transaction that records the request, so an accepted
request is never lost. Workers take tasks with a conditional update, so two workers (in one
process or in several processes sharing PostgreSQL) never take the same task; tasks of one
instance run one at a time, oldest first.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, and_, bindparam, exists, or_, select, update
from sqlalchemy.orm import Session

from federator.storage.db import Database
from federator.storage.models import Node, Task, utcnow

QUEUED = "queued"
RUNNING = "running"
DONE = "done"
FAILED = "failed"
CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class TaskRef:
    id: int
    instance_uuid: str
    action: str
    attempts: int
    payload: dict[str, Any]


class Retry(Exception):
    """The task should run again later."""

    def __init__(self, delay: float, reason: str) -> None:
        super().__init__(reason)
        self.delay = delay
        self.reason = reason


class Notifier:
    """Wakes idle workers in this process when the API enqueues work."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending = 0

    def notify(self, n: int = 1) -> None:
        with self._cond:
            self._pending += n
            self._cond.notify(n)

    def wait(self, timeout: float) -> None:
        with self._cond:
            if self._pending == 0:
                self._cond.wait(timeout)
            if self._pending:
                self._pending -= 1


def enqueue(
    session: Session,
    instance_uuid: str,
    action: str,
    payload: dict[str, Any] | None = None,
    *,
    run_after: float = 0.0,
) -> Task:
    """Add a task inside the caller's transaction."""
    task = Task(
        instance_uuid=instance_uuid,
        action=action,
        state=QUEUED,
        payload=payload or {},
        run_after=run_after,
    )
    session.add(task)
    return task


def task_row(
    instance_uuid: str,
    action: str,
    payload: dict[str, Any] | None = None,
    *,
    run_after: float = 0.0,
    now: datetime | None = None,
) -> dict[str, Any]:
    """A queued task as the values of an ``insert(Task)``, for callers that insert many
    rows in one statement; the same task :func:`enqueue` adds."""
    when = now or utcnow()
    return {
        "instance_uuid": instance_uuid,
        "action": action,
        "state": QUEUED,
        "node": None,
        "run_after": run_after,
        "attempts": 0,
        "payload": payload or {},
        "error": "",
        "created_at": when,
        "updated_at": when,
    }


_TASKS: Table = Task.__table__  # type: ignore[assignment]
_EARLIER = _TASKS.alias("earlier")


def _runnable(t: Any) -> Any:
    """Ids of ``t``'s runnable tasks, oldest first: queued, due, and no older unfinished
    task of the same instance."""
    return (
        select(t.c.id)
        .where(
            t.c.state == QUEUED,
            t.c.run_after <= bindparam("now"),
            ~exists().where(
                and_(
                    _EARLIER.c.instance_uuid == t.c.instance_uuid,
                    _EARLIER.c.id < t.c.id,
                    or_(_EARLIER.c.state == QUEUED, _EARLIER.c.state == RUNNING),
                )
            ),
        )
        .order_by(t.c.id)
    )


_CANDIDATES_LOCKED = _runnable(_TASKS).limit(8).with_for_update(skip_locked=True, of=_TASKS)
_FIRST_RUNNABLE = _runnable(_TASKS.alias("candidate")).limit(1).scalar_subquery()
# SQLite: writers are serialised, so the oldest runnable task is always free to take:
# finding and taking it is one statement.
_TAKE_FIRST = (
    update(_TASKS)
    .where(_TASKS.c.id == _FIRST_RUNNABLE, _TASKS.c.state == QUEUED)
    .values(state=RUNNING, node=bindparam("node"), updated_at=bindparam("at"))
    .returning(
        _TASKS.c.id, _TASKS.c.instance_uuid, _TASKS.c.action, _TASKS.c.attempts, _TASKS.c.payload
    )
)
_TAKE = (
    update(_TASKS)
    .where(_TASKS.c.id == bindparam("task_id"), _TASKS.c.state == QUEUED)
    .values(state=RUNNING, node=bindparam("node"), updated_at=bindparam("at"))
    .returning(_TASKS.c.instance_uuid, _TASKS.c.action, _TASKS.c.attempts, _TASKS.c.payload)
)
_FINISH = (
    update(_TASKS)
    .where(_TASKS.c.id == bindparam("task_id"))
    .values(state=bindparam("state"), error=bindparam("error"), updated_at=bindparam("at"))
)


class TaskQueue:
    """Take, finish and recover tasks for one node (a broker process)."""

    def __init__(
        self, db: Database, node_id: str, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.db = db
        self.node_id = node_id
        self.clock = clock
        self.notifier = Notifier()

    def take(self) -> TaskRef | None:
        """Claim the oldest runnable task, or return None when there is none."""
        with self.db.write() as s:
            return self.take_in(s)

    def take_in(self, session: Session) -> TaskRef | None:
        """Claim the oldest runnable task inside the caller's write transaction.

        The task is this node's once that transaction commits; if it rolls back, the
        task stays queued. On PostgreSQL the candidates are locked ``SKIP LOCKED``, so
        other brokers taking at the same time pass over them rather than wait.
        """
        # Core statements built once, on the session's connection: this runs with the
        # write gate held, where the ORM's per-statement work would hold it longer.
        conn = session.connection()
        if self.db.is_sqlite:
            row = conn.execute(
                _TAKE_FIRST, {"now": self.clock(), "node": self.node_id, "at": utcnow()}
            ).first()
            if row is None:
                return None
            return TaskRef(row[0], row[1], row[2], row[3], dict(row[4] or {}))
        for task_id in conn.execute(_CANDIDATES_LOCKED, {"now": self.clock()}).scalars().all():
            taken = conn.execute(
                _TAKE, {"task_id": task_id, "node": self.node_id, "at": utcnow()}
            ).first()
            if taken is not None:
                return TaskRef(task_id, taken[0], taken[1], taken[2], dict(taken[3] or {}))
        return None

    def finish(
        self, task_id: int, *, state: str = DONE, error: str = "", take_next: bool = False
    ) -> TaskRef | None:
        """End a running task with ``state``; with ``take_next``, also claim the next
        runnable task in the same transaction and return it (None when there is none or
        ``take_next`` is false)."""
        with self.db.write() as s:
            self.finish_in(s, task_id, state=state, error=error)
            return self.take_in(s) if take_next else None

    def finish_in(
        self, session: Session, task_id: int, *, state: str = DONE, error: str = ""
    ) -> None:
        """End a running task inside the caller's write transaction, so that the task
        ends exactly when the work it recorded there commits."""
        session.connection().execute(
            _FINISH, {"task_id": task_id, "state": state, "error": error[:4000], "at": utcnow()}
        )

    def postpone(
        self, task_id: int, delay: float, *, error: str = "", take_next: bool = False
    ) -> TaskRef | None:
        """Put a running task back in the queue to run after ``delay`` seconds; with
        ``take_next``, also claim the next runnable task in the same transaction and
        return it."""
        with self.db.write() as s:
            s.execute(
                update(Task)
                .where(Task.id == task_id)
                .values(
                    state=QUEUED,
                    node=None,
                    run_after=self.clock() + delay,
                    attempts=Task.attempts + 1,
                    error=error[:4000],
                    updated_at=utcnow(),
                )
            )
            nxt = self.take_in(s) if take_next else None
        self.notifier.notify()
        return nxt

    # --- liveness ---------------------------------------------------------------------

    def heartbeat(self, pid: int) -> None:
        now = self.clock()
        with self.db.write() as s:
            node = s.get(Node, self.node_id)
            if node is None:
                s.add(Node(node_id=self.node_id, pid=pid, heartbeat_at=now))
            else:
                node.pid = pid
                node.heartbeat_at = now

    def requeue_own(self) -> int:
        """At start-up: tasks this node was running when it last stopped go back to the queue."""
        return self._requeue(Task.node == self.node_id)

    def requeue_orphaned(self, stale_after: float) -> int:
        """Tasks of nodes whose heartbeat is older than ``stale_after`` seconds go back."""
        cutoff = self.clock() - stale_after
        dead = select(Node.node_id).where(Node.heartbeat_at < cutoff, Node.node_id != self.node_id)
        orphan = and_(Task.node.is_not(None), Task.node != self.node_id)
        known = select(Node.node_id)
        return self._requeue(and_(orphan, Task.node.in_(dead))) + self._requeue(
            and_(orphan, Task.node.not_in(known))
        )

    def _requeue(self, condition: Any) -> int:
        with self.db.write() as s:
            result = s.execute(
                update(Task)
                .where(Task.state == RUNNING, condition)
                .values(state=QUEUED, node=None, attempts=Task.attempts + 1, updated_at=utcnow())
            )
            n: int = result.rowcount  # type: ignore[attr-defined]
        if n:
            self.notifier.notify(n)
        return n

    def pending(self) -> int:
        with self.db.read() as s:
            return len(s.scalars(select(Task.id).where(Task.state.in_((QUEUED, RUNNING)))).all())
