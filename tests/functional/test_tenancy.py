"""Tokens and tenants: every call needs a valid token, and a project's members never see,
change or learn of another project's servers; an admin sees every project's.

Driven through the HTTP API, the ``federator`` command and the real ``openstack`` command.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from federator.cli.main import app
from federator.config import Settings
from federator.storage.models import utcnow
from tests.conftest import PASSWORD, LiveBroker, make_settings, member_of
from tests.functional.test_openstack_clients import openstack_env, os_json, run_openstack

Factory = Callable[[Settings], LiveBroker]
A, B = "project-a", "project-b"


@pytest.fixture
def live(tmp_path: Path, live_broker_factory: Factory) -> LiveBroker:
    return live_broker_factory(make_settings(tmp_path))


def _boot(live: LiveBroker, client: httpx.Client, name: str) -> str:
    body = {"server": {"name": name, "flavorRef": "m1.tiny", "imageRef": "cirros"}}
    r = client.post(f"{live.compute}/servers", json=body)
    assert r.status_code == 202, r.text
    sid: str = r.json()["server"]["id"]
    return sid


def _names(r: httpx.Response) -> list[str]:
    assert r.status_code == 200, r.text
    return sorted(s["name"] for s in r.json()["servers"])


def _not_found(r: httpx.Response, sid: str) -> None:
    """The answer for another project's server is the answer for no server at all."""
    assert r.status_code == 404, r.text
    body = r.json()
    assert body["code"] == "federator.resource.not_found"
    assert body["message"] == f"server {sid} could not be found"


def test_members_see_and_touch_only_their_own_project(live: LiveBroker) -> None:
    a, b = live.member(A), live.member(B)
    a_vm, b_vm = _boot(live, a, "a-vm"), _boot(live, b, "b-vm")
    live.wait_settled()
    servers = f"{live.compute}/servers"

    for client, mine in ((a, "a-vm"), (b, "b-vm")):
        assert _names(client.get(f"{servers}/detail")) == [mine]
        assert _names(client.get(servers)) == [mine]
        # Asking for every tenant, or for the other project, changes nothing for a member.
        assert _names(client.get(f"{servers}/detail", params={"all_tenants": "1"})) == [mine]
        other = B if mine == "a-vm" else A
        assert _names(client.get(f"{servers}/detail", params={"project_id": other})) == [mine]

    shown = a.get(f"{servers}/{a_vm}").json()["server"]
    assert (shown["tenant_id"], shown["user_id"]) == (A, member_of(A))
    _not_found(a.get(f"{servers}/{b_vm}"), b_vm)
    _not_found(a.post(f"{servers}/{b_vm}/action", json={"os-stop": None}), b_vm)
    _not_found(a.delete(f"{servers}/{b_vm}"), b_vm)
    # Another project's server is no marker either, exactly like an unknown id.
    marker = a.get(f"{servers}/detail", params={"marker": b_vm})
    unknown = a.get(f"{servers}/detail", params={"marker": "0" * 8})
    assert marker.status_code == unknown.status_code == 400
    live.wait_settled()
    assert live.server(b_vm)["status"] == "ACTIVE"

    assert a.post(f"{servers}/{a_vm}/action", json={"os-stop": None}).status_code == 202
    live.wait_settled()
    assert live.server(a_vm)["status"] == "SHUTOFF"

    # The admin sees its own project by default and every project on request.
    assert _names(live.client.get(f"{servers}/detail")) == []
    everyone = live.client.get(f"{servers}/detail", params={"all_tenants": "1"})
    assert _names(everyone) == ["a-vm", "b-vm"]
    assert {s["tenant_id"] for s in everyone.json()["servers"]} == {A, B}
    only_b = live.client.get(f"{servers}/detail", params={"all_tenants": "1", "project_id": B})
    assert _names(only_b) == ["b-vm"]


def test_members_get_403_on_admin_calls(live: LiveBroker) -> None:
    a = live.member(A)
    for path in ("zones", "zones/local", "policy", "monitor", "monitor/events"):
        r = a.get(f"{live.url}/federator/v1/{path}")
        assert r.status_code == 403, (path, r.text)
        assert r.json()["code"] == "federator.auth.forbidden"
    explain = {"flavor": "m1.small", "image": "cirros"}
    assert a.post(f"{live.url}/federator/v1/policy/explain", json=explain).status_code == 403
    assert a.post(f"{live.url}/federator/v1/policy/reload").status_code == 403
    assert a.get(f"{live.compute}/os-availability-zone/detail").status_code == 403
    for path in ("/compute/v2.1/os-availability-zone", "/compute/v2.1/flavors/detail"):
        assert a.get(f"{live.url}{path}").status_code == 200, path
    assert a.get(f"{live.url}/image/v2/images").status_code == 200
    assert httpx.get(f"{live.url}/federator/v1/health").status_code == 200


def _unauthorized(r: httpx.Response, live: LiveBroker) -> dict[str, Any]:
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"] == f'Keystone uri="{live.url}/identity"'
    body: dict[str, Any] = r.json()
    assert body["code"] == "federator.auth.unauthorized"
    assert body["error"]["code"] == 401
    assert body["request_id"] == r.headers["x-openstack-request-id"]
    return body


