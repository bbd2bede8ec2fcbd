"""Spread and pack under concurrent boots: every worker's choice sees the claims the
workers of its process have in flight, so a burst of boots on empty, equal hosts spreads
evenly (or packs host after host) as a sequence of single boots would.

Real threads post the boots at once (released by a barrier) to a broker with 16 workers;
with two brokers sharing PostgreSQL each broker sees the other's claims only once they
commit (a conflict re-reads them), so the spread is near-even, never lopsided.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from federator.config import Settings
from tests.conftest import LiveBroker, make_settings, sim_zone
from tests.functional.capacity import boot_concurrently, check_ledger

Factory = Callable[..., LiveBroker]
HOSTS = 20


def settings(
    tmp_path: Path, weighing: str, database: dict[str, Any] | None = None, node: str = ""
) -> Settings:
    extra: dict[str, Any] = {}
    if node:
        extra["node_id"] = node
    return make_settings(
        tmp_path,
        zones=[sim_zone("local", "local", hosts=HOSTS, host_ram_mb=8192, host_vcpus=8)],
        policy={"version": f"load-{weighing}", "weighing": weighing, "zones": {"local": {}}},
        database=database,
        workers={"count": 16, "poll_interval": 0.2},
        **extra,
    )


def per_host(live: LiveBroker) -> list[int]:
    ledger = check_ledger(live.broker.dbs)
    return sorted((h.instances for h in ledger.hosts if h.zone == "local"), reverse=True)


def test_forty_concurrent_boots_spread_two_per_host(
    tmp_path: Path, live_broker_factory: Factory
) -> None:
    live = live_broker_factory(settings(tmp_path, "spread"))
    answers = boot_concurrently(live.url, 2 * HOSTS, clients=32, headers=live.auth_headers)
    assert Counter(a.status for a in answers) == {202: 2 * HOSTS}
    live.wait_settled(timeout=60)
    assert per_host(live) == [2] * HOSTS


def test_twenty_concurrent_boots_pack_host_after_host(
    tmp_path: Path, live_broker_factory: Factory
) -> None:
    live = live_broker_factory(settings(tmp_path, "pack"))
    answers = boot_concurrently(live.url, 20, clients=20, headers=live.auth_headers)
    assert Counter(a.status for a in answers) == {202: 20}
    live.wait_settled(timeout=60)
    # m1.small is 1 vCPU, 1 GiB: RAM is what fills a host first (the sim's 8 GiB hosts
    # with the default ratio take this many).
    counts = [n for n in per_host(live) if n]
    full = counts[0]
    assert counts == [full] * (20 // full) + ([20 % full] if 20 % full else []), counts


@pytest.mark.postgres
def test_two_brokers_on_postgresql_spread_without_piling_up(
    tmp_path: Path, live_broker_factory: Factory, pg_database_factory: Callable[[], str]
) -> None:
    db = {
        "api_url": pg_database_factory(),
        "cell0_url": pg_database_factory(),
        "cells": {"cell1": pg_database_factory()},
    }
    # One data directory: the two brokers share the sim's state as they share the zone.
    a = live_broker_factory(settings(tmp_path, "spread", db, node="node-a"))
    b = live_broker_factory(settings(tmp_path, "spread", db, node="node-b"))
    half = HOSTS  # 20 boots on each broker, 40 in all

    results: dict[str, list[Any]] = {}

    def run(live: LiveBroker, key: str) -> None:
        results[key] = boot_concurrently(live.url, half, clients=16, headers=live.auth_headers)

    threads = [threading.Thread(target=run, args=(x, k)) for x, k in ((a, "a"), (b, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(Counter(r.status for r in results[k]) == {202: half} for k in "ab")
    a.wait_settled(timeout=60)
    b.wait_settled(timeout=60)
    counts = per_host(a)
    assert sum(counts) == 2 * HOSTS
    assert max(counts) <= 3, counts
