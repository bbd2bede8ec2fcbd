"""The policy model on its own: strictness, defaults, matching."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from federator.policy.model import Match, Policy, ZonePolicy


def test_defaults() -> None:
    policy = Policy.model_validate_json('{"version": "1"}')
    assert policy.weighing == "spread"
    assert policy.allow_explicit_virtual_az is False
    assert policy.zones == {}
    assert policy.rules == ()
    assert policy.zone("anything") == ZonePolicy()


def test_models_are_frozen() -> None:
    policy = Policy.model_validate_json('{"version": "1"}')
    with pytest.raises(ValidationError):
        policy.version = "2"  # type: ignore[misc]


def test_integers_are_accepted_as_percentages_but_strings_are_not() -> None:
    doc = '{"version": "1", "zones": {"local": {"thresholds": {"ram_percent": %s}}}}'
    policy = Policy.model_validate_json(doc % '{"high": 75, "low": 50.5}')
    marks = policy.zone("local").thresholds
    assert marks is not None and marks.ram_percent is not None
    assert marks.ram_percent.low == 50.5
    with pytest.raises(ValidationError):
        Policy.model_validate_json(doc % '{"high": "75", "low": 50}')


def test_document_wide_checks_run_on_direct_validation() -> None:
    doc = """{"version": "1",
      "zones": {"local": {"overflow": ["local"]}},
      "rules": [{"name": "a", "match": {}, "action": "deny"},
                {"name": "a", "match": {}, "action": "deny"}]}"""
    with pytest.raises(ValidationError) as info:
        Policy.model_validate_json(doc)
    [error] = info.value.errors()
    assert error["type"] == "policy_consistency"
    paths = [p["path"] for p in error["ctx"]["problems"]]
    assert paths == ["$.zones.local.overflow[0]", "$.rules[1].name"]


@pytest.mark.parametrize(
    ("match", "tenant", "flavor", "image", "expected"),
    [
        ({}, "t", ("1", "m1.tiny"), ("i", "cirros"), True),
        ({"tenants": ["t"]}, "t", ("1", "m1.tiny"), ("i", "cirros"), True),
        ({"tenants": ["t"]}, "u", ("1", "m1.tiny"), ("i", "cirros"), False),
        ({"flavors": ["m1.tiny"]}, "t", ("1", "m1.tiny"), ("i", "cirros"), True),
        ({"flavors": ["1"]}, "t", ("1", "m1.tiny"), ("i", "cirros"), True),
        ({"flavors": ["m1.large"]}, "t", ("1", "m1.tiny"), ("i", "cirros"), False),
        ({"images": ["i"]}, "t", ("1", "m1.tiny"), ("i", "cirros"), True),
        (
            {"tenants": ["t"], "images": ["debian-12"]},
            "t",
            ("1", "m1.tiny"),
            ("i", "cirros"),
            False,
        ),
    ],
)
def test_match_requires_every_listed_field(
    match: dict[str, list[str]],
    tenant: str,
    flavor: tuple[str, str],
    image: tuple[str, str],
    expected: bool,
) -> None:
    assert (
        Match.model_validate(match, strict=False).matches(tenant=tenant, flavor=flavor, image=image)
        is expected
    )
