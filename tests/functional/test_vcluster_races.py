"""Virtual clusters created all at once through the API, racing for too little capacity.

Twenty clusters of six members (three servers kept on distinct hosts, each with a volume
affine to it) are posted by twenty threads released together; together they ask twice
what the local zone holds. Thirty hosts each take exactly one m1.small, so exactly ten
clusters fit whichever hosts they pick: a cluster that lost a claim race and gave up, or
a claim leaked by a refused one, would show as fewer than ten ACTIVE.

Once every task has ended, each cluster is ACTIVE with all of its members or ERROR with
none of them anywhere (not in the API, not in the databases, not in the simulated
cloud); the ledger is exact (host, pool and zone counters equal the sums of the
allocation rows, within capacity); every ACTIVE cluster keeps its groupings; and the sim
holds exactly the servers and volumes of the ACTIVE clusters.

Run on SQLite with one broker and on PostgreSQL with two brokers sharing the databases
(and the sim's state store), the creates split between them.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from federator import errors
from federator.broker import Broker, Databases
from federator.config import Settings, load_settings
from federator.driver import Driver
from federator.storage.models import (
    BuildRequest,
    InstanceMapping,
    StoragePool,
    Task,
    VCluster,
    VClusterMember,
    Volume,
    VolumeAllocation,
    VolumeAttachment,
    Zone,
)
from tests.conftest import (
    ADMIN_CONTEXT,
    LiveBroker,
    settings_data,
    sim_zone,
    start_live_broker,
)
from tests.functional import vcluster_support as vc
from tests.functional.capacity import check_ledger, list_servers

CLUSTERS = 20
SERVERS_PER_CLUSTER = 3
HOSTS = 30
SMALL_MB = 1024
HOST_RAM_MB = 1536  # one m1.small per host, never two
FITS = HOSTS // SERVERS_PER_CLUSTER  # 10: any three free hosts take a cluster
VOLUME_GB = 10
BUSY = frozenset({"BUILD", "DELETING"})
FAULTS = frozenset({errors.NO_VALID_HOST, errors.GROUP_POLICY, errors.BUILD_FAILED})

Factory = Callable[..., LiveBroker]


def test_the_capacity_is_what_the_test_assumes() -> None:
    assert 2 * SMALL_MB > HOST_RAM_MB >= SMALL_MB
    assert (FITS, 2 * FITS) == (10, CLUSTERS)


def cluster_body(name: str) -> dict[str, Any]:
    """Three servers on distinct hosts, each with a volume in its host's pool."""
    servers = [f"s{j}" for j in range(SERVERS_PER_CLUSTER)]
    return {"vcluster": {
        "name": name,
        "instances": [*(vc.server(s) for s in servers),
                      *(vc.volume(f"v{j}", VOLUME_GB) for j in range(SERVERS_PER_CLUSTER))],
        "groupings": [
            vc.grouping("apart", "anti-affinity", *servers),
            *(vc.grouping(f"with-{j}", "affinity", f"s{j}", f"v{j}")
              for j in range(SERVERS_PER_CLUSTER)),
        ],
    }}  # fmt: skip


def race_settings(tmp_path: Path, node: str, database: dict[str, Any] | None) -> Settings:
    data = settings_data(
        tmp_path,
        zones=[sim_zone("local", "local", hosts=HOSTS, host_ram_mb=HOST_RAM_MB)],
        policy={"version": "vc-race", "zones": {"local": {}}},
        database=database,
        workers={"count": 8, "poll_interval": 0.1},
    )
    data["node_id"] = node
    return load_settings(None, **data)


def pg_databases(make: Callable[[], str]) -> dict[str, Any]:
    return {"api_url": make(), "cell0_url": make(), "cells": {"cell1": make()}}


@pytest.fixture(params=["sqlite-one-broker", pytest.param("postgresql-two-brokers",
                                                          marks=pytest.mark.postgres)])  # fmt: skip
