"""The libvirt driver's block storage beyond the portable contract, on simulated hosts.

Every check reads the result back from libvirt's test driver on the host concerned
(``ex_connection(host)``): the pool volume in that host's pool, the disk in that
domain's XML. A "real" host is a test-driver connection opened for a ``qemu+ssh`` URI,
so the driver treats it as an operator's hypervisor (no pool defined for it, capacity
from libvirt).
"""

from __future__ import annotations

import threading
import uuid as uuidlib
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from federator.blockstorage import RemoteAttachment, VolumeNotFound, VolumeSpec, VolumeState
from federator.driver import (
    CapacityError,
    InstanceNotFound,
    PermanentError,
    TransientError,
    ZoneContext,
)
from tests.conftest import STRICT
from tests.support_libvirt import HostSize, libvirt, write_hosts

if libvirt is None and not STRICT:  # strict runs fail on the imports below instead
    pytest.skip("needs libvirt-python", allow_module_level=True)

from drivers.libvirt.blockstorage import (
    GIB,
    LibvirtBlockStorage,
    owner_tag,
    target_device,
    volume_name,
)
from drivers.libvirt.domainxml import (
    data_disk_xml,
    domain_disks,
    volume_created_at,
    with_device,
    without_disk,
)
from drivers.libvirt.driver import LibvirtDriver
from drivers.libvirt.options import LibvirtOptions
from tests.unit.drivers.libvirt.conftest import (
    BROKER,
    ZONE,
    ConnectionProxy,
    define_by_hand,
    make_spec,
)

if TYPE_CHECKING:
    MakeDriver = Callable[..., LibvirtDriver]

POOL = "federator-volumes"
HOSTS = (HostSize(4, 8), HostSize(8, 16), HostSize(16, 32))


@pytest.fixture
def host_uris(tmp_path: Path) -> dict[str, str]:
    return write_hosts(tmp_path / "hosts", HOSTS)


@pytest.fixture
def make_driver(tmp_path: Path, host_uris: dict[str, str]) -> Iterator[MakeDriver]:
    """Drivers on host1..host3 (or ``hosts=``), closed after the test. ``opener``
    replaces ``libvirt.open``."""
    made: list[LibvirtDriver] = []

    def make(*, opener: Callable[[str], Any] | None = None, **options: Any) -> LibvirtDriver:
        options.setdefault("hosts", host_uris)
        options.setdefault("stop_timeout", 0)
        context = ZoneContext(
            zone=ZONE, broker_id=BROKER, options=LibvirtOptions(**options), data_dir=tmp_path
        )
        driver = LibvirtDriver(context, opener=opener or libvirt.open)
        made.append(driver)
        return driver

    yield make
    for driver in made:
        driver.close()


def storage_of(driver: LibvirtDriver) -> LibvirtBlockStorage:
    storage = driver.block_storage()
    assert isinstance(storage, LibvirtBlockStorage)
    return storage


def spec_on(host: str, size_gb: int = 1, **extra: Any) -> VolumeSpec:
    return VolumeSpec(
        uuid=extra.pop("uuid", None) or str(uuidlib.uuid4()),
        name="data",
        size_gb=size_gb,
        project_id="p1",
        broker_id=BROKER,
        pool=f"{host}/{POOL}",
        **extra,
    )


def pool_volumes(driver: LibvirtDriver, host: str) -> dict[str, int]:
    """name -> capacity (bytes) of every volume in ``host``'s pool, as libvirt has them."""
    pool = driver.ex_connection(host).storagePoolLookupByName(POOL)
    return {str(v.name()): int(v.info()[1]) for v in pool.listAllVolumes(0)}


def disks_of(driver: LibvirtDriver, host: str, server: str) -> dict[str, ET.Element]:
    """target dev -> <disk> of the server's persistent definition, read from libvirt."""
    dom = driver.ex_connection(host).lookupByUUIDString(server)
    root = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    found = {}
    for disk in root.iterfind("devices/disk"):
        target = disk.find("target")
        assert target is not None
        found[target.get("dev", "")] = disk
    return found


