"""Concurrent volume creates, attaches and quota checks against fixed storage capacity.

Every claim here is raced by real threads over HTTP against a live broker (API, 16
workers) and checked afterwards against both the broker's accounting and what the zone's
driver holds:

* a local sim zone whose one pool holds 500 GB and nowhere to overflow: 100 creates of
  10 GB make exactly 50 volumes; the other 50 end ``error`` with the placement fault;
* the same zone with a 100% ``gb_percent`` high-water mark overflowing to an AWS zone (EC2
  on moto, ``quota.gigabytes`` 500): all 100 are made, 50 of them as EBS volumes in the
  AWS zone's availability zone;
* two servers racing to attach one volume: one wins; volumes racing to attach to one
  server: each gets a device of its own;
* a project's ``gigabytes`` quota raced by its own creates: never exceeded, 413 beyond.

Each runs on SQLite and on PostgreSQL (skipped without it, failed under
``FEDERATOR_TEST_STRICT=1``).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from drivers.sim.blockstorage import SimBlockStorage
from federator import errors
from federator.config import Settings, load_settings
from federator.storage.db import Database
from federator.storage.models import StoragePool, Volume, VolumeAllocation, VolumeAttachment, Zone
from tests.conftest import ADMIN, LiveBroker, make_settings, member_of, sim_zone
from tests.support_moto import (
    FAKE_ENV,
    Network,
    make_network,
    moto_endpoint,
    no_backoff,
    reset_moto_server,
    strict_moto,
    zone_options,
)
from tests.support_moto import test_client as moto_client

pytestmark = pytest.mark.slow

LOCAL = "local"
AWS = "aws"
POOL_GB = 500
SIZE_GB = 10
CREATES = 100
FITS = POOL_GB // SIZE_GB  # 50
BROKER_ID = "volume-capacity"
UUID_TAG, BROKER_TAG = "federator:volume-uuid", "federator:broker-id"
SETTLE_SECONDS = 60.0


def test_the_storage_is_what_the_tests_assume() -> None:
    assert (FITS, CREATES - FITS) == (50, 50)
    assert (FITS + 1) * SIZE_GB > POOL_GB


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> dict[str, Any] | None:
    """The database URLs to use: None for SQLite files, else fresh PostgreSQL databases."""
    if request.param == "sqlite":
        return None
    make: Callable[[], str] = request.getfixturevalue("pg_database_factory")
    return {"api_url": make(), "cell0_url": make(), "cells": {"cell1": make()}}


def local_zone(**options: Any) -> dict[str, Any]:
    """Two sim hosts whose volumes live in one shared pool of :data:`POOL_GB`."""
    return sim_zone(LOCAL, "local", hosts=2, volume_pools="zone", volume_pool_gb=POOL_GB, **options)


def broker_settings(
    tmp_path: Path,
    database: dict[str, Any] | None,
    *,
    zones: list[dict[str, Any]] | None = None,
    policy: dict[str, Any] | None = None,
    **top: Any,
) -> Settings:
    return make_settings(
        tmp_path,
        zones=zones or [local_zone()],
        policy=policy or {"version": "volumes.1", "zones": {}},
        database=database,
        broker_id=BROKER_ID,
        workers={"count": 16, "poll_interval": 0.05, "transient_backoff": 0.01},
        **top,
    )


# --- load --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Created:
    """One POST /volumes: the HTTP status and the answer's body."""

    status: int
    body: dict[str, Any]

    @property
    def volume_id(self) -> str | None:
        if self.status != 202:
            return None
        vid: str = self.body["volume"]["id"]
        return vid


