"""The openstack driver's block storage beyond the portable contract, against a real
child broker (its Keystone, Nova and Cinder v3 APIs on 127.0.0.1) through openstacksdk.

One child serves the module: a sim zone ``local`` whose two hosts share one volume pool
of 20 GB, a project quota of 50 GB and a multiattach volume type. Each test builds its own
driver with a broker id of its own, so that what one test leaves in the child is never
another test's volume. What the child holds is read back with its admin's own SDK
connection, never through the driver under test.
"""

from __future__ import annotations

import json
import uuid as uuidlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from keystoneauth1 import exceptions as ks
from openstack import exceptions as sdk

from drivers.openstack.blockstorage import CinderBlockStorage
from drivers.openstack.driver import OpenStackDriver
from drivers.openstack.errors import translate
from drivers.openstack.states import BUSY, CINDER_STATES, volume_state
from federator.blockstorage import (
    RemoteVolume,
    StorageCapabilities,
    VolumeNotFound,
    VolumeSpec,
    VolumeState,
)
from federator.config import ZoneConfig
from federator.driver import (
    AuthError,
    CapacityError,
    FlavorSpec,
    InstanceNotFound,
    InstanceSpec,
    PermanentError,
    TransientError,
)
from federator.plugins import load_driver
from tests.conftest import LiveBroker, make_settings, sim_zone, start_live_broker

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

PROJECT_GB = 50
POOL_GB = 20
MULTI = "multi"
TINY = FlavorSpec(name="m1.tiny", vcpus=1, ram_mb=512, disk_gb=1)
UUID_KEY, BROKER_KEY, PROJECT_KEY = (
    "federator:volume-uuid",
    "federator:broker-id",
    "federator:project",
)


@dataclass
class Child:
    live: LiveBroker
    admin: Any  # the child admin's own openstacksdk connection

    def volumes(self, **meta: str) -> list[Any]:
        """The child's volumes (of the admin project) whose metadata holds ``meta``."""
        return [
            v
            for v in self.admin.block_storage.volumes(details=True)
            if all((v.metadata or {}).get(k) == val for k, val in meta.items())
        ]

    def of(self, uuid: str) -> list[Any]:
        return self.volumes(**{UUID_KEY: uuid})


@pytest.fixture(scope="module")
def child(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Child]:
    tmp = tmp_path_factory.mktemp("child")
    settings = make_settings(
        tmp,
        zones=[
            sim_zone(
                "local",
                "local",
                hosts=2,
                host_ram_mb=16384,
                host_vcpus=16,
                volume_pools="zone",
                volume_pool_gb=POOL_GB,
            )
        ],
        policy={"version": "child-1", "zones": {}},
        volumes={
            "project_gigabytes": PROJECT_GB,
            "types": [
                {"name": "__DEFAULT__", "description": "Default Volume Type"},
                {"name": MULTI, "multiattach": True},
            ],
        },
        workers={"count": 4, "poll_interval": 0.02},
    )
    live, stop = start_live_broker(settings)
    admin = live.sdk()
    try:
        yield Child(live, admin)
    finally:
        admin.close()
        stop()


Make = Callable[..., OpenStackDriver]


@pytest.fixture
def make_driver(child: Child, tmp_path: Path) -> Iterator[Make]:
    """``make_driver(**options)``: an openstack zone signed in to the child as its admin,
    under a broker id of its own; what it made is deleted afterwards."""
    made: list[OpenStackDriver] = []
    kept: list[OpenStackDriver] = []

    def make(
        broker_id: str | None = None, *, clean: bool = True, **options: Any
    ) -> OpenStackDriver:
        opts = {
            "auth": {
                "auth_url": f"{child.live.url}/identity",
                "username": "admin",
                "password": child.live.admin_password,
                "project_name": "admin",
            },
            "wait_timeout": 30,
            "poll_interval": 0.02,
            **options,
        }
        zone = ZoneConfig(name="child", driver="openstack", kind="virtual", options=opts)
        n = len(made) + len(kept)
        driver = load_driver(zone, broker_id or f"b-{uuidlib.uuid4()}", tmp_path / f"zone{n}")
        assert isinstance(driver, OpenStackDriver)
        (made if clean else kept).append(driver)
        return driver

    yield make
    for driver in kept:
        driver.close()
    for driver in made:
        storage = driver.block_storage()
        if storage is not None:
            for volume in [v for batch in storage.list_volumes() for v in batch]:
                for attachment in volume.attachments:
                    storage.detach_volume(volume.uuid, attachment.server_uuid)
                storage.delete_volume(volume.uuid)
        for uuid in [i.uuid for batch in driver.list_instances() for i in batch]:
            driver.delete(uuid)
        driver.close()


