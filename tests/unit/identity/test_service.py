"""The identity service as plain objects: passwords, scoping, tokens, revocation, caching."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from federator.config import IdentityConfig
from federator.exception import Forbidden, NotFound, Unauthorized
from federator.identity.model import Directory
from federator.identity.passwords import hash_password, verify_password
from federator.identity.service import DomainRef, IdentityService, PasswordAuth
from federator.identity.tokens import TokenStore, digest
from federator.storage import migrate
from federator.storage.db import Database
from federator.storage.models import Token, utcnow
from tests.conftest import PASSWORD, identity_section

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=utcnow().tzinfo)


class Clocks:
    """A wall clock and a monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = NOW
        self.tick = 1000.0

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
        self.tick += seconds


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database("api", f"sqlite:///{tmp_path / 'api.sqlite'}")
    migrate.upgrade(database, "api")
    yield database
    database.dispose()


@pytest.fixture
def clocks() -> Clocks:
    return Clocks()


def directory(*tenants: str) -> Directory:
    return Directory.from_config(IdentityConfig(**identity_section(tenants)))


def service(db: Database, clocks: Clocks, dirs: Directory | None = None) -> IdentityService:
    store = TokenStore(db, clock=lambda: clocks.now, cache_seconds=5, monotonic=lambda: clocks.tick)
    return IdentityService(dirs or directory(), store, ttl_seconds=3600, region="RegionOne")


def login(svc: IdentityService, user: str = "project-a-member") -> str:
    token, _ = svc.authenticate(PasswordAuth(password=PASSWORD, user_name=user))
    return token


def test_passwords_hash_with_argon2id_and_verify() -> None:
    hashed = hash_password("correct horse")
    assert hashed.startswith("$argon2id$")
    assert "correct horse" not in hashed
    assert verify_password(hashed, "correct horse")
    assert not verify_password(hashed, "wrong horse")
    assert not verify_password(None, "correct horse")
    assert not verify_password("not-a-hash", "correct horse")


def test_every_authentication_failure_says_the_same(db: Database, clocks: Clocks) -> None:
    svc = service(db, clocks)
    failures = [
        PasswordAuth(password="wrong", user_name="project-a-member"),
        PasswordAuth(password=PASSWORD, user_name="nobody"),
        PasswordAuth(password=PASSWORD, user_id="project-a-member", user_name="admin"),
        PasswordAuth(password=PASSWORD, user_name="admin", user_domain=DomainRef(name="Other")),
        PasswordAuth(password=PASSWORD, user_name="admin", user_domain=DomainRef(id="other")),
        PasswordAuth(password=PASSWORD, user_name="project-a-member", project_id="project-b"),
        PasswordAuth(password=PASSWORD, user_name="project-a-member", project_name="nowhere"),
        PasswordAuth(
            password=PASSWORD,
            user_name="project-a-member",
            project_name="project-a",
            project_domain=DomainRef(name="Other"),
        ),
        PasswordAuth(password=PASSWORD),
    ]
    messages = set()
    for auth in failures:
        with pytest.raises(Unauthorized) as exc:
            svc.authenticate(auth)
        messages.add(exc.value.message)
    assert messages == {"the credentials are not valid"}


def test_a_token_names_its_user_project_and_roles(db: Database, clocks: Clocks) -> None:
    svc = service(db, clocks)
    token, info = svc.authenticate(
        PasswordAuth(password=PASSWORD, user_id="admin", project_name="admin")
    )
    assert (info.user.name, info.project.id, info.roles, info.is_admin) == (
        "admin",
        "admin",
        ("admin",),
        True,
    )
    assert info.expires_at - info.issued_at == timedelta(hours=1)
    assert svc.validate(token) == info
    member = svc.validate(login(svc))
    assert (member.project.id, member.roles, member.is_admin) == ("project-a", ("member",), False)


def test_only_the_digest_is_stored(db: Database, clocks: Clocks) -> None:
    token = login(service(db, clocks))
    with db.read() as s:
        rows = list(s.scalars(select(Token)))
    assert [r.token_sha256 for r in rows] == [digest(token)]
    assert token not in repr([vars(r) for r in rows])


def test_tokens_expire(db: Database, clocks: Clocks) -> None:
    svc = service(db, clocks)
    token = login(svc)
    clocks.advance(3599)
    svc.validate(token)
    clocks.advance(1)  # expiry is checked on every use, cached or not
    with pytest.raises(Unauthorized):
        svc.validate(token)
    for missing in (None, "", "x" * 600, "not-a-token"):
        with pytest.raises(Unauthorized):
            svc.validate(missing)


def test_revocation_is_immediate_here_and_within_the_cache_time_elsewhere(
    db: Database, clocks: Clocks
) -> None:
    here, elsewhere = service(db, clocks), service(db, clocks)
    token = login(here)
    admin = here.validate(login(here, "admin"))
    elsewhere.validate(token)  # now cached in the other process

    here.revoke(admin, "(admin's token)", token)
    with pytest.raises(Unauthorized):
        here.validate(token)
    elsewhere.validate(token)
    clocks.advance(5)
    with pytest.raises(Unauthorized):
        elsewhere.validate(token)
    with pytest.raises(NotFound):
        here.revoke(admin, "(admin's token)", token)


def test_only_an_admin_or_the_bearer_inspects_or_revokes(db: Database, clocks: Clocks) -> None:
    svc = service(db, clocks)
    a, b = login(svc), login(svc, "project-b-member")
    info_b = svc.validate(b)
    with pytest.raises(Forbidden):
        svc.inspect(info_b, b, a)
    with pytest.raises(Forbidden):
        svc.revoke(info_b, b, a)
    assert svc.inspect(info_b, b, b).user.name == "project-b-member"
    with pytest.raises(NotFound):
        svc.inspect(info_b, b, None)
    svc.revoke(info_b, b, b)
    with pytest.raises(Unauthorized):
        svc.validate(b)
    svc.validate(a)


def test_tokens_follow_the_configuration(db: Database, clocks: Clocks) -> None:
    """A token survives a restart; a user removed, moved or stripped of a role loses it."""
    first = service(db, clocks, directory("gone"))
    kept, gone = login(first), login(first, "gone-member")
    admin = login(first, "admin")

    section = identity_section(["gone"])
    section["users"] = [u for u in section["users"] if u["name"] != "gone-member"]
    for u in section["users"]:
        if u["name"] == "admin":
            u["roles"] = ["member"]
    restarted = service(db, clocks, Directory.from_config(IdentityConfig(**section)))
    assert restarted.validate(kept).user.name == "project-a-member"
    with pytest.raises(Unauthorized):
        restarted.validate(gone)
    with pytest.raises(Unauthorized):  # its only role was admin, and that was taken away
        restarted.validate(admin)


def test_expired_tokens_are_pruned_when_tokens_are_issued(db: Database, clocks: Clocks) -> None:
    svc = service(db, clocks)
    login(svc)
    clocks.advance(7200)
    login(svc)

    def count() -> int:
        with db.read() as s:
            return int(s.scalar(select(func.count()).select_from(Token)) or 0)

    assert count() == 1
