"""Users, projects and roles as the identity service sees them: frozen values built once
from the configuration (or the embedded default's ``identity.json``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from federator.config import IdentityConfig

# One domain, as in a fresh Keystone: id "default", name "Default".
DOMAIN_ID: Final = "default"
DOMAIN_NAME: Final = "Default"
ADMIN: Final = "admin"
MEMBER: Final = "member"
ROLES: Final = (ADMIN, MEMBER)


@dataclass(frozen=True, slots=True)
class Project:
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class User:
    id: str
    name: str
    project_id: str
    roles: frozenset[str]
    password_hash: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Directory:
    """Every project and user, by id and by name."""

    projects: Mapping[str, Project]
    users: Mapping[str, User]

    @classmethod
    def from_config(cls, config: IdentityConfig) -> Directory:
        by_name = {p.name: Project(id=p.project_id, name=p.name) for p in config.projects}
        users = {
            u.user_id: User(
                id=u.user_id,
                name=u.name,
                project_id=by_name[u.project].id,
                roles=frozenset(u.roles),
                password_hash=u.password_hash,
            )
            for u in config.users
        }
        return cls(projects={p.id: p for p in by_name.values()}, users=users)

    def user_named(self, name: str) -> User | None:
        for u in self.users.values():
            if u.name == name:
                return u
        return None

    def project_named(self, name: str) -> Project | None:
        for p in self.projects.values():
            if p.name == name:
                return p
        return None


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """What a valid token says: who, in which project, with which roles, until when."""

    user: User
    project: Project
    roles: tuple[str, ...]
    issued_at: datetime
    expires_at: datetime
    audit_id: str

    @property
    def is_admin(self) -> bool:
        return ADMIN in self.roles