def create_concurrently(
    url: str,
    project: str,
    count: int,
    *,
    headers: Mapping[str, str],
    size: int = SIZE_GB,
    clients: int = 16,
) -> list[Created]:
    """POST ``count`` volume creates from ``clients`` threads, each with its own HTTP
    client; every thread waits at a barrier before its first request, so they overlap.
    A request failing at the transport level counts as status 0.

    Sixteen clients and sixteen workers stay well within the connections of a PostgreSQL
    server that other test runs share (creates waiting for a project's quota lock each
    hold one)."""
    answers: list[Created | None] = [None] * count
    barrier = threading.Barrier(clients)

    def run(first: int) -> None:
        with httpx.Client(base_url=url, timeout=60, headers=dict(headers)) as client:
            barrier.wait()
            for i in range(first, count, clients):
                body = {"volume": {"name": f"burst-{i}", "size": size}}
                try:
                    r = client.post(f"/volume/v3/{project}/volumes", json=body)
                    answers[i] = Created(r.status_code, r.json())
                except httpx.HTTPError:
                    answers[i] = Created(0, {})

    threads = [threading.Thread(target=run, args=(n,), daemon=True) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [a if a is not None else Created(0, {}) for a in answers]


def all_volumes(live: LiveBroker) -> dict[str, dict[str, Any]]:
    """Every live volume of every project, by id, as the admin's detail listing shows it."""
    r = live.client.get(
        f"{live.url}/volume/v3/{ADMIN}/volumes/detail",
        params={"all_tenants": "1", "limit": 1000},
    )
    assert r.status_code == 200, r.text
    return {v["id"]: v for v in r.json()["volumes"]}


def show(live: LiveBroker, vid: str) -> dict[str, Any]:
    r = live.client.get(f"{live.url}/volume/v3/{ADMIN}/volumes/{vid}")
    assert r.status_code == 200, r.text
    volume: dict[str, Any] = r.json()["volume"]
    return volume


# --- bookkeeping -------------------------------------------------------------------------


@dataclass(frozen=True)
class StorageLedger:
    """What the API database says once everything has settled: GB claimed per zone."""

    zone_gb: dict[str, int]
    pools: list[StoragePool]
    volumes: list[Volume]


def check_storage_ledger(db: Database) -> StorageLedger:
    """Assert that storage accounting is exact, and return what was read.

    For every pool: ``used_gb`` and ``volumes`` == the sum of its allocations == the sizes
    of the live volumes placed in it, ``free_gb`` == capacity - used, never over capacity.
    For every zone: ``volume_gb_used`` and ``volumes`` likewise. Allocations exist for
    exactly the live volumes that are placed; an ``error`` volume holds nothing.
    """
    with db.read() as s:
        zones = list(s.scalars(select(Zone)))
        pools = list(s.scalars(select(StoragePool)))
        allocations = list(s.scalars(select(VolumeAllocation)))
        volumes = list(s.scalars(select(Volume).where(Volume.deleted.is_(False))))
    placed = {v.uuid: v for v in volumes if v.pool_id is not None}
    by_uuid = {a.volume_uuid: a for a in allocations}
    assert set(by_uuid) == set(placed), (
        f"allocations without a placed volume: {sorted(set(by_uuid) - set(placed))}; "
        f"placed volumes without an allocation: {sorted(set(placed) - set(by_uuid))}"
    )
    for uuid, v in placed.items():
        a = by_uuid[uuid]
        assert (a.zone, a.pool_id, a.size_gb) == (v.zone, v.pool_id, v.size_gb), uuid
        assert v.status != "error", f"{uuid} is error yet holds storage"
    for p in pools:
        mine = [a for a in allocations if a.pool_id == p.id]
        where = f"pool {p.zone}/{p.name}"
        assert (p.used_gb, p.volumes) == (sum(a.size_gb for a in mine), len(mine)), where
        if p.capacity_gb is not None:
            assert p.free_gb == p.capacity_gb - p.used_gb, where
            assert p.used_gb <= p.capacity_gb, f"{where} over capacity"
    zone_gb: dict[str, int] = {}
    for z in zones:
        mine = [a for a in allocations if a.zone == z.name]
        sized = [v.size_gb for v in placed.values() if v.zone == z.name]
        assert (z.volume_gb_used, z.volumes) == (sum(a.size_gb for a in mine), len(mine)), z.name
        assert (z.volume_gb_used, z.volumes) == (sum(sized), len(sized)), z.name
        zone_gb[z.name] = z.volume_gb_used
    return StorageLedger(zone_gb, pools, volumes)


def sim_storage(live: LiveBroker, zone: str = LOCAL) -> SimBlockStorage:
    storage = live.broker.drivers[zone].block_storage()
    assert isinstance(storage, SimBlockStorage)
    return storage


def driver_volumes(live: LiveBroker, zone: str) -> dict[str, int]:
    """What the zone's driver holds for this broker: uuid -> GB."""
    storage = live.broker.drivers[zone].block_storage()
    assert storage is not None
    return {v.uuid: v.size_gb for batch in storage.list_volumes() for v in batch}


# --- 1. one local pool, no overflow ----------------------------------------------------


def test_creates_racing_for_one_pool_fill_it_exactly(
    tmp_path: Path,
    backend: dict[str, Any] | None,
    live_broker_factory: Callable[[Settings], LiveBroker],
) -> None:
    live = live_broker_factory(broker_settings(tmp_path, backend))
    answers = create_concurrently(live.url, ADMIN, CREATES, headers=live.auth_headers)
    assert Counter(a.status for a in answers) == {202: CREATES}
    ids = [a.volume_id for a in answers]
    assert len(set(ids)) == CREATES
    assert {a.body["volume"]["status"] for a in answers} <= {"creating", "available", "error"}
    live.wait_settled(timeout=SETTLE_SECONDS)

    volumes = all_volumes(live)
    assert set(volumes) == set(ids)
    statuses = Counter(v["status"] for v in volumes.values())
    assert statuses == {"available": FITS, "error": CREATES - FITS}
    available = {vid for vid, v in volumes.items() if v["status"] == "available"}
    for vid, v in volumes.items():
        assert v["size"] == SIZE_GB
        if vid in available:
            assert v["availability_zone"] == LOCAL
            assert "fault" not in v
            continue
        # The show body carries the placement fault, saying why: no pool had room.
        fault = show(live, vid)["fault"]
        assert (fault["code"], fault["reason"]) == (errors.NO_VALID_HOST, "no_valid_host")
        assert fault["details"] == [f"{LOCAL}: no pool has {SIZE_GB} GB free"]
        assert fault["message"] == (
            "no availability zone has a pool that can take this volume: "
            f"{LOCAL}: no pool has {SIZE_GB} GB free"
        )

    ledger = check_storage_ledger(live.broker.dbs.api)
    assert ledger.zone_gb == {LOCAL: POOL_GB}
    [pool] = ledger.pools
    assert (pool.name, pool.capacity_gb, pool.used_gb, pool.free_gb, pool.volumes) == (
        LOCAL, POOL_GB, POOL_GB, 0, FITS,
    )  # fmt: skip
    # A failed volume was placed nowhere, and its recorded verdicts say the policy did
    # not refuse the zone: the pool's room did.
    failed = [v for v in ledger.volumes if v.status == "error"]
    assert len(failed) == CREATES - FITS
    for row in failed:
        assert (row.zone, row.pool_id, row.host, row.placement["zone"]) == (None,) * 4
        [verdict] = row.placement["verdicts"]
        assert (verdict["zone"], verdict["accepted"]) == (LOCAL, True)

    # The sim's own pool agrees, volume for volume.
    [info] = sim_storage(live).pools()
    assert (info.name, info.capacity_gb) == (LOCAL, POOL_GB)
    assert (info.extra["used_gb"], info.extra["volumes"]) == (POOL_GB, FITS)
    assert driver_volumes(live, LOCAL) == dict.fromkeys(available, SIZE_GB)


# --- 2. overflow to EC2 on moto ----------------------------------------------------------


@dataclass
class Ec2:
    """The moto server, the tests' own client to it, and what the zone launches into."""

    endpoint: str
    client: Any
    network: Network
    amis: dict[str, str]
    flavor_map: dict[str, str]

    def volumes(self) -> list[dict[str, Any]]:
        """Every EBS volume carrying this broker's id."""
        pages = self.client.get_paginator("describe_volumes").paginate(
            Filters=[{"Name": f"tag:{BROKER_TAG}", "Values": [BROKER_ID]}]
        )
        return [v for p in pages for v in p["Volumes"]]

    def subnet_az(self) -> str:
        first = self.network.subnet_ids[0]
        [subnet] = self.client.describe_subnets(SubnetIds=[first])["Subnets"]
        az: str = subnet["AvailabilityZone"]
        return az


@pytest.fixture
def ec2(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Ec2]:
    """A wiped moto server with a VPC, two subnets in distinct AZs, a security group and
    one AMI per catalog image; fake credentials in the environment; no retry sleeps."""
    for name, value in FAKE_ENV.items():
        monkeypatch.setenv(name, value)
    no_backoff(monkeypatch)
    endpoint = moto_endpoint()
    catalog = load_settings(None, data_dir=tmp_path / "catalog")
    with strict_moto():
        reset_moto_server(endpoint)
        client = moto_client(endpoint)
        network = make_network(client)
        amis = {
            image.name: client.register_image(Name=image.name, RootDeviceName="/dev/xvda")[
                "ImageId"
            ]
            for image in catalog.images
        }
        flavor_map = {f.name: "t3.micro" for f in catalog.flavors}
        yield Ec2(endpoint, client, network, amis, flavor_map)


def overflow_policy() -> dict[str, Any]:
    """The local zone takes volumes up to 100% of its pools, then overflows to the AWS
    zone, which may hold 500 GB."""
    return {
        "version": "volumes.overflow",
        "zones": {
            LOCAL: {
                "thresholds": {"gb_percent": {"high": 100, "low": 50}},
                "overflow": [AWS],
            },
            AWS: {"quota": {"gigabytes": POOL_GB}},
        },
    }


def test_creates_beyond_the_local_pool_overflow_to_ebs(
    tmp_path: Path,
    backend: dict[str, Any] | None,
    ec2: Ec2,
    live_broker_factory: Callable[[Settings], LiveBroker],
) -> None:
    options = zone_options(
        ec2.network,
        endpoint_url=ec2.endpoint,
        flavor_map=ec2.flavor_map,
        image_map=ec2.amis,
        subnet_strategy="first",  # servers in the volumes' availability zone
    )
    aws = {"name": AWS, "driver": "aws", "kind": "virtual", "options": options}
    settings = broker_settings(
        tmp_path, backend, zones=[local_zone(), aws], policy=overflow_policy()
    )
    live = live_broker_factory(settings)
    answers = create_concurrently(live.url, ADMIN, CREATES, headers=live.auth_headers)
    assert Counter(a.status for a in answers) == {202: CREATES}
    ids = {a.volume_id for a in answers}
    assert len(ids) == CREATES
    live.wait_settled(timeout=SETTLE_SECONDS)

    volumes = all_volumes(live)
    assert set(volumes) == ids
    assert Counter(v["status"] for v in volumes.values()) == {"available": CREATES}, [
        v.get("fault") for v in volumes.values() if v["status"] != "available"
    ]
    ledger = check_storage_ledger(live.broker.dbs.api)
    assert ledger.zone_gb == {LOCAL: POOL_GB, AWS: POOL_GB}
    in_zone = {zone: {v.uuid: v for v in ledger.volumes if v.zone == zone} for zone in (LOCAL, AWS)}
    assert {zone: len(found) for zone, found in in_zone.items()} == {LOCAL: FITS, AWS: FITS}
    # The zone's one pool is the EC2 availability zone of its first subnet; users see the
    # volumes in the availability zone the broker shows for the zone (its name), as they
    # see its servers.
    az = ec2.subnet_az()
    assert {(p.zone, p.name, p.capacity_gb) for p in ledger.pools if p.zone == AWS} == {
        (AWS, az, None)
    }
    for vid, v in in_zone[AWS].items():
        assert volumes[vid]["availability_zone"] == AWS
        assert (v.placement["zone"], v.placement["pool"]) == (AWS, az)
    with live.broker.dbs.api.read() as s:
        assert s.scalar(select(Zone.storage_bursting).where(Zone.name == LOCAL)) is True

    # EC2 holds exactly the 50 volumes placed there, tagged, sized and where they belong.
    ebs = ec2.volumes()
    assert len(ebs) == FITS
    tagged: dict[str, str] = {}
    for volume in ebs:
        tags = {t["Key"]: t["Value"] for t in volume["Tags"]}
        uuid = tags[UUID_TAG]
        assert tags == {
            UUID_TAG: uuid,
            BROKER_TAG: BROKER_ID,
            "federator:zone": AWS,
            "federator:project": ADMIN,
            "Name": volumes[uuid]["name"],
        }
        assert (volume["Size"], volume["AvailabilityZone"], volume["State"]) == (
            SIZE_GB, az, "available",
        )  # fmt: skip
        tagged[uuid] = volume["VolumeId"]
    assert tagged == {vid: v.remote_id for vid, v in in_zone[AWS].items()}
    assert sum(v["Size"] for v in ebs) == POOL_GB

    [info] = sim_storage(live).pools()
    assert (info.extra["used_gb"], info.extra["volumes"]) == (POOL_GB, FITS)
    assert driver_volumes(live, LOCAL) == dict.fromkeys(in_zone[LOCAL], SIZE_GB)
    assert driver_volumes(live, AWS) == dict.fromkeys(in_zone[AWS], SIZE_GB)


# --- 3. attaches racing for one volume -------------------------------------------------


ROUNDS = 10


def boot_active(live: LiveBroker, name: str) -> str:
    sid = live.boot(name)
    live.wait_status(sid, "ACTIVE")
    return sid


def race_attach(live: LiveBroker, vid: str, servers: list[str]) -> dict[str, httpx.Response]:
    """POST an attach of volume ``vid`` to each of ``servers`` at once (one thread and one
    HTTP client each, released together by a barrier); the answers by server."""
    barrier = threading.Barrier(len(servers))
    answers: dict[str, httpx.Response] = {}

    def attach(sid: str) -> None:
        with httpx.Client(timeout=30, headers=live.auth_headers) as client:
            barrier.wait()
            answers[sid] = client.post(
                f"{live.compute}/servers/{sid}/os-volume_attachments",
                json={"volumeAttachment": {"volumeId": vid}},
            )

    threads = [threading.Thread(target=attach, args=(sid,)) for sid in servers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return answers


def test_two_servers_racing_to_attach_one_volume_one_wins(
    tmp_path: Path,
    backend: dict[str, Any] | None,
    live_broker_factory: Callable[[Settings], LiveBroker],
) -> None:
    live = live_broker_factory(broker_settings(tmp_path, backend))
    servers = [boot_active(live, f"vm-{n}") for n in range(2)]
    made = create_concurrently(live.url, ADMIN, ROUNDS, headers=live.auth_headers, clients=2)
    vids = [a.volume_id for a in made if a.volume_id is not None]
    assert len(vids) == ROUNDS
    live.wait_settled()
    assert {v["status"] for v in all_volumes(live).values()} == {"available"}

    won: Counter[str] = Counter()
    for vid in vids:
        answers = race_attach(live, vid, servers)
        codes = sorted(r.status_code for r in answers.values())
        assert len(codes) == 2 and codes[0] == 200 and codes[1] in (400, 409), [
            (r.status_code, r.text) for r in answers.values()
        ]
        [winner] = [sid for sid, r in answers.items() if r.status_code == 200]
        [loser] = [r for r in answers.values() if r.status_code != 200]
        assert vid in loser.json()["message"]
        assert answers[winner].json()["volumeAttachment"]["volumeId"] == vid
        won[winner] += 1
        live.wait_settled()

        volume = show(live, vid)
        assert volume["status"] == "in-use"
        assert [a["server_id"] for a in volume["attachments"]] == [winner]
        with live.broker.dbs.api.read() as s:
            rows = list(
                s.scalars(select(VolumeAttachment).where(VolumeAttachment.volume_uuid == vid))
            )
        assert [(a.server_uuid, a.state) for a in rows] == [(winner, "attached")]
        [remote] = [v for b in sim_storage(live).list_volumes() for v in b if v.uuid == vid]
        assert [a.server_uuid for a in remote.attachments] == [winner]

    assert sum(won.values()) == ROUNDS
    for sid in servers:
        r = live.client.get(f"{live.compute}/servers/{sid}/os-volume_attachments")
        assert r.status_code == 200, r.text
        devices = [a["device"] for a in r.json()["volumeAttachments"]]
        assert len(devices) == won[sid]
        assert len(set(devices)) == len(devices), f"{sid}: a device name used twice"


def test_volumes_racing_to_attach_to_one_server_get_distinct_devices(
    tmp_path: Path,
    backend: dict[str, Any] | None,
    live_broker_factory: Callable[[Settings], LiveBroker],
) -> None:
    live = live_broker_factory(broker_settings(tmp_path, backend))
    sid = boot_active(live, "vm")
    racers = 4
    made = create_concurrently(live.url, ADMIN, racers * 3, headers=live.auth_headers)
    vids = [a.volume_id for a in made if a.volume_id is not None]
    live.wait_settled()
    barrier = threading.Barrier(racers)
    answers: dict[str, httpx.Response] = {}

    def attach(mine: list[str]) -> None:
        with httpx.Client(timeout=30, headers=live.auth_headers) as client:
            barrier.wait()
            for vid in mine:
                answers[vid] = client.post(
                    f"{live.compute}/servers/{sid}/os-volume_attachments",
                    json={"volumeAttachment": {"volumeId": vid}},
                )

    threads = [threading.Thread(target=attach, args=(vids[n::racers],)) for n in range(racers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {vid: r.status_code for vid, r in answers.items()} == dict.fromkeys(vids, 200)
    devices = {vid: r.json()["volumeAttachment"]["device"] for vid, r in answers.items()}
    assert sorted(devices.values()) == [f"/dev/vd{c}" for c in "bcdefghijklm"]
    live.wait_settled()

    # Every attach the API accepted was carried out, as the device it answered.
    assert {vid: show(live, vid)["status"] for vid in vids} == dict.fromkeys(vids, "in-use")
    r = live.client.get(f"{live.compute}/servers/{sid}/os-volume_attachments")
    assert r.status_code == 200, r.text
    shown = {a["volumeId"]: a["device"] for a in r.json()["volumeAttachments"]}
    assert shown == devices
    remote = {v.uuid: v for b in sim_storage(live).list_volumes() for v in b}
    assert {vid: [(a.server_uuid, a.device) for a in remote[vid].attachments] for vid in vids} == {
        vid: [(sid, device)] for vid, device in devices.items()
    }


# --- 4. a project's gigabytes quota ----------------------------------------------------


PROJECT = "project-a"
QUOTA_GB = 100
QUOTA_SIZE_GB = 5
QUOTA_CREATES = 60


def test_creates_racing_for_a_gigabytes_quota_never_exceed_it(
    tmp_path: Path,
    backend: dict[str, Any] | None,
    live_broker_factory: Callable[[Settings], LiveBroker],
) -> None:
    settings = broker_settings(tmp_path, backend, volumes={"project_gigabytes": QUOTA_GB})
    live = live_broker_factory(settings)
    member = {"X-Auth-Token": live.token(member_of(PROJECT), PROJECT)}
    fits = QUOTA_GB // QUOTA_SIZE_GB
    answers = create_concurrently(
        live.url, PROJECT, QUOTA_CREATES, headers=member, size=QUOTA_SIZE_GB
    )
    assert Counter(a.status for a in answers) == {202: fits, 413: QUOTA_CREATES - fits}
    for a in answers:
        if a.status == 413:
            assert (a.body["status"], a.body["code"]) == (413, errors.PROJECT_OVER_QUOTA), a.body
            assert "VolumeSizeExceedsAvailableQuota" in a.body["message"], a.body
            assert f"of {QUOTA_GB}G used" in a.body["message"], a.body
    live.wait_settled()

    volumes = all_volumes(live)
    assert {vid for vid, v in volumes.items()} == {a.volume_id for a in answers if a.volume_id}
    assert {v["status"] for v in volumes.values()} == {"available"}
    assert sum(v["size"] for v in volumes.values()) == QUOTA_GB
    assert {v["os-vol-tenant-attr:tenant_id"] for v in volumes.values()} == {PROJECT}
    r = httpx.get(f"{live.url}/volume/v3/{PROJECT}/limits", headers=member, timeout=30)
    assert r.status_code == 200, r.text
    absolute = r.json()["limits"]["absolute"]
    assert (absolute["totalGigabytesUsed"], absolute["maxTotalVolumeGigabytes"]) == (
        QUOTA_GB, QUOTA_GB,
    )  # fmt: skip
    assert absolute["totalVolumesUsed"] == fits
    ledger = check_storage_ledger(live.broker.dbs.api)
    assert ledger.zone_gb == {LOCAL: QUOTA_GB}

    # Another project's quota is its own: the full project leaves it untouched.
    other = {"X-Auth-Token": live.token(member_of("project-b"), "project-b")}
    r = httpx.post(
        f"{live.url}/volume/v3/project-b/volumes",
        json={"volume": {"size": QUOTA_GB}},
        headers=other,
        timeout=30,
    )
    assert r.status_code == 202, r.text