def storage_of(driver: OpenStackDriver) -> CinderBlockStorage:
    storage = driver.block_storage()
    assert isinstance(storage, CinderBlockStorage)
    return storage


def spec(driver: OpenStackDriver, size_gb: int = 1, **kw: Any) -> VolumeSpec:
    return VolumeSpec(
        uuid=kw.pop("uuid", None) or str(uuidlib.uuid4()),
        name=kw.pop("name", "vol"),
        size_gb=size_gb,
        project_id="proj-1",
        broker_id=driver.context.broker_id,
        **kw,
    )


def server(driver: OpenStackDriver) -> str:
    made = driver.create(
        InstanceSpec(
            uuid=str(uuidlib.uuid4()),
            name="vm",
            flavor=TINY,
            image="cirros",
            project_id="proj-1",
            broker_id=driver.context.broker_id,
        )
    )
    return made.uuid


def available(storage: CinderBlockStorage, s: VolumeSpec) -> RemoteVolume:
    made = storage.create_volume(s)
    assert made.state is VolumeState.AVAILABLE, made
    return made


# --- the zone's storage ------------------------------------------------------------------


def test_one_storage_object_and_none_when_volumes_are_off(make_driver: Make) -> None:
    driver = make_driver()
    assert driver.block_storage() is driver.block_storage()
    assert make_driver(volumes=False).block_storage() is None


def test_one_shared_pool_named_after_the_remote_availability_zone(make_driver: Make) -> None:
    unbounded = storage_of(make_driver())
    [pool] = unbounded.pools()
    assert (pool.name, pool.host, pool.capacity_gb) == ("local", None, None)
    assert unbounded.storage_capabilities() == StorageCapabilities(shared=True, multiattach=False)
    bounded = storage_of(make_driver(volume_quota_gb=7, availability_zone="local"))
    [pool] = bounded.pools()
    assert (pool.name, pool.capacity_gb) == ("local", 7)


def test_a_multiattach_remote_type_makes_the_zone_multiattach(make_driver: Make) -> None:
    driver = make_driver(volume_type=MULTI)
    storage = storage_of(driver)
    assert not storage.storage_capabilities().multiattach  # not known before pools()
    storage.pools()
    assert storage.storage_capabilities().multiattach
    s = spec(driver, multiattach=True)
    assert available(storage, s).extra["multiattach"] is True
    first, second = server(driver), server(driver)
    storage.attach_volume(s.uuid, first, None)
    storage.attach_volume(s.uuid, second, None)
    attached = {a.server_uuid for a in storage.get_volume(s.uuid).attachments}
    assert attached == {first, second}
    storage.detach_volume(s.uuid, first)
    assert [a.server_uuid for a in storage.get_volume(s.uuid).attachments] == [second]


def test_multiattach_of_a_type_that_makes_none_is_refused(make_driver: Make, child: Child) -> None:
    driver = make_driver()
    storage = storage_of(driver)
    storage.pools()
    assert not storage.storage_capabilities().multiattach
    s = spec(driver, multiattach=True)
    with pytest.raises(PermanentError, match="multiattach"):
        storage.create_volume(s)
    assert child.of(s.uuid) == []
    made = storage_of(driver).create_volume(spec(driver, backend=MULTI, multiattach=True))
    assert made.extra["multiattach"] is True


# --- create, find, list ------------------------------------------------------------------


def test_create_is_idempotent_and_marks_the_remote_volume(make_driver: Make, child: Child) -> None:
    driver = make_driver()
    storage = storage_of(driver)
    s = spec(driver, size_gb=2, name="data", metadata={"purpose": "db", "federator:x": "no"})
    first = available(storage, s)
    second = storage.create_volume(s)
    assert first.remote_id == second.remote_id
    [remote] = child.of(s.uuid)
    assert remote.id == first.remote_id
    assert (remote.name, remote.size, remote.status) == ("data", 2, "available")
    assert remote.metadata == {
        UUID_KEY: s.uuid,
        BROKER_KEY: driver.context.broker_id,
        PROJECT_KEY: "proj-1",
        "purpose": "db",
    }
    got = storage.get_volume(s.uuid)
    assert (got.uuid, got.remote_id, got.size_gb, got.pool) == (s.uuid, remote.id, 2, "local")
    assert got.created_at is not None and got.created_at.tzinfo is not None


