"""The scheduler's side of server groups: AZ-scoped filters and the soft weighers."""

from __future__ import annotations

from federator.scheduler import HostRequest, HostScheduler
from federator.scheduler.filters import AffinityFilter, AntiAffinityFilter
from federator.scheduler.weighers import SoftAffinityWeigher, SoftAntiAffinityWeigher
from tests.unit.scheduler.factory import row, table

HOSTS = table(
    row("a1", 1, az="rack-a"),
    row("a2", 2, az="rack-a"),
    row("b1", 3, az="rack-b"),
    row("b2", 4, az="rack-b", ram_used_mb=60000),
)


def _req(**kw: object) -> HostRequest:
    return HostRequest(zone="z1", vcpus=1, ram_mb=1024, disk_gb=10, **kw)  # type: ignore[arg-type]


def test_anti_affinity_by_availability_zone_rejects_whole_racks() -> None:
    sched = HostScheduler(filters=[AntiAffinityFilter()], weighers=[])
    assert sched.select(HOSTS, _req(anti_affinity_azs=frozenset({"rack-a"})), 5) == ["b1", "b2"]
    verdicts = sched.explain(HOSTS, _req(anti_affinity_azs=frozenset({"rack-a"})))
    assert "availability zone rack-a" in verdicts[0].detail


def test_affinity_by_availability_zone_keeps_to_the_groups_rack() -> None:
    sched = HostScheduler(filters=[AffinityFilter()], weighers=[])
    assert sched.select(HOSTS, _req(affinity_azs=frozenset({"rack-b"})), 5) == ["b1", "b2"]
    both = _req(affinity_hosts=frozenset({"a1", "b1"}), affinity_azs=frozenset({"rack-b"}))
    assert sched.select(HOSTS, both, 5) == ["b1"]


def test_soft_weighers_follow_member_counts_only_for_their_own_policy() -> None:
    sched = HostScheduler(filters=[], weighers=[SoftAffinityWeigher(), SoftAntiAffinityWeigher()])
    counts = {"a1": 3, "a2": 1}
    assert sched.select(HOSTS, _req(soft_group="soft-affinity", group_counts=counts), 1) == ["a1"]
    anti = _req(soft_group="soft-anti-affinity", group_counts=counts)
    assert sched.select(HOSTS, anti, 2) == ["b1", "b2"]
    by_rack = _req(soft_group="soft-anti-affinity", group_az_counts={"rack-b": 2})
    assert sched.select(HOSTS, by_rack, 2) == ["a1", "a2"]
    # No soft group: the weighers score every host 0 and the table order decides.
    assert sched.select(HOSTS, _req(group_counts=counts), 1) == ["a1"]
    assert sched.select(HOSTS, _req(group_counts={"b1": 5}), 1) == ["a1"]


def test_a_group_constrained_request_can_be_asked_without_its_rule() -> None:
    req = _req(anti_affinity_hosts=frozenset({"a1"}), affinity_azs=frozenset({"rack-a"}))
    assert req.group_constrained
    free = req.without_group()
    assert not free.group_constrained and free.vcpus == req.vcpus
