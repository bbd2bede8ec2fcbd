from __future__ import annotations

import threading

import numpy as np
import pytest

from federator.scheduler import HostTable
from tests.unit.scheduler.factory import row, table


def test_from_rows_groups_zones_contiguously_and_keeps_order_within_zone() -> None:
    t = table(
        row("b1", zone="zb"),
        row("a1", zone="za"),
        row("b2", zone="zb"),
        row("a2", zone="za"),
    )
    assert [t.name_at(i) for i in range(len(t))] == ["a1", "a2", "b1", "b2"]
    assert t.zone_slice("za") == slice(0, 2)
    assert t.zone_slice("zb") == slice(2, 4)
    assert t.zones == ["za", "zb"]


def test_unknown_zone_is_an_empty_slice() -> None:
    t = table(row("h1"))
    sl = t.zone_slice("nowhere")
    assert sl.stop - sl.start == 0
    assert t.enabled[sl].size == 0


def test_empty_table() -> None:
    t = HostTable.from_rows([])
    assert len(t) == 0
    assert t.free_ram_mb().size == 0


def test_index_of_is_per_zone() -> None:
    t = table(row("h1", zone="za"), row("h1", zone="zb"), row("h2", zone="zb"))
    assert t.index_of("za", "h1") == 0
    assert t.index_of("zb", "h1") == 1
    assert t.index_of("zb", "h2") == 2
    assert t.index_of("za", "h2") is None
    assert t.index_of("zc", "h1") is None


def test_duplicate_host_in_zone_is_rejected() -> None:
    with pytest.raises(ValueError, match="appears twice"):
        table(row("h1"), row("h1"))


def test_negative_usage_is_rejected() -> None:
    with pytest.raises(ValueError, match="negative"):
        table(row("h1", ram_used_mb=-1))


def test_capacity_is_floor_of_physical_times_ratio() -> None:
    t = table(
        row("h1", vcpus=3, cpu_ratio=1.5, ram_mb=1001, ram_ratio=1.5, disk_gb=7, disk_ratio=0.9)
    )
    assert t.vcpus_cap.tolist() == [4]  # 4.5
    assert t.ram_cap.tolist() == [1501]  # 1501.5
    assert t.disk_cap.tolist() == [6]  # 6.3
    assert t.vcpus_cap.dtype == np.int64


def test_free_figures_subtract_usage() -> None:
    t = table(
        row("h1", vcpus=8, cpu_ratio=4.0, vcpus_used=10, ram_mb=4096, ram_used_mb=5000),
        row("h2", disk_gb=100, disk_used_gb=30),
    )
    assert t.free_vcpus().tolist() == [22, 16]
    assert t.free_ram_mb().tolist() == [-904, 65536]
    assert t.free_disk_gb().tolist() == [1000, 70]
    assert t.free_disk_gb(slice(1, 2)).tolist() == [70]


def test_set_usage_and_row_round_trip() -> None:
    original = row("h1", i=7, az="az2", cpu_ratio=4.0, ram_ratio=1.5, disk_ratio=0.5)
    t = table(original)
    assert t.row_at(0) == original
    t.set_usage(0, vcpus_used=3, ram_used_mb=2048, disk_used_gb=10, instances=2)
    after = t.row_at(0)
    assert (after.vcpus_used, after.ram_used_mb, after.disk_used_gb, after.instances) == (
        3,
        2048,
        10,
        2,
    )
    assert t.free_ram_mb().tolist() == [65536 * 3 // 2 - 2048]


def test_set_usage_rejects_bad_input_without_changing_state() -> None:
    t = table(row("h1", ram_used_mb=5))
    with pytest.raises(ValueError):
        t.set_usage(0, vcpus_used=0, ram_used_mb=-1, disk_used_gb=0, instances=0)
    with pytest.raises(IndexError):
        t.set_usage(1, vcpus_used=0, ram_used_mb=0, disk_used_gb=0, instances=0)
    assert t.ram_used.tolist() == [5]


def test_set_enabled() -> None:
    t = table(row("h1"), row("h2"))
    t.set_enabled(1, False)
    assert t.enabled.tolist() == [True, False]
    assert t.row_at(1).enabled is False
    with pytest.raises(IndexError):
        t.set_enabled(-1, True)


def test_aggregate_metadata_and_reasons_ride_along() -> None:
    meta = {"ssd": frozenset({"true"}), "availability_zone": frozenset({"az1"})}
    t = table(row("h1", metadata=meta), row("h2", enabled=False, disabled_reason="disabled: x"))
    assert t.metadata_at(0) == meta
    assert t.metadata_at(1) == {}
    assert (t.reason_at(0), t.reason_at(1)) == ("", "disabled: x")
    assert t.row_at(0).metadata == meta
    assert t.row_at(1).disabled_reason == "disabled: x"


def test_az_codes_decode() -> None:
    t = table(row("h1", az="b"), row("h2", az="a"), row("h3", az="b"))
    assert t.az_code.dtype == np.int32
    assert [t.az_at(i) for i in range(3)] == ["b", "a", "b"]
    assert t.az_code.tolist() == [t.az_codes["b"], t.az_codes["a"], t.az_codes["b"]]


def test_lock_is_reentrant_so_callers_can_wrap_select_and_claim() -> None:
    t = table(row("h1"))
    with t.lock:
        t.set_usage(0, vcpus_used=1, ram_used_mb=1, disk_used_gb=1, instances=1)
    # and it is released again: another thread can take it
    got = threading.Event()

    def take() -> None:
        with t.lock:
            got.set()

    th = threading.Thread(target=take)
    th.start()
    th.join(timeout=5)
    assert got.is_set()