def our_name(uuid: str) -> str:
    return volume_name(owner_tag(BROKER, ZONE), uuid)


# --- pools and volumes --------------------------------------------------------------------


def test_each_host_gets_its_own_pool_of_the_configured_size(make_driver: MakeDriver) -> None:
    driver = make_driver(volume_pool_gb=50)
    with pytest.raises(libvirt.libvirtError):  # the host files define no such pool
        driver.ex_connection("host1").storagePoolLookupByName(POOL)
    storage = storage_of(driver)
    assert storage.storage_capabilities().shared is False
    pools = storage.pools()
    assert [(p.name, p.host, p.capacity_gb) for p in pools] == [
        (f"host{n}/{POOL}", f"host{n}", 50) for n in (1, 2, 3)
    ]
    for host in ("host1", "host2", "host3"):
        assert driver.ex_connection(host).storagePoolLookupByName(POOL).isActive()
    assert driver.block_storage() is storage


def test_no_volume_pool_means_no_block_storage(make_driver: MakeDriver) -> None:
    assert make_driver(volume_pool=None).block_storage() is None


def test_a_volume_is_made_in_the_pool_of_its_host_only(make_driver: MakeDriver) -> None:
    driver = make_driver()
    storage = storage_of(driver)
    spec = spec_on("host2", size_gb=3)
    made = storage.create_volume(spec)
    assert pool_volumes(driver, "host2") == {our_name(spec.uuid): 3 * GIB}
    assert pool_volumes(driver, "host1") == pool_volumes(driver, "host3") == {}
    assert (made.pool, made.size_gb, made.state) == (f"host2/{POOL}", 3, VolumeState.AVAILABLE)
    assert made.remote_id == f"host2/{POOL}/{our_name(spec.uuid)}"
    assert made.extra["host"] == "host2"
    assert made.extra["path"] == f"/{POOL}/{our_name(spec.uuid)}"
    again = storage.create_volume(spec_on("host1", uuid=spec.uuid))  # a retry elsewhere
    assert again.remote_id == made.remote_id
    assert pool_volumes(driver, "host1") == {}


def test_the_backend_chooses_the_format(make_driver: MakeDriver) -> None:
    driver = make_driver()
    storage = storage_of(driver)
    qcow = storage.create_volume(spec_on("host1", backend="qcow2"))
    assert qcow.extra["format"] == "qcow2"
    with pytest.raises(PermanentError, match="unknown backend"):
        storage.create_volume(spec_on("host1", backend="gp3"))
    with pytest.raises(PermanentError, match="unknown pool"):
        storage.create_volume(spec_on("host9"))
    assert list(pool_volumes(driver, "host1")) == [our_name(qcow.uuid)]


def test_a_full_pool_refuses_and_leaves_nothing(make_driver: MakeDriver) -> None:
    driver = make_driver(volume_pool_gb=5)
    storage = storage_of(driver)
    first = storage.create_volume(spec_on("host1", size_gb=3))
    with pytest.raises(CapacityError, match="2 of 5 GiB free"):
        storage.create_volume(spec_on("host1", size_gb=3))
    assert list(pool_volumes(driver, "host1")) == [our_name(first.uuid)]
    storage.create_volume(spec_on("host1", size_gb=2))  # exactly full
    assert sum(pool_volumes(driver, "host1").values()) == 5 * GIB
    storage.create_volume(spec_on("host2", size_gb=5))  # another host's pool is its own


def test_creates_racing_for_the_last_space_do_not_overfill_it(make_driver: MakeDriver) -> None:
    driver = make_driver(volume_pool_gb=5)
    storage = storage_of(driver)
    start = threading.Barrier(6)

    def create(_: int) -> bool:
        start.wait()
        try:
            storage.create_volume(spec_on("host1", size_gb=2))
        except CapacityError:
            return False
        return True

    with ThreadPoolExecutor(6) as pool:
        made = list(pool.map(create, range(6)))
    assert made.count(True) == 2
    assert sum(pool_volumes(driver, "host1").values()) == 4 * GIB


