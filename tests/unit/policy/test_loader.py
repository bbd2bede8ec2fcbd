"""Loading and validating policy files: every problem is reported, located by JSON path."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from federator.exception import PolicyInvalid
from federator.policy.loader import PolicyContext, load_policy, parse_policy

CONTEXT = PolicyContext(
    local_zones=("local",),
    virtual_zones=("cloud-a", "cloud-b"),
    flavors={"1": "m1.tiny", "4": "g1.large"},
    images={"img-1": "cirros", "img-2": "win2022"},
)


def _valid() -> dict[str, Any]:
    return {
        "$schema": "./policy.schema.json",
        "version": "2026-11-21.1",
        "zones": {
            "local": {
                "thresholds": {
                    "ram_percent": {"high": 75, "low": 50},
                    "vcpu_percent": {"high": 90, "low": 70},
                    "instances": {"high": 200, "low": 150},
                },
                "overflow": ["cloud-a", "cloud-b"],
            },
            "cloud-a": {"quota": {"instances": 10, "vcpus": 40, "ram_mb": 40960}},
        },
        "rules": [
            {"name": "stay", "match": {"tenants": ["acme-eu"]}, "action": "stay_local"},
            {
                "name": "gpu",
                "match": {"flavors": ["g1.large"]},
                "action": "restrict",
                "azs": ["cloud-b"],
            },
            {
                "name": "beta",
                "match": {"tenants": ["beta"]},
                "action": "limit_overflow",
                "targets": ["cloud-a"],
            },
            {"name": "no-windows", "match": {"images": ["img-2"]}, "action": "deny"},
        ],
    }


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.json"
    path.write_text(text, encoding="utf-8")
    return path


def _problems(
    tmp_path: Path, doc: Any, context: PolicyContext | None = CONTEXT
) -> list[dict[str, Any]]:
    text = doc if isinstance(doc, str) else json.dumps(doc, indent=2)
    with pytest.raises(PolicyInvalid) as info:
        load_policy(_write(tmp_path, text), context)
    assert info.value.problems, "PolicyInvalid must carry at least one problem"
    return info.value.problems


def _by_path(problems: list[dict[str, Any]]) -> dict[str, str]:
    return {p["path"]: p["message"] for p in problems}


def test_valid_policy_loads_with_source_digest_and_text(tmp_path: Path) -> None:
    text = json.dumps(_valid(), indent=2)
    path = _write(tmp_path, text)

    loaded = load_policy(path, CONTEXT)

    assert loaded.source == str(path)
    assert loaded.text == text
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert loaded.policy.version == "2026-11-21.1"
    marks = loaded.policy.zones["local"].thresholds
    assert marks is not None and marks.ram_percent is not None
    assert (marks.ram_percent.high, marks.ram_percent.low) == (75, 50)
    assert loaded.policy.zones["local"].overflow == ("cloud-a", "cloud-b")
    assert [r.action for r in loaded.policy.rules] == [
        "stay_local",
        "restrict",
        "limit_overflow",
        "deny",
    ]


def test_parse_policy_names_its_source_and_hashes_the_text() -> None:
    text = json.dumps(_valid())
    loaded = parse_policy(text, "<api>", CONTEXT)
    assert loaded.source == "<api>"
    assert loaded.sha256 == hashlib.sha256(text.encode()).hexdigest()

    with pytest.raises(PolicyInvalid) as info:
        parse_policy("{}", "<api>", None)
    assert info.value.source == "<api>"
    assert _by_path(info.value.problems) == {"$.version": "missing required key 'version'"}


def test_invalid_json_reports_line_and_column(tmp_path: Path) -> None:
    text = '{\n  "version": "1",\n  "zones": {,}\n}\n'
    problems = _problems(tmp_path, text)
    assert problems == [
        {
            "path": "$",
            "message": "invalid JSON: Expecting property name enclosed in double quotes",
            "line": 3,
            "column": 13,
        }
    ]


def test_render_shows_line_and_column(tmp_path: Path) -> None:
    path = _write(tmp_path, '{"version": "1",}')
    with pytest.raises(PolicyInvalid) as info:
        load_policy(path, None)
    assert info.value.render() == (
        f"{path}: $ (line 1, column 17): invalid JSON: "
        "Expecting property name enclosed in double quotes"
    )


def test_nan_is_not_json(tmp_path: Path) -> None:
    problems = _problems(
        tmp_path, '{"version": "1", "zones": {"local": {"quota": {"ram_mb": NaN}}}}'
    )
    assert problems == [{"path": "$", "message": "invalid JSON: NaN is not a JSON number"}]


def test_unknown_key_is_named_with_a_suggestion(tmp_path: Path) -> None:
    doc = _valid()
    thresholds = doc["zones"]["local"]["thresholds"]
    thresholds["ram_percnt"] = thresholds.pop("ram_percent")
    problems = _by_path(_problems(tmp_path, doc))
    assert problems == {
        "$.zones.local.thresholds.ram_percnt": "unknown key 'ram_percnt'; did you mean "
        "'ram_percent'? (allowed: ram_percent, vcpu_percent, instances, gb_percent)"
    }


def test_unknown_key_inside_a_rule_is_located_without_the_action_tag(tmp_path: Path) -> None:
    doc = _valid()
    doc["rules"][1]["zones"] = ["cloud-b"]
    problems = _by_path(_problems(tmp_path, doc))
    message = problems["$.rules[1].zones"]
    assert message.startswith("unknown key 'zones'")
    assert "azs" in message


def test_number_given_as_string_is_rejected(tmp_path: Path) -> None:
    doc = _valid()
    doc["zones"]["local"]["thresholds"]["ram_percent"]["high"] = "75"
    problems = _by_path(_problems(tmp_path, doc))
    assert list(problems) == ["$.zones.local.thresholds.ram_percent.high"]
    assert problems["$.zones.local.thresholds.ram_percent.high"].endswith('(got "75")')


def test_boolean_is_not_an_integer(tmp_path: Path) -> None:
    doc = _valid()
    doc["zones"]["cloud-a"]["quota"]["instances"] = True
    problems = _by_path(_problems(tmp_path, doc))
    assert "$.zones.cloud-a.quota.instances" in problems


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("high", 101, "less than or equal to 100"),
        ("low", -1, "greater than or equal to 0"),
    ],
)
def test_percent_out_of_range(tmp_path: Path, field: str, value: int, expected: str) -> None:
    doc = _valid()
    doc["zones"]["local"]["thresholds"]["ram_percent"][field] = value
    problems = _by_path(_problems(tmp_path, doc))
    path = f"$.zones.local.thresholds.ram_percent.{field}"
    assert list(problems) == [path]
    assert expected in problems[path]
    assert f"(got {value})" in problems[path]


def test_low_above_high(tmp_path: Path) -> None:
    doc = _valid()
    doc["zones"]["local"]["thresholds"]["ram_percent"] = {"high": 50, "low": 75}
    doc["zones"]["local"]["thresholds"]["instances"] = {"high": 10, "low": 11}
    assert _by_path(_problems(tmp_path, doc)) == {
        "$.zones.local.thresholds.ram_percent": "low water 75 is above high water 50",
        "$.zones.local.thresholds.instances": "low water 11 is above high water 10",
    }


def test_equal_marks_are_allowed(tmp_path: Path) -> None:
    doc = _valid()
    doc["zones"]["local"]["thresholds"]["ram_percent"] = {"high": 60, "low": 60}
    assert load_policy(_write(tmp_path, json.dumps(doc)), CONTEXT).policy.version


def test_overflow_target_that_does_not_exist(tmp_path: Path) -> None:
    doc = _valid()
    doc["zones"]["local"]["overflow"] = ["cloud-a", "cloud-c"]
    assert _by_path(_problems(tmp_path, doc)) == {
        "$.zones.local.overflow[1]": "overflow target 'cloud-c' is not a configured virtual "
        "zone (virtual zones: cloud-a, cloud-b)"
    }


def test_overflow_checks_need_a_context(tmp_path: Path) -> None:
    doc = _valid()
    doc["zones"]["local"]["overflow"] = ["cloud-c"]
    doc["zones"]["elsewhere"] = {}
    loaded = load_policy(_write(tmp_path, json.dumps(doc)), None)
    assert loaded.policy.zones["local"].overflow == ("cloud-c",)


def test_flavor_and_image_that_do_not_exist(tmp_path: Path) -> None:
    doc = _valid()
    doc["rules"][1]["match"]["flavors"] = ["g1.large", "4", "g9.huge"]
    doc["rules"][3]["match"]["images"] = ["win2022", "img-2", "win2025"]
    assert _by_path(_problems(tmp_path, doc)) == {
        "$.rules[1].match.flavors[2]": "flavor 'g9.huge' is not configured "
        "(flavors, by name or id: m1.tiny, g1.large)",
        "$.rules[3].match.images[2]": "image 'win2025' is not configured "
        "(images, by name or id: cirros, win2022)",
    }


def test_duplicate_key_names_the_object_holding_it(tmp_path: Path) -> None:
    text = json.dumps(_valid(), indent=2).replace(
        '"ram_percent": {', '"ram_percent": {"high": 10, "low": 5}, "ram_percent": {', 1
    )
    assert _by_path(_problems(tmp_path, text)) == {
        "$.zones.local.thresholds": "duplicate key 'ram_percent'"
    }


def test_duplicate_top_level_key(tmp_path: Path) -> None:
    text = '{"version": "1", "version": "2"}'
    assert _problems(tmp_path, text) == [{"path": "$", "message": "duplicate key 'version'"}]


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    doc = _valid()
    doc["zones"]["local"]["thresholds"]["vcpu_percent"]["high"] = "90"  # type
    doc["zones"]["local"]["overflow"] = ["cloud-a", "cloud-c"]  # reference
    doc["zones"]["cloud-a"]["quota"]["vcpus"] = -4  # range
    doc["rules"][2]["name"] = "stay"  # duplicate rule name
    doc["rules"][3]["action"] = "forbid"  # unknown action
    doc["zones"]["atlantis"] = {}  # unknown zone
    text = json.dumps(doc, indent=2).replace('"version":', '"description": "x", "version":', 1)
    text = text.replace('"description": "x",', '"description": "x", "description": "y",', 1)

    problems = _by_path(_problems(tmp_path, text))

    assert set(problems) == {
        "$",
        "$.zones.local.thresholds.vcpu_percent.high",
        "$.zones.local.overflow[1]",
        "$.zones.cloud-a.quota.vcpus",
        "$.rules[2].name",
        "$.rules[3].action",
        "$.zones.atlantis",
    }
    assert problems["$"] == "duplicate key 'description'"
    assert problems["$.rules[2].name"] == "duplicate rule name 'stay' (first used by rules[0])"
    assert problems["$.rules[3].action"] == (
        'unknown action "forbid" (one of: stay_local, restrict, limit_overflow, deny)'
    )
    assert problems["$.zones.atlantis"] == (
        "zone 'atlantis' is not configured (configured zones: local, cloud-a, cloud-b)"
    )
    assert "cloud-c" in problems["$.zones.local.overflow[1]"]
    assert "-4" in problems["$.zones.cloud-a.quota.vcpus"]


def test_a_bad_zone_does_not_hide_its_bad_overflow_target(tmp_path: Path) -> None:
    doc = _valid()
    local = doc["zones"]["local"]
    local["thresholds"]["ram_percent"]["low"] = "50"
    local["overflow"] = ["cloud-c", "local"]
    problems = _by_path(_problems(tmp_path, doc))
    assert set(problems) == {
        "$.zones.local.thresholds.ram_percent.low",
        "$.zones.local.overflow[0]",
        "$.zones.local.overflow[1]",
    }
    assert problems["$.zones.local.overflow[1]"] == "zone 'local' cannot overflow to itself"


def test_duplicate_overflow_target(tmp_path: Path) -> None:
    doc = _valid()
    doc["zones"]["local"]["overflow"] = ["cloud-a", "cloud-b", "cloud-a"]
    assert _by_path(_problems(tmp_path, doc)) == {
        "$.zones.local.overflow": "duplicate overflow target 'cloud-a'"
    }


def test_zone_kinds_are_checked(tmp_path: Path) -> None:
    doc = _valid()
    doc["zones"]["local"]["quota"] = {"instances": 5}
    doc["zones"]["local"]["overflow"] = ["cloud-a"]
    doc["zones"]["cloud-b"] = {"overflow": ["cloud-a"]}
    problems = _by_path(_problems(tmp_path, doc))
    assert set(problems) == {"$.zones.local.quota", "$.zones.cloud-b.overflow"}
    assert "quotas apply to virtual zones only" in problems["$.zones.local.quota"]
    assert "only local zones overflow" in problems["$.zones.cloud-b.overflow"]


def test_rule_zone_references(tmp_path: Path) -> None:
    doc = _valid()
    doc["rules"][1]["azs"] = ["local", "cloud-z"]
    doc["rules"][2]["targets"] = ["local"]
    assert _by_path(_problems(tmp_path, doc)) == {
        "$.rules[1].azs[1]": "zone 'cloud-z' is not configured "
        "(configured zones: local, cloud-a, cloud-b)",
        "$.rules[2].targets[0]": "overflow target 'local' is not a configured virtual zone; "
        "it is a local zone (virtual zones: cloud-a, cloud-b)",
    }


def test_empty_lists_and_missing_rule_fields(tmp_path: Path) -> None:
    doc = _valid()
    doc["rules"][0]["match"] = {"tenants": []}
    doc["rules"][1]["azs"] = []
    del doc["rules"][2]["match"]
    problems = _by_path(_problems(tmp_path, doc))
    assert set(problems) == {"$.rules[0].match.tenants", "$.rules[1].azs", "$.rules[2].match"}
    assert problems["$.rules[2].match"] == "missing required key 'match'"


def test_invalid_zone_name_and_top_level_type(tmp_path: Path) -> None:
    doc = _valid()
    doc["zones"]["bad name"] = {}
    problems = _by_path(_problems(tmp_path, doc))
    assert list(problems) == ['$.zones["bad name"]']
    assert problems['$.zones["bad name"]'].startswith("invalid name 'bad name'")

    assert _problems(tmp_path, "[1, 2]") == [
        {"path": "$", "message": "Input should be an object (got an array)"}
    ]


def test_blank_version_is_rejected(tmp_path: Path) -> None:
    doc = _valid()
    doc["version"] = "   "
    assert list(_by_path(_problems(tmp_path, doc))) == ["$.version"]


def test_missing_file_names_the_os_error(tmp_path: Path) -> None:
    path = tmp_path / "absent.json"
    with pytest.raises(PolicyInvalid) as info:
        load_policy(path, CONTEXT)
    assert info.value.source == str(path)
    assert info.value.problems == [
        {"path": "$", "message": f"cannot read policy file {path}: No such file or directory"}
    ]


def test_directory_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(PolicyInvalid) as info:
        load_policy(tmp_path, CONTEXT)
    [problem] = info.value.problems
    assert problem["path"] == "$"
    assert "Is a directory" in problem["message"]


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.json"
    path.write_bytes('{"version": "caf\u00e9"}'.encode("latin-1"))
    with pytest.raises(PolicyInvalid) as info:
        load_policy(path, None)
    assert info.value.problems == [
        {"path": "$", "message": "not UTF-8 text: invalid byte at offset 16"}
    ]


def test_byte_order_mark_is_tolerated(tmp_path: Path) -> None:
    path = tmp_path / "bom.json"
    raw = b"\xef\xbb\xbf" + json.dumps(_valid()).encode()
    path.write_bytes(raw)
    loaded = load_policy(path, CONTEXT)
    assert loaded.sha256 == hashlib.sha256(raw).hexdigest()


def test_deeply_nested_json_is_rejected(tmp_path: Path) -> None:
    text = "[" * 100_000 + "]" * 100_000
    assert _problems(tmp_path, text) == [{"path": "$", "message": "JSON nested too deeply"}]


def test_document_wide_problems_are_reported_once(tmp_path: Path) -> None:
    doc = _valid()
    doc["rules"][1]["name"] = "stay"
    assert _problems(tmp_path, doc) == [
        {
            "path": "$.rules[1].name",
            "message": "duplicate rule name 'stay' (first used by rules[0])",
        }
    ]


def test_orphans_default_to_log_after_five_minutes(tmp_path: Path) -> None:
    loaded = load_policy(_write(tmp_path, json.dumps(_valid())), CONTEXT)
    assert loaded.policy.orphans.action == "log"
    assert loaded.policy.orphans.min_age_seconds == 300
    doc = {**_valid(), "orphans": {"action": "delete", "min_age_seconds": 0}}
    loaded = load_policy(_write(tmp_path, json.dumps(doc)), CONTEXT)
    assert (loaded.policy.orphans.action, loaded.policy.orphans.min_age_seconds) == ("delete", 0)


def test_orphans_section_is_checked(tmp_path: Path) -> None:
    doc = {**_valid(), "orphans": {"action": "nuke", "min_age": 3}}
    problems = _by_path(_problems(tmp_path, doc))
    assert problems["$.orphans.action"] == (
        "Input should be 'log', 'quarantine' or 'delete' (got \"nuke\")"
    )
    assert problems["$.orphans.min_age"].startswith(
        "unknown key 'min_age'; did you mean 'min_age_seconds'?"
    )
