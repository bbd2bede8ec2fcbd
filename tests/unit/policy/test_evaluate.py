"""rank(): thresholds with hysteresis, quotas in order, rules, named zones, explanations."""

from __future__ import annotations

import copy
import dataclasses
import json
from typing import Any

from federator import errors
from federator.policy.evaluate import (
    Limits,
    PlacementRequest,
    Ranking,
    Verdict,
    ZoneLoad,
    rank,
    threshold_figures,
    zone_weighing,
)
from federator.policy.loader import PolicyContext, parse_policy
from federator.policy.model import Policy

CTX = PolicyContext(
    local_zones=("local",),
    virtual_zones=("cloud-a", "cloud-b"),
    flavors={"2": "m1.small", "4": "g1.large"},
    images={"img-1": "cirros", "img-2": "win2022"},
)

# 4 hosts x 8192 MB; 32 schedulable vCPUs.
RAM_TOTAL = 32768
VCPU_TOTAL = 32

BASE: dict[str, Any] = {
    "version": "test.1",
    "zones": {
        "local": {
            "thresholds": {"ram_percent": {"high": 75, "low": 50}},
            "overflow": ["cloud-a", "cloud-b"],
        },
        "cloud-a": {"quota": {"instances": 8}},
        "cloud-b": {"quota": {"instances": 8}},
    },
}


def make_policy(**changes: Any) -> Policy:
    doc = copy.deepcopy(BASE)
    doc.update(changes)
    return parse_policy(json.dumps(doc), "<test>", CTX).policy


def with_rules(*rules: dict[str, Any], **changes: Any) -> Policy:
    return make_policy(rules=list(rules), **changes)


def request(**changes: Any) -> PlacementRequest:
    base = PlacementRequest(
        project_id="p1",
        flavor_id="2",
        flavor_name="m1.small",
        vcpus=1,
        ram_mb=1024,
        disk_gb=10,
        image_id="img-1",
        image_name="cirros",
    )
    return dataclasses.replace(base, **changes)


def local(
    ram_used: int = 0,
    *,
    bursting: bool = False,
    available: bool = True,
    vcpus_used: int = 0,
    instances: int = 0,
) -> ZoneLoad:
    return ZoneLoad(
        zone="local",
        kind="local",
        available=available,
        bursting=bursting,
        ram_used_mb=ram_used,
        ram_total_mb=RAM_TOTAL,
        vcpus_used=vcpus_used,
        vcpus_total=VCPU_TOTAL,
        instances=instances,
    )


def remote(zone: str, instances: int = 0, *, available: bool = True) -> ZoneLoad:
    # Opaque remote cloud: totals unknown; used figures are what the broker placed there.
    return ZoneLoad(
        zone=zone,
        kind="virtual",
        available=available,
        bursting=False,
        ram_used_mb=instances * 1024,
        ram_total_mb=0,
        vcpus_used=instances,
        vcpus_total=0,
        instances=instances,
    )


def loads(*zones: ZoneLoad) -> dict[str, ZoneLoad]:
    out = {z.zone: z for z in (local(), remote("cloud-a"), remote("cloud-b"))}
    out.update({z.zone: z for z in zones})
    return out


def verdict(ranking: Ranking, zone: str) -> Verdict:
    [found] = [v for v in ranking.verdicts if v.zone == zone]
    return found


def zones_of(ranking: Ranking) -> list[str]:
    return [c.zone for c in ranking.candidates]


# --- thresholds and hysteresis ---------------------------------------------------------


def test_24th_boot_fits_under_high_water_and_the_25th_starts_bursting() -> None:
    policy = make_policy()
    used = 0
    for boot in range(1, 25):
        ranking = rank(policy, CTX, request(), loads(local(used)))
        first = ranking.candidates[0]
        assert first.zone == "local", f"boot {boot}: {ranking.reasons()}"
        assert first.thresholded is True
        assert first.limits == Limits(ram_mb=24576)
        assert ranking.start_bursting == ()
        used += 1024
    assert used == 24576  # exactly 75%

    ranking = rank(policy, CTX, request(), loads(local(used)))

    assert zones_of(ranking) == ["cloud-a", "cloud-b"]
    assert ranking.start_bursting == ("local",)
    assert ranking.stop_bursting == ()
    rejected = verdict(ranking, "local")
    assert rejected.accepted is False
    assert rejected.check == "threshold.ram_percent"
    assert rejected.detail == (
        "this request would cross high water: ram 25600/32768 MB = 78.1% > 75%"
    )
    assert rejected.figures["ram_used_mb"] == 24576
    assert rejected.figures["ram_total_mb"] == RAM_TOTAL
    assert rejected.figures["ram_percent"] == 75.0
    assert rejected.figures["ram_percent_projected"] == 78.1
    assert rejected.figures["ram_percent_high"] == 75
    assert rejected.figures["ram_percent_low"] == 50


