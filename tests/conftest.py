"""Shared fixtures: a real broker (SQLite by default, PostgreSQL on request) served by uvicorn
on 127.0.0.1, its users, and the switch that turns missing-component skips into failures in CI.

Test brokers have an ``admin`` user (role admin, project ``admin``) and a member user per
test project (``project-a``, ``project-b`` and any ``tenants`` a test names), all with the
password :data:`PASSWORD`. Their hashes are cheap argon2 ones: verifying one takes
microseconds, where the production parameters take tens of milliseconds.

``FEDERATOR_TEST_STRICT=1`` (set by .ci/run) makes ``require()`` fail instead of skip, so a CI
run can never pass by silently skipping the PostgreSQL (or, later, libvirt) tests.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from argon2 import PasswordHasher

from federator.api.app import asgi_app
from federator.broker import Broker
from federator.compute.service import RequestContext
from federator.config import STAND_IN_ZONE, Settings, builtin_zones, load_settings
from federator.embedded import simulated_stand_in

STRICT = os.environ.get("FEDERATOR_TEST_STRICT") == "1"
PG_HOST = os.environ.get("FEDERATOR_TEST_PG_HOST", "127.0.0.1")
PG_PORT = os.environ.get("FEDERATOR_TEST_PG_PORT", "5432")


def require(condition: bool, what: str) -> None:
    """Skip when a component is missing; fail instead under FEDERATOR_TEST_STRICT=1."""
    if condition:
        return
    if STRICT:
        pytest.fail(f"required component missing in strict mode: {what}", pytrace=False)
    pytest.skip(f"needs {what}")


# --- PostgreSQL ------------------------------------------------------------------------


def _pg_admin() -> Any:
    try:
        import psycopg
    except ImportError:
        return None
    try:
        return psycopg.connect(
            f"host={PG_HOST} port={PG_PORT} user=postgres dbname=postgres",
            autocommit=True,
            connect_timeout=3,
        )
    except Exception:
        return None


@pytest.fixture
def pg_database_factory() -> Iterator[Callable[[], str]]:
    """Creates throw-away PostgreSQL databases; returns SQLAlchemy URLs."""
    conn = _pg_admin()
    require(conn is not None, f"PostgreSQL on {PG_HOST}:{PG_PORT} (user postgres, trust auth)")
    created: list[str] = []

    def make() -> str:
        name = f"federator_test_{uuid.uuid4().hex[:12]}"
        conn.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return f"postgresql+psycopg://postgres@{PG_HOST}:{PG_PORT}/{name}"

    yield make
    for name in created:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


# --- users ------------------------------------------------------------------------------

PASSWORD = "test-password"
ADMIN = "admin"
TENANTS = ("project-a", "project-b")
_CHEAP_HASH = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(PASSWORD)
# Who calls the compute service directly (no HTTP): the admin of project "admin".
ADMIN_CONTEXT = RequestContext(project_id=ADMIN, user_id=ADMIN, is_admin=True)


def member_of(project: str) -> str:
    """The name of the member user of a test project."""
    return f"{project}-member"


def identity_section(tenants: tuple[str, ...] | list[str] = ()) -> dict[str, Any]:
    """The [identity] section of a test broker: the admin and one member per project."""
    projects = [ADMIN, *dict.fromkeys([*TENANTS, *tenants])]
    users = [{"name": ADMIN, "password_hash": _CHEAP_HASH, "project": ADMIN, "roles": ["admin"]}]
    users += [
        {"name": member_of(p), "password_hash": _CHEAP_HASH, "project": p, "roles": ["member"]}
        for p in projects[1:]
    ]
    return {"projects": [{"name": p} for p in projects], "users": users}


def read_openrc(path: Path) -> dict[str, str]:
    """The variables an openrc file exports."""
    import shlex

    found: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("export "):
            key, _, value = line.removeprefix("export ").partition("=")
            found[key] = shlex.split(value)[0] if value else ""
    return found


def issue_token(url: str, user: str, password: str, project: str | None = None) -> str:
    """A token from the broker at ``url`` (its root) for ``user`` in ``project``."""
    body: dict[str, Any] = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {"name": user, "domain": {"name": "Default"}, "password": password}
                },
            }
        }
    }
    if project is not None:
        body["auth"]["scope"] = {"project": {"name": project, "domain": {"name": "Default"}}}
    r = httpx.post(f"{url}/identity/v3/auth/tokens", json=body, timeout=30)
    assert r.status_code == 201, r.text
    return r.headers["X-Subject-Token"]


def admin_headers(url: str, data_dir: Path | None = None) -> dict[str, str]:
    """``X-Auth-Token`` of the admin of the broker at ``url``: the test admin, or with
    ``data_dir``, the embedded default's admin from its openrc file."""
    password = PASSWORD
    if data_dir is not None and (data_dir / "admin-openrc").exists():
        password = read_openrc(data_dir / "admin-openrc")["OS_PASSWORD"]
    return {"X-Auth-Token": issue_token(url, ADMIN, password, ADMIN)}


