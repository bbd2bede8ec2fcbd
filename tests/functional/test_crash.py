"""Stopping ``federator serve`` in the middle of a burst of boots, then starting it again.

Whatever moment the process dies at (SIGKILL) or is asked to stop (SIGTERM), after the
restart every accepted request ends ACTIVE or ERROR, none stays in BUILD or goes missing,
the capacity claimed on every host and zone is exactly what the instances use, and the
simulated clouds hold exactly the instances the broker placed: no orphans, none lost.

Capacity is 80 m1.small (a local zone of 4 hosts x 12, then cloud-a with a quota of 32),
so a leaked claim would show up as fewer than 80 ACTIVE.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from federator.broker import Broker, Databases
from federator.compute.service import BootRequest
from federator.config import Settings, load_settings
from federator.plugins import load_driver
from federator.storage.models import Task
from tests.conftest import ADMIN_CONTEXT, make_settings, sim_zone
from tests.daemon import Daemon, tail
from tests.functional.capacity import (
    COMPUTE,
    Answer,
    boot_concurrently,
    check_drivers,
    check_ledger,
    list_servers,
)

pytestmark = pytest.mark.slow

BOOTS = 100
CAPACITY = 4 * 12 + 32
WORKERS = 4
BOOT_DELAY_MS = 40  # 4 workers finish at most ~100 boots/s: a kill lands mid-burst

POLICY: dict[str, Any] = {
    "version": "crash.1",
    "weighing": "pack",
    "zones": {"local": {"overflow": ["cloud-a"]}, "cloud-a": {"quota": {"instances": 32}}},
    "rules": [],
}

CONFIG = """\
data_dir = {data_dir}
node_id = "crash-node"
policy_file = {policy_file}
log_level = "INFO"

[workers]
count = {workers}
poll_interval = 0.2

[[zones]]
name = "local"
driver = "sim"
kind = "local"
[zones.options]
hosts = 4
host_ram_mb = 12288
boot_delay_ms = {delay}
[[zones.aggregates]]
name = "local"
hosts = ["*"]

[[zones]]
name = "cloud-a"
driver = "sim"
kind = "virtual"
[zones.options]
hosts = 4
host_ram_mb = 16384
host_vcpus = 16
expose_hosts = false
boot_delay_ms = {delay}
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(POLICY), encoding="utf-8")
    path = tmp_path / "federator.toml"
    path.write_text(
        CONFIG.format(
            data_dir=json.dumps(str(tmp_path / "data")),
            policy_file=json.dumps(str(policy)),
            workers=WORKERS,
            delay=BOOT_DELAY_MS,
        ),
        encoding="utf-8",
    )
    return path


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    """Every daemon a test starts; any still running at the end is killed."""
    started: list[Daemon] = []
    yield started
    for d in started:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait(10)


def _count(client: httpx.Client, url: str, status: str) -> int:
    r = client.get(f"{url}{COMPUTE}/servers/detail", params={"status": status, "all_tenants": "1"})
    assert r.status_code == 200, r.text
    return len(r.json()["servers"])


def _burst_then_stop(daemon: Daemon, sig: signal.Signals, finished: int) -> list[Answer]:
    """Fire BOOTS boots; send ``sig`` once ``finished`` of them are ACTIVE.

    The boots are sent from a background thread, so the signal may land while requests
    are still arriving: answers lost that way are simply not counted as accepted.
    """
    answers: list[Answer] = []
    sender = threading.Thread(
        target=lambda: answers.extend(
            boot_concurrently(daemon.url, BOOTS, clients=16, headers=daemon.headers)
        ),
        daemon=True,
    )
    sender.start()
    deadline = time.monotonic() + 30
    with httpx.Client(timeout=10, headers=daemon.headers) as client:
        while _count(client, daemon.url, "ACTIVE") < finished:
            assert time.monotonic() < deadline, "the burst did not progress"
            time.sleep(0.01)
    daemon.proc.send_signal(sig)
    sender.join(60)
    assert not sender.is_alive()
    return answers


def _unfinished(settings: Settings) -> tuple[int, int]:
    """(running, queued) tasks in the stopped broker's database."""
    dbs = Databases.from_settings(settings)
    try:
        with dbs.api.read() as s:
            rows = dict(s.execute(select(Task.state, func.count()).group_by(Task.state)).all())
    finally:
        dbs.dispose()
    return rows.get("running", 0), rows.get("queued", 0)


def _wait_no_build(daemon: Daemon, timeout: float = 45) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=10, headers=daemon.headers) as client:
        while True:
            servers = list_servers(client, daemon.url)
            building = [s["id"] for s in servers.values() if s["status"] == "BUILD"]
            if not building:
                return servers
            assert time.monotonic() < deadline, f"{len(building)} still in BUILD"
            time.sleep(0.1)


def _check_settled(
    settings: Settings, accepted: set[str], servers: dict[str, dict[str, Any]]
) -> None:
    missing = accepted - set(servers)
    assert not missing, f"{len(missing)} accepted request(s) were lost: {sorted(missing)[:5]}"
    statuses = Counter(s["status"] for s in servers.values())
    assert set(statuses) <= {"ACTIVE", "ERROR"}, statuses
    # An answer cut off by the signal may still have been accepted: extra servers are fine,
    # as long as they too ended. With no leaked claims, capacity is used to the last slot.
    assert statuses["ACTIVE"] == min(CAPACITY, len(servers)), statuses
    for srv in servers.values():
        if srv["status"] == "ERROR":
            assert srv["federator:fault"]["reason"] == "no_valid_host", srv["federator:fault"]

    dbs = Databases.from_settings(settings)
    drivers = {
        z.name: load_driver(z, settings.broker_id, settings.data_dir) for z in settings.zones
    }
    try:
        ledger = check_ledger(dbs)
        assert set(ledger.placed) | set(ledger.buried) == set(servers)
        check_drivers(ledger, drivers)
    finally:
        for d in drivers.values():
            d.close()
        dbs.dispose()


