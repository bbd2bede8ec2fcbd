"""Clusters racing for the same capacity: each plan is claimed whole or not at all.

Every cluster is planned from the same snapshot (so the plans collide), then real threads
claim their plans at once, on SQLite and on PostgreSQL (skipped without it, failed under
``FEDERATOR_TEST_STRICT=1``). Afterwards the ledger must be exact: every host's, pool's
and zone's counters equal the sum of the allocations recorded on them, no cluster holds
part of its members, and exactly as many clusters won as the capacity allows.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from federator.broker import Broker
from federator.groups.rules import Rule
from federator.storage.models import Allocation, Host, StoragePool, VolumeAllocation, Zone
from federator.vclusters.claims import PlanClaim, claim_plan
from federator.vclusters.inputs import gather
from federator.vclusters.planner import Grouping, Member, plan
from tests.conftest import make_settings, sim_zone

PROJECT = "project-a"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest) -> dict[str, Any] | None:
    """None for SQLite files, else fresh PostgreSQL databases."""
    if request.param == "sqlite":
        return None
    make: Callable[[], str] = request.getfixturevalue("pg_database_factory")
    return {"api_url": make(), "cell0_url": make(), "cells": {"cell1": make()}}


@pytest.fixture
def open_broker(tmp_path: Path, database: dict[str, Any] | None) -> Iterator[Callable[..., Broker]]:
    opened: list[Broker] = []

    def open_(zones: list[dict[str, Any]], policy: dict[str, Any]) -> Broker:
        b = Broker.open(make_settings(tmp_path, zones=zones, policy=policy, database=database))
        opened.append(b)
        return b

    yield open_
    for b in opened:
        b.stop()


@dataclass
class Cluster:
    name: str
    members: list[Member]
    groupings: list[Grouping]

    def __post_init__(self) -> None:
        self.uuids = {m.name: str(uuid.uuid4()) for m in self.members}


def race(b: Broker, clusters: list[Cluster]) -> list[PlanClaim]:
    """Plan every cluster from the same state, then claim all the plans at once."""
    prepared = []
    for c in clusters:
        found = gather(b.ctx, PROJECT, c.members)
        p = plan(c.members, c.groupings, found.zones)
        assert p.ok, p.message
        prepared.append((c, p, found.ceilings))
    results: list[PlanClaim | None] = [None] * len(clusters)
    barrier = threading.Barrier(len(clusters))

    def run(i: int) -> None:
        c, p, ceilings = prepared[i]
        barrier.wait()
        results[i] = claim_plan(b.ctx, p, c.members, c.uuids, ceilings)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(clusters))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert all(r is not None for r in results), "a claim did not finish"
    return [r for r in results if r is not None]


def check_ledger(b: Broker, clusters: list[Cluster], results: list[PlanClaim]) -> None:
    """Counters equal the sums of the allocations; a cluster holds all or nothing."""
    with b.ctx.api.read() as s:
        allocs = list(s.scalars(select(Allocation)))
        vallocs = list(s.scalars(select(VolumeAllocation)))
        held = {a.instance_uuid for a in allocs} | {v.volume_uuid for v in vallocs}
        for c, r in zip(clusters, results, strict=True):
            mine = set(c.uuids.values()) & held
            assert mine == (set(c.uuids.values()) if r.ok else set()), c.name
        for h in s.scalars(select(Host)):
            on = [a for a in allocs if a.host_id == h.id]
            assert (h.vcpus_used, h.ram_used_mb, h.disk_used_gb, h.instances) == (
                sum(a.vcpus for a in on),
                sum(a.ram_mb for a in on),
                sum(a.disk_gb for a in on),
                len(on),
            ), h.name
            assert h.ram_used_mb <= h.ram_mb * h.ram_ratio
        for p in s.scalars(select(StoragePool)):
            on_pool = [v for v in vallocs if v.pool_id == p.id]
            assert (p.used_gb, p.volumes) == (sum(v.size_gb for v in on_pool), len(on_pool))
            assert p.capacity_gb is None or p.used_gb <= p.capacity_gb
        for z in s.scalars(select(Zone)):
            in_zone = [a for a in allocs if a.zone == z.name]
            vol_in_zone = [v for v in vallocs if v.zone == z.name]
            assert (z.ram_used_mb, z.vcpus_used, z.instances) == (
                sum(a.ram_mb for a in in_zone),
                sum(a.vcpus for a in in_zone),
                len(in_zone),
            ), z.name
            assert (z.volume_gb_used, z.volumes) == (
                sum(v.size_gb for v in vol_in_zone),
                len(vol_in_zone),
            ), z.name
    # The scheduler's cache agrees with the database for every claimed host.
    table = b.hosts.table
    with b.ctx.api.read() as s:
        for h in s.scalars(select(Host)):
            i = table.index_of(h.zone, h.name)
            assert i is not None
            assert int(table.ram_used[i]) == h.ram_used_mb, h.name


def server(name: str, ram_mb: int) -> Member:
    return Member(name, "server", vcpus=1, ram_mb=ram_mb, disk_gb=10)


def volume(name: str, size_gb: int) -> Member:
    return Member(name, "volume", size_gb=size_gb)


def test_clusters_racing_for_hosts_win_whole_or_not_at_all(
    open_broker: Callable[..., Broker],
) -> None:
    # Four hosts of 8192 MB; each cluster asks three 4096 MB servers and a volume. Every
    # plan picks the same three hosts, so two clusters fit and the third finds them full.
    b = open_broker(
        [sim_zone("local", "local", hosts=4, host_ram_mb=8192, volume_pools="zone")],
        {"version": "race-hosts"},
    )
    clusters = [
        Cluster(f"c{i}", [*(server(f"s{j}", 4096) for j in range(3)), volume("v", 10)], [])
        for i in range(8)
    ]

    results = race(b, clusters)

    assert sum(r.ok for r in results) == 2
    refused = [r for r in results if not r.ok]
    assert {r.outcome for r in refused} == {"host_full"}
    assert all(r.resource and r.resource.startswith("host local-host-") for r in refused)
    check_ledger(b, clusters, results)


def test_a_cluster_refused_by_its_last_claim_gives_back_the_earlier_ones(
    open_broker: Callable[..., Broker],
) -> None:
    # Hosts have room for every cluster's servers; the zone's one 100 GB pool holds one
    # 60 GB volume. Servers claim before volumes, so every loser's servers were claimed in
    # its transaction before the pool refused it.
    b = open_broker(
        [sim_zone("local", "local", hosts=4, volume_pools="zone", volume_pool_gb=100)],
        {"version": "race-pool"},
    )
    clusters = [
        Cluster(f"c{i}", [server("a", 512), server("b", 512), volume("data", 60)], [])
        for i in range(6)
    ]

    results = race(b, clusters)

    assert sum(r.ok for r in results) == 1
    refused = [r for r in results if not r.ok]
    assert {(r.member, r.outcome, r.resource) for r in refused} == {
        ("data", "pool_full", "pool local of zone local")
    }
    check_ledger(b, clusters, results)


def test_clusters_spanning_two_zones_race_without_deadlock(
    open_broker: Callable[..., Broker],
) -> None:
    # One local host takes one 4096 MB server; each cluster's two servers are kept apart,
    # so the second bursts to the overflow zone. The overflow zone's row is taken first
    # (zones in name order), then the local zone's and its host, which refuses all but one.
    b = open_broker(
        [
            sim_zone("local", "local", hosts=1, host_ram_mb=4096, volumes=False),
            sim_zone("cloud", "virtual", expose_hosts=False, volumes=False),
        ],
        {
            "version": "race-zones",
            "zones": {"local": {"overflow": ["cloud"]}, "cloud": {"quota": {"instances": 50}}},
        },
    )
    # Half the clusters list their members the other way round: their plans name the
    # zones in the other order, which must not change the order rows are locked in.
    apart = Rule("anti-affinity")
    clusters = [
        Cluster(
            f"c{i}",
            [server("front", 4096), server("back", 4096)][:: 1 if i % 2 else -1],
            [Grouping("apart", ("front", "back"), apart)],
        )
        for i in range(6)
    ]

    results = race(b, clusters)

    assert sum(r.ok for r in results) == 1
    assert Counter(r.outcome for r in results if not r.ok) == {"host_full": 5}
    check_ledger(b, clusters, results)
    with b.ctx.api.read() as s:
        cloud = s.get(Zone, "cloud")
        assert cloud is not None and cloud.instances == 1


def test_clusters_of_mixed_sizes_racing_are_refused_by_the_member_that_overflows(
    open_broker: Callable[..., Broker],
) -> None:
    # Each cluster puts 4096 + 2048 MB together on one host and 1024 MB on another, with
    # volumes of 30 and 10 GB: hosts take different amounts in one update. Every plan
    # picks the same host for the pair, which holds one pair only; a loser finds 6144 MB
    # taken there, and its 4096 MB server is the one that no longer fits.
    b = open_broker(
        [sim_zone("local", "local", hosts=4, host_ram_mb=8192, volume_pools="zone")],
        {"version": "race-mixed"},
    )
    members = [server("big", 4096), server("small", 2048), server("other", 1024),
               volume("data", 30), volume("logs", 10)]  # fmt: skip
    together = [Grouping("together", ("big", "small"), Rule("affinity"))]
    clusters = [Cluster(f"c{i}", list(members), together) for i in range(6)]

    results = race(b, clusters)

    assert sum(r.ok for r in results) == 1
    assert {(r.member, r.outcome) for r in results if not r.ok} == {("big", "host_full")}
    check_ledger(b, clusters, results)
    with b.ctx.api.read() as s:
        pool = s.scalars(select(StoragePool)).one()
        assert (pool.used_gb, pool.volumes) == (40, 2)