def backend(request: pytest.FixtureRequest) -> tuple[dict[str, Any] | None, int]:
    """The databases (None: SQLite files) and how many brokers share them. Set up before
    the brokers, so the databases are dropped only after the brokers stopped."""
    if request.param.startswith("sqlite"):
        return None, 1
    return pg_databases(request.getfixturevalue("pg_database_factory")), 2


@pytest.fixture
def brokers(
    backend: tuple[dict[str, Any] | None, int], tmp_path: Path, live_broker_factory: Factory
) -> list[LiveBroker]:
    """One broker on SQLite, or two on the same PostgreSQL databases and sim state."""
    database, count = backend
    return [
        live_broker_factory(race_settings(tmp_path, f"node-{n}", database))
        for n in range(1, count + 1)
    ]


# --- the race --------------------------------------------------------------------------


def create_all_at_once(brokers: Sequence[LiveBroker], count: int) -> list[str]:
    """POST ``count`` clusters from as many threads, released together by a barrier,
    taking turns over ``brokers``; the ids, in order."""
    answers: list[httpx.Response | BaseException | None] = [None] * count
    barrier = threading.Barrier(count)

    def run(i: int) -> None:
        live = brokers[i % len(brokers)]
        with httpx.Client(timeout=60, headers=live.auth_headers) as client:
            barrier.wait()
            try:
                answers[i] = client.post(f"{live.compute}/vclusters", json=cluster_body(f"c{i}"))
            except BaseException as exc:  # reported below, with every other answer
                answers[i] = exc

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    ids = []
    for i, a in enumerate(answers):
        assert isinstance(a, httpx.Response), f"create c{i}: {a!r}"
        assert a.status_code == 202, a.text
        assert a.json()["vcluster"]["status"] == "BUILD"
        ids.append(a.json()["vcluster"]["id"])
    assert len(set(ids)) == count
    return ids


def settle(live: LiveBroker, ids: Sequence[str], timeout: float = 60) -> list[dict[str, Any]]:
    """Every cluster once no task is left and none is busy."""
    deadline = time.monotonic() + timeout
    while True:
        live.wait_settled(timeout)
        shown = [vc.show(live, cid) for cid in ids]
        busy = [c["name"] for c in shown if c["status"] in BUSY]
        if not busy and not live.broker.queue.pending():
            return shown
        assert time.monotonic() < deadline, f"clusters still busy: {busy}"
        time.sleep(0.05)


# --- what must hold afterwards (shared with the crash tests) ------------------------------


Wanted = dict[str, dict[str, Any]]


def wanted_members(clusters: Sequence[Mapping[str, Any]]) -> tuple[Wanted, Wanted]:
    """Each cluster ACTIVE with every member built, or ERROR with none placed. Returns the
    servers and volumes of the ACTIVE clusters, by id, as their cluster shows them (with
    ``cluster`` added): everything that may exist anywhere."""
    servers: dict[str, dict[str, Any]] = {}
    volumes: dict[str, dict[str, Any]] = {}
    for c in clusters:
        spec_names = {i["name"] for i in c["instances"]}
        if c["status"] == "ERROR":
            assert c["fault"]["code"] in FAULTS, c["fault"]
            for m in c["instances"]:
                assert m["status"] == "ERROR", (c["name"], m)
                assert m["id"] is None, f"{c['name']}/{m['name']} of an ERROR cluster has an id"
            continue
        assert c["status"] == "ACTIVE", (c["name"], c["status"], c.get("fault"))
        assert len(spec_names) == len(c["instances"])
        for m in c["instances"]:
            assert m["id"], (c["name"], m)
            entry = {**m, "cluster": c["id"]}
            if m["type"] == "server":
                assert m["status"] == "ACTIVE", (c["name"], m)
                servers[m["id"]] = entry
            else:
                assert m["status"] in ("in-use", "available"), (c["name"], m)
                volumes[m["id"]] = entry
    return servers, volumes


