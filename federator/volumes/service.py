"""What the API asks of block storage: volumes (Cinder) and attachments (Nova).

Accepting a create writes the volume (``creating``) and its task in one API-database
transaction; placement, the storage claim and the driver call happen in a worker, so the
answer does not wait for the cloud and a crash loses nothing. Attach and detach mark the
volume ``attaching``/``detaching`` and the attachment row before their task runs, so two
requests racing for one volume cannot both win: the conditional status update decides.
"""

from __future__ import annotations

import re
import uuid as uuidlib
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, func, select, text, update
from sqlalchemy.orm import Session

from federator import errors
from federator.compute import queue as taskqueue
from federator.compute.context import ComputeContext
from federator.compute.refs import placement_zone
from federator.compute.service import ComputeService, RequestContext
from federator.config import VolumeTypeConfig
from federator.exception import BadRequest, Conflict, InstanceInvalidState, NotFound
from federator.storage.models import StoragePool, Volume, VolumeAttachment, Zone, utcnow
from federator.volumes import records as r
from federator.volumes.records import AttachmentView, VolumeView

__all__ = ["AttachRequest", "CreateVolume", "VolumeFilters", "VolumeService", "check_create"]

MAX_NAME = 255
# Nova attaches to servers in these statuses.
_ATTACHABLE_SERVER = frozenset({"ACTIVE", "SHUTOFF", "PAUSED", "SUSPENDED"})
_DEVICE = re.compile(r"^/dev/[a-z]{1,4}[a-z]$")
_ROOT_DEVICE = "/dev/vda"


@dataclass(frozen=True, slots=True)
class CreateVolume:
    size: int
    name: str | None = None
    description: str | None = None
    volume_type: str | None = None
    availability_zone: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    multiattach: bool = False


@dataclass(frozen=True, slots=True)
class AttachRequest:
    volume_id: str
    device: str | None = None
    tag: str | None = None
    delete_on_termination: bool = False


@dataclass(frozen=True, slots=True)
class VolumeFilters:
    project_id: str | None  # None: every project (an admin's all_tenants)
    name: str | None = None
    status: str | None = None
    availability_zone: str | None = None
    metadata: Mapping[str, str] | None = None  # every pair must be in the volume's metadata


