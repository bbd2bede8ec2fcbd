"""What an authenticated request costs before it does any work: a token this process
validated recently is answered from memory (no token query, no validation in a worker
thread), a revoked one is refused at once, and flavor listings served from their cache
still follow the base URL and the microversion."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from federator.identity.model import TokenInfo
from tests.conftest import LiveBroker, member_of

MEMBER_PROJECT = "project-a"


@contextmanager
def token_queries(live: LiveBroker) -> Iterator[list[str]]:
    """Every statement on the tokens table of the broker's API database inside the block
    (other tables are left out: the monitor and workers run meanwhile)."""
    seen: list[str] = []

    def _record(_conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        if "tokens" in sql:
            seen.append(sql)

    engine = live.broker.identity.tokens.db.engine
    event.listen(engine, "before_cursor_execute", _record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", _record)


@pytest.fixture
def member(live_broker: LiveBroker) -> httpx.Client:
    return live_broker.member(MEMBER_PROJECT)


def test_a_recently_validated_token_costs_no_query_and_no_slow_validation(
    live_broker: LiveBroker, member: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    identity = live_broker.broker.identity
    slow_calls: list[str | None] = []
    slow = identity.validate

    def counted(token: str | None) -> TokenInfo:
        slow_calls.append(token)
        return slow(token)

    monkeypatch.setattr(identity, "validate", counted)
    url = f"{live_broker.compute}/flavors"
    assert member.get(url).status_code == 200  # the first use reads the database
    assert len(slow_calls) == 1
    with token_queries(live_broker) as seen:
        for _ in range(5):
            r = member.get(url)
            assert r.status_code == 200, r.text
    assert seen == []
    assert len(slow_calls) == 1


def test_a_revoked_token_is_refused_at_once(live_broker: LiveBroker) -> None:
    token = live_broker.token(member_of(MEMBER_PROJECT), MEMBER_PROJECT)
    headers = {"X-Auth-Token": token}
    url = f"{live_broker.compute}/flavors"
    assert httpx.get(url, headers=headers).status_code == 200
    assert httpx.get(url, headers=headers).status_code == 200  # now from the cache
    r = httpx.delete(
        f"{live_broker.url}/identity/v3/auth/tokens", headers={**headers, "X-Subject-Token": token}
    )
    assert r.status_code == 204, r.text
    for path in ("/flavors", "/servers"):
        r = httpx.get(f"{live_broker.compute}{path}", headers=headers)
        assert r.status_code == 401, r.text
    # Other tokens of the same user are untouched.
    assert live_broker.member(MEMBER_PROJECT).get(url).status_code == 200


def test_flavor_listings_follow_the_base_url_and_the_microversion(
    live_broker: LiveBroker, member: httpx.Client
) -> None:
    url = f"{live_broker.compute}/flavors"

    def listing(path: str = "", version: str | None = None, host: str | None = None) -> Any:
        headers = {"OpenStack-API-Version": f"compute {version}"} if version else {}
        if host:
            headers["Host"] = host
        r = member.get(url + path, headers=headers)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/json"
        assert r.headers["openstack-api-version"] == f"compute {version or '2.1'}"
        return r.json()["flavors"]

    for _ in range(2):  # built, then served from the cache: the same both times
        plain = listing()
        assert plain and all("description" not in f and "vcpus" not in f for f in plain)
        described = listing(version="2.55")
        assert all(f["description"] is None for f in described)
        detail = listing("/detail")
        assert all("vcpus" in f and "extra_specs" not in f for f in detail)
        detail_61 = listing("/detail", version="2.61")
        assert all(isinstance(f["extra_specs"], dict) for f in detail_61)
        elsewhere = listing(host="api.example.test:8774")
        for f in elsewhere:
            assert f["links"][0]["href"].startswith("http://api.example.test:8774/compute/v2.1/")
        for f in plain:
            assert f["links"][0]["href"].startswith(live_broker.compute + "/")
    names = {f["name"] for f in plain}
    assert names == {f.name for f in live_broker.broker.settings.flavors}
