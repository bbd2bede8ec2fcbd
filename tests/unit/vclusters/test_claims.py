"""Claiming a plan against a real broker (SQLite, sim zones): all members' capacity in one
transaction, or none of it, naming the member and the resource that refused."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from federator.broker import Broker
from federator.compute import claims
from federator.policy.evaluate import Limits
from federator.storage.models import Allocation, Host, StoragePool, VolumeAllocation, Zone
from federator.vclusters import claims as vclaims
from federator.vclusters.claims import PlanClaim, claim_plan
from federator.vclusters.inputs import ClusterInputs, gather
from federator.vclusters.planner import Assignment, Member, Plan, plan
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


# --- the batched claim: which member a refusal names ----------------------------------------

HOSTS = ("local-host-001", "local-host-002", "local-host-003")


def on_host(member: str, host: str) -> Assignment:
    return Assignment(member, "local", host, None, "local")


def in_pool(member: str, host: str) -> Assignment:
    return Assignment(member, "local", host, f"{host}/volumes", "local")


def hold(b: Broker, ram_mb: int, host: str | None = None, disk_gb: int = 1) -> None:
    """Another request's claim on ``host`` (or in the zone); the host cache is not told."""
    got = claims.claim(
        b.ctx.api, instance_uuid=str(uuid.uuid4()), zone="local",
        host_id=None if host is None else b.hosts.host_id("local", host), host_name=host,
        res=claims.Resources(1, ram_mb, disk_gb), limits=Limits(), require_not_bursting=False,
    )  # fmt: skip
    assert got.outcome is claims.ClaimOutcome.OK


def claim_by_hand(
    b: Broker, members: list[Member], *assignments: Assignment, **kw: Any
) -> tuple[PlanClaim, dict[str, str]]:
    uuids = {m.name: str(uuid.uuid4()) for m in members}
    found = gather(b.ctx, PROJECT, members)
    return claim_plan(b.ctx, Plan(tuple(assignments)), members, uuids, found.ceilings, **kw), uuids


def counters(b: Broker) -> dict[str, tuple[int, ...]]:
    """Every host's and pool's counters, and the local zone's, by name."""
    with b.ctx.api.read() as s:
        out: dict[str, tuple[int, ...]] = {
            h.name: (h.vcpus_used, h.ram_used_mb, h.disk_used_gb, h.instances)
            for h in s.scalars(select(Host).where(Host.zone == "local"))
        }
        for p in s.scalars(select(StoragePool).where(StoragePool.zone == "local")):
            out[p.name] = (p.used_gb, p.free_gb or 0, p.volumes)
        z = s.get(Zone, "local")
        assert z is not None
        out["zone"] = (z.vcpus_used, z.ram_used_mb, z.instances, z.volume_gb_used, z.volumes)
    return out


def cached_ram(b: Broker, host: str) -> int:
    i = b.hosts.table.index_of("local", host)
    assert i is not None
    return int(b.hosts.table.ram_used[i])


def test_a_full_host_among_many_names_the_member_placed_on_it(broker: Broker) -> None:
    members = [server(n) for n in "abc"]
    hold(broker, 8192, HOSTS[2])
    before = counters(broker)

    got, _ = claim_by_hand(
        broker, members, on_host("a", HOSTS[1]), on_host("b", HOSTS[2]), on_host("c", HOSTS[0])
    )

    assert (got.ok, got.member, got.outcome) == (False, "b", "host_full")
    assert got.resource == f"host {HOSTS[2]} of zone local"
    assert counters(broker) == before
    assert held(broker) == (1, 0)
    assert cached_ram(broker, HOSTS[2]) == 8192  # re-read after the refusal


def test_of_two_full_hosts_the_one_with_the_lower_id_refuses(broker: Broker) -> None:
    ids = {h: broker.hosts.host_id("local", h) or 0 for h in HOSTS}
    low, high = sorted(HOSTS[1:], key=ids.__getitem__)
    for h in (low, high):
        hold(broker, 1024, h, disk_gb=200)  # their disks full; the zone far from high water
    members = [server("a"), server("b"), server("c")]

    got, _ = claim_by_hand(
        broker, members, on_host("a", high), on_host("b", HOSTS[0]), on_host("c", low)
    )

    assert (got.member, got.outcome) == ("c", "host_full")
    assert got.resource == f"host {low} of zone local"


