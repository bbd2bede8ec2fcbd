"""Every policy shipped in policies/ validates against the default configuration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import policies
from federator.config import CONFIG_ENV, load_settings
from federator.policy.loader import PolicyContext, load_policy

EXAMPLES = sorted(p for p in policies.HERE.glob("*.json") if p != policies.SCHEMA)


@pytest.fixture
def context(monkeypatch: pytest.MonkeyPatch) -> PolicyContext:
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    return PolicyContext.from_settings(load_settings())


def test_the_expected_examples_ship() -> None:
    names = {p.name for p in EXAMPLES}
    assert {
        "default.json",
        "burst-one-cloud.json",
        "two-clouds-quotas.json",
        "residency.json",
    } <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_validates_against_the_default_configuration(
    path: Path, context: PolicyContext
) -> None:
    loaded = load_policy(path, context)
    assert loaded.policy.schema_ref == "./policy.schema.json"
    assert loaded.policy.description, "examples document their intent in 'description'"
    raw = json.loads(path.read_text(encoding="utf-8"))
    assert loaded.policy.version == raw["version"]


def test_default_context_matches_the_embedded_configuration(context: PolicyContext) -> None:
    assert context.local_zones == ("local",)
    assert context.virtual_zones == ("aws-standin", "sim-cloud-b")
    assert set(context.flavors.values()) == {"m1.tiny", "m1.small", "m1.medium", "m1.large"}
    assert set(context.images.values()) == {"cirros", "ubuntu-24.04", "debian-12"}


def test_default_policy_is_the_documented_one(context: PolicyContext) -> None:
    assert load_settings().resolved_policy_file() == policies.DEFAULT_POLICY
    policy = load_policy(policies.DEFAULT_POLICY, context).policy
    local = policy.zones["local"]
    assert local.thresholds is not None
    assert local.thresholds.ram_percent is not None and local.thresholds.vcpu_percent is not None
    assert (local.thresholds.ram_percent.high, local.thresholds.ram_percent.low) == (75, 50)
    assert (local.thresholds.vcpu_percent.high, local.thresholds.vcpu_percent.low) == (90, 70)
    assert local.thresholds.instances is None
    assert local.overflow == ("aws-standin", "sim-cloud-b")
    for zone in ("aws-standin", "sim-cloud-b"):
        quota = policy.zones[zone].quota
        assert quota is not None and quota.instances == 8
    assert policy.weighing == "spread"
    assert policy.allow_explicit_virtual_az is False
    assert policy.rules == ()


def test_residency_example_uses_every_rule_action(context: PolicyContext) -> None:
    policy = load_policy(policies.HERE / "residency.json", context).policy
    assert sorted(r.action for r in policy.rules) == [
        "deny",
        "limit_overflow",
        "restrict",
        "stay_local",
    ]
