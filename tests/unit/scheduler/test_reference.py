"""Randomised comparison of the vectorised scheduler with a slow pure-Python reference.

The reference restates every default filter and weigher over plain ``HostRow``
objects, one host at a time, the way the rules are documented. Tables are
random (fixed seeds) with several zones, coarse usage steps so that ties and
exact-fit boundaries are common, and state is mutated between decisions.
"""

from __future__ import annotations

import dataclasses
import math
import random

import pytest

from federator.scheduler import HostRequest, HostRow, HostScheduler, HostTable
from federator.scheduler.weighers import InstancesWeigher, RamWeigher, VcpuWeigher
from tests.unit.scheduler.factory import random_rows

ZONES = ("z1", "z2", "z3")
# (ram, vcpu, instances); the all-zero and instances-only sets make ties across
# the top-k cut common, exercising the host-order tie-break.
MULTIPLIERS = [
    (1.0, 1.0, 0.5),
    (0.0, 0.0, 0.0),
    (0.0, 0.0, 1.0),
    (2.5, 0.3, 4.0),
    (-1.0, 1.0, 0.0),
    (1.0, 0.0, -2.0),
]


def _free(r: HostRow) -> tuple[int, int, int]:
    return (
        math.floor(r.ram_mb * r.ram_ratio) - r.ram_used_mb,
        math.floor(r.vcpus * r.cpu_ratio) - r.vcpus_used,
        math.floor(r.disk_gb * r.disk_ratio) - r.disk_used_gb,
    )


def ref_first_rejection(r: HostRow, req: HostRequest) -> str | None:
    """Name of the first default filter rejecting ``r``, or None if it passes all."""
    ram, vcpus, disk = _free(r)
    checks = [
        ("EnabledFilter", r.enabled),
        ("AvailabilityZoneFilter", req.az is None or r.az == req.az),
        ("IgnoreHostsFilter", r.name not in req.ignore_hosts),
        ("RamFilter", ram >= req.ram_mb),
        ("VcpuFilter", vcpus >= req.vcpus),
        ("DiskFilter", disk >= req.disk_gb),
        ("AntiAffinityFilter", r.name not in req.anti_affinity_hosts),
        ("AffinityFilter", not req.affinity_hosts or r.name in req.affinity_hosts),
    ]
    for name, ok in checks:
        if not ok:
            return name
    return None


def ref_weights(
    hosts: list[HostRow], req: HostRequest, mults: tuple[float, float, float]
) -> list[float]:
    ram_m, cpu_m, inst_m = mults
    if req.weighing == "pack":
        ram_m, cpu_m = -ram_m, -cpu_m
    columns = [
        (ram_m, [float(_free(r)[0]) for r in hosts]),
        (cpu_m, [float(_free(r)[1]) for r in hosts]),
        (inst_m, [-float(r.instances) for r in hosts]),
    ]
    total = [0.0] * len(hosts)
    for m, raw in columns:
        if not m or not raw:
            continue
        lo, hi = min(raw), max(raw)
        for j, x in enumerate(raw):
            total[j] += m * (0.0 if hi == lo else (x - lo) / (hi - lo))
    return total


def ref_select(
    rows: list[HostRow], req: HostRequest, limit: int, mults: tuple[float, float, float]
) -> list[str]:
    zone = [r for r in rows if r.zone == req.zone]  # input order within the zone
    passing = [r for r in zone if ref_first_rejection(r, req) is None]
    weights = ref_weights(passing, req, mults)
    order = sorted(range(len(passing)), key=lambda j: (-weights[j], j))
    return [passing[j].name for j in order[:limit]]


def _subset(rng: random.Random, names: list[str], k: int) -> frozenset[str]:
    pool = [*names, "ghost-1", "ghost-2"]
    return frozenset(rng.sample(pool, min(k, len(pool))))


def random_request(rng: random.Random, names: list[str]) -> HostRequest:
    affinity: frozenset[str] | None = None
    roll = rng.random()
    if roll < 0.2:
        affinity = frozenset()
    elif roll < 0.4:
        affinity = _subset(rng, names, rng.randint(1, 8))
    return HostRequest(
        zone=rng.choice([*ZONES, "z1", "z1", "nowhere"]),
        vcpus=rng.choice([0, 1, 2, 4, 8]),
        ram_mb=rng.choice([0, 512, 1024, 2048, 4096, 8192]),
        disk_gb=rng.choice([0, 10, 20, 40, 80]),
        az=rng.choice([None, None, None, None, "az1", "az2", "az-unknown"]),
        weighing=rng.choice(["spread", "pack"]),
        anti_affinity_hosts=_subset(rng, names, rng.randint(0, 6)),
        affinity_hosts=affinity,
        ignore_hosts=_subset(rng, names, rng.randint(0, 3)),
    )