def test_only_this_brokers_volumes_are_listed(make_driver: MakeDriver) -> None:
    driver = make_driver()
    storage = storage_of(driver)
    ours = storage.create_volume(spec_on("host1"))
    pool = driver.ex_connection("host1").storagePoolLookupByName(POOL)
    other = str(uuidlib.uuid4())
    for name in ("by-hand", volume_name(owner_tag("other-broker", ZONE), other)):
        pool.createXML(f"<volume><name>{name}</name><capacity>1024</capacity></volume>", 0)
    assert [v.uuid for b in storage.list_volumes() for v in b] == [ours.uuid]
    with pytest.raises(VolumeNotFound):
        storage.get_volume(other)
    storage.delete_volume(other)
    assert len(pool_volumes(driver, "host1")) == 3


def test_a_real_host_without_the_pool_is_refused_until_the_operator_defines_it(
    make_driver: MakeDriver, host_uris: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    # A qemu URI, opened as a simulated host: to the driver it is an operator's hypervisor.
    def opener(uri: str) -> Any:
        assert uri == "qemu+ssh://hv1/system"
        return libvirt.open(host_uris["host1"])

    driver = make_driver(hosts={"hv1": "qemu+ssh://hv1/system"}, opener=opener)
    storage = storage_of(driver)
    # The host holds no volumes (its servers still run): no pool, and a warning saying why.
    assert storage.pools() == []
    assert f"no storage pool '{POOL}'" in caplog.text
    with pytest.raises(PermanentError, match=f"no storage pool '{POOL}'"):
        storage.create_volume(spec_on("hv1"))
    with pytest.raises(VolumeNotFound):  # no pool: no volumes there
        storage.get_volume(str(uuidlib.uuid4()))
    conn = driver.ex_connection("hv1")
    pool = conn.storagePoolDefineXML(
        f"<pool type='dir'><name>{POOL}</name><target><path>/p</path></target></pool>", 0
    )
    with pytest.raises(TransientError, match="not active"):  # defined, not started
        storage.create_volume(spec_on("hv1"))
    pool.create(0)
    [info] = storage.pools()
    assert (info.name, info.capacity_gb) == (f"hv1/{POOL}", 100)  # what libvirt reports
    assert storage.create_volume(spec_on("hv1")).state == VolumeState.AVAILABLE


# --- attach and detach ----------------------------------------------------------------------


def test_attach_puts_the_disk_in_the_domain_and_detach_takes_it_out(
    make_driver: MakeDriver,
) -> None:
    driver = make_driver()
    storage = storage_of(driver)
    volume = storage.create_volume(spec_on("host2"))
    server = driver.create(make_spec("host2")).uuid

    attached = storage.attach_volume(volume.uuid, server, "/dev/vdc")
    assert attached == RemoteAttachment(server, "/dev/vdc")
    disk = disks_of(driver, "host2", server)["vdc"]
    source = disk.find("source")
    assert source is not None
    assert (source.get("pool"), source.get("volume")) == (POOL, our_name(volume.uuid))
    assert disk.findtext("serial") == volume.uuid[:20]
    got = storage.get_volume(volume.uuid)
    assert (got.state, got.attachments) == (VolumeState.IN_USE, (attached,))
    assert driver.get(server).extra["name"] == "vm-0"  # redefined with its metadata
    inactive = (
        driver.ex_connection("host2")
        .lookupByUUIDString(server)
        .XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    )
    assert "<federator:broker-id>" in inactive  # and its prefix, as written

    second = storage.create_volume(spec_on("host2"))
    assert storage.attach_volume(second.uuid, server, None).device == "/dev/vdb"
    with pytest.raises(PermanentError, match="already has a disk /dev/vdc"):
        storage.attach_volume(storage.create_volume(spec_on("host2")).uuid, server, "vdc")

    storage.detach_volume(volume.uuid, server)
    assert set(disks_of(driver, "host2", server)) == {"vdb"}
    assert storage.get_volume(volume.uuid).state == VolumeState.AVAILABLE
    listed = {v.uuid: v.attachments for b in storage.list_volumes() for v in b}
    assert listed[second.uuid] == (RemoteAttachment(server, "/dev/vdb"),)
    assert listed[volume.uuid] == ()


def test_a_volume_attaches_only_on_its_own_host(make_driver: MakeDriver) -> None:
    driver = make_driver()
    storage = storage_of(driver)
    volume = storage.create_volume(spec_on("host1"))
    server = driver.create(make_spec("host3")).uuid
    with pytest.raises(PermanentError, match=r"host host1.*host host3"):
        storage.attach_volume(volume.uuid, server, None)
    assert disks_of(driver, "host3", server) == {}
    assert storage.get_volume(volume.uuid).attachments == ()
    with pytest.raises(InstanceNotFound):
        storage.attach_volume(volume.uuid, "not-a-uuid", None)
    with pytest.raises(PermanentError, match="not a disk name"):
        storage.attach_volume(volume.uuid, server, "/dev/nvme0n1")


def test_a_domain_outside_the_broker_using_the_volume_counts(make_driver: MakeDriver) -> None:
    driver = make_driver()
    storage = storage_of(driver)
    volume = storage.create_volume(spec_on("host1"))
    stranger = define_by_hand(driver, "host1", str(uuidlib.uuid4()))
    path = volume.extra["path"]
    stranger.destroy()
    conn = driver.ex_connection("host1")
    xml = stranger.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE).replace(
        "<devices>",
        f"<devices><disk type='file' device='disk'><source file='{path}'/>"
        "<target dev='vdq' bus='virtio'/></disk>",
    )
    conn.defineXML(xml)
    got = storage.get_volume(volume.uuid)
    assert got.attachments == (RemoteAttachment(stranger.UUIDString(), "/dev/vdq"),)
    with pytest.raises(PermanentError, match="detach it first"):
        storage.delete_volume(volume.uuid)
    server = driver.create(make_spec("host1")).uuid
    with pytest.raises(PermanentError, match="attached to server"):
        storage.attach_volume(volume.uuid, server, None)
    storage.detach_volume(volume.uuid, stranger.UUIDString())  # not the broker's: untouched
    assert "vdq" in conn.lookupByUUIDString(stranger.UUIDString()).XMLDesc(0)


