"""Host placement benchmark: cost of one scheduling decision as a zone grows.

Usage::

    python benchmarks/placement.py [--decisions N] [--seed S] [--sizes 100,1000,10000]

For each zone size it builds one zone with four AZs, mixed host sizes, random
existing usage, ~3% disabled hosts and host aggregates whose metadata the
aggregate filters read (see ``AGGREGATES``: ssd hosts, a Windows pool, a
tenant-isolated pool, a dedicated pool with its own CPU ratio and instance
limit). The scheduler is built from the default ``[scheduler]`` section, every
filter enabled, through the same entry points the broker uses. Requests carry
flavor extra specs, image properties and a project (see ``request``). It runs
four workloads of N decisions each on a fresh copy of that zone:

* ``plain``: every filter, default weighers, ``"spread"``;
* ``pack``: the same with ``"pack"``;
* ``anti_affinity``: every request belongs to one anti-affinity group whose
  members occupy ~50 hosts (the group moves as members are placed);
* ``anti_affinity_1000``: the same with a large group: 1,000 members on 1,000
  distinct hosts at 10,000 hosts, min(1,000, size/2) hosts for a smaller zone
  (``group_hosts`` in the output), all of them in ``anti_affinity_hosts``. Each
  member placed joins the group and the oldest member leaves it, so the group
  keeps its size. ``anti_affinity_1000_p50_ratio`` is its p50 over the ``plain``
  p50 of the same run, per zone size; the target bounds it at 10,000 hosts.

Only ``HostScheduler.select`` is timed (``time.perf_counter_ns``). After each
decision the chosen host's usage is raised with ``set_usage``, as the claim in
the real flow does; to keep the zone from filling up, the oldest placement is
released once the zone holds one placement per host.

``with_claim`` (per zone size, ``--claim-decisions`` decisions, ``plain`` requests) times a
whole decision as the builder makes it, on a SQLite database in a temporary directory
holding the zone and its hosts: the zone loads the policy reads (``zone_loads``), then
``HostScheduler.select``, then the claim transaction (``compute.claims.claim``: the zone's
and the host's conditional updates and the allocation row), then, once the zone holds one
placement per host, the release of the oldest (``claims.release``), all inside the timed
span. The policy's own zone ranking is not run (one zone, no policy). Prints one JSON
document.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from federator.compute import claims
from federator.config import SchedulerConfig
from federator.hosts.inventory import zone_loads
from federator.policy.evaluate import Limits
from federator.scheduler import HostRequest, HostRow, HostScheduler, HostTable
from federator.scheduler.loader import scheduler_from_config
from federator.storage import migrate
from federator.storage.db import Database
from federator.storage.models import Host, Zone

ZONE = "bench"
AZS = ("az1", "az2", "az3", "az4")
# (vcpus, ram_mb, disk_gb)
HOST_SIZES = ((16, 65536, 500), (32, 131072, 1000), (64, 262144, 2000), (96, 524288, 4000))
FLAVORS = ((1, 2048, 20), (2, 4096, 40), (4, 8192, 80), (8, 16384, 160))
GROUP_HOSTS = 50
LARGE_GROUP_HOSTS = 1000
WARMUP = 100
SCENARIOS = ("plain", "pack", "anti_affinity", "anti_affinity_1000")
ANTI_AFFINITY = frozenset({"anti_affinity", "anti_affinity_1000"})
TARGETS = {
    "p50_ms_at_10000": 2.0,
    "p99_ms_at_10000": 5.0,
    "anti_affinity_1000_p50_ratio_max": 2.0,
}
# Every host is in a base aggregate without metadata; these add metadata to a share of
# the hosts, chosen at random (a host may be in several): (share, metadata).
AGGREGATES: tuple[tuple[float, dict[str, str]], ...] = (
    (0.30, {"ssd": "true"}),
    (0.10, {"ssd": "false"}),
    (0.10, {"os_distro": "windows"}),
    (0.05, {"filter_tenant_id": "gold,platinum"}),
    (0.10, {"cpu_allocation_ratio": "1.0", "max_instances_per_host": "12"}),
)
MAX_INSTANCES_PER_HOST = 60  # the configured default limit
PROJECTS = (*(f"p{n:02d}" for n in range(18)), "gold", "platinum")
IMAGE_PROPERTIES: tuple[dict[str, str], ...] = (
    {},
    {"os_distro": "ubuntu"},
    {"os_distro": "ubuntu"},
    {"os_distro": "windows"},
)


@dataclass(frozen=True, slots=True)
class Placement:
    host: int
    vcpus: int
    ram_mb: int
    disk_gb: int


def host_metadata(rng: random.Random) -> dict[str, frozenset[str]]:
    """The merged metadata of one host's aggregates, drawn from ``AGGREGATES``."""
    merged: dict[str, set[str]] = {}
    for share, metadata in AGGREGATES:
        if rng.random() < share:
            for key, value in metadata.items():
                merged.setdefault(key, set()).add(value)
    return {k: frozenset(v) for k, v in merged.items()}


