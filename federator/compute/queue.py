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
from typing import Any

from sqlalchemy import and_, exists, select, update
from sqlalchemy.orm import Session, aliased

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
        now = self.clock()
        earlier = aliased(Task)
        blocked = exists().where(
            and_(
                earlier.instance_uuid == Task.instance_uuid,
                earlier.id < Task.id,
                earlier.state.in_((QUEUED, RUNNING)),
            )
        )
        query = (
            select(Task.id)
            .where(Task.state == QUEUED, Task.run_after <= now, ~blocked)
            .order_by(Task.id)
            .limit(8)
        )
        with self.db.write() as s:
            if not self.db.is_sqlite:
                query = query.with_for_update(skip_locked=True, of=Task)
            for task_id in s.scalars(query).all():
                taken = s.execute(
                    update(Task)
                    .where(Task.id == task_id, Task.state == QUEUED)
                    .values(state=RUNNING, node=self.node_id, updated_at=utcnow())
                )
                if taken.rowcount == 1:  # type: ignore[attr-defined]
                    t = s.get_one(Task, task_id)
                    return TaskRef(t.id, t.instance_uuid, t.action, t.attempts, dict(t.payload))
        return None

    def finish(self, task_id: int, *, state: str = DONE, error: str = "") -> None:
        with self.db.write() as s:
            s.execute(
                update(Task)
                .where(Task.id == task_id)
                .values(state=state, error=error[:4000], updated_at=utcnow())
            )

    def postpone(self, task_id: int, delay: float, *, error: str = "") -> None:
        """Put a running task back in the queue to run after ``delay`` seconds."""
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
        self.notifier.notify()

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