def test_bursting_zone_stays_rejected_until_below_low_water() -> None:
    policy = make_policy()

    ranking = rank(policy, CTX, request(), loads(local(20480, bursting=True)))
    assert zones_of(ranking) == ["cloud-a", "cloud-b"]
    rejected = verdict(ranking, "local")
    assert rejected.check == "hysteresis.ram_percent"
    assert rejected.detail == (
        "bursting since it crossed high water; ram 62.5% not yet below low water 50%"
    )
    assert rejected.figures["ram_percent"] == 62.5
    assert ranking.start_bursting == ranking.stop_bursting == ()

    # Exactly at the low-water mark is not below it.
    ranking = rank(policy, CTX, request(), loads(local(16384, bursting=True)))
    assert verdict(ranking, "local").check == "hysteresis.ram_percent"

    ranking = rank(policy, CTX, request(), loads(local(15360, bursting=True)))
    assert zones_of(ranking) == ["local", "cloud-a", "cloud-b"]
    assert ranking.stop_bursting == ("local",)
    assert ranking.start_bursting == ()
    accepted = verdict(ranking, "local")
    assert accepted.accepted is True
    assert accepted.check == "threshold"
    assert "ram 46.9% < 50%" in accepted.detail
    assert ranking.candidates[0].thresholded is True
    assert ranking.candidates[0].limits == Limits(ram_mb=24576)


def test_vcpu_and_instance_thresholds() -> None:
    zones = copy.deepcopy(BASE["zones"])
    zones["local"]["thresholds"] = {
        "vcpu_percent": {"high": 50, "low": 25},
        "instances": {"high": 3, "low": 1},
    }
    policy = make_policy(zones=zones)

    ranking = rank(policy, CTX, request(vcpus=2), loads(local(vcpus_used=14, instances=2)))
    assert ranking.candidates[0].zone == "local"
    assert ranking.candidates[0].limits == Limits(vcpus=16, instances=3)

    ranking = rank(policy, CTX, request(vcpus=2), loads(local(vcpus_used=15, instances=3)))
    rejected = verdict(ranking, "local")
    assert rejected.check == "threshold.vcpu_percent"
    assert rejected.detail == (
        "this request would cross high water: vcpu 17/32 vCPUs = 53.1% > 50%, instances 4 > 3"
    )
    assert rejected.figures["instances_projected"] == 4
    assert ranking.start_bursting == ("local",)


def test_zone_without_thresholds_is_limited_by_hosts_only() -> None:
    zones = copy.deepcopy(BASE["zones"])
    del zones["local"]["thresholds"]
    ranking = rank(make_policy(zones=zones), CTX, request(), loads(local(32000)))
    first = ranking.candidates[0]
    assert (first.zone, first.thresholded, first.limits) == ("local", False, Limits())
    assert verdict(ranking, "local").detail == "no thresholds apply to this zone"


# --- quotas ---------------------------------------------------------------------------


def test_overflow_fills_targets_in_order_then_fails_with_no_valid_host() -> None:
    policy = make_policy()
    full_local = local(24576, bursting=True)
    placed = {"cloud-a": 0, "cloud-b": 0}
    for boot in range(16):
        ranking = rank(
            policy,
            CTX,
            request(),
            loads(
                full_local,
                remote("cloud-a", placed["cloud-a"]),
                remote("cloud-b", placed["cloud-b"]),
            ),
        )
        assert ranking.fault is None, f"boot {boot}: {ranking.reasons()}"
        first = ranking.candidates[0]
        assert first.kind == "virtual"
        assert first.limits == Limits(instances=8)
        assert first.thresholded is False
        placed[first.zone] += 1
        assert placed == {"cloud-a": min(boot + 1, 8), "cloud-b": max(boot - 7, 0)}

    ranking = rank(
        policy, CTX, request(), loads(full_local, remote("cloud-a", 8), remote("cloud-b", 8))
    )

    assert ranking.candidates == ()
    assert ranking.fault == errors.NO_VALID_HOST
    for zone in ("cloud-a", "cloud-b"):
        rejected = verdict(ranking, zone)
        assert rejected.check == "quota.instances"
        assert rejected.detail == "over quota after this request: instances 9 > 8"
        assert rejected.figures["quota_instances"] == 8
        assert rejected.figures["instances_projected"] == 9
    assert verdict(ranking, "local").check == "hysteresis.ram_percent"


