"""Remote-state sync of one zone, through the driver contract only.

One run pages through ``driver.list_instances`` (the broker's own instances in the zone)
and:

1. brings the zone's instance records up to date: status, addresses, launch time, remote
   id, and the host in zones where the remote cloud places instances (in zones whose hosts
   the broker schedules, the host is the one the allocation holds, so it is not moved).
   Only rows whose values changed are written; a run that finds nothing new issues no
   UPDATE at all. A record whose ``task_state`` says a worker owns it is left alone, and
   so is a record written after the listing began (the listing may predate it);
2. after a **complete** listing only, notes the records missing from it (see
   :func:`note_vanished`);
3. after a complete listing only, stores a virtual zone's remote usage
   (:mod:`federator.monitor.load`).

A listing that fails part way leaves the batches already applied and concludes nothing
about vanished instances or usage: the job fails and the next run starts over.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update

from federator import errors
from federator.compute import claims
from federator.compute.context import ComputeContext
from federator.compute.records import CELL0, aware
from federator.driver import InstanceNotFound, PowerState, RemoteInstance
from federator.monitor.load import RemoteUsage, figures, store_remote_usage
from federator.storage.db import Database
from federator.storage.events import record_event
from federator.storage.models import Instance, InstanceMapping, utcnow

LOG = logging.getLogger(__name__)
Clock = Callable[[], datetime]


@dataclass
class ZoneMemory:
    """What one zone's sync remembers between runs in this process: when each instance
    was last seen in a listing (for the message of a vanished instance's fault)."""

    started: datetime = field(default_factory=utcnow)
    last_seen: dict[str, datetime] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SyncReport:
    """The outcome of one sync run.

    ``seen``: instances listed (not counting ones the driver reports DELETED);
    ``changed``: records updated from the listing; ``vanished``: records marked ERROR
    because their instance is gone; ``deleted``: deletes in progress completed because the
    instance is gone; ``unrecorded``: listed instances with no record in the zone's cell
    (the orphans job decides whether they are orphans).
    """

    zone: str
    seen: int = 0
    changed: int = 0
    vanished: int = 0
    deleted: int = 0
    unrecorded: int = 0

    def counts(self) -> dict[str, int]:
        return {k: v for k, v in asdict(self).items() if k != "zone"}

    def __str__(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in self.counts().items())


def sync_zone(
    ctx: ComputeContext, zone: str, memory: ZoneMemory | None = None, *, clock: Clock = utcnow
) -> SyncReport:
    """Sync the records of ``zone`` with its driver's listing (see the module docstring).

    :raises DriverError: the listing failed; batches already applied stand.
    """
    memory = memory if memory is not None else ZoneMemory()
    started = clock()
    driver = ctx.drivers[zone]
    cell = ctx.cell_of_zone(zone)
    remote_places = not driver.capabilities().host_scheduling
    present: set[str] = set()
    usage = RemoteUsage()
    changed = unrecorded = 0
    for batch in driver.list_instances(ctx.settings.monitor.list_batch_size):
        live = [r for r in batch if r.state is not PowerState.DELETED]
        for remote in live:
            present.add(remote.uuid)
            memory.last_seen[remote.uuid] = started
        c, u = _apply_batch(ctx, ctx.cells[cell], zone, live, started, remote_places, usage)
        changed += c
        unrecorded += u
    vanished, deleted = note_vanished(ctx, zone, present, started, memory)
    # Forget instances unseen for a day: each has been judged (or deleted) by then.
    forget_before = started - timedelta(days=1)
    for uuid in [u for u, at in memory.last_seen.items() if at < forget_before]:
        del memory.last_seen[uuid]
    if ctx.settings.zone(zone).kind == "virtual":
        store_remote_usage(ctx.api, zone, usage)
    return SyncReport(
        zone=zone,
        seen=len(present),
        changed=changed,
        vanished=vanished,
        deleted=deleted,
        unrecorded=unrecorded,
    )


def sync_instance(ctx: ComputeContext, zone: str, uuid: str, *, clock: Clock = utcnow) -> str:
    """Bring one record up to date with what the driver reports now (after an event).

    The same rules as a sync run apply: a record a worker is acting on, or written after
    this call began, is left alone. An instance the driver no longer has is left to the
    next complete sync, which alone judges instances vanished.
    """
    started = clock()
    driver = ctx.drivers[zone]
    try:
        remote = driver.get(uuid)
    except InstanceNotFound:
        return f"{uuid}: not found in the zone; the next sync judges it"
    changed, _ = _apply_batch(
        ctx,
        ctx.cells[ctx.cell_of_zone(zone)],
        zone,
        [remote],
        started,
        not driver.capabilities().host_scheduling,
        RemoteUsage(),
    )
    return f"{uuid}: {remote.state.value}" + (", record updated" if changed else "")


def _apply_batch(
    ctx: ComputeContext,
    db: Database,
    zone: str,
    batch: Sequence[RemoteInstance],
    started: datetime,
    remote_places: bool,
    usage: RemoteUsage,
) -> tuple[int, int]:
    """Update the records of one batch; returns (records changed, instances unrecorded)."""
    if not batch:
        return 0, 0
    with db.read() as s:
        records = {
            i.uuid: i
            for i in s.scalars(
                select(Instance).where(
                    Instance.uuid.in_([r.uuid for r in batch]),
                    Instance.availability_zone == zone,
                    Instance.deleted.is_(False),
                )
            )
        }
    updates: list[tuple[str, dict[str, Any]]] = []
    unrecorded = 0
    for remote in batch:
        inst = records.get(remote.uuid)
        usage.add(*figures(ctx.settings, remote, inst.flavor if inst is not None else None))
        if inst is None:
            unrecorded += 1
        elif inst.task_state is None:
            values = _differences(inst, remote, remote_places)
            if values:
                updates.append((inst.uuid, values))
    if not updates:
        return 0, unrecorded
    changed = 0
    with db.write() as s:
        for uuid, values in updates:
            result = s.execute(
                update(Instance)
                .where(
                    Instance.uuid == uuid,
                    Instance.deleted.is_(False),
                    Instance.task_state.is_(None),
                    Instance.updated_at < started,
                )
                .values(updated_at=utcnow(), **values)
            )
            changed += result.rowcount  # type: ignore[attr-defined]
    return changed, unrecorded


def _differences(inst: Instance, remote: RemoteInstance, remote_places: bool) -> dict[str, Any]:
    """The record's values that differ from what the driver reports."""
    values: dict[str, Any] = {}
    if inst.status != remote.state.value:
        values["status"] = remote.state.value
    if _vanished_fault(inst.fault):
        values["fault"] = None  # it is back
    addresses = {k: list(v) for k, v in remote.addresses.items()}
    if dict(inst.addresses) != addresses:
        values["addresses"] = addresses
    if remote.launched_at is not None and (
        inst.launched_at is None or aware(inst.launched_at) != aware(remote.launched_at)
    ):
        values["launched_at"] = remote.launched_at
    if remote.remote_id and inst.remote_id != remote.remote_id:
        values["remote_id"] = remote.remote_id
    if remote_places and remote.host and inst.host != remote.host:
        values["host"] = remote.host
    return values


def _vanished_fault(fault: dict[str, Any] | None) -> bool:
    return fault is not None and fault.get("code") == errors.MONITOR_VANISHED


# --- vanished instances ------------------------------------------------------------------


def note_vanished(
    ctx: ComputeContext,
    zone: str,
    present: set[str],
    started: datetime,
    memory: ZoneMemory,
) -> tuple[int, int]:
    """Deal with the zone's records whose instance a complete listing did not contain.

    A record with a delete in progress is marked DELETED, its allocation released and its
    mapping removed: the delete has happened. Any other record becomes ERROR with a
    ``federator.monitor.vanished`` fault; it keeps its allocation until it is deleted, as
    Nova keeps an ERROR instance's allocations. A task in progress keeps its ``task_state``
    (the worker finishes it). Records written after the listing began, and instances
    launched less than ``monitor.vanish_grace_seconds`` before it (listings of some clouds
    lag behind creates), are left for a later run. A build in progress has no cell record
    yet and is never judged here.

    :returns: (records marked vanished, deletes completed).
    """
    cell = ctx.cell_of_zone(zone)
    if cell == CELL0:  # pragma: no cover - configuration forbids zones in cell0
        return 0, 0
    db = ctx.cells[cell]
    launched_before = started - timedelta(seconds=ctx.settings.monitor.vanish_grace_seconds)
    with db.read() as s:
        rows = s.execute(
            select(
                Instance.uuid,
                Instance.remote_id,
                Instance.task_state,
                Instance.fault,
                Instance.updated_at,
                Instance.launched_at,
                Instance.created_at,
            ).where(Instance.availability_zone == zone, Instance.deleted.is_(False))
        ).all()
    vanished = deleted = 0
    for uuid, remote_id, task_state, fault, updated_at, launched_at, created_at in rows:
        if uuid in present or _vanished_fault(fault):
            continue
        if aware(updated_at) >= started or aware(launched_at or created_at) > launched_before:
            continue
        if task_state == "deleting":
            deleted += _complete_delete(ctx, db, zone, uuid, remote_id, started)
        else:
            vanished += _mark_vanished(ctx, db, zone, uuid, remote_id, started, memory)
    return vanished, deleted


def _complete_delete(
    ctx: ComputeContext, db: Database, zone: str, uuid: str, remote_id: str | None, at: datetime
) -> int:
    # The worker's own order: release, mark deleted, unmap. Each step is idempotent, so a
    # worker finishing the same delete concurrently changes nothing.
    claims.release(ctx.api, uuid)
    now = utcnow()
    with db.write() as s:
        result = s.execute(
            update(Instance)
            .where(
                Instance.uuid == uuid,
                Instance.deleted.is_(False),
                Instance.task_state == "deleting",
            )
            .values(deleted=True, status="DELETED", task_state=None, deleted_at=now, updated_at=now)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            return 0
    with ctx.api.write() as s:
        s.execute(delete(InstanceMapping).where(InstanceMapping.instance_uuid == uuid))
    detail = (
        f"instance absent from the listing of zone {zone} at {_iso(at)} while a delete was "
        "in progress: the delete is complete"
    )
    record_event(
        ctx.api,
        zone=zone,
        kind="vanished",
        instance_uuid=uuid,
        remote_id=remote_id,
        action="deleted",
        detail=detail,
    )
    LOG.info("delete %s: completed by the monitor (instance gone from %s)", uuid, zone)
    return 1


def _mark_vanished(
    ctx: ComputeContext,
    db: Database,
    zone: str,
    uuid: str,
    remote_id: str | None,
    at: datetime,
    memory: ZoneMemory,
) -> int:
    last = memory.last_seen.get(uuid)
    seen = (
        f"last seen in a listing at {_iso(last)}"
        if last is not None
        else f"not seen in any listing since {_iso(memory.started)}"
    )
    message = (
        f"instance vanished from zone {zone}: absent from the zone's complete listing at "
        f"{_iso(at)}; {seen}"
    )
    fault = {
        "code": errors.MONITOR_VANISHED,
        "reason": errors.FAULT_REASONS[errors.MONITOR_VANISHED],
        "message": message,
        "details": [],
        "created": utcnow().isoformat(),
    }
    with db.write() as s:
        result = s.execute(
            update(Instance)
            .where(Instance.uuid == uuid, Instance.deleted.is_(False), Instance.updated_at < at)
            .values(status="ERROR", fault=fault, updated_at=utcnow())
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            return 0
    record_event(
        ctx.api,
        zone=zone,
        kind="vanished",
        instance_uuid=uuid,
        remote_id=remote_id,
        action="error",
        detail=message,
    )
    LOG.warning("instance %s: %s", uuid, message)
    return 1


def _iso(ts: datetime) -> str:
    return aware(ts).strftime("%Y-%m-%dT%H:%M:%SZ")
