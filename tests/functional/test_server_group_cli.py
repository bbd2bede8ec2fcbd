"""``federator server-group`` and ``federator server create --group``, end to end against a
live broker on the embedded default (four local sim hosts, ``aws-standin`` simulated,
``sim-cloud-b``): outputs and errors, not just exit codes."""

from __future__ import annotations

import json
from typing import Any

from federator.cli.main import app
from tests.conftest import LiveBroker, member_of
from tests.functional.support import all_servers, fault_reason
from tests.functional.test_cli import cli, field, ok, refused, row, runner

MV = {"OpenStack-API-Version": "compute 2.64"}
HOST = "OS-EXT-SRV-ATTR:host"
AZ = "OS-EXT-AZ:availability_zone"


def as_json(live: LiveBroker, *args: str) -> Any:
    return json.loads(ok(live, *args, "--json"))


def api_group(live: LiveBroker, gid: str) -> dict[str, Any]:
    r = live.client.get(f"{live.compute}/os-server-groups/{gid}", headers=MV)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()["server_group"]
    return body


def boot(live: LiveBroker, name: str, group: str, *more: str) -> list[dict[str, Any]]:
    """``server create NAME --group GROUP --wait --json`` (exit status 0)."""
    args = ["server", "create", name, "--flavor", "m1.small", "--image", "cirros"]
    found: list[dict[str, Any]] = as_json(live, *args, "--group", group, *more, "--wait")
    return found


def test_create_list_show_delete(live_broker: LiveBroker) -> None:
    live = live_broker
    created = ok(
        live, "server-group", "create", "web", "--policy", "anti-affinity",
        "--rule", "max_server_per_host=2",
    )  # fmt: skip
    assert field(created, "name") == "web"
    assert field(created, "policy") == "anti-affinity"
    assert field(created, "rules") == "max_server_per_host=2"
    assert field(created, "members") == "0"
    assert field(created, "project") == "admin"
    web = field(created, "id")
    # Sent at 2.64: the broker stored the rule as a number, in the 2.64 form.
    stored = api_group(live, web)
    assert (stored["policy"], stored["rules"]) == ("anti-affinity", {"max_server_per_host": 2})

    zonal = as_json(
        live, "server-group", "create", "zonal", "--policy", "affinity", "--rule", "scope=zone"
    )["server_group"]
    assert (zonal["policy"], zonal["rules"]) == ("affinity", {"scope": "zone"})
    assert "policies" not in zonal  # the 2.64 form, not the 2.1 one
    soft = as_json(live, "server-group", "create", "soft", "--policy", "soft-anti-affinity")
    assert soft["server_group"]["policy"] == "soft-anti-affinity"

    listed = ok(live, "server-group", "list")
    assert row(listed, web) == [web, "web", "anti-affinity", "max_server_per_host=2", "0", "admin"]
    assert row(listed, zonal["id"])[1:4] == ["zonal", "affinity", "scope=zone"]
    names = [g["name"] for g in as_json(live, "server-group", "list")]
    assert names == ["web", "zonal", "soft"]

    shown = ok(live, "server-group", "show", "web")  # by name
    assert field(shown, "id") == web
    assert "Members" in shown
    assert as_json(live, "server-group", "show", web)["server_group"]["federator:members"] == []

    gone = ok(live, "server-group", "delete", "zonal", soft["server_group"]["id"])
    assert gone.splitlines() == [
        f"server group zonal (id {zonal['id']}) deleted",
        f"server group soft (id {soft['server_group']['id']}) deleted",
    ]
    assert [g["name"] for g in as_json(live, "server-group", "list")] == ["web"]
    assert live.client.get(f"{live.compute}/os-server-groups/{zonal['id']}").status_code == 404
    assert as_json(live, "server-group", "delete", web) == {"deleted": [web]}
    assert as_json(live, "server-group", "list") == []


