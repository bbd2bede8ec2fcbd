"""The committed JSON Schema matches the model, and rejects what the loader rejects."""

from __future__ import annotations

from typing import Any

import policies
from federator.policy.schema import SCHEMA_DIALECT, policy_json_schema, render_schema


def test_committed_schema_matches_the_model() -> None:
    committed = policies.SCHEMA.read_text(encoding="utf-8")
    assert committed == render_schema(), (
        f"{policies.SCHEMA} is out of date with federator/policy/model.py; regenerate it with "
        "`federator policy schema > policies/policy.schema.json`"
    )


def test_schema_declares_its_dialect_and_title() -> None:
    schema = policy_json_schema()
    assert schema["$schema"] == SCHEMA_DIALECT == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == "federator placement policy"
    assert schema["required"] == ["version"]


def _objects(node: Any) -> list[dict[str, Any]]:
    """Every subschema that describes an object with named properties."""
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        if "properties" in node:
            found.append(node)
        for value in node.values():
            found.extend(_objects(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_objects(value))
    return found


def test_every_object_rejects_unknown_keys() -> None:
    objects = _objects(policy_json_schema())
    assert len(objects) >= 10  # policy, zone, thresholds, marks, quota, match, four rules
    for obj in objects:
        assert obj.get("additionalProperties") is False, obj.get("title")


def test_zone_keys_must_be_zone_names() -> None:
    zones = policy_json_schema()["properties"]["zones"]
    assert zones["additionalProperties"] is False
    assert list(zones["patternProperties"]) == ["^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"]


def test_schema_key_is_allowed() -> None:
    prop = policy_json_schema()["properties"]["$schema"]
    assert {"type": "string"} in prop["anyOf"]


def test_rules_are_a_discriminated_union() -> None:
    items = policy_json_schema()["properties"]["rules"]["items"]
    assert items["discriminator"]["propertyName"] == "action"
    assert set(items["discriminator"]["mapping"]) == {
        "stay_local",
        "restrict",
        "limit_overflow",
        "deny",
    }


def test_percent_bounds_are_in_the_schema() -> None:
    marks = policy_json_schema()["$defs"]["PercentMarks"]["properties"]
    assert (marks["high"]["minimum"], marks["high"]["maximum"]) == (0, 100)
    assert (marks["low"]["minimum"], marks["low"]["maximum"]) == (0, 100)
