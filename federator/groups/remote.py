"""Server groups made in remote clouds, one per group and zone, and their clean-up.

The ``server_group_zones`` row is the one truth of which remote group serves a zone:
a driver's ``create_server_group`` is idempotent on the broker's group uuid, and should
two brokers still make two groups at once, the row written first wins and the other
broker deletes its own before any member joins it. The row is written only while the
group exists (its row locked), and deleting a group turns every row into a clean-up
task in the same transaction, so no remote group is left behind unrecorded.
"""

from __future__ import annotations

import logging

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from federator.compute import queue as taskqueue
from federator.compute.context import ComputeContext
from federator.compute.queue import Retry, TaskRef
from federator.driver import AuthError, DriverError, ServerGroupSpec, TransientError
from federator.groups.placement import GroupState
from federator.groups.rules import ANTI_AFFINITY
from federator.storage.models import ServerGroup, ServerGroupZone

LOG = logging.getLogger(__name__)
CLEANUP = "group_cleanup"
MAX_CLEANUP_ATTEMPTS = 20


class GroupGone(Exception):
    """The group was deleted while its remote group was being made."""


def _spec(ctx: ComputeContext, state: GroupState, project_id: str) -> ServerGroupSpec:
    return ServerGroupSpec(
        uuid=state.uuid,
        name=state.name,
        policy=state.rule.policy,
        project_id=project_id,
        broker_id=ctx.settings.broker_id,
        max_server_per_host=state.max_server_per_host
        if state.rule.policy == ANTI_AFFINITY
        else None,
    )


def refresh(
    ctx: ComputeContext, state: GroupState, zone: str, recorded: str, project_id: str
) -> bool:
    """A member's create was refused: ask the zone for the group again (idempotent on the
    broker's uuid). True when it answers another id than ``recorded`` (the recorded one
    was deleted behind the broker's back), which then replaces it.

    :raises DriverError: the remote cloud could not be asked.
    """
    current = ctx.drivers[zone].create_server_group(_spec(ctx, state, project_id))
    if current == recorded:
        return False
    with ctx.api.write() as s:
        s.execute(
            update(ServerGroupZone)
            .where(
                ServerGroupZone.group_uuid == state.uuid,
                ServerGroupZone.zone == zone,
                ServerGroupZone.remote_id == recorded,
            )
            .values(remote_id=current)
        )
    LOG.warning(
        "group %s: remote group %s in zone %s was gone; now %s", state.uuid, recorded, zone, current
    )
    return True


def remote_group(ctx: ComputeContext, state: GroupState, zone: str, project_id: str) -> str:
    """The remote id of the server group that keeps ``state``'s rule in ``zone``,
    made there on first use.

    :raises DriverError: the remote cloud could not make it.
    :raises GroupGone: the group was deleted meanwhile (nothing is left remotely).
    """
    with ctx.api.read() as s:
        row = s.get(ServerGroupZone, (state.uuid, zone))
        if row is not None:
            return row.remote_id
    driver = ctx.drivers[zone]
    spec = _spec(ctx, state, project_id)
    made = driver.create_server_group(spec)
    try:
        with ctx.api.write() as s:
            alive = s.execute(
                select(ServerGroup.uuid)
                .where(ServerGroup.uuid == state.uuid)
                .with_for_update(key_share=True)
            ).first()
            if alive is None:
                raise GroupGone(state.uuid)
            s.add(ServerGroupZone(group_uuid=state.uuid, zone=zone, remote_id=made))
    except GroupGone:
        _forget(ctx, zone, made)
        raise
    except IntegrityError:
        with ctx.api.read() as s:
            row = s.get(ServerGroupZone, (state.uuid, zone))
        if row is None:  # pragma: no cover - the row that beat us cannot vanish
            raise
        if row.remote_id != made:
            LOG.info(
                "group %s: zone %s already has remote group %s", state.uuid, zone, row.remote_id
            )
            _forget(ctx, zone, made)
        return row.remote_id
    LOG.info("group %s: made remote group %s in zone %s", state.uuid, made, zone)
    return made


def _forget(ctx: ComputeContext, zone: str, remote_id: str) -> None:
    try:
        ctx.drivers[zone].delete_server_group(remote_id)
    except DriverError as exc:
        LOG.warning("zone %s: could not delete unused remote group %s: %s", zone, remote_id, exc)


def enqueue_cleanup(s: Session, group_uuid: str) -> int:
    """Inside the group delete's transaction: one clean-up task per remote group."""
    rows = s.scalars(select(ServerGroupZone).where(ServerGroupZone.group_uuid == group_uuid))
    n = 0
    for row in rows:
        taskqueue.enqueue(s, group_uuid, CLEANUP, {"zone": row.zone, "remote_id": row.remote_id})
        n += 1
    return n


def cleanup(ctx: ComputeContext, task: TaskRef) -> None:
    """Delete one remote group of a deleted group, then its row.

    :raises Retry: a passing failure; the task runs again later.
    """
    zone = str(task.payload["zone"])
    remote_id = str(task.payload["remote_id"])
    driver = ctx.drivers.get(zone)
    if driver is not None:
        try:
            driver.delete_server_group(remote_id)
        except DriverError as exc:
            if task.attempts + 1 < MAX_CLEANUP_ATTEMPTS and isinstance(
                exc, (TransientError, AuthError)
            ):
                raise Retry(min(60.0, 2.0 * 2**task.attempts), exc.reason) from exc
            LOG.error(
                "group %s: remote group %s in zone %s could not be deleted: %s",
                task.instance_uuid,
                remote_id,
                zone,
                exc.reason,
            )
    with ctx.api.write() as s:
        s.execute(
            delete(ServerGroupZone).where(
                ServerGroupZone.group_uuid == task.instance_uuid, ServerGroupZone.zone == zone
            )
        )
    LOG.info("group %s: remote group %s in zone %s deleted", task.instance_uuid, remote_id, zone)
