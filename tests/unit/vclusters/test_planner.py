"""The gang planner: every member placed keeping every hard grouping, or none and why."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import numpy as np
import pytest

from federator.groups.rules import Rule, ZoneMode
from federator.vclusters.planner import (
    Grouping,
    HostColumns,
    HostSlot,
    Member,
    Plan,
    PoolColumns,
    PoolSlot,
    ZoneOption,
    plan,
)

SMALL = {"vcpus": 1, "ram_mb": 1024, "disk_gb": 10}


def server(name: str, ram_mb: int = 1024) -> Member:
    return Member(name, "server", vcpus=1, ram_mb=ram_mb, disk_gb=10)


def volume(name: str, size_gb: int = 10) -> Member:
    return Member(name, "volume", size_gb=size_gb)


def rule(policy: str, scope: str = "host") -> Rule:
    return Rule(policy, scope=scope)


def local(hosts: int = 4, ram_mb: int = 8192, pool_gb: int | None = 100, shared: bool = False,
          name: str = "local") -> ZoneOption:  # fmt: skip
    names = [f"h{i}" for i in range(1, hosts + 1)]
    return ZoneOption(
        name=name,
        mode=ZoneMode.HOSTS,
        az=name,
        hosts=[HostSlot(h, name, 32, ram_mb, 1000) for h in names],
        pools=[PoolSlot(f"{h}/volumes", h, name, pool_gb) for h in names] if pool_gb else [],
        shared_storage=shared,
    )


def cloud(name: str, mode: ZoneMode = ZoneMode.SINGLE, **left: int) -> ZoneOption:
    return ZoneOption(name=name, mode=mode, az=name, pools=[PoolSlot(name, None, name, None)],
                      **left)  # type: ignore[arg-type]  # fmt: skip


def where(p: Plan) -> dict[str, tuple[str, str | None, str | None]]:
    assert p.ok, p.message
    return {a.member: (a.zone, a.host, a.pool) for a in p.assignments}


USE_CASE_2 = (
    [server("db-server-1"), volume("db-vol-1"), server("db-server-2"), volume("db-vol-2")],
    [
        Grouping("group-1", ("db-server-1", "db-vol-1"), rule("affinity")),
        Grouping("group-2", ("db-server-2", "db-vol-2"), rule("affinity")),
        Grouping("group-3", ("db-server-1", "db-server-2"), rule("anti-affinity")),
        Grouping("group-4", ("db-vol-1", "db-vol-2"), rule("anti-affinity")),
    ],
)


def test_use_case_1_a_volume_goes_into_its_servers_host_pool() -> None:
    p = where(plan([server("s"), volume("v")],
                   [Grouping("g", ("s", "v"), rule("proximity" if False else "affinity"))],
                   [local()]))  # fmt: skip
    zone, host, _ = p["s"]
    assert p["v"] == (zone, host, f"{host}/volumes")


def test_use_case_2_servers_apart_each_with_its_volume() -> None:
    p = where(plan(*USE_CASE_2, [local()]))
    s1, s2 = p["db-server-1"][1], p["db-server-2"][1]
    assert s1 != s2
    assert p["db-vol-1"][2] == f"{s1}/volumes" and p["db-vol-2"][2] == f"{s2}/volumes"


def test_shared_storage_keeps_volumes_in_different_pools_and_prefers_the_servers_host() -> None:
    p = where(plan(*USE_CASE_2, [local(shared=True)]))
    assert p["db-vol-1"][2] != p["db-vol-2"][2]
    assert p["db-vol-1"][2] == f"{p['db-server-1'][1]}/volumes"


def test_a_plan_that_fits_only_one_way_is_found_by_backtracking() -> None:
    # Spread puts a on the emptier host (4 GB), then b on the other, and c fits nowhere;
    # the only plan is a on the 3 GB host, b and c on the 4 GB one.
    zone = ZoneOption(
        name="local",
        mode=ZoneMode.HOSTS,
        az="local",
        hosts=[HostSlot("big", "local", 8, 4096, 100), HostSlot("mid", "local", 8, 3072, 100)],
    )
    members = [server("a", 3072), server("b", 2048), server("c", 2048)]
    p = where(plan(members, [], [zone]))
    assert p["a"][1] == "mid" and p["b"][1] == p["c"][1] == "big"


def test_nothing_is_placed_when_one_member_cannot_be() -> None:
    p = plan([server("a"), server("huge", 65536)], [], [local()])
    assert not p.ok and p.assignments == () and p.fault == "no_valid_host"
    assert "host capacity" in (p.blocked_by or "")


def test_anti_affinity_overflows_to_a_remote_cloud_that_keeps_it_itself() -> None:
    members = [server(f"s{i}") for i in range(20)]
    apart = [Grouping("apart", tuple(m.name for m in members), rule("anti-affinity"))]
    p = plan(members, apart, [local(12), cloud("remote", ZoneMode.REMOTE)])
    placed = Counter(a.zone for a in p.assignments)
    assert placed == {"local": 12, "remote": 8}
    assert len({a.host for a in p.assignments if a.zone == "local"}) == 12


def test_a_zone_counting_as_one_host_cannot_take_a_second_anti_affine_member() -> None:
    members = [server(f"s{i}") for i in range(20)]
    apart = [Grouping("apart", tuple(m.name for m in members), rule("anti-affinity"))]
    p = plan(members, apart, [local(12), cloud("aws")])
    assert (p.ok, p.fault, p.blocked_by) == (False, "group_policy", "apart")
    assert "needs 20 places" in (p.message or "") and "13" in (p.message or "")
    soft = [Grouping("apart", apart[0].members, rule("soft-anti-affinity"))]
    # Soft: once local's 12 hosts (room for one each here) are full, the rest share aws.
    relaxed = plan(members, soft, [local(12, ram_mb=1024), cloud("aws")])
    assert Counter(a.zone for a in relaxed.assignments) == {"local": 12, "aws": 8}
    # With room for eight on each local host, relaxing the soft rule still goes to the
    # opaque cloud before doubling up on a local host, and one per local host stays.
    roomy = plan(members, soft, [local(12), cloud("aws")])
    assert Counter(a.zone for a in roomy.assignments) == {"local": 12, "aws": 8}
    assert len({a.host for a in roomy.assignments if a.zone == "local"}) == 12
    # Soft affinity is relaxed in the policy's order: local hosts first.
    together = [Grouping("near", apart[0].members, rule("soft-affinity"))]
    near = plan(members, together, [local(12, ram_mb=4096), cloud("aws")])
    assert Counter(a.zone for a in near.assignments) == {"local": 20}


def test_zone_scope_anti_affinity_lands_in_distinct_availability_zones() -> None:
    members = [server(f"s{i}") for i in range(3)]
    g = [Grouping("zones", ("s0", "s1", "s2"), rule("anti-affinity", "zone"))]
    p = plan(members, g, [local(4), cloud("aws"), cloud("other", ZoneMode.REMOTE)])
    assert sorted(a.az for a in p.assignments) == ["aws", "local", "other"]
    too_many = plan([*members, server("s3")], [Grouping("zones", ("s0", "s1", "s2", "s3"),
                    rule("anti-affinity", "zone"))], [local(4), cloud("aws")])  # fmt: skip
    assert too_many.fault == "group_policy"


def test_quotas_of_virtual_zones_bound_what_overflows() -> None:
    members = [server(f"s{i}") for i in range(6)]
    p = plan(members, [], [local(1, ram_mb=2048), cloud("aws", instances_left=4)])
    assert Counter(a.zone for a in p.assignments) == {"local": 2, "aws": 4}
    over = plan(
        [*members, server("s6")], [], [local(1, ram_mb=2048), cloud("aws", instances_left=4)]
    )
    assert (over.ok, over.fault, over.assignments) == (False, "no_valid_host", ())


def test_an_affine_server_and_volume_move_together_to_a_virtual_zone() -> None:
    members = [server("s", 16384), volume("v")]
    p = where(plan(members, [Grouping("g", ("s", "v"), rule("affinity"))], [local(), cloud("aws")]))
    assert p["s"][0] == p["v"][0] == "aws"


def test_volumes_without_room_in_any_pool_block_the_cluster() -> None:
    p = plan([server("s"), volume("v", 500)], [Grouping("g", ("s", "v"), rule("affinity"))],
             [local(pool_gb=100)])  # fmt: skip
    assert not p.ok and "storage pool capacity" in (p.blocked_by or "")


def test_a_hundred_members_on_ten_thousand_hosts() -> None:
    servers = [server(f"s{i}") for i in range(50)]
    volumes = [volume(f"v{i}") for i in range(50)]
    groupings = [Grouping("apart", tuple(s.name for s in servers), rule("anti-affinity"))]
    groupings += [Grouping(f"pair-{i}", (f"s{i}", f"v{i}"), rule("affinity")) for i in range(50)]
    p = where(plan([*servers, *volumes], groupings, [local(10_000)]))
    assert len({p[s.name][1] for s in servers}) == 50
    assert all(p[f"v{i}"][2] == f"{p[f's{i}'][1]}/volumes" for i in range(50))


def test_a_tight_anti_affinity_fit_with_identical_hosts_fails_fast() -> None:
    # 6 anti-affine servers, 5 hosts: no plan; identical hosts are not tried one by one.
    members = [server(f"s{i}") for i in range(6)]
    g = [Grouping("apart", tuple(m.name for m in members), rule("anti-affinity"))]
    p = plan(members, g, [local(5)])
    assert p.fault == "group_policy" and p.blocked_by == "apart"
    mixed = plan([*members, volume("v")], [*g, Grouping("pair", ("s0", "v"), rule("affinity"))],
                 [local(5)])  # fmt: skip
    assert mixed.fault == "group_policy" and mixed.tried < 1000


def columns(z: ZoneOption) -> ZoneOption:
    """The same zone with its hosts and pools given as columns, as gather gives them."""
    hosts, pools = list(z.hosts), list(z.pools)
    azs = sorted({h.az for h in hosts})
    return replace(
        z,
        hosts=HostColumns(
            [h.name for h in hosts],
            np.array([azs.index(h.az) for h in hosts], dtype=np.int32),
            azs,
            np.array([h.free_vcpus for h in hosts], dtype=np.int64),
            np.array([h.free_ram_mb for h in hosts], dtype=np.int64),
            np.array([h.free_disk_gb for h in hosts], dtype=np.int64),
        ),
        pools=PoolColumns(
            [p.name for p in pools],
            [p.host for p in pools],
            [p.az for p in pools],
            np.array([p.free_gb or 0 for p in pools], dtype=np.int64),
            np.array([p.free_gb is None for p in pools], dtype=np.bool_),
        ),
    )


def test_hosts_and_pools_as_columns_read_as_slots_and_plan_alike() -> None:
    hosts = [HostSlot("h1", "az-a", 4, 2048, 40), HostSlot("h2", "az-b", 8, 8192, 80),
             HostSlot("h3", "az-a", 2, 4096, 20)]  # fmt: skip
    pools = [PoolSlot("h1/volumes", "h1", "az-a", 50), PoolSlot("h2/volumes", "h2", "az-b", 25),
             PoolSlot("shared", None, "az-a", None)]  # fmt: skip
    given = ZoneOption("local", ZoneMode.HOSTS, "local", hosts=hosts, pools=pools)
    z = columns(given)
    assert list(z.hosts) == hosts and list(z.pools) == pools
    assert len(z.hosts) == 3 and z.hosts[-1] == hosts[-1] and z.pools[1:] == pools[1:]
    assert HostColumns.of(z.hosts) is z.hosts and PoolColumns.of(z.pools) is z.pools
    members = [server("a", 2048), server("b", 2048), volume("v", 20), volume("w", 40)]
    groupings = [
        Grouping("apart", ("a", "b"), rule("anti-affinity", "zone")),
        Grouping("a-v", ("a", "v"), rule("affinity")),
    ]
    by_slots = plan(members, groupings, [given])
    assert by_slots.ok and plan(members, groupings, [z]) == by_slots
    # Each place follows from the columns' figures: b the az-a host with most RAM, v its
    # server's own pool, w the unbounded one.
    assert {a.member: (a.host, a.pool, a.az) for a in by_slots.assignments} == {
        "a": ("h2", None, "az-b"), "b": ("h3", None, "az-a"),
        "v": ("h2", "h2/volumes", "az-b"), "w": (None, "shared", "local"),
    }  # fmt: skip
    # What the plan booked stays out of the zone it was given.
    assert list(z.hosts) == hosts and list(z.pools) == pools


def test_columns_of_different_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="host column"):
        HostColumns(["h1"], np.zeros(2, np.int32), ["a"], *(np.zeros(1, np.int64),) * 3)
    with pytest.raises(ValueError, match="pool column"):
        PoolColumns(["p"], [None], ["a"], np.zeros(1, np.int64), np.zeros(2, np.bool_))


def test_anti_affinity_counts_the_places_given_as_columns() -> None:
    members = [server(f"s{i}", 4096) for i in range(3)]
    apart = [Grouping("apart", ("s0", "s1", "s2"), rule("anti-affinity"))]
    # Four hosts, of which two have room for a 4096 MB server.
    zone = columns(ZoneOption("local", ZoneMode.HOSTS, "local", hosts=[
        HostSlot(f"h{i}", "az-a" if i % 2 else "az-b", 8, ram, 100)
        for i, ram in enumerate((8192, 1024, 4096, 2048))
    ]))  # fmt: skip
    p = plan(members, apart, [zone])
    assert (p.fault, p.blocked_by) == ("group_policy", "apart")
    assert "needs 3 places" in (p.message or "") and "have 2 hosts" in (p.message or "")
    assert plan(members[:2], [Grouping("apart", ("s0", "s1"), apart[0].rule)], [zone]).ok
    # Zone scope: the two hosts with room are both in az-b.
    zones = [Grouping("apart", ("s0", "s1"), rule("anti-affinity", "zone"))]
    spread = plan(members[:2], zones, [zone])
    assert spread.fault == "group_policy" and "have 1 availability zones" in (spread.message or "")


def test_a_lone_volume_may_go_to_the_pool_of_a_host_not_offered_for_servers() -> None:
    # The scheduler's filters left h2 out (disabled, say); its pool still takes volumes.
    zone = ZoneOption(
        "local", ZoneMode.HOSTS, "local",
        hosts=[HostSlot("h1", "local", 8, 8192, 100)],
        pools=[PoolSlot("h1/volumes", "h1", "local", 100),
               PoolSlot("h2/volumes", "h2", "local", 500)],
        shared_storage=False,
    )  # fmt: skip
    p = where(plan([volume("v"), volume("w", 450), server("s")], [], [zone]))
    assert p["w"] == ("local", "h2", "h2/volumes") and p["s"] == ("local", "h1", None)


def test_spread_takes_the_host_with_most_free_ram_each_time_across_a_large_zone() -> None:
    # 700 hosts of assorted free RAM; only the 30 after the 300 with most RAM have vCPUs
    # left, so every server lands past the first stretches of the order, and hosts taken
    # move down it as they fill, to be taken again when they still have most room.
    rng = np.random.default_rng(7)
    ram = (rng.permutation(700) * 64 + 2048).tolist()
    by_ram = sorted(range(700), key=lambda i: -ram[i])
    usable = set(by_ram[300:330])
    vcpus = [8 if i in usable else 0 for i in range(700)]
    zone = ZoneOption("local", ZoneMode.HOSTS, "local", hosts=[
        HostSlot(f"h{i}", "local", vcpus[i], ram[i], 100) for i in range(700)
    ])  # fmt: skip
    members = [server(f"s{n:02d}", 4096) for n in range(60)]
    free = list(ram)
    expected = {}
    for m in members:  # one at a time, most free RAM first, ties by position
        best = max((i for i in range(700) if vcpus[i] and free[i] >= 4096),
                   key=lambda i: (free[i], -i))  # fmt: skip
        expected[m.name] = f"h{best}"
        free[best] -= 4096
        vcpus[best] -= 1

    p = where(plan(members, [], [zone]))

    assert {n: host for n, (_, host, _) in p.items()} == expected
    assert len(set(expected.values())) < 60  # some hosts took a second server