def test_deleting_the_server_keeps_its_volume(make_driver: MakeDriver) -> None:
    driver = make_driver()
    storage = storage_of(driver)
    volume = storage.create_volume(spec_on("host1", size_gb=2))
    server = driver.create(make_spec("host1")).uuid
    storage.attach_volume(volume.uuid, server, None)
    driver.delete(server)
    assert pool_volumes(driver, "host1") == {our_name(volume.uuid): 2 * GIB}
    got = storage.get_volume(volume.uuid)
    assert (got.state, got.attachments) == (VolumeState.AVAILABLE, ())


def test_a_disk_live_after_a_reboot_stays_in_use_until_the_domain_stops(
    make_driver: MakeDriver,
) -> None:
    # The test driver has no hot-plug: the disk joins the persistent definition, and the
    # running domain's live one only at its next boot (and leaves it at the one after).
    driver = make_driver()
    storage = storage_of(driver)
    volume = storage.create_volume(spec_on("host1"))
    server = driver.create(make_spec("host1")).uuid
    storage.attach_volume(volume.uuid, server, None)
    dom = driver.ex_connection("host1").lookupByUUIDString(server)
    assert "vdb" not in dom.XMLDesc(0)
    driver.stop(server)
    driver.start(server)  # booted from the persistent definition: the live one has it now
    assert "vdb" in dom.XMLDesc(0)
    storage.detach_volume(volume.uuid, server)
    assert disks_of(driver, "host1", server) == {}
    assert storage.get_volume(volume.uuid).state == VolumeState.IN_USE  # live still has it
    driver.stop(server)
    assert storage.get_volume(volume.uuid).state == VolumeState.AVAILABLE