def test_members_booted_with_group_spread_then_end_in_cell0(live_broker: LiveBroker) -> None:
    """The README's walk: 4 members on the 4 local hosts, the 5th in aws-standin and the
    6th in sim-cloud-b (each counts as one host), the 7th in cell0."""
    live = live_broker
    gid = as_json(live, "server-group", "create", "spread", "--policy", "anti-affinity")[
        "server_group"
    ]["id"]

    first = boot(live, "spread", gid, "--count", "4")  # by id
    assert sorted(s["name"] for s in first) == ["spread-1", "spread-2", "spread-3", "spread-4"]
    assert {s["status"] for s in first} == {"ACTIVE"}
    assert sorted(s[HOST] for s in first) == [f"local-host-00{n}" for n in range(1, 5)]
    [fifth] = boot(live, "spread-5", "spread")  # by name
    assert (fifth["status"], fifth[AZ]) == ("ACTIVE", "aws-standin")
    [sixth] = boot(live, "spread-6", "spread")
    assert (sixth["status"], sixth[AZ]) == ("ACTIVE", "sim-cloud-b")

    seventh = cli(
        live, "server", "create", "spread-7", "--flavor", "m1.small", "--image", "cirros",
        "--group", "spread", "--wait",
    )  # fmt: skip
    assert seventh.exit_code == 1
    assert row(seventh.stdout, "spread-7")[2] == "ERROR"
    assert "is in ERROR: federator.placement.group_policy: server group spread" in seventh.stderr
    [seventh_server] = [s for s in all_servers(live) if s["name"] == "spread-7"]
    assert seventh_server["federator:cell"] == "cell0"
    assert fault_reason(seventh_server) == "group_policy"

    placed = [*first, fifth, sixth]
    group = api_group(live, gid)
    assert set(group["members"]) == {s["id"] for s in placed} | {seventh_server["id"]}
    shown = ok(live, "server-group", "show", gid)
    assert field(shown, "members") == "7"
    for server in first:
        cells = row(shown, server["id"])
        assert cells[1:6] == [server["name"], "ACTIVE", "local", "local", server[HOST]]
        assert cells[6] == "the broker's host scheduler, on this zone's hosts"
    for server in (fifth, sixth):
        cells = row(shown, server["id"])
        assert cells[1:6] == [server["name"], "ACTIVE", server[AZ], server[AZ], "-"]
        assert cells[6] == "the broker, counting this zone as one host"
    assert row(shown, seventh_server["id"])[1:6] == ["spread-7", "ERROR", "-", "-", "-"]

    # The placement records the group's rule, and server show says so.
    note = live.server(fifth["id"])["federator:placement"]["group"]
    assert (note["id"], note["policy"], note["relaxed"]) == (gid, "anti-affinity", False)
    assert field(ok(live, "server", "show", fifth["id"]), "server group") == (
        f"spread ({gid}): anti-affinity, hard rule kept"
    )


def test_all_projects_shows_every_project_to_the_admin(live_broker: LiveBroker) -> None:
    live = live_broker
    member = live.os_env(user=member_of("project-a"), project="project-a")
    made = runner.invoke(
        app,
        ["server-group", "create", "theirs", "--policy", "affinity", "--json", "--url", live.url],
        env=member,
    )
    assert made.exit_code == 0, made.output
    theirs = json.loads(made.stdout)["server_group"]
    assert theirs["project_id"] == "project-a"
    mine = as_json(live, "server-group", "create", "mine", "--policy", "affinity")["server_group"]

    assert [g["id"] for g in as_json(live, "server-group", "list")] == [mine["id"]]
    everyone = ok(live, "server-group", "list", "--all-projects")
    assert row(everyone, theirs["id"])[1:] == ["theirs", "affinity", "-", "0", "project-a"]
    assert row(everyone, mine["id"])[5] == "admin"
    as_member = runner.invoke(
        app, ["server-group", "list", "--json", "--url", live.url], env=member
    )
    assert [g["id"] for g in json.loads(as_member.stdout)] == [theirs["id"]]


def test_errors_are_one_clean_line(live_broker: LiveBroker) -> None:
    live = live_broker
    bad = refused(live, "server-group", "create", "x", "--policy", "bogus")
    assert bad.splitlines() == [
        "error: HTTP 400 federator.request.invalid: invalid request: server_group.policy: "
        "'bogus' is not one of affinity, anti-affinity, soft-affinity, soft-anti-affinity",
        "  server_group.policy: 'bogus' is not one of affinity, anti-affinity, soft-affinity, "
        "soft-anti-affinity",
    ]
    zero = refused(
        live, "server-group", "create", "x", "--policy", "anti-affinity",
        "--rule", "max_server_per_host=0",
    )  # fmt: skip
    assert "server_group.rules.max_server_per_host: Input should be greater than" in zero
    rack = refused(
        live, "server-group", "create", "x", "--policy", "anti-affinity", "--rule", "scope=rack"
    )
    assert "server_group.rules.scope" in rack
    usage = cli(live, "server-group", "create", "x", "--policy", "affinity", "--rule", "novalue")
    assert usage.exit_code == 2 and "--rule expects KEY=VALUE, got 'novalue'" in usage.stderr
    assert as_json(live, "server-group", "list") == []  # nothing was created

    assert refused(live, "server-group", "show", "nope").strip() == (
        "error: HTTP 404 federator.resource.not_found: server group nope could not be found"
    )
    ok(live, "server-group", "create", "kept", "--policy", "affinity")
    partly = cli(live, "server-group", "delete", "nope", "kept")
    assert partly.exit_code == 1
    assert partly.stdout.startswith("server group kept (id ")
    assert "server group nope could not be found" in partly.stderr
    assert as_json(live, "server-group", "list") == []

    ok(live, "server-group", "create", "twin", "--policy", "affinity")
    ok(live, "server-group", "create", "twin", "--policy", "anti-affinity")
    assert "2 server groups are named 'twin'; give an id" in refused(
        live, "server-group", "show", "twin"
    )

    server = ("server", "create", "vm", "--flavor", "m1.small", "--image", "cirros")
    assert "server group nope could not be found" in refused(live, *server, "--group", "nope")
    missing = "6d3f5c3e-0000-4000-8000-000000000000"
    assert f"Invalid server group '{missing}': no such server group" in refused(
        live, *server, "--group", missing
    )
    assert live.client.get(f"{live.compute}/servers").json()["servers"] == []