def test_quota_on_every_metric() -> None:
    zones = copy.deepcopy(BASE["zones"])
    zones["cloud-a"]["quota"] = {"instances": 10, "vcpus": 4, "ram_mb": 4096}
    policy = make_policy(zones=zones)
    busy = local(24576, bursting=True)

    ranking = rank(policy, CTX, request(vcpus=2, ram_mb=2048), loads(busy, remote("cloud-a", 2)))
    assert ranking.candidates[0].zone == "cloud-a"
    assert ranking.candidates[0].limits == Limits(ram_mb=4096, vcpus=4, instances=10)

    ranking = rank(policy, CTX, request(vcpus=2, ram_mb=2048), loads(busy, remote("cloud-a", 3)))
    rejected = verdict(ranking, "cloud-a")
    assert rejected.check == "quota.vcpus"
    assert rejected.detail == "over quota after this request: vcpus 5 > 4, ram_mb 5120 > 4096"
    assert zones_of(ranking) == ["cloud-b"]


def test_virtual_zone_thresholds_cap_it_when_its_capacity_is_known() -> None:
    zones = copy.deepcopy(BASE["zones"])
    zones["cloud-a"]["thresholds"] = {"ram_percent": {"high": 50, "low": 40}}
    policy = make_policy(zones=zones)
    busy = local(24576, bursting=True)
    known = dataclasses.replace(remote("cloud-a", 3), ram_total_mb=10000)

    ranking = rank(policy, CTX, request(), loads(busy, known))
    assert ranking.candidates[0].zone == "cloud-a"
    assert ranking.candidates[0].limits == Limits(ram_mb=5000, instances=8)

    fuller = dataclasses.replace(known, ram_used_mb=4500)
    ranking = rank(policy, CTX, request(), loads(busy, fuller))
    assert verdict(ranking, "cloud-a").check == "threshold.ram_percent"
    assert zones_of(ranking) == ["cloud-b"]
    assert ranking.start_bursting == ()  # only local zones burst


# --- availability ---------------------------------------------------------------------


def test_down_zone_is_skipped() -> None:
    ranking = rank(
        make_policy(),
        CTX,
        request(),
        loads(local(24576, bursting=True), remote("cloud-a", available=False)),
    )
    assert zones_of(ranking) == ["cloud-b"]
    down = verdict(ranking, "cloud-a")
    assert (down.accepted, down.check, down.detail) == (False, "zone.down", "zone is unavailable")


def test_zone_without_a_load_report_is_down() -> None:
    reports = loads()
    del reports["cloud-b"]
    ranking = rank(make_policy(), CTX, request(), reports)
    assert zones_of(ranking) == ["local", "cloud-a"]
    assert verdict(ranking, "cloud-b").detail == "no load report for this zone"


def test_local_zone_absorbs_requests_when_every_overflow_target_is_down() -> None:
    ranking = rank(
        make_policy(),
        CTX,
        request(),
        loads(
            local(30720, bursting=True),
            remote("cloud-a", available=False),
            remote("cloud-b", available=False),
        ),
    )
    assert zones_of(ranking) == ["local"]
    only = ranking.candidates[0]
    assert only.thresholded is False
    assert only.limits == Limits()
    assert "cannot overflow" in only.reason
    assert "cloud-a is down" in only.reason
    assert ranking.start_bursting == ranking.stop_bursting == ()


def test_down_local_zone_leaves_the_overflow_targets() -> None:
    ranking = rank(make_policy(), CTX, request(), loads(local(available=False)))
    assert zones_of(ranking) == ["cloud-a", "cloud-b"]
    assert verdict(ranking, "local").check == "zone.down"


# --- rules ----------------------------------------------------------------------------

STAY = {"name": "eu-data-stays-home", "match": {"tenants": ["acme-eu"]}, "action": "stay_local"}
GPU = {
    "name": "gpu-only-cloud-b",
    "match": {"flavors": ["g1.large"]},
    "action": "restrict",
    "azs": ["cloud-b"],
}
BETA = {
    "name": "beta-bursts-to-a",
    "match": {"tenants": ["beta"]},
    "action": "limit_overflow",
    "targets": ["cloud-a"],
}
NO_WINDOWS = {"name": "no-windows", "match": {"images": ["win2022"]}, "action": "deny"}