def check_api(
    client: httpx.Client, url: str, clusters: Sequence[Mapping[str, Any]]
) -> tuple[Wanted, Wanted]:
    """:func:`wanted_members`, and the API's servers and volumes (every project's) are
    exactly the ACTIVE clusters' members, as the clusters show them."""
    servers, volumes = wanted_members(clusters)
    shown = list_servers(client, url)
    assert set(shown) == set(servers), (
        f"servers of no ACTIVE cluster: {sorted(set(shown) - set(servers))}; "
        f"members missing from /servers: {sorted(set(servers) - set(shown))}"
    )
    for sid, srv in shown.items():
        assert srv["status"] == "ACTIVE", srv
        assert srv["OS-EXT-SRV-ATTR:host"] == servers[sid]["host"], sid
        assert srv["metadata"].get("vcluster") == servers[sid]["cluster"], srv["metadata"]

    r = client.get(
        f"{url}/volume/v3/admin/volumes/detail", params={"all_tenants": "1", "limit": 1000}
    )
    assert r.status_code == 200, r.text
    listed = {v["id"]: v for v in r.json()["volumes"]}
    assert set(listed) == set(volumes), (
        f"volumes of no ACTIVE cluster: {sorted(set(listed) - set(volumes))}; "
        f"members missing from the volume API: {sorted(set(volumes) - set(listed))}"
    )
    for vid, v in listed.items():
        assert v["status"] == volumes[vid]["status"], v
    return servers, volumes


def check_groupings(clusters: Sequence[Mapping[str, Any]]) -> None:
    """Inside each ACTIVE cluster: anti-affine servers on distinct hosts, each affine
    volume in its server's host pool and attached to it."""
    for c in clusters:
        if c["status"] != "ACTIVE":
            continue
        m = {i["name"]: i for i in c["instances"]}
        for g in c["groupings"]:
            rule, names = g["spec"]["rule"], g["membersRef"]
            if rule == "anti-affinity":
                hosts = [m[n]["host"] for n in names]
                assert None not in hosts and len(set(hosts)) == len(hosts), (c["name"], hosts)
            elif rule == "affinity":
                [srv] = [m[n] for n in names if m[n]["type"] == "server"]
                for vol in (m[n] for n in names if m[n]["type"] == "volume"):
                    assert vol["host"] == srv["host"], (c["name"], vol, srv)
                    assert vol["attached_to"] == srv["id"], (c["name"], vol, srv)
                    assert vol["status"] == "in-use", (c["name"], vol)


