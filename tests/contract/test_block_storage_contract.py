"""The block-storage contract (:mod:`federator.blockstorage`), checked against every
driver of ``conftest.FACTORIES``.

A driver without block storage (``block_storage()`` is None) owes nothing more; the
tests then check only that, so a compute-only plugin runs no skipped test. Volumes are
polled to ``available`` with :func:`settled`, since a cloud may report ``creating``
first (EBS does); the poll is bounded by a deadline, not a sleep that hides a race.
"""

from __future__ import annotations

import time
import uuid as uuidlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest

from federator.blockstorage import (
    BlockStorage,
    RemoteVolume,
    VolumeNotFound,
    VolumeSpec,
    VolumeState,
)
from federator.driver import CapacityError, Driver, InstanceNotFound, PermanentError
from tests.contract.test_driver_contract import make_spec

SETTLE_SECONDS = 30.0


def storage_of(driver: Driver) -> BlockStorage | None:
    storage = driver.block_storage()
    assert storage is None or isinstance(storage, BlockStorage)
    assert driver.block_storage() is storage, "block_storage() must return one object"
    return storage


def volume_spec(
    driver: Driver, storage: BlockStorage, n: int = 0, size_gb: int = 1, uuid: str | None = None
) -> VolumeSpec:
    """A small volume in one of the zone's pools (spread by ``n``), as the broker asks."""
    pools = storage.pools()
    return VolumeSpec(
        uuid=uuid or str(uuidlib.uuid4()),
        name=f"contract-vol-{n}",
        size_gb=size_gb,
        project_id="contract-project",
        broker_id=driver.context.broker_id,
        pool=pools[n % len(pools)].name,
    )