def test_a_hypervisor_with_hot_plug_is_asked_for_config_and_live(
    make_driver: MakeDriver,
) -> None:
    calls: list[tuple[str, int]] = []

    def attach_device_flags(xml: str, flags: int) -> int:
        calls.append((xml, flags))
        return 0

    driver = make_driver(
        opener=lambda uri: ConnectionProxy(
            libvirt.open(uri), {"attachDeviceFlags": attach_device_flags}
        )
    )
    storage = storage_of(driver)
    running = driver.create(make_spec("host1")).uuid
    stopped = driver.create(make_spec("host1")).uuid
    driver.stop(stopped)
    for server in (running, stopped):
        storage.attach_volume(storage.create_volume(spec_on("host1")).uuid, server, "vdd")
    both = libvirt.VIR_DOMAIN_AFFECT_CONFIG | libvirt.VIR_DOMAIN_AFFECT_LIVE
    assert [flags for _, flags in calls] == [both, libvirt.VIR_DOMAIN_AFFECT_CONFIG]
    disk = ET.fromstring(calls[0][0])
    target = disk.find("target")
    assert (disk.get("type"), target is not None and target.get("dev")) == ("volume", "vdd")


def test_a_server_with_a_volume_is_not_migrated(make_driver: MakeDriver) -> None:
    driver = make_driver()
    storage = storage_of(driver)
    volume = storage.create_volume(spec_on("host1"))
    server = driver.create(make_spec("host1")).uuid
    storage.attach_volume(volume.uuid, server, None)
    driver.stop(server)
    with pytest.raises(PermanentError, match="detach its volumes first"):
        driver.migrate(server, "host2")
    storage.detach_volume(volume.uuid, server)
    assert driver.migrate(server, "host2").host == "host2"


@pytest.mark.parametrize(
    ("asked", "target"),
    [("/dev/vdc", "vdc"), ("vdb", "vdb"), ("/dev/sdf", "vdf"), ("xvdg", "vdg"), ("vdaa", "vdaa")],
)
def test_device_names_become_virtio_targets(asked: str, target: str) -> None:
    assert target_device(asked) == target


@pytest.mark.parametrize("asked", ["/dev/nvme0n1", "vd", "/dev/vdb1", "cdrom", ""])
def test_other_names_are_no_disk_names(asked: str) -> None:
    assert target_device(asked) is None


def test_a_volumes_age_comes_from_its_birth_or_else_its_change_time() -> None:
    def volume(stamps: str) -> str:
        return f"<volume><target><timestamps>{stamps}</timestamps></target></volume>"

    born = volume_created_at(volume("<ctime>200.5</ctime><btime>100</btime>"))
    assert born == datetime.fromtimestamp(100, UTC)
    assert volume_created_at(volume("<ctime>200.5</ctime>")) == datetime.fromtimestamp(200.5, UTC)
    assert volume_created_at("<volume><target/></volume>") is None


def test_disks_are_added_and_removed_by_target_keeping_the_rest() -> None:
    domain = (
        '<domain><metadata><f:i xmlns:f="urn:x">kept</f:i></metadata><devices>'
        "<disk type='file'><source file='/a'/><target dev='vdb'/></disk></devices></domain>"
    )
    added = with_device(domain, data_disk_xml("p", "v", "vdc", "raw", "serial"))
    assert [(d.target, d.pool, d.volume, d.file) for d in domain_disks(added)] == [
        ("vdb", None, None, "/a"),
        ("vdc", "p", "v", None),
    ]
    removed = without_disk(added, "vdb")
    assert [d.target for d in domain_disks(removed)] == ["vdc"]
    assert '<f:i xmlns:f="urn:x">kept</f:i>' in removed
