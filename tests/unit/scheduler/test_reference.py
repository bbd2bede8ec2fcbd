"""Randomised comparison of the vectorised scheduler with a slow pure-Python reference.

The reference restates every default filter and weigher over plain ``HostRow``
objects, one host at a time, the way the rules are documented (Nova's, for the
aggregate rules). Tables are random (fixed seeds) with several zones, coarse
usage steps so that ties and exact-fit boundaries are common, aggregate metadata
on about half the hosts, and state is mutated between decisions.
"""

from __future__ import annotations

import dataclasses
import math
import random

import pytest

from federator.scheduler import HostRequest, HostRow, HostScheduler, HostTable, default_filters
from federator.scheduler.filters import (
    AggregateNumInstancesFilter,
    HostFilter,
    NumInstancesFilter,
)
from federator.scheduler.weighers import InstancesWeigher, RamWeigher, VcpuWeigher
from tests.unit.scheduler.factory import random_rows as plain_random_rows

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


def _values(r: HostRow, key: str) -> set[str]:
    return {p.strip() for v in r.metadata.get(key, ()) for p in v.split(",") if p.strip()}


def _lowest(r: HostRow, key: str) -> float | None:
    found = []
    for v in _values(r, key):
        try:
            n = float(v)
        except ValueError:
            continue
        if math.isfinite(n):
            found.append(n)
    return min(found) if found else None


def _ratio(r: HostRow, own: float, key: str) -> float:
    agg = _lowest(r, key)
    return min(own, agg) if agg is not None and agg > 0 else own


def _free(r: HostRow) -> tuple[int, int, int]:
    return (
        math.floor(r.ram_mb * _ratio(r, r.ram_ratio, "ram_allocation_ratio")) - r.ram_used_mb,
        math.floor(r.vcpus * _ratio(r, r.cpu_ratio, "cpu_allocation_ratio")) - r.vcpus_used,
        math.floor(r.disk_gb * _ratio(r, r.disk_ratio, "disk_allocation_ratio")) - r.disk_used_gb,
    )


def _tenant_ok(r: HostRow, req: HostRequest) -> bool:
    tenants = set().union(*(_values(r, k) for k in r.metadata if k.startswith("filter_tenant_id")))
    return not tenants or req.project_id in tenants


def _extra_specs_ok(r: HostRow, req: HostRequest) -> bool:
    for key, value in req.extra_specs.items():
        scope, colon, rest = key.partition(":")
        if colon and scope != "aggregate_instance_extra_specs":
            continue
        if value not in _values(r, rest if colon else key):
            return False
    return True


def _image_ok(r: HostRow, req: HostRequest) -> bool:
    return all(not _values(r, k) or v in _values(r, k) for k, v in req.image_properties.items())


def _aggregate_limit_ok(r: HostRow, default: int | None) -> bool:
    agg = _lowest(r, "max_instances_per_host")
    limit = math.floor(agg) if agg is not None else default
    return limit is None or r.instances < limit


def ref_first_rejection(r: HostRow, req: HostRequest, limit: int | None = None) -> str | None:
    """Name of the first default filter rejecting ``r``, or None if it passes all."""
    ram, vcpus, disk = _free(r)
    checks = [
        ("EnabledFilter", r.enabled),
        ("AvailabilityZoneFilter", req.az is None or r.az == req.az),
        ("IgnoreHostsFilter", r.name not in req.ignore_hosts),
        ("AggregateMultiTenancyIsolation", _tenant_ok(r, req)),
        ("AggregateInstanceExtraSpecsFilter", _extra_specs_ok(r, req)),
        ("AggregateImagePropertiesIsolation", _image_ok(r, req)),
        ("RamFilter", ram >= req.ram_mb),
        ("VcpuFilter", vcpus >= req.vcpus),
        ("DiskFilter", disk >= req.disk_gb),
        ("NumInstancesFilter", limit is None or r.instances < limit),
        ("AggregateNumInstancesFilter", _aggregate_limit_ok(r, limit)),
        ("AntiAffinityFilter", r.name not in req.anti_affinity_hosts),
        ("AffinityFilter", not req.affinity_hosts or r.name in req.affinity_hosts),
    ]
    for name, ok in checks:
        if not ok:
            return name
    return None


def filters_with_limit(limit: int | None) -> list[HostFilter]:
    """The default filters, with ``limit`` as the default instance limit."""
    swap: dict[type[HostFilter], HostFilter] = {
        NumInstancesFilter: NumInstancesFilter(limit),
        AggregateNumInstancesFilter: AggregateNumInstancesFilter(limit),
    }
    return [swap.get(type(f), f) for f in default_filters()]


# Aggregate metadata a host may carry; a host in two aggregates merges two choices.
_METADATA_CHOICES: list[tuple[str, list[str]]] = [
    ("ssd", ["true", "false", "true,false"]),
    ("gpu", ["a100", "h100"]),
    ("os_distro", ["windows", "ubuntu", "ubuntu, debian"]),
    ("filter_tenant_id", ["p1", "p1,p2", "p3"]),
    ("filter_tenant_id2", ["p2"]),
    ("max_instances_per_host", ["2", "4", "junk", "3.7"]),
    ("cpu_allocation_ratio", ["1.0", "0.5", "8", "bad"]),
    ("ram_allocation_ratio", ["1.0", "0.75"]),
    ("disk_allocation_ratio", ["0.5", "2"]),
]


