"""rank_volume(): storage thresholds with hysteresis, quotas, rules, named zones, types."""

from __future__ import annotations

import copy
import dataclasses
import json
from typing import Any

from federator import errors
from federator.policy.loader import PolicyContext, parse_policy
from federator.policy.model import Policy
from federator.volumes.placement import StorageLoad, VolumeRanking, VolumeRequest, rank_volume

CTX = PolicyContext(
    local_zones=("local",),
    virtual_zones=("cloud-a", "cloud-b"),
    flavors={"2": "m1.small"},
    images={"img-1": "cirros"},
)

BASE: dict[str, Any] = {
    "version": "vol.1",
    "zones": {
        "local": {
            "thresholds": {"gb_percent": {"high": 75, "low": 50}},
            "overflow": ["cloud-a", "cloud-b"],
        },
        "cloud-a": {"quota": {"volumes": 4, "gigabytes": 100}},
        "cloud-b": {},
    },
}


def policy(**changes: Any) -> Policy:
    doc = copy.deepcopy(BASE)
    doc.update(changes)
    return parse_policy(json.dumps(doc), "<test>", CTX).policy


def load(zone: str, *, used: int = 0, total: int = 400, **changes: Any) -> StorageLoad:
    base = StorageLoad(
        zone=zone,
        kind="local" if zone == "local" else "virtual",
        available=True,
        has_storage=True,
        bursting=False,
        gb_used=used,
        gb_total=total if zone == "local" else 0,
        volumes=0,
        multiattach=True,
    )
    return dataclasses.replace(base, **changes)


def loads(**per_zone: StorageLoad) -> dict[str, StorageLoad]:
    found = {z: load(z) for z in ("local", "cloud-a", "cloud-b")}
    found.update(per_zone)
    return found


def rank(
    req: VolumeRequest | None = None, doc: Policy | None = None, **per_zone: Any
) -> VolumeRanking:
    return rank_volume(
        doc or policy(), CTX, req or VolumeRequest("p1", 10, "__DEFAULT__"), loads(**per_zone)
    )


def zones(r: VolumeRanking) -> list[str]:
    return [c.zone for c in r.candidates]


def test_local_while_under_high_water_then_the_overflow_targets_in_order() -> None:
    assert zones(rank(local=load("local", used=290))) == ["local", "cloud-a", "cloud-b"]
    crossing = rank(local=load("local", used=291))  # 301/400 > 75%
    assert zones(crossing) == ["cloud-a", "cloud-b"]
    assert crossing.start_bursting == ("local",)
    (verdict,) = [v for v in crossing.verdicts if v.zone == "local"]
    assert verdict.check == "threshold.gb_percent" and "75.2%" in verdict.detail


def test_hysteresis_keeps_overflowing_until_below_low_water() -> None:
    bursting = rank(local=load("local", used=250, bursting=True))
    assert zones(bursting) == ["cloud-a", "cloud-b"]
    assert [v.check for v in bursting.verdicts if v.zone == "local"] == ["hysteresis.gb_percent"]
    back = rank(local=load("local", used=150, bursting=True))
    assert zones(back)[0] == "local" and back.stop_bursting == ("local",)


def test_a_local_candidate_is_capped_at_its_high_water_mark() -> None:
    (local, *_) = rank(local=load("local", used=100)).candidates
    assert (local.zone, local.gb_limit, local.thresholded) == ("local", 300, True)


def test_quotas_skip_a_full_target_and_the_local_mark_still_holds() -> None:
    full = rank(
        local=load("local", used=300),
        **{"cloud-a": load("cloud-a", used=95, volumes=1)},
    )
    assert zones(full) == ["cloud-b"]
    (a,) = [v for v in full.verdicts if v.zone == "cloud-a"]
    assert a.check == "quota.gigabytes" and "105/100" in a.detail
    every_target_full = policy(
        zones={**BASE["zones"], "local": {**BASE["zones"]["local"], "overflow": ["cloud-a"]}}
    )
    r = rank(
        doc=every_target_full,
        local=load("local", used=300),
        **{"cloud-a": load("cloud-a", volumes=4)},
    )
    # A target at its quota still counts as a way out: local keeps its mark, nothing is left.
    assert zones(r) == [] and r.fault == errors.NO_VALID_HOST


def test_no_way_out_means_thresholds_do_not_apply() -> None:
    down = rank(
        local=load("local", used=390),
        **{
            "cloud-a": load("cloud-a", available=False),
            "cloud-b": load("cloud-b", has_storage=False),
        },
    )
    assert zones(down) == ["local"]
    assert down.candidates[0].gb_limit is None


def test_every_target_over_quota_alone_is_quota_exceeded() -> None:
    doc = policy(zones={"cloud-a": {"quota": {"volumes": 0}}}, allow_explicit_virtual_az=True)
    r = rank(VolumeRequest("p1", 10, "__DEFAULT__", availability_zone="cloud-a"), doc)
    assert r.candidates == () and r.fault == errors.QUOTA_EXCEEDED


def test_named_zones() -> None:
    local = rank(
        VolumeRequest("p1", 10, "__DEFAULT__", availability_zone="local"),
        local=load("local", used=399),
    )
    assert zones(local) == ["local"], "naming a local zone ignores its thresholds"
    refused = rank(VolumeRequest("p1", 10, "__DEFAULT__", availability_zone="cloud-b"))
    assert zones(refused) == [] and "allow_explicit_virtual_az" in refused.verdicts[0].detail
    allowed = rank(
        VolumeRequest("p1", 10, "__DEFAULT__", availability_zone="cloud-b"),
        policy(allow_explicit_virtual_az=True),
    )
    assert zones(allowed) == ["cloud-b"]


def test_types_storage_and_multiattach_narrow_the_zones() -> None:
    typed = rank(VolumeRequest("p1", 10, "fast", type_zones=frozenset({"cloud-b"})))
    assert zones(typed) == ["cloud-b"]
    assert {v.zone: v.check for v in typed.verdicts if not v.accepted} == {
        "local": "volume_type",
        "cloud-a": "volume_type",
    }
    none = rank(**{"cloud-a": load("cloud-a", has_storage=False)})
    assert "cloud-a" not in zones(none)
    shared = rank(
        VolumeRequest("p1", 10, "x", multiattach=True), local=load("local", multiattach=False)
    )
    assert zones(shared) == ["cloud-a", "cloud-b"]


def test_rules_match_tenants_deny_and_stay_local() -> None:
    deny = policy(rules=[{"name": "no", "match": {"tenants": ["p1"]}, "action": "deny"}])
    r = rank(doc=deny)
    assert r.candidates == () and r.fault == errors.POLICY_DENIED
    local_only = policy(
        rules=[{"name": "home", "match": {"tenants": ["p1"]}, "action": "stay_local"}]
    )
    assert zones(rank(doc=local_only, local=load("local", used=390))) == ["local"]
    # A rule that names flavors or images is about servers: it does not touch volumes.
    flavored = policy(rules=[{"name": "f", "match": {"flavors": ["m1.small"]}, "action": "deny"}])
    assert zones(rank(doc=flavored)) == ["local", "cloud-a", "cloud-b"]