class VolumeService:
    def __init__(self, ctx: ComputeContext, compute: ComputeService) -> None:
        self.ctx = ctx
        self.compute = compute

    # --- volumes ----------------------------------------------------------------------

    def create(self, rc: RequestContext, req: CreateVolume) -> VolumeView:
        """Accept a volume: validated here, placed by a worker.

        :raises BadRequest: a bad size, name, type or availability zone (naming the field).
        :raises Conflict: (413 in Cinder's terms) the project's volume quota is used up.
        """
        vtype = check_create(self.ctx, req)
        uuid = str(uuidlib.uuid4())
        with self.ctx.api.write() as s:
            self._check_project_quota(s, rc.project_id, req.size)
            s.add(
                Volume(
                    uuid=uuid,
                    name=req.name,
                    description=req.description,
                    project_id=rc.project_id,
                    user_id=rc.user_id,
                    size_gb=req.size,
                    status=r.CREATING,
                    volume_type=vtype.name,
                    requested_az=req.availability_zone,
                    multiattach=req.multiattach or vtype.multiattach,
                    metadata_=dict(req.metadata),
                    placement={},
                )
            )
            taskqueue.enqueue(s, uuid, "volume_create")
        self.ctx.queue.notifier.notify()
        return self.get(rc, uuid)

    def _check_project_quota(self, s: Session, project_id: str, size: int) -> None:
        check_project_quota(self.ctx, s, project_id, size)

    def get(self, rc: RequestContext, uuid: str) -> VolumeView:
        """:raises NotFound: unknown, deleted, or another project's (unless admin)."""
        with self.ctx.api.read() as s:
            v = s.get(Volume, uuid)
            if v is None or v.deleted or not (rc.is_admin or v.project_id == rc.project_id):
                raise NotFound(kind="Volume", ident=uuid)
            return r.view_of(v, r.attachments_by_volume(s, [uuid]).get(uuid, []))

    def count_volumes(self, f: VolumeFilters) -> int:
        """How many volumes match ``f``, whatever the page (Cinder's ``with_count``)."""
        with self.ctx.api.read() as s:
            return int(s.scalar(select(func.count()).where(*_conditions(f))) or 0)

    def list_volumes(
        self, f: VolumeFilters, *, limit: int, marker: str | None, sort_desc: bool = True
    ) -> list[VolumeView]:
        """Newest first (created_at, then id), at most ``limit``, after volume ``marker``."""
        conds = _conditions(f)
        with self.ctx.api.read() as s:
            if marker is not None:
                m = s.get(Volume, marker)
                if (
                    m is None
                    or m.deleted
                    or (f.project_id is not None and m.project_id != f.project_id)
                ):
                    raise BadRequest(reason=f"marker: volume {marker} could not be found")
                after = (Volume.created_at, Volume.uuid)
                if sort_desc:
                    conds.append(
                        (after[0] < m.created_at)
                        | ((after[0] == m.created_at) & (after[1] < m.uuid))
                    )
                else:
                    conds.append(
                        (after[0] > m.created_at)
                        | ((after[0] == m.created_at) & (after[1] > m.uuid))
                    )
            order = (
                (Volume.created_at.desc(), Volume.uuid.desc())
                if sort_desc
                else (Volume.created_at.asc(), Volume.uuid.asc())
            )
            rows = list(s.scalars(select(Volume).where(*conds).order_by(*order).limit(limit)))
            attached = r.attachments_by_volume(s, [v.uuid for v in rows])
            return [r.view_of(v, attached.get(v.uuid, [])) for v in rows]

    def update(
        self,
        rc: RequestContext,
        uuid: str,
        *,
        name: str | None = None,
        description: str | None = None,
        metadata: Mapping[str, str] | None = None,
        fields: frozenset[str] = frozenset(),
    ) -> VolumeView:
        """Change what the body names (``fields``: name, description, metadata)."""
        self.get(rc, uuid)
        if name is not None and len(name) > MAX_NAME:
            raise BadRequest(reason=f"volume.name: longer than {MAX_NAME} characters")
        values: dict[str, Any] = {"updated_at": utcnow()}
        if "name" in fields:
            values["name"] = name
        if "description" in fields:
            values["description"] = description
        if "metadata" in fields:
            values["metadata_"] = dict(metadata or {})
        with self.ctx.api.write() as s:
            s.execute(update(Volume).where(Volume.uuid == uuid).values(**values))
        return self.get(rc, uuid)

    def delete(self, rc: RequestContext, uuid: str) -> None:
        """Accept a delete: a volume that never reached a cloud goes at once; others are
        marked ``deleting`` and deleted by a worker.

        :raises BadRequest: the volume is attached or busy (Cinder answers 400).
        """
        view = self.get(rc, uuid)
        if view.status not in r.DELETABLE or view.attachments:
            raise BadRequest(
                reason=f"Invalid volume: volume {uuid} is {view.status}"
                + (f", attached to server {view.attachments[0].server_id}" if view.attachments
                   else "")
                + "; only an available or error volume that is not attached can be deleted"
            )  # fmt: skip
        with self.ctx.api.write() as s:
            moved = s.execute(
                update(Volume)
                .where(
                    Volume.uuid == uuid,
                    Volume.status.in_(r.DELETABLE),
                    Volume.deleted.is_(False),
                    ~select(VolumeAttachment.id)
                    .where(VolumeAttachment.volume_uuid == uuid)
                    .exists(),
                )
                .values(status=r.DELETING, updated_at=utcnow())
            )
            if moved.rowcount != 1:  # type: ignore[attr-defined]
                raise BadRequest(reason=f"Invalid volume: volume {uuid} changed meanwhile")
            taskqueue.enqueue(s, uuid, "volume_delete")
        self.ctx.queue.notifier.notify()

    # --- attachments (Nova's os-volume_attachments) ------------------------------------

    def attachments_of(self, rc: RequestContext, server_uuid: str) -> list[AttachmentView]:
        self.compute.get(rc, server_uuid)
        with self.ctx.api.read() as s:
            rows = s.scalars(
                select(VolumeAttachment)
                .where(VolumeAttachment.server_uuid == server_uuid)
                .order_by(VolumeAttachment.created_at, VolumeAttachment.id)
            )
            return [r.attachment_view(a) for a in rows]

    def attached_to(self, server_uuids: Sequence[str]) -> dict[str, list[tuple[str, bool]]]:
        """The volumes attached to each server (with delete_on_termination), in attach
        order; the caller has already checked it may see the servers."""
        found: dict[str, list[tuple[str, bool]]] = {}
        if not server_uuids:
            return found
        with self.ctx.api.read() as s:
            rows = s.execute(
                select(
                    VolumeAttachment.server_uuid,
                    VolumeAttachment.volume_uuid,
                    VolumeAttachment.delete_on_termination,
                )
                .where(VolumeAttachment.server_uuid.in_(list(server_uuids)))
                .order_by(VolumeAttachment.created_at, VolumeAttachment.id)
            )
            for server, volume, dot in rows:
                found.setdefault(server, []).append((volume, bool(dot)))
        return found

    def attachment(self, rc: RequestContext, server_uuid: str, volume_uuid: str) -> AttachmentView:
        for a in self.attachments_of(rc, server_uuid):
            if a.volume_id == volume_uuid:
                return a
        raise NotFound(
            reason=f"volume {volume_uuid} is not attached to server {server_uuid}",
            kind="Volume attachment",
            ident=volume_uuid,
        )

    def attach(self, rc: RequestContext, server_uuid: str, req: AttachRequest) -> AttachmentView:
        """Accept an attach: checked here, carried out by a worker.

        :raises NotFound: no such server or volume.
        :raises BadRequest: the volume is in use elsewhere (not multiattach), in another
            availability zone, or on another host's local storage; a bad device name.
        :raises Conflict: the server cannot take volumes now, or the device is taken.
        """
        server = self.compute.get(rc, server_uuid)
        try:
            volume = self.get(rc, req.volume_id)
        except NotFound:
            raise NotFound(kind="Volume", ident=req.volume_id) from None
        if server.in_cell0 or server.cell is None or server.status not in _ATTACHABLE_SERVER:
            raise InstanceInvalidState(
                action="attach a volume to", uuid=server_uuid, status=server.status
            )
        if any(a.server_id == server_uuid for a in volume.attachments):
            raise Conflict(reason=f"volume {volume.id} is already attached to server {server_uuid}")
        in_use = volume.status == r.IN_USE and volume.multiattach
        if volume.status != r.AVAILABLE and not in_use:
            detail = (
                f"attached to server {volume.attachments[0].server_id}"
                if volume.attachments
                else volume.status
            )
            raise BadRequest(
                reason=f"Invalid volume: volume {volume.id} is {detail}; a volume attaches only "
                "while available (or in-use, when it is multiattach)"
            )
        self._check_same_az(server.shown_az, server.availability_zone, server.host, volume)
        attachment_id = str(uuidlib.uuid4())
        with self.ctx.api.write() as s:
            # The device is picked in the transaction that records it, one attach of the
            # server at a time, so two concurrent attaches never get the same name.
            if not self.ctx.api.is_sqlite:
                s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _attach_key(server_uuid)})
            device = self._device(s, server_uuid, req.device)
            moved = s.execute(
                update(Volume)
                .where(
                    Volume.uuid == volume.id,
                    Volume.deleted.is_(False),
                    Volume.status.in_((r.AVAILABLE, r.IN_USE) if in_use else (r.AVAILABLE,)),
                )
                .values(status=r.ATTACHING, updated_at=utcnow())
            )
            if moved.rowcount != 1:  # type: ignore[attr-defined]
                raise BadRequest(
                    reason=f"Invalid volume: volume {volume.id} was taken by another request"
                )
            s.add(
                VolumeAttachment(
                    id=attachment_id,
                    volume_uuid=volume.id,
                    server_uuid=server_uuid,
                    device=device,
                    host=server.host,
                    state="attaching",
                    tag=req.tag,
                    delete_on_termination=req.delete_on_termination,
                )
            )
            taskqueue.enqueue(s, volume.id, "volume_attach", {"server": server_uuid})
        self.ctx.queue.notifier.notify()
        return self.attachment(rc, server_uuid, volume.id)

    def _check_same_az(
        self, server_az: str | None, server_zone: str | None, server_host: str | None, v: VolumeView
    ) -> None:
        """Nova's ``cross_az_attach = False``, kept by the broker whatever the cloud allows;
        and host-local storage only for a server on the volume's host."""
        if v.availability_zone != server_az or v.zone != server_zone:
            raise BadRequest(
                reason=f"Invalid volume: server and volume are in different availability zones: "
                f"server in {server_az!r}, volume {v.id} in {v.availability_zone!r}"
            )
        storage = self.ctx.drivers[v.zone or ""].block_storage() if v.zone else None
        if storage is None:
            raise BadRequest(reason=f"Invalid volume: volume {v.id} is not placed in any zone")
        if not storage.storage_capabilities().shared and v.host and v.host != server_host:
            raise BadRequest(
                reason=f"Invalid volume: volume {v.id} is on host {v.host}'s local storage and "
                f"server is on host {server_host}; zone {v.zone} cannot attach across hosts"
            )

    def _device(self, s: Session, server_uuid: str, asked: str | None) -> str:
        taken = set(
            s.scalars(
                select(VolumeAttachment.device).where(VolumeAttachment.server_uuid == server_uuid)
            )
        )
        taken.add(_ROOT_DEVICE)
        if asked is not None:
            if not _DEVICE.match(asked):
                raise BadRequest(
                    reason=f"volumeAttachment.device: {asked!r} is not a device path "
                    "such as /dev/vdb"
                )
            if asked in taken:
                raise Conflict(reason=f"The supplied device path ({asked}) is in use.")
            return asked
        for letter in "bcdefghijklmnopqrstuvwxyz":
            if f"/dev/vd{letter}" not in taken:
                return f"/dev/vd{letter}"
        raise Conflict(reason=f"server {server_uuid} has no free device name left")

    def detach(self, rc: RequestContext, server_uuid: str, volume_uuid: str) -> None:
        """Accept a detach.

        :raises NotFound: the volume is not attached to the server.
        :raises Conflict: the attachment is still being made or already going.
        """
        self.attachment(rc, server_uuid, volume_uuid)
        with self.ctx.api.write() as s:
            moved = s.execute(
                update(VolumeAttachment)
                .where(
                    VolumeAttachment.volume_uuid == volume_uuid,
                    VolumeAttachment.server_uuid == server_uuid,
                    VolumeAttachment.state == "attached",
                )
                .values(state="detaching")
            )
            if moved.rowcount != 1:  # type: ignore[attr-defined]
                raise Conflict(
                    reason=f"volume {volume_uuid} is being attached to or detached from server "
                    f"{server_uuid}; try again when it is done"
                )
            s.execute(
                update(Volume)
                .where(Volume.uuid == volume_uuid)
                .values(status=r.DETACHING, updated_at=utcnow())
            )
            taskqueue.enqueue(s, volume_uuid, "volume_detach", {"server": server_uuid})
        self.ctx.queue.notifier.notify()

    # --- limits and zones ---------------------------------------------------------------

    def usage(self, project_id: str) -> tuple[int, int]:
        """(volumes, gigabytes) the project holds."""
        with self.ctx.api.read() as s:
            count, gigabytes = s.execute(
                select(func.count(), func.coalesce(func.sum(Volume.size_gb), 0)).where(
                    Volume.project_id == project_id, Volume.deleted.is_(False)
                )
            ).one()
        return int(count), int(gigabytes)

    def availability_zones(self) -> list[tuple[str, bool]]:
        """Availability zones volumes can be made in, with whether each is available."""
        with self.ctx.api.read() as s:
            rows = s.execute(
                select(StoragePool.az, StoragePool.zone).where(StoragePool.reported.is_(True))
            ).all()
            states = dict(s.execute(select(Zone.name, Zone.state)).all())
        seen: dict[str, bool] = {}
        for az, zone in rows:
            seen[az] = seen.get(az, False) or states.get(zone) == "available"
        return sorted(seen.items())


