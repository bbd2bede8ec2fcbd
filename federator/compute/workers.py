"""The worker pool: threads that take tasks from the queue and run them."""

from __future__ import annotations

import logging
import threading

from sqlalchemy.orm import Session

from federator.compute.actions import Actions
from federator.compute.builder import Builder
from federator.compute.context import ComputeContext
from federator.compute.queue import DONE, FAILED, Retry, TaskRef
from federator.groups import remote as remote_groups
from federator.vclusters import build as vcluster_tasks
from federator.volumes import worker as volume_tasks

LOG = logging.getLogger(__name__)
MAX_TASK_ATTEMPTS = 5


class WorkerPool:
    """``count`` threads running build and lifecycle tasks until ``stop``."""

    def __init__(self, ctx: ComputeContext) -> None:
        self.ctx = ctx
        self.builder = Builder(ctx)
        self.actions = Actions(ctx)
        self.volumes = volume_tasks.VolumeTasks(ctx)
        self.vclusters = vcluster_tasks.ClusterBuilder(ctx)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._busy = 0
        self._busy_lock = threading.Lock()

    def start(self) -> None:
        for n in range(self.ctx.settings.workers.count):
            t = threading.Thread(target=self._loop, name=f"worker-{n}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop taking tasks and wait for running ones to finish (bounded)."""
        self._stop.set()
        self.ctx.queue.notifier.notify(len(self._threads))
        for t in self._threads:
            t.join(timeout)
        self._threads.clear()

    @property
    def busy(self) -> int:
        return self._busy

    def _loop(self) -> None:
        queue = self.ctx.queue
        poll = self.ctx.settings.workers.poll_interval
        task: TaskRef | None = None
        # A task taken in the transaction that ended the previous one is run even when
        # stop was asked meanwhile: it is this node's, as one taken by take() would be.
        while task is not None or not self._stop.is_set():
            if task is None:
                try:
                    task = queue.take()
                except Exception:
                    LOG.exception("worker could not read the task queue; retrying")
                    self._stop.wait(poll)
                    continue
                if task is None:
                    queue.notifier.wait(poll)
                    continue
            with self._busy_lock:
                self._busy += 1
            try:
                task = self.run_one(task, take_next=True)
            except Exception:
                LOG.exception("worker could not end a task; it goes back on restart")
                task = None
            finally:
                with self._busy_lock:
                    self._busy -= 1

    def run_one(self, task: TaskRef, *, take_next: bool = False) -> TaskRef | None:
        """Run ``task`` and end it (done, failed, or postponed to retry).

        With ``take_next`` (and stop not asked), the transaction that ends the task also
        claims this thread's next task, which is returned; a successful build ends its
        task in the transaction that maps the instance. None when nothing was taken.
        """
        queue = self.ctx.queue
        taken: list[TaskRef | None] = []

        def end_build(s: Session) -> None:
            queue.finish_in(s, task.id, state=DONE)
            # Overwrites: a shared transaction may run this more than once (only the
            # last run commits; see federator.storage.batching).
            taken[:] = [queue.take_in(s) if take_next and not self._stop.is_set() else None]

        try:
            if task.action == "build":
                self.builder.build(task, also=end_build)
            elif task.action == remote_groups.CLEANUP:
                remote_groups.cleanup(self.ctx, task)
            elif task.action in volume_tasks.ACTIONS:
                self.volumes.run(task)
            elif task.action in vcluster_tasks.ACTIONS:
                self.vclusters.run(task)
            else:
                self.actions.run(task)
        except Retry as r:
            return queue.postpone(task.id, r.delay, error=r.reason, take_next=self._next(take_next))
        except Exception as exc:
            LOG.exception("task %s (%s %s) failed", task.id, task.action, task.instance_uuid)
            reason = f"{type(exc).__name__}: {exc}"
            if task.attempts + 1 < MAX_TASK_ATTEMPTS:
                return queue.postpone(
                    task.id,
                    min(30.0, 0.5 * 2**task.attempts),
                    error=reason,
                    take_next=self._next(take_next),
                )
            # Out of retries: end the instance's uncertainty with a recorded fault.
            try:
                if task.action == "build":
                    self.builder.fail(task.instance_uuid, f"internal error: {reason}")
                elif task.action in volume_tasks.ACTIONS:
                    self.volumes.abandon(task, reason)
                elif task.action in vcluster_tasks.ACTIONS:
                    self.vclusters.abandon(task, reason)
                else:
                    self.actions.abandon(task, reason)
            except Exception:
                LOG.exception("task %s: could not record the failure", task.id)
                return queue.postpone(task.id, 30.0, error=reason, take_next=self._next(take_next))
            return queue.finish(
                task.id, state=FAILED, error=reason, take_next=self._next(take_next)
            )
        if taken:
            # The build's own transaction ended the task (and may have taken the next).
            return taken[0]
        return queue.finish(task.id, state=DONE, take_next=self._next(take_next))

    def _next(self, take_next: bool) -> bool:
        return take_next and not self._stop.is_set()
