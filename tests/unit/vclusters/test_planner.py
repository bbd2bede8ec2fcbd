"""The gang planner: every member placed keeping every hard grouping, or none and why."""

from __future__ import annotations

from collections import Counter

from federator.groups.rules import Rule, ZoneMode
from federator.vclusters.planner import (
    Grouping,
    HostSlot,
    Member,
    Plan,
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
