"""Broker extension: the policy in force, reload, and explain."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter

from federator.api.deps import BrokerDep
from federator.api.schemas import ExplainBody
from federator.api.views import iso
from federator.compute.explain import ExplainRequest, explain
from federator.volumes.explain import VolumeExplainRequest, explain_volume

router = APIRouter(prefix="/policy", tags=["policy (broker)"])


@router.get("")
def show_policy(broker: BrokerDep) -> dict[str, Any]:
    cur = broker.policies.current
    return {
        "policy": {
            "version": cur.policy.version,
            "sha256": cur.sha256,
            "source": cur.source,
            "loaded_at": iso(broker.policies.loaded_at),
            "document": json.loads(cur.text),
        }
    }


@router.post("/reload")
def reload_policy(broker: BrokerDep) -> dict[str, Any]:
    """Re-read the policy file. An invalid file answers 422 with every problem and the
    policy in force stays as it was."""
    result = broker.policies.load()
    return {
        "reload": {
            "changed": result.changed,
            "version": result.version,
            "sha256": result.sha256,
            "loaded_at": iso(result.loaded_at),
        }
    }


@router.post("/explain")
def explain_policy(body: ExplainBody, broker: BrokerDep) -> dict[str, Any]:
    if body.volume is not None:
        return {
            "explain": explain_volume(
                broker.ctx,
                VolumeExplainRequest(
                    size_gb=body.volume.size,
                    volume_type=body.volume.volume_type,
                    availability_zone=body.availability_zone,
                    project_id=body.project_id,
                    max_pools=body.volume.max_pools,
                    multiattach=body.volume.multiattach,
                ),
            )
        }
    assert body.flavor is not None and body.image is not None  # checked by ExplainBody
    return {
        "explain": explain(
            broker.ctx,
            ExplainRequest(
                flavor=body.flavor,
                image=body.image,
                project_id=body.project_id,
                availability_zone=body.availability_zone,
                max_hosts=body.max_hosts,
                group=body.group,
            ),
        )
    }
