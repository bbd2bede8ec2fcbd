"""/servers/{id}/os-volume_attachments: attach, list, show and detach volumes, as Nova
serves them (attach 200 with the attachment, detach 202). The shape is 2.1's, which
holds up to the highest microversion served; ``tag`` needs 2.49.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from federator.api import microversion as mv
from federator.api.deps import BrokerDep, ContextDep
from federator.api.microversion import MicroversionDep
from federator.api.schemas import VolumeAttachmentCreateBody
from federator.api.volume_views import nova_attachment
from federator.exception import BadRequest
from federator.volumes.service import AttachRequest

router = APIRouter(prefix="/servers/{server_id}/os-volume_attachments", tags=["volumes"])
V2_49 = mv.Version(2, 49)
V2_60 = mv.Version(2, 60)


@router.post("")
def attach_volume(
    server_id: str,
    body: VolumeAttachmentCreateBody,
    broker: BrokerDep,
    rc: ContextDep,
    version: MicroversionDep,
) -> dict[str, Any]:
    a = body.volumeAttachment
    if a.tag is not None and version < V2_49:
        raise BadRequest(
            reason="volumeAttachment.tag: unknown field before microversion 2.49",
            problems=[{"field": "volumeAttachment.tag", "message": "needs microversion 2.49"}],
        )
    if a.delete_on_termination is not None:
        raise BadRequest(
            reason="volumeAttachment.delete_on_termination: unknown field before microversion 2.79",
            problems=[{"field": "volumeAttachment.delete_on_termination", "message": "2.79"}],
        )
    if version < V2_60 and broker.volumes.get(rc, a.volumeId).multiattach:
        raise BadRequest(
            reason="Multiattach volumes are only supported starting with compute API version 2.60.",
            problems=[{"field": "volumeAttachment.volumeId", "message": "needs 2.60"}],
        )
    view = broker.volumes.attach(
        rc, server_id, AttachRequest(volume_id=a.volumeId, device=a.device, tag=a.tag)
    )
    return {"volumeAttachment": nova_attachment(view)}


@router.get("")
def list_attachments(server_id: str, broker: BrokerDep, rc: ContextDep) -> dict[str, Any]:
    return {
        "volumeAttachments": [
            nova_attachment(a) for a in broker.volumes.attachments_of(rc, server_id)
        ]
    }


@router.get("/{volume_id}")
def show_attachment(
    server_id: str, volume_id: str, broker: BrokerDep, rc: ContextDep
) -> dict[str, Any]:
    return {
        "volumeAttachment": nova_attachment(broker.volumes.attachment(rc, server_id, volume_id))
    }


@router.delete("/{volume_id}", status_code=202)
def detach_volume(server_id: str, volume_id: str, broker: BrokerDep, rc: ContextDep) -> Response:
    broker.volumes.detach(rc, server_id, volume_id)
    return Response(status_code=202)