def check_records(
    dbs: Databases,
    servers: Mapping[str, Mapping[str, Any]],
    volumes: Mapping[str, Mapping[str, Any]],
    error_clusters: Sequence[str],
) -> None:
    """The ledger is exact and holds the wanted members only.

    Servers: :func:`tests.functional.capacity.check_ledger` (host and zone counters equal
    the allocations and the live instances, within capacity), and the placed instances are
    exactly ``servers``, with no build request or mapping left of anything else. Volumes:
    every pool's and zone's counters equal the sums of their volume allocations, within
    the pool's capacity, and the allocations and live volume rows are exactly ``volumes``,
    each in the pool it is shown in. No member row of an ``error_clusters`` cluster has
    a claim or a record left.
    """
    ledger = check_ledger(dbs)
    assert set(ledger.placed) == set(servers), "placed instances differ from ACTIVE members"
    assert not ledger.buried, f"buried instances: {sorted(ledger.buried)}"
    for uuid, inst in ledger.placed.items():
        assert inst.host == servers[uuid]["host"], uuid
    with dbs.api.read() as s:
        assert not list(s.scalars(select(BuildRequest.instance_uuid))), "build requests left"
        assert set(s.scalars(select(InstanceMapping.instance_uuid))) == set(servers)
        vallocs = list(s.scalars(select(VolumeAllocation)))
        pools = {p.id: p for p in s.scalars(select(StoragePool))}
        zones = list(s.scalars(select(Zone)))
        live_volumes = {v.uuid: v for v in s.scalars(select(Volume).where(~Volume.deleted))}
        attachments = {
            (a.volume_uuid, a.server_uuid): a.state for a in s.scalars(select(VolumeAttachment))
        }
        failed = list(
            s.scalars(select(VClusterMember).where(VClusterMember.cluster_uuid.in_(error_clusters)))
        )
        error_rows = list(s.scalars(select(VCluster).where(VCluster.uuid.in_(error_clusters))))
    for p in pools.values():
        on = [v for v in vallocs if v.pool_id == p.id]
        assert (p.used_gb, p.volumes) == (sum(v.size_gb for v in on), len(on)), p.name
        assert p.capacity_gb is None or p.used_gb <= p.capacity_gb, f"pool {p.name} over"
    for z in zones:
        on_zone = [v for v in vallocs if v.zone == z.name]
        assert (z.volume_gb_used, z.volumes) == (
            sum(v.size_gb for v in on_zone),
            len(on_zone),
        ), f"zone {z.name}: volume counters differ from the allocations"
    assert {v.volume_uuid for v in vallocs} == set(volumes), "volume claims differ"
    assert set(live_volumes) == set(volumes), "live volume rows differ from ACTIVE members"
    for v in vallocs:
        row = live_volumes[v.volume_uuid]
        assert (v.zone, v.pool_id, v.size_gb) == (row.zone, row.pool_id, row.size_gb)
        pool, shown = pools[v.pool_id], volumes[v.volume_uuid]
        assert (pool.name, pool.host) == (shown["pool"], shown["host"]), v.volume_uuid
    for vid, vol in volumes.items():
        if vol.get("attached_to"):
            assert attachments.get((vid, vol["attached_to"])) == "attached", vid
    assert {r.status for r in error_rows} <= {"ERROR"}
    for r in failed:
        assert r.state == "failed", (r.name, r.state)
        assert r.uuid not in live_volumes and r.uuid not in ledger.placed, r.name


def check_clouds(
    drivers: Mapping[str, Driver],
    servers: Mapping[str, Mapping[str, Any]],
    volumes: Mapping[str, Mapping[str, Any]],
) -> None:
    """The simulated clouds hold exactly the wanted servers (on their hosts) and volumes
    (in their pools, attached to their servers): nothing runs that nothing tracks."""
    remote_servers: dict[str, Any] = {}
    remote_volumes: dict[str, Any] = {}
    for driver in drivers.values():
        remote_servers.update({r.uuid: r for batch in driver.list_instances() for r in batch})
        storage = driver.block_storage()
        if storage is not None:
            remote_volumes.update({v.uuid: v for b in storage.list_volumes() for v in b})
    assert set(remote_servers) == set(servers), (
        f"orphan servers: {sorted(set(remote_servers) - set(servers))}; "
        f"lost: {sorted(set(servers) - set(remote_servers))}"
    )
    assert set(remote_volumes) == set(volumes), (
        f"orphan volumes: {sorted(set(remote_volumes) - set(volumes))}; "
        f"lost: {sorted(set(volumes) - set(remote_volumes))}"
    )
    for sid, r in remote_servers.items():
        assert r.host == servers[sid]["host"], sid
    for vid, v in remote_volumes.items():
        assert v.pool == volumes[vid]["pool"], vid
        wanted = volumes[vid].get("attached_to")
        assert [a.server_uuid for a in v.attachments] == ([wanted] if wanted else []), vid


# --- the test ----------------------------------------------------------------------------


