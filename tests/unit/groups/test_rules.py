"""Server-group rules as pure functions: which places keep a rule, per kind of zone."""

from __future__ import annotations

import pytest

from federator.groups.placement import GroupState, fit
from federator.groups.rules import Rule, Spot, ZoneMode, violation

MODES = {"local": ZoneMode.HOSTS, "child": ZoneMode.REMOTE, "ec2": ZoneMode.SINGLE}


def spot(zone: str, host: str | None = None, az: str | None = None) -> Spot:
    return Spot(zone, host, az or zone)


def test_anti_affinity_counts_members_per_host_up_to_the_limit() -> None:
    rule = Rule("anti-affinity", max_per_host=2)
    members = [spot("local", "h1"), spot("local", "h1"), spot("local", "h2")]
    assert violation(rule, members, spot("local", "h2"), MODES) is None
    broken = violation(rule, members, spot("local", "h1"), MODES)
    assert broken == "host h1 of zone local already holds 2 of its members"


def test_a_zone_that_cannot_keep_the_rule_is_one_host_and_a_remote_one_keeps_it() -> None:
    rule = Rule("anti-affinity")
    members = [spot("ec2"), spot("child"), spot("child")]
    assert "counts as one host" in (violation(rule, members, spot("ec2"), MODES) or "")
    assert violation(rule, members, spot("child"), MODES) is None


def test_affinity_keeps_every_member_in_one_place() -> None:
    rule = Rule("affinity")
    assert violation(rule, [], spot("local", "h1"), MODES) is None
    assert violation(rule, [spot("local", "h1")], spot("local", "h1"), MODES) is None
    assert violation(rule, [spot("local", "h1")], spot("local", "h2"), MODES) is not None
    # In a remote zone affinity keeps members in the zone; its cloud keeps them on a host.
    assert violation(rule, [spot("child")], spot("child"), MODES) is None
    assert violation(rule, [spot("child")], spot("ec2"), MODES) is not None


def test_a_split_soft_affinity_group_counts_as_relaxed() -> None:
    rule = Rule("soft-affinity")
    split = [spot("local", "h1"), spot("local", "h2")]
    assert violation(rule, split, spot("local", "h2"), MODES) is not None


@pytest.mark.parametrize("policy", ["anti-affinity", "affinity"])
def test_zone_scope_compares_availability_zones(policy: str) -> None:
    rule = Rule(policy, scope="zone")
    members = [spot("local", "h1", "rack-a")]
    same_az = violation(rule, members, spot("local", "h9", "rack-a"), MODES)
    other_az = violation(rule, members, spot("ec2"), MODES)
    if policy == "anti-affinity":
        assert same_az is not None and other_az is None
    else:
        assert same_az is None and other_az is not None


def _state(rule: Rule, *members: Spot) -> GroupState:
    return GroupState("g", "g", rule, tuple(members))


def test_fit_narrows_hosts_or_refuses_the_zone() -> None:
    anti = _state(Rule("anti-affinity"), spot("local", "h1"), spot("ec2"))
    local = fit(anti, "local", ZoneMode.HOSTS, frozenset({"local"}))
    assert local.allowed and local.anti_affinity_hosts == {"h1"}
    ec2 = fit(anti, "ec2", ZoneMode.SINGLE, frozenset())
    assert not ec2.allowed and "already holds 1" in ec2.reason
    assert fit(anti, "child", ZoneMode.REMOTE, frozenset()).allowed

    aff = _state(Rule("affinity"), spot("local", "h3"))
    assert fit(aff, "local", ZoneMode.HOSTS, frozenset({"local"})).affinity_hosts == {"h3"}
    assert not fit(aff, "ec2", ZoneMode.SINGLE, frozenset()).allowed

    zoned = _state(Rule("anti-affinity", scope="zone"), spot("local", "h1", "rack-a"))
    both = fit(zoned, "local", ZoneMode.HOSTS, frozenset({"rack-a", "rack-b"}))
    assert both.allowed and both.anti_affinity_azs == {"rack-a"}
    assert not fit(zoned, "local", ZoneMode.HOSTS, frozenset({"rack-a"})).allowed

    soft = _state(Rule("soft-anti-affinity"), spot("local", "h1"), spot("local", "h1"))
    preferred = fit(soft, "local", ZoneMode.HOSTS, frozenset({"local"}))
    assert preferred.allowed and preferred.soft == "soft-anti-affinity"
    assert preferred.counts == {"h1": 2}
