"""Explain a hypothetical volume create: every zone's verdicts and its roomiest pools.

The same ranking and pool query the create task uses (:mod:`federator.volumes.worker`),
read-only: nothing is claimed and no bursting state changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from federator import errors
from federator.compute.context import ComputeContext
from federator.compute.refs import placement_zone
from federator.volumes import claims
from federator.volumes.placement import VolumeRequest, rank_volume
from federator.volumes.service import CreateVolume, check_create
from federator.volumes.worker import storage_loads

__all__ = ["VolumeExplainRequest", "explain_volume"]

TOP_POOLS = 5


@dataclass(frozen=True, slots=True)
class VolumeExplainRequest:
    size_gb: int
    volume_type: str | None = None
    availability_zone: str | None = None
    project_id: str = "default"
    max_pools: int = TOP_POOLS
    multiattach: bool = False


def explain_volume(ctx: ComputeContext, req: VolumeExplainRequest) -> dict[str, Any]:
    """Where a volume of ``req`` would be placed now, and why not elsewhere.

    :raises BadRequest: an unknown volume type or availability zone, or a bad size.
    """
    vtype = check_create(
        ctx,
        CreateVolume(
            size=req.size_gb,
            volume_type=req.volume_type,
            availability_zone=req.availability_zone,
            multiattach=req.multiattach,
        ),
    )
    zone_of_az = placement_zone(ctx.settings, ctx.api, req.availability_zone)
    request = VolumeRequest(
        project_id=req.project_id,
        size_gb=req.size_gb,
        volume_type=vtype.name,
        availability_zone=zone_of_az or req.availability_zone,
        type_zones=frozenset(vtype.backends) if vtype.backends else None,
        multiattach=req.multiattach or vtype.multiattach,
    )
    loaded = ctx.policies.current
    loads = storage_loads(ctx)
    ranking = rank_volume(loaded.policy, ctx.policies.context, request, loads)
    candidates = {c.zone: c for c in ranking.candidates}
    az_filter = (
        req.availability_zone
        if req.availability_zone and req.availability_zone != zone_of_az
        else None
    )
    order = [z.name for z in ctx.settings.zones]
    decision: dict[str, Any] | None = None
    zones: list[dict[str, Any]] = []
    for name in order:
        verdicts = [v for v in ranking.verdicts if v.zone == name]
        cand = candidates.get(name)
        if not verdicts and cand is None:
            continue
        load = loads.get(name)
        entry: dict[str, Any] = {
            "zone": name,
            "kind": ctx.settings.zone(name).kind,
            "candidate": cand is not None,
            "rank": ranking.candidates.index(cand) + 1 if cand else None,
            "verdicts": [v.as_dict(with_zone=False) for v in verdicts],
            "storage": None
            if load is None
            else {
                "gb_used": load.gb_used,
                "gb_total": load.gb_total or None,
                "volumes": load.volumes,
                "bursting": load.bursting,
            },
        }
        if cand is not None:
            pools = claims.free_pools(
                ctx.api,
                name,
                req.size_gb,
                az=az_filter,
                pack=cand.weighing == "pack",
                limit=max(req.max_pools, 1),
            )
            entry["limits"] = {"gigabytes": cand.gb_limit, "volumes": cand.volumes_limit}
            entry["reason"] = cand.reason
            entry["pools"] = [
                {"pool": p.name, "host": p.host, "free_gb": p.free_gb}
                for p in pools[: req.max_pools]
            ]
            if not pools:
                entry["detail"] = f"no pool has {req.size_gb} GB free"
            elif decision is None:
                decision = {"zone": name, "pool": pools[0].name, "host": pools[0].host}
        zones.append(entry)
    zones.sort(key=lambda e: (e["rank"] is None, e["rank"] or 0, order.index(e["zone"])))
    return {
        "policy_version": loaded.policy.version,
        "policy_sha256": loaded.sha256,
        "request": {
            "size": req.size_gb,
            "volume_type": vtype.name,
            "project_id": req.project_id,
            "availability_zone": req.availability_zone,
        },
        "matched_rules": list(ranking.matched_rules),
        "decision": decision,
        "fault": None if decision is not None else ranking.fault or errors.NO_VALID_HOST,
        "would_start_bursting": list(ranking.start_bursting),
        "would_stop_bursting": list(ranking.stop_bursting),
        "zones": zones,
    }
