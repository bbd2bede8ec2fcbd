"""API tokens: random strings, stored only as their SHA-256, with an expiry and a revocation
time, in the API database (so every broker process sharing it accepts them).

A token this process has validated is trusted for ``cache_seconds`` before the database is
read again: expiry is still checked on every use, and a revocation made through this process
takes effect at once; one made through another process within ``cache_seconds``.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from federator.storage.db import Database
from federator.storage.models import Token, utcnow

Clock = Callable[[], datetime]
# Longer strings are refused before hashing: no real token is anywhere near this.
MAX_TOKEN_LENGTH = 512
_CACHE_ENTRIES = 10_000
_PRUNE_EVERY_S = 60.0


@dataclass(frozen=True, slots=True)
class TokenRecord:
    user_id: str
    project_id: str
    roles: tuple[str, ...]
    issued_at: datetime
    expires_at: datetime
    audit_id: str


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _aware(ts: datetime) -> datetime:
    # SQLite hands datetimes back without a zone; every stored time is UTC.
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


class TokenStore:
    """Issue, look up and revoke tokens.

    :param clock: the current time (tests move it to expire tokens).
    :param cache_seconds: how long a validated token is trusted without a database read;
        0 reads the database on every use.
    """

    def __init__(
        self,
        db: Database,
        *,
        clock: Clock = utcnow,
        cache_seconds: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.clock = clock
        self.cache_seconds = cache_seconds
        self._monotonic = monotonic
        self._cache: dict[str, tuple[TokenRecord, float]] = {}
        self._lock = threading.Lock()
        self._next_prune = 0.0

    def issue(
        self, user_id: str, project_id: str, roles: Sequence[str], ttl_seconds: int
    ) -> tuple[str, TokenRecord]:
        """A new token and its record; the token itself is stored nowhere."""
        token = secrets.token_urlsafe(32)
        now = self.clock()
        record = TokenRecord(
            user_id=user_id,
            project_id=project_id,
            roles=tuple(roles),
            issued_at=now,
            expires_at=now + timedelta(seconds=ttl_seconds),
            audit_id=secrets.token_urlsafe(16),
        )
        with self.db.write() as s:
            self._maybe_prune(s, now)
            s.add(
                Token(
                    token_sha256=digest(token),
                    audit_id=record.audit_id,
                    user_id=user_id,
                    project_id=project_id,
                    roles=list(record.roles),
                    issued_at=now,
                    expires_at=record.expires_at,
                    revoked_at=None,
                )
            )
        return token, record

    def cached(self, token: str) -> TokenRecord | None:
        """The record of ``token`` if this process validated it less than ``cache_seconds``
        ago and it has not expired since; None means "not known here" (ask :meth:`find`),
        never "invalid". Reads no database, so it may run on the event loop.
        """
        if len(token) > MAX_TOKEN_LENGTH:
            return None
        hit = self._cache.get(digest(token))
        if hit is None or hit[1] <= self._monotonic() or hit[0].expires_at <= self.clock():
            return None
        return hit[0]

    def find(self, token: str | None) -> TokenRecord | None:
        """The record of ``token`` if it exists, is not revoked and has not expired."""
        if not token or len(token) > MAX_TOKEN_LENGTH:
            return None
        key = digest(token)
        hit = self._cache.get(key)
        if hit is not None and hit[1] > self._monotonic():
            record: TokenRecord | None = hit[0]
        else:
            record = self._load(key)
            if record is None:
                self._cache.pop(key, None)
            elif self.cache_seconds > 0:
                with self._lock:
                    if len(self._cache) >= _CACHE_ENTRIES:
                        self._cache.clear()
                    self._cache[key] = (record, self._monotonic() + self.cache_seconds)
        if record is None or record.expires_at <= self.clock():
            return None
        return record

    def revoke(self, token: str) -> bool:
        """Revoke ``token``; False if it was unknown or already revoked."""
        key = digest(token)
        with self._lock:
            self._cache.pop(key, None)
        with self.db.write() as s:
            result = s.execute(
                update(Token)
                .where(Token.token_sha256 == key, Token.revoked_at.is_(None))
                .values(revoked_at=self.clock())
            )
            revoked: bool = result.rowcount == 1  # type: ignore[attr-defined]
        # Again once committed: a validation that read the row while the update was in
        # flight may have cached it in between.
        with self._lock:
            self._cache.pop(key, None)
        return revoked

    def _load(self, key: str) -> TokenRecord | None:
        with self.db.read() as s:
            row = s.scalars(
                select(Token).where(Token.token_sha256 == key, Token.revoked_at.is_(None))
            ).one_or_none()
            if row is None:
                return None
            return TokenRecord(
                user_id=row.user_id,
                project_id=row.project_id,
                roles=tuple(str(r) for r in row.roles),
                issued_at=_aware(row.issued_at),
                expires_at=_aware(row.expires_at),
                audit_id=row.audit_id,
            )

    def _maybe_prune(self, session: Session, now: datetime) -> None:
        """Delete expired rows, at most once a minute per process."""
        tick = self._monotonic()
        if tick < self._next_prune:
            return
        self._next_prune = tick + _PRUNE_EVERY_S
        session.execute(delete(Token).where(Token.expires_at < now))
