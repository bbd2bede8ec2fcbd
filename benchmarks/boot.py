"""Boot throughput benchmark: how fast the API accepts boots, and how fast they go ACTIVE.

Usage::

    python benchmarks/boot.py [--boots 2000] [--clients 32] [--workers 8] [--hosts 200]
        [--database postgresql://USER@HOST:PORT/] [--brokers N] [--api-workers N]
        [--compare-seconds 3] [--quick]

It starts ``federator serve --port 0`` in child processes, so the load generator does not
share a broker's interpreter; ``--api-workers N`` starts each with N API worker
processes. One simulated local zone is large enough for every boot; the policy has no
thresholds.

Identity: the written configuration declares one project and one member user per client
thread, plus an admin; each thread authenticates as its own user, so requests carry
``--clients`` different tokens, as many users would. Passwords are generated per run
and never printed.

Databases: SQLite files in a temporary directory by default. With ``--database`` (a
PostgreSQL server URL; any database name in it is ignored) the benchmark creates fresh
databases (api, cell0, cell1) on that server for each run, as the tests do, and drops
them afterwards; the user must be allowed to CREATE DATABASE. ``--brokers N`` (needs
``--database``) runs N brokers on the same databases, started one after the other,
spreads the client threads across them round-robin, and also runs one broker alone on
fresh databases for the ratio.

Measured, per run:

* ``accepted_per_s``: POST /servers answered 202, over the submission phase's wall time
  (first request sent to last answer received); every other answer is counted in
  ``non_202`` by status code (0: no HTTP answer), never as accepted;
* ``completed_per_s``: boots that reached ACTIVE over the time from the first request to
  the last ``launched_at``; ``time_to_active_ms``: p50/p99/max of ``launched_at`` minus
  the moment its POST was sent (the broker's clock and the client's are the same one);
* ``write_gate``: per database, the brokers' own ``write()`` counters (``databases`` of
  ``GET /federator/v1/monitor``, asked of every node) over the window from just before
  the first request until every boot left BUILD: writes, total wait for the process's
  write gate and total time holding it, as shares of the window (``wait_share`` may
  exceed 1: several writers wait at once; ``busy_share`` is the share of the window a
  write held the gate; on PostgreSQL there is no gate and writers overlap, so it is
  the mean number of write transactions in flight). With several processes (brokers or
  API workers) the shares are per process (summed, divided by their number); on SQLite
  a process's writers also wait for the other processes' inside SQLite, which counts as
  held;
* ``peak_rss_mb``: the high-water mark of each broker process's resident memory
  (``VmHWM``; with API workers, the supervisor and each worker), read before stopping;
* ``checks``: every accepted id distinct, each listed and ACTIVE exactly once, no
  instance with records in two cells (``duplicates``), and no host's counters over its
  capacity times its ratio (``over_commit``), read from the databases after the run;
* ``http_rates`` (first run only): ``--compare-clients`` threads GET / for
  ``--compare-seconds``, then GET /compute/v2.1/flavors with their tokens as long;
  both rates and their ratio.

Prints one JSON document; the exit status is 0 whether or not the targets are met.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shlex
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from argon2 import PasswordHasher
from sqlalchemy import func, select
from sqlalchemy.engine import URL, make_url

from federator.broker import Databases
from federator.config import load_settings
from federator.storage.models import Host, Instance

COMPUTE = "/compute/v2.1"
TARGETS = {
    "accepted_per_s": 500,
    "completed_per_s": 250,
    "all_active_within_s_for_2000": 8.0,
    "flavors_over_root_min": 0.7,
    "postgresql_accepted_per_s_one_broker": 300,
}
ADMIN_PROJECT = "admin"
ADMIN_USER = "bench-admin"

CONFIG = """\
data_dir = {data_dir}
node_id = {node_id}
policy_file = {policy_file}
log_level = "WARNING"

[workers]
count = {workers}
{database}
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

