"""Behaviour of the libvirt driver beyond the portable contract, on simulated hosts."""

from __future__ import annotations

import uuid as uuidlib
import xml.etree.ElementTree as ET
from typing import Any

import libvirt
import pytest

from drivers.libvirt.connection import HostHandle
from drivers.libvirt.domainxml import domain_name
from drivers.libvirt.driver import LibvirtDriver
from federator.driver import (
    FlavorSpec,
    InstanceNotFound,
    PermanentError,
    PowerState,
    TransientError,
)
from federator.exception import ConfigError
from tests.unit.drivers.libvirt.conftest import (
    BROKER,
    MakeDriver,
    define_by_hand,
    libvirt_error,
    make_spec,
)

UNREACHABLE = "qemu+tcp://admin:s3cr3t-pw@127.0.0.1:1/system"


class FakeTime:
    """A monotonic clock that only moves when something sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def uuids(driver: LibvirtDriver, batch_size: int = 500) -> list[str]:
    return [i.uuid for b in driver.list_instances(batch_size) for i in b]


def domains_on(driver: LibvirtDriver, host: str) -> dict[str, int]:
    """uuid -> libvirt state of every domain on ``host``, ours or not."""
    conn = driver.ex_connection(host)
    return {d.UUIDString(): d.state()[0] for d in conn.listAllDomains(0)}


# --- create -----------------------------------------------------------------------------


def test_create_defines_and_starts_a_domain_with_the_broker_uuid(
    make_driver: MakeDriver,
) -> None:
    driver = make_driver()
    spec = make_spec("host2", flavor=FlavorSpec("m1.medium", 2, 4096, 40))
    made = driver.create(spec)
    assert (made.uuid, made.host, made.state) == (spec.uuid, "host2", PowerState.ACTIVE)
    assert made.remote_id == domain_name(spec.uuid)
    assert made.launched_at is not None
    assert made.extra["vcpus"] == 2 and made.extra["ram_mb"] == 4096
    assert made.extra["libvirt_state"] == made.extra["power_state"] == "running"
    assert made.addresses == {"default": ["192.168.122.3"]}  # the test driver's canned lease
    dom = driver.ex_connection("host2").lookupByUUIDString(spec.uuid)
    state, max_kib, _mem, vcpus, _cpu = dom.info()
    assert (state, max_kib, vcpus) == (libvirt.VIR_DOMAIN_RUNNING, 4096 * 1024, 2)
    assert domains_on(driver, "host1") == {}


def test_create_again_returns_the_domain_and_starts_it_if_stopped(
    make_driver: MakeDriver,
) -> None:
    driver = make_driver()
    spec = make_spec("host1")
    first = driver.create(spec)
    driver.ex_connection("host1").lookupByUUIDString(spec.uuid).destroy()
    again = driver.create(spec)
    assert again.remote_id == first.remote_id
    assert again.state is PowerState.ACTIVE
    assert again.launched_at == first.launched_at
    assert uuids(driver) == [spec.uuid]


def test_create_again_on_another_host_finds_the_first(make_driver: MakeDriver) -> None:
    driver = make_driver()
    spec = make_spec("host1")
    driver.create(spec)
    moved = make_spec("host3", uuid=spec.uuid)
    assert driver.create(moved).host == "host1"
    assert domains_on(driver, "host3") == {}


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [({"host": None}, "no host chosen"), ({"host": "host9"}, "unknown host 'host9'")],
)
def test_create_needs_a_known_host(
    make_driver: MakeDriver, overrides: dict[str, Any], reason: str
) -> None:
    with pytest.raises(PermanentError, match=reason):
        make_driver().create(make_spec(**overrides))


def test_create_refuses_an_id_that_is_not_a_uuid(make_driver: MakeDriver) -> None:
    with pytest.raises(PermanentError, match="not a UUID"):
        make_driver().create(make_spec(uuid="not-a-uuid"))


@pytest.mark.parametrize(
    ("code", "error"),
    [(libvirt.VIR_ERR_INTERNAL_ERROR, PermanentError), (libvirt.VIR_ERR_RPC, TransientError)],
)
def test_a_failed_start_leaves_nothing_defined(
    make_driver: MakeDriver, code: int, error: type[Exception]
) -> None:
    def fail(*_: Any) -> int:
        raise libvirt_error(code, "qemu unexpectedly closed the monitor")

    driver = make_driver(domain_overrides={"create": fail})
    with pytest.raises(error):
        driver.create(make_spec("host1"))
    assert domains_on(driver, "host1") == {}


def test_hostile_names_and_metadata_survive_the_round_trip(make_driver: MakeDriver) -> None:
    driver = make_driver()
    hostile = '</name><evil/>&amp; "q" ]]>'
    spec = make_spec("host1", name=hostile, metadata={hostile: hostile, "plain": "v"})
    driver.create(spec)
    got = driver.get(spec.uuid)
    assert got.extra["name"] == hostile
    assert got.extra["metadata"] == {hostile: hostile, "plain": "v"}
    assert got.extra["project_id"] == "p1" and got.extra["flavor"] == "m1.small"


# --- ownership --------------------------------------------------------------------------


def test_domains_of_others_are_never_listed_touched_or_taken(make_driver: MakeDriver) -> None:
    driver = make_driver()
    mine = driver.create(make_spec("host1")).uuid
    by_hand = str(uuidlib.uuid4())
    define_by_hand(driver, "host1", by_hand)
    other_broker = str(uuidlib.uuid4())
    define_by_hand(
        driver,
        "host2",
        other_broker,
        "<f:instance xmlns:f='https://federator.dev/xmlns/instance/1'>"
        "<f:broker-id>someone-else</f:broker-id><f:zone>lv1</f:zone></f:instance>",
    )
    assert uuids(driver) == [mine]
    for foreign in (by_hand, other_broker):
        with pytest.raises(InstanceNotFound):
            driver.get(foreign)
        with pytest.raises(InstanceNotFound):
            driver.stop(foreign)
        driver.delete(foreign)
    with pytest.raises(PermanentError, match="not this zone's"):
        driver.create(make_spec("host1", uuid=by_hand))
    assert by_hand in domains_on(driver, "host1")
    assert other_broker in domains_on(driver, "host2")


def test_another_zone_on_the_same_hosts_sees_only_its_own(
    make_driver: MakeDriver, host_uris: dict[str, str]
) -> None:
    # Two zones on the same in-process host: one connection, so share it.
    driver = make_driver(hosts={"h": "test:///default"})
    other = make_driver(zone="lv2", hosts={"h": "test:///default"})
    mine = driver.create(make_spec("h")).uuid
    theirs = other.create(make_spec("h")).uuid
    assert uuids(driver) == [mine]
    assert uuids(other) == [theirs]
    # test:///default also holds libvirt's own "test" domain, which nobody lists.
    conn = driver.ex_connection("h")
    assert "test" in {d.name() for d in conn.listAllDomains(0)}


# --- listing ----------------------------------------------------------------------------


def test_list_spans_hosts_in_batches(make_driver: MakeDriver) -> None:
    driver = make_driver()
    made = {driver.create(make_spec(f"host{1 + n % 3}", n=n)).uuid for n in range(7)}
    batches = [list(b) for b in driver.list_instances(batch_size=3)]
    assert [len(b) for b in batches] == [3, 3, 1]
    assert {i.uuid for b in batches for i in b} == made
    with pytest.raises(ValueError):
        next(driver.list_instances(batch_size=0))


def test_list_hosts_reports_node_sizes_and_configured_disk(make_driver: MakeDriver) -> None:
    driver = make_driver(disk_gb=500, host_disk_gb={"host3": 2000})
    hosts = {h.name: h for h in driver.list_hosts()}
    assert {n: (h.vcpus, h.ram_mb, h.disk_gb) for n, h in hosts.items()} == {
        "host1": (4, 8192, 500),
        "host2": (8, 16384, 500),
        "host3": (16, 32768, 2000),
    }
    assert hosts["host1"].extra["hypervisor"] == "TEST"
    assert hosts["host1"].extra["uri"].startswith("test:///")


# --- unreachable hosts ------------------------------------------------------------------


def test_an_unreachable_host_is_left_out_and_named_in_health(
    make_driver: MakeDriver, host_uris: dict[str, str]
) -> None:
    driver = make_driver(hosts={**host_uris, "hv9": UNREACHABLE})
    uuid = driver.create(make_spec("host1")).uuid
    assert [h.name for h in driver.list_hosts()] == ["host1", "host2", "host3"]
    health = driver.health()
    assert health.ok
    assert "3 of 4 hosts reachable" in health.detail and "hv9" in health.detail
    assert "s3cr3t" not in health.detail
    # Found where it is; an unknown uuid cannot be declared missing while hv9 is silent.
    assert driver.get(uuid).host == "host1"
    with pytest.raises(TransientError, match="hv9"):
        driver.get(str(uuidlib.uuid4()))
    with pytest.raises(TransientError):
        uuids(driver)  # a listing that cannot finish raises instead of stopping early


def test_a_zone_with_no_reachable_host_is_unhealthy(make_driver: MakeDriver) -> None:
    driver = make_driver(hosts={"hv9": UNREACHABLE})
    health = driver.health()
    assert not health.ok
    assert "0 of 1 hosts reachable" in health.detail
    with pytest.raises(TransientError, match="no host answered"):
        driver.list_hosts()


def test_a_simulated_hosts_connection_is_never_reopened(make_driver: MakeDriver) -> None:
    driver = make_driver()
    driver.create(make_spec("host1"))
    driver.ex_connection("host1").close()  # the simulated host and its domains are gone
    with pytest.raises(PermanentError, match="never reopened"):
        uuids(driver)
    health = driver.health()
    assert health.ok and "2 of 3 hosts reachable" in health.detail
    assert "host1" in health.detail


def test_a_dead_connection_to_a_real_host_is_reopened() -> None:
    opened: list[libvirt.virConnect] = []

    def opener(_uri: str) -> libvirt.virConnect:
        conn = libvirt.open("test:///default")  # stands in for the remote daemon
        opened.append(conn)
        return conn

    handle = HostHandle("lv1", "hv1", "qemu+ssh://hv1/system", opener=opener)
    first = handle.connection()
    assert handle.connection() is first
    first.close()  # the peer went away
    second = handle.connection()
    assert second is not first and len(opened) == 2
    handle.close()
    with pytest.raises(PermanentError, match="closed"):
        handle.connection()


# --- power ------------------------------------------------------------------------------


def test_stop_is_graceful_when_the_guest_complies(make_driver: MakeDriver) -> None:
    driver = make_driver(stop_timeout=30)
    clock = FakeTime()
    driver.sleep, driver.monotonic = clock.sleep, clock.monotonic
    uuid = driver.create(make_spec("host1")).uuid
    assert driver.stop(uuid).state is PowerState.SHUTOFF
    assert clock.sleeps == []  # the test driver shuts down at once
    assert driver.stop(uuid).state is PowerState.SHUTOFF


def test_stop_destroys_a_guest_that_ignores_shutdown_after_the_timeout(
    make_driver: MakeDriver,
) -> None:
    asked: list[str] = []
    driver = make_driver(
        stop_timeout=5,
        stop_poll_interval=0.5,
        domain_overrides={"shutdown": lambda: asked.append("x")},
    )
    clock = FakeTime()
    driver.sleep, driver.monotonic = clock.sleep, clock.monotonic
    uuid = driver.create(make_spec("host1")).uuid
    stopped = driver.stop(uuid)
    assert stopped.state is PowerState.SHUTOFF
    assert asked == ["x"]  # asked once, then waited, then destroyed
    assert clock.now == pytest.approx(5)
    assert max(clock.sleeps) <= 0.5 and len(clock.sleeps) == 10
    assert domains_on(driver, "host1")[uuid] == libvirt.VIR_DOMAIN_SHUTOFF


def test_stop_with_no_timeout_destroys_at_once(make_driver: MakeDriver) -> None:
    asked: list[str] = []
    driver = make_driver(stop_timeout=0, domain_overrides={"shutdown": lambda: asked.append("x")})
    uuid = driver.create(make_spec("host1")).uuid
    assert driver.stop(uuid).state is PowerState.SHUTOFF
    assert asked == []


def test_start_boots_a_stopped_domain(make_driver: MakeDriver) -> None:
    driver = make_driver()
    uuid = driver.create(make_spec("host1")).uuid
    driver.stop(uuid)
    assert driver.start(uuid).state is PowerState.ACTIVE
    assert domains_on(driver, "host1")[uuid] == libvirt.VIR_DOMAIN_RUNNING


@pytest.mark.parametrize("hard", [False, True])
def test_reboot_ends_running_from_any_state(make_driver: MakeDriver, hard: bool) -> None:
    driver = make_driver()
    uuid = driver.create(make_spec("host1")).uuid
    assert driver.reboot(uuid, hard=hard).extra["power_state"] == "running"
    driver.pause(uuid)
    assert driver.reboot(uuid, hard=hard).extra["power_state"] == "running"
    driver.stop(uuid)
    assert driver.reboot(uuid, hard=hard).extra["power_state"] == "running"
    driver.suspend(uuid)
    assert driver.reboot(uuid, hard=hard).extra["power_state"] == "running"
    assert not driver.ex_connection("host1").lookupByUUIDString(uuid).hasManagedSaveImage(0)


def test_hard_reboot_falls_back_to_destroy_and_start(make_driver: MakeDriver) -> None:
    def unsupported(*_: Any) -> int:
        raise libvirt_error(libvirt.VIR_ERR_NO_SUPPORT, "this function is not supported")

    driver = make_driver(domain_overrides={"reset": unsupported, "reboot": unsupported})
    uuid = driver.create(make_spec("host1")).uuid
    assert driver.reboot(uuid, hard=True).state is PowerState.ACTIVE
    assert driver.reboot(uuid, hard=False).state is PowerState.ACTIVE


# --- pause, unpause, suspend, resume ----------------------------------------------------


def test_pause_and_unpause(make_driver: MakeDriver) -> None:
    driver = make_driver()
    uuid = driver.create(make_spec("host1")).uuid
    paused = driver.pause(uuid)
    assert (paused.state, paused.extra["power_state"]) == (PowerState.PAUSED, "paused")
    assert driver.pause(uuid).extra["power_state"] == "paused"
    assert driver.start(uuid).extra["power_state"] == "paused"  # start does not unpause
    assert driver.unpause(uuid).extra["power_state"] == "running"
    assert driver.unpause(uuid).extra["power_state"] == "running"
    driver.stop(uuid)
    with pytest.raises(PermanentError, match="cannot pause"):
        driver.pause(uuid)
    with pytest.raises(PermanentError, match="cannot unpause"):
        driver.unpause(uuid)


def test_suspend_and_resume(make_driver: MakeDriver) -> None:
    driver = make_driver()
    uuid = driver.create(make_spec("host1")).uuid
    suspended = driver.suspend(uuid)
    assert (suspended.state, suspended.extra["power_state"]) == (PowerState.SUSPENDED, "suspended")
    assert driver.suspend(uuid).extra["power_state"] == "suspended"
    resumed = driver.resume(uuid)
    assert (resumed.state, resumed.extra["power_state"]) == (PowerState.ACTIVE, "running")
    assert driver.resume(uuid).state is PowerState.ACTIVE
    driver.pause(uuid)
    with pytest.raises(PermanentError, match="cannot resume"):
        driver.resume(uuid)
    assert driver.suspend(uuid).extra["power_state"] == "suspended"  # paused can be saved
    assert driver.start(uuid).extra["power_state"] == "running"  # start restores too
    driver.stop(uuid)
    with pytest.raises(PermanentError, match="cannot suspend"):
        driver.suspend(uuid)
    with pytest.raises(PermanentError, match="cannot resume"):
        driver.resume(uuid)


def test_stopping_a_paused_domain_destroys_it_without_asking(make_driver: MakeDriver) -> None:
    asked: list[str] = []
    driver = make_driver(domain_overrides={"shutdown": lambda: asked.append("x")})
    uuid = driver.create(make_spec("host1")).uuid
    driver.pause(uuid)
    assert driver.stop(uuid).state is PowerState.SHUTOFF
    assert asked == []


@pytest.mark.parametrize("action", ["pause", "unpause", "suspend", "resume"])
def test_extra_actions_on_unknown_uuids_raise_not_found(
    make_driver: MakeDriver, action: str
) -> None:
    with pytest.raises(InstanceNotFound):
        getattr(make_driver(), action)(str(uuidlib.uuid4()))


# --- delete -----------------------------------------------------------------------------


def test_delete_removes_the_domain_in_any_state(make_driver: MakeDriver) -> None:
    driver = make_driver()
    running = driver.create(make_spec("host1", n=1)).uuid
    suspended = driver.create(make_spec("host2", n=2)).uuid
    driver.suspend(suspended)
    paused = driver.create(make_spec("host3", n=3)).uuid
    driver.pause(paused)
    for uuid in (running, suspended, paused):
        driver.delete(uuid)
        driver.delete(uuid)
    assert uuids(driver) == []
    assert all(domains_on(driver, h) == {} for h in ("host1", "host2", "host3"))
    driver.delete("not-a-uuid")


def test_a_fresh_driver_finds_domains_without_any_memory(
    make_driver: MakeDriver, host_uris: dict[str, str]
) -> None:
    # One in-process host shared by two drivers: the second has never seen the domain.
    driver = make_driver(hosts={"h": "test:///default"})
    uuid = driver.create(make_spec("h")).uuid
    fresh = make_driver(hosts={"h": "test:///default"})
    assert fresh.get(uuid).host == "h"
    fresh.delete(uuid)
    with pytest.raises(InstanceNotFound):
        driver.get(uuid)


# --- storage ----------------------------------------------------------------------------


def _base_volume(driver: LibvirtDriver, host: str) -> None:
    pool = driver.ex_connection(host).storagePoolLookupByName("images")
    pool.createXML(
        "<volume><name>cirros.qcow2</name><capacity unit='GiB'>2</capacity>"
        "<allocation unit='GiB'>1</allocation><target><format type='qcow2'/></target></volume>",
        0,
    )


def test_root_volumes_are_overlays_in_the_pool(make_driver: MakeDriver) -> None:
    driver = make_driver(storage_pool="images", image_volumes={"cirros": "cirros.qcow2"})
    image_id = "5a2b4a3c-8c1e-4c39-9e0b-6a1f0c1d2e01"
    driver.validate_catalog(["m1.small"], {image_id: "cirros"})
    _base_volume(driver, "host1")
    uuid = driver.create(make_spec("host1", image=image_id)).uuid
    pool = driver.ex_connection("host1").storagePoolLookupByName("images")
    volume = pool.storageVolLookupByName(f"instance-{uuid}.qcow2")
    assert volume.info()[1] == 10 * 1024**3  # the flavor's disk
    xml = ET.fromstring(driver.ex_connection("host1").lookupByUUIDString(uuid).XMLDesc(0))
    source = xml.find("devices/disk/source")
    assert source is not None and source.get("volume") == f"instance-{uuid}.qcow2"
    driver.delete(uuid)
    assert pool.listVolumes() == ["cirros.qcow2"]


def test_with_a_pool_hosts_report_its_capacity_unless_overridden(
    make_driver: MakeDriver,
) -> None:
    driver = make_driver(storage_pool="images", host_disk_gb={"host2": 700}, disk_gb=5)
    disks = {h.name: h.disk_gb for h in driver.list_hosts()}
    assert disks == {"host1": 100, "host2": 700, "host3": 100}  # test pools are 100 GiB


def test_a_missing_base_volume_fails_the_create_and_leaves_nothing(
    make_driver: MakeDriver,
) -> None:
    driver = make_driver(storage_pool="images", image_volumes={"cirros": "cirros.qcow2"})
    with pytest.raises(PermanentError, match=r"cirros\.qcow2"):
        driver.create(make_spec("host2"))
    assert domains_on(driver, "host2") == {}
    with pytest.raises(PermanentError, match="no base volume"):
        driver.create(make_spec("host2", image="unmapped"))


def test_validate_catalog_names_images_without_a_base_volume(make_driver: MakeDriver) -> None:
    driver = make_driver(storage_pool="images", image_volumes={"cirros": "cirros.qcow2"})
    with pytest.raises(ConfigError, match=r"img-2 \(debian\)"):
        driver.validate_catalog(["m1.small"], {"img-1": "cirros", "img-2": "debian"})
    make_driver().validate_catalog(["m1.small"], {"img-2": "debian"})  # diskless: anything


def test_an_instance_of_another_broker_is_refused(make_driver: MakeDriver) -> None:
    driver = make_driver()
    with pytest.raises(PermanentError, match="another-broker"):
        driver.create(make_spec("host1", broker_id="another-broker"))
    assert domains_on(driver, "host1") == {}
    assert driver.context.broker_id == BROKER
