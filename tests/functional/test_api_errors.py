"""Bad requests answer with a JSON error naming the problem, and change nothing."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from federator.config import Settings
from tests.conftest import LiveBroker, make_settings
from tests.functional.support import all_servers, boot_settled

Factory = Callable[[Settings], LiveBroker]
ERROR_KEYS = {"status", "code", "title", "message", "request_id"}


def _server(**fields: Any) -> dict[str, Any]:
    return {"name": "vm", "flavorRef": "m1.small", "imageRef": "cirros", **fields}


def _without(key: str) -> dict[str, Any]:
    body = _server()
    del body[key]
    return {"server": body}


def check_error(r: httpx.Response, status: int) -> dict[str, Any]:
    """The shared error shape: JSON, no stack trace, the request id in body and header."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = r.json()
    assert set(body) >= ERROR_KEYS, body
    assert body["status"] == status
    assert body["code"].startswith("federator.")
    assert body["title"]
    assert body["message"]
    assert body["request_id"].startswith("req-")
    assert r.headers["x-openstack-request-id"] == body["request_id"]
    assert "Traceback" not in r.text
    assert 'File "' not in r.text
    return body


@pytest.fixture
def one_server(live_broker: LiveBroker) -> LiveBroker:
    """A broker holding one ACTIVE server, so 'nothing changed' is a real check."""
    assert boot_settled(live_broker, "existing")["status"] == "ACTIVE"
    return live_broker


# (case id, body, the field the answer must name)
BAD_BOOTS: list[tuple[str, Any, str]] = [
    ("missing-name", _without("name"), "server.name"),
    ("long-name", {"server": _server(name="x" * 256)}, "server.name"),
    ("list-body", [_server()], "body"),
    ("no-server", {"name": "vm"}, "server"),
    ("max-count-type", {"server": _server(max_count="x")}, "server.max_count"),
    ("unknown-field", {"server": _server(colour="blue")}, "server.colour"),
    ("unknown-flavor", {"server": _server(flavorRef="m9.huge")}, "server.flavorRef"),
    ("unknown-image", {"server": _server(imageRef="plan9")}, "server.imageRef"),
    ("unknown-az", {"server": _server(availability_zone="atlantis")}, "server.availability_zone"),
    ("min-over-max", {"server": _server(min_count=3, max_count=2)}, "server.min_count"),
    ("zero-count", {"server": _server(min_count=0)}, "server.min_count"),
    ("nul-in-name", {"server": _server(name="a\u0000b")}, "server.name"),
    ("newline-in-name", {"server": _server(name="a\nb")}, "server.name"),
]


@pytest.mark.parametrize(
    ("body", "field"), [c[1:] for c in BAD_BOOTS], ids=[c[0] for c in BAD_BOOTS]
)
def test_bad_boot_is_refused_and_changes_nothing(
    one_server: LiveBroker, body: Any, field: str
) -> None:
    live = one_server
    r = live.client.post(f"{live.compute}/servers", json=body)
    error = check_error(r, 400)
    assert error["code"] == "federator.request.invalid"
    assert field in [p["field"] for p in error.get("problems", [])], error
    assert error["badRequest"]["message"] == error["message"]
    live.wait_settled()
    assert len(all_servers(live)) == 1


# Nova answers these 400 with a message naming the reference it could not resolve.
UNRESOLVED: list[tuple[str, dict[str, Any], str]] = [
    ("flavor", {"flavorRef": "m9.huge"}, "m9.huge"),
    ("image", {"imageRef": "plan9"}, "plan9"),
    ("availability-zone", {"availability_zone": "atlantis"}, "atlantis"),
    ("name-length", {"name": "x" * 256}, "255"),
]


@pytest.mark.parametrize(
    ("fields", "named"), [c[1:] for c in UNRESOLVED], ids=[c[0] for c in UNRESOLVED]
)
def test_refusal_names_what_is_wrong(
    one_server: LiveBroker, fields: dict[str, Any], named: str
) -> None:
    live = one_server
    r = live.client.post(f"{live.compute}/servers", json={"server": _server(**fields)})
    error = check_error(r, 400)
    assert named in error["message"], error["message"]


def test_non_json_body(one_server: LiveBroker) -> None:
    live = one_server
    r = live.client.post(
        f"{live.compute}/servers",
        content=b'{"server": {"name": "vm",',
        headers={"content-type": "application/json"},
    )
    error = check_error(r, 400)
    assert [p["field"] for p in error["problems"]] == ["body"]
    assert "not valid JSON" in error["message"]
    live.wait_settled()
    assert len(all_servers(live)) == 1


def test_undecodable_body(one_server: LiveBroker) -> None:
    live = one_server
    r = live.client.post(
        f"{live.compute}/servers",
        content=b'{"server": {"name": "\xff"}}',
        headers={"content-type": "application/json"},
    )
    error = check_error(r, 400)
    assert error["title"] == "Bad request"
    assert [p["field"] for p in error["problems"]] == ["body"]
    assert len(all_servers(live)) == 1


@pytest.mark.parametrize(
    ("query", "field"),
    [("limit=-1", "query.limit"), ("limit=x", "query.limit"), ("marker=nope", "marker")],
)
def test_bad_list_query(one_server: LiveBroker, query: str, field: str) -> None:
    r = one_server.client.get(f"{one_server.compute}/servers?{query}")
    error = check_error(r, 400)
    assert [p["field"] for p in error["problems"]] == [field]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def any_backend(
    request: pytest.FixtureRequest, tmp_path: Path, live_broker_factory: Factory
) -> LiveBroker:
    database = None
    if request.param == "postgresql":
        make_pg: Callable[[], str] = request.getfixturevalue("pg_database_factory")
        database = {"api_url": make_pg(), "cell0_url": make_pg(), "cells": {"cell1": make_pg()}}
    return live_broker_factory(make_settings(tmp_path, database=database))