{identity}
"""

POLICY = {"version": "bench-boot.1", "weighing": "spread", "zones": {}, "rules": []}


@dataclass(frozen=True)
class User:
    name: str
    project: str


@dataclass
class Broker:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path
    nodes: list[str]  # the node ids answering at url (one per API worker)


@dataclass
class Answer:
    status: int
    server_id: str | None
    sent_wall: float  # time.time() when the POST was sent
    seconds: float


@dataclass
class Run:
    """One configuration of brokers on fresh databases."""

    brokers: int
    database_urls: dict[str, str] | None  # None: SQLite files
    workdir: Path
    procs: list[Broker] = field(default_factory=list)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def identity_toml(users: list[User], password_hash: str) -> str:
    """The [identity] section: the admin and one member user per client thread."""
    projects = [ADMIN_PROJECT, *(u.project for u in users)]
    lines = [f"[[identity.projects]]\nname = {json.dumps(p)}\n" for p in projects]
    everyone = [
        (ADMIN_USER, ADMIN_PROJECT, "admin"),
        *((u.name, u.project, "member") for u in users),
    ]
    for name, project, role in everyone:
        lines.append(
            f"[[identity.users]]\nname = {json.dumps(name)}\n"
            f"password_hash = {json.dumps(password_hash)}\n"
            f"project = {json.dumps(project)}\nroles = [{json.dumps(role)}]\n"
        )
    return "\n".join(lines)


def database_toml(urls: dict[str, str] | None) -> str:
    if urls is None:
        return ""
    return (
        f"\n[database]\napi_url = {json.dumps(urls['api'])}\n"
        f"cell0_url = {json.dumps(urls['cell0'])}\n"
        f"[database.cells]\ncell1 = {json.dumps(urls['cell1'])}\n"
    )


def write_config(
    run: Run, index: int, hosts: int, workers: int, users: list[User], password_hash: str
) -> Path:
    policy = run.workdir / "policy.json"
    policy.write_text(json.dumps(POLICY), encoding="utf-8")
    config = run.workdir / f"federator-{index}.toml"
    config.write_text(
        CONFIG.format(
            data_dir=json.dumps(str(run.workdir / f"data-{index}")),
            node_id=json.dumps(f"bench-{index}"),
            policy_file=json.dumps(str(policy)),
            workers=workers,
            database=database_toml(run.database_urls),
            hosts=hosts,
            identity=identity_toml(users, password_hash),
        ),
        encoding="utf-8",
    )
    return config


def start_serve(config: Path, workdir: Path, index: int, api_workers: int) -> Broker:
    ready = workdir / f"ready-{index}"
    log = workdir / f"serve-{index}.log"
    with open(log, "wb") as out:
        command = [*federator_command(), "serve", "--config", str(config), "--port", "0"]
        proc = subprocess.Popen(
            [*command, "--ready-file", str(ready), "--api-workers", str(api_workers)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 90
    while not ready.exists() or not ready.read_text().strip():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            sys.stderr.write(log.read_text(errors="replace")[-4000:])
            raise SystemExit("a broker did not start")
        time.sleep(0.02)
    node = f"bench-{index}"
    nodes = [node] if api_workers == 1 else [f"{node}-{n}" for n in range(api_workers)]
    return Broker(proc, f"http://127.0.0.1:{ready.read_text().strip()}", log, nodes)


def stop_brokers(brokers: list[Broker]) -> list[int]:
    for b in brokers:
        if b.proc.poll() is None:
            b.proc.terminate()
    codes = []
    for b in brokers:
        try:
            codes.append(b.proc.wait(60))
        except subprocess.TimeoutExpired:
            b.proc.kill()
            codes.append(b.proc.wait(10))
    return codes


def gate_snapshot(
    brokers: list[Broker], headers: dict[str, str]
) -> list[dict[str, dict[str, float]]]:
    """Every node's write counters, from its own ``GET /federator/v1/monitor``: asked on
    new connections until each API worker has answered."""
    snapshots = []
    for b in brokers:
        seen: dict[str, dict[str, dict[str, float]]] = {}
        deadline = time.monotonic() + 30
        while set(seen) != set(b.nodes):
            if time.monotonic() > deadline:
                raise SystemExit(f"nodes {sorted(set(b.nodes) - set(seen))} did not answer")
            with httpx.Client(base_url=b.url, headers=headers, timeout=30) as client:
                r = client.get("/federator/v1/monitor")
                r.raise_for_status()
            body = r.json()
            seen[body["node"]] = {
                name: {
                    "wait_s": d["write_wait_s"],
                    "held_s": d["write_held_s"],
                    "count": d["writes"],
                }
                for name, d in body["databases"].items()
            }
        snapshots.extend(seen[n] for n in b.nodes)
    return snapshots


def _api_workers(pid: int) -> list[int]:
    """The API worker processes of the broker ``pid``: its children started by
    multiprocessing's spawn (not its resource tracker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                spawned = b"spawn_main" in (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if spawned and int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _vm_hwm_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def peak_rss(brokers: list[Broker]) -> dict[str, Any]:
    """Peak resident memory (VmHWM, MB) of each broker process and of its API workers."""
    per: list[float] = []
    for b in brokers:
        for pid in [b.proc.pid, *_api_workers(b.proc.pid)]:
            mb = _vm_hwm_mb(pid)
            if mb is not None:
                per.append(mb)
    return {"max": max(per) if per else None, "per_process": sorted(per, reverse=True)}


