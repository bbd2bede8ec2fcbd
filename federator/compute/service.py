"""What the API asks of the compute layer: accept boots, list, show, delete and act.

Accepting a boot writes the build request, request spec, instance mapping and build task in
one API-database transaction, then wakes a worker: the request is durable before the API
answers 202, and the answer does not wait for placement.
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert, update
from sqlalchemy.orm import Session

from federator.compute import queue as taskqueue
from federator.compute.bootspec import BootSpec
from federator.compute.context import ComputeContext
from federator.compute.records import (
    CELL0,
    ListFilters,
    Records,
    ServerView,
    view_of_build,
)
from federator.compute.refs import resolve
from federator.exception import BadRequest, Conflict, InstanceInvalidState, NotFound
from federator.groups import service as groups
from federator.storage.models import (
    BuildRequest,
    Instance,
    InstanceMapping,
    RequestSpec,
    Task,
    utcnow,
)

# The build request's (attribute, column) pairs, as given to the accept transaction's insert.
_BUILD_COLUMNS = tuple(
    (attr, column.name) for attr, column in BuildRequest.__mapper__.columns.items()
)

# Which status each action needs, and the task_state it sets while it runs.
_ACTIONS: dict[str, tuple[frozenset[str], str]] = {
    "start": (frozenset({"SHUTOFF"}), "powering-on"),
    "stop": (frozenset({"ACTIVE", "ERROR"}), "powering-off"),
    "reboot": (frozenset({"ACTIVE", "SHUTOFF"}), "rebooting"),
    "pause": (frozenset({"ACTIVE"}), "pausing"),
    "unpause": (frozenset({"PAUSED"}), "unpausing"),
    "suspend": (frozenset({"ACTIVE"}), "suspending"),
    "resume": (frozenset({"SUSPENDED"}), "resuming"),
}
# Actions only zones whose driver has the ``pause_suspend`` capability can carry out.
_PAUSE_SUSPEND = frozenset({"pause", "unpause", "suspend", "resume"})


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Who is asking, from their validated token. A non-admin sees and acts on its own
    project's instances only; another project's answer 404, never 403."""

    project_id: str
    user_id: str
    is_admin: bool


@dataclass(frozen=True, slots=True)
class BootRequest:
    name: str
    flavor_ref: str
    image_ref: str
    availability_zone: str | None = None
    metadata: dict[str, str] | None = None
    min_count: int = 1
    max_count: int = 1
    group: str | None = None
    group_field: str = "os:scheduler_hints.group"
    """Where the request named the group, for the error that says it does not exist."""


