"""Server groups refused and kept apart: bad groups and bad hints answer 400 naming the
field and create nothing; another project's group is 404 (400 in a hint); deleting a group
leaves its members alone; a deleted server leaves its group; a member no host can take
ends in cell0 with ``group_policy``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from federator.config import Settings
from tests.conftest import LiveBroker, make_settings, sim_zone
from tests.functional.support import all_servers, delete_settled, fault_reason

Factory = Callable[[Settings], LiveBroker]
HOST = "OS-EXT-SRV-ATTR:host"
V2_64 = {"OpenStack-API-Version": "compute 2.64"}
SERVER = {"name": "vm", "flavorRef": "m1.small", "imageRef": "cirros"}
MISSING = "6d3f5c3e-0000-4000-8000-000000000000"


def groups_url(live: LiveBroker) -> str:
    return f"{live.compute}/os-server-groups"


def every_group(live: LiveBroker) -> list[dict[str, Any]]:
    r = live.client.get(groups_url(live), params={"all_projects": "True"}, headers=V2_64)
    assert r.status_code == 200, r.text
    groups: list[dict[str, Any]] = r.json()["server_groups"]
    return groups


def make_group(
    live: LiveBroker,
    policy: str = "anti-affinity",
    *,
    client: httpx.Client | None = None,
    name: str = "g",
    **rules: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "policy": policy}
    if rules:
        body["rules"] = rules
    r = (client or live.client).post(groups_url(live), json={"server_group": body}, headers=V2_64)
    assert r.status_code == 200, r.text
    group: dict[str, Any] = r.json()["server_group"]
    return group


def problem_fields(r: httpx.Response) -> list[str]:
    return [p["field"] for p in r.json()["problems"]]


def boot_member(live: LiveBroker, group_id: str, name: str) -> str:
    body = {"server": {**SERVER, "name": name}, "os:scheduler_hints": {"group": group_id}}
    r = live.client.post(f"{live.compute}/servers", json=body)
    assert r.status_code == 202, r.text
    sid: str = r.json()["server"]["id"]
    return sid


@pytest.fixture
def live(tmp_path: Path, live_broker_factory: Factory) -> LiveBroker:
    return live_broker_factory(make_settings(tmp_path))


@pytest.fixture
def two_hosts(tmp_path: Path, live_broker_factory: Factory) -> LiveBroker:
    """A local zone of two hosts and nowhere to overflow."""
    settings = make_settings(
        tmp_path,
        zones=[sim_zone("local", "local", hosts=2)],
        policy={"version": "t", "zones": {}},
    )
    return live_broker_factory(settings)


# --- bad groups ------------------------------------------------------------------------

BAD_GROUPS = [
    pytest.param("2.64", {"policy": "bogus"}, "server_group.policy", id="unknown-policy"),
    pytest.param(
        "2.64",
        {"policy": "affinity", "rules": {"max_server_per_host": 2}},
        "server_group.rules.max_server_per_host",
        id="max-per-host-with-affinity",
    ),
    pytest.param(
        "2.64",
        {"policy": "soft-affinity", "rules": {"max_server_per_host": 2}},
        "server_group.rules.max_server_per_host",
        id="max-per-host-with-soft-affinity",
    ),
    pytest.param(
        "2.64",
        {"policy": "soft-anti-affinity", "rules": {"max_server_per_host": 2}},
        "server_group.rules.max_server_per_host",
        id="max-per-host-with-soft-anti-affinity",
    ),
    pytest.param(
        "2.64",
        {"policy": "anti-affinity", "rules": {"max_server_per_host": 0}},
        "server_group.rules.max_server_per_host",
        id="max-per-host-0",
    ),
    pytest.param(
        "2.64",
        {"policy": "anti-affinity", "rules": {"max_server_per_host": -1}},
        "server_group.rules.max_server_per_host",
        id="max-per-host-minus-1",
    ),
    pytest.param(
        "2.64",
        {"policy": "anti-affinity", "rules": {"scope": "rack"}},
        "server_group.rules.scope",
        id="unknown-scope",
    ),
    pytest.param(
        "2.64", {"policies": ["anti-affinity"]}, "server_group.policies", id="policies-at-2.64"
    ),
    pytest.param("2.1", {"policy": "anti-affinity"}, "server_group.policy", id="policy-at-2.1"),
    pytest.param(
        "2.63",
        {"policies": ["anti-affinity"], "rules": {"max_server_per_host": 2}},
        "server_group.rules",
        id="rules-at-2.63",
    ),
    pytest.param(
        "2.14",
        {"policies": ["soft-anti-affinity"]},
        "server_group.policies[0]",
        id="soft-policy-at-2.14",
    ),
    pytest.param(
        "2.1",
        {"policies": ["affinity", "anti-affinity"]},
        "server_group.policies",
        id="two-policies",
    ),
]


@pytest.mark.parametrize(("version", "body", "field"), BAD_GROUPS)
def test_bad_group_is_refused_naming_the_field(
    live: LiveBroker, version: str, body: dict[str, Any], field: str
) -> None:
    before = every_group(live)
    r = live.client.post(
        groups_url(live),
        json={"server_group": {"name": "bad", **body}},
        headers={"OpenStack-API-Version": f"compute {version}"},
    )
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "federator.request.invalid"
    assert field in problem_fields(r)
    assert field in r.json()["message"]
    assert every_group(live) == before


@pytest.mark.parametrize(
    ("version", "body", "shown"),
    [
        # The boundaries of the refusals above: each is accepted one step away.
        ("2.15", {"policies": ["soft-anti-affinity"]}, {"policies": ["soft-anti-affinity"]}),
        ("2.1", {"policies": ["anti-affinity"]}, {"policies": ["anti-affinity"]}),
        (
            "2.64",
            {"policy": "anti-affinity", "rules": {"max_server_per_host": 1, "scope": "zone"}},
            {"policy": "anti-affinity", "rules": {"max_server_per_host": 1, "scope": "zone"}},
        ),
        ("2.64", {"policy": "affinity", "rules": {"scope": "zone"}}, {"rules": {"scope": "zone"}}),
    ],
)
def test_good_group_next_to_the_refusals_is_made(
    live: LiveBroker, version: str, body: dict[str, Any], shown: dict[str, Any]
) -> None:
    r = live.client.post(
        groups_url(live),
        json={"server_group": {"name": "good", **body}},
        headers={"OpenStack-API-Version": f"compute {version}"},
    )
    assert r.status_code == 200, r.text
    group = r.json()["server_group"]
    assert {k: group[k] for k in shown} == shown
    assert [g["id"] for g in every_group(live)] == [group["id"]]


# --- bad hints -------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["os:scheduler_hints", "OS-SCH-HNT:scheduler_hints"])
@pytest.mark.parametrize(
    ("hint", "message"),
    [
        pytest.param("not-a-uuid", "is not a server group UUID", id="not-a-uuid"),
        pytest.param(42, "is not a server group UUID", id="a-number"),
        pytest.param(MISSING, "no such server group", id="missing-group"),
    ],
)
def test_bad_hint_is_refused_and_creates_nothing(
    live: LiveBroker, key: str, hint: Any, message: str
) -> None:
    make_group(live)  # one group exists; the hint does not name it
    body = {"server": {**SERVER, "min_count": 2, "max_count": 2}, key: {"group": hint}}
    r = live.client.post(f"{live.compute}/servers", json=body)
    assert r.status_code == 400, r.text
    assert message in r.json()["message"]
    assert any(f.endswith("scheduler_hints.group") for f in problem_fields(r))
    live.wait_settled()
    assert all_servers(live) == []
    assert every_group(live)[0]["members"] == []


def test_hint_naming_another_projects_group(live: LiveBroker) -> None:
    theirs = make_group(live, client=live.member("project-a"), name="theirs")
    intruder = live.member("project-b")
    body = {"server": SERVER, "os:scheduler_hints": {"group": theirs["id"]}}
    r = intruder.post(f"{live.compute}/servers", json=body)
    assert r.status_code == 400, r.text
    assert "os:scheduler_hints.group" in problem_fields(r)
    assert theirs["id"] in r.json()["message"]
    live.wait_settled()
    assert all_servers(live) == []
    assert every_group(live)[0]["members"] == []
    # The owner may use it.
    mine = live.member("project-a").post(f"{live.compute}/servers", json=body)
    assert mine.status_code == 202, mine.text
    live.wait_settled()
    assert every_group(live)[0]["members"] == [mine.json()["server"]["id"]]


# --- tenancy ---------------------------------------------------------------------------


def test_another_projects_group_is_not_found(live: LiveBroker) -> None:
    a, b = live.member("project-a"), live.member("project-b")
    theirs = make_group(live, client=a, name="a-group")
    own = make_group(live, client=b, name="b-group")
    url = f"{groups_url(live)}/{theirs['id']}"

    assert b.get(url, headers=V2_64).status_code == 404
    refused = b.delete(url)
    assert refused.status_code == 404
    assert refused.json()["code"] == "federator.resource.not_found"
    assert a.get(url, headers=V2_64).status_code == 200  # still there

    def ids(client: httpx.Client, **params: str) -> list[str]:
        r = client.get(groups_url(live), params=params, headers=V2_64)
        assert r.status_code == 200, r.text
        return [g["id"] for g in r.json()["server_groups"]]

    assert ids(a) == [theirs["id"]]
    assert ids(b) == [own["id"]]
    assert ids(b, all_projects="True") == [own["id"]]  # only admins see everyone's
    assert ids(live.client) == []
    assert ids(live.client, all_projects="True") == [theirs["id"], own["id"]]
    everyone = live.client.get(groups_url(live), params={"all_projects": "True"}, headers=V2_64)
    assert [g["project_id"] for g in everyone.json()["server_groups"]] == [
        "project-a",
        "project-b",
    ]
    # The admin may show and delete any project's group.
    assert live.client.get(url, headers=V2_64).json()["server_group"]["name"] == "a-group"
    assert live.client.delete(url).status_code == 204
    assert a.get(url, headers=V2_64).status_code == 404


# --- members ---------------------------------------------------------------------------


def test_deleting_a_group_leaves_its_members_running(live: LiveBroker) -> None:
    group = make_group(live)
    sids = [boot_member(live, group["id"], f"m{n}") for n in (1, 2)]
    live.wait_settled()
    before = {sid: live.server(sid) for sid in sids}
    assert {s["status"] for s in before.values()} == {"ACTIVE"}
    assert len({s[HOST] for s in before.values()}) == 2

    r = live.client.delete(f"{groups_url(live)}/{group['id']}")
    assert r.status_code == 204, r.text
    assert r.content == b""
    live.wait_settled()

    after = {sid: live.server(sid) for sid in sids}
    for sid in sids:
        assert after[sid]["status"] == "ACTIVE"
        assert after[sid][HOST] == before[sid][HOST]
        assert after[sid]["OS-EXT-AZ:availability_zone"] == "local"
    assert {s["id"] for s in all_servers(live)} == set(sids)
    assert live.client.get(f"{groups_url(live)}/{group['id']}").status_code == 404
    assert every_group(live) == []
    # The group is gone for new boots too.
    body = {"server": SERVER, "os:scheduler_hints": {"group": group["id"]}}
    assert live.client.post(f"{live.compute}/servers", json=body).status_code == 400
    # And the servers still delete normally.
    delete_settled(live, *sids)
    assert all_servers(live) == []


def test_a_member_no_host_can_take_ends_in_cell0(two_hosts: LiveBroker) -> None:
    live = two_hosts
    group = make_group(live)
    first, second = (boot_member(live, group["id"], f"m{n}") for n in (1, 2))
    live.wait_settled()
    hosts = {live.server(first)[HOST], live.server(second)[HOST]}
    assert hosts == {"local-host-001", "local-host-002"}

    third = boot_member(live, group["id"], "m3")
    live.wait_settled()
    lost = live.server(third)
    assert lost["status"] == "ERROR"
    assert lost["federator:cell"] == "cell0"
    assert fault_reason(lost) == "group_policy"
    assert lost["federator:fault"]["code"] == "federator.placement.group_policy"
    assert lost["federator:placement"]["group"]["id"] == group["id"]
    # Still a member, but placed nowhere.
    shown = live.client.get(f"{groups_url(live)}/{group['id']}", headers=V2_64).json()
    assert shown["server_group"]["members"] == [first, second, third]
    assert {m["id"] for m in shown["server_group"]["federator:members"]} == {first, second}


def test_a_deleted_server_leaves_its_group(two_hosts: LiveBroker) -> None:
    live = two_hosts
    group = make_group(live)
    first, second = (boot_member(live, group["id"], f"m{n}") for n in (1, 2))
    live.wait_settled()
    freed = live.server(first)[HOST]

    delete_settled(live, first)
    shown = live.client.get(f"{groups_url(live)}/{group['id']}", headers=V2_64).json()
    assert shown["server_group"]["members"] == [second]
    assert [m["id"] for m in shown["server_group"]["federator:members"]] == [second]
    listed = every_group(live)
    assert listed[0]["members"] == [second]

    # The host it left takes the next member.
    third = boot_member(live, group["id"], "m3")
    live.wait_settled()
    assert live.wait_status(third, "ACTIVE")[HOST] == freed
    note = live.server(third)["federator:placement"]["group"]
    assert (note["members_placed"], note["relaxed"]) == (1, False)