def gate_figures(
    before: list[dict[str, dict[str, float]]],
    after: list[dict[str, dict[str, float]]],
    window_s: float,
) -> dict[str, Any]:
    """Per database name: the counters' growth over the window, summed over brokers;
    shares per broker."""
    out: dict[str, Any] = {"window_s": round(window_s, 3)}
    names = sorted({name for snap in after for name in snap})
    for name in names:
        wait = held = count = 0.0
        for b0, b1 in zip(before, after, strict=True):
            zero = {"wait_s": 0.0, "held_s": 0.0, "count": 0}
            s0, s1 = b0.get(name, zero), b1.get(name, zero)
            wait += s1["wait_s"] - s0["wait_s"]
            held += s1["held_s"] - s0["held_s"]
            count += s1["count"] - s0["count"]
        per_broker = window_s * len(after)
        out[name] = {
            "writes": int(count),
            "wait_s": round(wait, 3),
            "held_s": round(held, 3),
            "mean_wait_ms": round(wait / count * 1000, 3) if count else 0.0,
            "mean_held_ms": round(held / count * 1000, 3) if count else 0.0,
            "wait_share": round(wait / per_broker, 3),
            "busy_share": round(held / per_broker, 3),
        }
    return out


def issue_token(url: str, user: str, project: str, password: str) -> str:
    body = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {"name": user, "domain": {"name": "Default"}, "password": password}
                },
            },
            "scope": {"project": {"name": project, "domain": {"name": "Default"}}},
        }
    }
    r = httpx.post(f"{url}/identity/v3/auth/tokens", json=body, timeout=60)
    if r.status_code != 201:
        raise SystemExit(f"authentication as {user} failed: HTTP {r.status_code}")
    return r.headers["X-Subject-Token"]


def submit_boots(
    urls: list[str], boots: int, tokens: list[str], on_start: Any
) -> tuple[float, float, list[Answer]]:
    """POST ``boots`` boots from one thread per token; thread n talks to urls[n % len].

    :returns: (wall-clock start, submission seconds, one answer per boot)
    """
    clients = len(tokens)
    answers: list[Answer | None] = [None] * boots
    started: list[tuple[float, float]] = []

    def release() -> None:
        on_start()
        started.append((time.perf_counter(), time.time()))

    barrier = threading.Barrier(clients, action=release)

    def run(n: int) -> None:
        headers = {"X-Auth-Token": tokens[n]}
        with httpx.Client(base_url=urls[n % len(urls)], timeout=120, headers=headers) as client:
            client.get("/")  # connect before the clock starts
            barrier.wait()
            for i in range(n, boots, clients):
                body = {"server": {"name": f"bench-{i}", "flavorRef": "m1.small"}}
                body["server"]["imageRef"] = "cirros"
                wall, t0 = time.time(), time.perf_counter()
                try:
                    r = client.post(f"{COMPUTE}/servers", json=body)
                    sid = r.json()["server"]["id"] if r.status_code == 202 else None
                    answers[i] = Answer(r.status_code, sid, wall, time.perf_counter() - t0)
                except (httpx.HTTPError, ValueError, KeyError):
                    answers[i] = Answer(0, None, wall, time.perf_counter() - t0)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done = time.perf_counter()
    final = [a if a is not None else Answer(0, None, started[0][1], 0.0) for a in answers]
    return started[0][1], done - started[0][0], final


