from __future__ import annotations

import math

import numpy as np
import pytest

from federator.scheduler import HostRequest, HostScheduler, HostTable
from federator.scheduler.weighers import InstancesWeigher, RamWeigher, VcpuWeigher, normalize
from tests.unit.scheduler.factory import row, table

SPREAD = HostRequest(zone="z1", vcpus=1, ram_mb=512, disk_gb=1)
PACK = HostRequest(zone="z1", vcpus=1, ram_mb=512, disk_gb=1, weighing="pack")


def test_normalize_min_max() -> None:
    out = normalize(np.array([10.0, 20.0, 15.0]))
    assert out.tolist() == [0.0, 1.0, 0.5]


def test_normalize_negative_scores() -> None:
    assert normalize(np.array([-4.0, -2.0, 0.0])).tolist() == [0.0, 0.5, 1.0]


def test_normalize_all_equal_gives_zeros() -> None:
    assert normalize(np.array([7.0, 7.0])).tolist() == [0.0, 0.0]


def test_normalize_single_and_empty() -> None:
    assert normalize(np.array([3.0])).tolist() == [0.0]
    assert normalize(np.array([], dtype=np.float64)).tolist() == []


def test_raw_scores() -> None:
    t = table(
        row("a", ram_mb=4096, ram_used_mb=1024, vcpus=4, cpu_ratio=2.0, vcpus_used=3, instances=2),
        row("b", ram_mb=2048, vcpus=4, instances=5),
    )
    idx = np.array([1, 0], dtype=np.intp)
    assert RamWeigher().weigh(t, idx, SPREAD).tolist() == [2048.0, 3072.0]
    assert VcpuWeigher().weigh(t, idx, SPREAD).tolist() == [4.0, 5.0]
    assert InstancesWeigher().weigh(t, idx, SPREAD).tolist() == [-5.0, -2.0]


def test_pack_negates_the_capacity_and_instance_weighers() -> None:
    assert RamWeigher(2.0).signed_multiplier(PACK) == -2.0
    assert RamWeigher(2.0).signed_multiplier(SPREAD) == 2.0
    assert VcpuWeigher().signed_multiplier(PACK) == -1.0
    assert InstancesWeigher().signed_multiplier(PACK) == -InstancesWeigher().multiplier < 0
    assert InstancesWeigher().signed_multiplier(SPREAD) == InstancesWeigher().multiplier


def test_multiplier_must_be_finite() -> None:
    with pytest.raises(ValueError, match="finite"):
        RamWeigher(math.nan)
    with pytest.raises(ValueError, match="finite"):
        VcpuWeigher(math.inf)


def _usage_table() -> HostTable:
    return table(
        row("half", vcpus=8, vcpus_used=4, ram_mb=8192, ram_used_mb=4096, instances=2),
        row("full", vcpus=8, vcpus_used=7, ram_mb=8192, ram_used_mb=7168, instances=4),
        row("empty", vcpus=8, ram_mb=8192),
    )


def test_spread_picks_emptiest() -> None:
    names = HostScheduler().select(_usage_table(), SPREAD, limit=3)
    assert names == ["empty", "half", "full"]


def test_pack_picks_fullest() -> None:
    names = HostScheduler().select(_usage_table(), PACK, limit=3)
    assert names == ["full", "half", "empty"]


def test_weights_are_normalised_multiplied_and_summed() -> None:
    # ram free: 4096, 1024, 8192 and vcpu free: 4, 1, 8 are scaled against 0 (their
    # minval) and the best host; instances 2, 4, 0 min-max.
    t = _usage_table()
    sched = HostScheduler(weighers=[RamWeigher(2.0), VcpuWeigher(1.0), InstancesWeigher(3.0)])
    weights = {v.host: v.weight for v in sched.explain(t, SPREAD)}
    ram = {"half": 4096 / 8192, "full": 1024 / 8192, "empty": 1.0}
    cpu = {"half": 4 / 8, "full": 1 / 8, "empty": 1.0}
    # minus the normalised count: Nova's NumInstancesWeigher at the opposite multiplier
    inst = {"half": -0.5, "full": -1.0, "empty": 0.0}
    for h in ("empty", "half", "full"):
        assert weights[h] == pytest.approx(2.0 * ram[h] + 1.0 * cpu[h] + 3.0 * inst[h])


def test_large_raw_scale_does_not_drown_small_one() -> None:
    # Without normalisation RAM in MB would swamp a vCPU difference; with it,
    # a heavier vCPU multiplier decides.
    t = table(
        row("more_ram", ram_mb=65536, vcpus=2),
        row("more_cpu", ram_mb=60000, vcpus=16),
    )
    sched = HostScheduler(weighers=[RamWeigher(1.0), VcpuWeigher(2.0)])
    assert sched.select(t, SPREAD, limit=1) == ["more_cpu"]
    assert HostScheduler(weighers=[RamWeigher(1.0)]).select(t, SPREAD, limit=1) == ["more_ram"]


def test_zero_multiplier_weigher_has_no_effect() -> None:
    t = _usage_table()
    sched = HostScheduler(weighers=[RamWeigher(0.0), InstancesWeigher(1.0)])
    weights = {v.host: v.weight for v in sched.explain(t, SPREAD)}
    assert weights == {"half": -0.5, "full": -1.0, "empty": 0.0}