def test_missing_expired_and_revoked_tokens_are_refused(live: LiveBroker) -> None:
    servers = f"{live.compute}/servers"
    for call in ("GET /servers", "GET /flavors", "GET /os-availability-zone"):
        r = httpx.get(f"{live.compute}{call.split()[1]}")
        assert "X-Auth-Token" in _unauthorized(r, live)["message"]
    _unauthorized(httpx.get(f"{live.url}/image/v2/images"), live)
    _unauthorized(httpx.get(f"{live.url}/federator/v1/zones"), live)
    _unauthorized(httpx.get(servers, headers={"X-Auth-Token": "not-a-token"}), live)
    _unauthorized(httpx.get(servers, headers={"X-Auth-Token": "x" * 5000}), live)
    # Discovery needs no token.
    for path in ("/", "/compute/v2.1", "/identity", "/identity/v3", "/image", "/openapi.json"):
        assert httpx.get(f"{live.url}{path}").status_code in (200, 300), path

    # Expired: move the broker's clock past the token's lifetime (an hour by default).
    token = {"X-Auth-Token": live.token(member_of(A), A)}
    assert httpx.get(servers, headers=token).status_code == 200
    tokens = live.broker.identity.tokens
    tokens.clock = lambda: utcnow() + timedelta(seconds=3601)
    try:
        _unauthorized(httpx.get(servers, headers=token), live)
        _unauthorized(live.client.get(servers), live)
    finally:
        tokens.clock = utcnow
    assert httpx.get(servers, headers=token).status_code == 200

    # Revoked by the admin, then by its own bearer.
    subject = {"X-Subject-Token": token["X-Auth-Token"]}
    identity = f"{live.url}/identity/v3/auth/tokens"
    assert live.client.delete(identity, headers=subject).status_code == 204
    _unauthorized(httpx.get(servers, headers=token), live)
    assert live.client.get(identity, headers=subject).status_code == 404
    mine = {"X-Auth-Token": live.token(member_of(B), B)}
    own = {**mine, "X-Subject-Token": mine["X-Auth-Token"]}
    assert httpx.delete(identity, headers=own).status_code == 204
    _unauthorized(httpx.get(servers, headers=mine), live)
    # The admin's token was not touched.
    assert live.client.get(servers).status_code == 200


def test_identity_issues_validates_and_revokes_tokens(live: LiveBroker) -> None:
    root = live.url
    versions = httpx.get(f"{root}/identity")
    assert versions.status_code == 300
    (v3,) = versions.json()["versions"]["values"]
    assert (v3["id"], v3["status"]) == ("v3.14", "stable")
    assert v3["links"] == [{"rel": "self", "href": f"{root}/identity/v3/"}]
    assert httpx.get(f"{root}/identity/v3").json()["version"] == v3

    def auth(user: str, password: str, scope: dict[str, Any] | None) -> httpx.Response:
        ident = {"user": {"name": user, "domain": {"id": "default"}, "password": password}}
        body: dict[str, Any] = {"identity": {"methods": ["password"], "password": ident}}
        if scope is not None:
            body["scope"] = scope
        return httpx.post(f"{root}/identity/v3/auth/tokens", json={"auth": body})

    issued = auth(member_of(A), PASSWORD, {"project": {"id": A}})
    assert issued.status_code == 201, issued.text
    token = issued.headers["X-Subject-Token"]
    body = issued.json()["token"]
    assert body["user"]["name"] == member_of(A)
    assert body["user"]["domain"] == {"id": "default", "name": "Default"}
    assert body["project"] == {
        "id": A,
        "name": A,
        "domain": {"id": "default", "name": "Default"},
    }
    assert body["roles"] == [{"id": "member", "name": "member"}]
    assert body["methods"] == ["password"]
    assert body["expires_at"] > body["issued_at"]
    catalog = {s["type"]: s for s in body["catalog"]}
    assert set(catalog) == {
        "identity",
        "compute",
        "image",
        "federation",
        "block-storage",
        "volumev3",
    }
    assert {e["url"] for e in catalog["compute"]["endpoints"]} == {f"{root}/compute/v2.1"}
    # Cinder's endpoint names the project, under both the type and the alias clients use.
    for kind in ("block-storage", "volumev3"):
        assert {e["url"] for e in catalog[kind]["endpoints"]} == {f"{root}/volume/v3/{A}"}
    assert {e["url"] for e in catalog["image"]["endpoints"]} == {f"{root}/image"}
    # Where a parent broker finds this broker's capacity report.
    assert {e["url"] for e in catalog["federation"]["endpoints"]} == {f"{root}/federator/v1"}
    assert {e["interface"] for e in catalog["identity"]["endpoints"]} == {
        "public",
        "internal",
        "admin",
    }
    assert {e["region"] for s in body["catalog"] for e in s["endpoints"]} == {"RegionOne"}
    # No scope: the user's own project.
    assert auth(member_of(A), PASSWORD, None).json()["token"]["project"]["id"] == A

    # Every wrong detail gets the same answer.
    refusals = [
        auth(member_of(A), "wrong-password", None),
        auth("nobody", PASSWORD, None),
        auth(member_of(A), PASSWORD, {"project": {"id": B}}),
        auth(member_of(A), PASSWORD, {"project": {"name": A, "domain": {"name": "Other"}}}),
        httpx.post(
            f"{root}/identity/v3/auth/tokens",
            json={"auth": {"identity": {"methods": ["token"], "token": {"id": token}}}},
        ),
    ]
    messages = {_unauthorized(r, live)["message"] for r in refusals}
    assert messages == {"the credentials are not valid"}

    identity = f"{root}/identity/v3/auth/tokens"
    mine = {"X-Auth-Token": token, "X-Subject-Token": token}
    assert httpx.get(identity, headers=mine).json()["token"]["user"]["name"] == member_of(A)
    assert httpx.head(identity, headers=mine).status_code == 200
    by_admin = live.client.get(identity, headers={"X-Subject-Token": token})
    assert by_admin.status_code == 200
    assert by_admin.headers["X-Subject-Token"] == token
    other = {"X-Auth-Token": live.token(member_of(B), B), "X-Subject-Token": token}
    assert httpx.get(identity, headers=other).status_code == 403
    assert httpx.delete(identity, headers=other).status_code == 403
    assert live.client.get(identity, headers={"X-Subject-Token": "nope"}).status_code == 404


