"""Volume benchmark: the cost of placing one volume, and how fast the API accepts creates.

Usage::

    python benchmarks/volumes.py [--quick] [--pools 10000] [--samples 1000]
                                 [--creates 1000] [--clients 32] [--workers 8] [--hosts 200]

Three parts, each printed as a section of one JSON document:

* ``placement``: an in-process ``Broker`` (SQLite in a temporary directory, workers and
  monitor not started) with one simulated local zone of ``--pools`` hosts, each with its
  pool of ``volume_pool_gb`` (1000 GB); the pools reach the API database through the
  broker's own start-up refresh (``sync_hosts`` then ``sync_pools``). ``--samples``
  volumes of 1 GB (``creating``, as the API writes them) are then placed one after the
  other with the calls the create task makes (``federator.volumes.worker``): the zones'
  storage loads (``storage_loads``), the policy ranking (``rank_volume``), then per
  candidate zone the free pools (``claims.free_pools``) and the atomic claim
  (``claims.claim``: volume, zone and pool conditional updates and the allocation row, one
  transaction) with the worker's placement record. Each stage and the whole sequence are
  timed with ``time.perf_counter_ns``. Claims accumulate (nothing is released): the
  spread weighing puts each volume in the emptiest pool, and the samples stay far within
  the pools' capacity. ``worker_place`` times ``VolumeTasks._place`` itself on half as
  many volumes again, as a check that the sequence above is what the worker does.
* ``http_creates``: ``federator serve`` in a child process, configured as
  ``benchmarks/boot.py`` configures it (its ``start_broker``: one sim zone of ``--hosts``
  hosts, each with a 1000 GB pool, ``--workers`` workers); ``--clients`` threads POST
  ``--creates`` 1 GB volumes to ``/volume/v3/{project_id}/volumes`` as the broker's admin.
  ``accepted_per_s`` is the 202 answers over the submission wall time, ``settled_per_s``
  the volumes over the time from the first request until none is ``creating``;
  ``errors`` counts answers other than 202 and failed requests (it must be 0).
* ``boot``: the server figures beside them, measured in the same run with the functions
  of ``benchmarks/boot.py`` (``--creates`` boots of m1.small from ``--clients`` clients on
  a fresh broker of the same configuration), of ``benchmarks/placement.py`` (the
  ``plain`` workload: ``HostScheduler.select`` over a zone of ``--pools`` hosts) and of
  ``benchmarks/group_claims.py`` (the ``plain`` workload: ``compute.claims.claim`` on a
  zone of ``--pools`` hosts). ``ratios`` divides each volume figure by its server
  counterpart; a server placement there is select p50 plus claim p50.

``--quick`` shrinks every part (a smoke test, well under 30 s) and runs the boots on the
broker that took the volume creates, to start one broker fewer. Prints one JSON document;
the exit status is 0 whether or not the figures are good.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import boot
import group_claims
import httpx
import placement as server_placement
from sqlalchemy import func, select

from federator.broker import Broker
from federator.config import load_settings
from federator.storage.db import Database
from federator.storage.models import StoragePool, Volume, utcnow
from federator.volumes import claims
from federator.volumes import worker as volume_worker
from federator.volumes.placement import VolumeRequest, rank_volume

VOLUME = "/volume/v3"
ZONE = "local"
SIZE_GB = 1
POOL_GB = 1000  # the sim's default volume_pool_gb, also what boot.py's brokers get
POLICY = {"version": "bench-volumes.1", "weighing": "spread", "zones": {}, "rules": []}
STAGES = ("loads", "rank", "free_pools", "claim")


@dataclass(frozen=True, slots=True)
class Sizes:
    pools: int
    samples: int
    creates: int
    clients: int
    workers: int
    hosts: int
    timeout: float
    shared: bool  # one served broker for the volume creates and then the boots


FULL = Sizes(
    pools=10000,
    samples=1000,
    creates=1000,
    clients=32,
    workers=8,
    hosts=200,
    timeout=600,
    shared=False,
)
QUICK = Sizes(
    pools=200, samples=50, creates=50, clients=4, workers=2, hosts=10, timeout=60, shared=True
)


# --- placement ------------------------------------------------------------------------


def open_broker(root: Path, pools: int) -> Broker:
    """A broker with one local sim zone of ``pools`` hosts, one pool each, as it starts:
    the start-up refresh stores the hosts and their pools."""
    policy = root / "policy.json"
    policy.write_text(json.dumps(POLICY), encoding="utf-8")
    settings = load_settings(
        None,
        data_dir=root / "data",
        node_id="bench",
        log_level="WARNING",
        policy_file=policy,
        zones=[
            {
                "name": ZONE,
                "driver": "sim",
                "kind": "local",
                "options": {"hosts": pools, "persist": False, "volume_pool_gb": POOL_GB},
                "aggregates": [{"name": ZONE, "hosts": ["*"]}],
            }
        ],
    )
    return Broker.open(settings)


def new_volumes(db: Database, n: int, volume_type: str) -> list[str]:
    """``n`` volumes waiting to be placed, written as the API's create writes them."""
    ids = [str(uuid.uuid4()) for _ in range(n)]
    with db.write() as s:
        s.add_all(
            Volume(
                uuid=i,
                name=f"bench-{i[:8]}",
                project_id="bench",
                user_id="bench",
                size_gb=SIZE_GB,
                status="creating",
                volume_type=volume_type,
                requested_az=None,
                multiattach=False,
                metadata_={},
                placement={},
                created_at=utcnow(),
            )
            for i in ids
        )
    return ids