def test_create_without_waiting_reports_creating_then_available(make_driver: Make) -> None:
    driver = make_driver(wait_timeout=0)
    storage = storage_of(driver)
    s = spec(driver)
    assert storage.create_volume(s).state is VolumeState.CREATING
    deadline = driver.clock() + 30
    while storage.get_volume(s.uuid).state is VolumeState.CREATING:
        assert driver.clock() < deadline, "the child never made the volume"
        driver.sleep(0.02)
    assert storage.get_volume(s.uuid).state is VolumeState.AVAILABLE
    assert len(list(storage.list_volumes())) == 1


def test_list_yields_only_this_brokers_volumes(make_driver: Make, child: Child) -> None:
    mine, theirs = make_driver(), make_driver()
    ours = {storage_of(mine).create_volume(spec(mine)).uuid for _ in range(3)}
    other = storage_of(theirs).create_volume(spec(theirs)).uuid
    # A volume the broker did not make, and one claiming a uuid but not this broker.
    stray = child.admin.block_storage.create_volume(size=1, name="stray")
    forged = child.admin.block_storage.create_volume(
        size=1, metadata={UUID_KEY: str(uuidlib.uuid4()), BROKER_KEY: "someone-else"}
    )
    try:
        batches = list(storage_of(mine).list_volumes(batch_size=2))
        assert [len(b) for b in batches] == [2, 1]
        assert {v.uuid for b in batches for v in b} == ours
        assert [v.uuid for b in storage_of(theirs).list_volumes() for v in b] == [other]
        with pytest.raises(VolumeNotFound):
            storage_of(mine).get_volume(other)
    finally:
        for made in (stray, forged):
            child.admin.block_storage.wait_for_status(made, "available", wait=30)
            child.admin.block_storage.delete_volume(made)


def test_delete_waits_until_the_remote_volume_is_gone(make_driver: Make, child: Child) -> None:
    driver = make_driver()
    storage = storage_of(driver)
    s = spec(driver)
    available(storage, s)
    storage.delete_volume(s.uuid)
    assert child.of(s.uuid) == []
    with pytest.raises(VolumeNotFound):
        storage.get_volume(s.uuid)
    storage.delete_volume(s.uuid)


# --- attach and detach -------------------------------------------------------------------


def test_attach_and_detach_through_nova(make_driver: Make, child: Child) -> None:
    driver = make_driver()
    storage = storage_of(driver)
    s = spec(driver)
    volume = available(storage, s)
    vm = server(driver)
    remote_server = driver.get(vm).remote_id

    attached = storage.attach_volume(s.uuid, vm, "/dev/vdc")
    assert (attached.server_uuid, attached.device) == (vm, "/dev/vdc")
    [nova] = list(child.admin.compute.volume_attachments(remote_server))
    assert (nova.volume_id, nova.device) == (volume.remote_id, "/dev/vdc")
    got = storage.get_volume(s.uuid)
    assert got.state is VolumeState.IN_USE
    assert [(a.server_uuid, a.device) for a in got.attachments] == [(vm, "/dev/vdc")]
    assert storage.attach_volume(s.uuid, vm, None) == attached
    assert [v.attachments for b in storage.list_volumes() for v in b] == [got.attachments]

    storage.detach_volume(s.uuid, vm)
    assert list(child.admin.compute.volume_attachments(remote_server)) == []
    got = storage.get_volume(s.uuid)
    assert (got.state, got.attachments) == (VolumeState.AVAILABLE, ())
    storage.detach_volume(s.uuid, vm)


def test_the_remote_cloud_picks_the_device_when_none_is_asked(make_driver: Make) -> None:
    driver = make_driver()
    storage = storage_of(driver)
    s = spec(driver)
    available(storage, s)
    attached = storage.attach_volume(s.uuid, server(driver), None)
    assert attached.device == "/dev/vdb"  # the child's first free name after the root disk


