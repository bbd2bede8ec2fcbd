"""Boot throughput benchmark: how fast the API accepts boots, and how fast they go ACTIVE.

Usage::

    python benchmarks/boot.py [--boots 2000] [--clients 32] [--workers 8] [--hosts 200]

It starts ``federator serve --port 0`` in a child process (so the load generator does not
share the broker's interpreter) on SQLite in a temporary directory, with one simulated
local zone large enough for every boot and a policy without thresholds. The benchmark
authenticates once as the admin the broker creates on first start (its password is in
``data/admin-openrc``); ``--clients`` threads, each with its own HTTP client carrying that
token, then POST ``--boots`` boots as fast as they are answered, so every request is
authenticated as in production. Measured:

* ``accepted_per_s``: boots / wall time of the submission phase (first request sent to
  last answer received);
* ``latency_ms``: p50, p99 and max of the POST /servers answers;
* ``all_active_s``: from the first request until no server is in BUILD any more;
* the final ACTIVE / ERROR counts.

Prints one JSON document; the exit status is 0 whether or not the target is met.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

COMPUTE = "/compute/v2.1"
TARGET_ACCEPTED_PER_S = 200

CONFIG = """\
data_dir = {data_dir}
node_id = "bench"
policy_file = {policy_file}
log_level = "WARNING"

[workers]
count = {workers}

[[zones]]
name = "local"
driver = "sim"
kind = "local"
[zones.options]
hosts = {hosts}
host_ram_mb = 16384
host_vcpus = 16
host_disk_gb = 400
[[zones.aggregates]]
name = "local"
hosts = ["*"]
"""

POLICY = {"version": "bench-boot.1", "weighing": "spread", "zones": {}, "rules": []}


def federator_command() -> list[str]:
    script = Path(sys.executable).with_name("federator")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from federator.cli.main import main; main()"]


def start_broker(workdir: Path, hosts: int, workers: int) -> tuple[subprocess.Popen[bytes], str]:
    policy = workdir / "policy.json"
    policy.write_text(json.dumps(POLICY), encoding="utf-8")
    config = workdir / "federator.toml"
    config.write_text(
        CONFIG.format(
            data_dir=json.dumps(str(workdir / "data")),
            policy_file=json.dumps(str(policy)),
            workers=workers,
            hosts=hosts,
        ),
        encoding="utf-8",
    )
    ready = workdir / "ready"
    with open(workdir / "serve.log", "wb") as log:
        command = [*federator_command(), "serve", "--config", str(config), "--port", "0"]
        proc = subprocess.Popen(
            [*command, "--ready-file", str(ready)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            sys.stderr.write((workdir / "serve.log").read_text(errors="replace"))
            raise SystemExit("the broker did not start")
        time.sleep(0.02)
    return proc, f"http://127.0.0.1:{ready.read_text().strip()}"


def admin_token(url: str, data_dir: Path) -> dict[str, str]:
    """The X-Auth-Token header of the broker's admin (from its openrc file)."""
    env = {}
    for line in (data_dir / "admin-openrc").read_text(encoding="utf-8").splitlines():
        if line.startswith("export "):
            key, _, value = line.removeprefix("export ").partition("=")
            env[key] = shlex.split(value)[0] if value else ""
    user = {"name": env["OS_USERNAME"], "domain": {"name": "Default"}}
    user["password"] = env["OS_PASSWORD"]
    body = {
        "auth": {
            "identity": {"methods": ["password"], "password": {"user": user}},
            "scope": {"project": {"name": env["OS_PROJECT_NAME"], "domain": {"name": "Default"}}},
        }
    }
    r = httpx.post(f"{url}/identity/v3/auth/tokens", json=body, timeout=60)
    r.raise_for_status()
    return {"X-Auth-Token": r.headers["X-Subject-Token"]}


