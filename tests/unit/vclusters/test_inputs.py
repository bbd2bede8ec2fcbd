"""The planner's zones read from a real broker (SQLite, sim zones), as single servers and
single volumes see them: the policy's order, the room below high water, quotas left,
hosts the scheduler would use, pools and whether storage is shared."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from federator.broker import Broker
from federator.compute import claims
from federator.groups.rules import Rule, ZoneMode
from federator.hosts.service import HostService
from federator.policy.evaluate import Limits
from federator.storage.models import StoragePool
from federator.vclusters.inputs import gather, zone_options
from federator.vclusters.planner import (
    Grouping,
    HostColumns,
    HostSlot,
    Member,
    PoolColumns,
    ZoneOption,
    plan,
)
from tests.conftest import make_settings, sim_zone

HOSTS = 3
HOST_RAM = 8192
RAM_TOTAL = HOSTS * HOST_RAM  # 24576, ram ratio 1.0
RAM_HIGH = RAM_TOTAL // 2  # 50% high water: 12288 MB
POOL_GB = 1000
GB_HIGH = HOSTS * POOL_GB // 2  # 50% of three host pools: 1500 GB
QUOTA = {"instances": 4, "vcpus": 8, "ram_mb": 8192, "volumes": 3, "gigabytes": 100}

POLICY: dict[str, Any] = {
    "version": "vcluster-inputs-1",
    "zones": {
        "local": {
            "thresholds": {
                "ram_percent": {"high": 50, "low": 40},
                "gb_percent": {"high": 50, "low": 40},
            },
            "overflow": ["cloud", "novol"],
        },
        "cloud": {"quota": QUOTA},
    },
}


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    settings = make_settings(
        tmp_path,
        zones=[
            sim_zone("local", "local", hosts=HOSTS, host_ram_mb=HOST_RAM, volume_pool_gb=POOL_GB),
            sim_zone("cloud", "virtual", expose_hosts=False),
            sim_zone("novol", "virtual", expose_hosts=False, volumes=False),
            sim_zone("elsewhere", "virtual", expose_hosts=False),
        ],
        policy=POLICY,
    )
    b = Broker.open(settings)
    yield b
    b.stop()


def server(name: str, ram_mb: int = 1024, vcpus: int = 1) -> Member:
    return Member(name, "server", vcpus=vcpus, ram_mb=ram_mb, disk_gb=10)


def volume(name: str, size_gb: int = 10) -> Member:
    return Member(name, "volume", size_gb=size_gb)


def by_name(zones: list[ZoneOption]) -> dict[str, ZoneOption]:
    return {z.name: z for z in zones}


def take(b: Broker, zone: str, *, host: str | None = None, ram_mb: int = 1024) -> None:
    """Hold capacity in ``zone`` (on ``host``) with a real claim, then refresh the cache."""
    host_id = None if host is None else b.hosts.host_id(zone, host)
    got = claims.claim(
        b.ctx.api,
        instance_uuid=str(uuid.uuid4()),
        zone=zone,
        host_id=host_id,
        host_name=host,
        res=claims.Resources(1, ram_mb, 10),
        limits=Limits(),
        require_not_bursting=False,
    )
    assert got.outcome is claims.ClaimOutcome.OK
    b.hosts.reload()


def test_a_local_zone_under_its_thresholds_offers_every_host_first(broker: Broker) -> None:
    zones, notes = zone_options(broker.ctx, "project-a", [server("a"), server("b")])

    assert [z.name for z in zones] == ["local", "cloud", "novol"]
    local = zones[0]
    assert local.mode is ZoneMode.HOSTS
    assert [h.name for h in local.hosts] == [f"local-host-00{i}" for i in (1, 2, 3)]
    assert {(h.az, h.free_ram_mb, h.free_vcpus, h.free_disk_gb) for h in local.hosts} == {
        ("local", HOST_RAM, 32, 200)  # 8 vCPUs at the default 4.0 ratio
    }
    assert local.ram_mb_left == RAM_HIGH  # the high-water mark is still the ceiling
    assert local.instances_left is None and local.vcpus_left is None
    assert not [n for n in notes if n.zone == "local"]
    # "elsewhere" is no overflow target: left out, with the ranking's verdict.
    assert [n.check for n in notes if n.zone == "elsewhere"] == ["overflow.not_target"]


def test_a_local_zone_near_high_water_offers_only_the_room_below_it(broker: Broker) -> None:
    take(broker, "local", host="local-host-001", ram_mb=4096)
    members = [server(f"s{i}", ram_mb=4096) for i in range(3)]  # 12288 MB: crosses 50%

    found = gather(broker.ctx, "project-a", members)

    zones = by_name(list(found.zones))
    assert [z.name for z in found.zones] == ["local", "cloud", "novol"]
    assert zones["local"].ram_mb_left == RAM_HIGH - 4096
    assert {h.name: h.free_ram_mb for h in zones["local"].hosts}["local-host-001"] == 4096
    note = next(n for n in found.notes if n.zone == "local")
    assert note.accepted and note.check == "threshold.ram_percent"
    assert "ram_mb 8192" in note.detail
    assert found.start_bursting == ("local",)
    ceiling = found.ceilings["local"]
    assert ceiling.thresholded and ceiling.limits.ram_mb == RAM_HIGH

    # The planner fills the local zone up to high water and bursts the rest.
    p = plan(members, [], found.zones)
    assert p.ok, p.message
    assert sorted(a.zone for a in p.assignments) == ["cloud", "local", "local"]


def test_a_bursting_local_zone_is_left_out(broker: Broker) -> None:
    take(broker, "local", host="local-host-001", ram_mb=8192)
    take(broker, "local", host="local-host-002", ram_mb=4096)  # 50%: above low water
    assert claims.set_bursting(broker.ctx.api, "local", True)

    zones, notes = zone_options(broker.ctx, "project-a", [server("a")])

    assert [z.name for z in zones] == ["cloud", "novol"]
    assert [n.check for n in notes if n.zone == "local"] == ["hysteresis.ram_percent"]


def test_overflow_targets_offer_their_quota_left(broker: Broker) -> None:
    for _ in range(3):
        take(broker, "cloud", ram_mb=1024)

    zones = by_name(zone_options(broker.ctx, "project-a", [server("a"), server("b")])[0])

    cloud = zones["cloud"]
    assert (cloud.instances_left, cloud.vcpus_left, cloud.ram_mb_left) == (1, 5, 8192 - 3072)
    assert cloud.mode is ZoneMode.SINGLE and cloud.hosts == ()
    assert zones["novol"].instances_left is None  # no quota there


def test_an_overflow_target_at_its_quota_is_left_out(broker: Broker) -> None:
    for _ in range(QUOTA["instances"]):
        take(broker, "cloud", ram_mb=1024)

    zones, notes = zone_options(broker.ctx, "project-a", [server("a")])

    assert "cloud" not in by_name(zones)
    assert [n.check for n in notes if n.zone == "cloud"] == ["quota.instances"]


def test_a_host_in_maintenance_or_disabled_is_not_offered(broker: Broker) -> None:
    hosts = HostService(broker.ctx)
    hosts.enter_maintenance("local", "local-host-002", "kernel upgrade")
    hosts.disable("local", "local-host-003", "broken fan")

    local = zone_options(broker.ctx, "project-a", [server("a")])[0][0]

    assert [h.name for h in local.hosts] == ["local-host-001"]


def test_hosts_without_room_for_the_smallest_server_are_not_offered(broker: Broker) -> None:
    take(broker, "local", host="local-host-001", ram_mb=HOST_RAM - 512)

    local = zone_options(broker.ctx, "project-a", [server("a", 1024), server("b", 2048)])[0][0]

    assert [h.name for h in local.hosts] == ["local-host-002", "local-host-003"]


def test_pools_and_shared_storage_come_through(broker: Broker) -> None:
    members = [server("a"), volume("v", 20)]

    zones = by_name(zone_options(broker.ctx, "project-a", members)[0])

    local, cloud, novol = zones["local"], zones["cloud"], zones["novol"]
    assert not local.shared_storage  # sim host pools are host-local
    assert [(p.name, p.host, p.az, p.free_gb) for p in local.pools] == [
        (f"local-host-00{i}/volumes", f"local-host-00{i}", "local", POOL_GB) for i in (1, 2, 3)
    ]
    assert local.gb_left == GB_HIGH
    assert cloud.shared_storage
    assert [(p.name, p.host, p.free_gb) for p in cloud.pools] == [("cloud", None, 1000)]
    assert (cloud.volumes_left, cloud.gb_left) == (QUOTA["volumes"], QUOTA["gigabytes"])
    # A zone without block storage takes the servers and no volume.
    assert novol.pools == () and novol.volumes_left == 0
    assert novol.instances_left is None


def test_volumes_alone_skip_zones_without_storage(broker: Broker) -> None:
    zones, notes = zone_options(broker.ctx, "project-a", [volume("v", 2000)])

    assert [z.name for z in zones] == ["local", "cloud"]
    assert zones[0].gb_left == GB_HIGH and zones[0].instances_left is None
    assert [n.check for n in notes if n.zone == "novol"] == ["storage.none"]
    local_note = next(n for n in notes if n.zone == "local")
    assert local_note.check == "threshold.gb_percent" and "gb 1500" in local_note.detail


def test_a_planned_cluster_keeps_its_grouping_over_the_inputs(broker: Broker) -> None:
    members = [server("s1"), volume("v1"), server("s2"), volume("v2")]
    groupings = [
        Grouping("g1", ("s1", "v1"), Rule("affinity")),
        Grouping("g2", ("s2", "v2"), Rule("affinity")),
        Grouping("apart", ("s1", "s2"), Rule("anti-affinity")),
    ]

    p = plan(members, groupings, zone_options(broker.ctx, "project-a", members)[0])

    assert p.ok, p.message
    where = {a.member: a for a in p.assignments}
    assert where["s1"].host != where["s2"].host
    for s, v in (("s1", "v1"), ("s2", "v2")):  # host-local storage: the server's host's pool
        assert where[v].pool == f"{where[s].host}/volumes"


def test_a_zone_open_to_volumes_only_keeps_its_place_and_takes_no_server(broker: Broker) -> None:
    take(broker, "local", host="local-host-001", ram_mb=8192)
    take(broker, "local", host="local-host-002", ram_mb=4096)
    assert claims.set_bursting(broker.ctx.api, "local", True)  # servers: hysteresis

    found = gather(broker.ctx, "project-a", [server("a"), volume("v")])

    assert [z.name for z in found.zones] == ["local", "cloud", "novol"]
    local = found.zones[0]
    assert local.instances_left == 0 and local.hosts == ()
    assert len(local.pools) == HOSTS and local.gb_left == GB_HIGH
    assert found.ceilings["local"].limits.instances == 0
    p = plan([server("a"), volume("v")], [], found.zones)
    assert p.ok, p.message
    assert {a.member: a.zone for a in p.assignments} == {"a": "cloud", "v": "local"}


def test_hosts_and_pools_come_as_columns_of_the_schedulers_figures(broker: Broker) -> None:
    take(broker, "local", host="local-host-002", ram_mb=3072)
    with broker.ctx.api.write() as s:  # a pool reported without a bound, and one not at all
        s.execute(
            update(StoragePool)
            .where(StoragePool.name == "local-host-001/volumes")
            .values(capacity_gb=None, free_gb=None)
        )
        s.execute(
            update(StoragePool)
            .where(StoragePool.name == "local-host-003/volumes")
            .values(reported=False)
        )

    local = gather(broker.ctx, "project-a", [server("a"), volume("v")]).zones[0]

    assert isinstance(local.hosts, HostColumns) and isinstance(local.pools, PoolColumns)
    table = broker.hosts.table
    i = table.index_of("local", "local-host-002")
    assert i is not None
    assert local.hosts.free_ram_mb.tolist() == [HOST_RAM, HOST_RAM - 3072, HOST_RAM]
    assert local.hosts[1] == HostSlot(
        "local-host-002", "local", int(table.free_vcpus()[i]), HOST_RAM - 3072,
        int(table.free_disk_gb()[i]),
    )  # fmt: skip
    assert [(p.name, p.free_gb) for p in local.pools] == [
        ("local-host-001/volumes", None), ("local-host-002/volumes", POOL_GB)
    ]  # fmt: skip
    # The unbounded pool takes what no bounded one could.
    p = plan([volume("v", POOL_GB + 200)], [], [local])
    assert p.ok and p.assignments[0].pool == "local-host-001/volumes"