def test_attach_errors(make_driver: Make, child: Child) -> None:
    driver = make_driver()
    storage = storage_of(driver)
    s = spec(driver)
    available(storage, s)
    with pytest.raises(InstanceNotFound):
        storage.attach_volume(s.uuid, str(uuidlib.uuid4()), None)
    with pytest.raises(VolumeNotFound):
        storage.attach_volume(str(uuidlib.uuid4()), server(driver), None)
    first, second = server(driver), server(driver)
    storage.attach_volume(s.uuid, first, None)
    with pytest.raises(PermanentError, match=f"attached to {first}"):
        storage.attach_volume(s.uuid, second, None)
    assert [a.server_uuid for a in storage.get_volume(s.uuid).attachments] == [first]
    with pytest.raises(PermanentError, match="attached"):
        storage.delete_volume(s.uuid)
    [remote] = child.of(s.uuid)
    assert remote.status == "in-use"


def test_a_device_the_remote_cloud_refuses_is_permanent(make_driver: Make) -> None:
    driver = make_driver()
    storage = storage_of(driver)
    s, t = spec(driver), spec(driver)
    available(storage, s)
    available(storage, t)
    vm = server(driver)
    storage.attach_volume(s.uuid, vm, "/dev/vdd")
    with pytest.raises(PermanentError, match="in use"):
        storage.attach_volume(t.uuid, vm, "/dev/vdd")
    with pytest.raises(PermanentError, match="device path"):
        storage.attach_volume(t.uuid, vm, "floppy")
    assert storage.get_volume(t.uuid).attachments == ()


# --- what the remote cloud refuses --------------------------------------------------------


def test_a_volume_over_volume_quota_gb_is_refused_and_nothing_is_made(
    make_driver: Make, child: Child
) -> None:
    driver = make_driver(volume_quota_gb=3)
    storage = storage_of(driver)
    available(storage, spec(driver, size_gb=2))
    big = spec(driver, size_gb=2)
    with pytest.raises(CapacityError, match="2 of 3 GB"):
        storage.create_volume(big)
    assert child.of(big.uuid) == []


def test_the_remote_project_quota_is_capacity(make_driver: Make, child: Child) -> None:
    driver = make_driver()
    s = spec(driver, size_gb=PROJECT_GB + 1)
    with pytest.raises(CapacityError, match="quota"):
        storage_of(driver).create_volume(s)
    assert child.of(s.uuid) == []


def test_a_volume_the_remote_cloud_cannot_place_is_capacity_and_removed(
    make_driver: Make, child: Child
) -> None:
    driver = make_driver()
    s = spec(driver, size_gb=POOL_GB + 1)  # within the project quota, not in the pool
    with pytest.raises(CapacityError, match="could not create"):
        storage_of(driver).create_volume(s)
    assert child.of(s.uuid) == []


def test_an_unknown_remote_volume_type_is_permanent(make_driver: Make, child: Child) -> None:
    driver = make_driver()
    s = spec(driver, backend="no-such-type")
    with pytest.raises(PermanentError, match="no-such-type"):
        storage_of(driver).create_volume(s)
    assert child.of(s.uuid) == []


def test_bad_credentials_are_an_auth_error(make_driver: Make, child: Child) -> None:
    driver = make_driver(
        clean=False,
        auth={
            "auth_url": f"{child.live.url}/identity",
            "username": "admin",
            "password": "wrong-password-xyz",
            "project_name": "admin",
        },
    )
    with pytest.raises(AuthError) as caught:
        storage_of(driver).get_volume(str(uuidlib.uuid4()))
    assert "wrong-password-xyz" not in str(caught.value)


# --- the child's Cinder API: the metadata filter the driver relies on ---------------------


def check_metadata_filter(live: LiveBroker, admin: Any) -> None:
    """``GET /volumes/detail?metadata=...`` keeps the volumes holding every pair given."""
    tag = str(uuidlib.uuid4())
    one = admin.block_storage.create_volume(size=1, metadata={"t": tag, "n": "1"})
    two = admin.block_storage.create_volume(size=1, metadata={"t": tag, "n": "2"})
    base = f"{live.url}/volume/v3/admin/volumes/detail"
    try:

        def ids(query: str) -> set[str]:
            r = live.client.get(base, params={"metadata": query})
            assert r.status_code == 200, r.text
            return {v["id"] for v in r.json()["volumes"]}

        assert ids(json.dumps({"t": tag})) == {one.id, two.id}
        assert ids(str({"t": tag, "n": "2"})) == {two.id}  # Python's literal, as Cinder reads
        assert ids(str({"t": tag, "n": 2})) == {two.id}  # a number compares as its text
        assert ids(json.dumps({"t": tag, "federator:volume-uuid": "x"})) == set()
        assert ids(json.dumps({"t": "other"})) == set()
        for bad in ("not a dict", "['t']", "{'t': ['x']}"):
            r = live.client.get(base, params={"metadata": bad})
            assert r.status_code == 400, r.text
        # The next link keeps the filter, encoded, so paging stays filtered.
        r = live.client.get(base, params={"metadata": json.dumps({"t": tag}), "limit": 1})
        [link] = r.json()["volumes_links"]
        r = live.client.get(link["href"])
        assert r.status_code == 200, r.text
        assert len(r.json()["volumes"]) == 1
        assert {v["id"] for v in r.json()["volumes"]} <= {one.id, two.id}
    finally:
        for made in (one, two):
            admin.block_storage.wait_for_status(made, "available", wait=30)
            admin.block_storage.delete_volume(made)