def test_stay_local_keeps_the_request_home_even_above_high_water() -> None:
    policy = with_rules(STAY, BETA, GPU, NO_WINDOWS)
    ranking = rank(policy, CTX, request(project_id="acme-eu"), loads(local(28672, bursting=True)))

    assert ranking.matched_rules == ("eu-data-stays-home",)
    assert zones_of(ranking) == ["local"]
    only = ranking.candidates[0]
    assert (only.thresholded, only.limits) == (False, Limits())
    assert "this request cannot overflow" in only.reason
    for zone in ("cloud-a", "cloud-b"):
        assert verdict(ranking, zone).check == "rule:eu-data-stays-home"
    assert ranking.start_bursting == ()


def test_other_tenants_are_not_affected_by_stay_local() -> None:
    policy = with_rules(STAY)
    ranking = rank(policy, CTX, request(project_id="other"), loads(local(24576)))
    assert ranking.matched_rules == ()
    assert zones_of(ranking) == ["cloud-a", "cloud-b"]


def test_restrict_by_flavor_name_or_id() -> None:
    policy = with_rules(GPU)
    ranking = rank(policy, CTX, request(flavor_id="4", flavor_name="g1.large"), loads())
    assert zones_of(ranking) == ["cloud-b"]
    assert verdict(ranking, "local").check == "rule:gpu-only-cloud-b"
    assert verdict(ranking, "cloud-a").detail == (
        "rule 'gpu-only-cloud-b' does not allow zone 'cloud-a'"
    )

    by_id = with_rules({**GPU, "match": {"flavors": ["4"]}})
    ranking = rank(by_id, CTX, request(flavor_id="4", flavor_name="g1.large"), loads())
    assert zones_of(ranking) == ["cloud-b"]
    assert rank(by_id, CTX, request(), loads()).matched_rules == ()


def test_limit_overflow_allows_local_and_the_listed_targets() -> None:
    policy = with_rules(BETA)
    beta = request(project_id="beta")

    ranking = rank(policy, CTX, beta, loads(local(1024)))
    assert zones_of(ranking) == ["local", "cloud-a"]
    assert ranking.candidates[0].thresholded is True
    assert verdict(ranking, "cloud-b").check == "rule:beta-bursts-to-a"

    ranking = rank(policy, CTX, beta, loads(local(24576)))
    assert zones_of(ranking) == ["cloud-a"]
    assert ranking.start_bursting == ("local",)


def test_limit_overflow_to_a_down_target_keeps_the_request_local() -> None:
    policy = with_rules(BETA)
    ranking = rank(
        policy,
        CTX,
        request(project_id="beta"),
        loads(local(24576, bursting=True), remote("cloud-a", available=False)),
    )
    assert zones_of(ranking) == ["local"]
    assert ranking.candidates[0].limits == Limits()
    assert "cloud-b excluded by rule 'beta-bursts-to-a'" in ranking.candidates[0].reason


def test_deny_refuses_everywhere_and_names_the_rule() -> None:
    policy = with_rules(STAY, NO_WINDOWS)
    ranking = rank(
        policy, CTX, request(project_id="acme-eu", image_id="img-2", image_name="win2022"), loads()
    )
    assert ranking.candidates == ()
    assert ranking.fault == errors.POLICY_DENIED
    assert ranking.matched_rules == ("eu-data-stays-home", "no-windows")
    assert [(v.zone, v.check) for v in ranking.verdicts] == [
        ("local", "rule:no-windows"),
        ("cloud-a", "rule:no-windows"),
        ("cloud-b", "rule:no-windows"),
    ]
    assert ranking.reasons()[0] == "local: denied by rule 'no-windows'"


def test_rules_that_leave_no_zone_deny_the_request() -> None:
    policy = with_rules(STAY, {**GPU, "match": {}})
    ranking = rank(policy, CTX, request(project_id="acme-eu"), loads())
    assert ranking.candidates == ()
    assert ranking.fault == errors.POLICY_DENIED
    assert verdict(ranking, "local").check == "rule:gpu-only-cloud-b"
    assert verdict(ranking, "cloud-b").check == "rule:eu-data-stays-home"


def test_virtual_zone_that_is_no_overflow_target_is_never_a_candidate() -> None:
    zones = copy.deepcopy(BASE["zones"])
    zones["local"]["overflow"] = ["cloud-a"]
    policy = make_policy(zones=zones)

    ranking = rank(policy, CTX, request(), loads(local(24576)))
    assert zones_of(ranking) == ["cloud-a"]
    assert verdict(ranking, "cloud-b").check == "overflow.not_target"

    restricted = make_policy(zones=zones, rules=[GPU])
    ranking = rank(restricted, CTX, request(flavor_id="4", flavor_name="g1.large"), loads())
    assert ranking.candidates == ()
    assert ranking.fault == errors.POLICY_DENIED