def _conditions(f: VolumeFilters) -> list[ColumnElement[bool]]:
    conds: list[ColumnElement[bool]] = [Volume.deleted.is_(False)]
    if f.project_id is not None:
        conds.append(Volume.project_id == f.project_id)
    if f.name is not None:
        conds.append(Volume.name == f.name)
    if f.status is not None:
        conds.append(Volume.status == f.status.lower())
    if f.availability_zone is not None:
        conds.append(Volume.availability_zone == f.availability_zone)
    for key, value in (f.metadata or {}).items():
        conds.append(Volume.metadata_[key].as_string() == value)
    return conds


def check_create(ctx: ComputeContext, req: CreateVolume) -> VolumeTypeConfig:
    """The volume type of ``req``, after checking every field a create names.

    :raises BadRequest: naming the field at fault.
    """
    limit = ctx.settings.volumes.max_size_gb
    if req.size < 1 or req.size > limit:
        raise BadRequest(
            reason=f"volume.size: {req.size} is not a size in GB between 1 and {limit}",
            problems=[{"field": "volume.size", "message": f"must be between 1 and {limit}"}],
        )
    if req.name is not None and len(req.name) > MAX_NAME:
        raise BadRequest(
            reason=f"volume.name: longer than {MAX_NAME} characters ({len(req.name)})",
            problems=[{"field": "volume.name", "message": f"at most {MAX_NAME} characters"}],
        )
    ref = req.volume_type or ctx.settings.volumes.default_type
    vtype = ctx.settings.volumes.type(ref)
    if vtype is None:
        raise BadRequest(
            reason=f"volume.volume_type: volume type {ref!r} could not be found",
            problems=[{"field": "volume.volume_type", "message": f"unknown type {ref!r}"}],
        )
    az = req.availability_zone
    if az is not None:
        zone = placement_zone(ctx.settings, ctx.api, az)
        if zone is None:
            raise BadRequest(
                reason=f"volume.availability_zone: availability zone {az!r} is invalid",
                problems=[{"field": "volume.availability_zone", "message": f"unknown zone {az!r}"}],
            )
        if ctx.drivers[zone].block_storage() is None:
            raise BadRequest(
                reason=f"volume.availability_zone: availability zone {az!r} holds no "
                "volumes (its driver has no block storage)",
                problems=[{"field": "volume.availability_zone", "message": "no storage"}],
            )
        storage = ctx.drivers[zone].block_storage()
        multiattach = req.multiattach or vtype.multiattach
        if multiattach and storage is not None and not storage.storage_capabilities().multiattach:
            raise BadRequest(
                reason=f"volume.multiattach: availability zone {az!r} cannot attach a volume "
                "to several servers",
                problems=[{"field": "volume.multiattach", "message": "not in that zone"}],
            )
        if vtype.backends and zone not in vtype.backends:
            raise BadRequest(
                reason=f"volume.volume_type: volume type {vtype.name!r} is not offered in "
                f"availability zone {az!r} (offered in {', '.join(sorted(vtype.backends))})",
                problems=[{"field": "volume.volume_type", "message": "not in that zone"}],
            )
    return vtype


