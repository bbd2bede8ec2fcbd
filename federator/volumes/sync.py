"""The monitor's volume job: pull each zone's volumes back into the broker's records.

With the same rules as instance sync (:mod:`federator.monitor.sync`):

* only rows that changed are written (status, attachments, size);
* a volume a task is working on (creating, deleting, attaching, detaching) is left to it,
  and so is a record written after the listing began (the listing may predate it: a
  create that finished meanwhile is not missing, a detach that finished is not undone);
* a settled volume missing from the zone for longer than ``vanish_grace_seconds`` becomes
  ``error`` with the ``federator.monitor.vanished`` fault, its storage given back;
* a volume carrying this broker's id that no live record accounts for is an orphan, dealt
  with as the policy's ``orphans`` section says (``log`` records it once, ``quarantine``
  detaches it from every server, ``delete`` deletes it), once it is older than
  ``min_age_seconds``. Each suspect is fetched again first, so a create that finished
  between the listing and the check is not taken for an orphan.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update

from federator import errors
from federator.blockstorage import BlockStorage, RemoteVolume, VolumeNotFound, VolumeState
from federator.compute.context import ComputeContext
from federator.driver import DriverError
from federator.storage.events import orphan_history, record_event
from federator.storage.models import Volume, VolumeAttachment, utcnow
from federator.volumes import claims
from federator.volumes import records as r
from federator.volumes.worker import fault

LOG = logging.getLogger(__name__)
Clock = Callable[[], datetime]
_BUSY = frozenset({r.CREATING, r.DELETING, r.ATTACHING, r.DETACHING})
ORPHAN_PREFIX = "volume:"


@dataclass
class VolumeSyncReport:
    zone: str
    seen: int = 0
    updated: int = 0
    vanished: int = 0
    orphans: int = 0
    acted: int = 0

    def summary(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in asdict(self).items() if k != "zone")


def sync_volumes(ctx: ComputeContext, zone: str, clock: Clock = utcnow) -> VolumeSyncReport:
    """One pass over ``zone``'s volumes.

    :raises DriverError: the zone could not be listed; nothing was changed.
    """
    report = VolumeSyncReport(zone)
    storage = ctx.drivers[zone].block_storage()
    if storage is None:
        return report
    batch = ctx.settings.monitor.list_batch_size
    started = clock()
    remote = {v.uuid: v for part in storage.list_volumes(batch) for v in part}
    report.seen = len(remote)
    with ctx.api.read() as s:
        rows = list(s.scalars(select(Volume).where(Volume.zone == zone)))
        attached = r.attachments_by_volume(s, [v.uuid for v in rows])
        for v in rows:
            s.expunge(v)
    known = {v.uuid: v for v in rows}
    grace = timedelta(seconds=ctx.settings.monitor.vanish_grace_seconds)
    now = clock()
    for v in rows:
        if v.deleted or v.status in _BUSY or r.aware(v.updated_at) >= started:
            continue
        rv = remote.get(v.uuid)
        if rv is None:
            if v.status != r.ERROR and now - r.aware(v.updated_at) >= grace:
                _vanish(ctx, v)
                report.vanished += 1
            continue
        if _apply(ctx, v, rv, {a.server_id: a.device for a in attached.get(v.uuid, [])}):
            report.updated += 1
    suspects = [rv for uuid, rv in remote.items() if uuid not in known or known[uuid].deleted]
    _orphans(ctx, storage, zone, suspects, report, now)
    return report


def _apply(
    ctx: ComputeContext, v: Volume, rv: RemoteVolume, recorded: dict[str, str | None]
) -> bool:
    """Write what changed; True when anything did."""
    status = v.status
    if rv.state == VolumeState.ERROR:
        status = r.ERROR
    elif rv.state in (VolumeState.AVAILABLE, VolumeState.IN_USE) and v.status != r.ERROR:
        status = r.IN_USE if rv.attachments else r.AVAILABLE
    remote_att = {a.server_uuid: a.device for a in rv.attachments}
    changed = status != v.status or rv.size_gb != v.size_gb or set(remote_att) != set(recorded)
    if not changed:
        return False
    with ctx.api.write() as s:
        for server in set(recorded) - set(remote_att):
            s.execute(
                delete(VolumeAttachment).where(
                    VolumeAttachment.volume_uuid == v.uuid,
                    VolumeAttachment.server_uuid == server,
                    VolumeAttachment.state == "attached",
                )
            )
        for server in set(remote_att) - set(recorded):
            s.add(
                VolumeAttachment(
                    id=_attachment_id(v.uuid, server),
                    volume_uuid=v.uuid,
                    server_uuid=server,
                    device=remote_att[server],
                    state="attached",
                )
            )
        values: dict[str, object] = {
            "status": status,
            "size_gb": rv.size_gb,
            "updated_at": utcnow(),
        }
        if status == r.ERROR and v.status != r.ERROR:
            values["fault"] = fault(
                errors.BUILD_FAILED, f"zone {v.zone} reports the volume in error"
            )
        s.execute(
            update(Volume)
            .where(Volume.uuid == v.uuid, Volume.status == v.status, Volume.deleted.is_(False))
            .values(**values)
        )
    LOG.info("volume %s: %s -> %s (synced from %s)", v.uuid, v.status, status, v.zone)
    return True


def _attachment_id(volume: str, server: str) -> str:
    import uuid

    return str(uuid.uuid5(uuid.UUID(volume), server))


def _vanish(ctx: ComputeContext, v: Volume) -> None:
    detail = f"volume {v.uuid} is no longer in zone {v.zone}"
    with ctx.api.write() as s:
        moved = s.execute(
            update(Volume)
            .where(Volume.uuid == v.uuid, Volume.status == v.status, Volume.deleted.is_(False))
            .values(
                status=r.ERROR,
                fault=fault(errors.MONITOR_VANISHED, detail),
                updated_at=utcnow(),
            )
        )
        if moved.rowcount != 1:  # type: ignore[attr-defined]
            return
        s.execute(delete(VolumeAttachment).where(VolumeAttachment.volume_uuid == v.uuid))
    claims.release(ctx.api, v.uuid)
    record_event(
        ctx.api,
        zone=v.zone or "",
        kind="vanished",
        instance_uuid=v.uuid,
        remote_id=v.remote_id,
        action="volume_error",
        detail=detail,
    )
    LOG.warning("%s: marked ERROR (vanished)", detail)


def _orphans(
    ctx: ComputeContext,
    storage: BlockStorage,
    zone: str,
    suspects: list[RemoteVolume],
    report: VolumeSyncReport,
    now: datetime,
) -> None:
    if not suspects:
        return
    policy = ctx.policies.current.policy.orphans
    min_age = timedelta(seconds=policy.min_age_seconds)
    history = orphan_history(ctx.api, [v.uuid for v in suspects])
    for listed in suspects:
        with ctx.api.read() as s:
            row = s.get(Volume, listed.uuid)
            if row is not None and not row.deleted:
                continue  # recorded meanwhile
        try:
            rv = storage.get_volume(listed.uuid)
        except VolumeNotFound:
            continue
        except DriverError:
            LOG.exception("volume orphan %s: could not be fetched again", listed.uuid)
            continue
        created = rv.created_at
        if isinstance(created, datetime) and now - r.aware(created) < min_age:
            continue
        report.orphans += 1
        past = history.get(rv.uuid)
        action = policy.action
        if action == "log" and past is not None:
            continue
        if action == "quarantine" and past is not None and not rv.attachments:
            continue
        done = "logged"
        try:
            if action in ("quarantine", "delete"):
                for a in rv.attachments:
                    storage.detach_volume(rv.uuid, a.server_uuid)
                done = "detached"
            if action == "delete":
                storage.delete_volume(rv.uuid)
                done = "deleted"
        except DriverError as exc:
            LOG.warning("volume orphan %s: %s failed: %s", rv.uuid, action, exc.message)
            done = f"{action}_failed"
        else:
            if done != "logged":
                report.acted += 1
        record_event(
            ctx.api,
            zone=zone,
            kind="orphan",
            instance_uuid=rv.uuid,
            remote_id=rv.remote_id,
            action=f"volume_{done}",
            detail=f"volume {rv.uuid} ({rv.size_gb} GB) carries this broker's id but no live "
            f"record accounts for it; policy orphans.action is {action}",
        )