def test_federator_cli_authenticates_with_os_variables(live: LiveBroker) -> None:
    _boot(live, live.member(A), "a-vm")
    _boot(live, live.member(B), "b-vm")
    live.wait_settled()
    runner = CliRunner()
    as_a = live.os_env(member_of(A), A)
    listed = runner.invoke(app, ["server", "list", "--json"], env=as_a)
    assert listed.exit_code == 0, listed.output
    assert "a-vm" in listed.stdout and "b-vm" not in listed.stdout
    # The --os-* options work as the variables do.
    options = [
        *("--os-auth-url", f"{live.url}/identity", "--os-username", member_of(B)),
        *("--os-password", PASSWORD, "--os-project-name", B),
    ]
    as_b = runner.invoke(app, [*options, "server", "list", "--json", "--url", live.url])
    assert as_b.exit_code == 0, as_b.output
    assert "b-vm" in as_b.stdout and "a-vm" not in as_b.stdout

    printed = runner.invoke(app, ["identity", "token"], env=as_a)
    assert printed.exit_code == 0, printed.output
    token = printed.stdout.strip()
    r = httpx.get(f"{live.compute}/servers", headers={"X-Auth-Token": token})
    assert [s["name"] for s in r.json()["servers"]] == ["a-vm"]

    refused = runner.invoke(app, ["server", "list", "--url", live.url])
    assert refused.exit_code == 1
    assert "HTTP 401 federator.auth.unauthorized" in refused.stderr
    assert "admin-openrc" in refused.stderr
    wrong = runner.invoke(app, ["server", "list"], env={**as_a, "OS_PASSWORD": "wrong-one"})
    assert wrong.exit_code == 1
    assert "the credentials are not valid" in wrong.stderr
    assert "wrong-one" not in wrong.output
    forbidden = runner.invoke(app, ["zone", "list"], env=as_a)
    assert forbidden.exit_code == 1
    assert "HTTP 403 federator.auth.forbidden" in forbidden.stderr


def test_openstack_cli_keeps_projects_apart(live: LiveBroker, tmp_path: Path) -> None:
    env_a = openstack_env(live, tmp_path, user=member_of(A), project=A)
    env_b = openstack_env(live, tmp_path, user=member_of(B), project=B)
    admin = openstack_env(live, tmp_path)
    create = ("server", "create", "--image", "cirros", "--flavor", "m1.tiny")
    a_vm = os_json(env_a, *create, "a-vm")
    b_vm = os_json(env_b, *create, "b-vm")
    assert (a_vm["project_id"], b_vm["project_id"]) == (A, B)
    live.wait_settled()

    assert [s["Name"] for s in os_json(env_a, "server", "list")] == ["a-vm"]
    for args in (("show",), ("stop",), ("delete",)):
        refused = run_openstack(env_a, "server", *args, b_vm["id"])
        assert refused.returncode != 0, args
        # Each command words "not found" its own way; none hints that the server exists.
        said = refused.stderr
        assert b_vm["id"] in said and "403" not in said and "orbidden" not in said, said
        assert "No Server found" in said or "No server with a name or ID" in said, said
    live.wait_settled()
    assert live.server(b_vm["id"])["status"] == "ACTIVE"

    everyone = os_json(admin, "server", "list", "--all-projects", "--long")
    assert sorted(s["Name"] for s in everyone) == ["a-vm", "b-vm"]
    # A member's zone list falls back from the admin-only detail to the plain list.
    zones = os_json(env_b, "availability", "zone", "list")
    assert {z["Zone Name"] for z in zones} == {"local", "aws-standin", "sim-cloud-b"}

    wrong = run_openstack({**env_a, "OS_PASSWORD": "wrong-one"}, "server", "list")
    assert wrong.returncode != 0
    assert "401" in wrong.stderr
