"""Zone leases with real clouds: three ``federator serve`` processes on one PostgreSQL, with
an AWS zone (EC2 served by moto over HTTP) and a remote OpenStack zone (a second broker).

* Over ten sync intervals each zone's sync runs about once an interval in all three nodes
  together, in the zone's owner only; the others count their ticks as skipped.
* An instance started in EC2 with the broker's tags and no record is an orphan; the policy
  deletes orphans, and it is terminated once and recorded once, not once per node.
* SIGKILL of the AWS zone's owner while it runs builds into the OpenStack zone (the remote
  broker's hosts take seconds to boot): another node owns every zone the victim held
  within two lease periods and syncs them; the victim's running build tasks go back to the
  queue, a survivor finishes them, and every server is ACTIVE with exactly one server in
  the remote cloud.
"""

from __future__ import annotations

import time
import uuid as uuidlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from moto.ec2.models.instances import InstanceBackend

from federator.config import Settings
from tests.conftest import (
    PASSWORD,
    LiveBroker,
    make_settings,
    member_of,
    settings_data,
    sim_zone,
    start_live_broker,
    write_config,
)
from tests.daemon import Daemon
from tests.functional.lease_support import TaskTable, await_take_over, jobs, owners, runs, wait_for
from tests.functional.test_aws_zone import (
    TAGS,
    Ec2,
    ec2,  # noqa: F401 - the fixture
)
from tests.support_moto import zone_options

pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.filterwarnings("ignore:::openstack"),
]

AWS = "aws-east"
REMOTE = "child"
ZONES = ("local", AWS, REMOTE)
NODES = ("node-1", "node-2", "node-3")
BROKER_ID = "leases-clouds"
PROJECT = "proj-leases"
SYNC_INTERVAL = 1.0
INTERVALS = 10
LEASE_SECONDS = 3.0
TASK_STALE_SECONDS = 3.0  # workers.lease_seconds: a node silent this long loses its tasks
REMOTE_BOOT_MS = 4000  # how long the remote cloud takes to build a server
BOOTS = 4


@pytest.fixture
def remote_cloud(tmp_path: Path) -> Iterator[LiveBroker]:
    """The broker that plays the remote OpenStack: one sim zone whose creates take
    ``REMOTE_BOOT_MS``, the brokers' project among its tenants."""
    (tmp_path / "child").mkdir()
    settings: Settings = make_settings(
        tmp_path / "child",
        zones=[sim_zone("local", "local", hosts=4, host_ram_mb=8192, boot_delay_ms=REMOTE_BOOT_MS)],
        policy={"version": "child-1"},
        tenants=(PROJECT,),
        workers={"count": 8, "poll_interval": 0.05},
    )
    child, stop = start_live_broker(settings)
    try:
        yield child
    finally:
        stop()


def _config(
    tmp_path: Path, node: str, database: dict[str, Any], moto: Ec2, child: LiveBroker
) -> Path:
    aws = zone_options(
        moto.network,
        endpoint_url=moto.endpoint,
        flavor_map=moto.flavor_map,
        image_map=moto.amis,
        wait_timeout=0,
    )
    remote = {
        "auth": {
            "auth_url": f"{child.url}/identity",
            "username": member_of(PROJECT),
            "password": PASSWORD,
            "project_name": PROJECT,
        },
        "wait_timeout": 30,
        "poll_interval": 0.2,
        "api_timeout": 10,
    }
    data = settings_data(
        tmp_path,
        zones=[
            sim_zone("local", "local", hosts=1),
            {"name": AWS, "driver": "aws", "kind": "virtual", "options": aws},
            {"name": REMOTE, "driver": "openstack", "kind": "virtual", "options": remote},
        ],
        policy={
            "version": "leases-clouds-1",
            "allow_explicit_virtual_az": True,
            "orphans": {"action": "delete", "min_age_seconds": 0},
        },
        database=database,
        tenants=(PROJECT,),
        broker_id=BROKER_ID,
        workers={"count": 2, "poll_interval": 0.2, "lease_seconds": TASK_STALE_SECONDS},
        monitor={
            "zone_lease_seconds": LEASE_SECONDS,
            "heartbeat_interval": 0.5,
            "load_interval": 2.0,
            "sync_interval": SYNC_INTERVAL,
            "orphan_interval": 1.0,
            "vcluster_interval": 5.0,
        },
    )
    data["node_id"] = node
    return write_config(tmp_path / f"{node}.toml", data)