@pytest.mark.parametrize("finished", [1, 30, 55], ids=lambda n: f"after-{n}-active")
def test_sigkill_mid_burst_then_restart_loses_and_leaks_nothing(
    tmp_path: Path, config: Path, daemons: list[Daemon], finished: int
) -> None:
    settings = load_settings(config)
    daemons.append(Daemon.start(config, tmp_path, 1))
    answers = _burst_then_stop(daemons[0], signal.SIGKILL, finished)
    assert daemons[0].proc.wait(10) == -signal.SIGKILL
    accepted = {a.server_id for a in answers if a.status == 202 and a.server_id}
    assert accepted, "no boot was accepted before the kill"
    running, queued = _unfinished(settings)
    assert running + queued > 0, "the kill landed after the burst had finished"

    daemons.append(Daemon.start(config, tmp_path, 2))
    servers = _wait_no_build(daemons[1])
    assert daemons[1].stop(signal.SIGTERM) == 0, tail(daemons[1].log)
    assert _unfinished(settings) == (0, 0)
    _check_settled(settings, accepted, servers)


def test_sigterm_mid_burst_drains_exits_zero_and_restart_settles(
    tmp_path: Path, config: Path, daemons: list[Daemon]
) -> None:
    settings = load_settings(config)
    daemons.append(Daemon.start(config, tmp_path, 1))
    answers = _burst_then_stop(daemons[0], signal.SIGTERM, 30)
    assert daemons[0].proc.wait(40) == 0, tail(daemons[0].log)
    accepted = {a.server_id for a in answers if a.status == 202 and a.server_id}
    running, _queued = _unfinished(settings)
    assert running == 0, "a graceful stop must finish the tasks it started"

    daemons.append(Daemon.start(config, tmp_path, 2))
    servers = _wait_no_build(daemons[1])
    assert daemons[1].stop(signal.SIGTERM) == 0, tail(daemons[1].log)
    assert _unfinished(settings) == (0, 0)
    _check_settled(settings, accepted, servers)


# --- every step of the boot flow, deterministically ---------------------------------------


class Crash(BaseException):
    """Stands for the process dying: nothing catches it, so the worker thread just ends
    with its task still marked running, as after a SIGKILL."""


def _crash(*_args: Any, **_kwargs: Any) -> Any:
    raise Crash


def _crash_after(fn: Any) -> Any:
    def run(*args: Any, **kwargs: Any) -> Any:
        fn(*args, **kwargs)
        raise Crash

    return run


def _one_host(tmp_path: Path, host_ram_mb: int) -> Settings:
    return make_settings(
        tmp_path,
        zones=[sim_zone("local", "local", hosts=1, host_ram_mb=host_ram_mb)],
        policy={"version": "crash-points.1", "zones": {}, "rules": []},
        workers={"count": 1, "poll_interval": 0.1},
    )


@pytest.mark.parametrize("step", ["claimed", "created", "recorded", "buried"])
def test_a_build_interrupted_after_any_step_resumes_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    """claimed: capacity claimed, driver not called; created: the driver made it, no record
    yet; recorded: the cell record is written, not mapped; buried: the cell0 record is
    written, not mapped (and a restart with more room must not place it after all)."""
    # m1.large (8 GB) cannot fit a 4 GB host: that request is buried in cell0.
    flavor, ram = ("m1.large", 4096) if step == "buried" else ("m1.small", 8192)
    settings = _one_host(tmp_path, ram)
    died = threading.Event()
    default_hook = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if isinstance(args.exc_value, Crash):
            died.set()
        else:
            default_hook(args)

    monkeypatch.setattr(threading, "excepthook", hook)
    broker = Broker.open(settings)
    try:
        driver = broker.drivers["local"]
        if step == "claimed":
            monkeypatch.setattr(driver, "create", _crash)
        elif step == "created":
            monkeypatch.setattr(driver, "create", _crash_after(driver.create))
        else:
            monkeypatch.setattr(broker.workers.builder, "_map", _crash)
        broker.start(monitor=False)
        [view] = broker.compute.boot(
            ADMIN_CONTEXT, BootRequest(name="vm", flavor_ref=flavor, image_ref="cirros")
        )
        assert died.wait(10), "the build did not reach the crash point"
    finally:
        broker.stop()
    assert _unfinished(settings) == (1, 0)

    again = _one_host(tmp_path, 16384) if step == "buried" else settings
    broker = Broker.open(again)
    try:
        broker.start(monitor=False)
        deadline = time.monotonic() + 10
        while broker.queue.pending():
            assert time.monotonic() < deadline, "the resumed build did not finish"
            time.sleep(0.02)
        final = broker.compute.get(ADMIN_CONTEXT, view.uuid)
        assert final.status == ("ERROR" if step == "buried" else "ACTIVE")
        assert final.cell == ("cell0" if step == "buried" else "cell1")
        ledger = check_ledger(broker.dbs)
        assert set(ledger.placed) | set(ledger.buried) == {view.uuid}
        check_drivers(ledger, broker.drivers)
    finally:
        broker.stop()
