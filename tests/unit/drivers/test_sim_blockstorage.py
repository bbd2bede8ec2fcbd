"""Behaviour of the sim driver's volumes beyond the portable block-storage contract."""

from __future__ import annotations

import uuid as uuidlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from drivers.sim.blockstorage import SimBlockStorage
from drivers.sim.driver import SimDriver
from federator.blockstorage import VolumeNotFound, VolumeSpec, VolumeState
from federator.driver import CapacityError, PermanentError, TransientError
from tests.unit.drivers.test_sim import BROKER, make_driver, spec


def storage(driver: SimDriver) -> SimBlockStorage:
    found = driver.block_storage()
    assert found is not None
    return found


def vspec(size_gb: int = 10, pool: str | None = None, uuid: str | None = None) -> VolumeSpec:
    return VolumeSpec(
        uuid=uuid or str(uuidlib.uuid4()),
        name="v",
        size_gb=size_gb,
        project_id="p1",
        broker_id=BROKER,
        pool=pool,
    )


@pytest.fixture
def driver(tmp_path: Path) -> SimDriver:
    return make_driver(tmp_path, hosts=2, volume_pool_gb=100)


def test_host_pools_one_per_host_and_a_zone_pool_otherwise(tmp_path: Path) -> None:
    hosts = make_driver(tmp_path / "a", hosts=3, volume_pool_gb=50)
    pools = storage(hosts).pools()
    assert [(p.name, p.host, p.capacity_gb) for p in pools] == [
        (f"z1-host-00{i}/volumes", f"z1-host-00{i}", 50) for i in (1, 2, 3)
    ]
    assert storage(hosts).storage_capabilities().shared is False

    opaque = make_driver(tmp_path / "b", expose_hosts=False, volume_pool_gb=70)
    assert [(p.name, p.host, p.capacity_gb) for p in storage(opaque).pools()] == [("z1", None, 70)]
    assert storage(opaque).storage_capabilities().shared is True

    zone_pool = make_driver(tmp_path / "c", volume_pools="zone")
    assert [p.host for p in storage(zone_pool).pools()] == [None]


def test_volumes_option_off_means_no_block_storage(tmp_path: Path) -> None:
    assert make_driver(tmp_path, volumes=False).block_storage() is None


def test_added_hosts_get_pools(driver: SimDriver) -> None:
    (added,) = driver.ex_add_hosts(1)
    assert f"{added}/volumes" in [p.name for p in storage(driver).pools()]


def test_the_pool_capacity_is_enforced_by_the_sim_itself(driver: SimDriver) -> None:
    bs = storage(driver)
    pool = bs.pools()[0].name
    made = [bs.create_volume(vspec(30, pool)) for _ in range(3)]
    with pytest.raises(CapacityError, match="10 GB free of 100"):
        bs.create_volume(vspec(20, pool))
    assert bs.pools()[0].extra == {"used_gb": 90, "volumes": 3}
    assert len([v for b in bs.list_volumes() for v in b]) == len(made)


def test_concurrent_creates_never_over_fill_a_pool(driver: SimDriver) -> None:
    bs = storage(driver)
    pool = bs.pools()[0].name

    def create(_: int) -> bool:
        try:
            bs.create_volume(vspec(10, pool))
        except CapacityError:
            return False
        return True

    with ThreadPoolExecutor(16) as ex:
        results = list(ex.map(create, range(40)))
    assert results.count(True) == 10
    assert bs.pools()[0].extra["used_gb"] == 100


def test_no_pool_given_picks_the_emptiest(driver: SimDriver) -> None:
    bs = storage(driver)
    first, second = (p.name for p in bs.pools())
    bs.create_volume(vspec(40, first))
    assert bs.create_volume(vspec(10)).pool == second


def test_unknown_pool_and_bad_device_are_permanent(driver: SimDriver) -> None:
    bs = storage(driver)
    with pytest.raises(PermanentError, match="unknown pool"):
        bs.create_volume(vspec(1, "elsewhere"))
    host = driver.list_hosts()[0].name
    vol = bs.create_volume(vspec(1, f"{host}/volumes"))
    server = driver.create(spec(0, host=host)).uuid
    with pytest.raises(PermanentError, match="not a data disk"):
        bs.attach_volume(vol.uuid, server, "/dev/vda")
    with pytest.raises(PermanentError, match="not a data disk"):
        bs.attach_volume(vol.uuid, server, "c:")