def place_once(broker: Broker, volume_uuid: str, volume_type: str) -> dict[str, int]:
    """Place one volume with the create task's calls; nanoseconds per stage."""
    ctx = broker.ctx
    loaded = ctx.policies.current
    request = VolumeRequest(project_id="bench", size_gb=SIZE_GB, volume_type=volume_type)
    t0 = time.perf_counter_ns()
    loads = volume_worker.storage_loads(ctx)
    t1 = time.perf_counter_ns()
    ranking = rank_volume(loaded.policy, ctx.policies.context, request, loads)
    for z in ranking.stop_bursting:
        claims.set_storage_bursting(ctx.api, z, False)
    for z in ranking.start_bursting:
        claims.set_storage_bursting(ctx.api, z, True)
    t2 = time.perf_counter_ns()
    pools_ns = claim_ns = 0
    for cand in ranking.candidates:
        record = volume_worker._placement(
            loaded.policy.version, loaded.sha256, ranking, loads, cand.zone
        )
        c = claims.StorageClaim(
            volume_uuid, cand.zone, SIZE_GB, cand.gb_limit, cand.volumes_limit, cand.thresholded
        )
        tp = time.perf_counter_ns()
        pools = claims.free_pools(
            ctx.api, cand.zone, SIZE_GB, az=None, pack=cand.weighing == "pack"
        )
        tc = time.perf_counter_ns()
        pools_ns += tc - tp
        outcome = claims.StorageOutcome.POOL_FULL
        for pool in pools:
            outcome = claims.claim(
                ctx.api, c, pool, {**record, "pool": pool.name, "host": pool.host}
            )
            if outcome is not claims.StorageOutcome.POOL_FULL:
                break
        claim_ns += time.perf_counter_ns() - tc
        if outcome is claims.StorageOutcome.OK:
            break
    else:
        raise SystemExit(f"volume {volume_uuid} could not be placed: {ranking.reasons()}")
    return {
        "loads": t1 - t0,
        "rank": t2 - t1,
        "free_pools": pools_ns,
        "claim": claim_ns,
        "total": time.perf_counter_ns() - t0,
    }


def ms_figures(ns: list[int]) -> dict[str, float]:
    ms = [x / 1e6 for x in ns]
    return {
        "p50_ms": round(boot.percentile(ms, 0.50), 4),
        "p95_ms": round(boot.percentile(ms, 0.95), 4),
        "p99_ms": round(boot.percentile(ms, 0.99), 4),
        "max_ms": round(max(ms), 4),
    }