def make_rows(rng: random.Random, n: int) -> list[HostRow]:
    """One zone of ``n`` hosts with random sizes, usage, aggregate metadata and a few
    disabled hosts."""
    rows = []
    for i in range(n):
        vcpus, ram, disk = rng.choice(HOST_SIZES)
        used = rng.uniform(0.0, 0.7)
        metadata = host_metadata(rng)
        rows.append(
            HostRow(
                id=i,
                zone=ZONE,
                name=f"cmp{i:05d}",
                az=AZS[i % len(AZS)],
                enabled=rng.random() >= 0.03,
                vcpus=vcpus,
                ram_mb=ram,
                disk_gb=disk,
                vcpus_used=int(vcpus * 4.0 * used),
                ram_used_mb=int(ram * used),
                disk_used_gb=int(disk * used * rng.uniform(0.5, 1.0)),
                instances=int(vcpus * used),
                metadata=metadata,
            )
        )
    return rows


def request(rng: random.Random, scenario: str, group: deque[str]) -> HostRequest:
    """One boot: a flavor (a quarter of them asking for ssd hosts), an image (most with
    an ``os_distro``), one of 20 projects."""
    vcpus, ram, disk = rng.choice(FLAVORS)
    return HostRequest(
        zone=ZONE,
        vcpus=vcpus,
        ram_mb=ram,
        disk_gb=disk,
        weighing="pack" if scenario == "pack" else "spread",
        anti_affinity_hosts=frozenset(group) if scenario in ANTI_AFFINITY else frozenset(),
        project_id=rng.choice(PROJECTS),
        extra_specs={"aggregate_instance_extra_specs:ssd": "true"} if rng.random() < 0.25 else {},
        image_properties=rng.choice(IMAGE_PROPERTIES),
    )


