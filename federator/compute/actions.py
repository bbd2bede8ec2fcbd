"""Lifecycle tasks on placed instances: delete, start, stop, reboot, pause, unpause,
suspend, resume.

The API records the intent (``task_state``) and enqueues the task; a worker calls the
driver and writes back what the driver reports. A transient driver failure puts the task
back in the queue with backoff, up to a bound; any other failure clears ``task_state`` and
leaves the reason on the instance's fault, so nothing is left half-done or silently stuck.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import delete, update

from federator.compute import claims
from federator.compute.context import ComputeContext
from federator.compute.queue import Retry, TaskRef
from federator.compute.records import CELL0
from federator.compute.zonestate import record_zone_failure
from federator.driver import (
    AuthError,
    DriverError,
    InstanceNotFound,
    RemoteInstance,
    TransientError,
)
from federator.groups import service as groups
from federator.storage.models import Instance, InstanceMapping, utcnow
from federator.volumes.worker import detach_all

LOG = logging.getLogger(__name__)
MAX_TRANSIENT = 5


class Actions:
    def __init__(self, ctx: ComputeContext) -> None:
        self.ctx = ctx

    def run(self, task: TaskRef) -> None:
        """Run one lifecycle task.

        :raises Retry: a transient failure; the worker re-queues the task.
        """
        cell = self._cell_of(task.instance_uuid)
        if cell is None:
            LOG.info("%s %s: instance no longer exists", task.action, task.instance_uuid)
            return
        with self.ctx.cells[cell].read() as s:
            inst = s.get(Instance, task.instance_uuid)
            if inst is not None:
                s.expunge(inst)
        if inst is None or inst.deleted:
            return
        if task.action == "delete":
            self._delete(task, cell, inst)
        else:
            self._power(task, cell, inst)

    def abandon(self, task: TaskRef, reason: str) -> None:
        """Give up on a task after repeated broker faults, leaving the reason on the instance."""
        cell = self._cell_of(task.instance_uuid)
        if cell is not None:
            self._clear(
                cell, task.instance_uuid, {"fault": _fault(f"{task.action} failed: {reason}")}
            )

    def _cell_of(self, uuid: str) -> str | None:
        with self.ctx.api.read() as s:
            m = s.get(InstanceMapping, uuid)
            return None if m is None else m.cell

    def _delete(self, task: TaskRef, cell: str, inst: Instance) -> None:
        if cell != CELL0 and inst.availability_zone is not None:
            driver = self.ctx.drivers.get(inst.availability_zone)
            if driver is not None:
                try:
                    driver.delete(inst.uuid)
                except (TransientError, AuthError) as exc:
                    self._retry_or_fail(task, cell, inst, exc)
                    return
                except DriverError as exc:
                    self._fail(cell, inst.uuid, "delete", exc, status="ERROR")
                    return
            try:
                detach_all(self.ctx, inst.uuid)
            except (TransientError, AuthError) as exc:
                self._retry_or_fail(task, cell, inst, exc)
                return
        claims.release(self.ctx.api, inst.uuid)
        now = utcnow()
        with self.ctx.cells[cell].write() as s:
            s.execute(
                update(Instance)
                .where(Instance.uuid == inst.uuid)
                .values(
                    deleted=True,
                    status="DELETED",
                    task_state=None,
                    deleted_at=now,
                    updated_at=now,
                )
            )
        with self.ctx.api.write() as s:
            s.execute(delete(InstanceMapping).where(InstanceMapping.instance_uuid == inst.uuid))
            groups.leave(s, inst.uuid)
        LOG.info("delete %s: done", inst.uuid)

    def _power(self, task: TaskRef, cell: str, inst: Instance) -> None:
        driver = self.ctx.drivers.get(inst.availability_zone or "")
        if driver is None:
            self._clear(cell, inst.uuid, {"fault": _fault("zone is not configured")})
            return
        calls = {
            "start": driver.start,
            "stop": driver.stop,
            "pause": driver.pause,
            "unpause": driver.unpause,
            "suspend": driver.suspend,
            "resume": driver.resume,
        }
        try:
            if task.action == "reboot":
                remote = driver.reboot(inst.uuid, hard=bool(task.payload.get("hard")))
            else:
                remote = calls[task.action](inst.uuid)
        except InstanceNotFound as exc:
            self._fail(cell, inst.uuid, task.action, exc, status="ERROR")
            return
        except (TransientError, AuthError) as exc:
            self._retry_or_fail(task, cell, inst, exc)
            return
        except DriverError as exc:
            self._fail(cell, inst.uuid, task.action, exc)
            return
        self._apply(cell, inst.uuid, remote)
        LOG.info("%s %s: %s", task.action, inst.uuid, remote.state.value)

    def _retry_or_fail(self, task: TaskRef, cell: str, inst: Instance, exc: DriverError) -> None:
        if isinstance(exc, AuthError):
            record_zone_failure(self.ctx.api, exc.zone, exc.reason, force_down=True)
        if task.attempts + 1 >= MAX_TRANSIENT:
            self._fail(cell, inst.uuid, task.action, exc)
            return
        delay = self.ctx.settings.workers.transient_backoff * (2**task.attempts)
        raise Retry(max(delay, 0.05), f"{task.action} {inst.uuid}: {exc.message}")

    def _apply(self, cell: str, uuid: str, remote: RemoteInstance) -> None:
        self._clear(
            cell,
            uuid,
            {
                "status": remote.state.value,
                "addresses": {k: list(v) for k, v in remote.addresses.items()},
                "fault": None,
            },
        )

    def _fail(
        self, cell: str, uuid: str, action: str, exc: DriverError, status: str | None = None
    ) -> None:
        LOG.error("%s %s failed: %s", action, uuid, exc.message)
        values: dict[str, Any] = {"fault": _fault(f"{action} failed: {exc.message}", exc.code)}
        if status:
            values["status"] = status
        self._clear(cell, uuid, values)

    def _clear(self, cell: str, uuid: str, values: dict[str, Any]) -> None:
        with self.ctx.cells[cell].write() as s:
            s.execute(
                update(Instance)
                .where(Instance.uuid == uuid)
                .values(task_state=None, updated_at=utcnow(), **values)
            )


def _fault(message: str, code: str = "federator.driver.permanent") -> dict[str, Any]:
    return {
        "code": code,
        "reason": code.rsplit(".", 1)[-1],
        "message": message,
        "details": [],
        "created": utcnow().isoformat(),
    }
