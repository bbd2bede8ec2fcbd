"""A virtual cluster's body: the seed's use cases parse; every mistake is named by path."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from federator.config import Settings
from federator.exception import BadRequest
from federator.vclusters.spec import parse_cluster
from tests.conftest import make_settings

USE_CASE_2: dict[str, Any] = {
    "vcluster": {
        "name": "db",
        "instances": [
            {"name": "db-server-1", "type": "server",
             "spec": {"imageRef": "cirros", "flavorRef": "m1.small"}},
            {"name": "db-vol-1", "type": "volume", "spec": {"size": 10, "volume_type": ""}},
            {"name": "db-server-2", "type": "server",
             "spec": {"imageRef": "cirros", "flavorRef": "m1.small"}},
            {"name": "db-vol-2", "type": "volume", "spec": {"size": 10, "volume_type": ""}},
        ],
        "groupings": [
            {"name": "group-1", "membersRef": ["db-server-1", "db-vol-1"],
             "spec": {"rule": "affinity"}},
            {"name": "group-2", "membersRef": ["db-server-2", "db-vol-2"],
             "spec": {"rule": "proximity"}},
            {"name": "group-3", "membersRef": ["db-server-1", "db-server-2"],
             "spec": {"rule": "anti-affinity"}},
            {"name": "group-4", "membersRef": ["db-vol-1", "db-vol-2"],
             "spec": {"rule": "anti-affinity"}},
        ],
    }
}  # fmt: skip


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return make_settings(Path(tmp_path_factory.mktemp("spec")))


def body(**changes: Any) -> dict[str, Any]:
    doc = copy.deepcopy(USE_CASE_2)
    doc["vcluster"].update(changes)
    return doc


def problems(doc: Any, settings: Settings) -> dict[str, str]:
    with pytest.raises(BadRequest) as caught:
        parse_cluster(doc, settings)
    return {p["field"]: p["message"] for p in caught.value.problems}


def test_use_case_2_parses_with_flavors_resolved_and_proximity_as_affinity(
    settings: Settings,
) -> None:
    spec = parse_cluster(USE_CASE_2, settings)
    assert spec.name == "db"
    assert [(i.name, i.kind) for i in spec.instances] == [
        ("db-server-1", "server"), ("db-vol-1", "volume"),
        ("db-server-2", "server"), ("db-vol-2", "volume"),
    ]  # fmt: skip
    assert spec.instances[0].flavor_id == "2" and spec.instances[1].volume_type is None
    assert [g.rule.policy for g in spec.groupings] == [
        "affinity", "affinity", "anti-affinity", "anti-affinity",
    ]  # fmt: skip
    members = {m.name: m for m in spec.members(settings)}
    assert (members["db-server-1"].ram_mb, members["db-vol-1"].size_gb) == (1024, 10)


def test_an_unknown_member_in_members_ref_is_named_by_path(settings: Settings) -> None:
    doc = body()
    doc["vcluster"]["groupings"][2]["membersRef"][1] = "db-server-9"
    assert problems(doc, settings) == {
        "vcluster.groupings[2].membersRef[1]": "no instance named 'db-server-9'"
    }


def test_duplicate_names_a_volume_without_size_and_unknown_refs_all_at_once(
    settings: Settings,
) -> None:
    doc = body()
    inst = doc["vcluster"]["instances"]
    inst[2]["name"] = "db-server-1"
    inst[1]["spec"].pop("size")
    inst[3]["spec"]["volume_type"] = "gold"
    inst[0]["spec"]["flavorRef"] = "m9.huge"
    inst.append({"name": "x", "type": "bucket", "spec": {}})
    found = problems(doc, settings)
    assert found["vcluster.instances[2].name"].startswith("duplicate instance name")
    assert found["vcluster.instances[1].spec.size"] == "required: a size in GB"
    assert found["vcluster.instances[3].spec.volume_type"] == "unknown volume type 'gold'"
    assert found["vcluster.instances[0].spec.flavorRef"] == "unknown flavor 'm9.huge'"
    assert "must be 'server' or 'volume'" in found["vcluster.instances[4].type"]


def test_contradicting_groupings_are_refused(settings: Settings) -> None:
    doc = body()
    doc["vcluster"]["groupings"].append(
        {
            "name": "bad",
            "membersRef": ["db-vol-1", "db-server-1"],
            "spec": {"rule": "anti-affinity"},
        }
    )
    found = problems(doc, settings)
    assert list(found) == ["vcluster.groupings[4]"]
    assert "'group-1'" in found["vcluster.groupings[4]"]
    # Zone affinity with host anti-affinity can both hold: different hosts of one zone.
    fine = body()
    fine["vcluster"]["groupings"] = [
        {"name": "zone", "membersRef": ["db-server-1", "db-server-2"],
         "spec": {"rule": "affinity", "scope": "zone"}},
        {"name": "apart", "membersRef": ["db-server-1", "db-server-2"],
         "spec": {"rule": "anti-affinity"}},
    ]  # fmt: skip
    assert len(parse_cluster(fine, settings).groupings) == 2


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"rule": "together"}, "vcluster.groupings[0].spec.rule"),
        ({"rule": "affinity", "scope": "rack"}, "vcluster.groupings[0].spec.scope"),
        ({"rule": "affinity", "max_per_host": 2}, "vcluster.groupings[0].spec.max_per_host"),
    ],
)
def test_bad_rules(settings: Settings, change: dict[str, Any], field: str) -> None:
    doc = body()
    doc["vcluster"]["groupings"][0]["spec"] = change
    assert field in problems(doc, settings)


def test_shapes(settings: Settings) -> None:
    assert "vcluster" in problems({"cluster": {}}, settings)
    assert "vcluster.instances" in problems({"vcluster": {"name": "x", "instances": []}}, settings)
    assert "vcluster.name" in problems(body(name=""), settings)
    assert "vcluster.colour" in problems(body(colour="red"), settings)
    doc = body()
    doc["vcluster"]["instances"][0]["spec"]["availability_zone"] = "mars"
    assert problems(doc, settings) == {
        "vcluster.instances[0].spec.availability_zone": "unknown availability zone 'mars'"
    }


def test_a_server_without_flavor_or_image_is_told_they_are_required() -> None:
    body = {"vcluster": {"name": "x", "instances": [{"name": "s", "type": "server", "spec": {}}]}}
    with pytest.raises(BadRequest) as err:
        parse_cluster(body, Settings())
    fields = {p["field"]: p["message"] for p in err.value.problems}
    assert fields["vcluster.instances[0].spec.flavorRef"].startswith("required")
    assert fields["vcluster.instances[0].spec.imageRef"].startswith("required")