def test_servers_sharing_a_host_are_refused_at_the_one_that_overflows_it(broker: Broker) -> None:
    # 1024 MB held; 4096 and 2048 still fit in 8192 MB, the next 4096 does not.
    hold(broker, 1024, HOSTS[0])
    members = [server("a", 4096), server("b", 2048), server("c", 4096)]
    before = counters(broker)

    got, _ = claim_by_hand(broker, members, *(on_host(n, HOSTS[0]) for n in "abc"))

    assert (got.member, got.outcome) == ("c", "host_full")
    assert got.resource == f"host {HOSTS[0]} of zone local"
    assert counters(broker) == before


def test_a_zone_ceiling_only_the_whole_batch_crosses_names_the_member_crossing_it(
    broker: Broker,
) -> None:
    # Three 4096 MB servers are exactly the 12288 MB high-water mark; 512 MB held already
    # leaves each of them room alone, not all three. Hosts are claimed in id order: the
    # server on the host with the highest id is the one that crosses.
    hold(broker, 512)
    members = [server(n, 4096) for n in "abc"]
    placed = dict(zip("abc", HOSTS, strict=True))
    crossing = max("abc", key=lambda n: broker.hosts.host_id("local", placed[n]) or 0)
    before = counters(broker)

    got, _ = claim_by_hand(broker, members, *(on_host(n, placed[n]) for n in "abc"))

    assert (got.member, got.outcome, got.resource) == (crossing, "zone_limit", "zone local")
    assert counters(broker) == before
    assert held(broker) == (1, 0)


def test_a_batch_exactly_up_to_the_ceiling_is_claimed(broker: Broker) -> None:
    members = [server(n, 4096) for n in "abc"]

    got, _ = claim_by_hand(broker, members, *map(on_host, "abc", HOSTS))

    assert got.ok
    assert counters(broker)["zone"][1:3] == (RAM_HIGH, 3)


def test_volumes_sharing_a_pool_are_refused_at_the_one_that_overflows_it(broker: Broker) -> None:
    members = [server("s"), volume("v1", 600), volume("v2", 300), volume("v3", 200)]
    before = counters(broker)

    got, _ = claim_by_hand(
        broker, members, on_host("s", HOSTS[0]),
        *(in_pool(v, HOSTS[0]) for v in ("v1", "v2", "v3")),
    )  # fmt: skip

    assert (got.member, got.outcome) == ("v3", "pool_full")
    assert got.resource == f"pool {HOSTS[0]}/volumes of zone local"
    assert counters(broker) == before  # the server's claim went back too
    assert held(broker) == (0, 0)


def test_members_of_different_sizes_each_add_their_own(broker: Broker) -> None:
    members = [
        Member("a", "server", vcpus=1, ram_mb=1024, disk_gb=10),
        Member("b", "server", vcpus=2, ram_mb=2048, disk_gb=20),
        Member("c", "server", vcpus=4, ram_mb=512, disk_gb=5),
        volume("v1", 10), volume("v2", 20), volume("v3", 5),
    ]  # fmt: skip

    got, uuids = claim_by_hand(
        broker, members, on_host("a", HOSTS[0]), on_host("b", HOSTS[1]), on_host("c", HOSTS[0]),
        in_pool("v1", HOSTS[0]), in_pool("v2", HOSTS[1]), in_pool("v3", HOSTS[0]),
    )  # fmt: skip

    assert got.ok
    now = counters(broker)
    assert now[HOSTS[0]] == (5, 1536, 15, 2) and now[HOSTS[1]] == (2, 2048, 20, 1)
    assert now[HOSTS[2]] == (0, 0, 0, 0)
    assert now[f"{HOSTS[0]}/volumes"] == (15, 985, 2)
    assert now[f"{HOSTS[1]}/volumes"] == (20, 980, 1)
    assert now["zone"] == (7, 3584, 3, 35, 3)
    assert {(u.host_id, u.vcpus_used, u.ram_used_mb, u.instances) for u in got.usage} == {
        (broker.hosts.host_id("local", HOSTS[0]), 5, 1536, 2),
        (broker.hosts.host_id("local", HOSTS[1]), 2, 2048, 1),
    }
    assert (cached_ram(broker, HOSTS[0]), cached_ram(broker, HOSTS[1])) == (1536, 2048)
    with broker.ctx.api.read() as s:
        c = s.get(Allocation, uuids["c"])
        assert c is not None and (c.vcpus, c.ram_mb, c.disk_gb) == (4, 512, 5)
        assert c.host_id == broker.hosts.host_id("local", HOSTS[0])
        v2 = s.get(VolumeAllocation, uuids["v2"])
        assert v2 is not None and (v2.zone, v2.size_gb) == ("local", 20)


