"""Virtual clusters across clouds: hard and soft anti-affinity bursting from a local zone of
12 sim hosts to a remote OpenStack (a second broker) and to AWS (EC2 on moto), and
anti-affinity of scope zone.

Every local host has room for eight m1.small, so in the hard cases only the grouping's
rule keeps a cluster of 20 from fitting on the local hosts, and the local zone stays under
its thresholds. Then:

* towards the remote OpenStack, which keeps anti-affinity itself through a server group
  the parent makes there, the cluster fills the 12 local hosts and bursts 8 servers, which
  the child puts on 8 of its own hosts (its scheduler packs, so only the group spreads
  them);
* towards AWS, which counts as one host for the grouping, there are 13 places for 20
  members: the cluster ends ERROR at once and nothing exists anywhere, neither in the
  broker's databases nor in EC2;
* with soft anti-affinity the same cluster becomes ACTIVE: the local zone takes one server
  per host and AWS the other 8 (relaxing the rule in a cloud that spreads instances over
  hosts it does not show goes before doubling up on a local host).

A zone-scope grouping of three spreads over three availability zones although the local
zone could hold them all, as the same cluster with host scope shows.
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from federator import errors
from federator.config import Settings
from tests.conftest import PASSWORD as TEST_PASSWORD
from tests.conftest import LiveBroker, make_settings, member_of, sim_zone, start_live_broker
from tests.functional import vcluster_support as vc
from tests.functional.test_aws_zone import (
    Ec2,
    ec2,  # noqa: F401 - the fixture
    tags,
)
from tests.support_moto import zone_options

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:::openstack")]

Factory = Callable[..., LiveBroker]

PROJECT = "vc-clouds"
BROKER_ID = "vc-parent"
REMOTE = "child"
AWS = "aws-east"
LOCAL_HOSTS = 12
CLUSTER = 20
BURST = CLUSTER - LOCAL_HOSTS
V2_64 = {"OpenStack-API-Version": "compute 2.64"}
WORKERS = {"count": 4, "poll_interval": 0.05, "transient_backoff": 0.01}
BROKER_TAGS = ("federator:instance-uuid", "federator:broker-id", "federator:zone",
               "federator:project")  # fmt: skip


def local_zone(hosts: int = LOCAL_HOSTS) -> dict[str, Any]:
    """Hosts of 8 GiB and 8 vCPUs: eight m1.small each, so a host never runs out first."""
    return sim_zone("local", "local", hosts=hosts, host_ram_mb=8192, host_vcpus=8,
                    volume_pool_gb=100)  # fmt: skip


def overflow_to(*targets: str, **local: Any) -> dict[str, Any]:
    """Local RAM marks a 20-server cluster stays under (20 GiB of 96 GiB), then overflow;
    ``local`` adds thresholds to the local zone's."""
    thresholds = {"ram_percent": {"high": 75, "low": 50}, **local}
    return {
        "version": f"vc-clouds-{'-'.join(targets)}",
        "zones": {
            "local": {"thresholds": thresholds, "overflow": list(targets)},
            **{t: {"quota": {"instances": 10}} for t in targets},
        },
    }


