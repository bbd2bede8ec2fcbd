"""Server-group claim benchmark: what a group's guard adds to the claim transaction.

Usage::

    python benchmarks/group_claims.py [--claims N] [--members M] [--hosts H] [--database URL]

One zone of ``H`` hosts in a fresh API database (SQLite in a temporary directory unless
``--database`` names another, e.g. an empty PostgreSQL database). An anti-affinity group
already has ``M`` members, each holding an allocation on its own host. Two workloads of
``N`` claims each, timed around ``federator.compute.claims.claim`` (one transaction):

* ``plain``: a claim on a free host with no group;
* ``group``: the same claim for a new member of the group, with its guard (lock the
  group's row, read where its members are, check the rule).

Each claim is released straight after, outside the timing, so every claim sees the same
state. Hosts are chosen round-robin among those holding no member. Prints one JSON
document with p50/p99 per workload and the ratio of the group p50 to the plain p50.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from federator.compute import claims
from federator.groups.placement import Guard
from federator.groups.rules import ZoneMode
from federator.policy.evaluate import Limits
from federator.storage import migrate
from federator.storage.db import Database
from federator.storage.models import (
    Allocation,
    Host,
    ServerGroup,
    ServerGroupMember,
    Zone,
    utcnow,
)

ZONE = "bench"
RES = claims.Resources(vcpus=1, ram_mb=1024, disk_gb=10)
NO_LIMITS = Limits(ram_mb=None, vcpus=None, instances=None)
TARGET_RATIO = 2.0


def setup(db: Database, hosts: int, members: int) -> tuple[str, list[int], list[int]]:
    """The zone, its hosts, and a group whose members occupy the first ``members`` hosts;
    returns the group uuid, the occupied host ids and the free ones."""
    migrate.upgrade(db, "api")
    group = str(uuid.uuid4())
    with db.write() as s:
        s.add(Zone(name=ZONE, kind="local", driver="sim", cell="cell1"))
        s.flush()
        rows = [
            Host(
                zone=ZONE,
                name=f"cmp{i:05d}",
                az=ZONE,
                enabled=True,
                vcpus=64,
                ram_mb=262144,
                disk_gb=4000,
            )
            for i in range(hosts)
        ]
        s.add_all(rows)
        s.add(
            ServerGroup(
                uuid=group,
                name="bench",
                project_id="p",
                user_id="u",
                policy="anti-affinity",
                scope="host",
                created_at=utcnow(),
            )
        )
        s.flush()
        ids = [h.id for h in rows]
        for host_id in ids[:members]:
            member = str(uuid.uuid4())
            s.add(ServerGroupMember(instance_uuid=member, group_uuid=group, created_at=utcnow()))
            s.add(
                Allocation(
                    instance_uuid=member,
                    zone=ZONE,
                    host_id=host_id,
                    vcpus=1,
                    ram_mb=1024,
                    disk_gb=10,
                )
            )
    return group, ids[:members], ids[members:]


def run(db: Database, free: list[int], n: int, guard_of: Any) -> list[float]:
    """``n`` claims on the free hosts, each released after; milliseconds per claim."""
    times: list[float] = []
    for i in range(n):
        host_id = free[i % len(free)]
        member = str(uuid.uuid4())
        guard = guard_of(db, member)
        t0 = time.perf_counter_ns()
        result = claims.claim(
            db,
            instance_uuid=member,
            zone=ZONE,
            host_id=host_id,
            host_name=None,
            res=RES,
            limits=NO_LIMITS,
            require_not_bursting=False,
            guard=guard,
        )
        times.append((time.perf_counter_ns() - t0) / 1e6)
        assert result.outcome is claims.ClaimOutcome.OK, result
        if guard is not None:
            with db.write() as s:
                s.query(ServerGroupMember).filter_by(instance_uuid=member).delete()
        claims.release(db, member)
    return times


def summary(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {
        "p50_ms": round(statistics.median(ordered), 4),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 4),
        "claims_per_s": round(len(ordered) / (sum(ordered) / 1000), 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--claims", type=int, default=1000)
    ap.add_argument("--members", type=int, default=1000)
    ap.add_argument("--hosts", type=int, default=10000)
    ap.add_argument("--database", default=None, help="an empty database URL (default SQLite)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database or f"sqlite:///{Path(tmp) / 'api.sqlite'}"
        db = Database("api", url)
        backend = "sqlite" if db.is_sqlite else make_url(url).get_backend_name()
        group, _, free = setup(db, args.hosts, args.members)
        modes = {ZONE: ZoneMode.HOSTS}

        def grouped(_db: Database, member: str) -> Guard:
            with _db.write() as s:
                s.add(
                    ServerGroupMember(instance_uuid=member, group_uuid=group, created_at=utcnow())
                )
            return Guard(group, member, modes)

        warm = max(10, args.claims // 10)
        run(db, free, warm, lambda _db, _m: None)
        run(db, free, warm, grouped)
        plain = summary(run(db, free, args.claims, lambda _db, _m: None))
        with_group = summary(run(db, free, args.claims, grouped))
        db.dispose()
    ratio = round(with_group["p50_ms"] / plain["p50_ms"], 3)
    print(
        json.dumps(
            {
                "benchmark": "group_claims",
                "database": backend,
                "hosts": args.hosts,
                "members": args.members,
                "claims": args.claims,
                "timed": "federator.compute.claims.claim (one transaction), released after",
                "results": {"plain": plain, "group": with_group},
                "group_p50_ratio": ratio,
                "target_ratio_max": TARGET_RATIO,
                "meets_target": ratio <= TARGET_RATIO,
                "python": platform.python_version(),
                "machine": platform.machine(),
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