def wait_until_built(url: str, timeout: float, headers: dict[str, str]) -> bool:
    """Poll until no server is in BUILD; False on timeout."""
    deadline = time.monotonic() + timeout
    params = {"status": "BUILD", "limit": 1, "all_tenants": 1}
    with httpx.Client(base_url=url, timeout=60, headers=headers) as client:
        while time.monotonic() < deadline:
            r = client.get(f"{COMPUTE}/servers", params=params)
            r.raise_for_status()
            if not r.json()["servers"]:
                return True
            time.sleep(0.05)
    return False


def list_servers(url: str, headers: dict[str, str]) -> list[dict[str, Any]]:
    """Every server of every project, following the pagination markers."""
    found: list[dict[str, Any]] = []
    marker: str | None = None
    with httpx.Client(base_url=url, timeout=60, headers=headers) as client:
        while True:
            params: dict[str, Any] = {"limit": 1000, "all_tenants": 1}
            if marker:
                params["marker"] = marker
            r = client.get(f"{COMPUTE}/servers/detail", params=params)
            r.raise_for_status()
            page = r.json()["servers"]
            found.extend(page)
            if len(page) < 1000:
                return found
            marker = page[-1]["id"]


def http_rates(url: str, tokens: list[str], seconds: float) -> dict[str, Any]:
    """Requests/s of GET / and of authenticated GET /flavors, one phase after the other,
    one thread (and client) per token."""

    def phase(path: str, auth: bool) -> tuple[float, Counter[int]]:
        counts = [0] * len(tokens)
        statuses: list[Counter[int]] = [Counter() for _ in tokens]
        began: list[float] = []
        barrier = threading.Barrier(len(tokens), action=lambda: began.append(time.perf_counter()))

        def run(n: int) -> None:
            headers = {"X-Auth-Token": tokens[n]} if auth else {}
            with httpx.Client(base_url=url, timeout=60, headers=headers) as client:
                client.get("/")
                barrier.wait()
                end = time.perf_counter() + seconds
                while time.perf_counter() < end:
                    statuses[n][client.get(path).status_code] += 1
                    counts[n] += 1

        threads = [threading.Thread(target=run, args=(n,)) for n in range(len(tokens))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - began[0]
        return sum(counts) / wall, sum(statuses, Counter())

    root, root_statuses = phase("/", auth=False)
    flavors, flavor_statuses = phase(f"{COMPUTE}/flavors", auth=True)
    return {
        "clients": len(tokens),
        "seconds_each": seconds,
        "root_per_s": round(root, 1),
        "flavors_per_s": round(flavors, 1),
        "flavors_over_root": round(flavors / root, 3) if root else None,
        "root_statuses": {str(k): v for k, v in sorted(root_statuses.items())},
        "flavors_statuses": {str(k): v for k, v in sorted(flavor_statuses.items())},
    }


def database_checks(config: Path) -> dict[str, Any]:
    """From the databases: instances with live records in more than one cell, or more
    than one live record; hosts whose counters exceed capacity times ratio."""
    dbs = Databases.from_settings(load_settings(config))
    try:
        records: Counter[str] = Counter()
        launched: dict[str, float] = {}
        for db in dbs.cells.values():
            with db.read() as s:
                live = select(Instance.uuid, Instance.launched_at).where(
                    Instance.deleted.is_(False)
                )
                for uuid, at in s.execute(live):
                    records[uuid] += 1
                    if at is not None:
                        aware = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
                        launched[uuid] = aware.timestamp()
        with dbs.api.read() as s:
            hosts = list(s.scalars(select(Host)))
            host_count = s.scalar(select(func.count()).select_from(Host))
        over = [
            f"{h.zone}/{h.name}"
            for h in hosts
            if h.vcpus_used > h.vcpus * h.cpu_ratio
            or h.ram_used_mb > h.ram_mb * h.ram_ratio
            or h.disk_used_gb > h.disk_gb * h.disk_ratio
            or min(h.vcpus_used, h.ram_used_mb, h.disk_used_gb, h.instances) < 0
        ]
    finally:
        dbs.dispose()
    return {
        "instance_records": sum(records.values()),
        "instances_with_several_records": sum(1 for n in records.values() if n > 1),
        "hosts": host_count,
        "hosts_over_capacity": len(over),
        "hosts_over_capacity_sample": over[:5],
        # Full precision: the API shows launched_at to the second, as Nova's format does.
        "launched": launched,
    }


def parse_time(value: str | None) -> float | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def create_pg_databases(server: URL) -> tuple[dict[str, str], list[str]]:
    """Fresh api, cell0 and cell1 databases on ``server``; returns (URLs, names)."""
    import psycopg

    names = {
        role: f"federator_bench_{uuid.uuid4().hex[:10]}_{role}"
        for role in ("api", "cell0", "cell1")
    }
    with psycopg.connect(**pg_connect_args(server), autocommit=True) as conn:
        for name in names.values():
            conn.execute(f'CREATE DATABASE "{name}"')
    urls = {
        role: server.set(drivername="postgresql+psycopg", database=name).render_as_string(
            hide_password=False
        )
        for role, name in names.items()
    }
    return urls, list(names.values())


def drop_pg_databases(server: URL, names: list[str]) -> None:
    import psycopg

    with psycopg.connect(**pg_connect_args(server), autocommit=True) as conn:
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pg_connect_args(server: URL) -> dict[str, Any]:
    args: dict[str, Any] = {"dbname": "postgres", "connect_timeout": 10}
    for key, value in (
        ("host", server.host),
        ("port", server.port),
        ("user", server.username),
        ("password", server.password),
    ):
        if value is not None:
            args[key] = value
    return args


def run_once(
    args: argparse.Namespace, brokers: int, server: URL | None, rates: bool
) -> dict[str, Any]:
    """Start ``brokers`` brokers on fresh databases, boot, wait, check, stop."""
    password = secrets.token_urlsafe(18)
    password_hash = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(password)
    users = [User(f"bench-u{n:03d}", f"bench-p{n:03d}") for n in range(args.clients)]
    pg_names: list[str] = []
    with tempfile.TemporaryDirectory(prefix="federator-bench-") as tmp:
        urls: dict[str, str] | None = None
        if server is not None:
            urls, pg_names = create_pg_databases(server)
        run = Run(brokers, urls, Path(tmp))
        exit_codes: list[int] = []
        try:
            configs = [
                write_config(run, n, args.hosts, args.workers, users, password_hash)
                for n in range(brokers)
            ]
            # One after the other: the first creates the schema and the identity rows.
            for n, config in enumerate(configs):
                run.procs.append(start_serve(config, run.workdir, n, args.api_workers))
            broker_urls = [b.url for b in run.procs]
            tokens = [
                issue_token(broker_urls[n % brokers], u.name, u.project, password)
                for n, u in enumerate(users)
            ]
            admin = {
                "X-Auth-Token": issue_token(broker_urls[0], ADMIN_USER, ADMIN_PROJECT, password)
            }

            before: list[dict[str, dict[str, float]]] = []
            gate_start: list[float] = []

            def on_start() -> None:
                before.extend(gate_snapshot(run.procs, admin))
                gate_start.append(time.perf_counter())

            start_wall, submission_s, answers = submit_boots(
                broker_urls, args.boots, tokens, on_start
            )
            built = wait_until_built(broker_urls[0], args.timeout, admin)
            after = gate_snapshot(run.procs, admin)
            window_s = time.perf_counter() - gate_start[0]
            servers = list_servers(broker_urls[0], admin)
            http = (
                http_rates(broker_urls[0], tokens[: args.compare_clients], args.compare_seconds)
                if rates
                else None
            )
            memory = peak_rss(run.procs)
        finally:
            exit_codes = stop_brokers(run.procs)
            checks_db = database_checks(configs[0]) if run.procs else {}
            if server is not None and pg_names:
                drop_pg_databases(server, pg_names)

    accepted = [a for a in answers if a.status == 202]
    non_202 = Counter(a.status for a in answers if a.status != 202)
    accepted_ids = [a.server_id for a in accepted if a.server_id]
    sent = {a.server_id: a.sent_wall for a in accepted if a.server_id}
    listed = Counter(s["id"] for s in servers)
    statuses = Counter(s["status"] for s in servers)
    active_times: list[float] = []
    last_active: float | None = None
    recorded: dict[str, float] = checks_db.pop("launched", {})
    for s in servers:
        launched = recorded.get(s["id"]) or parse_time(s.get("OS-SRV-USG:launched_at"))
        if s["status"] == "ACTIVE" and launched is not None and s["id"] in sent:
            active_times.append(launched - sent[s["id"]])
            last_active = launched if last_active is None else max(last_active, launched)
    active = statuses.get("ACTIVE", 0)
    completion_s = (last_active - start_wall) if last_active is not None else None
    active_ids = Counter(s["id"] for s in servers if s["status"] == "ACTIVE")
    active_once = sum(1 for sid in set(accepted_ids) if active_ids[sid] == 1)
    duplicates = (
        (len(accepted_ids) - len(set(accepted_ids)))
        + sum(n - 1 for n in listed.values() if n > 1)
        + checks_db.get("instances_with_several_records", 0)
    )
    latencies = [a.seconds for a in answers]
    doc: dict[str, Any] = {
        "brokers": brokers,
        "accepted": len(accepted),
        "non_202": {str(k): v for k, v in sorted(non_202.items())},
        "submission_s": round(submission_s, 3),
        "accepted_per_s": round(len(accepted) / submission_s, 1),
        "latency_ms": {
            "p50": round(percentile(latencies, 0.50) * 1000, 2),
            "p99": round(percentile(latencies, 0.99) * 1000, 2),
            "max": round(max(latencies) * 1000, 2),
        },
        "active": active,
        "error": statuses.get("ERROR", 0),
        "other": {k: v for k, v in statuses.items() if k not in ("ACTIVE", "ERROR")},
        "all_left_build": built,
        "completion_s": round(completion_s, 3) if completion_s else None,
        "completed_per_s": round(len(active_times) / completion_s, 1) if completion_s else 0.0,
        "time_to_active_ms": {
            "p50": round(percentile(active_times, 0.50) * 1000, 1),
            "p99": round(percentile(active_times, 0.99) * 1000, 1),
            "max": round(max(active_times) * 1000, 1),
        }
        if active_times
        else None,
        "write_gate": gate_figures(before, after, window_s),
        "peak_rss_mb": memory,
        "checks": {
            "accepted_ids_distinct": len(accepted_ids) == len(set(accepted_ids)),
            "accepted_active_exactly_once": active_once,
            "listed_not_accepted": len(set(listed) - set(accepted_ids)),
            "duplicates": duplicates,
            "over_commit": checks_db.get("hosts_over_capacity", 0),
            **checks_db,
        },
        "serve_exit_codes": exit_codes,
    }
    if http is not None:
        doc["http_rates"] = http
    return doc


# --- the single-token helpers benchmarks/volumes.py builds on ---------------------


def federator_command() -> list[str]:
    script = Path(sys.executable).with_name("federator")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from federator.cli.main import main; main()"]


LEGACY_CONFIG = """\
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


def start_broker(workdir: Path, hosts: int, workers: int) -> tuple[subprocess.Popen[bytes], str]:
    """``federator serve`` on SQLite in ``workdir`` with the embedded admin (no users)."""
    policy = workdir / "policy.json"
    policy.write_text(json.dumps(POLICY), encoding="utf-8")
    config = workdir / "federator.toml"
    config.write_text(
        LEGACY_CONFIG.format(
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--boots", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=32, help="threads, one user each")
    parser.add_argument("--workers", type=int, default=8, help="build workers per broker")
    parser.add_argument("--hosts", type=int, default=200, help="sim hosts (16 m1.small each)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for ACTIVE")
    parser.add_argument("--database", help="PostgreSQL server URL; fresh databases are made")
    parser.add_argument("--brokers", type=int, default=1, help="brokers on --database")
    parser.add_argument(
        "--api-workers", type=int, default=1, help="API worker processes per broker"
    )
    parser.add_argument("--compare-clients", type=int, default=32)
    parser.add_argument("--compare-seconds", type=float, default=3.0)
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: 60 boots, 8 clients, 20 hosts"
    )
    args = parser.parse_args()
    if args.quick:
        args.boots, args.clients, args.hosts, args.workers = 60, 8, 20, 4
        args.compare_clients, args.compare_seconds = 8, 0.5
    if args.boots < 1 or args.clients < 1 or args.brokers < 1 or args.api_workers < 1:
        parser.error("--boots, --clients, --brokers and --api-workers must be at least 1")
    if args.boots > args.hosts * 16:
        parser.error(f"{args.hosts} hosts hold {args.hosts * 16} m1.small; raise --hosts")
    if args.brokers > 1 and not args.database:
        parser.error("--brokers above 1 needs --database (PostgreSQL)")
    args.compare_clients = min(args.compare_clients, args.clients)
    server: URL | None = None
    if args.database:
        server = make_url(args.database)
        if server.get_backend_name() != "postgresql":
            parser.error("--database must be a postgresql:// URL")

    runs = [run_once(args, 1, server, rates=True)]
    if args.brokers > 1:
        runs.append(run_once(args, args.brokers, server, rates=False))
    one = runs[0]
    last = runs[-1]
    http = one["http_rates"]
    meets = {
        "accepted_per_s": one["accepted_per_s"] >= TARGETS["accepted_per_s"],
        "completed_per_s": one["completed_per_s"] >= TARGETS["completed_per_s"],
        "flavors_over_root": (http["flavors_over_root"] or 0) >= TARGETS["flavors_over_root_min"],
    }
    if args.boots == 2000:
        meets["all_active_within_8_s"] = (
            one["active"] == 2000
            and one["completion_s"] is not None
            and one["completion_s"] <= TARGETS["all_active_within_s_for_2000"]
        )
    if server is not None:
        meets["postgresql_accepted_per_s_one_broker"] = (
            one["accepted_per_s"] >= TARGETS["postgresql_accepted_per_s_one_broker"]
        )
    doc: dict[str, Any] = {
        "benchmark": "boot",
        "quick": args.quick,
        "boots": args.boots,
        "clients": args.clients,
        "tokens": args.clients,
        **{k: v for k, v in one.items() if k != "brokers"},
        "config": {
            "database": server.set(database=None).render_as_string(hide_password=True)
            + " (fresh databases per run)"
            if server is not None
            else "sqlite (temporary directory)",
            "brokers": args.brokers,
            "api_workers": args.api_workers,
            "workers": args.workers,
            "zone": f"local, sim, {args.hosts} hosts x 16384 MB / 16 vCPU",
            "flavor": "m1.small",
            "policy": POLICY["version"],
            "users": f"{args.clients} members of {args.clients} projects, one per thread",
        },
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "targets": TARGETS,
        "meets": meets,
        "meets_targets": all(meets.values()),
    }
    if args.brokers > 1:
        doc["multi_broker"] = last
        doc["multi_broker_over_one"] = {
            "accepted_per_s": round(last["accepted_per_s"] / one["accepted_per_s"], 3),
            "completed_per_s": round(last["completed_per_s"] / one["completed_per_s"], 3)
            if one["completed_per_s"]
            else None,
        }
    json.dump(doc, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
