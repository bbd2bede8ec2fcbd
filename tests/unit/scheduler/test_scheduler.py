from __future__ import annotations

import logging
import threading

import numpy as np
import pytest

from federator.scheduler import (
    HostRequest,
    HostScheduler,
    HostTable,
    default_filters,
    default_weighers,
)
from federator.scheduler.scheduler import _top_k
from federator.scheduler.weighers import RamWeigher
from tests.unit.scheduler.factory import row, table


def req(**kw: object) -> HostRequest:
    fields: dict[str, object] = {"zone": "z1", "vcpus": 1, "ram_mb": 1024, "disk_gb": 10}
    fields.update(kw)
    return HostRequest(**fields)  # type: ignore[arg-type]


def ramp(n: int, **fields: object) -> HostTable:
    """Hosts h0..h{n-1}; higher number = more RAM used, so spread order is h0, h1, ..."""
    return table(*(row(f"h{i}", i, ram_used_mb=i * 1024, **fields) for i in range(n)))


SCHED = HostScheduler(weighers=[RamWeigher()])


def test_defaults() -> None:
    s = HostScheduler()
    assert [f.name for f in s.filters] == [f.name for f in default_filters()]
    assert [w.name for w in s.weighers] == [
        "RamWeigher",
        "VcpuWeigher",
        "InstancesWeigher",
        "ServerGroupSoftAffinityWeigher",
        "ServerGroupSoftAntiAffinityWeigher",
    ]
    assert len(default_weighers()) == 5
    assert [f.name for f in default_filters()] == [
        "EnabledFilter",
        "AvailabilityZoneFilter",
        "IgnoreHostsFilter",
        "AggregateMultiTenancyIsolation",
        "AggregateInstanceExtraSpecsFilter",
        "AggregateImagePropertiesIsolation",
        "RamFilter",
        "VcpuFilter",
        "DiskFilter",
        "NumInstancesFilter",
        "AggregateNumInstancesFilter",
        "AntiAffinityFilter",
        "AffinityFilter",
    ]


def test_select_orders_best_first_and_respects_limit() -> None:
    t = ramp(10)
    assert SCHED.select(t, req(), limit=3) == ["h0", "h1", "h2"]
    assert SCHED.select(t, req(), limit=1) == ["h0"]
    assert SCHED.select(t, req(), limit=50) == [f"h{i}" for i in range(10)]
    assert SCHED.select(t, req()) == ["h0", "h1", "h2", "h3", "h4"]


def test_select_rejects_bad_limit() -> None:
    with pytest.raises(ValueError):
        SCHED.select(ramp(2), req(), limit=0)


def test_ties_go_to_host_order_and_are_deterministic() -> None:
    t = table(*(row(f"h{i}", i) for i in range(20)))  # all identical
    first = HostScheduler().select(t, req(), limit=4)
    assert first == ["h0", "h1", "h2", "h3"]
    assert all(HostScheduler().select(t, req(), limit=4) == first for _ in range(5))


def test_ties_at_the_cut_take_earliest_hosts() -> None:
    # h9 is best; eight hosts tie behind it; limit 3 must take h0 and h1 from the tie.
    rows = [row(f"h{i}", i, ram_used_mb=1024) for i in range(9)] + [row("h9", 9)]
    assert SCHED.select(table(*rows), req(), limit=3) == ["h9", "h0", "h1"]


@pytest.mark.parametrize("k", [1, 2, 5, 10, 40])
def test_top_k_matches_stable_full_sort(k: int) -> None:
    rng = np.random.default_rng(k)
    weights = rng.integers(0, 6, size=40).astype(np.float64) / 3.0
    expected = np.argsort(-weights, kind="stable")[:k]
    assert _top_k(weights, k).tolist() == expected.tolist()


def test_disabled_hosts_are_never_chosen() -> None:
    t = ramp(4)
    t.set_enabled(0, False)
    assert SCHED.select(t, req(), limit=4) == ["h1", "h2", "h3"]


def test_az_restriction() -> None:
    t = table(row("a", az="az1"), row("b", az="az2", ram_used_mb=4096), row("c", az="az2"))
    assert SCHED.select(t, req(az="az2")) == ["c", "b"]
    assert SCHED.select(t, req(az="az3")) == []
    assert SCHED.select(t, req()) == ["a", "c", "b"]


def test_anti_affinity_spreads_group_members() -> None:
    t = ramp(5)
    assert SCHED.select(t, req(anti_affinity_hosts=frozenset({"h0", "h2"}))) == ["h1", "h3", "h4"]


def test_affinity_keeps_group_together() -> None:
    t = ramp(5)
    assert SCHED.select(t, req(affinity_hosts=frozenset({"h4", "h3"}))) == ["h3", "h4"]
    assert SCHED.select(t, req(affinity_hosts=frozenset()), limit=2) == ["h0", "h1"]


def test_affinity_host_without_room_means_no_valid_host() -> None:
    t = ramp(3)
    t.set_usage(1, vcpus_used=0, ram_used_mb=65536, disk_used_gb=0, instances=1)
    assert SCHED.select(t, req(affinity_hosts=frozenset({"h1"}))) == []


def test_ignore_hosts_on_reschedule() -> None:
    t = ramp(3)
    assert SCHED.select(t, req(ignore_hosts=frozenset({"h0"}))) == ["h1", "h2"]


