"""Monitor jobs and zone health, as plain functions over a real broker (SQLite, sim)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import select

from federator.blockstorage import PoolInfo
from federator.broker import Broker
from federator.compute.zonestate import record_zone_failure, record_zone_success
from federator.driver import RemoteInstance, TransientError, ZoneHealth
from federator.monitor import jobs
from federator.monitor.service import Monitor
from federator.storage.events import list_events
from federator.storage.models import Host, StoragePool, Zone
from tests.conftest import make_settings, sim_zone

POLICY: dict[str, Any] = {"version": "m1", "zones": {}}


def _broker(tmp_path: Path, **opts: Any) -> Broker:
    settings = make_settings(
        tmp_path, zones=[sim_zone("local", "local", hosts=2, **opts)], policy=POLICY
    )
    return Broker.open(settings)


def _zone(broker: Broker, name: str) -> Zone:
    with broker.dbs.api.read() as s:
        z = s.get(Zone, name)
        assert z is not None
        return z


def test_consecutive_failures_mark_down_and_one_success_restores(tmp_path: Path) -> None:
    broker = _broker(tmp_path)
    try:
        db = broker.dbs.api
        assert record_zone_failure(db, "local", "probe 1 failed") is False
        assert record_zone_failure(db, "local", "probe 2 failed") is False
        assert _zone(broker, "local").state == "available"
        assert record_zone_failure(db, "local", "probe 3 failed") is True
        z = _zone(broker, "local")
        assert (z.state, z.state_detail, z.consecutive_failures) == ("down", "probe 3 failed", 3)
        record_zone_success(db, "local", "ok again")
        z = _zone(broker, "local")
        assert (z.state, z.consecutive_failures) == ("available", 0)
    finally:
        broker.stop()


def test_refresh_zone_counts_unhealthy_probes(tmp_path: Path) -> None:
    broker = _broker(tmp_path)
    try:
        driver = broker.drivers["local"]
        driver.health = lambda: ZoneHealth(False, "hypervisor API timed out")  # type: ignore[method-assign]
        results = [jobs.refresh_zone(broker.ctx, "local") for _ in range(3)]
        assert results[0].startswith("unhealthy (degraded)")
        assert results[2].startswith("unhealthy (down)")
        assert _zone(broker, "local").state == "down"
    finally:
        broker.stop()


def test_refresh_zone_records_hosts_and_totals(tmp_path: Path) -> None:
    broker = _broker(tmp_path, host_ram_mb=4096, host_vcpus=2)
    try:
        z = _zone(broker, "local")
        assert (z.ram_total_mb, z.vcpus_total) == (2 * 4096, 2 * 2 * 4)  # cpu ratio 4.0
        with broker.dbs.api.read() as s:
            names = sorted(h.name for h in s.query(Host).filter(Host.zone == "local"))
        assert names == ["local-host-001", "local-host-002"]
        assert jobs.refresh_zone(broker.ctx, "local").startswith("ok")
    finally:
        broker.stop()


def test_refresh_zone_keeps_the_zone_up_when_only_its_pools_fail(tmp_path: Path) -> None:
    broker = _broker(tmp_path, volume_pool_gb=50)
    try:
        with broker.dbs.api.read() as s:
            pools = sorted((p.name, p.capacity_gb) for p in s.scalars(select(StoragePool)))
        assert pools == [("local-host-001/volumes", 50), ("local-host-002/volumes", 50)]
        storage = broker.drivers["local"].block_storage()
        assert storage is not None

        def broken() -> Sequence[PoolInfo]:
            raise TransientError("local", "volume service down")

        storage.pools = broken  # type: ignore[method-assign]
        for _ in range(4):
            result = jobs.refresh_zone(broker.ctx, "local")
            assert result.startswith("ok") and "storage pools not refreshed" in result
        z = _zone(broker, "local")
        assert (z.state, z.consecutive_failures, z.volume_gb_total) == ("available", 0, 100)
    finally:
        broker.stop()


def test_timed_keeps_outcome_and_never_raises() -> None:
    record = jobs.JobRecord(name="x")

    def boom() -> str:
        raise RuntimeError("zone unreachable")

    jobs.timed(record, boom)
    assert (record.runs, record.failures, record.last_result) == (1, 1, "failed")
    assert "zone unreachable" in record.last_error
    jobs.timed(record, lambda: "fine")
    assert (record.runs, record.failures, record.last_result, record.last_error) == (
        2,
        1,
        "fine",
        "",
    )
    assert record.last_duration is not None and record.last_duration >= 0


def test_monitor_schedules_one_load_job_per_zone(tmp_path: Path) -> None:
    broker = _broker(tmp_path)
    monitor = Monitor(broker.ctx)
    try:
        monitor.start()
        assert {"heartbeat", "load:local", "hosts-cache"} <= set(monitor.records)
        record = monitor.run_now("load:local")
        assert record.runs >= 1 and record.last_result.startswith("ok")
    finally:
        monitor.stop()
        broker.stop()


def test_zone_health_changes_are_recorded_as_events(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        zones=[sim_zone("local", "local", hosts=1)],
        policy=POLICY,
        monitor={"failures_to_down": 2},
    )
    broker = Broker.open(settings)
    try:
        driver = broker.drivers["local"]
        healthy = driver.health
        driver.health = lambda: ZoneHealth(False, "timed out")  # type: ignore[method-assign]
        assert jobs.refresh_zone(broker.ctx, "local").startswith("unhealthy (degraded)")
        assert jobs.refresh_zone(broker.ctx, "local").startswith("unhealthy (down)")
        driver.health = healthy  # type: ignore[method-assign]
        assert jobs.refresh_zone(broker.ctx, "local").startswith("ok")
        kinds = [(e.kind, e.detail) for e in list_events(broker.dbs.api, zone="local")]
        assert kinds[0][0] == "zone_up"
        assert kinds[1] == ("zone_down", "timed out")
        assert len(kinds) == 2
    finally:
        broker.stop()


def test_each_zone_has_its_own_sync_and_orphans_jobs(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        zones=[
            sim_zone("local", "local", hosts=1),
            sim_zone("cloud-a", "virtual", expose_hosts=False),
        ],
        policy=POLICY,
    )
    broker = Broker.open(settings)
    monitor = Monitor(broker.ctx)
    try:
        monitor.start()
        for zone in ("local", "cloud-a"):
            assert {f"load:{zone}", f"sync:{zone}", f"orphans:{zone}"} <= set(monitor.records)

        def unreachable(batch_size: int = 500) -> Iterator[Sequence[RemoteInstance]]:
            raise TransientError("cloud-a", "connection timed out")
            yield []  # pragma: no cover - makes this a generator

        broker.drivers["cloud-a"].list_instances = unreachable  # type: ignore[method-assign]
        for _ in range(2):
            failed = monitor.run_now("sync:cloud-a")
            fine = monitor.run_now("sync:local")
        assert (failed.runs, failed.failures, failed.last_result) == (2, 2, "failed")
        assert "connection timed out" in failed.last_error
        assert fine.last_error == "" and fine.last_result.startswith("seen 0")
        assert monitor.run_now("orphans:cloud-a").last_error
        assert monitor.run_now("orphans:local").last_result.startswith("seen 0")
        assert monitor.run_now("load:cloud-a").last_result.startswith("ok")  # health is separate
    finally:
        monitor.stop()
        broker.stop()


def test_a_stuck_zone_does_not_delay_the_others(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        zones=[
            sim_zone("local", "local", hosts=1),
            sim_zone("cloud-a", "virtual", expose_hosts=False),
        ],
        policy=POLICY,
        monitor={"sync_interval": 0.05, "orphan_interval": 0.05},
    )
    broker = Broker.open(settings)
    monitor = Monitor(broker.ctx)
    release = threading.Event()

    def stuck(batch_size: int = 500) -> Iterator[Sequence[RemoteInstance]]:
        release.wait(30)
        yield []

    broker.drivers["cloud-a"].list_instances = stuck  # type: ignore[method-assign]
    try:
        monitor.start()
        deadline = time.monotonic() + 20
        while monitor.records["sync:local"].runs < 3 or monitor.records["orphans:local"].runs < 3:
            assert time.monotonic() < deadline, "jobs of the healthy zone did not keep running"
            time.sleep(0.02)
        assert monitor.records["sync:cloud-a"].runs <= 1  # still inside its first run
    finally:
        release.set()
        monitor.stop()
        broker.stop()