def test_concurrent_clusters_win_whole_or_not_at_all(brokers: list[LiveBroker]) -> None:
    ids = create_all_at_once(brokers, CLUSTERS)
    for live in brokers:
        live.wait_settled(60)
    clusters = settle(brokers[0], ids)
    for other in brokers[1:]:  # every broker shows the same outcome
        assert [c["status"] for c in settle(other, ids)] == [c["status"] for c in clusters]

    statuses = Counter(c["status"] for c in clusters)
    assert statuses == {"ACTIVE": FITS, "ERROR": CLUSTERS - FITS}, statuses
    # A loser finds the hosts full (or, planning after the winners, no three hosts left
    # for its anti-affinity grouping): refused for want of room, never a build failure.
    for c in clusters:
        if c["status"] == "ERROR":
            assert c["fault"]["code"] in (errors.NO_VALID_HOST, errors.GROUP_POLICY), c["fault"]

    live = brokers[0]
    if len(brokers) > 1:  # every broker's workers took part in building the clusters
        with live.broker.dbs.api.read() as s:
            nodes = set(s.scalars(select(Task.node).where(Task.action == "vcluster_build")))
        assert nodes == {b.broker.settings.node_id for b in brokers}, nodes
    servers, volumes = check_api(live.client, live.url, clusters)
    assert len(servers) == FITS * SERVERS_PER_CLUSTER
    assert len(volumes) == FITS * SERVERS_PER_CLUSTER
    check_groupings(clusters)
    # Every host took one server: the capacity was used to the last slot.
    assert sorted(Counter(s["host"] for s in servers.values()).values()) == [1] * HOSTS
    errored = [c["id"] for c in clusters if c["status"] == "ERROR"]
    check_records(live.broker.dbs, servers, volumes, errored)
    for b in brokers:
        check_clouds(b.broker.drivers, servers, volumes)


@pytest.mark.postgres
def test_a_broker_whose_host_cache_is_stale_still_finds_the_room_left(
    tmp_path: Path, pg_database_factory: Callable[[], str]
) -> None:
    # Broker b reads the hosts (all free) and waits; broker a fills 21 of the 30 and
    # stops. b's first plans then land on hosts a holds: a lost claim must not cost one
    # attempt per stale host (21 of them, more than the attempts a cluster gets), and b
    # still builds the three clusters that fit.
    database = pg_databases(pg_database_factory)
    b = Broker.open(race_settings(tmp_path, "node-2", database))
    try:
        a, stop_a = start_live_broker(race_settings(tmp_path, "node-1", database))
        try:
            first = [vc.create(a, cluster_body(f"a{i}")) for i in range(FITS - 3)]
            assert [c["status"] for c in settle(a, first)] == ["ACTIVE"] * len(first)
        finally:
            stop_a()
        assert int(b.hosts.table.ram_used.sum()) == 0, "b was meant to plan from a stale cache"

        b.start(monitor=False)
        later = []
        for i in range(3):  # one at a time: the first alone meets every stale host
            later.append(b.vclusters.create(ADMIN_CONTEXT, cluster_body(f"b{i}")).id)
            wait_idle(b)
        # The capacity is now used to the last slot: one more is refused, leaving nothing.
        extra = b.vclusters.create(ADMIN_CONTEXT, cluster_body("one-too-many")).id
        wait_idle(b)
        clusters = [b.vclusters.get(ADMIN_CONTEXT, cid).as_dict() for cid in [*first, *later]]
        assert [c["status"] for c in clusters] == ["ACTIVE"] * FITS, [
            (c["name"], c.get("fault")) for c in clusters if c["status"] != "ACTIVE"
        ]
        refused = b.vclusters.get(ADMIN_CONTEXT, extra).as_dict()
        assert refused["status"] == "ERROR"
        assert refused["fault"]["code"] in (errors.NO_VALID_HOST, errors.GROUP_POLICY)
        clusters.append(refused)
        servers, volumes = wanted_members(clusters)
        check_groupings(clusters)
        assert sorted(Counter(s["host"] for s in servers.values()).values()) == [1] * HOSTS
        check_records(b.dbs, servers, volumes, [extra])
        check_clouds(b.drivers, servers, volumes)
    finally:
        b.stop()


def wait_idle(b: Broker, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while b.queue.pending():
        assert time.monotonic() < deadline, f"tasks still pending after {timeout}s"
        time.sleep(0.02)
