"""What a broker reports to its parents: the room its policy leaves, zone by zone."""

from __future__ import annotations

import dataclasses

from federator.policy.evaluate import Limits, rank
from federator.policy.headroom import Room, headroom
from tests.unit.policy.test_evaluate import (
    CTX,
    RAM_TOTAL,
    VCPU_TOTAL,
    loads,
    local,
    make_policy,
    remote,
    request,
    verdict,
    zones_of,
)


def test_local_room_stops_at_high_water_and_quotas_bound_the_targets() -> None:
    found = headroom(make_policy(), CTX, loads(local(ram_used=8192)))
    rooms = {z.zone: z.room for z in found.zones}
    # 75% of 32768 MB is 24576 MB; 8192 used.
    assert rooms["local"] == Room(ram_mb=24576 - 8192, vcpus=VCPU_TOTAL, instances=None)
    # Quotas of 8 instances; RAM and vCPUs unbounded.
    assert rooms["cloud-a"] == Room(ram_mb=None, vcpus=None, instances=8)
    # Unbounded RAM in an overflow target makes the total unbounded too.
    assert found.total == Room(ram_mb=None, vcpus=None, instances=None)
    assert found.reachable == ("local", "cloud-a", "cloud-b")


def test_bursting_or_down_zones_have_no_room() -> None:
    found = headroom(
        make_policy(zones={"local": {"overflow": []}}),
        CTX,
        loads(local(ram_used=100, bursting=True), remote("cloud-a", available=False)),
    )
    rooms = {z.zone: z for z in found.zones}
    assert rooms["local"].room == Room(0, 0, 0)
    assert rooms["cloud-a"].available is False and rooms["cloud-a"].room == Room(0, 0, 0)
    # Without overflow targets only the local zone counts.
    assert found.reachable == ("local",)
    assert found.total == Room(0, 0, 0)


def test_without_thresholds_the_hosts_bound_the_local_room() -> None:
    found = headroom(
        make_policy(zones={"local": {}}), CTX, loads(local(ram_used=RAM_TOTAL, vcpus_used=40))
    )
    assert found.total == Room(ram_mb=0, vcpus=0, instances=None)


def test_a_child_zones_report_bounds_its_room_and_placement() -> None:
    # cloud-a is a child that reported room for 2048 MB when 1024 MB were used there.
    child = dataclasses.replace(
        remote("cloud-a", instances=1), reported=Limits(ram_mb=3072, vcpus=None, instances=None)
    )
    policy = make_policy(zones={"local": {"overflow": ["cloud-a"]}})
    found = headroom(policy, CTX, loads(local(ram_used=RAM_TOTAL), child))
    assert {z.zone: z.room for z in found.zones}["cloud-a"] == Room(2048, None, None)

    ranking = rank(policy, CTX, request(ram_mb=2048), loads(local(ram_used=RAM_TOTAL), child))
    # The local zone (no thresholds) stays first; its hosts are full, so cloud-a takes it.
    assert zones_of(ranking) == ["local", "cloud-a"]
    assert (
        ranking.candidates[1].limits.ram_mb == 3072
    )  # claims made since the report count against it

    ranking = rank(policy, CTX, request(ram_mb=4096), loads(local(ram_used=RAM_TOTAL), child))
    assert zones_of(ranking) == ["local"]
    v = verdict(ranking, "cloud-a")
    assert v.check == "capacity.reported"
    assert "2048 MB RAM free, 4096 needed" in v.detail
    assert v.figures["reported_free_ram_mb"] == 2048