class VolumeQuotaExceeded(Conflict):
    """Cinder answers 413 when a project's volume quota would be exceeded."""

    code = errors.PROJECT_OVER_QUOTA
    http_status = 413
    title = "Request too large"


def _lock_key(project_id: str) -> int:
    return zlib.crc32(f"volumes:{project_id}".encode()) & 0x7FFFFFFF


def _attach_key(server_uuid: str) -> int:
    return zlib.crc32(f"volume-attach:{server_uuid}".encode()) & 0x7FFFFFFF


def check_project_quota(
    ctx: ComputeContext, s: Session, project_id: str, size: int, count: int = 1
) -> None:
    """Inside the caller's transaction: ``count`` more volumes of ``size`` GiB in all stay
    within the project's volume quotas.

    :raises VolumeQuotaExceeded: they would not.
    """
    cfg = ctx.settings.volumes
    if cfg.project_volumes is None and cfg.project_gigabytes is None:
        return
    if not ctx.api.is_sqlite:  # one project's creates counted one at a time
        s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _lock_key(project_id)})
    n, gigabytes = s.execute(
        select(func.count(), func.coalesce(func.sum(Volume.size_gb), 0)).where(
            Volume.project_id == project_id, Volume.deleted.is_(False)
        )
    ).one()
    if cfg.project_volumes is not None and n + count > cfg.project_volumes:
        raise VolumeQuotaExceeded(
            reason=f"VolumeLimitExceeded: maximum number of volumes allowed "
            f"({cfg.project_volumes}) exceeded for quota 'volumes'"
        )
    if cfg.project_gigabytes is not None and gigabytes + size > cfg.project_gigabytes:
        raise VolumeQuotaExceeded(
            reason=f"VolumeSizeExceedsAvailableQuota: requested volume of {size}G exceeds "
            f"the project's gigabytes quota: {gigabytes}G of {cfg.project_gigabytes}G used"
        )