def _counters(by_node: dict[str, Daemon], job: str) -> dict[tuple[str, str], tuple[int, int]]:
    """(runs, skipped) of ``job:<zone>`` in every node, by (node, zone)."""
    found = {}
    for node, d in by_node.items():
        listed = jobs(d)
        for zone in ZONES:
            j = listed[f"{job}:{zone}"]
            found[(node, zone)] = (j["runs"], j["skipped"])
    return found


def _stray_instance(moto: Ec2) -> tuple[str, str]:
    """Start an instance in EC2 carrying this broker's tags, unknown to the broker; its
    broker uuid and EC2 id."""
    stray = str(uuidlib.uuid4())
    tags = dict(zip(TAGS, (stray, BROKER_ID, AWS, PROJECT), strict=True))
    (launched,) = moto.client.run_instances(
        ImageId=moto.amis["cirros"],
        InstanceType=moto.flavor_map["m1.small"],
        MinCount=1,
        MaxCount=1,
        SubnetId=moto.network.subnet_ids[0],
        TagSpecifications=[
            {"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
        ],
    )["Instances"]
    return stray, str(launched["InstanceId"])


def _orphan_events(d: Daemon, uuid: str) -> list[dict[str, Any]]:
    r = httpx.get(
        f"{d.url}/federator/v1/monitor/events",
        params={"kind": "orphan", "limit": 1000},
        headers=d.headers,
        timeout=10,
    )
    assert r.status_code == 200, r.text
    return [e for e in r.json()["events"] if e["instance_uuid"] == uuid]


def _server(d: Daemon, sid: str) -> dict[str, Any]:
    r = httpx.get(f"{d.url}/compute/v2.1/servers/{sid}", headers=d.headers, timeout=10)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()["server"]
    return body


def _remote_servers(child: LiveBroker) -> list[dict[str, Any]]:
    """Every server of the remote cloud that carries a broker uuid in its metadata."""
    r = child.client.get(f"{child.compute}/servers/detail", params={"all_tenants": "1"})
    assert r.status_code == 200, r.text
    return [s for s in r.json()["servers"] if "federator:instance-uuid" in s["metadata"]]


def test_three_nodes_share_an_aws_and_a_remote_openstack_zone_and_survive_a_kill(
    tmp_path: Path,
    pg_database_factory: Callable[[], str],
    daemons: list[Daemon],
    ec2: Ec2,  # noqa: F811
    remote_cloud: LiveBroker,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    terminated: list[str] = []  # every instance id EC2 was asked to terminate
    original_terminate = InstanceBackend.terminate_instances

    def recording(self: Any, instance_ids: list[str]) -> Any:
        terminated.extend(instance_ids)
        return original_terminate(self, instance_ids)

    monkeypatch.setattr(InstanceBackend, "terminate_instances", recording)

    make = pg_database_factory
    api_url = make()
    database = {"api_url": api_url, "cell0_url": make(), "cells": {"cell1": make()}}
    tasks = TaskTable(api_url)
    request.addfinalizer(tasks.close)
    for node in NODES:
        config = _config(tmp_path, node, database, ec2, remote_cloud)
        daemons.append(Daemon.start(config, tmp_path, node, timeout=90))
    by_node = dict(zip(NODES, daemons, strict=True))

    # --- one owner per zone, the same in every node's view
    wait_for("every lease held", lambda: None not in owners(daemons[0]).values(), 15, daemons)
    owned = owners(daemons[0])
    assert set(owned) >= set(ZONES)
    assert all(owners(d) == owned for d in daemons[1:])

    # --- ten sync intervals; an orphan appears in EC2 at their start
    before = _counters(by_node, "sync")
    orphans_before = _counters(by_node, "orphans")
    t0 = time.monotonic()
    stray, stray_id = _stray_instance(ec2)
    aws_owner = by_node[str(owned[AWS])]
    start = before[(str(owned[AWS]), AWS)][0]
    wait_for(
        f"{INTERVALS} syncs of {AWS}",
        lambda: runs(aws_owner, f"sync:{AWS}") >= start + INTERVALS,
        INTERVALS * SYNC_INTERVAL * 3,
        daemons,
    )
    after = _counters(by_node, "sync")
    orphans_after = _counters(by_node, "orphans")
    elapsed = time.monotonic() - t0
    assert owners(daemons[0]) == owned  # nothing moved meanwhile
    intervals = elapsed / SYNC_INTERVAL
    for zone in ZONES:
        owner = str(owned[zone])
        total = sum(after[(n, zone)][0] - before[(n, zone)][0] for n in NODES)
        # About once an interval in all, and only in the owner: three nodes running it
        # would make it about three times.
        assert intervals / 2 <= total <= intervals + 2, (zone, total, intervals, after)
        for n in NODES:
            if n != owner:
                assert after[(n, zone)][0] == 0, (zone, n, after)
                assert after[(n, zone)][1] > before[(n, zone)][1], (zone, n, after)  # ticking
                assert orphans_after[(n, zone)][0] == 0, (zone, n, orphans_after)
        assert orphans_after[(owner, zone)][0] > orphans_before[(owner, zone)][0], zone

    # The stray: terminated once, recorded once, by the zone's owner.
    wait_for("the orphan's deletion", lambda: bool(_orphan_events(daemons[0], stray)), 10, daemons)
    (event,) = _orphan_events(daemons[0], stray)
    assert (event["zone"], event["remote_id"], event["action"]) == (AWS, stray_id, "delete")
    assert terminated == [stray_id]
    assert ec2.state(stray) == "terminated"

    # --- builds into the remote cloud, taken by the AWS zone's owner; then SIGKILL it
    victim = str(owned[AWS])
    sids = []
    for i in range(BOOTS):
        body = {
            "server": {
                "name": f"slow-{i}",
                "flavorRef": "m1.small",
                "imageRef": "cirros",
                "availability_zone": REMOTE,
            }
        }
        r = httpx.post(
            f"{aws_owner.url}/compute/v2.1/servers",
            json=body,
            headers=aws_owner.headers,
            timeout=10,
        )
        assert r.status_code == 202, r.text
        sids.append(r.json()["server"]["id"])

    def victim_building() -> bool:
        return any(t.node == victim and t.state == "running" for t in tasks.rows(action="build"))

    wait_for("a build running in the victim", victim_building, 10, daemons)
    lost = [z for z, o in owned.items() if o == victim]
    survivors = [d for n, d in by_node.items() if n != victim]
    killed_at = time.monotonic()
    aws_owner.kill()
    # Its rows stay as they were until the survivors find it silent.
    held = [t for t in tasks.rows(action="build") if t.node == victim and t.state == "running"]
    assert held, tasks.rows(action="build")

    # --- another node owns every zone of the victim within two lease periods
    new_owned = await_take_over(survivors, victim, lost, killed_at, LEASE_SECONDS)

    # --- the victim's builds are requeued and finished by a survivor
    held_ids = {t.id for t in held}

    def builds_done() -> bool:
        return all(t.state == "done" for t in tasks.rows(action="build"))

    wait_for("every build finished", builds_done, 30, survivors)
    for t in tasks.rows(action="build"):
        assert t.state == "done", t
        if t.id in held_ids:
            assert t.attempts >= 1 and t.node in NODES and t.node != victim, t

    def all_active() -> bool:
        return all(_server(survivors[0], sid)["status"] == "ACTIVE" for sid in sids)

    wait_for("every server ACTIVE", all_active, 20, survivors)
    for sid in sids:
        server = _server(survivors[0], sid)
        assert server["OS-EXT-AZ:availability_zone"] == REMOTE, server
        assert not server["OS-EXT-STS:task_state"], server
    remote = [s["metadata"]["federator:instance-uuid"] for s in _remote_servers(remote_cloud)]
    assert sorted(remote) == sorted(sids)  # one each: the retried builds made no second one

    # --- the zones' sync goes on, in their new owners only
    survivor_nodes = [n for n in NODES if n != victim]
    alive = {n: by_node[n] for n in survivor_nodes}
    before = _counters(alive, "sync")
    heir = by_node[str(new_owned[AWS])]
    start = runs(heir, f"sync:{AWS}")
    wait_for(
        f"syncs of {AWS} after the take-over",
        lambda: runs(heir, f"sync:{AWS}") >= start + 3,
        15,
        survivors,
    )
    after = _counters(alive, "sync")
    assert owners(survivors[0]) == new_owned
    for zone in ZONES:
        owner = str(new_owned[zone])
        assert after[(owner, zone)][0] > before[(owner, zone)][0], zone
        others = [n for n in survivor_nodes if n != owner]
        assert all(after[(n, zone)][0] == before[(n, zone)][0] for n in others), (zone, after)
    assert terminated == [stray_id]  # the new owner did not act on the stray again