class ComputeService:
    def __init__(self, ctx: ComputeContext) -> None:
        self.ctx = ctx
        self.records = Records(ctx.api, ctx.cells, ctx.flavor_snapshot)

    # --- boot ------------------------------------------------------------------------

    def boot(self, rc: RequestContext, req: BootRequest) -> list[ServerView]:
        """Accept ``max_count`` boots; each ends ACTIVE in a cell or ERROR in cell0.

        :raises BadRequest: unknown flavor, image or availability zone, or bad counts.
        """
        refs = resolve(
            self.ctx.settings,
            req.flavor_ref,
            req.image_ref,
            req.availability_zone,
            field_prefix="server.",
            flavor_field="flavorRef",
            image_field="imageRef",
            db=self.ctx.api,
        )
        flavor, image, az = refs.flavor, refs.image, refs.availability_zone
        if not 1 <= req.min_count <= req.max_count:
            raise BadRequest(
                "min_count must be at least 1 and no more than max_count",
                problems=[
                    {"field": "server.min_count", "message": "must be between 1 and max_count"}
                ],
            )
        count = req.max_count
        now = utcnow()
        snapshot = self.ctx.flavor_snapshot(flavor.id)
        # Every row and view is made before the write gate is taken: the transaction
        # only inserts, one statement per table for all ``count`` instances.
        builds: list[dict[str, Any]] = []
        specs: list[dict[str, Any]] = []
        mappings: list[dict[str, Any]] = []
        tasks: list[dict[str, Any]] = []
        accepted: list[ServerView] = []
        for n in range(count):
            uuid = str(uuidlib.uuid4())
            name = req.name if count == 1 else f"{req.name}-{n + 1}"
            spec = BootSpec(
                name=name,
                project_id=rc.project_id,
                user_id=rc.user_id,
                flavor_id=flavor.id,
                image_id=image.id,
                availability_zone=az,
                metadata=dict(req.metadata or {}),
                group=req.group,
            )
            br = BuildRequest(
                instance_uuid=uuid,
                project_id=rc.project_id,
                user_id=rc.user_id,
                name=name,
                flavor_id=flavor.id,
                image_id=image.id,
                availability_zone=az,
                metadata_=dict(req.metadata or {}),
                zone=None,
                host=None,
                attempts=0,
                placement={},
                created_at=now,
                updated_at=now,
            )
            builds.append({column: getattr(br, attr) for attr, column in _BUILD_COLUMNS})
            specs.append({"instance_uuid": uuid, "spec": spec.to_dict()})
            mappings.append(
                {
                    "instance_uuid": uuid,
                    "cell": None,
                    "project_id": rc.project_id,
                    "created_at": now,
                }
            )
            tasks.append(taskqueue.task_row(uuid, "build", now=now))
            accepted.append(view_of_build(br, dict(snapshot)))

        def accept(s: Session) -> None:
            # Core executemany on the session's connection, in foreign-key order.
            conn = s.connection()
            conn.execute(insert(BuildRequest), builds)
            conn.execute(insert(RequestSpec), specs)
            conn.execute(insert(InstanceMapping), mappings)
            conn.execute(insert(Task), tasks)
            if req.group is not None:
                groups.join(s, rc, req.group, [v.uuid for v in accepted], field=req.group_field)

        # Concurrent accepts share a transaction on SQLite (group commit); each returns
        # once its own rows are committed.
        self.ctx.api.batched(accept)
        self.ctx.queue.notifier.notify(count)
        return accepted

    # --- read ------------------------------------------------------------------------

    def get(self, rc: RequestContext, uuid: str) -> ServerView:
        """:raises NotFound: unknown, deleted, or another project's (never 403)."""
        view = self.records.find(uuid)
        if view is None or not self._visible(rc, view):
            raise NotFound(kind="server", ident=uuid)
        return view

    def list(
        self,
        rc: RequestContext,
        filters: ListFilters,
        *,
        all_tenants: bool,
        limit: int,
        marker: str | None,
    ) -> list[ServerView]:
        if not (rc.is_admin and all_tenants) and filters.project_id is None:
            filters = ListFilters(
                project_id=rc.project_id,
                name=filters.name,
                status=filters.status,
                availability_zone=filters.availability_zone,
                host=filters.host,
            )
        marker_view = None
        if marker:
            marker_view = self.records.find(marker)
            if marker_view is None or not self._visible(rc, marker_view):
                raise BadRequest(
                    f"marker {marker!r} not found",
                    problems=[{"field": "marker", "message": "not found"}],
                )
        return self.records.list_servers(filters, limit=limit, marker=marker_view)

    def _visible(self, rc: RequestContext, view: ServerView) -> bool:
        return rc.is_admin or view.project_id == rc.project_id

    # --- delete and actions ----------------------------------------------------------

    def delete(self, rc: RequestContext, uuid: str) -> None:
        """Accept a delete. cell0 records go at once; others through a task."""
        view = self.get(rc, uuid)
        if view.in_cell0:
            with self.ctx.cells[CELL0].write() as s:
                s.execute(
                    update(Instance)
                    .where(Instance.uuid == uuid)
                    .values(
                        deleted=True, status="DELETED", deleted_at=utcnow(), updated_at=utcnow()
                    )
                )
            with self.ctx.api.write() as s:
                s.execute(delete(InstanceMapping).where(InstanceMapping.instance_uuid == uuid))
                groups.leave(s, uuid)
            return
        if view.cell is not None:
            with self.ctx.cells[view.cell].write() as s:
                s.execute(
                    update(Instance)
                    .where(Instance.uuid == uuid, Instance.deleted.is_(False))
                    .values(task_state="deleting", updated_at=utcnow())
                )
        with self.ctx.api.write() as s:
            taskqueue.enqueue(s, uuid, "delete")
        self.ctx.queue.notifier.notify()

    def action(self, rc: RequestContext, uuid: str, action: str, *, hard: bool = False) -> None:
        """Accept start, stop, reboot, pause, unpause, suspend or resume.

        :raises InstanceInvalidState: the instance is in cell0, building, busy, or in a
            status the action does not apply to (HTTP 409).
        """
        view = self.get(rc, uuid)
        allowed, task_state = _ACTIONS[action]
        if view.in_cell0 or view.cell is None or view.status not in allowed:
            raise InstanceInvalidState(action=action, uuid=uuid, status=_describe(view))
        driver = self.ctx.drivers.get(view.availability_zone or "")
        if action in _PAUSE_SUSPEND and (driver is None or not driver.capabilities().pause_suspend):
            raise Conflict(
                reason=f"cannot {action} instance {uuid}: availability zone "
                f"{view.availability_zone} does not support pause and suspend"
            )
        with self.ctx.cells[view.cell].write() as s:
            moved = s.execute(
                update(Instance)
                .where(
                    Instance.uuid == uuid,
                    Instance.task_state.is_(None),
                    Instance.status.in_(allowed),
                    Instance.deleted.is_(False),
                )
                .values(task_state=task_state, updated_at=utcnow())
            )
            if moved.rowcount != 1:  # type: ignore[attr-defined]
                raise InstanceInvalidState(action=action, uuid=uuid, status=_describe(view))
        with self.ctx.api.write() as s:
            taskqueue.enqueue(s, uuid, action, {"hard": hard} if action == "reboot" else None)
        self.ctx.queue.notifier.notify()


def _describe(view: ServerView) -> str:
    if view.in_cell0:
        return "ERROR in cell0 (never placed; only delete is allowed)"
    if view.task_state:
        return f"{view.status} with task {view.task_state} in progress"
    return view.status


__all__: Sequence[str] = ["BootRequest", "ComputeService", "RequestContext"]
