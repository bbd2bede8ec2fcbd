"""Virtual-cluster benchmark: the cost of one gang decision and its claims.

Usage::

    python benchmarks/vclusters.py [--quick] [--hosts 10000] [--samples 200] [--warmup 10]

The broker is ``benchmarks/volumes.py``'s (its ``open_broker``): an in-process ``Broker``
(SQLite in a temporary directory, workers and monitor not started) with one simulated
local zone of ``--hosts`` hosts, each with its host-local pool of ``volume_pool_gb``
(1000 GB, the sim's default ``volume_pools = "host"``), stored by the broker's own
start-up refresh.

The cluster is 100 members, parsed from an API body by ``vclusters.spec.parse_cluster``:
50 servers of m1.small in one hard anti-affinity grouping (scope host), and 50 volumes of
1 GB, each in a hard affinity grouping with one server. One sample is the whole decision
and its claims, as the broker makes them:

1. ``inputs``: ``vclusters.inputs.gather`` (the rankings, the zone's hosts passing the
   scheduler's filters, its pools, the ceilings);
2. ``plan``: ``vclusters.planner.plan`` over those zones;
3. ``claims``: ``vclusters.claims.claim_plan``, all 100 claims in one transaction.

Each stage and their sum are timed with ``time.perf_counter_ns``. After each sample the
claims are given back with ``compute.claims.release`` (the scheduler's host cache set from
the usage it returns) and ``volumes.claims.release``, untimed, so every sample starts from
the same state; the end of the run checks that the zone's, hosts' and pools' counters are
back where they started. Every plan is checked: the 50 servers on 50 distinct hosts, each
volume in a pool of its server's host.

The target (the issue's) is a p50 of at most 50 ms for decision plus claims.
``--quick`` is a smoke test (500 hosts, 20 samples). Prints one JSON document; the exit
status is 0 whether or not the target is met.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import volumes as volume_bench
from sqlalchemy import func, select

from federator.broker import Broker
from federator.compute import claims as server_claims
from federator.compute.context import ComputeContext
from federator.storage.models import Allocation, Host, StoragePool, VolumeAllocation, Zone
from federator.vclusters.claims import claim_plan
from federator.vclusters.inputs import gather
from federator.vclusters.planner import (
    SERVER,
    Assignment,
    Member,
    Plan,
    PoolColumns,
    ZoneOption,
    plan,
)
from federator.vclusters.spec import ClusterSpec, parse_cluster
from federator.volumes import claims as volume_claims

PROJECT = "bench"
SERVERS = 50
FLAVOR = "m1.small"
IMAGE = "cirros"
VOLUME_GB = 1
TARGET_P50_MS = 50
STAGES = ("inputs", "plan", "claims")


@dataclass(frozen=True, slots=True)
class Sizes:
    hosts: int
    samples: int
    warmup: int


FULL = Sizes(hosts=10000, samples=200, warmup=10)
QUICK = Sizes(hosts=500, samples=20, warmup=2)


def cluster_body(servers: int) -> dict[str, Any]:
    """The API body of the cluster: ``servers`` servers kept apart, each with its volume."""
    instances: list[dict[str, Any]] = []
    groupings: list[dict[str, Any]] = [
        {
            "name": "apart",
            "membersRef": [f"server-{i}" for i in range(servers)],
            "spec": {"rule": "anti-affinity", "scope": "host"},
        }
    ]
    for i in range(servers):
        instances.append(
            {"name": f"server-{i}", "type": "server",
             "spec": {"imageRef": IMAGE, "flavorRef": FLAVOR}}
        )  # fmt: skip
        instances.append({"name": f"volume-{i}", "type": "volume", "spec": {"size": VOLUME_GB}})
        groupings.append(
            {"name": f"data-{i}", "membersRef": [f"server-{i}", f"volume-{i}"],
             "spec": {"rule": "affinity"}}
        )  # fmt: skip
    return {"vcluster": {"name": "bench", "instances": instances, "groupings": groupings}}


def check_plan(p: Plan, members: Sequence[Member], zones: Sequence[ZoneOption]) -> str | None:
    """What is wrong with the plan: servers sharing a host, a volume outside its server's
    host pool; None when it is right."""
    if not p.ok:
        return f"no plan: {p.fault} ({p.message})"
    kinds = {m.name: m.kind for m in members}
    servers = {a.member: a for a in p.assignments if kinds[a.member] == SERVER}
    hosts = {(a.zone, a.host) for a in servers.values()}
    if None in {h for _, h in hosts} or len(hosts) != len(servers):
        return f"{len(servers)} servers on {len(hosts)} distinct hosts"
    # Read from the columns: a PoolSlot per pool, untimed, would still feed the collector.
    pool_hosts: dict[str, dict[str, str | None]] = {}
    for z in zones:
        cols = PoolColumns.of(z.pools)
        pool_hosts[z.name] = dict(zip(cols.names, cols.hosts, strict=True))
    for a in p.assignments:
        if kinds[a.member] == SERVER:
            continue
        s = servers[a.member.replace("volume-", "server-")]
        if (a.zone, pool_hosts.get(a.zone, {}).get(a.pool or "")) != (s.zone, s.host):
            return f"{a.member} in pool {a.pool} of zone {a.zone}, its server on {s.host}"
    return None


def release(ctx: ComputeContext, assignments: Sequence[Assignment],
            kinds: Mapping[str, str], uuids: Mapping[str, str]) -> None:  # fmt: skip
    """Give back every member's claim, as a delete does, and bring the host cache level."""
    for a in assignments:
        if kinds[a.member] == SERVER:
            gone = server_claims.release(ctx.api, uuids[a.member])
            assert gone is not None, a.member
            u = gone.host_usage
            if u is not None:
                ctx.hosts.set_usage(
                    u.host_id, u.vcpus_used, u.ram_used_mb, u.disk_used_gb, u.instances
                )
        else:
            assert volume_claims.release(ctx.api, uuids[a.member]), a.member