# --- configuration ---------------------------------------------------------------------


def write_policy(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    return path


def sim_zone(name: str, kind: str, *, aggregate: bool = True, **options: Any) -> dict[str, Any]:
    """A sim zone. A local one declares an aggregate of its name holding all its hosts, so
    they take instances from the start; ``aggregate=False`` leaves them in none."""
    zone: dict[str, Any] = {"name": name, "driver": "sim", "kind": kind, "options": options}
    if kind == "local" and aggregate:
        zone["aggregates"] = [{"name": name, "hosts": ["*"]}]
    return zone


def simulated_default_zones() -> list[dict[str, Any]]:
    """The built-in zones with ``aws-standin`` simulated: same names and kinds, no moto."""
    return [
        (simulated_stand_in() if z.name == STAND_IN_ZONE else z).model_dump()
        for z in builtin_zones()
    ]


def make_settings(tmp_path: Path, **options: Any) -> Settings:
    """Settings for a test broker in ``tmp_path``; ``options`` as for :func:`settings_data`."""
    return load_settings(None, **settings_data(tmp_path, **options))


def settings_data(
    tmp_path: Path,
    *,
    zones: list[dict[str, Any]] | None = None,
    policy: dict[str, Any] | None = None,
    database: dict[str, Any] | None = None,
    embedded: bool = False,
    tenants: tuple[str, ...] | list[str] = (),
    users: bool = True,
    **overrides: Any,
) -> dict[str, Any]:
    """The configuration of a test broker in ``tmp_path``, as data.

    Without ``zones``, the built-in zones: with ``aws-standin`` simulated, unless
    ``embedded`` asks for the real embedded default (an in-process moto EC2 stand-in,
    which costs about a second per broker). The test users (see :func:`identity_section`),
    plus a member of each of ``tenants``; ``users=False`` leaves identity to the embedded
    default (an admin created on first start, its password in ``data/admin-openrc``).
    ``overrides`` are further top-level settings.
    """
    data: dict[str, Any] = {"data_dir": tmp_path / "data", "node_id": "test-node"}
    if users:
        data["identity"] = identity_section(tenants)
    if zones is not None:
        data["zones"] = zones
    elif not embedded:
        data["zones"] = simulated_default_zones()
    if policy is not None:
        data["policy_file"] = write_policy(tmp_path / "policy.json", policy)
    if database is not None:
        data["database"] = database
    data.update(overrides)
    return data


def write_config(path: Path, data: dict[str, Any]) -> Path:
    """Write ``data`` (as :func:`settings_data` returns it) as a broker's TOML file."""
    import tomli_w

    def plain(value: Any) -> Any:
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items() if v is not None}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    path.write_text(tomli_w.dumps(plain(data)), encoding="utf-8")
    return path


# --- a live broker ---------------------------------------------------------------------


