"""The in-process token cache: a hit reads no database, revocation here is immediate,
revocation elsewhere is bounded by the cache time, expiry is checked on every use."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event

from federator.config import IdentityConfig
from federator.exception import Unauthorized
from federator.identity.model import Directory
from federator.identity.service import IdentityService
from federator.identity.tokens import TokenStore
from federator.storage.db import Database
from tests.conftest import identity_section
from tests.unit.identity.test_service import Clocks, clocks, db, directory, login, service

__all__ = ["clocks", "db"]  # fixtures, imported for pytest


@contextmanager
def statements(database: Database) -> Iterator[list[str]]:
    """Every SQL statement run on ``database`` inside the block."""
    seen: list[str] = []

    def _record(_conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        seen.append(sql)

    event.listen(database.engine, "before_cursor_execute", _record)
    try:
        yield seen
    finally:
        event.remove(database.engine, "before_cursor_execute", _record)


def test_a_token_validated_once_is_answered_from_memory(db: Database, clocks: Clocks) -> None:
    svc = service(db, clocks)
    token = login(svc)
    assert svc.validate_cached(token) is None  # issued, but not yet validated here
    first = svc.validate(token)
    with statements(db) as seen:
        hit = svc.validate_cached(token)
        again = svc.validate(token)
    assert seen == []
    assert hit is not None and hit.audit_id == first.audit_id == again.audit_id
    assert hit.user.name == "project-a-member"


def test_a_revoked_token_is_refused_at_once_in_this_process(db: Database, clocks: Clocks) -> None:
    svc = service(db, clocks)
    token = login(svc)
    caller = svc.validate(token)
    assert svc.validate_cached(token) is not None
    svc.revoke(caller, token, token)
    assert svc.validate_cached(token) is None
    with pytest.raises(Unauthorized):
        svc.validate(token)


def test_a_revocation_elsewhere_counts_once_the_cache_time_is_up(
    db: Database, clocks: Clocks
) -> None:
    here, elsewhere = service(db, clocks), service(db, clocks)
    token = login(here)
    admin = here.validate(login(here, "admin"))
    elsewhere.validate(token)
    here.revoke(admin, "(admin's token)", token)

    clocks.advance(4.9)
    assert elsewhere.validate_cached(token) is not None  # within the 5 s cache time
    clocks.advance(0.1)
    assert elsewhere.validate_cached(token) is None
    with pytest.raises(Unauthorized):
        elsewhere.validate(token)


def test_expiry_is_checked_on_a_cache_hit(db: Database, clocks: Clocks) -> None:
    svc = service(db, clocks)
    token = login(svc)
    clocks.advance(3598)
    svc.validate(token)
    clocks.advance(1)
    assert svc.validate_cached(token) is not None
    clocks.advance(1)  # the token's hour is up, though the cache entry is fresh
    assert svc.validate_cached(token) is None
    with pytest.raises(Unauthorized):
        svc.validate(token)


def test_missing_or_unknown_tokens_never_come_from_memory(db: Database, clocks: Clocks) -> None:
    svc = service(db, clocks)
    for missing in (None, ""):
        with pytest.raises(Unauthorized):
            svc.validate_cached(missing)
    for unknown in ("x" * 600, "not-a-token"):
        assert svc.validate_cached(unknown) is None
        with pytest.raises(Unauthorized):
            svc.validate(unknown)
        assert svc.validate_cached(unknown) is None


def test_a_cache_time_of_zero_reads_the_database_every_time(db: Database, clocks: Clocks) -> None:
    store = TokenStore(db, clock=lambda: clocks.now, cache_seconds=0, monotonic=lambda: clocks.tick)
    svc = IdentityService(directory(), store, ttl_seconds=3600, region="RegionOne")
    token = login(svc)
    svc.validate(token)
    assert svc.validate_cached(token) is None
    with statements(db) as seen:
        svc.validate(token)
    assert seen


def test_a_cached_token_follows_the_directory(db: Database, clocks: Clocks) -> None:
    """The cache holds the stored record only: a user removed from the configuration loses
    a cached token at once."""
    store = TokenStore(db, clock=lambda: clocks.now, cache_seconds=5, monotonic=lambda: clocks.tick)
    before = IdentityService(directory("gone"), store, ttl_seconds=3600, region="RegionOne")
    token = login(before, "gone-member")
    before.validate(token)
    section = identity_section(["gone"])
    section["users"] = [u for u in section["users"] if u["name"] != "gone-member"]
    after = IdentityService(
        Directory.from_config(IdentityConfig(**section)), store, ttl_seconds=3600, region="R"
    )
    with pytest.raises(Unauthorized):
        after.validate_cached(token)