def ledger(broker: Broker) -> tuple[Any, ...]:
    """The counters a sample changes, summed: zone, hosts, pools, allocation rows."""
    with broker.ctx.api.read() as s:
        zone = s.execute(
            select(Zone.instances, Zone.vcpus_used, Zone.ram_used_mb, Zone.disk_used_gb,
                   Zone.volumes, Zone.volume_gb_used).where(Zone.name == volume_bench.ZONE)
        ).one()  # fmt: skip
        hosts = s.execute(
            select(func.sum(Host.instances), func.sum(Host.ram_used_mb), func.sum(Host.vcpus_used))
        ).one()
        pools = s.execute(
            select(func.sum(StoragePool.volumes), func.sum(StoragePool.free_gb))
        ).one()
        rows = (
            s.scalar(select(func.count()).select_from(Allocation)),
            s.scalar(select(func.count()).select_from(VolumeAllocation)),
        )
    return (*zone, *hosts, *pools, *rows)


def measure(sz: Sizes) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="federator-bench-vclusters-") as tmp:
        t0 = time.perf_counter()
        broker = volume_bench.open_broker(Path(tmp), sz.hosts)
        try:
            setup_s = time.perf_counter() - t0
            return run(broker, sz, setup_s)
        finally:
            broker.stop()