@dataclass
class LiveBroker:
    """A running broker. ``client`` carries a token of the admin user."""

    broker: Broker
    url: str
    client: httpx.Client
    admin_password: str = PASSWORD
    _members: dict[str, httpx.Client] = field(default_factory=dict)

    @property
    def compute(self) -> str:
        return f"{self.url}/compute/v2.1"

    @property
    def auth_headers(self) -> dict[str, str]:
        """The admin's ``X-Auth-Token`` header."""
        return {"X-Auth-Token": self.client.headers["X-Auth-Token"]}

    def token(self, user: str = ADMIN, project: str | None = None) -> str:
        password = self.admin_password if user == ADMIN else PASSWORD
        return issue_token(self.url, user, password, project)

    def member(self, project: str) -> httpx.Client:
        """An HTTP client with a token of the member of ``project`` (a test project)."""
        if project not in self._members:
            token = self.token(member_of(project), project)
            self._members[project] = httpx.Client(timeout=30, headers={"X-Auth-Token": token})
        return self._members[project]

    def os_env(self, user: str = ADMIN, project: str = ADMIN) -> dict[str, str]:
        """The OS_* variables that make the ``openstack`` and ``federator`` clients act as
        ``user`` in ``project``."""
        return {
            "OS_AUTH_URL": f"{self.url}/identity",
            "OS_USERNAME": user,
            "OS_PASSWORD": self.admin_password if user == ADMIN else PASSWORD,
            "OS_PROJECT_NAME": project,
            "OS_USER_DOMAIN_NAME": "Default",
            "OS_PROJECT_DOMAIN_NAME": "Default",
            "OS_REGION_NAME": "RegionOne",
            "OS_IDENTITY_API_VERSION": "3",
            "FEDERATOR_URL": self.url,
        }

    def sdk(self, user: str = ADMIN, project: str = ADMIN) -> Any:
        """An openstacksdk connection to this broker as ``user`` in ``project``."""
        openstack = pytest.importorskip("openstack")
        env = self.os_env(user, project)
        return openstack.connect(
            auth_url=env["OS_AUTH_URL"],
            username=env["OS_USERNAME"],
            password=env["OS_PASSWORD"],
            project_name=env["OS_PROJECT_NAME"],
            user_domain_name="Default",
            project_domain_name="Default",
            region_name="RegionOne",
        )

    def close(self) -> None:
        for c in [self.client, *self._members.values()]:
            c.close()

    def boot(
        self, name: str = "vm", flavor: str = "m1.small", image: str = "cirros", **extra: Any
    ) -> str:
        body = {"server": {"name": name, "flavorRef": flavor, "imageRef": image, **extra}}
        r = self.client.post(f"{self.compute}/servers", json=body)
        assert r.status_code == 202, r.text
        sid: str = r.json()["server"]["id"]
        return sid

    def server(self, sid: str) -> dict[str, Any]:
        r = self.client.get(f"{self.compute}/servers/{sid}")
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()["server"]
        return body

    def wait_settled(self, timeout: float = 60.0) -> None:
        """Block until the task queue is empty (every accepted request has ended)."""
        deadline = time.monotonic() + timeout
        while self.broker.queue.pending():
            if time.monotonic() > deadline:
                raise AssertionError(f"tasks still pending after {timeout}s")
            time.sleep(0.02)

    def wait_status(self, sid: str, status: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            srv = self.server(sid)
            if srv["status"] == status and not srv["OS-EXT-STS:task_state"]:
                return srv
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{sid} is {srv['status']}/{srv['OS-EXT-STS:task_state']}, wanted {status}"
                )
            time.sleep(0.02)


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # the test process keeps its own handlers
        pass


def start_live_broker(
    settings: Settings, *, monitor: bool = False
) -> tuple[LiveBroker, Callable[[], None]]:
    """Start a broker (API + workers, optionally the monitor) on 127.0.0.1 with a free
    port; returns it with the function that stops it."""
    broker = Broker.open(settings)
    broker.start(monitor=monitor)
    config = uvicorn.Config(
        asgi_app(broker),
        host="127.0.0.1",
        port=0,
        log_config=None,
        access_log=False,
        timeout_keep_alive=settings.api.keep_alive_seconds,
    )
    server = _Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    password = PASSWORD
    if not settings.identity.users:
        password = read_openrc(settings.data_dir / "admin-openrc")["OS_PASSWORD"]
    token = issue_token(url, ADMIN, password, ADMIN)
    client = httpx.Client(timeout=30, headers={"X-Auth-Token": token})
    live = LiveBroker(broker, url, client, admin_password=password)

    def stop() -> None:
        server.should_exit = True
        thread.join(10)
        live.close()
        live.broker.stop()

    return live, stop


@pytest.fixture
def live_broker_factory() -> Iterator[Callable[[Settings], LiveBroker]]:
    """Start brokers (API + workers + monitor) on 127.0.0.1 with a free port."""
    stops: list[Callable[[], None]] = []

    def start(settings: Settings, *, monitor: bool = False) -> LiveBroker:
        live, stop = start_live_broker(settings, monitor=monitor)
        stops.append(stop)
        return live

    yield start
    for stop in reversed(stops):
        stop()


@pytest.fixture
def live_broker(
    tmp_path: Path, live_broker_factory: Callable[[Settings], LiveBroker]
) -> LiveBroker:
    """A broker on the embedded default configuration (SQLite, default policy), its
    ``aws-standin`` zone simulated (see :func:`make_settings`)."""
    return live_broker_factory(make_settings(tmp_path))
