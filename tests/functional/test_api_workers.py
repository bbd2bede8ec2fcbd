"""``federator serve`` with several API worker processes on one SQLite database.

The supervisor binds one socket and runs ``api.workers`` broker nodes behind it: both
answer requests, each zone's monitor jobs run in one of them, boots are built once, SIGHUP
reloads the policy in every worker, a worker killed with SIGKILL comes back under its node
id, and the workers go when the supervisor does (SIGTERM or SIGKILL)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import settings_data, sim_zone, write_config, write_policy
from tests.daemon import Daemon, federator_command, tail

pytestmark = pytest.mark.slow

NODES = ("w-node-0", "w-node-1")
ZONES = ("local", "cloud-a")


def _config(tmp_path: Path, policy_version: str) -> Path:
    data = settings_data(
        tmp_path,
        zones=[sim_zone("local", "local", hosts=4), sim_zone("cloud-a", "virtual")],
        policy={"version": policy_version},
        workers={"count": 2, "poll_interval": 0.2},
        monitor={
            "zone_lease_seconds": 3.0,
            "heartbeat_interval": 0.5,
            "load_interval": 1.0,
            "sync_interval": 0.5,
        },
        api={"workers": 2},
    )
    data["node_id"] = "w-node"
    return write_config(tmp_path / "broker.toml", data)


def _children(pid: int) -> set[int]:
    """The API worker processes of the supervisor ``pid`` (from /proc): its children
    started by multiprocessing's spawn, not its resource tracker."""
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces, so split after its ")"
        if int(stat.rsplit(")", 1)[1].split()[1]) != pid:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmdline:
            found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait(what: str, check: Callable[[], bool], timeout: float, d: Daemon) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s\n{tail(d.log)}")
        time.sleep(0.05)


def _fresh(d: Daemon, path: str) -> dict[str, Any]:
    """GET ``path`` on a new connection, which the kernel gives to either worker."""
    with httpx.Client(base_url=d.url, headers=d.headers, timeout=10) as c:
        r = c.get(path)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


class PerNode:
    """What each worker node answers, asked on new connections until every node has."""

    def __init__(self, d: Daemon, what: Callable[[dict[str, Any]], Any], path: str = "") -> None:
        self.d, self.what, self.path = d, what, path
        self.seen: dict[str, Any] = {}

    def __call__(self) -> bool:
        self.seen.clear()
        deadline = time.monotonic() + 10
        while set(self.seen) != set(NODES) and time.monotonic() < deadline:
            with httpx.Client(base_url=self.d.url, headers=self.d.headers, timeout=10) as c:
                monitor = c.get("/federator/v1/monitor").json()
                body = c.get(self.path).json() if self.path else monitor
            self.seen[monitor["node"]] = self.what(body)
        return set(self.seen) == set(NODES)

    def agree(self, value: Any = None) -> bool:
        """Every node answered, all the same (and ``value``, when given)."""
        if not self():
            return False
        values = list(self.seen.values())
        return all(v == values[0] for v in values) and value in (None, values[0])


def test_two_api_workers_share_the_socket_the_work_and_the_zones(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    d = Daemon.start(_config(tmp_path, "workers-1"), tmp_path, "workers", timeout=90)
    daemons.append(d)
    workers = _children(d.proc.pid)
    assert len(workers) == 2, workers

    # Both workers answer on the one port, each as its own node.
    _wait("both workers answering", PerNode(d, lambda m: m["node"]), 30, d)

    # Each zone's lease is held by one of them, and both see the same holder.
    def leases(m: dict[str, Any]) -> dict[str, str | None]:
        return {x["zone"]: None if x["expired"] else x["owner"] for x in m["leases"]}

    agreed = PerNode(d, leases)
    _wait("leases held", lambda: agreed.agree() and None not in agreed.seen[NODES[0]].values(),
          20, d)  # fmt: skip
    owners = agreed.seen[NODES[0]]
    assert set(ZONES) <= set(owners)
    assert set(owners.values()) <= set(NODES)

    # Boots through either worker are built exactly once.
    ids = []
    for i in range(16):
        with httpx.Client(base_url=d.url, headers=d.headers, timeout=30) as c:
            r = c.post(
                "/compute/v2.1/servers",
                json={"server": {"name": f"vm-{i}", "flavorRef": "m1.small", "imageRef": "cirros"}},
            )
        assert r.status_code == 202, r.text
        ids.append(r.json()["server"]["id"])

    def all_active() -> bool:
        with httpx.Client(base_url=d.url, headers=d.headers, timeout=30) as c:
            servers = c.get("/compute/v2.1/servers/detail").json()["servers"]
        assert {s["status"] for s in servers} <= {"BUILD", "ACTIVE"}, servers
        return len(servers) == 16 and all(s["status"] == "ACTIVE" for s in servers)

    _wait("16 servers ACTIVE", all_active, 60, d)
    with httpx.Client(base_url=d.url, headers=d.headers, timeout=30) as c:
        listed = [s["id"] for s in c.get("/compute/v2.1/servers").json()["servers"]]
    assert sorted(listed) == sorted(ids)

    # SIGHUP reaches every worker: each reloads the policy file.
    write_policy(tmp_path / "policy.json", {"version": "workers-2"})
    d.proc.send_signal(signal.SIGHUP)
    reloaded = PerNode(d, lambda p: p["policy"]["version"], "/federator/v1/policy")
    _wait("both workers on the new policy", lambda: reloaded.agree("workers-2"), 30, d)

    # A worker killed with SIGKILL is restarted, under its node id.
    victim = min(workers)
    os.kill(victim, signal.SIGKILL)
    _wait(
        "a new worker in place of the killed one",
        lambda: victim not in _children(d.proc.pid) and len(_children(d.proc.pid)) == 2,
        30,
        d,
    )
    _wait("both nodes answering again", PerNode(d, lambda m: m["node"]), 60, d)
    assert "exited with signal SIGKILL" in d.log.read_text()

    # SIGTERM: every worker drains and exits, then the supervisor, with 0.
    now = _children(d.proc.pid)
    assert d.stop() == 0
    assert not any(_alive(p) for p in now), now


def test_workers_stop_when_the_supervisor_is_killed(tmp_path: Path, daemons: list[Daemon]) -> None:
    d = Daemon.start(_config(tmp_path, "workers-1"), tmp_path, "orphans", timeout=90)
    daemons.append(d)
    workers = _children(d.proc.pid)
    assert len(workers) == 2
    d.kill()
    _wait("workers gone", lambda: not any(_alive(p) for p in workers), 30, d)


def test_a_port_in_use_is_refused_before_any_worker_starts(tmp_path: Path) -> None:
    import socket
    import subprocess

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = _config(tmp_path, "workers-1")
        proc = subprocess.run(
            [*federator_command(), "serve", "--config", str(config), "--port", str(port),
             "--api-workers", "3"],
            check=False, capture_output=True, text=True, timeout=90,
        )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_supervisor_logs_no_secret(tmp_path: Path, daemons: list[Daemon]) -> None:
    """The settings (with the users' password hashes) cross to the workers through a
    pipe, never through a log line or a command line."""
    d = Daemon.start(_config(tmp_path, "workers-1"), tmp_path, "secrets", timeout=90)
    daemons.append(d)
    token = d.headers["X-Auth-Token"]
    for pid in _children(d.proc.pid):
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        assert "argon2" not in cmdline and token not in cmdline
    d.stop()
    text = d.log.read_text()
    assert "argon2" not in text and token not in text