def group_hosts(scenario: str, size: int) -> int:
    """How many distinct hosts the workload's anti-affinity group occupies (0: none)."""
    if scenario == "anti_affinity":
        return min(GROUP_HOSTS, size)
    if scenario == "anti_affinity_1000":
        return min(LARGE_GROUP_HOSTS, size // 2)
    return 0


def make_scheduler() -> HostScheduler:
    """The scheduler the broker builds from a default ``[scheduler]`` section."""
    return scheduler_from_config(SchedulerConfig(max_instances_per_host=MAX_INSTANCES_PER_HOST))


def adjust(table: HostTable, p: Placement, sign: int) -> None:
    """Add (sign=1) or release (sign=-1) one placement's usage, as a claim would."""
    with table.lock:
        cur = table.row_at(p.host)
        table.set_usage(
            p.host,
            vcpus_used=max(0, cur.vcpus_used + sign * p.vcpus),
            ram_used_mb=max(0, cur.ram_used_mb + sign * p.ram_mb),
            disk_used_gb=max(0, cur.disk_used_gb + sign * p.disk_gb),
            instances=max(0, cur.instances + sign),
        )


def run(rows: list[HostRow], scenario: str, decisions: int, seed: int) -> dict[str, Any]:
    """Run one workload on a fresh table; return latency figures in ms."""
    rng = random.Random(seed)
    table = HostTable.from_rows(rows)
    sched = make_scheduler()
    names = [r.name for r in rows]
    n_group = group_hosts(scenario, len(rows))
    group: deque[str] = deque(rng.sample(names, n_group)) if n_group else deque()
    placed: deque[Placement] = deque()
    timings = np.empty(decisions, dtype=np.int64)
    no_valid_host = 0
    for n in range(WARMUP + decisions):
        req = request(rng, scenario, group)
        start = time.perf_counter_ns()
        chosen = sched.select(table, req)
        elapsed = time.perf_counter_ns() - start
        if n >= WARMUP:
            timings[n - WARMUP] = elapsed
            no_valid_host += not chosen
        if not chosen:
            continue
        i = table.index_of(ZONE, chosen[0])
        assert i is not None
        p = Placement(i, req.vcpus, req.ram_mb, req.disk_gb)
        adjust(table, p, 1)
        placed.append(p)
        if len(placed) > len(rows):
            adjust(table, placed.popleft(), -1)
        if scenario in ANTI_AFFINITY:
            group.append(chosen[0])
            if len(group) > n_group:
                group.popleft()
    ms = timings / 1e6
    group_figures = {"group_hosts": n_group} if scenario in ANTI_AFFINITY else {}
    return {
        **group_figures,
        "decisions_per_s": round(decisions / (float(timings.sum()) / 1e9), 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 4),
        "p99_ms": round(float(np.percentile(ms, 99)), 4),
        "max_ms": round(float(ms.max()), 4),
        "no_valid_host": no_valid_host,
    }


def seed_database(db: Database, rows: list[HostRow]) -> list[int]:
    """The zone and its hosts (capacity and usage as in ``rows``); returns host ids by row."""
    migrate.upgrade(db, "api")
    with db.write() as s:
        s.add(Zone(name=ZONE, kind="local", driver="sim", cell="cell1"))
        s.flush()
        hosts = [
            Host(
                zone=ZONE,
                name=r.name,
                az=r.az,
                enabled=r.enabled,
                vcpus=r.vcpus,
                ram_mb=r.ram_mb,
                disk_gb=r.disk_gb,
                vcpus_used=r.vcpus_used,
                ram_used_mb=r.ram_used_mb,
                disk_used_gb=r.disk_used_gb,
                instances=r.instances,
            )
            for r in rows
        ]
        s.add_all(hosts)
        s.flush()
        return [h.id for h in hosts]


def run_with_claim(rows: list[HostRow], decisions: int, seed: int) -> dict[str, Any]:
    """Whole ``plain`` decisions: loads + select + claim (+ release of the oldest)."""
    rng = random.Random(seed)
    table = HostTable.from_rows(rows)
    sched = make_scheduler()
    no_limits = Limits(ram_mb=None, vcpus=None, instances=None)
    warmup = min(WARMUP, decisions)
    stages = {k: np.empty(decisions, dtype=np.int64) for k in ("select", "claim", "release")}
    timings = np.empty(decisions, dtype=np.int64)
    refused = no_valid_host = 0
    with tempfile.TemporaryDirectory(prefix="federator-placement-") as tmp:
        db = Database("api", f"sqlite:///{tmp}/api.sqlite")
        try:
            host_ids = seed_database(db, rows)
            placed: deque[tuple[str, Placement]] = deque()
            for n in range(warmup + decisions):
                req = request(rng, "plain", deque())
                t0 = time.perf_counter_ns()
                zone_loads(db)
                chosen = sched.select(table, req)
                t1 = time.perf_counter_ns()
                t2 = t3 = t1
                if chosen:
                    i = table.index_of(ZONE, chosen[0])
                    assert i is not None
                    member = str(uuid.uuid4())
                    result = claims.claim(
                        db,
                        instance_uuid=member,
                        zone=ZONE,
                        host_id=host_ids[i],
                        host_name=chosen[0],
                        res=claims.Resources(req.vcpus, req.ram_mb, req.disk_gb),
                        limits=no_limits,
                        require_not_bursting=False,
                    )
                    t2 = time.perf_counter_ns()
                    if result.outcome is claims.ClaimOutcome.OK:
                        p = Placement(i, req.vcpus, req.ram_mb, req.disk_gb)
                        adjust(table, p, 1)
                        placed.append((member, p))
                        if len(placed) > len(rows):
                            oldest, old = placed.popleft()
                            claims.release(db, oldest)
                            adjust(table, old, -1)
                    else:
                        refused += n >= warmup
                    t3 = time.perf_counter_ns()
                if n >= warmup:
                    k = n - warmup
                    timings[k] = t3 - t0
                    stages["select"][k] = t1 - t0
                    stages["claim"][k] = t2 - t1
                    stages["release"][k] = t3 - t2
                    no_valid_host += not chosen
        finally:
            db.dispose()
    ms = timings / 1e6
    return {
        "decisions": decisions,
        "decisions_per_s": round(decisions / (float(timings.sum()) / 1e9), 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 4),
        "p99_ms": round(float(np.percentile(ms, 99)), 4),
        "max_ms": round(float(ms.max()), 4),
        "stages_p50_ms": {
            "loads_and_select": round(float(np.percentile(stages["select"] / 1e6, 50)), 4),
            "claim": round(float(np.percentile(stages["claim"] / 1e6, 50)), 4),
            "release": round(float(np.percentile(stages["release"] / 1e6, 50)), 4),
        },
        "claims_refused": refused,
        "no_valid_host": no_valid_host,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=2000, help="timed decisions per run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sizes", default="100,1000,10000", help="comma-separated host counts")
    parser.add_argument(
        "--claim-decisions", type=int, default=500, help="timed whole decisions per size"
    )
    args = parser.parse_args(argv)
    if args.decisions < 1 or args.claim_decisions < 1:
        parser.error("--decisions and --claim-decisions must be at least 1")
    sizes = [int(s) for s in args.sizes.split(",")]

    results: dict[str, dict[str, Any]] = {}
    with_claim: dict[str, dict[str, Any]] = {}
    for size in sizes:
        rows = make_rows(random.Random(args.seed * 1_000_003 + size), size)
        results[str(size)] = {
            scenario: run(rows, scenario, args.decisions, args.seed) for scenario in SCENARIOS
        }
        with_claim[str(size)] = run_with_claim(rows, args.claim_decisions, args.seed)
    ratios = {
        size: round(r["anti_affinity_1000"]["p50_ms"] / r["plain"]["p50_ms"], 3)
        for size, r in results.items()
    }

    at_10000 = results.get("10000")
    meets_latency = at_10000 is not None and all(
        r["p50_ms"] <= TARGETS["p50_ms_at_10000"] and r["p99_ms"] <= TARGETS["p99_ms_at_10000"]
        for r in at_10000.values()
    )
    meets_ratio = "10000" in ratios and (
        ratios["10000"] <= TARGETS["anti_affinity_1000_p50_ratio_max"]
    )
    sched = make_scheduler()
    doc = {
        "benchmark": "placement",
        "decisions": args.decisions,
        "seed": args.seed,
        "timed": "HostScheduler.select only; set_usage applied after each decision",
        "filters": [f.name for f in sched.filters],
        "weighers": {w.name: w.multiplier for w in sched.weighers},
        "aggregates": [{"share": share, "metadata": meta} for share, meta in AGGREGATES],
        "results": results,
        "with_claim_timed": "zone_loads + select + claims.claim (+ claims.release of the "
        "oldest once the zone holds one placement per host), SQLite",
        "with_claim": with_claim,
        "anti_affinity_1000_p50_ratio": ratios,
        "targets": TARGETS,
        "meets_anti_affinity_1000_p50_ratio_max": meets_ratio,
        "meets_targets": meets_latency and meets_ratio,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
    }
    json.dump(doc, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
