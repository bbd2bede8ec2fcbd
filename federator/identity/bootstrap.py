"""The embedded default's administrator.

With no users in the configuration, the broker creates on first start a user ``admin``
(role admin) in a project ``admin`` with a random password. Only the password's argon2 hash
is kept, in ``<data_dir>/identity.json``; the password itself is written once, to
``<data_dir>/admin-openrc``, a shell file that sets the ``OS_*`` variables the ``openstack``
and ``federator`` clients read. Both files are created 0600 and the log names the file,
never the password. Later starts read ``identity.json`` and point the openrc file at the
address the API listens on.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shlex
from pathlib import Path

from pydantic import ValidationError

from federator.config import IdentityConfig, ProjectConfig, Settings, UserConfig
from federator.exception import ConfigError
from federator.identity.model import ADMIN, DOMAIN_NAME
from federator.identity.passwords import hash_password

LOG = logging.getLogger(__name__)

IDENTITY_FILE = "identity.json"
OPENRC_FILE = "admin-openrc"
IDENTITY_PATH = "/identity"


def identity_config(settings: Settings) -> IdentityConfig:
    """The users and projects in force: the configured ones, else the data directory's,
    created on first start.

    :raises ConfigError: ``identity.json`` exists but is not valid.
    """
    ident = settings.identity
    if ident.users:
        return ident
    path = settings.data_dir / IDENTITY_FILE
    if not path.exists():
        _create_admin(settings)
    elif not (settings.data_dir / OPENRC_FILE).exists():
        LOG.warning(
            "%s exists but %s does not: the admin password is not stored anywhere; delete "
            "%s and restart to create a new one",
            path,
            settings.data_dir / OPENRC_FILE,
            path,
        )
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return ident.model_copy(
            update={
                "projects": [ProjectConfig(**p) for p in doc["projects"]],
                "users": [UserConfig(**u) for u in doc["users"]],
            }
        )
    except (OSError, ValueError, KeyError, TypeError, ValidationError) as exc:
        raise ConfigError(reason=f"{path} is not a valid identity file: {exc}") from exc


def listen_url(host: str, port: int) -> str:
    """The URL a client on this machine uses for an API bound to ``host``:``port``."""
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def point_openrc_at(data_dir: Path, url: str) -> None:
    """Rewrite the openrc file's URLs to ``url`` (the API's root), if the file exists."""
    path = data_dir / OPENRC_FILE
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return
    wanted = {"OS_AUTH_URL": url + IDENTITY_PATH, "FEDERATOR_URL": url}
    changed = False
    for i, line in enumerate(lines):
        for key, value in wanted.items():
            prefix = f"export {key}="
            if line.startswith(prefix) and line != prefix + shlex.quote(value):
                lines[i] = prefix + shlex.quote(value)
                changed = True
    if changed:
        _write_private(path, "\n".join(lines) + "\n")


def render_openrc(url: str, *, username: str, password: str, project: str, region: str) -> str:
    values = {
        "OS_AUTH_URL": url + IDENTITY_PATH,
        "OS_USERNAME": username,
        "OS_PASSWORD": password,
        "OS_PROJECT_NAME": project,
        "OS_USER_DOMAIN_NAME": DOMAIN_NAME,
        "OS_PROJECT_DOMAIN_NAME": DOMAIN_NAME,
        "OS_REGION_NAME": region,
        "OS_IDENTITY_API_VERSION": "3",
        "FEDERATOR_URL": url,
    }
    head = [
        "# Credentials of the federator broker's admin user, created on its first start.",
        "# Keep this file private. Use: source admin-openrc",
    ]
    return "\n".join([*head, *(f"export {k}={shlex.quote(v)}" for k, v in values.items())]) + "\n"


def _create_admin(settings: Settings) -> None:
    password = secrets.token_urlsafe(24)
    doc = {
        "projects": [{"name": ADMIN}],
        "users": [
            {
                "name": ADMIN,
                "password_hash": hash_password(password),
                "project": ADMIN,
                "roles": [ADMIN],
                "domain": DOMAIN_NAME,
            }
        ],
    }
    openrc = settings.data_dir / OPENRC_FILE
    url = listen_url(settings.api.host, settings.api.port)
    # The openrc file first: if the broker stops in between, the next start begins again
    # rather than keep a hash whose password nobody has.
    _write_private(
        openrc,
        render_openrc(
            url, username=ADMIN, password=password, project=ADMIN, region=settings.identity.region
        ),
    )
    _write_private(settings.data_dir / IDENTITY_FILE, json.dumps(doc, indent=2) + "\n")
    LOG.warning(
        "no users are configured: created user %s (role admin) in project %s; "
        "its credentials are in %s",
        ADMIN,
        ADMIN,
        openrc,
    )


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by the owner only, replacing it atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an older file keeps its mode through O_CREAT
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)
