"""Block-storage answers in Cinder's shapes, and Nova's volume attachments."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from federator.api import volume_microversion as vmv
from federator.api.microversion import Version
from federator.config import VolumeTypeConfig
from federator.volumes.records import AttachmentView, VolumeView

CINDER_UPDATED = "2026-01-01T00:00:00Z"


def cinder_time(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%f")


def versions(root: str) -> dict[str, Any]:
    """``GET /volume/`` (and ``/volume/v3/``): the one API version served."""
    return {
        "versions": [
            {
                "id": "v3.0",
                "status": "CURRENT",
                "version": str(vmv.MAX),
                "min_version": str(vmv.MIN),
                "updated": CINDER_UPDATED,
                "links": [
                    {
                        "rel": "describedby",
                        "type": "text/html",
                        "href": "https://docs.openstack.org/",
                    },
                    {"rel": "self", "href": f"{root}/volume/v3/"},
                ],
                "media-types": [
                    {
                        "base": "application/json",
                        "type": "application/vnd.openstack.volume+json;version=3",
                    }
                ],
            }
        ]
    }


def attachment_in_volume(a: AttachmentView) -> dict[str, Any]:
    return {
        "id": a.volume_id,
        "attachment_id": a.id,
        "volume_id": a.volume_id,
        "server_id": a.server_id,
        "host_name": a.host,
        "device": a.device,
        "attached_at": cinder_time(a.attached_at),
    }


def volume_summary(v: VolumeView, base: str) -> dict[str, Any]:
    return {"id": v.id, "name": v.name, "links": _links(v.id, base)}


def _links(uuid: str, base: str) -> list[dict[str, str]]:
    return [
        {"rel": "self", "href": f"{base}/volumes/{uuid}"},
        {"rel": "bookmark", "href": f"{base}/volumes/{uuid}"},
    ]


def volume_detail(
    v: VolumeView,
    base: str,
    version: Version,
    *,
    is_admin: bool,
    vtype: VolumeTypeConfig | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": v.id,
        "name": v.name,
        "description": v.description,
        "status": v.status,
        "size": v.size,
        "availability_zone": v.availability_zone,
        "created_at": cinder_time(v.created_at),
        "updated_at": cinder_time(v.updated_at),
        "attachments": [attachment_in_volume(a) for a in v.attachments if a.state != "attaching"],
        "volume_type": v.volume_type,
        "snapshot_id": None,
        "source_volid": None,
        "metadata": dict(v.metadata),
        "links": _links(v.id, base),
        "user_id": v.user_id,
        "bootable": "true" if v.bootable else "false",
        "encrypted": False,
        "replication_status": None,
        "consistencygroup_id": None,
        "multiattach": v.multiattach,
        "os-vol-tenant-attr:tenant_id": v.project_id,
    }
    if is_admin:
        body["os-vol-host-attr:host"] = _backend_host(v)
        body["os-vol-mig-status-attr:migstat"] = None
        body["os-vol-mig-status-attr:name_id"] = None
    if version >= vmv.V3_13:
        body["group_id"] = None
    if version >= vmv.V3_21 and is_admin:
        body["provider_id"] = v.remote_id
    if version >= vmv.V3_48:
        body["shared_targets"] = False
        body["service_uuid"] = None
    if version >= vmv.V3_61 and is_admin:
        body["cluster_name"] = None
    if version >= vmv.V3_63:
        body["volume_type_id"] = vtype.type_id() if vtype is not None else None
    if version >= vmv.V3_65:
        body["consumes_quota"] = True
    if v.fault is not None and v.status in ("error", "error_deleting"):
        # Cinder keeps the reason in its messages API; the broker shows it on the volume,
        # as Nova shows a server's fault.
        body["fault"] = dict(v.fault)
    return body


def _backend_host(v: VolumeView) -> str | None:
    """Cinder's ``host@backend#pool``, from where the broker placed the volume."""
    if v.zone is None:
        return None
    pool = v.placement.get("pool") if v.placement else None
    return f"{v.host or v.zone}@{v.zone}#{pool or v.zone}"


def volume_type(t: VolumeTypeConfig) -> dict[str, Any]:
    return {
        "id": t.type_id(),
        "name": t.name,
        "description": t.description or None,
        "is_public": True,
        "os-volume-type-access:is_public": True,
        "extra_specs": {**t.extra_specs, **({"multiattach": "<is> True"} if t.multiattach else {})},
        "qos_specs_id": None,
    }


def nova_attachment(a: AttachmentView) -> dict[str, Any]:
    """A volume attachment as Nova's os-volume_attachments shows it (2.1-2.64 shape)."""
    return {"id": a.volume_id, "volumeId": a.volume_id, "serverId": a.server_id, "device": a.device}


def limits(
    volumes_used: int, gigabytes_used: int, max_volumes: int | None, max_gigabytes: int | None
) -> dict[str, Any]:
    def cap(value: int | None) -> int:
        return -1 if value is None else value

    return {
        "limits": {
            "rate": [],
            "absolute": {
                "maxTotalVolumes": cap(max_volumes),
                "maxTotalVolumeGigabytes": cap(max_gigabytes),
                "maxTotalSnapshots": 0,
                "maxTotalBackups": 0,
                "maxTotalBackupGigabytes": 0,
                "totalVolumesUsed": volumes_used,
                "totalGigabytesUsed": gigabytes_used,
                "totalSnapshotsUsed": 0,
                "totalBackupsUsed": 0,
                "totalBackupGigabytesUsed": 0,
            },
        }
    }
