"""The identity service: password authentication scoped to a project, token validation
and revocation.

Every failure to authenticate raises :class:`Unauthorized` with one message, whatever was
wrong (unknown user, wrong password, wrong domain, a project the user is not in), so
answers never reveal which users or projects exist.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from federator.config import Settings
from federator.exception import Forbidden, NotFound, Unauthorized
from federator.identity.model import DOMAIN_ID, DOMAIN_NAME, Directory, TokenInfo, User
from federator.identity.passwords import verify_password
from federator.identity.tokens import TokenRecord, TokenStore
from federator.storage.db import Database

LOG = logging.getLogger(__name__)

BAD_CREDENTIALS = "the credentials are not valid"
NO_TOKEN = "authentication required: send a token in X-Auth-Token (POST /identity/v3/auth/tokens)"
BAD_TOKEN = "the token is not valid: it is unknown, expired or revoked"


@dataclass(frozen=True, slots=True)
class DomainRef:
    id: str | None = None
    name: str | None = None

    def is_default(self) -> bool:
        """Whether this names the one domain there is (an empty reference does too)."""
        if self.id is not None and self.id != DOMAIN_ID:
            return False
        return self.name is None or self.name == DOMAIN_NAME


@dataclass(frozen=True, slots=True)
class PasswordAuth:
    """A password authentication request, with an optional project scope (the user's own
    project when absent)."""

    password: str = field(repr=False)
    user_id: str | None = None
    user_name: str | None = None
    user_domain: DomainRef = DomainRef()
    project_id: str | None = None
    project_name: str | None = None
    project_domain: DomainRef = DomainRef()


class IdentityService:
    def __init__(
        self, directory: Directory, tokens: TokenStore, *, ttl_seconds: int, region: str
    ) -> None:
        self.directory = directory
        self.tokens = tokens
        self.ttl_seconds = ttl_seconds
        self.region = region

    @classmethod
    def from_settings(
        cls, settings: Settings, api: Database, directory: Directory
    ) -> IdentityService:
        ident = settings.identity
        return cls(
            directory,
            TokenStore(api, cache_seconds=ident.token_cache_seconds),
            ttl_seconds=ident.token_ttl_seconds,
            region=ident.region,
        )

    def authenticate(self, auth: PasswordAuth) -> tuple[str, TokenInfo]:
        """Check the password and issue a token for the scoped project.

        :raises Unauthorized: anything at all is wrong (one message for every case).
        """
        user = self._user(auth)
        # Verify even for an unknown user, so both cost the same time.
        if not verify_password(user.password_hash if user else None, auth.password) or not user:
            LOG.info("authentication failed for user %r", auth.user_name or auth.user_id)
            raise Unauthorized(reason=BAD_CREDENTIALS)
        project = self._scope(auth, user)
        if project is None:
            LOG.info("user %s asked for a project it is not in", user.name)
            raise Unauthorized(reason=BAD_CREDENTIALS)
        token, record = self.tokens.issue(
            user.id, user.project_id, sorted(user.roles), self.ttl_seconds
        )
        info = self._info(record)
        assert info is not None  # just issued from the directory
        LOG.debug("token %s issued to %s in project %s", record.audit_id, user.name, project)
        return token, info

    def validate(self, token: str | None) -> TokenInfo:
        """Who ``token`` speaks for.

        :raises Unauthorized: no token, or unknown, expired or revoked, or its user is gone.
        """
        if not token:
            raise Unauthorized(reason=NO_TOKEN)
        record = self.tokens.find(token)
        info = self._info(record) if record is not None else None
        if info is None:
            raise Unauthorized(reason=BAD_TOKEN)
        return info

    def validate_cached(self, token: str | None) -> TokenInfo | None:
        """Who ``token`` speaks for, if this process validated it recently (no database
        read, so callable on the event loop); None when only :meth:`validate` can tell.

        :raises Unauthorized: no token, or a recently validated token whose user, project
            or roles have since gone from the directory.
        """
        if not token:
            raise Unauthorized(reason=NO_TOKEN)
        record = self.tokens.cached(token)
        if record is None:
            return None
        info = self._info(record)
        if info is None:
            raise Unauthorized(reason=BAD_TOKEN)
        return info

    def inspect(self, caller: TokenInfo, caller_token: str, subject: str | None) -> TokenInfo:
        """The token ``subject``, shown to an admin or to its own bearer.

        :raises NotFound: the subject token is not valid (or the caller may not see it).
        """
        if not subject:
            raise NotFound(kind="token", ident="(no X-Subject-Token given)")
        if not caller.is_admin and subject != caller_token:
            raise Forbidden(reason="only an admin may inspect another token")
        record = self.tokens.find(subject)
        info = self._info(record) if record is not None else None
        if info is None:
            raise NotFound(kind="token", ident="given in X-Subject-Token")
        return info

    def revoke(self, caller: TokenInfo, caller_token: str, subject: str | None) -> None:
        """Revoke ``subject``: an admin any token, anyone else only the one they present.

        :raises Forbidden: a non-admin named another token.
        :raises NotFound: the subject token is not valid.
        """
        target = self.inspect(caller, caller_token, subject)
        assert subject is not None
        self.tokens.revoke(subject)
        LOG.info("token %s of user %s revoked", target.audit_id, target.user.name)

    # --- helpers -----------------------------------------------------------------------

    def _user(self, auth: PasswordAuth) -> User | None:
        if not auth.user_domain.is_default():
            return None
        if auth.user_id is not None:
            user = self.directory.users.get(auth.user_id)
            if user is None or (auth.user_name is not None and auth.user_name != user.name):
                return None
            return user
        if auth.user_name is not None:
            return self.directory.user_named(auth.user_name)
        return None

    def _scope(self, auth: PasswordAuth, user: User) -> str | None:
        """The id of the project the token is for, if the user is in it."""
        if auth.project_id is None and auth.project_name is None:
            return user.project_id
        if not auth.project_domain.is_default():
            return None
        if auth.project_id is not None:
            project = self.directory.projects.get(auth.project_id)
        else:
            project = self.directory.project_named(auth.project_name or "")
        if project is None or project.id != user.project_id:
            return None
        return project.id

    def _info(self, record: TokenRecord) -> TokenInfo | None:
        """The token as the directory stands now: a user removed or moved to another project
        loses its tokens, and a role taken away stops counting at once."""
        user = self.directory.users.get(record.user_id)
        if user is None or user.project_id != record.project_id:
            return None
        project = self.directory.projects.get(user.project_id)
        roles = tuple(r for r in record.roles if r in user.roles)
        if project is None or not roles:
            return None
        return TokenInfo(
            user=user,
            project=project,
            roles=roles,
            issued_at=record.issued_at,
            expires_at=record.expires_at,
            audit_id=record.audit_id,
        )