def submit(
    url: str, boots: int, clients: int, headers: dict[str, str]
) -> tuple[float, float, list[float], int]:
    """POST ``boots`` boots from ``clients`` threads.

    :returns: (start time, wall seconds, latencies in seconds, count answered 202)
    """
    latencies: list[list[float]] = [[] for _ in range(clients)]
    accepted = [0] * clients
    started: list[float] = []
    barrier = threading.Barrier(clients, action=lambda: started.append(time.perf_counter()))

    def run(n: int) -> None:
        with httpx.Client(base_url=url, timeout=120, headers=headers) as client:
            client.get("/")  # connect before the clock starts
            barrier.wait()
            for i in range(n, boots, clients):
                body = {"server": {"name": f"bench-{i}", "flavorRef": "m1.small"}}
                body["server"]["imageRef"] = "cirros"
                t0 = time.perf_counter()
                r = client.post(f"{COMPUTE}/servers", json=body)
                latencies[n].append(time.perf_counter() - t0)
                accepted[n] += r.status_code == 202

    threads = [threading.Thread(target=run, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started[0]
    return started[0], wall, [x for per in latencies for x in per], sum(accepted)


def wait_until_built(url: str, timeout: float, headers: dict[str, str]) -> bool:
    """Poll until no server is in BUILD; False on timeout."""
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=url, timeout=60, headers=headers) as client:
        while time.monotonic() < deadline:
            r = client.get(f"{COMPUTE}/servers", params={"status": "BUILD", "limit": 1})
            r.raise_for_status()
            if not r.json()["servers"]:
                return True
            time.sleep(0.05)
    return False


def count_statuses(url: str, headers: dict[str, str]) -> Counter[str]:
    statuses: Counter[str] = Counter()
    marker: str | None = None
    with httpx.Client(base_url=url, timeout=60, headers=headers) as client:
        while True:
            params: dict[str, Any] = {"limit": 1000}
            if marker:
                params["marker"] = marker
            r = client.get(f"{COMPUTE}/servers/detail", params=params)
            r.raise_for_status()
            page = r.json()["servers"]
            statuses.update(s["status"] for s in page)
            if len(page) < 1000:
                return statuses
            marker = page[-1]["id"]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--boots", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--workers", type=int, default=8, help="broker build workers")
    parser.add_argument("--hosts", type=int, default=200, help="sim hosts (16 m1.small each)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for ACTIVE")
    args = parser.parse_args()
    if args.boots < 1 or args.clients < 1:
        parser.error("--boots and --clients must be at least 1")
    if args.boots > args.hosts * 16:
        parser.error(f"{args.hosts} hosts hold {args.hosts * 16} m1.small; raise --hosts")

    with tempfile.TemporaryDirectory(prefix="federator-bench-") as tmp:
        proc, url = start_broker(Path(tmp), args.hosts, args.workers)
        try:
            headers = admin_token(url, Path(tmp) / "data")
            start, wall, latencies, accepted = submit(url, args.boots, args.clients, headers)
            built = wait_until_built(url, args.timeout, headers)
            all_active_s = time.perf_counter() - start
            statuses = count_statuses(url, headers)
        finally:
            proc.send_signal(signal.SIGTERM)
            exit_code = proc.wait(60)

    accepted_per_s = args.boots / wall
    doc = {
        "benchmark": "boot",
        "boots": args.boots,
        "clients": args.clients,
        "accepted": accepted,
        "submission_s": round(wall, 3),
        "accepted_per_s": round(accepted_per_s, 1),
        "latency_ms": {
            "p50": round(percentile(latencies, 0.50) * 1000, 2),
            "p99": round(percentile(latencies, 0.99) * 1000, 2),
            "max": round(max(latencies) * 1000, 2),
        },
        "all_active_s": round(all_active_s, 3) if built else None,
        "active": statuses.get("ACTIVE", 0),
        "error": statuses.get("ERROR", 0),
        "other": {k: v for k, v in statuses.items() if k not in ("ACTIVE", "ERROR")},
        "config": {
            "database": "sqlite (temporary directory)",
            "workers": args.workers,
            "zone": f"local, sim, {args.hosts} hosts x 16384 MB / 16 vCPU",
            "flavor": "m1.small",
            "policy": POLICY["version"],
        },
        "serve_exit_code": exit_code,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "target_accepted_per_s": TARGET_ACCEPTED_PER_S,
        "meets_target": accepted == args.boots and accepted_per_s >= TARGET_ACCEPTED_PER_S,
    }
    json.dump(doc, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