def random_metadata(rng: random.Random) -> dict[str, frozenset[str]]:
    if rng.random() < 0.6:
        return {}
    merged: dict[str, set[str]] = {}
    for _ in range(rng.randint(1, 2)):  # one or two aggregates
        for key, values in rng.sample(_METADATA_CHOICES, rng.randint(1, 2)):
            merged.setdefault(key, set()).add(rng.choice(values))
    return {k: frozenset(v) for k, v in merged.items()}


def random_rows(rng: random.Random, n: int, zones: tuple[str, ...]) -> list[HostRow]:
    return [
        dataclasses.replace(r, metadata=random_metadata(rng))
        for r in plain_random_rows(rng, n, zones=zones)
    ]


def ref_weights(
    hosts: list[HostRow], req: HostRequest, mults: tuple[float, float, float]
) -> list[float]:
    """Nova's weighing (nova/weights.py): RAM and CPU scores floored at their minval 0
    and normalised against it; the instance count min-max normalised, its
    multiplier negated (the broker's weigher prefers fewer instances). Pack negates
    all three, the instance weigher's with the capacity weighers'."""
    ram_m, cpu_m, inst_m = mults
    if req.weighing == "pack":
        ram_m, cpu_m, inst_m = -ram_m, -cpu_m, -inst_m
    if len(hosts) <= 1:
        return [0.0] * len(hosts)
    columns: list[tuple[float, float | None, list[float]]] = [
        (ram_m, 0.0, [max(float(r.ram_mb - r.ram_used_mb), 0.0) for r in hosts]),
        (
            cpu_m,
            0.0,
            [
                max(r.vcpus * _ratio(r, r.cpu_ratio, "cpu_allocation_ratio") - r.vcpus_used, 0.0)
                for r in hosts
            ],
        ),
        # Nova's NumInstancesWeigher at multiplier -inst_m
        (-inst_m, None, [float(r.instances) for r in hosts]),
    ]
    total = [0.0] * len(hosts)
    for m, minval, raw in columns:
        if not m:
            continue
        lo = min(raw) if minval is None else minval
        hi = max(raw)
        for j, x in enumerate(raw):
            total[j] += m * (0.0 if hi == lo else (x - lo) / (hi - lo))
    return total


def ref_select(
    rows: list[HostRow],
    req: HostRequest,
    limit: int,
    mults: tuple[float, float, float],
    max_instances: int | None = None,
) -> list[str]:
    zone = [r for r in rows if r.zone == req.zone]  # input order within the zone
    passing = [r for r in zone if ref_first_rejection(r, req, max_instances) is None]
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
        project_id=rng.choice([None, "p1", "p2", "p3", "p9"]),
        extra_specs=dict(
            rng.sample(
                [
                    ("ssd", rng.choice(["true", "false"])),
                    ("aggregate_instance_extra_specs:gpu", "a100"),
                    ("hw:cpu_policy", "dedicated"),
                ],
                rng.choice([0, 0, 0, 0, 1, 2]),
            )
        ),
        image_properties=dict(
            rng.sample(
                [("os_distro", rng.choice(["windows", "ubuntu", "debian"])), ("ssd", "true")],
                rng.choice([0, 0, 0, 1, 2]),
            )
        ),
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
    max_instances = rng.choice([None, 5])
    sched = HostScheduler(
        filters=filters_with_limit(max_instances),
        weighers=[RamWeigher(mults[0]), VcpuWeigher(mults[1]), InstancesWeigher(mults[2])],
    )
    decisions = 0
    nonempty = 0
    for _ in range(60):
        req = random_request(rng, names)
        limit = rng.randint(1, 8)
        got = sched.select(t, req, limit)
        assert got == ref_select(rows, req, limit, mults, max_instances), (seed, req, limit)
        decisions += 1
        nonempty += bool(got)
        if rows:
            _mutate(rng, rows, t)
    assert decisions == 60
    if size >= 40:
        assert nonempty >= 12  # the comparison exercised real choices, not only []


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


def test_random_tables_exercise_the_aggregate_rules() -> None:
    """Guard against a vacuous comparison: the random metadata and requests make every
    aggregate rule turn hosts down, and the vectorised answer still agrees."""
    rng = random.Random(99)
    rows = random_rows(rng, 250, zones=("z1",))
    t = HostTable.from_rows(rows)
    names = [r.name for r in rows]
    sched = HostScheduler(filters=filters_with_limit(5))
    seen: set[str] = set()
    for _ in range(200):
        req = dataclasses.replace(random_request(rng, names), zone="z1", az=None)
        verdicts = sched.explain(t, req)
        expected = [ref_first_rejection(r, req, 5) for r in rows]
        assert [v.rejected_by for v in verdicts] == expected
        seen.update(e for e in expected if e)
    assert {
        "AggregateMultiTenancyIsolation",
        "AggregateInstanceExtraSpecsFilter",
        "AggregateImagePropertiesIsolation",
        "NumInstancesFilter",
        "AggregateNumInstancesFilter",
    } <= seen
    lowered = [i for i in range(len(t)) if t.aggregate_ratio("cpu", i) is not None]
    assert lowered  # some hosts had their cpu ratio lowered by an aggregate
