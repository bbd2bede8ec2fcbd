"""Rank the zones a volume may be placed in, and say why (pure: no I/O, no clock).

The same policy that places servers places volumes: local zones first while the storage
claimed there stays under their ``gb_percent`` high-water mark (with the same hysteresis:
once over, a zone takes no volume until it is back below low water), then their overflow
targets in order, within each target's ``volumes`` and ``gigabytes`` quota. A volume that
names an availability zone goes there or nowhere. Rules apply when they can match a volume:
a rule whose match names flavors or images is about servers and leaves volumes alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from federator import errors
from federator.policy.evaluate import (
    Verdict,
    Weighing,
    exclusions,
    fault_of,
    not_targets,
    zone_weighing,
)
from federator.policy.gauges import Gauge
from federator.policy.loader import PolicyContext
from federator.policy.model import DenyRule, Policy, Rule

__all__ = ["StorageLoad", "VolumeCandidate", "VolumeRanking", "VolumeRequest", "rank_volume"]

Figures = dict[str, float | int | str]


@dataclass(frozen=True, slots=True)
class StorageLoad:
    """A zone's block storage as last seen: ``gb_total`` 0 means unknown (unbounded pools).
    ``has_storage`` is False for a zone whose driver holds no volumes."""

    zone: str
    kind: str
    available: bool
    has_storage: bool
    bursting: bool
    gb_used: int
    gb_total: int
    volumes: int
    multiattach: bool = False
    """The zone's storage can attach one volume to several servers."""


@dataclass(frozen=True, slots=True)
class VolumeRequest:
    """What is being placed. ``availability_zone`` is the zone the user's availability zone
    lies in, when they named one; ``type_zones`` the zones the volume type is offered in
    (None: every zone)."""

    project_id: str
    size_gb: int
    volume_type: str
    availability_zone: str | None = None
    type_zones: frozenset[str] | None = None
    multiattach: bool = False


@dataclass(frozen=True, slots=True)
class VolumeCandidate:
    """A zone to try, with the ceilings its claim must respect (None: no ceiling)."""

    zone: str
    kind: str
    gb_limit: int | None
    volumes_limit: int | None
    thresholded: bool
    """``gb_limit`` is a high-water mark: the claim also requires the zone not to be
    bursting, and a refusal by the zone means it crossed high water."""
    weighing: Weighing
    reason: str


@dataclass(frozen=True, slots=True)
class VolumeRanking:
    policy_version: str
    candidates: tuple[VolumeCandidate, ...]
    verdicts: tuple[Verdict, ...]
    matched_rules: tuple[str, ...]
    start_bursting: tuple[str, ...] = ()
    stop_bursting: tuple[str, ...] = ()
    fault: str | None = None

    def reasons(self) -> tuple[str, ...]:
        return tuple(f"{v.zone}: {v.detail}" for v in self.verdicts if not v.accepted)


@dataclass(slots=True)
class _Outcome:
    verdict: Verdict
    candidate: VolumeCandidate | None = None
    start_bursting: bool = False
    stop_bursting: bool = False


@dataclass(frozen=True, slots=True)
class _Scope:
    policy: Policy
    context: PolicyContext
    request: VolumeRequest
    loads: Mapping[str, StorageLoad]
    excluded: Mapping[str, str] = field(default_factory=dict)


def _applies(rule: Rule) -> bool:
    """Can the rule match a volume? Only rules about tenants (or everything) can."""
    return rule.match.flavors is None and rule.match.images is None


def rank_volume(
    policy: Policy,
    context: PolicyContext,
    request: VolumeRequest,
    loads: Mapping[str, StorageLoad],
) -> VolumeRanking:
    """Rank the zones ``request`` may be placed in; a zone missing from ``loads`` is down."""
    matched = tuple(
        r
        for r in policy.rules
        if _applies(r) and r.match.matches(tenant=request.project_id, flavor=(), image=())
    )
    names = tuple(r.name for r in matched)
    deny = next((r for r in matched if isinstance(r, DenyRule)), None)
    if deny is not None:
        verdicts = tuple(
            Verdict(z, False, f"rule:{deny.name}", f"denied by rule {deny.name!r}")
            for z in context.zones
        )
        return VolumeRanking(policy.version, (), verdicts, names, fault=errors.POLICY_DENIED)
    scope = _Scope(policy, context, request, loads, exclusions(context, matched))
    outcomes = _named(scope) if request.availability_zone is not None else _overflow(scope)
    candidates = tuple(o.candidate for o in outcomes if o.candidate is not None)
    return VolumeRanking(
        policy_version=policy.version,
        candidates=candidates,
        verdicts=tuple(o.verdict for o in outcomes),
        matched_rules=names,
        start_bursting=tuple(o.verdict.zone for o in outcomes if o.start_bursting),
        stop_bursting=tuple(o.verdict.zone for o in outcomes if o.stop_bursting),
        fault=None if candidates else fault_of([o.verdict for o in outcomes]),
    )


