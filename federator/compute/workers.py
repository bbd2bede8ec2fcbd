"""The worker pool: threads that take tasks from the queue and run them."""

from __future__ import annotations

import logging
import threading

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
        while not self._stop.is_set():
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
                self.run_one(task)
            finally:
                with self._busy_lock:
                    self._busy -= 1

    def run_one(self, task: TaskRef) -> None:
        queue = self.ctx.queue
        try:
            if task.action == "build":
                self.builder.build(task)
            elif task.action == remote_groups.CLEANUP:
                remote_groups.cleanup(self.ctx, task)
            elif task.action in volume_tasks.ACTIONS:
                self.volumes.run(task)
            elif task.action in vcluster_tasks.ACTIONS:
                self.vclusters.run(task)
            else:
                self.actions.run(task)
        except Retry as r:
            queue.postpone(task.id, r.delay, error=r.reason)
            return
        except Exception as exc:
            LOG.exception("task %s (%s %s) failed", task.id, task.action, task.instance_uuid)
            reason = f"{type(exc).__name__}: {exc}"
            if task.attempts + 1 < MAX_TASK_ATTEMPTS:
                queue.postpone(task.id, min(30.0, 0.5 * 2**task.attempts), error=reason)
                return
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
                queue.postpone(task.id, 30.0, error=reason)
                return
            queue.finish(task.id, state=FAILED, error=reason)
            return
        queue.finish(task.id, state=DONE)
