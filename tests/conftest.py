"""Shared fixtures: a real broker (SQLite by default, PostgreSQL on request) served by uvicorn
on 127.0.0.1, and the switch that turns missing-component skips into failures in CI.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from federator.api.app import asgi_app
from federator.broker import Broker
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


# --- configuration ---------------------------------------------------------------------


def write_policy(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    return path


def sim_zone(name: str, kind: str, **options: Any) -> dict[str, Any]:
    return {"name": name, "driver": "sim", "kind": kind, "options": options}


def simulated_default_zones() -> list[dict[str, Any]]:
    """The built-in zones with ``aws-standin`` simulated: same names and kinds, no moto."""
    return [
        (simulated_stand_in() if z.name == STAND_IN_ZONE else z).model_dump()
        for z in builtin_zones()
    ]


def make_settings(
    tmp_path: Path,
    *,
    zones: list[dict[str, Any]] | None = None,
    policy: dict[str, Any] | None = None,
    database: dict[str, Any] | None = None,
    embedded: bool = False,
    **overrides: Any,
) -> Settings:
    """Settings for a test broker in ``tmp_path``.

    Without ``zones``, the built-in zones: with ``aws-standin`` simulated, unless
    ``embedded`` asks for the real embedded default (an in-process moto EC2 stand-in,
    which costs about a second per broker).
    """
    data: dict[str, Any] = {"data_dir": tmp_path / "data", "node_id": "test-node"}
    if zones is not None:
        data["zones"] = zones
    elif not embedded:
        data["zones"] = simulated_default_zones()
    if policy is not None:
        data["policy_file"] = write_policy(tmp_path / "policy.json", policy)
    if database is not None:
        data["database"] = database
    data.update(overrides)
    return load_settings(None, **data)


# --- a live broker ---------------------------------------------------------------------


@dataclass
class LiveBroker:
    broker: Broker
    url: str
    client: httpx.Client

    @property
    def compute(self) -> str:
        return f"{self.url}/compute/v2.1"

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


@pytest.fixture
def live_broker_factory() -> Iterator[Callable[[Settings], LiveBroker]]:
    """Start brokers (API + workers + monitor) on 127.0.0.1 with a free port."""
    running: list[tuple[LiveBroker, _Server, threading.Thread]] = []

    def start(settings: Settings, *, monitor: bool = False) -> LiveBroker:
        broker = Broker.open(settings)
        broker.start(monitor=monitor)
        config = uvicorn.Config(
            asgi_app(broker), host="127.0.0.1", port=0, log_config=None, access_log=False
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
        live = LiveBroker(broker, url, httpx.Client(timeout=30))
        running.append((live, server, thread))
        return live

    yield start
    for live, server, thread in reversed(running):
        server.should_exit = True
        thread.join(10)
        live.client.close()
        live.broker.stop()


@pytest.fixture
def live_broker(
    tmp_path: Path, live_broker_factory: Callable[[Settings], LiveBroker]
) -> LiveBroker:
    """A broker on the embedded default configuration (SQLite, default policy), its
    ``aws-standin`` zone simulated (see :func:`make_settings`)."""
    return live_broker_factory(make_settings(tmp_path))
