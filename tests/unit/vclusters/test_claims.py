"""Claiming a plan against a real broker (SQLite, sim zones): all members' capacity in one
transaction, or none of it, naming the member and the resource that refused."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from federator.broker import Broker
from federator.compute import claims
from federator.policy.evaluate import Limits
from federator.storage.models import Allocation, Host, StoragePool, VolumeAllocation, Zone
from federator.vclusters.claims import claim_plan
from federator.vclusters.inputs import ClusterInputs, gather
from federator.vclusters.planner import Member, Plan, plan
from tests.conftest import make_settings, sim_zone

PROJECT = "project-a"
RAM_HIGH = 3 * 8192 // 2  # local: three 8192 MB hosts, 50% high water


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    settings = make_settings(
        tmp_path,
        zones=[
            sim_zone("local", "local", hosts=3),
            sim_zone("cloud", "virtual", expose_hosts=False),
        ],
        policy={
            "version": "vcluster-claims-1",
            "zones": {
                "local": {
                    "thresholds": {"ram_percent": {"high": 50, "low": 40}},
                    "overflow": ["cloud"],
                },
                "cloud": {"quota": {"instances": 2, "volumes": 1, "gigabytes": 50}},
            },
        },
    )
    b = Broker.open(settings)
    yield b
    b.stop()


def server(name: str, ram_mb: int = 1024) -> Member:
    return Member(name, "server", vcpus=1, ram_mb=ram_mb, disk_gb=10)


def volume(name: str, size_gb: int = 10) -> Member:
    return Member(name, "volume", size_gb=size_gb)


def planned(b: Broker, members: list[Member]) -> tuple[Plan, ClusterInputs, dict[str, str]]:
    found = gather(b.ctx, PROJECT, members)
    p = plan(members, [], found.zones)
    assert p.ok, p.message
    return p, found, {m.name: str(uuid.uuid4()) for m in members}


def held(b: Broker) -> tuple[int, int]:
    with b.ctx.api.read() as s:
        return (
            s.scalar(select(func.count()).select_from(Allocation)) or 0,
            s.scalar(select(func.count()).select_from(VolumeAllocation)) or 0,
        )


def test_a_plan_is_claimed_whole_and_the_host_cache_follows(broker: Broker) -> None:
    members = [server("a", 4096), server("b", 4096), volume("v", 20)]
    p, found, uuids = planned(broker, members)

    got = claim_plan(broker.ctx, p, members, uuids, found.ceilings)

    assert got.ok and got.member is None
    assert held(broker) == (2, 1)
    where = {a.member: a for a in p.assignments}
    with broker.ctx.api.read() as s:
        alloc = s.get(Allocation, uuids["a"])
        assert alloc is not None and alloc.ram_mb == 4096 and alloc.zone == "local"
        host = s.scalars(select(Host).where(Host.name == where["a"].host)).one()
        assert alloc.host_id == host.id
        pool = s.scalars(select(StoragePool).where(StoragePool.name == where["v"].pool)).one()
        assert (pool.used_gb, pool.volumes) == (20, 1)
        zone = s.get(Zone, "local")
        assert zone is not None
        assert (zone.ram_used_mb, zone.instances, zone.volume_gb_used) == (8192, 2, 20)
    table = broker.hosts.table
    i = table.index_of("local", host.name)
    assert i is not None and int(table.ram_used[i]) == host.ram_used_mb
    assert {u.host_id for u in got.usage} == {
        broker.hosts.host_id("local", where[m].host or "") for m in ("a", "b")
    }


def test_a_quota_taken_meanwhile_refuses_the_whole_plan(broker: Broker) -> None:
    # Local high water (12288 MB) takes the 8192 and one 4096 MB server; the third
    # server bursts to the cloud, whose quota of two instances is then taken by others.
    members = [server("a", 8192), server("b", 4096), server("c", 4096)]
    p, found, uuids = planned(broker, members)
    assert found.ceilings["local"].limits.ram_mb == RAM_HIGH
    burst = [a.member for a in p.assignments if a.zone == "cloud"]
    assert len(burst) == 1
    for _ in range(2):
        got_other = claims.claim(
            broker.ctx.api, instance_uuid=str(uuid.uuid4()), zone="cloud", host_id=None,
            host_name=None, res=claims.Resources(1, 512, 1), limits=Limits(),
            require_not_bursting=False,
        )  # fmt: skip
        assert got_other.outcome is claims.ClaimOutcome.OK

    got = claim_plan(broker.ctx, p, members, uuids, found.ceilings)

    assert not got.ok
    assert (got.member, got.outcome, got.resource) == (burst[0], "zone_limit", "zone cloud")
    assert held(broker) == (2, 0)  # only the two others' allocations
    with broker.ctx.api.read() as s:
        local = s.get(Zone, "local")
        assert local is not None and (local.ram_used_mb, local.instances) == (0, 0)
        assert sum(h.ram_used_mb for h in s.scalars(select(Host))) == 0


def test_the_high_water_mark_still_binds_at_claim_time(broker: Broker) -> None:
    members = [server("a", 8192), server("b", 4096)]  # exactly up to high water
    p, found, uuids = planned(broker, members)
    assert {a.zone for a in p.assignments} == {"local"}
    host = next(a.host for a in p.assignments if a.member == "b")
    assert host is not None
    spare = next(
        h for h in ("local-host-001", "local-host-002", "local-host-003")
        if h not in {a.host for a in p.assignments}
    )  # fmt: skip
    other = claims.claim(
        broker.ctx.api, instance_uuid=str(uuid.uuid4()), zone="local",
        host_id=broker.hosts.host_id("local", spare), host_name=spare,
        res=claims.Resources(1, 512, 1), limits=Limits(), require_not_bursting=False,
    )  # fmt: skip
    assert other.outcome is claims.ClaimOutcome.OK

    got = claim_plan(broker.ctx, p, members, uuids, found.ceilings)

    assert not got.ok and got.outcome == "zone_limit" and got.resource == "zone local"
    assert held(broker) == (1, 0)


def test_a_host_gone_full_refuses_and_the_cache_is_refreshed(broker: Broker) -> None:
    members = [server("a", 1024), volume("v", 10)]
    p, found, uuids = planned(broker, members)
    host = p.assignments[0].host
    assert host is not None
    host_id = broker.hosts.host_id("local", host)
    full = claims.claim(
        broker.ctx.api, instance_uuid=str(uuid.uuid4()), zone="local", host_id=host_id,
        host_name=host, res=claims.Resources(1, 8192, 1), limits=Limits(),
        require_not_bursting=False,
    )  # fmt: skip
    assert full.outcome is claims.ClaimOutcome.OK

    got = claim_plan(broker.ctx, p, members, uuids, found.ceilings)

    assert (got.ok, got.member, got.outcome) == (False, "a", "host_full")
    assert got.resource == f"host {host} of zone local"
    assert held(broker) == (1, 0)
    i = broker.hosts.table.index_of("local", host)
    assert i is not None and int(broker.hosts.table.ram_used[i]) == 8192


def test_only_a_complete_plan_can_be_claimed(broker: Broker) -> None:
    members = [server("a")]
    found = gather(broker.ctx, PROJECT, members)
    with pytest.raises(ValueError, match="places every member"):
        claim_plan(broker.ctx, Plan(fault="no_valid_host"), members, {"a": "x"}, found.ceilings)
    p = plan(members, [], found.zones)
    with pytest.raises(ValueError, match="'a'"):
        claim_plan(broker.ctx, p, members, {}, found.ceilings)