def test_the_child_filters_volume_lists_on_metadata(child: Child) -> None:
    check_metadata_filter(child.live, child.admin)


@pytest.mark.postgres
def test_the_metadata_filter_on_postgresql(
    tmp_path: Path, pg_database_factory: Callable[[], str]
) -> None:
    database = {
        "api_url": pg_database_factory(),
        "cell0_url": pg_database_factory(),
        "cells": {"cell1": pg_database_factory()},
    }
    settings = make_settings(
        tmp_path,
        zones=[sim_zone("local", "local", hosts=1, volume_pools="zone")],
        policy={"version": "pg-1", "zones": {}},
        database=database,
    )
    live, stop = start_live_broker(settings)
    admin = live.sdk()
    try:
        check_metadata_filter(live, admin)
    finally:
        admin.close()
        stop()


# --- data: statuses and errors -------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "attached", "state"),
    [
        ("creating", False, VolumeState.CREATING),
        ("available", False, VolumeState.AVAILABLE),
        ("in-use", True, VolumeState.IN_USE),
        ("attaching", False, VolumeState.AVAILABLE),
        ("reserved", False, VolumeState.AVAILABLE),
        ("attaching", True, VolumeState.IN_USE),  # a second server of a multiattach volume
        ("detaching", True, VolumeState.IN_USE),
        ("detaching", False, VolumeState.AVAILABLE),
        ("extending", True, VolumeState.IN_USE),
        ("deleting", False, VolumeState.DELETED),
        ("error", False, VolumeState.ERROR),
        ("error_deleting", False, VolumeState.ERROR),
        ("IN-USE", True, VolumeState.IN_USE),
        ("something-new", False, VolumeState.ERROR),
        (None, False, VolumeState.ERROR),
    ],
)
def test_cinder_statuses(status: str | None, attached: bool, state: VolumeState) -> None:
    assert volume_state(status, attached) is state


def test_no_status_is_both_settled_and_busy() -> None:
    assert not set(CINDER_STATES) & BUSY


def _http(status: int, message: str) -> sdk.HttpException:
    return sdk.HttpException(message=message, details=message, http_status=status)


@pytest.mark.parametrize(
    ("exc", "about", "kind"),
    [
        (_http(413, "VolumeSizeExceedsAvailableQuota: requested 9G"), "volume", CapacityError),
        (_http(413, "Request Entity Too Large"), "volume", CapacityError),
        (_http(413, "Request Entity Too Large"), "instance", PermanentError),
        (_http(403, "Policy doesn't allow volume:create"), "volume", AuthError),
        (_http(403, "Quota exceeded for gigabytes"), "volume", CapacityError),
        (_http(404, "Volume v-1 could not be found."), "volume", VolumeNotFound),
        (_http(404, "Volume v-1 could not be found."), "attachment", VolumeNotFound),
        (_http(404, "Instance s-1 could not be found."), "attachment", InstanceNotFound),
        (_http(400, "Invalid volume: volume v-1 is in-use"), "volume", PermanentError),
        (
            _http(409, "The supplied device path (/dev/vdb) is in use."),
            "attachment",
            PermanentError,
        ),
        (_http(503, "unavailable"), "volume", TransientError),
        (ks.ConnectFailure("refused"), "volume", TransientError),
        (_http(401, "token gAAAAsecret expired"), "volume", AuthError),
    ],
)
def test_volume_errors_translate_into_the_taxonomy(exc: Exception, about: Any, kind: type) -> None:
    err = translate("child-1", exc, uuid="u-1", about=about)
    assert type(err) is kind
    assert err.zone == "child-1"
    assert "gAAAA" not in err.message and "Policy" not in err.message