def test_a_claim_in_several_updates_is_still_all_or_nothing(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vclaims, "_ROWS_PER_UPDATE", 1)  # one host or pool per update
    by_id = sorted(HOSTS, key=lambda h: broker.hosts.host_id("local", h) or 0)
    members = [*(server(n) for n in "abc"), *(volume(f"v{n}") for n in "abc")]
    places = [*(on_host(n, h) for n, h in zip("abc", by_id, strict=True)),
              *(in_pool(f"v{n}", h) for n, h in zip("abc", by_id, strict=True))]  # fmt: skip
    hold(broker, 8192, by_id[-1])  # the last host's update refuses, after the others'
    before = counters(broker)

    got, _ = claim_by_hand(broker, members, *places)

    assert (got.member, got.outcome) == ("c", "host_full")
    assert counters(broker) == before
    broker.ctx.hosts.refresh_zone("local")
    release_held(broker)

    got, _ = claim_by_hand(broker, members, *places)

    assert got.ok and held(broker) == (3, 3)
    now = counters(broker)
    assert all(now[h] == (1, 1024, 10, 1) for h in HOSTS)
    assert all(now[f"{h}/volumes"] == (10, 990, 1) for h in HOSTS)


def release_held(b: Broker) -> None:
    """Give back every allocation held so far."""
    with b.ctx.api.read() as s:
        held_ids = list(s.scalars(select(Allocation.instance_uuid)))
    for i in held_ids:
        assert claims.release(b.ctx.api, i) is not None


def test_what_is_claimed_with_the_members_is_written_in_the_same_transaction(
    broker: Broker,
) -> None:
    members = [server("a"), volume("v")]
    seen: list[tuple[int, int]] = []

    def record(s: Session) -> None:
        seen.append(
            (
                s.scalar(select(func.count()).select_from(Allocation)) or 0,
                s.scalar(select(func.count()).select_from(VolumeAllocation)) or 0,
            )
        )

    got, _ = claim_by_hand(broker, members, on_host("a", HOSTS[0]), in_pool("v", HOSTS[0]),
                           also=record)  # fmt: skip

    assert got.ok and seen == [(1, 1)]

    def refuse(s: Session) -> None:
        raise RuntimeError("the members' records cannot be written")

    before = counters(broker)
    with pytest.raises(RuntimeError):
        claim_by_hand(broker, members, on_host("a", HOSTS[1]), in_pool("v", HOSTS[1]),
                      also=refuse)  # fmt: skip
    assert counters(broker) == before and held(broker) == (1, 1)
    assert cached_ram(broker, HOSTS[1]) == 0


def test_a_place_gone_refuses_before_anything_moves_and_two_zones_claim_together(
    broker: Broker,
) -> None:
    members = [server("a"), volume("v", 10), volume("w", 10), server("b")]
    a, v = on_host("a", HOSTS[0]), Assignment("v", "cloud", None, "cloud", "cloud")
    before = counters(broker)

    got, _ = claim_by_hand(
        broker, members, a, v, Assignment("w", "local", HOSTS[1], "no-such-pool", "local"),
        on_host("b", "no-such-host"),
    )  # fmt: skip

    assert (got.member, got.outcome) == ("w", "pool_full")  # the first gone, in plan order
    assert got.resource == "pool no-such-pool of zone local"
    assert counters(broker) == before and held(broker) == (0, 0)

    got, uuids = claim_by_hand(
        broker, members, a, v, in_pool("w", HOSTS[1]), Assignment("b", "cloud", az="cloud")
    )

    assert got.ok and held(broker) == (2, 2)
    with broker.ctx.api.read() as s:
        cloud = s.get(Zone, "cloud")
        assert cloud is not None
        assert (cloud.instances, cloud.volumes, cloud.volume_gb_used) == (1, 1, 10)
        b_alloc = s.get(Allocation, uuids["b"])
        assert b_alloc is not None and b_alloc.host_id is None
    assert counters(broker)["zone"] == (1, 1024, 1, 10, 1)