def test_nul_bytes_are_refused(any_backend: LiveBroker) -> None:
    """PostgreSQL cannot hold NUL in text: such input is refused at the edge, never a 500."""
    live = any_backend
    sid = live.boot("ok", metadata={"k\u0000": "v\u0000"})
    live.wait_settled()
    assert live.server(sid)["metadata"] == {"k\u0000": "v\u0000"}
    for path in ("/servers/%00", "/servers/detail?name=a%00", "/servers?marker=%00"):
        error = check_error(live.client.get(f"{live.compute}{path}"), 400)
        assert "NUL" in error["message"]
    check_error(
        live.client.post(f"{live.compute}/servers/a%00b/action", json={"os-start": None}), 400
    )
    r = live.client.post(f"{live.compute}/servers", json={"server": _server(name="a\u0000")})
    assert "server.name" in [p["field"] for p in check_error(r, 400)["problems"]]
    assert [s["id"] for s in all_servers(live)] == [sid]


@pytest.mark.parametrize(
    "body", [{}, {"os-start": None, "os-stop": None}], ids=["no-action", "two-actions"]
)
def test_action_needs_exactly_one(one_server: LiveBroker, body: dict[str, Any]) -> None:
    live = one_server
    sid = all_servers(live)[0]["id"]
    r = live.client.post(f"{live.compute}/servers/{sid}/action", json=body)
    error = check_error(r, 400)
    assert "exactly one action" in error["message"]
    live.wait_settled()
    assert live.server(sid)["status"] == "ACTIVE"


@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "chunked"])
def test_oversized_body_is_refused(one_server: LiveBroker, streamed: bool) -> None:
    live = one_server
    huge = json.dumps({"server": _server(description="x" * (10 * 1024 * 1024))}).encode()
    # Chunked, the body has no declared length: the limit must be enforced while reading.
    content = (huge[i : i + 65536] for i in range(0, len(huge), 65536)) if streamed else huge
    r = live.client.post(
        f"{live.compute}/servers", content=content, headers={"content-type": "application/json"}
    )
    error = check_error(r, 413)
    assert error["code"] == "federator.request.too_large"
    assert str(live.broker.settings.api.max_body_bytes) in error["message"]
    assert len(all_servers(live)) == 1


def test_unknown_server_and_route(live_broker: LiveBroker) -> None:
    r = live_broker.client.get(
        f"{live_broker.compute}/servers/00000000-0000-0000-0000-000000000000"
    )
    error = check_error(r, 404)
    assert error["code"] == "federator.resource.not_found"
    assert "00000000-0000-0000-0000-000000000000" in error["message"]
    assert error["itemNotFound"]["code"] == 404
    for method, path in (
        ("DELETE", "/compute/v2.1/servers/nope"),
        ("POST", "/compute/v2.1/servers/nope/action"),
        ("GET", "/compute/v2.1/no-such-thing"),
        ("GET", "/nowhere"),
    ):
        body = {"os-start": None} if method == "POST" else None
        r = live_broker.client.request(method, f"{live_broker.url}{path}", json=body)
        error = check_error(r, 404)
        assert error["code"] == "federator.resource.not_found"


def test_request_ids_differ(live_broker: LiveBroker) -> None:
    url = f"{live_broker.compute}/servers/missing"
    ids = {check_error(live_broker.client.get(url), 404)["request_id"] for _ in range(3)}
    assert len(ids) == 3


def test_openapi_document(live_broker: LiveBroker) -> None:
    r = live_broker.client.get(f"{live_broker.url}/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.")
    assert "/compute/v2.1/servers" in doc["paths"]
    assert {"get", "post"} <= set(doc["paths"]["/compute/v2.1/servers"])
    assert "/federator/v1/policy/reload" in doc["paths"]


@pytest.mark.postgres
def test_a_lost_database_answers_503_without_leaking_its_address(
    tmp_path: Path,
    live_broker_factory: Factory,
    pg_database_factory: Callable[[], str],
) -> None:
    from tests.conftest import _pg_admin

    cell1 = pg_database_factory()
    database = {
        "api_url": pg_database_factory(),
        "cell0_url": pg_database_factory(),
        "cells": {"cell1": cell1},
    }
    live = live_broker_factory(make_settings(tmp_path, database=database))
    assert boot_settled(live, "existing")["status"] == "ACTIVE"
    admin = _pg_admin()
    assert admin is not None
    name = cell1.rsplit("/", 1)[1]
    admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    admin.close()
    r = live.client.get(f"{live.compute}/servers/detail")
    error = check_error(r, 503)
    assert error["code"] == "federator.storage.unavailable"
    assert r.headers["retry-after"] == "5"
    assert name not in r.text and "postgresql" not in r.text
    # The API database still answers: the broker stays up and says which part failed.
    assert live.client.get(f"{live.compute}/flavors").status_code == 200


@pytest.mark.parametrize("action", ["pause", "unpause", "suspend", "resume"])
def test_pause_and_suspend_where_the_zone_cannot(one_server: LiveBroker, action: str) -> None:
    live = one_server
    sid = all_servers(live)[0]["id"]
    r = live.client.post(f"{live.compute}/servers/{sid}/action", json={action: None})
    error = check_error(r, 409)
    if action in ("pause", "suspend"):  # allowed from ACTIVE, but the sim zone cannot
        assert "does not support pause and suspend" in error["message"], error
    else:  # unpause needs PAUSED, resume SUSPENDED
        assert "while it is ACTIVE" in error["message"], error
    live.wait_settled()
    srv = live.server(sid)
    assert (srv["status"], srv["OS-EXT-STS:task_state"]) == ("ACTIVE", None)