def _mutate(rng: random.Random, rows: list[HostRow], t: HostTable) -> None:
    """Change one host's usage or enabled flag in both the rows and the table."""
    pos = rng.randrange(len(rows))
    r = rows[pos]
    i = t.index_of(r.zone, r.name)
    assert i is not None
    if rng.random() < 0.8:
        r = dataclasses.replace(
            r,
            vcpus_used=rng.randint(0, 20),
            ram_used_mb=rng.randrange(0, 20000, 1024),
            disk_used_gb=rng.randrange(0, 240, 20),
            instances=rng.randint(0, 6),
        )
        t.set_usage(
            i,
            vcpus_used=r.vcpus_used,
            ram_used_mb=r.ram_used_mb,
            disk_used_gb=r.disk_used_gb,
            instances=r.instances,
        )
    else:
        r = dataclasses.replace(r, enabled=not r.enabled)
        t.set_enabled(i, r.enabled)
    rows[pos] = r


@pytest.mark.parametrize("mults", MULTIPLIERS)
@pytest.mark.parametrize("size", [0, 3, 40, 250])
def test_select_matches_reference(size: int, mults: tuple[float, float, float]) -> None:
    seed = size * 100 + MULTIPLIERS.index(mults)
    rng = random.Random(seed)
    rows = random_rows(rng, size, zones=ZONES)
    t = HostTable.from_rows(rows)
    names = [r.name for r in rows]
    sched = HostScheduler(
        weighers=[RamWeigher(mults[0]), VcpuWeigher(mults[1]), InstancesWeigher(mults[2])]
    )
    decisions = 0
    nonempty = 0
    for _ in range(60):
        req = random_request(rng, names)
        limit = rng.randint(1, 8)
        got = sched.select(t, req, limit)
        assert got == ref_select(rows, req, limit, mults), (seed, req, limit)
        decisions += 1
        nonempty += bool(got)
        if rows:
            _mutate(rng, rows, t)
    assert decisions == 60
    if size >= 40:
        assert nonempty >= 20  # the comparison exercised real choices, not only []


@pytest.mark.parametrize("seed", range(6))
def test_explain_and_counts_match_reference(seed: int) -> None:
    rng = random.Random(1000 + seed)
    rows = random_rows(rng, 80, zones=ZONES)
    t = HostTable.from_rows(rows)
    names = [r.name for r in rows]
    sched = HostScheduler()
    for _ in range(20):
        req = random_request(rng, names)
        zone_rows = [r for r in rows if r.zone == req.zone]
        expected = [ref_first_rejection(r, req) for r in zone_rows]
        verdicts = sched.explain(t, req)
        assert [v.host for v in verdicts] == [r.name for r in zone_rows]
        assert [v.rejected_by for v in verdicts] == expected
        assert [v.free_ram_mb for v in verdicts] == [_free(r)[0] for r in zone_rows]
        counts = sched.filter_counts(t, req)
        for name, n in counts.items():
            assert n == expected.count(name), (name, req)
        passing = [r for r, e in zip(zone_rows, expected, strict=True) if e is None]
        got_weights = [v.weight for v in verdicts if v.passed]
        assert got_weights == ref_weights(passing, req, (1.0, 1.0, 0.5))
        _mutate(rng, rows, t)


def test_reference_disagrees_when_a_rule_differs() -> None:
    """Guard against a vacuous comparison: a deliberately wrong rule must be caught."""
    rng = random.Random(7)
    rows = random_rows(rng, 60, zones=("z1",))
    t = HostTable.from_rows(rows)
    sched = HostScheduler(weighers=[RamWeigher(1.0), VcpuWeigher(1.0), InstancesWeigher(0.5)])
    req = HostRequest(zone="z1", vcpus=1, ram_mb=1024, disk_gb=10)
    assert sched.select(t, req, 5) == ref_select(rows, req, 5, (1.0, 1.0, 0.5))
    assert sched.select(t, req, 5) != ref_select(rows, req, 5, (1.0, 1.0, -0.5))
