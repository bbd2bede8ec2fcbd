"""Rank the zones a request may be placed in, and say why (pure: no I/O, no clock).

The caller gathers each zone's load, calls :func:`rank`, then tries the candidates in
order, claiming capacity within each candidate's :class:`Limits`. The ranking also tells
the caller which local zones start or stop bursting (overflowing), since only the caller
can change that flag. See ``docs/policy.md`` for the algorithm in prose.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from federator import errors
from federator.policy.gauges import Gauge, gauges, percent
from federator.policy.loader import PolicyContext
from federator.policy.model import (
    DenyRule,
    LimitOverflowRule,
    Policy,
    RestrictRule,
    Rule,
    StayLocalRule,
    Weighing,
)

__all__ = [
    "Candidate",
    "Limits",
    "PlacementRequest",
    "Ranking",
    "Verdict",
    "Weighing",
    "ZoneLoad",
    "exclusions",
    "rank",
    "threshold_figures",
    "zone_weighing",
]

ZoneKind = Literal["local", "virtual"]
Figures = Mapping[str, float | int | str]


@dataclass(frozen=True, slots=True)
class ZoneLoad:
    """A zone's state as the caller last saw it.

    Totals are schedulable capacity (allocation ratios applied); 0 means unknown, as for
    an opaque remote cloud. Used figures count what the broker placed in the zone.
    """

    zone: str
    kind: ZoneKind
    available: bool
    bursting: bool
    ram_used_mb: int
    ram_total_mb: int
    vcpus_used: int
    vcpus_total: int
    instances: int
    reported: Limits | None = None
    """Ceilings from what a child zone last reported it can take (its free capacity added
    to this zone's usage at that moment); None when the zone reports nothing."""


@dataclass(frozen=True, slots=True)
class PlacementRequest:
    """What is being placed. ``availability_zone`` is set when the user named one."""

    project_id: str
    flavor_id: str
    flavor_name: str
    vcpus: int
    ram_mb: int
    disk_gb: int
    image_id: str
    image_name: str
    availability_zone: str | None = None


@dataclass(frozen=True, slots=True)
class Limits:
    """Absolute ceilings a claim must respect: usage after the claim <= limit.

    None means no ceiling from the policy (host capacity still applies).
    """

    ram_mb: int | None = None
    vcpus: int | None = None
    instances: int | None = None


@dataclass(frozen=True, slots=True)
class Candidate:
    """A zone to try, with the ceilings to claim within."""

    zone: str
    kind: ZoneKind
    limits: Limits
    thresholded: bool
    """True: ``limits`` are high-water marks; the claim must also require the zone not to
    be bursting, and a claim refused by the zone means it crossed high water (the caller
    then sets the bursting flag)."""
    weighing: Weighing
    reason: str


@dataclass(frozen=True, slots=True)
class Verdict:
    """One decision about one zone.

    ``check`` names what decided: ``threshold.ram_percent``, ``hysteresis.ram_percent``,
    ``quota.instances``, ``capacity.reported`` (a child zone reported too little room),
    ``rule:<name>``, ``zone.down``, ``explicit_az``, ``overflow.not_target`` for rejections;
    ``threshold``, ``capacity``, ``quota`` or ``explicit_az`` for accepted zones.
    """

    zone: str
    accepted: bool
    check: str
    detail: str
    figures: Figures = field(default_factory=dict)

    def as_dict(self, *, with_zone: bool = True) -> dict[str, Any]:
        """The verdict as placement records and explain show it."""
        shown: dict[str, Any] = {"zone": self.zone} if with_zone else {}
        shown.update(
            accepted=self.accepted, check=self.check, detail=self.detail, figures=dict(self.figures)
        )
        return shown


@dataclass(frozen=True, slots=True)
class Ranking:
    """The outcome of :func:`rank`."""

    policy_version: str
    candidates: tuple[Candidate, ...]
    """In the order to try."""
    verdicts: tuple[Verdict, ...]
    """At least one per configured zone (or, for a named zone, per zone considered)."""
    matched_rules: tuple[str, ...]
    start_bursting: tuple[str, ...]
    """Local zones whose high water this request would cross: the caller sets the flag."""
    stop_bursting: tuple[str, ...]
    """Bursting local zones now below every low-water mark: the caller clears the flag."""
    fault: str | None
    """When there is no candidate: errors.POLICY_DENIED, QUOTA_EXCEEDED or NO_VALID_HOST."""

    def reasons(self) -> tuple[str, ...]:
        """``zone: detail`` for every rejected zone, for error messages and faults."""
        return tuple(f"{v.zone}: {v.detail}" for v in self.verdicts if not v.accepted)


def zone_weighing(policy: Policy, zone: str) -> Weighing:
    """How hosts are weighed in ``zone``: the zone's setting, else the policy's."""
    return policy.zone(zone).weighing or policy.weighing


def threshold_figures(policy: Policy, load: ZoneLoad) -> dict[str, float | int]:
    """Current usage against the zone's thresholds, for display.

    Keys: ``ram_percent`` and ``vcpu_percent`` (used %, when the total is known) and
    ``instances``; ``<metric>_high`` and ``<metric>_low`` for every threshold set.
    """
    figures: dict[str, float | int] = {}
    if load.ram_total_mb > 0:
        figures["ram_percent"] = percent(load.ram_used_mb, load.ram_total_mb)
    if load.vcpus_total > 0:
        figures["vcpu_percent"] = percent(load.vcpus_used, load.vcpus_total)
    figures["instances"] = load.instances
    thresholds = policy.zone(load.zone).thresholds
    if thresholds is not None:
        for metric in ("ram_percent", "vcpu_percent", "instances"):
            marks = getattr(thresholds, metric)
            if marks is not None:
                figures[f"{metric}_high"] = marks.high
                figures[f"{metric}_low"] = marks.low
    return figures


def _load_figures(load: ZoneLoad, request: PlacementRequest) -> dict[str, float | int | str]:
    return {
        "ram_used_mb": load.ram_used_mb,
        "ram_total_mb": load.ram_total_mb,
        "ram_requested_mb": request.ram_mb,
        "vcpus_used": load.vcpus_used,
        "vcpus_total": load.vcpus_total,
        "vcpus_requested": request.vcpus,
        "instances": load.instances,
    }


# --- ranking ----------------------------------------------------------------------------


@dataclass(slots=True)
class _Outcome:
    """What evaluating one zone produced."""

    verdict: Verdict
    candidate: Candidate | None = None
    start_bursting: bool = False
    stop_bursting: bool = False


def rank(
    policy: Policy,
    context: PolicyContext,
    request: PlacementRequest,
    loads: Mapping[str, ZoneLoad],
) -> Ranking:
    """Rank the zones ``request`` may be placed in.

    A zone missing from ``loads`` is treated as down. Zones the configuration does not
    define are ignored, whatever the policy says about them.
    """
    matched = tuple(r for r in policy.rules if _fits(r, request))
    names = tuple(r.name for r in matched)
    deny = next((r for r in matched if isinstance(r, DenyRule)), None)
    if deny is not None:
        verdicts = [
            Verdict(z, False, f"rule:{deny.name}", f"denied by rule {deny.name!r}")
            for z in context.zones
        ]
        return _refusal(policy, names, verdicts, errors.POLICY_DENIED)
    scope = _Scope(policy, context, request, loads, names, exclusions(context, matched))
    if request.availability_zone is not None:
        return _rank_named(scope)
    return _rank_overflow(scope)


@dataclass(frozen=True, slots=True)
class _Scope:
    """The inputs of one ranking, once rules have been applied."""

    policy: Policy
    context: PolicyContext
    request: PlacementRequest
    loads: Mapping[str, ZoneLoad]
    matched: tuple[str, ...]
    excluded: Mapping[str, str]
    """Zone -> the name of the first matched rule that does not allow it."""


def _fits(rule: Rule, request: PlacementRequest) -> bool:
    return rule.match.matches(
        tenant=request.project_id,
        flavor=(request.flavor_id, request.flavor_name),
        image=(request.image_id, request.image_name),
    )


def exclusions(context: PolicyContext, matched: Sequence[Rule]) -> dict[str, str]:
    """Zone -> the name of the first matched rule that does not allow it."""
    excluded: dict[str, str] = {}
    for rule in matched:
        if isinstance(rule, StayLocalRule):
            allowed = set(context.local_zones)
        elif isinstance(rule, RestrictRule):
            allowed = set(rule.azs)
        elif isinstance(rule, LimitOverflowRule):
            allowed = set(context.local_zones) | set(rule.targets)
        else:
            continue
        for zone in context.zones:
            if zone not in allowed:
                excluded.setdefault(zone, rule.name)
    return excluded


def _excluded_verdict(zone: str, rule: str) -> Verdict:
    return Verdict(zone, False, f"rule:{rule}", f"rule {rule!r} does not allow zone {zone!r}")


def _rank_named(scope: _Scope) -> Ranking:
    """The request named an availability zone: that zone or nothing."""
    policy, names, excluded, request = scope.policy, scope.matched, scope.excluded, scope.request
    az = request.availability_zone or ""
    kind = scope.context.kind(az)
    if kind is None:
        # The API rejects unknown names; this covers a zone removed while the request queued.
        detail = f"availability zone {az!r} is not configured"
        return _refusal(
            policy, names, [Verdict(az, False, "explicit_az", detail)], errors.NO_VALID_HOST
        )
    if kind == "virtual" and not policy.allow_explicit_virtual_az:
        detail = (
            f"availability zone {az!r} is a virtual zone, and the policy does not let requests"
            " name virtual zones (allow_explicit_virtual_az is false)"
        )
        return _refusal(
            policy, names, [Verdict(az, False, "explicit_az", detail)], errors.POLICY_DENIED
        )
    if az in excluded:
        return _refusal(policy, names, [_excluded_verdict(az, excluded[az])], errors.POLICY_DENIED)
    load = scope.loads.get(az)
    if kind == "virtual":
        outcome = _virtual(policy, az, load, request, explicit=True)
    else:
        outcome = _local_uncapped(
            policy,
            az,
            load,
            request,
            reason="explicitly requested availability zone; thresholds only decide overflow",
            check="explicit_az",
        )
    return _finish(policy, names, [outcome])


def _rank_overflow(scope: _Scope) -> Ranking:
    """No zone named: local zones first, then their overflow targets."""
    policy, context, request = scope.policy, scope.context, scope.request
    loads, excluded = scope.loads, scope.excluded
    targets: list[str] = []
    for zone in context.local_zones:
        for target in policy.zone(zone).overflow:
            if context.kind(target) == "virtual" and target not in targets:
                targets.append(target)

    virtual: dict[str, _Outcome] = {}
    for target in targets:
        if target in excluded:
            virtual[target] = _Outcome(_excluded_verdict(target, excluded[target]))
        else:
            virtual[target] = _virtual(policy, target, loads.get(target), request, explicit=False)

    outcomes: list[_Outcome] = []
    for zone in context.local_zones:
        if zone in excluded:
            outcomes.append(_Outcome(_excluded_verdict(zone, excluded[zone])))
            continue
        mine = [t for t in policy.zone(zone).overflow if t in virtual]
        blocked = _why_no_overflow(mine, excluded, loads)
        outcomes.append(_local(policy, zone, loads.get(zone), request, blocked))
    outcomes.extend(virtual[t] for t in targets)
    outcomes.extend(_Outcome(v) for v in not_targets(context, virtual))
    return _finish(policy, scope.matched, outcomes)


def not_targets(context: PolicyContext, targets: Mapping[str, object]) -> list[Verdict]:
    """The verdicts of virtual zones that are no local zone's overflow target."""
    return [
        Verdict(
            zone,
            False,
            "overflow.not_target",
            f"zone {zone!r} is no local zone's overflow target; only a request naming it"
            " as its availability zone can use it",
        )
        for zone in context.virtual_zones
        if zone not in targets
    ]


def _why_no_overflow(
    targets: Sequence[str], excluded: Mapping[str, str], loads: Mapping[str, ZoneLoad]
) -> str | None:
    """None when the zone can overflow for this request, else why it cannot.

    A target at its quota still counts as open: the operator capped the overflow, so the
    local zone keeps to its high-water mark rather than absorbing the excess.
    """
    if not targets:
        return "the zone has no overflow targets"
    reasons = []
    for target in targets:
        load = loads.get(target)
        if target in excluded:
            reasons.append(f"{target} excluded by rule {excluded[target]!r}")
        elif load is None or not load.available:
            reasons.append(f"{target} is down")
        else:
            return None
    return "; ".join(reasons)


def _local(
    policy: Policy,
    zone: str,
    load: ZoneLoad | None,
    request: PlacementRequest,
    blocked: str | None,
) -> _Outcome:
    """Judge a local zone against its thresholds, with hysteresis."""
    if load is None or not load.available:
        return _down(zone, load)
    if blocked is not None:
        reason = f"this request cannot overflow ({blocked}), so thresholds do not apply"
        return _local_uncapped(policy, zone, load, request, reason=reason, check="capacity")
    watched = gauges(policy.zone(zone).thresholds, load, request)
    if not watched:
        reason = "no thresholds apply to this zone"
        return _local_uncapped(policy, zone, load, request, reason=reason, check="capacity")
    figures = _load_figures(load, request)
    for gauge in watched:
        figures.update(gauge.figures())
    clears = load.bursting and all(g.below_low for g in watched)
    if load.bursting and not clears:
        pending = [g for g in watched if not g.below_low]
        detail = "bursting since it crossed high water; " + ", ".join(
            f"{g.now()} not yet below low water {g.mark(g.low)}" for g in pending
        )
        return _Outcome(Verdict(zone, False, f"hysteresis.{pending[0].metric}", detail, figures))
    crossing = [g for g in watched if g.crosses_high]
    if crossing:
        detail = "this request would cross high water: " + ", ".join(
            f"{g.after()} > {g.mark(g.high)}" for g in crossing
        )
        # A zone that was bursting and just fell below low water simply stays bursting.
        return _Outcome(
            Verdict(zone, False, f"threshold.{crossing[0].metric}", detail, figures),
            start_bursting=not load.bursting,
        )
    reason = "under high water after this request: " + ", ".join(
        f"{g.after()} <= {g.mark(g.high)}" for g in watched
    )
    if clears:
        reason = (
            "back below every low-water mark ("
            + ", ".join(f"{g.now()} < {g.mark(g.low)}" for g in watched)
            + "); "
            + reason
        )
    limits = Limits(
        ram_mb=_ceiling(watched, "ram_percent"),
        vcpus=_ceiling(watched, "vcpu_percent"),
        instances=_ceiling(watched, "instances"),
    )
    candidate = Candidate(zone, "local", limits, True, zone_weighing(policy, zone), reason)
    return _Outcome(
        Verdict(zone, True, "threshold", reason, figures), candidate, stop_bursting=clears
    )


def _local_uncapped(
    policy: Policy,
    zone: str,
    load: ZoneLoad | None,
    request: PlacementRequest,
    *,
    reason: str,
    check: str,
) -> _Outcome:
    """A local zone limited only by its hosts' capacity."""
    if load is None or not load.available:
        return _down(zone, load)
    figures = _load_figures(load, request)
    figures.update(threshold_figures(policy, load))
    candidate = Candidate(zone, "local", Limits(), False, zone_weighing(policy, zone), reason)
    # The flag is the zone's, not the request's: clear it whenever usage allows.
    watched = gauges(policy.zone(zone).thresholds, load, request)
    clears = load.bursting and all(g.below_low for g in watched)
    return _Outcome(Verdict(zone, True, check, reason, figures), candidate, stop_bursting=clears)


def _virtual(
    policy: Policy,
    zone: str,
    load: ZoneLoad | None,
    request: PlacementRequest,
    *,
    explicit: bool,
) -> _Outcome:
    """Judge a virtual zone against its quota (and thresholds, when its capacity is known)."""
    if load is None or not load.available:
        return _down(zone, load)
    figures = _load_figures(load, request)
    quota = policy.zone(zone).quota
    limits = Limits()
    usage: list[tuple[str, int, int]] = []
    over: list[tuple[str, int, int]] = []
    if quota is not None:
        limits = Limits(ram_mb=quota.ram_mb, vcpus=quota.vcpus, instances=quota.instances)
        for metric, used, wanted, limit in (
            ("instances", load.instances, 1, quota.instances),
            ("vcpus", load.vcpus_used, request.vcpus, quota.vcpus),
            ("ram_mb", load.ram_used_mb, request.ram_mb, quota.ram_mb),
        ):
            if limit is None:
                continue
            figures[f"quota_{metric}"] = limit
            figures[f"{metric}_projected"] = used + wanted
            usage.append((metric, used + wanted, limit))
            if used + wanted > limit:
                over.append((metric, used + wanted, limit))
    if over:
        detail = "over quota after this request: " + ", ".join(
            f"{metric} {projected} > {limit}" for metric, projected, limit in over
        )
        return _Outcome(Verdict(zone, False, f"quota.{over[0][0]}", detail, figures))

    watched = gauges(policy.zone(zone).thresholds, load, request)
    for gauge in watched:
        figures.update(gauge.figures())
    crossing = [g for g in watched if g.crosses_high]
    if crossing:
        detail = "this request would cross high water: " + ", ".join(
            f"{g.after()} > {g.mark(g.high)}" for g in crossing
        )
        return _Outcome(Verdict(zone, False, f"threshold.{crossing[0].metric}", detail, figures))
    short = _short_of_reported(load, request, figures)
    if short:
        detail = "the zone reported no room for this request: " + ", ".join(short)
        return _Outcome(Verdict(zone, False, "capacity.reported", detail, figures))
    reported = load.reported or Limits()
    limits = Limits(
        ram_mb=_lowest(_lowest(limits.ram_mb, _ceiling(watched, "ram_percent")), reported.ram_mb),
        vcpus=_lowest(_lowest(limits.vcpus, _ceiling(watched, "vcpu_percent")), reported.vcpus),
        instances=_lowest(
            _lowest(limits.instances, _ceiling(watched, "instances")), reported.instances
        ),
    )
    within = ", ".join(f"{metric} {projected}/{limit}" for metric, projected, limit in usage)
    reason = f"within quota after this request: {within}" if within else "no quota set"
    if load.reported is not None:
        room = [
            f"{k.removeprefix('reported_free_')} {v}"
            for k, v in figures.items()
            if k.startswith("reported_free_")
        ]
        reason += "; reported free: " + (", ".join(room) if room else "unbounded")
    if explicit:
        reason = f"explicitly requested availability zone; {reason}"
    else:
        reason = f"overflow target; {reason}"
    check = "explicit_az" if explicit else "quota"
    candidate = Candidate(zone, "virtual", limits, False, zone_weighing(policy, zone), reason)
    return _Outcome(Verdict(zone, True, check, reason, figures), candidate)


def _short_of_reported(
    load: ZoneLoad, request: PlacementRequest, figures: dict[str, float | int | str]
) -> list[str]:
    """What a child zone's last report leaves too little room for, one phrase per metric."""
    if load.reported is None:
        return []
    short = []
    for metric, unit, used, wanted, ceiling in (
        ("ram_mb", " MB RAM", load.ram_used_mb, request.ram_mb, load.reported.ram_mb),
        ("vcpus", " vCPUs", load.vcpus_used, request.vcpus, load.reported.vcpus),
        ("instances", " instances", load.instances, 1, load.reported.instances),
    ):
        if ceiling is None:
            continue
        room = max(0, ceiling - used)
        figures[f"reported_free_{metric}"] = room
        if wanted > room:
            short.append(f"{room}{unit} free, {wanted} needed")
    return short


def _down(zone: str, load: ZoneLoad | None) -> _Outcome:
    detail = "no load report for this zone" if load is None else "zone is unavailable"
    return _Outcome(Verdict(zone, False, "zone.down", detail))


def _ceiling(watched: Sequence[Gauge], metric: str) -> int | None:
    return next((g.ceiling for g in watched if g.metric == metric), None)


def _lowest(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    return a if b is None else min(a, b)


def _finish(policy: Policy, names: tuple[str, ...], outcomes: Sequence[_Outcome]) -> Ranking:
    candidates = [o.candidate for o in outcomes if o.candidate is not None]
    fault = None if candidates else fault_of([o.verdict for o in outcomes])
    return Ranking(
        policy_version=policy.version,
        candidates=tuple(candidates),
        verdicts=tuple(o.verdict for o in outcomes),
        matched_rules=names,
        start_bursting=tuple(o.verdict.zone for o in outcomes if o.start_bursting),
        stop_bursting=tuple(o.verdict.zone for o in outcomes if o.stop_bursting),
        fault=fault,
    )


def fault_of(verdicts: Sequence[Verdict]) -> str:
    """Why nothing is left: rules excluded every zone, every zone was at quota, or else."""
    considered = [
        v for v in verdicts if not v.check.startswith("rule:") and v.check != "overflow.not_target"
    ]
    if not considered:
        return errors.POLICY_DENIED
    if all(v.check.startswith("quota.") for v in considered):
        return errors.QUOTA_EXCEEDED
    return errors.NO_VALID_HOST


def _refusal(
    policy: Policy, names: tuple[str, ...], verdicts: Sequence[Verdict], fault: str
) -> Ranking:
    return Ranking(
        policy_version=policy.version,
        candidates=(),
        verdicts=tuple(verdicts),
        matched_rules=names,
        start_bursting=(),
        stop_bursting=(),
        fault=fault,
    )
