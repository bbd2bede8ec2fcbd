"""Smoke tests of the benchmark scripts: each runs in its small mode and prints the JSON
document it promises, with real figures in it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_benchmark(name: str, *args: str, timeout: float = 240) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / name), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def positive(section: dict[str, Any], *keys: str) -> None:
    for key in keys:
        value = section[key]
        assert isinstance(value, (int, float)) and not isinstance(value, bool), (key, value)
        assert value > 0, (key, value)


@pytest.mark.slow
def test_volumes_quick() -> None:
    doc = run_benchmark("volumes.py", "--quick")
    assert doc["benchmark"] == "volumes"
    assert doc["quick"] is True

    placement = doc["placement"]
    assert placement["pools"] == 200
    assert placement["samples"] == 50
    positive(placement, "p50_ms", "p95_ms", "p99_ms", "p50_us", "p95_us", "placements_per_s")
    assert placement["p50_ms"] <= placement["p95_ms"] <= placement["p99_ms"]
    positive(placement["stages_p50_ms"], "loads", "rank", "free_pools", "claim")
    positive(placement["worker_place"], "p50_ms", "p95_ms")
    # Every timed placement, its warm-up and the worker's own placements hold a claim.
    expected = placement["warmup"] + placement["samples"] + placement["worker_place"]["samples"]
    assert placement["volumes_in_pools"] == expected
    # Spread puts each volume in the emptiest pool, so no pool holds more than its share.
    share = -(-expected // placement["pools"])
    assert placement["fullest_pool_gb"] == share * placement["volume_gb"]

    http = doc["http_creates"]
    assert http["errors"] == 0
    assert http["accepted"] == http["creates"] == http["available"] == 50
    assert http["error"] == 0 and http["other"] == {}
    positive(http, "accepted_per_s", "settled_per_s", "all_settled_s")
    positive(http["latency_ms"], "p50", "p99")
    assert http["serve_exit_code"] == 0

    boot = doc["boot"]
    assert boot["accepted"] == boot["active"] == 50
    positive(boot, "accepted_per_s", "active_per_s")
    positive(boot["placement"], "select_p50_ms", "claim_p50_ms", "p50_ms")

    ratios = doc["ratios"]
    positive(
        ratios,
        "accepted_per_s",
        "settled_per_s_over_active_per_s",
        "post_latency_p50",
        "placement_p50",
    )


@pytest.mark.slow
def test_vclusters_quick() -> None:
    doc = run_benchmark("vclusters.py", "--quick")
    assert doc["benchmark"] == "vclusters"
    assert doc["quick"] is True
    assert doc["target_p50_ms"] == 50
    assert doc["meets_target"] is (doc["placement"]["p50_ms"] <= 50)

    placement = doc["placement"]
    assert placement["hosts"] == placement["hosts_offered"] == placement["pools"] == 500
    assert placement["samples"] == 20
    assert (placement["members"], placement["servers"], placement["volumes"]) == (100, 50, 50)
    positive(placement, "p50_ms", "p95_ms", "p99_ms", "release_p50_ms")
    assert placement["p50_ms"] <= placement["p95_ms"] <= placement["p99_ms"]
    for stage in ("inputs", "plan", "claims"):
        positive(placement["stages"][stage], "p50_ms", "p95_ms", "p99_ms")
    positive(placement["tried"], "min", "max")
    # Fifty units (a server with its volume), each placed at its first candidate.
    assert placement["tried"]["min"] >= 50

    checks = placement["checks"]
    assert checks["plans_checked"] == placement["warmup"] + placement["samples"]
    assert checks["distinct_hosts_and_host_pools"] is True, checks["problems"]
    assert checks["state_restored"] is True


@pytest.mark.slow
def test_boot_quick_counts_only_202_and_reports_where_time_went() -> None:
    doc = run_benchmark("boot.py", "--quick")
    assert doc["benchmark"] == "boot" and doc["quick"] is True
    assert doc["tokens"] == doc["clients"] == 8
    assert doc["accepted"] + sum(doc["non_202"].values()) == doc["boots"] == 60
    assert doc["accepted"] == doc["active"] == 60, doc["non_202"]
    positive(doc, "accepted_per_s", "completed_per_s", "completion_s")
    positive(doc["time_to_active_ms"], "p50", "p99")
    assert doc["time_to_active_ms"]["p50"] <= doc["time_to_active_ms"]["p99"]
    gate = doc["write_gate"]["api"]
    positive(gate, "writes", "held_s", "busy_share")
    assert 0 < gate["busy_share"] <= 1  # one gate on SQLite: held at most all the window
    checks = doc["checks"]
    assert checks["duplicates"] == 0 and checks["over_commit"] == 0
    assert checks["accepted_active_exactly_once"] == 60
    assert checks["instance_records"] == 60
    rates = doc["http_rates"]
    positive(rates, "root_per_s", "flavors_per_s", "flavors_over_root")
    assert set(rates["flavors_statuses"]) == {"200"}  # every thread's own token is valid
    assert doc["serve_exit_codes"] == [0]
    memory = doc["peak_rss_mb"]
    assert len(memory["per_process"]) == 1 and 30 < memory["max"] < 2000, memory


@pytest.mark.slow
def test_boot_quick_with_two_api_workers() -> None:
    doc = run_benchmark("boot.py", "--quick", "--api-workers", "2")
    assert doc["config"]["api_workers"] == 2
    assert doc["accepted"] == doc["active"] == 60, doc["non_202"]
    checks = doc["checks"]
    assert checks["duplicates"] == 0 and checks["over_commit"] == 0
    assert checks["accepted_active_exactly_once"] == 60
    # the counters of both workers: together they wrote every boot
    assert doc["write_gate"]["api"]["writes"] >= 3 * 60
    # the supervisor and its two workers
    assert len(doc["peak_rss_mb"]["per_process"]) == 3, doc["peak_rss_mb"]
    assert doc["serve_exit_codes"] == [0]


@pytest.mark.slow
@pytest.mark.postgres
def test_boot_quick_on_two_brokers_sharing_postgresql() -> None:
    from tests.conftest import PG_HOST, PG_PORT, _pg_admin, require

    conn = _pg_admin()
    require(conn is not None, f"PostgreSQL on {PG_HOST}:{PG_PORT} (user postgres, trust auth)")
    conn.close()
    url = f"postgresql://postgres@{PG_HOST}:{PG_PORT}/"
    doc = run_benchmark("boot.py", "--quick", "--database", url, "--brokers", "2")
    assert doc["config"]["brokers"] == 2
    assert doc["write_gate"]["api"]["wait_s"] < 0.05  # PostgreSQL: no gate to wait for
    for run in (doc, doc["multi_broker"]):
        assert run["accepted"] == run["active"] == 60, run["non_202"]
        assert run["checks"]["duplicates"] == 0 and run["checks"]["over_commit"] == 0
        assert run["checks"]["accepted_active_exactly_once"] == 60
    assert doc["multi_broker"]["serve_exit_codes"] == [0, 0]
    positive(doc["multi_broker_over_one"], "accepted_per_s")


@pytest.mark.slow
def test_placement_times_whole_decisions_with_their_claim() -> None:
    doc = run_benchmark(
        "placement.py", "--decisions", "50", "--claim-decisions", "30", "--sizes", "100"
    )
    plain = doc["results"]["100"]["plain"]
    whole = doc["with_claim"]["100"]
    assert whole["decisions"] == 30 and whole["claims_refused"] == 0
    positive(whole, "p50_ms", "p99_ms", "decisions_per_s")
    positive(whole["stages_p50_ms"], "loads_and_select", "claim")
    assert whole["p50_ms"] <= whole["p99_ms"]
    # A claim is a database transaction: a whole decision costs more than a choice.
    assert whole["p50_ms"] > plain["p50_ms"]