def test_empty_or_unknown_zone() -> None:
    t = ramp(3)
    assert SCHED.select(t, req(zone="nowhere")) == []
    assert SCHED.explain(t, req(zone="nowhere")) == []
    assert HostScheduler().select(HostTable.from_rows([]), req()) == []


def test_select_only_looks_at_the_request_zone() -> None:
    t = table(row("a", zone="z0"), row("b", zone="z1", ram_used_mb=60000), row("c", zone="z2"))
    assert SCHED.select(t, req()) == ["b"]


def test_usage_changes_are_seen_by_the_next_decision() -> None:
    t = ramp(3)
    assert SCHED.select(t, req(), limit=1) == ["h0"]
    t.set_usage(0, vcpus_used=1, ram_used_mb=10 * 1024, disk_used_gb=0, instances=1)
    assert SCHED.select(t, req(), limit=1) == ["h1"]


def test_explain_reports_first_rejecting_filter_for_every_host() -> None:
    t = table(
        row("off", enabled=False, ram_mb=10),  # disabled and short: EnabledFilter first
        row("small", ram_mb=512),
        row("busy", vcpus=1, vcpus_used=1),
        row("member"),
        row("ok", ram_used_mb=1024),
        row("best"),
    )
    r = req(anti_affinity_hosts=frozenset({"member"}))
    verdicts = HostScheduler().explain(t, r)
    assert [v.host for v in verdicts] == ["off", "small", "busy", "member", "ok", "best"]
    by = {v.host: v for v in verdicts}
    assert by["off"].rejected_by == "EnabledFilter"
    assert by["off"].detail == "host is disabled"
    assert by["small"].rejected_by == "RamFilter"
    assert by["small"].detail.startswith("free ram 512 MB < requested 1024 MB")
    assert by["small"].free_ram_mb == 512
    assert by["busy"].rejected_by == "VcpuFilter"
    assert by["busy"].free_vcpus == 0
    assert by["member"].rejected_by == "AntiAffinityFilter"
    for name in ("off", "small", "busy", "member"):
        assert not by[name].passed
        assert by[name].weight is None
    for name in ("ok", "best"):
        assert by[name].passed
        assert by[name].rejected_by is None
        assert by[name].weight is not None
    assert by["best"].weight > by["ok"].weight  # type: ignore[operator]
    assert by["best"].free_disk_gb == 1000


def test_explain_weights_agree_with_select() -> None:
    t = ramp(8, instances=1)
    t.set_usage(3, vcpus_used=9, ram_used_mb=0, disk_used_gb=0, instances=4)
    s = HostScheduler()
    ranked = sorted(
        (v for v in s.explain(t, req()) if v.passed),
        key=lambda v: -v.weight,  # type: ignore[operator]
    )
    assert [v.host for v in ranked][:5] == s.select(t, req())


def test_explain_reserves_nothing() -> None:
    t = ramp(3)
    before = t.row_at(0)
    HostScheduler().explain(t, req())
    HostScheduler().select(t, req())
    assert t.row_at(0) == before


def test_filter_counts_count_each_host_once_in_filter_order() -> None:
    t = table(
        row("off", enabled=False, ram_mb=10),
        row("small1", ram_mb=512),
        row("small2", ram_mb=512, az="az2"),
        row("ok"),
    )
    counts = HostScheduler().filter_counts(t, req(az="az1"))
    assert counts["EnabledFilter"] == 1
    assert counts["AvailabilityZoneFilter"] == 1  # small2 goes here, not to RamFilter
    assert counts["RamFilter"] == 1
    assert sum(counts.values()) == 3
    assert list(counts) == [f.name for f in default_filters()]


def test_select_logs_each_filter_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    t = table(row("off", enabled=False), row("small", ram_mb=1), row("ok"))
    with caplog.at_level(logging.DEBUG, logger="federator.scheduler"):
        assert HostScheduler().select(t, req()) == ["ok"]
    assert "EnabledFilter removed 1 hosts" in caplog.text
    assert "RamFilter removed 1 hosts" in caplog.text


def test_no_filters_and_no_weighers() -> None:
    t = ramp(3)
    bare = HostScheduler(filters=[], weighers=[])
    assert bare.select(t, req(ram_mb=10**9)) == ["h0", "h1", "h2"]
    assert all(v.passed and v.weight == 0.0 for v in bare.explain(t, req()))
    assert bare.filter_counts(t, req()) == {}


def test_request_validation() -> None:
    with pytest.raises(ValueError):
        req(ram_mb=-1)
    with pytest.raises(ValueError):
        req(weighing="random")


def test_concurrent_select_and_claim_never_overcommit() -> None:
    # Four workers each select then claim under the table lock; every claim
    # must land on a host that still had room.
    t = table(*(row(f"h{i}", i, ram_mb=4096) for i in range(8)))  # 4 slots per host
    sched = HostScheduler()
    claims: list[str] = []

    def worker() -> None:
        for _ in range(8):
            with t.lock:
                names = sched.select(t, req(), limit=1)
                if not names:
                    return
                i = t.index_of("z1", names[0])
                assert i is not None
                cur = t.row_at(i)
                t.set_usage(
                    i,
                    vcpus_used=cur.vcpus_used + 1,
                    ram_used_mb=cur.ram_used_mb + 1024,
                    disk_used_gb=cur.disk_used_gb + 10,
                    instances=cur.instances + 1,
                )
                claims.append(names[0])

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=30)
    assert len(claims) == 32
    assert t.free_ram_mb().tolist() == [0] * 8
    assert SCHED.select(t, req()) == []