def by_zone(c: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for m in c["instances"]:
        found.setdefault(m["availability_zone"], []).append(m)
    return found


def servers_of(live: LiveBroker) -> list[dict[str, Any]]:
    r = live.client.get(f"{live.compute}/servers/detail", params={"all_tenants": "1"})
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()["servers"]
    return found


def volumes_of(live: LiveBroker) -> list[dict[str, Any]]:
    r = live.client.get(f"{live.url}/volume/v3/admin/volumes/detail", params={"all_tenants": "1"})
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()["volumes"]
    return found


def create(live: LiveBroker, body: dict[str, Any]) -> dict[str, Any]:
    """Create the cluster as the member of PROJECT; the cluster once it has settled."""
    cid = vc.create(live, body, live.member(PROJECT))
    return vc.wait(live, cid, timeout=120)


# --- 1. a remote OpenStack: a second broker ---------------------------------------------


@dataclass
class Federation:
    parent: LiveBroker
    child: LiveBroker


@pytest.fixture
def federation(tmp_path: Path, live_broker_factory: Factory) -> Iterator[Federation]:
    """The child broker (8 sim hosts that pack, the parent's project among its tenants)
    and the parent (12 local hosts) whose ``child`` zone signs in to it as that
    project's member."""
    (tmp_path / "child").mkdir()
    (tmp_path / "parent").mkdir()
    child_settings = make_settings(
        tmp_path / "child",
        zones=[sim_zone("local", "local", hosts=BURST, host_ram_mb=8192, host_vcpus=8)],
        # Packing puts every server on the fullest host that fits: only a server group
        # spreads them.
        policy={"version": "child-1", "weighing": "pack", "zones": {}},
        tenants=(PROJECT,),
        workers=WORKERS,
    )
    child, stop_child = start_live_broker(child_settings)
    remote = {
        "name": REMOTE,
        "driver": "openstack",
        "kind": "virtual",
        "options": {
            "auth": {
                "auth_url": f"{child.url}/identity",
                "username": member_of(PROJECT),
                "password": TEST_PASSWORD,
                "project_name": PROJECT,
            },
            "wait_timeout": 30,
            "poll_interval": 0.02,
            "api_timeout": 10,
        },
    }
    settings: Settings = make_settings(
        tmp_path / "parent",
        zones=[local_zone(), remote],
        policy=overflow_to(REMOTE),
        tenants=(PROJECT,),
        broker_id=BROKER_ID,
        workers=WORKERS,
    )
    try:
        yield Federation(live_broker_factory(settings), child)
    finally:
        stop_child()


def child_servers(child: LiveBroker) -> dict[str, dict[str, Any]]:
    """Every server of the child, by the parent's uuid in its metadata."""
    return {s["metadata"]["federator:instance-uuid"]: s for s in servers_of(child)}


def child_groups(child: LiveBroker) -> list[dict[str, Any]]:
    r = child.client.get(
        f"{child.compute}/os-server-groups", params={"all_projects": "True"}, headers=V2_64
    )
    assert r.status_code == 200, r.text
    groups: list[dict[str, Any]] = r.json()["server_groups"]
    return groups


def test_hard_anti_affinity_fills_the_local_hosts_and_the_child_keeps_the_rest_apart(
    federation: Federation,
) -> None:
    parent, child = federation.parent, federation.child
    c = create(parent, vc.spread("spread", "anti-affinity", CLUSTER))
    assert c["status"] == "ACTIVE", c.get("fault")
    placed = by_zone(c)
    assert sorted(placed) == ["child", "local"], placed.keys()
    local, burst = placed["local"], placed[REMOTE]
    assert len(local) == LOCAL_HOSTS and len(burst) == BURST
    assert len({m["host"] for m in local}) == LOCAL_HOSTS
    assert all(m["host"].startswith("local-host-") for m in local)
    assert {m["status"] for m in c["instances"]} == {"ACTIVE"}
    shown = {s["id"]: s for s in servers_of(parent)}
    assert set(shown) == {m["id"] for m in c["instances"]}
    assert {s["OS-EXT-AZ:availability_zone"] for s in shown.values()} == {"local", REMOTE}

    # The child holds exactly the burst servers, on as many of its hosts, all in the one
    # anti-affinity group the parent made for the grouping.
    remote = child_servers(child)
    assert set(remote) == {m["id"] for m in burst}
    assert {s["status"] for s in remote.values()} == {"ACTIVE"}
    hosts = [s["OS-EXT-SRV-ATTR:host"] for s in remote.values()]
    assert all(hosts) and len(set(hosts)) == BURST, hosts
    (group,) = child_groups(child)
    gid = uuidlib.uuid5(uuidlib.UUID(c["id"]), "spread")
    assert group["name"] == f"federator:{BROKER_ID}:{gid}"
    assert group["policy"] == "anti-affinity"
    assert sorted(group["members"]) == sorted(s["id"] for s in remote.values())

    # Deleting the cluster deletes its servers on both sides and the remote group.
    r = parent.member(PROJECT).delete(f"{parent.compute}/vclusters/{c['id']}")
    assert r.status_code == 202, r.text
    parent.wait_settled(120)
    assert parent.client.get(f"{parent.compute}/vclusters/{c['id']}").status_code == 404
    assert servers_of(parent) == []
    assert child_servers(child) == {}
    assert child_groups(child) == []


# --- 2 and 3. AWS: EC2 on moto ------------------------------------------------------------


def aws_settings(tmp_path: Path, moto: Ec2, policy: dict[str, Any]) -> Settings:
    options = zone_options(
        moto.network,
        endpoint_url=moto.endpoint,
        flavor_map=moto.flavor_map,
        image_map=moto.amis,
        wait_timeout=0,  # the cluster's build sees EC2's pending and polls until running
    )
    return make_settings(
        tmp_path,
        zones=[local_zone(), {"name": AWS, "driver": "aws", "kind": "virtual", "options": options}],
        policy=policy,
        tenants=[PROJECT],
        broker_id=BROKER_ID,
        workers=WORKERS,
        monitor={"vanish_grace_seconds": 0},
    )


def live_instances(moto: Ec2) -> list[dict[str, Any]]:
    """EC2 instances that are not terminated (pending, running, stopping, stopped)."""
    return [
        i for i in moto.all_instances() if i["State"]["Name"] not in ("terminated", "shutting-down")
    ]


def test_hard_anti_affinity_with_only_aws_to_burst_to_creates_nothing_anywhere(
    tmp_path: Path,
    ec2: Ec2,  # noqa: F811
    live_broker_factory: Factory,
) -> None:
    live = live_broker_factory(aws_settings(tmp_path, ec2, overflow_to(AWS)))
    # A volume outside the grouping: the all-or-nothing decision leaves it out too.
    body = vc.spread("spread", "anti-affinity", CLUSTER, extra=(vc.volume("data", size=5),))

    explained = live.member(PROJECT).post(f"{live.compute}/vclusters/explain", json=body)
    assert explained.status_code == 200, explained.text
    plan = explained.json()["plan"]
    assert plan["placeable"] is False, plan
    assert plan["fault"]["code"] in (errors.GROUP_POLICY, errors.NO_VALID_HOST), plan
    assert plan["fault"]["blocked_by"] == "spread", plan

    c = create(live, body)
    assert c["status"] == "ERROR", c
    fault = c["fault"]
    assert fault["code"] in (errors.GROUP_POLICY, errors.NO_VALID_HOST), fault
    assert "'spread'" in fault["message"], fault
    # 12 local hosts and the AWS zone, which counts as one host: 13 places for 20.
    assert "13 hosts" in fault["message"], fault
    assert "blocked by spread" in fault["details"], fault
    assert {m["status"] for m in c["instances"]} == {"ERROR"}
    assert all(m["id"] is None and m["host"] is None for m in c["instances"]), c["instances"]

    ids = vc.member_ids(live, c["id"])
    assert len(ids) == CLUSTER + 1
    assert servers_of(live) == []
    assert volumes_of(live) == []
    assert live_instances(ec2) == []
    assert ec2.all_instances() == []  # not even one launched and terminated again
    assert ec2.client.describe_volumes()["Volumes"] == []
    left = vc.leftovers(live, ids.values())
    assert {table: rows for table, rows in left.items() if rows} == {}
    assert vc.used_capacity(live) == []


def test_soft_anti_affinity_bursts_what_the_local_zone_cannot_take_to_aws(
    tmp_path: Path,
    ec2: Ec2,  # noqa: F811
    live_broker_factory: Factory,
) -> None:
    # Each local host could take several, but the soft rule puts one on each; the rest go
    # to AWS, where the broker cannot keep them apart and the rule lets them be.
    policy = overflow_to(AWS)
    live = live_broker_factory(aws_settings(tmp_path, ec2, policy))
    c = create(live, vc.spread("spread", "soft-anti-affinity", CLUSTER))
    assert c["status"] == "ACTIVE", c.get("fault")
    placed = by_zone(c)
    assert sorted(placed) == [AWS, "local"], placed.keys()
    local, burst = placed["local"], placed[AWS]
    assert len(local) == LOCAL_HOSTS and len(burst) == BURST
    assert len({m["host"] for m in local}) == LOCAL_HOSTS
    assert {m["status"] for m in c["instances"]} == {"ACTIVE"}

    running = live_instances(ec2)
    assert len(running) == BURST
    assert {i["State"]["Name"] for i in running} == {"running"}
    by_uuid = {tags(i)["federator:instance-uuid"]: i for i in running}
    assert set(by_uuid) == {m["id"] for m in burst}
    for m in burst:
        found = tags(by_uuid[m["id"]])
        assert {k: found[k] for k in (*BROKER_TAGS, "Name")} == {
            "federator:instance-uuid": m["id"],
            "federator:broker-id": BROKER_ID,
            "federator:zone": AWS,
            "federator:project": PROJECT,
            "Name": m["name"],
        }
    shown = {s["id"]: s for s in servers_of(live)}
    assert {shown[m["id"]]["OS-EXT-AZ:availability_zone"] for m in burst} == {AWS}
    assert {shown[m["id"]]["status"] for m in c["instances"]} == {"ACTIVE"}


# --- 4. scope zone ------------------------------------------------------------------------


def test_zone_scope_anti_affinity_spreads_over_availability_zones(
    tmp_path: Path, live_broker_factory: Factory
) -> None:
    settings = make_settings(
        tmp_path,
        zones=[
            local_zone(hosts=4),
            sim_zone("cloud-a", "virtual", expose_hosts=False),
            sim_zone("cloud-b", "virtual", expose_hosts=False),
        ],
        policy=overflow_to("cloud-a", "cloud-b"),
        tenants=[PROJECT],
        workers=WORKERS,
    )
    live = live_broker_factory(settings)

    apart = create(live, vc.spread("apart", "anti-affinity", 3, prefix="z", scope="zone"))
    assert apart["status"] == "ACTIVE", apart.get("fault")
    assert sorted(m["availability_zone"] for m in apart["instances"]) == [
        "cloud-a",
        "cloud-b",
        "local",
    ]
    assert {m["status"] for m in apart["instances"]} == {"ACTIVE"}

    # The local zone holds the same three when the rule is about hosts only.
    hosts = create(live, vc.spread("hosts", "anti-affinity", 3, prefix="h"))
    assert hosts["status"] == "ACTIVE", hosts.get("fault")
    assert {m["availability_zone"] for m in hosts["instances"]} == {"local"}
    assert len({m["host"] for m in hosts["instances"]}) == 3
