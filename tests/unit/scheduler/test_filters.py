"""Each filter as a plain function: mask over a zone slice, and explain for one host."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from federator.scheduler import HostRequest
from federator.scheduler.filters import (
    AffinityFilter,
    AntiAffinityFilter,
    AvailabilityZoneFilter,
    DiskFilter,
    EnabledFilter,
    IgnoreHostsFilter,
    RamFilter,
    VcpuFilter,
)
from federator.scheduler.filters.base import positions_in_slice
from tests.unit.scheduler.factory import row, table


def req(**kw: object) -> HostRequest:
    fields: dict[str, object] = {"zone": "z1", "vcpus": 1, "ram_mb": 1024, "disk_gb": 10}
    fields.update(kw)
    return HostRequest(**fields)  # type: ignore[arg-type]


def test_enabled_filter() -> None:
    t = table(row("on"), row("off", enabled=False))
    f = EnabledFilter()
    assert f.mask(t, t.zone_slice("z1"), req()).tolist() == [True, False]
    assert f.explain(t, 0, req()) == "host is enabled"
    assert f.explain(t, 1, req()) == "host is disabled"


def test_enabled_filter_explains_why_a_host_takes_nothing() -> None:
    t = table(
        row("new", enabled=False, disabled_reason="disabled: not in any aggregate"),
        row("fixing", enabled=False, disabled_reason="maintenance: kernel upgrade"),
        row("on"),
    )
    f = EnabledFilter()
    assert f.mask(t, t.zone_slice("z1"), req()).tolist() == [False, False, True]
    assert f.explain(t, 0, req()) == "disabled: not in any aggregate"
    assert f.explain(t, 1, req()) == "maintenance: kernel upgrade"
    t.set_enabled(0, True, "ignored when enabling")
    assert (t.reason_at(0), f.explain(t, 0, req())) == ("", "host is enabled")
    t.set_enabled(2, False, "disabled: broken fan")
    assert f.explain(t, 2, req()) == "disabled: broken fan"


def test_ram_filter_uses_ratio_and_usage() -> None:
    t = table(
        row("fits", ram_mb=2048, ram_used_mb=1024),  # free 1024: exactly enough
        row("short", ram_mb=2048, ram_used_mb=1536),  # free 512
        row("overcommitted", ram_mb=1024, ram_ratio=1.5, ram_used_mb=512),  # free 1024
    )
    f = RamFilter()
    assert f.mask(t, t.zone_slice("z1"), req(ram_mb=1024)).tolist() == [True, False, True]
    assert f.explain(t, 1, req(ram_mb=1024)).startswith("free ram 512 MB < requested 1024 MB")
    assert f.explain(t, 0, req(ram_mb=1024)).startswith("free ram 1024 MB >= requested 1024 MB")
    assert "schedulable 1536 MB, used 512 MB" in f.explain(t, 2, req(ram_mb=1024))


def test_vcpu_filter_uses_cpu_ratio() -> None:
    t = table(row("a", vcpus=2, cpu_ratio=4.0, vcpus_used=6), row("b", vcpus=2, vcpus_used=1))
    f = VcpuFilter()
    assert f.mask(t, t.zone_slice("z1"), req(vcpus=2)).tolist() == [True, False]
    assert f.explain(t, 1, req(vcpus=2)).startswith("free vcpus 1 < requested 2")
    assert f.explain(t, 0, req(vcpus=2)).startswith("free vcpus 2 >= requested 2")


def test_disk_filter() -> None:
    t = table(row("a", disk_gb=100, disk_used_gb=95), row("b", disk_gb=100, disk_used_gb=90))
    f = DiskFilter()
    assert f.mask(t, t.zone_slice("z1"), req(disk_gb=10)).tolist() == [False, True]
    assert f.explain(t, 0, req(disk_gb=10)).startswith("free disk 5 GB < requested 10 GB")


def test_availability_zone_filter() -> None:
    t = table(row("a", az="az1"), row("b", az="az2"))
    f = AvailabilityZoneFilter()
    sl = t.zone_slice("z1")
    assert f.mask(t, sl, req()).tolist() == [True, True]
    assert f.mask(t, sl, req(az="az2")).tolist() == [False, True]
    assert f.mask(t, sl, req(az="az9")).tolist() == [False, False]
    assert f.explain(t, 0, req(az="az2")) == "host az 'az1' differs from requested 'az2'"
    assert f.explain(t, 1, req(az="az2")) == "host az 'az2' matches requested 'az2'"
    assert f.explain(t, 0, req()) == "no availability zone requested"


def test_anti_affinity_filter() -> None:
    t = table(row("a"), row("b"), row("c"))
    f = AntiAffinityFilter()
    r = req(anti_affinity_hosts=frozenset({"b", "unknown"}))
    assert f.mask(t, t.zone_slice("z1"), r).tolist() == [True, False, True]
    assert "already holds as many members" in f.explain(t, 1, r)
    assert "holds no member" in f.explain(t, 0, r)
    assert f.mask(t, t.zone_slice("z1"), req()).tolist() == [True, True, True]


def test_affinity_filter() -> None:
    t = table(row("a"), row("b"), row("c"))
    f = AffinityFilter()
    sl = t.zone_slice("z1")
    placed = req(affinity_hosts=frozenset({"c"}))
    assert f.mask(t, sl, placed).tolist() == [False, False, True]
    assert f.explain(t, 0, placed) == "host is not one of the 1 hosts holding the affinity group"
    assert f.explain(t, 2, placed) == "host is one of the 1 hosts holding the affinity group"
    # empty group: nothing placed yet, any host; no group at all: any host
    assert f.mask(t, sl, req(affinity_hosts=frozenset())).tolist() == [True, True, True]
    assert f.mask(t, sl, req()).tolist() == [True, True, True]
    # a group placed only on hosts unknown here leaves nothing
    assert f.mask(t, sl, req(affinity_hosts=frozenset({"gone"}))).tolist() == [False] * 3


def test_ignore_hosts_filter() -> None:
    t = table(row("a"), row("b"))
    f = IgnoreHostsFilter()
    r = req(ignore_hosts=frozenset({"a"}))
    assert f.mask(t, t.zone_slice("z1"), r).tolist() == [False, True]
    assert f.explain(t, 0, r) == "host already failed this request (1 hosts ignored)"
    assert f.explain(t, 1, r) == "host has not failed this request (1 hosts ignored)"


def test_name_filters_only_match_hosts_of_the_request_zone() -> None:
    t = table(row("a", zone="z1"), row("a", zone="z2"), row("b", zone="z2"))
    r = req(zone="z2", ignore_hosts=frozenset({"a"}))
    sl = t.zone_slice("z2")
    assert IgnoreHostsFilter().mask(t, sl, r).tolist() == [False, True]
    assert "has not failed" in IgnoreHostsFilter().explain(t, 0, r)  # z1's "a"
    assert positions_in_slice(t, sl, "z2", ["a", "b", "zz"]).tolist() == [0, 1]
    # names resolved in one zone but outside the given slice are dropped
    assert positions_in_slice(t, slice(2, 3), "z2", ["a", "b"]).tolist() == [0]


@pytest.mark.parametrize(
    "flt",
    [
        EnabledFilter(),
        AvailabilityZoneFilter(),
        RamFilter(),
        VcpuFilter(),
        DiskFilter(),
        AntiAffinityFilter(),
        AffinityFilter(),
        IgnoreHostsFilter(),
    ],
    ids=lambda f: f.name,
)
def test_every_filter_handles_an_empty_zone(flt: object) -> None:
    t = table(row("a", zone="other"))
    sl = t.zone_slice("z1")
    r = req(az="az1", anti_affinity_hosts=frozenset({"a"}), affinity_hosts=frozenset({"a"}))
    out = flt.mask(t, sl, r)  # type: ignore[attr-defined]
    assert out.dtype == np.bool_
    assert out.shape == (0,)


def test_apply_logs_removed_count_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    t = table(row("a", ram_mb=512), row("b"), row("c", ram_mb=100))
    passed = np.ones(3, dtype=np.bool_)
    with caplog.at_level(logging.DEBUG, logger="federator.scheduler.filters.base"):
        RamFilter().apply(t, t.zone_slice("z1"), req(ram_mb=1024), passed)
    assert passed.tolist() == [False, True, False]
    assert "RamFilter removed 2 hosts (1 of 3 left in zone z1)" in caplog.text


def test_apply_without_debug_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    t = table(row("a", ram_mb=512))
    passed = np.ones(1, dtype=np.bool_)
    with caplog.at_level(logging.INFO, logger="federator.scheduler.filters.base"):
        RamFilter().apply(t, t.zone_slice("z1"), req(ram_mb=1024), passed)
    assert passed.tolist() == [False]
    assert caplog.text == ""


def test_apply_does_not_write_through_to_the_table() -> None:
    t = table(row("a", enabled=False), row("b"))
    passed = np.ones(2, dtype=np.bool_)
    EnabledFilter().apply(t, t.zone_slice("z1"), req(), passed)
    passed[:] = True
    assert t.enabled.tolist() == [False, True]