def run(broker: Broker, sz: Sizes, setup_s: float) -> dict[str, Any]:
    ctx = broker.ctx
    spec: ClusterSpec = parse_cluster(cluster_body(SERVERS), broker.settings)
    members = spec.members(broker.settings)
    kinds = {m.name: m.kind for m in members}
    before = ledger(broker)
    with ctx.api.read() as s:
        pools = s.scalar(
            select(func.count())
            .select_from(StoragePool)
            .where(StoragePool.zone == volume_bench.ZONE, StoragePool.reported.is_(True))
        )
    timings: dict[str, list[int]] = {k: [] for k in (*STAGES, "total")}
    release_ns: list[int] = []
    tried: list[int] = []
    problems: list[str] = []
    hosts_offered = 0
    for n in range(sz.warmup + sz.samples):
        uuids = {m.name: str(uuid.uuid4()) for m in members}
        t0 = time.perf_counter_ns()
        found = gather(ctx, PROJECT, members)
        t1 = time.perf_counter_ns()
        p = plan(members, spec.groupings, found.zones)
        t2 = time.perf_counter_ns()
        if not p.ok:
            raise SystemExit(f"sample {n}: no plan: {p.fault} {p.blocked_by}: {p.message}")
        claimed = claim_plan(ctx, p, members, uuids, found.ceilings)
        t3 = time.perf_counter_ns()
        if not claimed.ok:
            raise SystemExit(
                f"sample {n}: claim refused: {claimed.member} {claimed.outcome} "
                f"by {claimed.resource}"
            )
        wrong = check_plan(p, members, found.zones)
        if wrong is not None:
            problems.append(f"sample {n}: {wrong}")
        hosts_offered = sum(len(z.hosts) for z in found.zones)
        r0 = time.perf_counter_ns()
        release(ctx, p.assignments, kinds, uuids)
        r1 = time.perf_counter_ns()
        if n < sz.warmup:
            continue
        for key, value in zip((*STAGES, "total"), (t1 - t0, t2 - t1, t3 - t2, t3 - t0),
                              strict=True):  # fmt: skip
            timings[key].append(value)
        release_ns.append(r1 - r0)
        tried.append(p.tried)
    after = ledger(broker)
    figures = volume_bench.ms_figures
    return {
        "hosts": sz.hosts,
        "hosts_offered": hosts_offered,
        "pools": pools,
        "members": len(members),
        "servers": sum(1 for m in members if m.kind == SERVER),
        "volumes": sum(1 for m in members if m.kind != SERVER),
        "groupings": len(spec.groupings),
        "samples": sz.samples,
        "warmup": sz.warmup,
        "setup_s": round(setup_s, 2),
        **figures(timings["total"]),
        "stages": {k: figures(timings[k]) for k in STAGES},
        "tried": {"min": min(tried), "max": max(tried)},
        "release_p50_ms": figures(release_ns)["p50_ms"],
        "checks": {
            "plans_checked": sz.warmup + sz.samples,
            "distinct_hosts_and_host_pools": not problems,
            "problems": problems[:5],
            "state_restored": before == after,
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small run (a smoke test)")
    for name in ("hosts", "samples", "warmup"):  # overrides
        parser.add_argument(f"--{name}", type=int, default=None)
    args = parser.parse_args(argv)
    base = QUICK if args.quick else FULL
    names = ("hosts", "samples", "warmup")
    sz = replace(base, **{k: getattr(args, k) for k in names if getattr(args, k) is not None})
    if sz.hosts < SERVERS or sz.samples < 1 or sz.warmup < 0:
        parser.error(f"at least {SERVERS} hosts, one sample and no negative warm-up")
    logging.basicConfig(level=logging.WARNING)

    started = time.perf_counter()
    placement = measure(sz)
    doc = {
        "benchmark": "vclusters",
        "quick": args.quick,
        "placement": placement,
        "target_p50_ms": TARGET_P50_MS,
        "meets_target": placement["p50_ms"] <= TARGET_P50_MS,
        "config": {
            "broker": "benchmarks/volumes.py open_broker (in-process, SQLite, spread policy)",
            "zone": f"{volume_bench.ZONE}, sim, {sz.hosts} hosts, a host-local "
            f"{volume_bench.POOL_GB} GB pool each",
            "cluster": f"{SERVERS} x {FLAVOR} in one anti-affinity grouping (scope host), "
            f"{SERVERS} x {VOLUME_GB} GB volumes each affine to one server",
            "timed": "inputs.gather + planner.plan + claims.claim_plan (one transaction); "
            "release untimed",
        },
        "database": "sqlite (temporary directory)",
        "elapsed_s": round(time.perf_counter() - started, 1),
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
