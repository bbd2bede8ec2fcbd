"""Volumes and their attachments as the services present them (never table rows)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from federator.storage.models import Volume, VolumeAttachment

__all__ = ["AttachmentView", "VolumeView", "attachments_by_volume", "view_of"]

# Cinder's statuses (the subset the broker goes through).
CREATING = "creating"
AVAILABLE = "available"
ATTACHING = "attaching"
IN_USE = "in-use"
DETACHING = "detaching"
DELETING = "deleting"
ERROR = "error"
ERROR_DELETING = "error_deleting"
STATUSES = frozenset(
    {CREATING, AVAILABLE, ATTACHING, IN_USE, DETACHING, DELETING, ERROR, ERROR_DELETING}
)
# Cinder deletes only volumes in these statuses (and not attached).
DELETABLE = frozenset({AVAILABLE, ERROR, ERROR_DELETING})


def aware(ts: datetime) -> datetime:
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class AttachmentView:
    id: str
    volume_id: str
    server_id: str
    device: str | None
    host: str | None
    state: str
    tag: str | None
    delete_on_termination: bool
    attached_at: datetime


@dataclass(frozen=True, slots=True)
class VolumeView:
    id: str
    name: str | None
    description: str | None
    project_id: str
    user_id: str
    size: int
    status: str
    volume_type: str
    availability_zone: str | None
    zone: str | None
    host: str | None
    remote_id: str | None
    multiattach: bool
    bootable: bool
    created_at: datetime
    updated_at: datetime
    metadata: Mapping[str, Any] = field(default_factory=dict)
    fault: Mapping[str, Any] | None = None
    placement: Mapping[str, Any] = field(default_factory=dict)
    attachments: Sequence[AttachmentView] = ()
    requested_az: str | None = None


def attachment_view(a: VolumeAttachment) -> AttachmentView:
    return AttachmentView(
        id=a.id,
        volume_id=a.volume_uuid,
        server_id=a.server_uuid,
        device=a.device,
        host=a.host,
        state=a.state,
        tag=a.tag,
        delete_on_termination=a.delete_on_termination,
        attached_at=aware(a.created_at),
    )


def attachments_by_volume(s: Session, uuids: Sequence[str]) -> dict[str, list[AttachmentView]]:
    out: dict[str, list[AttachmentView]] = {}
    if not uuids:
        return out
    rows = s.scalars(
        select(VolumeAttachment)
        .where(VolumeAttachment.volume_uuid.in_(uuids))
        .order_by(VolumeAttachment.created_at, VolumeAttachment.id)
    )
    for a in rows:
        out.setdefault(a.volume_uuid, []).append(attachment_view(a))
    return out


def view_of(v: Volume, attachments: Sequence[AttachmentView] = ()) -> VolumeView:
    return VolumeView(
        id=v.uuid,
        name=v.name,
        description=v.description,
        project_id=v.project_id,
        user_id=v.user_id,
        size=v.size_gb,
        status=v.status,
        volume_type=v.volume_type,
        availability_zone=v.availability_zone or v.requested_az,
        zone=v.zone,
        host=v.host,
        remote_id=v.remote_id,
        multiattach=v.multiattach,
        bootable=v.bootable,
        created_at=aware(v.created_at),
        updated_at=aware(v.updated_at),
        metadata=dict(v.metadata_ or {}),
        fault=v.fault,
        placement=dict(v.placement or {}),
        attachments=tuple(attachments),
        requested_az=v.requested_az,
    )