# --- a named availability zone ----------------------------------------------------------


def test_named_local_zone_ignores_thresholds() -> None:
    ranking = rank(
        make_policy(),
        CTX,
        request(availability_zone="local"),
        loads(local(28672, bursting=True)),
    )
    assert zones_of(ranking) == ["local"]
    only = ranking.candidates[0]
    assert (only.thresholded, only.limits) == (False, Limits())
    assert [(v.zone, v.accepted, v.check) for v in ranking.verdicts] == [
        ("local", True, "explicit_az")
    ]


def test_named_virtual_zone_is_denied_unless_the_policy_allows_it() -> None:
    ranking = rank(make_policy(), CTX, request(availability_zone="cloud-b"), loads())
    assert ranking.candidates == ()
    assert ranking.fault == errors.POLICY_DENIED
    [denied] = ranking.verdicts
    assert denied.check == "explicit_az"
    assert "allow_explicit_virtual_az is false" in denied.detail

    allowed = make_policy(allow_explicit_virtual_az=True)
    ranking = rank(allowed, CTX, request(availability_zone="cloud-b"), loads(local(0)))
    assert zones_of(ranking) == ["cloud-b"]
    assert ranking.candidates[0].limits == Limits(instances=8)
    assert ranking.candidates[0].thresholded is False


def test_named_virtual_zone_at_quota_is_quota_exceeded() -> None:
    allowed = make_policy(allow_explicit_virtual_az=True)
    ranking = rank(allowed, CTX, request(availability_zone="cloud-a"), loads(remote("cloud-a", 8)))
    assert ranking.candidates == ()
    assert ranking.fault == errors.QUOTA_EXCEEDED
    assert verdict(ranking, "cloud-a").check == "quota.instances"


def test_named_zone_outside_the_rules_is_denied() -> None:
    policy = with_rules(STAY, allow_explicit_virtual_az=True)
    ranking = rank(policy, CTX, request(project_id="acme-eu", availability_zone="cloud-a"), loads())
    assert ranking.fault == errors.POLICY_DENIED
    [denied] = ranking.verdicts
    assert denied.check == "rule:eu-data-stays-home"


def test_named_zone_that_is_down_or_gone() -> None:
    ranking = rank(
        make_policy(), CTX, request(availability_zone="local"), loads(local(available=False))
    )
    assert ranking.fault == errors.NO_VALID_HOST
    assert ranking.verdicts[0].check == "zone.down"

    ranking = rank(make_policy(), CTX, request(availability_zone="retired"), loads())
    assert ranking.fault == errors.NO_VALID_HOST
    assert ranking.verdicts[0].detail == "availability zone 'retired' is not configured"


# --- helpers for the API ------------------------------------------------------------------


def test_zone_weighing_uses_the_zone_override() -> None:
    zones = copy.deepcopy(BASE["zones"])
    zones["local"]["weighing"] = "pack"
    policy = make_policy(zones=zones)
    assert zone_weighing(policy, "local") == "pack"
    assert zone_weighing(policy, "cloud-a") == "spread"
    ranking = rank(policy, CTX, request(), loads())
    assert [c.weighing for c in ranking.candidates] == ["pack", "spread", "spread"]


def test_threshold_figures() -> None:
    policy = make_policy()
    assert threshold_figures(policy, local(13312, vcpus_used=8, instances=5)) == {
        "ram_percent": 40.6,
        "vcpu_percent": 25.0,
        "instances": 5,
        "ram_percent_high": 75,
        "ram_percent_low": 50,
    }
    assert threshold_figures(policy, remote("cloud-a", 2)) == {"instances": 2}


def test_ranking_carries_the_policy_version() -> None:
    assert rank(make_policy(version="v-42"), CTX, request(), loads()).policy_version == "v-42"


def test_targets_at_quota_do_not_open_local_headroom() -> None:
    # The quotas cap the overflow on purpose: the local zone keeps to its high-water mark.
    ranking = rank(
        make_policy(),
        CTX,
        request(),
        loads(local(24576), remote("cloud-a", 8), remote("cloud-b", 8)),
    )
    assert ranking.candidates == ()
    assert ranking.fault == errors.NO_VALID_HOST
    assert ranking.start_bursting == ("local",)
    assert verdict(ranking, "local").check == "threshold.ram_percent"