def test_devices_are_allocated_in_order_and_a_taken_one_is_refused(driver: SimDriver) -> None:
    bs = storage(driver)
    host = driver.list_hosts()[0].name
    server = driver.create(spec(0, host=host)).uuid
    vols = [bs.create_volume(vspec(1, f"{host}/volumes")).uuid for _ in range(3)]
    assert bs.attach_volume(vols[0], server, None).device == "/dev/vdb"
    assert bs.attach_volume(vols[1], server, "/dev/sdd").device == "/dev/vdd"
    assert bs.attach_volume(vols[2], server, None).device == "/dev/vdc"
    extra = bs.create_volume(vspec(1, f"{host}/volumes")).uuid
    with pytest.raises(PermanentError, match="already in use"):
        bs.attach_volume(extra, server, "/dev/vdc")


def test_deleting_the_server_detaches_its_volumes(driver: SimDriver) -> None:
    bs = storage(driver)
    host = driver.list_hosts()[0].name
    server = driver.create(spec(0, host=host)).uuid
    vol = bs.create_volume(vspec(1, f"{host}/volumes")).uuid
    bs.attach_volume(vol, server, None)
    assert bs.get_volume(vol).state == VolumeState.IN_USE
    driver.delete(server)
    after = bs.get_volume(vol)
    assert (after.state, after.attachments) == (VolumeState.AVAILABLE, ())


def test_migrate_refuses_a_server_pinned_by_host_local_volumes(driver: SimDriver) -> None:
    bs = storage(driver)
    first, second = (h.name for h in driver.list_hosts())
    server = driver.create(spec(0, host=first)).uuid
    vol = bs.create_volume(vspec(1, f"{first}/volumes")).uuid
    bs.attach_volume(vol, server, None)
    with pytest.raises(PermanentError, match="host-local volumes"):
        driver.migrate(server, second)
    assert driver.get(server).host == first
    bs.detach_volume(vol, server)
    assert driver.migrate(server, second).host == second


def test_shared_host_pools_attach_across_hosts(tmp_path: Path) -> None:
    driver = make_driver(tmp_path, hosts=2, volume_shared=True)
    bs = storage(driver)
    first, second = (h.name for h in driver.list_hosts())
    vol = bs.create_volume(vspec(1, f"{first}/volumes")).uuid
    server = driver.create(spec(0, host=second)).uuid
    assert bs.attach_volume(vol, server, None).server_uuid == server


@pytest.mark.parametrize(
    ("kind", "error"), [("capacity", CapacityError), ("transient", TransientError)]
)
def test_injected_failures_leave_nothing(
    driver: SimDriver, kind: Any, error: type[Exception]
) -> None:
    bs = storage(driver)
    bs.ex_inject(kind)
    failed = vspec(1)
    with pytest.raises(error):
        bs.create_volume(failed)
    with pytest.raises(VolumeNotFound):
        bs.get_volume(failed.uuid)
    assert bs.create_volume(failed).uuid == failed.uuid  # the next attempt is not injected


def test_vanish_and_untracked_helpers(driver: SimDriver) -> None:
    bs = storage(driver)
    vol = bs.create_volume(vspec(1)).uuid
    assert bs.ex_vanish(vol) is True
    with pytest.raises(VolumeNotFound):
        bs.get_volume(vol)
    orphan = bs.ex_add_untracked(2)
    assert [v.uuid for b in bs.list_volumes() for v in b] == [orphan]


def test_volumes_survive_a_restart(tmp_path: Path) -> None:
    first = make_driver(tmp_path, hosts=2)
    host = first.list_hosts()[0].name
    server = first.create(spec(0, host=host)).uuid
    vol = storage(first).create_volume(vspec(5, f"{host}/volumes")).uuid
    storage(first).attach_volume(vol, server, "/dev/vdc")
    first.close()
    again = storage(make_driver(tmp_path, hosts=2)).get_volume(vol)
    assert (again.size_gb, again.state, again.attachments[0].device) == (
        5,
        VolumeState.IN_USE,
        "/dev/vdc",
    )


def test_other_brokers_volumes_are_not_listed(driver: SimDriver) -> None:
    bs = storage(driver)
    mine = bs.create_volume(vspec(1)).uuid
    theirs = VolumeSpec(
        uuid=str(uuidlib.uuid4()), name="x", size_gb=1, project_id="p", broker_id="another-broker"
    )
    bs.create_volume(theirs)
    assert [v.uuid for b in bs.list_volumes() for v in b] == [mine]