def measure_placement(pools: int, samples: int) -> dict[str, Any]:
    warmup = max(10, samples // 20)
    worker_samples = max(1, samples // 2)
    with tempfile.TemporaryDirectory(prefix="federator-bench-volumes-") as tmp:
        t0 = time.perf_counter()
        broker = open_broker(Path(tmp), pools)
        try:
            setup_s = time.perf_counter() - t0
            db = broker.ctx.api
            with db.read() as s:
                stored = s.scalar(
                    select(func.count())
                    .select_from(StoragePool)
                    .where(StoragePool.zone == ZONE, StoragePool.reported.is_(True))
                )
            vtype = broker.settings.volumes.default_type
            timings: dict[str, list[int]] = {k: [] for k in (*STAGES, "total")}
            for n, volume in enumerate(new_volumes(db, warmup + samples, vtype)):
                stages = place_once(broker, volume, vtype)
                if n >= warmup:
                    for key, value in stages.items():
                        timings[key].append(value)
            tasks = volume_worker.VolumeTasks(broker.ctx)
            worker_ns: list[int] = []
            for volume in new_volumes(db, worker_samples, vtype):
                vol = tasks._volume(volume)
                assert vol is not None
                start = time.perf_counter_ns()
                placed = tasks._place(vol)
                worker_ns.append(time.perf_counter_ns() - start)
                assert placed, volume
            with db.read() as s:
                spread = s.execute(
                    select(func.max(StoragePool.used_gb), func.sum(StoragePool.volumes)).where(
                        StoragePool.zone == ZONE
                    )
                ).one()
        finally:
            broker.stop()
    total = timings["total"]
    total_us = [x / 1e3 for x in total]
    return {
        "pools": stored,
        "pool_gb": POOL_GB,
        "volume_gb": SIZE_GB,
        "samples": samples,
        "warmup": warmup,
        "claims": "accumulate (none released; spread puts each in the emptiest pool)",
        "setup_s": round(setup_s, 2),
        **ms_figures(total),
        "p50_us": round(boot.percentile(total_us, 0.50), 1),
        "p95_us": round(boot.percentile(total_us, 0.95), 1),
        "placements_per_s": round(len(total) / (sum(total) / 1e9), 1),
        "stages_p50_ms": {
            k: round(boot.percentile([x / 1e6 for x in timings[k]], 0.50), 4) for k in STAGES
        },
        "worker_place": {"samples": worker_samples, **ms_figures(worker_ns)},
        "volumes_in_pools": int(spread[1] or 0),
        "fullest_pool_gb": int(spread[0] or 0),
    }


# --- HTTP -----------------------------------------------------------------------------


def project_of(url: str, headers: dict[str, str]) -> str:
    """The project the token is scoped to."""
    subject = {**headers, "X-Subject-Token": headers["X-Auth-Token"]}
    r = httpx.get(f"{url}/identity/v3/auth/tokens", headers=subject, timeout=60)
    r.raise_for_status()
    project: str = r.json()["token"]["project"]["id"]
    return project


def submit(
    url: str, path: str, bodies: Callable[[int], dict[str, Any]], count: int, clients: int,
    headers: dict[str, str],
) -> tuple[float, float, list[float], int, int]:  # fmt: skip
    """POST ``count`` bodies to ``path`` from ``clients`` threads, as ``boot.submit`` does.

    :returns: (start time, wall seconds, latencies in seconds, answered 202, errors)
    """
    latencies: list[list[float]] = [[] for _ in range(clients)]
    accepted = [0] * clients
    errors = [0] * clients
    started: list[float] = []
    barrier = threading.Barrier(clients, action=lambda: started.append(time.perf_counter()))

    def run(n: int) -> None:
        with httpx.Client(base_url=url, timeout=120, headers=headers) as client:
            client.get("/")  # connect before the clock starts
            barrier.wait()
            for i in range(n, count, clients):
                t0 = time.perf_counter()
                try:
                    r = client.post(path, json=bodies(i))
                except httpx.HTTPError:
                    errors[n] += 1
                    continue
                latencies[n].append(time.perf_counter() - t0)
                accepted[n] += r.status_code == 202
                errors[n] += r.status_code != 202

    threads = [threading.Thread(target=run, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started[0]
    return started[0], wall, [x for per in latencies for x in per], sum(accepted), sum(errors)


def wait_until_settled(url: str, base: str, timeout: float, headers: dict[str, str]) -> bool:
    """Poll until no volume is ``creating``; False on timeout."""
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=url, timeout=60, headers=headers) as client:
        while time.monotonic() < deadline:
            r = client.get(f"{base}/volumes", params={"status": "creating", "limit": 1})
            r.raise_for_status()
            if not r.json()["volumes"]:
                return True
            time.sleep(0.05)
    return False


def volume_statuses(url: str, base: str, headers: dict[str, str]) -> Counter[str]:
    statuses: Counter[str] = Counter()
    marker: str | None = None
    with httpx.Client(base_url=url, timeout=60, headers=headers) as client:
        while True:
            params: dict[str, Any] = {"limit": 1000}
            if marker:
                params["marker"] = marker
            r = client.get(f"{base}/volumes/detail", params=params)
            r.raise_for_status()
            page = r.json()["volumes"]
            statuses.update(v["status"] for v in page)
            if len(page) < 1000:
                return statuses
            marker = page[-1]["id"]


def latency_figures(latencies: list[float]) -> dict[str, float | None]:
    if not latencies:
        return {"p50": None, "p99": None, "max": None}
    return {
        "p50": round(boot.percentile(latencies, 0.50) * 1000, 2),
        "p99": round(boot.percentile(latencies, 0.99) * 1000, 2),
        "max": round(max(latencies) * 1000, 2),
    }


@dataclass
class Served:
    """A ``federator serve`` child started by ``boot.start_broker``, with the admin's token
    and the scoped project; ``exit_code`` is set once it has stopped."""

    url: str
    headers: dict[str, str]
    project: str
    exit_code: int | None = None


@contextmanager
def served(sz: Sizes) -> Iterator[Served]:
    with tempfile.TemporaryDirectory(prefix="federator-bench-volumes-") as tmp:
        proc, url = boot.start_broker(Path(tmp), sz.hosts, sz.workers)
        broker = Served(url, {}, "")
        try:
            broker.headers = boot.admin_token(url, Path(tmp) / "data")
            broker.project = project_of(url, broker.headers)
            yield broker
        finally:
            proc.send_signal(signal.SIGTERM)
            broker.exit_code = proc.wait(60)


def measure_http_creates(broker: Served, sz: Sizes) -> dict[str, Any]:
    url, headers = broker.url, broker.headers
    base = f"{VOLUME}/{broker.project}"

    def body(i: int) -> dict[str, Any]:
        return {"volume": {"size": SIZE_GB, "name": f"bench-{i}"}}

    start, wall, latencies, accepted, errors = submit(
        url, f"{base}/volumes", body, sz.creates, sz.clients, headers
    )
    settled = wait_until_settled(url, base, sz.timeout, headers)
    settled_s = time.perf_counter() - start
    statuses = volume_statuses(url, base, headers)
    return {
        "creates": sz.creates,
        "clients": sz.clients,
        "accepted": accepted,
        "errors": errors,
        "submission_s": round(wall, 3),
        "accepted_per_s": round(accepted / wall, 1),
        "latency_ms": latency_figures(latencies),
        "all_settled_s": round(settled_s, 3) if settled else None,
        "settled_per_s": round(sz.creates / settled_s, 1) if settled else None,
        "available": statuses.get("available", 0),
        "error": statuses.get("error", 0),
        "other": {k: v for k, v in statuses.items() if k not in ("available", "error")},
        "config": {
            "broker": "benchmarks/boot.py start_broker (federator serve, SQLite)",
            "workers": sz.workers,
            "zone": f"local, sim, {sz.hosts} hosts, a {POOL_GB} GB pool each",
            "volume_gb": SIZE_GB,
        },
    }


# --- the server figures -----------------------------------------------------------------


def measure_boot(broker: Served, sz: Sizes) -> dict[str, Any]:
    """``benchmarks/boot.py``'s measurement, with the same counts as the volume creates."""
    url, headers = broker.url, broker.headers
    start, wall, latencies, accepted = boot.submit(url, sz.creates, sz.clients, headers)
    built = boot.wait_until_built(url, sz.timeout, headers)
    active_s = time.perf_counter() - start
    statuses = boot.count_statuses(url, headers)
    return {
        "boots": sz.creates,
        "clients": sz.clients,
        "accepted": accepted,
        "submission_s": round(wall, 3),
        "accepted_per_s": round(accepted / wall, 1),
        "latency_ms": latency_figures(latencies),
        "all_active_s": round(active_s, 3) if built else None,
        "active_per_s": round(sz.creates / active_s, 1) if built else None,
        "active": statuses.get("ACTIVE", 0),
        "error": statuses.get("ERROR", 0),
    }


def measure_http(sz: Sizes) -> tuple[dict[str, Any], dict[str, Any]]:
    """The volume creates, then the boots: on two fresh brokers, or (``sz.shared``) one
    after the other on one broker."""
    if sz.shared:
        with served(sz) as broker:
            volumes = measure_http_creates(broker, sz)
            boots = measure_boot(broker, sz)
        volumes["serve_exit_code"] = boots["serve_exit_code"] = broker.exit_code
        volumes["config"]["broker"] += "; the boots ran on it next"
        return volumes, boots
    with served(sz) as broker:
        volumes = measure_http_creates(broker, sz)
    volumes["serve_exit_code"] = broker.exit_code
    with served(sz) as broker:
        boots = measure_boot(broker, sz)
    boots["serve_exit_code"] = broker.exit_code
    return volumes, boots


def measure_server_placement(hosts: int, samples: int) -> dict[str, Any]:
    """Host selection (``placement.py``'s plain workload) and the server claim
    (``group_claims.py``'s plain workload), each over a zone of ``hosts`` hosts."""
    rows = server_placement.make_rows(random.Random(hosts), hosts)
    select_figures = server_placement.run(rows, "plain", samples, 0)
    with tempfile.TemporaryDirectory(prefix="federator-bench-volumes-") as tmp:
        db = Database("api", f"sqlite:///{Path(tmp) / 'api.sqlite'}")
        try:
            _, _, free = group_claims.setup(db, hosts, 0)

            def no_group(_db: Database, _member: str) -> None:
                return None

            group_claims.run(db, free, max(10, samples // 10), no_group)
            claim_figures = group_claims.summary(group_claims.run(db, free, samples, no_group))
        finally:
            db.dispose()
    return {
        "hosts": hosts,
        "samples": samples,
        "select_p50_ms": select_figures["p50_ms"],
        "select_p99_ms": select_figures["p99_ms"],
        "claim_p50_ms": claim_figures["p50_ms"],
        "claim_p99_ms": claim_figures["p99_ms"],
        "p50_ms": round(select_figures["p50_ms"] + claim_figures["p50_ms"], 4),
        "timed": "HostScheduler.select (placement.py plain) + compute.claims.claim "
        "(group_claims.py plain), measured apart",
    }


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small run (a smoke test)")
    for name in ("pools", "samples", "creates", "clients", "workers", "hosts"):  # overrides
        parser.add_argument(f"--{name}", type=int, default=None)
    args = parser.parse_args(argv)
    base = QUICK if args.quick else FULL
    names = ("pools", "samples", "creates", "clients", "workers", "hosts")
    sz = replace(base, **{k: getattr(args, k) for k in names if getattr(args, k) is not None})
    if min(sz.pools, sz.samples, sz.creates, sz.clients, sz.workers, sz.hosts) < 1:
        parser.error("every count must be at least 1")
    if sz.creates * SIZE_GB > sz.hosts * POOL_GB or sz.creates > sz.hosts * 16:
        parser.error(f"{sz.hosts} hosts cannot hold {sz.creates} volumes and boots")
    logging.basicConfig(level=logging.WARNING)

    started = time.perf_counter()
    vol_placement = measure_placement(sz.pools, sz.samples)
    placement_s = time.perf_counter() - started
    http, boots = measure_http(sz)
    http_s = time.perf_counter() - started - placement_s
    server = measure_server_placement(sz.pools, sz.samples)
    server_s = time.perf_counter() - started - placement_s - http_s
    doc = {
        "benchmark": "volumes",
        "quick": args.quick,
        "placement": vol_placement,
        "http_creates": http,
        "boot": {**boots, "placement": server},
        "ratios": {
            "accepted_per_s": ratio(http["accepted_per_s"], boots["accepted_per_s"]),
            "settled_per_s_over_active_per_s": ratio(http["settled_per_s"], boots["active_per_s"]),
            "post_latency_p50": ratio(http["latency_ms"]["p50"], boots["latency_ms"]["p50"]),
            "placement_p50": ratio(vol_placement["p50_ms"], server["p50_ms"]),
        },
        "database": "sqlite (temporary directory)",
        "elapsed_s": {
            "placement": round(placement_s, 1),
            "http": round(http_s, 1),
            "server_placement": round(server_s, 1),
            "total": round(time.perf_counter() - started, 1),
        },
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
    }
    json.dump(doc, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