def settled(storage: BlockStorage, uuid: str, *, want: VolumeState) -> RemoteVolume:
    """Poll ``get_volume`` until the volume is in ``want`` (bounded by a deadline)."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        volume = storage.get_volume(uuid)
        if volume.state == want or time.monotonic() > deadline:
            assert volume.state == want, f"volume {uuid} is {volume.state}, not {want}"
            return volume
        time.sleep(0.05)


def listed(storage: BlockStorage, batch_size: int = 500) -> list[RemoteVolume]:
    return [v for batch in storage.list_volumes(batch_size) for v in batch]


def require_storage(driver: Driver) -> BlockStorage | None:
    """The driver's block storage; None (after checking the zone says so consistently)
    when it has none: the calling test then ends there."""
    return storage_of(driver)


# --- pools ------------------------------------------------------------------------------


def test_pools_are_listed_and_match_the_hosts(driver: Driver) -> None:
    storage = require_storage(driver)
    if storage is None:
        return
    pools = storage.pools()
    assert pools, "a zone with block storage has at least one pool"
    assert len({p.name for p in pools}) == len(pools)
    for pool in pools:
        assert pool.capacity_gb is None or pool.capacity_gb > 0
    hosts = {h.name for h in driver.list_hosts()}
    for pool in pools:
        if pool.host is not None:
            assert pool.host in hosts, f"pool {pool.name} names unknown host {pool.host}"


# --- create, get, list, delete ------------------------------------------------------------


def test_create_returns_the_volume_and_get_finds_it(driver: Driver) -> None:
    storage = require_storage(driver)
    if storage is None:
        return
    spec = volume_spec(driver, storage, size_gb=2)
    made = storage.create_volume(spec)
    assert made.uuid == spec.uuid
    assert made.size_gb == 2
    assert made.remote_id
    assert made.state in (VolumeState.CREATING, VolumeState.AVAILABLE)
    got = settled(storage, spec.uuid, want=VolumeState.AVAILABLE)
    assert (got.uuid, got.remote_id, got.size_gb) == (spec.uuid, made.remote_id, 2)
    assert got.attachments == ()
    assert [v.uuid for v in listed(storage)] == [spec.uuid]


def test_create_twice_makes_one_volume(driver: Driver) -> None:
    storage = require_storage(driver)
    if storage is None:
        return
    spec = volume_spec(driver, storage)
    first = storage.create_volume(spec)
    second = storage.create_volume(spec)
    assert first.remote_id == second.remote_id
    assert [v.remote_id for v in listed(storage)] == [first.remote_id]


def test_concurrent_creates_of_one_uuid_make_one_volume(driver: Driver) -> None:
    storage = require_storage(driver)
    if storage is None:
        return
    spec = volume_spec(driver, storage)
    with ThreadPoolExecutor(6) as pool:
        made = list(pool.map(lambda _: storage.create_volume(spec), range(6)))
    assert len({v.remote_id for v in made}) == 1
    assert len(listed(storage)) == 1


@pytest.mark.parametrize("batch_size", [1, 2, 500])
def test_list_batches_hold_every_volume_exactly_once(driver: Driver, batch_size: int) -> None:
    storage = require_storage(driver)
    if storage is None:
        return
    uuids = {storage.create_volume(volume_spec(driver, storage, n)).uuid for n in range(3)}
    batches = list(storage.list_volumes(batch_size))
    assert all(0 < len(b) <= batch_size for b in batches)
    seen = [v.uuid for b in batches for v in b]
    assert sorted(seen) == sorted(uuids)


def test_delete_removes_it_and_twice_or_unknown_succeeds(driver: Driver) -> None:
    storage = require_storage(driver)
    if storage is None:
        return
    spec = volume_spec(driver, storage)
    storage.create_volume(spec)
    settled(storage, spec.uuid, want=VolumeState.AVAILABLE)
    storage.delete_volume(spec.uuid)
    with pytest.raises(VolumeNotFound) as caught:
        storage.get_volume(spec.uuid)
    assert caught.value.zone == driver.zone
    assert listed(storage) == []
    storage.delete_volume(spec.uuid)
    storage.delete_volume(str(uuidlib.uuid4()))


def test_unknown_volume_raises_not_found(driver: Driver) -> None:
    storage = require_storage(driver)
    if storage is None:
        return
    unknown = str(uuidlib.uuid4())
    with pytest.raises(VolumeNotFound):
        storage.get_volume(unknown)
    server = driver.create(make_spec(driver))
    with pytest.raises(VolumeNotFound):
        storage.attach_volume(unknown, server.uuid, None)
    with pytest.raises(VolumeNotFound):
        storage.detach_volume(unknown, server.uuid)


def test_a_volume_larger_than_its_pool_is_refused_and_nothing_is_left(driver: Driver) -> None:
    storage = require_storage(driver)
    if storage is None:
        return
    bounded = [p for p in storage.pools() if p.capacity_gb is not None]
    if not bounded:  # a cloud that reports no bound refuses nothing here
        return
    pool = bounded[0]
    assert pool.capacity_gb is not None
    spec = VolumeSpec(
        uuid=str(uuidlib.uuid4()),
        name="too-big",
        size_gb=pool.capacity_gb + 1,
        project_id="contract-project",
        broker_id=driver.context.broker_id,
        pool=pool.name,
    )
    with pytest.raises(CapacityError):
        storage.create_volume(spec)
    assert listed(storage) == []


# --- attach and detach ------------------------------------------------------------------


def _server_on_pool_host(driver: Driver, storage: BlockStorage, spec: VolumeSpec) -> str:
    """A server the volume of ``spec`` may attach to (on its pool's host when the storage
    is host-local)."""
    server = make_spec(driver)
    pool = next(p for p in storage.pools() if p.name == spec.pool)
    if pool.host is not None and not storage.storage_capabilities().shared:
        server = replace(server, host=pool.host)
    return driver.create(server).uuid


def test_attach_detach_round_trip(driver: Driver) -> None:
    storage = require_storage(driver)
    if storage is None:
        return
    spec = volume_spec(driver, storage)
    storage.create_volume(spec)
    settled(storage, spec.uuid, want=VolumeState.AVAILABLE)
    server = _server_on_pool_host(driver, storage, spec)

    attached = storage.attach_volume(spec.uuid, server, None)
    assert attached.server_uuid == server
    assert attached.device, "the driver names the device it used"
    volume = settled(storage, spec.uuid, want=VolumeState.IN_USE)
    assert [a.server_uuid for a in volume.attachments] == [server]
    again = storage.attach_volume(spec.uuid, server, None)
    assert again.device == attached.device
    assert len(storage.get_volume(spec.uuid).attachments) == 1

    with pytest.raises(PermanentError):
        storage.delete_volume(spec.uuid)
    assert storage.get_volume(spec.uuid).state == VolumeState.IN_USE

    storage.detach_volume(spec.uuid, server)
    volume = settled(storage, spec.uuid, want=VolumeState.AVAILABLE)
    assert volume.attachments == ()
    storage.detach_volume(spec.uuid, server)
    storage.delete_volume(spec.uuid)
    with pytest.raises(VolumeNotFound):
        storage.get_volume(spec.uuid)


def test_attach_names_the_device_asked_for(driver: Driver) -> None:
    storage = require_storage(driver)
    if storage is None:
        return
    spec = volume_spec(driver, storage)
    storage.create_volume(spec)
    settled(storage, spec.uuid, want=VolumeState.AVAILABLE)
    server = _server_on_pool_host(driver, storage, spec)
    attached = storage.attach_volume(spec.uuid, server, "/dev/vdc")
    assert attached.device is not None and attached.device.endswith("dc")
    storage.detach_volume(spec.uuid, server)


def test_a_volume_in_use_is_refused_to_a_second_server(driver: Driver) -> None:
    storage = require_storage(driver)
    if storage is None:
        return
    spec = volume_spec(driver, storage)
    storage.create_volume(spec)
    settled(storage, spec.uuid, want=VolumeState.AVAILABLE)
    first = _server_on_pool_host(driver, storage, spec)
    second = _server_on_pool_host(driver, storage, spec)
    storage.attach_volume(spec.uuid, first, None)
    settled(storage, spec.uuid, want=VolumeState.IN_USE)
    with pytest.raises(PermanentError):
        storage.attach_volume(spec.uuid, second, None)
    assert [a.server_uuid for a in storage.get_volume(spec.uuid).attachments] == [first]
    storage.detach_volume(spec.uuid, first)


def test_attach_to_an_unknown_server_raises_not_found(driver: Driver) -> None:
    storage = require_storage(driver)
    if storage is None:
        return
    spec = volume_spec(driver, storage)
    storage.create_volume(spec)
    settled(storage, spec.uuid, want=VolumeState.AVAILABLE)
    with pytest.raises(InstanceNotFound):
        storage.attach_volume(spec.uuid, str(uuidlib.uuid4()), None)
    assert storage.get_volume(spec.uuid).attachments == ()


def test_host_local_storage_refuses_a_server_on_another_host(driver: Driver) -> None:
    storage = require_storage(driver)
    if storage is None:
        return
    if storage.storage_capabilities().shared or not driver.capabilities().host_scheduling:
        return  # any server of the zone may attach any of its volumes
    hosts = [h.name for h in driver.list_hosts()]
    pools = [p for p in storage.pools() if p.host is not None]
    if len(hosts) < 2 or not pools:
        return
    pool = pools[0]
    spec = VolumeSpec(
        uuid=str(uuidlib.uuid4()),
        name="local",
        size_gb=1,
        project_id="contract-project",
        broker_id=driver.context.broker_id,
        pool=pool.name,
    )
    storage.create_volume(spec)
    settled(storage, spec.uuid, want=VolumeState.AVAILABLE)
    other = next(h for h in hosts if h != pool.host)
    server = driver.create(replace(make_spec(driver), host=other))
    with pytest.raises(PermanentError):
        storage.attach_volume(spec.uuid, server.uuid, None)
    assert storage.get_volume(spec.uuid).attachments == ()