def _refused(scope: _Scope, zone: str) -> _Outcome | None:
    """Why ``zone`` cannot take the volume whatever its load, or None."""
    request, load = scope.request, scope.loads.get(zone)
    if zone in scope.excluded:
        rule = scope.excluded[zone]
        return _Outcome(
            Verdict(zone, False, f"rule:{rule}", f"rule {rule!r} does not allow zone {zone!r}")
        )
    if request.type_zones is not None and zone not in request.type_zones:
        detail = f"volume type {request.volume_type!r} is not offered in zone {zone!r}"
        return _Outcome(Verdict(zone, False, "volume_type", detail))
    if load is not None and not load.has_storage:
        return _Outcome(Verdict(zone, False, "storage.none", f"zone {zone!r} holds no volumes"))
    if load is None or not load.available:
        detail = "no load report for this zone" if load is None else "zone is unavailable"
        return _Outcome(Verdict(zone, False, "zone.down", detail))
    if request.multiattach and not load.multiattach:
        detail = f"zone {zone!r} cannot attach a volume to several servers (multiattach)"
        return _Outcome(Verdict(zone, False, "storage.multiattach", detail))
    return None


def _named(scope: _Scope) -> list[_Outcome]:
    zone = scope.request.availability_zone or ""
    kind = scope.context.kind(zone)
    if kind is None:
        detail = f"availability zone {zone!r} is not configured"
        return [_Outcome(Verdict(zone, False, "explicit_az", detail))]
    if kind == "virtual" and not scope.policy.allow_explicit_virtual_az:
        detail = (
            f"availability zone {zone!r} is a virtual zone, and the policy does not let requests"
            " name virtual zones (allow_explicit_virtual_az is false)"
        )
        return [_Outcome(Verdict(zone, False, "explicit_az", detail))]
    refused = _refused(scope, zone)
    if refused is not None:
        return [refused]
    load = scope.loads[zone]
    if kind == "virtual":
        return [_virtual(scope, load, explicit=True)]
    reason = "explicitly requested availability zone; thresholds only decide overflow"
    return [_uncapped(scope, load, reason, "explicit_az")]


def _overflow(scope: _Scope) -> list[_Outcome]:
    policy, context = scope.policy, scope.context
    targets: list[str] = []
    for zone in context.local_zones:
        for target in policy.zone(zone).overflow:
            if context.kind(target) == "virtual" and target not in targets:
                targets.append(target)
    virtual: dict[str, _Outcome] = {}
    reachable: set[str] = set()
    for target in targets:
        refused = _refused(scope, target)
        virtual[target] = refused or _virtual(scope, scope.loads[target], explicit=False)
        if refused is None:
            reachable.add(target)
    outcomes: list[_Outcome] = []
    for zone in context.local_zones:
        refused = _refused(scope, zone)
        if refused is not None:
            outcomes.append(refused)
            continue
        # As for servers: a target that is up but at its quota still counts (the quota caps
        # the overflow on purpose, and the local zone keeps to its high-water mark); one
        # excluded by a rule, down, or without storage does not.
        open_targets = [t for t in policy.zone(zone).overflow if t in reachable]
        outcomes.append(_local(scope, scope.loads[zone], can_overflow=bool(open_targets)))
    outcomes.extend(virtual[t] for t in targets)
    outcomes.extend(_Outcome(v) for v in not_targets(context, virtual))
    return outcomes


def _gauge(scope: _Scope, load: StorageLoad) -> Gauge | None:
    thresholds = scope.policy.zone(load.zone).thresholds
    marks = None if thresholds is None else thresholds.gb_percent
    if marks is None or load.gb_total <= 0:
        return None
    return Gauge(
        metric="gb_percent",
        label="storage",
        unit=" GB",
        used=load.gb_used,
        projected=load.gb_used + scope.request.size_gb,
        total=load.gb_total,
        high=marks.high,
        low=marks.low,
    )


