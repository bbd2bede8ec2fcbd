"""Explain a hypothetical boot: every candidate zone and host, and why. Reserves nothing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from federator.compute.context import ComputeContext
from federator.compute.refs import placement_zone, resolve
from federator.exception import BadRequest
from federator.groups.placement import GroupState, ZoneFit, fit, load, modes_of
from federator.groups.rules import ZoneMode
from federator.hosts.inventory import zone_loads
from federator.policy.evaluate import PlacementRequest, rank, threshold_figures
from federator.scheduler.request import HostRequest

_KEPT = {
    ZoneMode.HOSTS: "the broker's host scheduler",
    ZoneMode.REMOTE: "the remote cloud's own server group",
    ZoneMode.SINGLE: "the broker, counting the zone as one host",
}


def _group(ctx: ComputeContext, group: str | None) -> GroupState | None:
    """:raises BadRequest: no such group."""
    if group is None:
        return None
    with ctx.api.read() as s:
        state = load(s, group, "")
    if state is None:
        raise BadRequest(
            f"server group {group} could not be found",
            problems=[{"field": "group", "message": "no such server group"}],
        )
    return state


@dataclass(frozen=True, slots=True)
class ExplainRequest:
    flavor: str
    image: str
    project_id: str = "default"
    availability_zone: str | None = None
    max_hosts: int | None = None
    group: str | None = None
    """A server group the hypothetical server would join (its rule then applies)."""


def explain(ctx: ComputeContext, req: ExplainRequest) -> dict[str, Any]:
    """The decision the broker would take now, with the figures behind every verdict.

    :raises BadRequest: unknown flavor, image or availability zone.
    """
    refs = resolve(ctx.settings, req.flavor, req.image, req.availability_zone, db=ctx.api)
    flavor, image = refs.flavor, refs.image
    loaded = ctx.policies.current
    loads = zone_loads(ctx.api)
    preq = PlacementRequest(
        project_id=req.project_id,
        flavor_id=flavor.id,
        flavor_name=flavor.name,
        vcpus=flavor.vcpus,
        ram_mb=flavor.ram_mb,
        disk_gb=flavor.disk_gb,
        image_id=image.id,
        image_name=image.name,
        availability_zone=placement_zone(ctx.settings, ctx.api, req.availability_zone),
    )
    ranking = rank(loaded.policy, ctx.policies.context, preq, loads)
    candidates = {c.zone: c for c in ranking.candidates}
    group = _group(ctx, req.group)
    modes = modes_of(ctx.drivers)
    decision: dict[str, Any] | None = None
    zones: list[dict[str, Any]] = []
    order = [z.name for z in ctx.settings.zones]
    for name in order:
        verdicts = [v for v in ranking.verdicts if v.zone == name]
        cand = candidates.get(name)
        if not verdicts and cand is None:
            continue
        entry: dict[str, Any] = {
            "zone": name,
            "kind": ctx.settings.zone(name).kind,
            "candidate": cand is not None,
            "rank": ranking.candidates.index(cand) + 1 if cand else None,
            "verdicts": [v.as_dict(with_zone=False) for v in verdicts],
            "thresholds": threshold_figures(loaded.policy, loads[name]) if name in loads else {},
        }
        if cand is not None:
            entry["limits"] = {
                "ram_mb": cand.limits.ram_mb,
                "vcpus": cand.limits.vcpus,
                "instances": cand.limits.instances,
            }
            entry["reason"] = cand.reason
            chosen_host: str | None = None
            zfit = ZoneFit()
            if group is not None:
                mode = modes.get(name, ZoneMode.SINGLE)
                zfit = fit(group, name, mode, ctx.hosts.table.zone_azs(name))
                entry["group"] = {
                    "allowed": zfit.allowed,
                    "detail": zfit.reason
                    or ("soft rule: preferred, relaxed when no host keeps it" if zfit.soft else "")
                    or "the rule is kept here by " + _KEPT[mode],
                }
            if zfit.allowed and ctx.drivers[name].capabilities().host_scheduling:
                hreq = zfit.narrow(
                    HostRequest(
                        zone=name,
                        vcpus=flavor.vcpus,
                        ram_mb=flavor.ram_mb,
                        disk_gb=flavor.disk_gb,
                        az=req.availability_zone,
                        weighing=cand.weighing,
                        project_id=req.project_id,
                        extra_specs=flavor.extra_specs,
                        image_properties=image.properties,
                    )
                )
                # Best first: passing hosts by weight (stable, so ties keep table order,
                # as select() breaks them), then the rejected ones.
                hosts = sorted(
                    ctx.scheduler.explain(ctx.hosts.table, hreq),
                    key=lambda h: (not h.passed, -(h.weight or 0.0)),
                )
                passing = [h for h in hosts if h.passed]
                chosen_host = passing[0].host if passing else None
                shown = hosts if req.max_hosts is None else hosts[: req.max_hosts]
                entry["hosts"] = [
                    {
                        "host": h.host,
                        "passed": h.passed,
                        "rejected_by": h.rejected_by,
                        "detail": h.detail,
                        "weight": h.weight,
                        "free_ram_mb": h.free_ram_mb,
                        "free_vcpus": h.free_vcpus,
                        "free_disk_gb": h.free_disk_gb,
                    }
                    for h in shown
                ]
                entry["hosts_total"] = len(hosts)
                entry["hosts_passed"] = len(passing)
                if decision is None and chosen_host is not None:
                    decision = {"zone": name, "host": chosen_host}
            elif zfit.allowed and decision is None:
                decision = {"zone": name, "host": None}
        zones.append(entry)
    zones.sort(key=lambda e: (e["rank"] is None, e["rank"] or 0, order.index(e["zone"])))
    fault = None
    if decision is None:
        fault = ranking.fault or "federator.placement.no_valid_host"
        if group is not None and any(not e.get("group", {}).get("allowed", True) for e in zones):
            fault = "federator.placement.group_policy"
    return {
        "group": None
        if group is None
        else {"id": group.uuid, "rule": group.describe(), "members_placed": len(group.members)},
        "policy_version": loaded.policy.version,
        "policy_sha256": loaded.sha256,
        "request": {
            "flavor": flavor.name,
            "image": image.name,
            "project_id": req.project_id,
            "availability_zone": req.availability_zone,
        },
        "matched_rules": list(ranking.matched_rules),
        "decision": decision,
        "fault": fault,
        "would_start_bursting": list(ranking.start_bursting),
        "would_stop_bursting": list(ranking.stop_bursting),
        "zones": zones,
    }
