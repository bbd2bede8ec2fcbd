"""Compute API microversions against a live broker: how a version is negotiated (the two
headers, the 2.1 default, ``latest``, 406 and 400, the version document), the shapes each
version changes (server detail, flavors, aggregates) for admins and for members, and the
real OpenStack clients, which negotiate the broker's maximum, still working.

Every shape is checked on both sides of the version that changes it, so a field shown a
version too early or too late fails.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from federator.api.microversion import MAX, MIN, VERSIONS
from federator.config import Settings
from tests.conftest import LiveBroker, make_settings
from tests.functional.conftest import REPO
from tests.functional.support import boot_as, boot_settled
from tests.functional.test_api_errors import check_error
from tests.functional.test_openstack_clients import CIRROS, openstack_env, os_json

Factory = Callable[[Settings], LiveBroker]

# A flavor with extra specs, so that 2.47 and 2.61 have something to show. Specs of a
# scope the scheduler's aggregate filter ignores, so it boots on any local host.
PINNED_SPECS = {"hw:cpu_policy": "dedicated", "hw:mem_page_size": "large"}
PINNED = {
    "id": "5",
    "name": "m1.pinned",
    "vcpus": 2,
    "ram_mb": 2048,
    "disk_gb": 20,
    "extra_specs": PINNED_SPECS,
}
# The pinned flavor as a server embeds it from 2.47.
EMBEDDED_PINNED = {
    "original_name": "m1.pinned",
    "vcpus": 2,
    "ram": 2048,
    "disk": 20,
    "ephemeral": 0,
    "swap": 0,
    "extra_specs": PINNED_SPECS,
}
# What each microversion adds to an admin's server detail, and its value for a server
# built on a local host.
ADDED: dict[str, dict[str, Any]] = {
    "2.3": {
        "OS-EXT-SRV-ATTR:reservation_id": None,
        "OS-EXT-SRV-ATTR:hostname": "web-server-01-prod",  # the server is "Web Server_01.Prod"
        "OS-EXT-SRV-ATTR:launch_index": 0,
        "OS-EXT-SRV-ATTR:kernel_id": "",
        "OS-EXT-SRV-ATTR:ramdisk_id": "",
        "OS-EXT-SRV-ATTR:root_device_name": None,
        "OS-EXT-SRV-ATTR:user_data": None,
    },
    "2.9": {"locked": False},
    "2.16": {"host_status": "UP"},
    "2.19": {"description": None},
    "2.26": {"tags": []},
    "2.63": {"trusted_image_certificates": None},
}
ADMIN_ONLY = {*ADDED["2.3"], "host_status"}
HEADER = "OpenStack-API-Version"
LEGACY = "X-OpenStack-Nova-API-Version"


def at(version: str | None) -> dict[str, str]:
    """The header that asks for ``version``; None asks for nothing (2.1)."""
    return {} if version is None else {HEADER: f"compute {version}"}


def before(version: str) -> str:
    """The microversion just below ``version`` ("2.47" -> "2.46")."""
    major, minor = version.split(".")
    return f"{major}.{int(minor) - 1}"


def ok(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def server_at(
    live: LiveBroker, sid: str, version: str | None, client: httpx.Client | None = None
) -> dict[str, Any]:
    """GET /servers/{sid} at ``version``, checking the version the answer names."""
    r = (client or live.client).get(f"{live.compute}/servers/{sid}", headers=at(version))
    assert r.headers["openstack-api-version"] == f"compute {version or MIN}"
    server: dict[str, Any] = ok(r)["server"]
    return server


def listed_at(
    live: LiveBroker, version: str | None, client: httpx.Client | None = None, **params: Any
) -> dict[str, dict[str, Any]]:
    """GET /servers/detail at ``version``, by server id."""
    r = (client or live.client).get(
        f"{live.compute}/servers/detail", headers=at(version), params=params
    )
    return {s["id"]: s for s in ok(r)["servers"]}


@pytest.fixture
def live(tmp_path: Path, live_broker_factory: Factory) -> LiveBroker:
    """A broker on the default configuration plus the pinned flavor."""
    defaults = [f.model_dump() for f in make_settings(tmp_path).flavors]
    return live_broker_factory(make_settings(tmp_path, flavors=[*defaults, PINNED]))


# --- negotiation ---------------------------------------------------------------------------


def test_the_version_list_runs_from_2_1_to_2_64_without_gaps() -> None:
    assert (str(MIN), str(MAX)) == ("2.1", "2.64")
    assert [v for v, _ in VERSIONS] == [f"2.{n}" for n in range(1, 65)]
    assert all(what.strip() for _, what in VERSIONS)


def test_the_api_guide_lists_every_version_in_order() -> None:
    text = (REPO / "docs" / "api.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| (2\.\d+) \|", text, re.MULTILINE)
    assert rows == [v for v, _ in VERSIONS]


def test_no_header_is_2_1_and_the_answer_says_so(live: LiveBroker) -> None:
    for path in ("/servers/detail", "/flavors", "/os-aggregates"):
        r = live.client.get(f"{live.compute}{path}")
        assert r.status_code == 200, r.text
        assert r.headers["openstack-api-version"] == "compute 2.1"
        assert r.headers["x-openstack-nova-api-version"] == "2.1"
        vary = {v.strip().lower() for v in r.headers["vary"].split(",")}
        assert {"openstack-api-version", "x-openstack-nova-api-version"} <= vary


@pytest.mark.parametrize(
    ("headers", "served"),
    [
        ({HEADER: "compute 2.64"}, "2.64"),
        ({LEGACY: "2.64"}, "2.64"),
        ({HEADER: "compute latest"}, "2.64"),
        ({LEGACY: "latest"}, "2.64"),
        ({HEADER: "volume 3.70, compute 2.47"}, "2.47"),
        ({HEADER: "compute 2.9", LEGACY: "2.30"}, "2.9"),
        ({HEADER: "volume 3.70", LEGACY: "2.30"}, "2.30"),
    ],
    ids=["modern", "legacy", "latest", "legacy-latest", "among-services", "modern-wins", "other"],
)
def test_the_asked_version_is_served_and_named(
    live: LiveBroker, headers: dict[str, str], served: str
) -> None:
    r = live.client.get(f"{live.compute}/servers/detail", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["openstack-api-version"] == f"compute {served}"
    assert r.headers["x-openstack-nova-api-version"] == served


def test_every_listed_version_can_be_asked_for(live: LiveBroker) -> None:
    for version, _ in VERSIONS:
        r = live.client.get(f"{live.compute}/flavors", headers=at(version))
        assert r.status_code == 200, (version, r.text)
        assert r.headers["x-openstack-nova-api-version"] == version


@pytest.mark.parametrize(
    "headers",
    [
        {HEADER: "compute 2.999"},
        {LEGACY: "2.999"},
        {HEADER: "compute 2.0"},
        {HEADER: "compute 3.0"},
    ],
    ids=["above", "legacy-above", "below", "next-major"],
)
def test_a_version_not_served_is_406_and_changes_nothing(
    live: LiveBroker, headers: dict[str, str]
) -> None:
    body = {"server": {"name": "vm", "flavorRef": "m1.small", "imageRef": "cirros"}}
    r = live.client.post(f"{live.compute}/servers", json=body, headers=headers)
    error = check_error(r, 406)
    assert error["code"] == "federator.request.version_not_acceptable"
    assert "is not supported by the API. Minimum is 2.1 and maximum is 2.64." in error["message"]
    assert error["computeFault"] == {"code": 406, "message": error["message"]}
    live.wait_settled()
    assert listed_at(live, None) == {}


@pytest.mark.parametrize(
    "headers",
    [{HEADER: "compute abc"}, {LEGACY: "2"}, {HEADER: "compute 2.1.1"}],
    ids=["word", "no-minor", "three-parts"],
)
def test_a_header_that_is_no_version_is_400(live: LiveBroker, headers: dict[str, str]) -> None:
    r = live.client.get(f"{live.compute}/servers/detail", headers=headers)
    error = check_error(r, 400)
    assert error["code"] == "federator.request.invalid"
    assert "invalid compute API version" in error["message"]
    assert error["badRequest"] == {"code": 400, "message": error["message"]}
    assert [p["field"] for p in error["problems"]] == ["OpenStack-API-Version"]


def test_the_version_document_names_the_range(live: LiveBroker) -> None:
    doc = ok(httpx.get(live.compute, timeout=30))["version"]
    assert (doc["id"], doc["status"]) == ("v2.1", "CURRENT")
    assert (doc["version"], doc["min_version"]) == ("2.64", "2.1")
    assert doc["links"][0]["href"] == f"{live.compute}/"


# --- server detail ---------------------------------------------------------------------------


def test_the_flavor_is_a_link_before_2_47_and_embedded_from_it(live: LiveBroker) -> None:
    sid = boot_settled(live, "pinned", flavor="m1.pinned")["id"]
    link = {
        "id": "5",
        "links": [
            {"rel": "self", "href": f"{live.compute}/flavors/5"},
            {"rel": "bookmark", "href": f"{live.compute}/flavors/5"},
        ],
    }
    for version, flavor in ((None, link), ("2.46", link), ("2.47", EMBEDDED_PINNED)):
        assert server_at(live, sid, version)["flavor"] == flavor, version
        assert listed_at(live, version)[sid]["flavor"] == flavor, version
    assert server_at(live, sid, "2.64")["flavor"] == EMBEDDED_PINNED
    # The broker's own extension is there at every version.
    assert server_at(live, sid, "2.64")["federator:flavor"]["name"] == "m1.pinned"


def test_each_field_appears_at_its_version_and_2_1_is_unchanged(live: LiveBroker) -> None:
    sid = boot_settled(live, "Web Server_01.Prod")["id"]
    base = server_at(live, sid, None)
    assert server_at(live, sid, "2.1") == base
    expected = {k: v for added in ADDED.values() for k, v in added.items()}
    assert not set(expected) & set(base)

    for version, added in ADDED.items():
        below, from_it = server_at(live, sid, before(version)), server_at(live, sid, version)
        assert not set(added) & set(below), version
        assert {k: from_it[k] for k in added} == added, version

    latest = server_at(live, sid, "2.64")
    assert set(latest) - set(base) == set(expected)
    assert {k: latest[k] for k in expected} == expected
    # Everything 2.1 shows is shown the same at 2.64, but the flavor (2.47).
    assert {k: v for k, v in latest.items() if k in base and k != "flavor"} == {
        k: v for k, v in base.items() if k != "flavor"
    }
    assert listed_at(live, "2.64")[sid] == latest


def test_members_see_the_later_fields_but_not_the_admin_ones(live: LiveBroker) -> None:
    mine = boot_as(live, "project-a", "mine", flavorRef="m1.pinned")
    member = live.member("project-a")
    as_member = server_at(live, mine["id"], "2.64", member)
    assert listed_at(live, "2.64", member)[mine["id"]] == as_member
    assert not ADMIN_ONLY & set(as_member)
    assert as_member["flavor"] == EMBEDDED_PINNED
    assert (as_member["locked"], as_member["description"], as_member["tags"]) == (False, None, [])
    assert as_member["trusted_image_certificates"] is None

    as_admin = server_at(live, mine["id"], "2.64")
    assert listed_at(live, "2.64", all_tenants="1")[mine["id"]] == as_admin
    assert set(as_admin) - set(as_member) == ADMIN_ONLY
    assert (as_admin["host_status"], as_admin["OS-EXT-SRV-ATTR:hostname"]) == ("UP", "mine")


def test_host_status_is_empty_for_a_server_on_no_host(live: LiveBroker) -> None:
    # The default policy refuses a virtual zone asked for by name: the server ends in cell0.
    buried = boot_settled(live, "buried", availability_zone="aws-standin")
    assert (buried["status"], buried["OS-EXT-SRV-ATTR:host"]) == ("ERROR", None)
    shown = server_at(live, buried["id"], "2.64")
    assert shown["host_status"] == ""
    assert shown["flavor"]["original_name"] == "m1.small"
    assert "host_status" not in server_at(live, buried["id"], "2.15")


@pytest.mark.parametrize(
    ("name", "hostname"),
    [("ALL CAPS_and.dots", "all-caps-and-dots"), ("...", None), ("Ünïcödé 名前", "ünïcödé")],
    ids=["sanitised", "nothing-left", "latin-1-only"],
)
def test_the_hostname_follows_novas_rules(
    live: LiveBroker, name: str, hostname: str | None
) -> None:
    sid = boot_settled(live, name)["id"]
    expected = hostname or f"Server-{sid}"
    assert server_at(live, sid, "2.3")["OS-EXT-SRV-ATTR:hostname"] == expected


# --- flavors and aggregates -------------------------------------------------------------------


def test_flavors_gain_description_at_2_55_and_extra_specs_at_2_61(live: LiveBroker) -> None:
    def flavors(path: str, version: str | None) -> dict[str, dict[str, Any]]:
        r = live.client.get(f"{live.compute}/flavors{path}", headers=at(version))
        return {f["id"]: f for f in ok(r)["flavors"]}

    def shown(version: str | None) -> dict[str, Any]:
        r = live.client.get(f"{live.compute}/flavors/5", headers=at(version))
        flavor: dict[str, Any] = ok(r)["flavor"]
        return flavor

    for version in (None, "2.54"):
        assert all("description" not in f for f in flavors("", version).values())
        assert "description" not in shown(version)
    for version in ("2.55", "2.61"):
        assert {f["description"] for f in flavors("", version).values()} == {None}
        assert {f["description"] for f in flavors("/detail", version).values()} == {None}
        assert shown(version)["description"] is None
    for version in (None, "2.60"):
        assert all("extra_specs" not in f for f in flavors("/detail", version).values())
        assert "extra_specs" not in shown(version)

    detail = flavors("/detail", "2.61")
    assert detail["5"]["extra_specs"] == PINNED_SPECS
    assert detail["2"]["extra_specs"] == {}
    assert shown("2.61")["extra_specs"] == PINNED_SPECS
    # The brief listing never carries extra specs, as in Nova.
    assert all("extra_specs" not in f for f in flavors("", "2.61").values())
    assert set(detail["5"]) - set(flavors("/detail", None)["5"]) == {"description", "extra_specs"}


def test_aggregates_show_their_uuid_from_2_41(live: LiveBroker) -> None:
    aggs = f"{live.compute}/os-aggregates"
    old, new = at("2.40"), at("2.41")
    made = ok(live.client.post(aggs, json={"aggregate": {"name": "fast"}}, headers=old))
    assert "uuid" not in made["aggregate"]
    agg_id = made["aggregate"]["id"]
    action = {"set_metadata": {"metadata": {"ssd": "true"}}}

    def answers(headers: dict[str, str]) -> list[dict[str, Any]]:
        return [
            ok(live.client.get(f"{aggs}/{agg_id}", headers=headers))["aggregate"],
            ok(live.client.post(f"{aggs}/{agg_id}/action", json=action, headers=headers))[
                "aggregate"
            ],
            ok(
                live.client.put(
                    f"{aggs}/{agg_id}", json={"aggregate": {"name": "fast"}}, headers=headers
                )
            )["aggregate"],
            *ok(live.client.get(aggs, headers=headers))["aggregates"],
        ]

    assert all("uuid" not in a for a in answers(old))
    uuids = {a["id"]: a["uuid"] for a in answers(new)}
    assert len(uuids[agg_id]) == 36 and len(set(uuids.values())) == len(uuids) == 2
    again = ok(live.client.post(aggs, json={"aggregate": {"name": "slow"}}, headers=new))
    assert len(again["aggregate"]["uuid"]) == 36


# --- the real clients, negotiating 2.64 / 2.61 ------------------------------------------------


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:::openstack")
def test_openstack_cli_works_with_negotiation(live: LiveBroker, tmp_path: Path) -> None:
    env = openstack_env(live, tmp_path)
    flavors = os_json(env, "flavor", "list")
    assert {f["Name"] for f in flavors} == {
        "m1.tiny",
        "m1.small",
        "m1.medium",
        "m1.large",
        "m1.pinned",
    }
    by_name = {f["Name"]: f for f in os_json(env, "flavor", "list", "--long")}
    assert by_name["m1.pinned"]["Properties"] == PINNED_SPECS

    created = os_json(
        env,
        "server", "create", "web", "--image", "cirros", "--flavor", "m1.pinned",
        "--availability-zone", "local", "--wait",
    )  # fmt: skip
    assert created["status"] == "ACTIVE"
    # An embedded flavor is printed as it came: the servers call went at >= 2.47.
    # The CLI prints the embedded flavor (as openstacksdk parsed it): the servers calls went
    # at 2.47 or later, where a link would have been printed as "m1.pinned (5)".
    assert {k: created["flavor"][k] for k in EMBEDDED_PINNED} == EMBEDDED_PINNED

    listed = os_json(env, "server", "list", "--long")
    assert [(s["ID"], s["Name"], s["Status"], s["Flavor"]) for s in listed] == [
        (created["id"], "web", "ACTIVE", "m1.pinned")
    ]
    shown = os_json(env, "server", "show", "web")
    assert shown["id"] == created["id"]
    assert {k: shown["flavor"][k] for k in EMBEDDED_PINNED} == EMBEDDED_PINNED
    # 2.3, 2.9 and 2.16 fields for an admin (the SDK shows None for a field not sent).
    assert (shown["locked"], shown["host_status"]) == (False, "UP")
    assert (shown["OS-EXT-SRV-ATTR:hostname"], shown["OS-EXT-SRV-ATTR:launch_index"]) == ("web", 0)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:::openstack")
def test_openstacksdk_works_with_negotiation(live: LiveBroker) -> None:
    conn = live.sdk()
    try:
        flavors = {f.name: f for f in conn.compute.flavors()}
        assert flavors["m1.pinned"].extra_specs == PINNED_SPECS  # from the 2.61 listing
        made = conn.compute.create_server(
            name="sdk-vm", flavor_id="5", image_id=CIRROS, networks="none"
        )
        live.wait_settled()

        servers = list(conn.compute.servers())
        assert [(s.id, s.status) for s in servers] == [(made.id, "ACTIVE")]
        assert servers[0].flavor.original_name == "m1.pinned"
        assert (servers[0].flavor.vcpus, servers[0].flavor.ram) == (2, 2048)
        assert servers[0].flavor.extra_specs == PINNED_SPECS

        got = conn.compute.get_server(made.id)
        assert (got.name, got.flavor.original_name) == ("sdk-vm", "m1.pinned")
        assert (got.is_locked, got.host_status, got.hostname) == (False, "UP", "sdk-vm")
        assert (got.launch_index, got.kernel_id) == (0, "")
        # The cloud layer still finds its addresses.
        assert [s.name for s in conn.list_servers()] == ["sdk-vm"]
    finally:
        conn.close()