def _figures(scope: _Scope, load: StorageLoad) -> Figures:
    return {
        "gb_used": load.gb_used,
        "gb_total": load.gb_total,
        "gb_requested": scope.request.size_gb,
        "volumes": load.volumes,
    }


def _local(scope: _Scope, load: StorageLoad, *, can_overflow: bool) -> _Outcome:
    """A local zone against its gb_percent threshold, with hysteresis."""
    gauge = _gauge(scope, load)
    if gauge is None:
        return _uncapped(scope, load, "no storage threshold applies to this zone", "capacity")
    if not can_overflow:
        reason = "this volume cannot overflow (no open overflow target), so thresholds do not apply"
        return _uncapped(scope, load, reason, "capacity")
    figures = {**_figures(scope, load), **gauge.figures()}
    zone = load.zone
    clears = load.bursting and gauge.below_low
    if load.bursting and not clears:
        detail = (
            f"bursting since it crossed high water; {gauge.now()} not yet below low water "
            f"{gauge.mark(gauge.low)}"
        )
        return _Outcome(Verdict(zone, False, "hysteresis.gb_percent", detail, figures))
    if gauge.crosses_high:
        detail = f"this volume would cross high water: {gauge.after()} > {gauge.mark(gauge.high)}"
        return _Outcome(
            Verdict(zone, False, "threshold.gb_percent", detail, figures),
            start_bursting=not load.bursting,
        )
    reason = f"under high water after this volume: {gauge.after()} <= {gauge.mark(gauge.high)}"
    candidate = VolumeCandidate(
        zone, "local", gauge.ceiling, None, True, zone_weighing(scope.policy, zone), reason
    )
    return _Outcome(
        Verdict(zone, True, "threshold", reason, figures), candidate, stop_bursting=clears
    )


def _uncapped(scope: _Scope, load: StorageLoad, reason: str, check: str) -> _Outcome:
    zone = load.zone
    gauge = _gauge(scope, load)
    candidate = VolumeCandidate(
        zone, "local", None, None, False, zone_weighing(scope.policy, zone), reason
    )
    clears = load.bursting and (gauge is None or gauge.below_low)
    return _Outcome(
        Verdict(zone, True, check, reason, _figures(scope, load)), candidate, stop_bursting=clears
    )


def _virtual(scope: _Scope, load: StorageLoad, *, explicit: bool) -> _Outcome:
    """A virtual zone against its quota (and gb_percent, when its capacity is known)."""
    zone, request = load.zone, scope.request
    figures = _figures(scope, load)
    quota = scope.policy.zone(zone).quota
    gb_limit = None if quota is None else quota.gigabytes
    volumes_limit = None if quota is None else quota.volumes
    within: list[str] = []
    over: list[str] = []
    for metric, projected, limit in (
        ("volumes", load.volumes + 1, volumes_limit),
        ("gigabytes", load.gb_used + request.size_gb, gb_limit),
    ):
        if limit is None:
            continue
        figures[f"quota_{metric}"] = limit
        (over if projected > limit else within).append(f"{metric} {projected}/{limit}")
    if over:
        detail = "over quota after this volume: " + ", ".join(over)
        check = "quota.volumes" if over[0].startswith("volumes") else "quota.gigabytes"
        return _Outcome(Verdict(zone, False, check, detail, figures))
    gauge = _gauge(scope, load)
    if gauge is not None:
        figures.update(gauge.figures())
        if gauge.crosses_high:
            detail = (
                f"this volume would cross high water: {gauge.after()} > {gauge.mark(gauge.high)}"
            )
            return _Outcome(Verdict(zone, False, "threshold.gb_percent", detail, figures))
        gb_limit = gauge.ceiling if gb_limit is None else min(gb_limit, gauge.ceiling)
    reason = ("within quota after this volume: " + ", ".join(within)) if within else "no quota set"
    reason = ("explicitly requested availability zone; " if explicit else "overflow target; ") + (
        reason
    )
    candidate = VolumeCandidate(
        zone, "virtual", gb_limit, volumes_limit, False, zone_weighing(scope.policy, zone), reason
    )
    check = "explicit_az" if explicit else "quota"
    return _Outcome(Verdict(zone, True, check, reason, figures), candidate)
