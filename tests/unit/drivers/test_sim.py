"""Behaviour of the sim driver beyond the portable contract."""

from __future__ import annotations

import re
import sqlite3
import threading
import uuid as uuidlib
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from drivers.sim.driver import STATE_FILE, SimDriver
from drivers.sim.options import SimOptions
from federator.config import ZoneConfig
from federator.driver import (
    AuthError,
    CapacityError,
    DriverError,
    FlavorSpec,
    InstanceNotFound,
    InstanceSpec,
    PermanentError,
    PowerState,
    TransientError,
    ZoneContext,
)
from federator.exception import ConfigError
from federator.plugins import load_driver

BROKER = "unit-broker"
SMALL = FlavorSpec(name="m1.small", vcpus=1, ram_mb=1024, disk_gb=10)


def make_driver(data_dir: Path, zone: str = "z1", **options: Any) -> SimDriver:
    context = ZoneContext(
        zone=zone, broker_id=BROKER, options=SimOptions(**options), data_dir=data_dir
    )
    return SimDriver(context)


def spec(
    n: int = 0,
    host: str | None = None,
    flavor: FlavorSpec = SMALL,
    broker_id: str = BROKER,
    uuid: str | None = None,
) -> InstanceSpec:
    return InstanceSpec(
        uuid=uuid or str(uuidlib.UUID(int=n + 1)),
        name=f"vm-{n}",
        flavor=flavor,
        image="cirros",
        project_id="p1",
        broker_id=broker_id,
        host=host,
    )


def uuids(driver: SimDriver, batch_size: int = 500) -> list[str]:
    return [i.uuid for b in driver.list_instances(batch_size) for i in b]


# --- hosts ------------------------------------------------------------------------------


def test_hosts_are_named_from_the_zone_by_default(tmp_path: Path) -> None:
    driver = make_driver(tmp_path, zone="local", hosts=3)
    assert [h.name for h in driver.list_hosts()] == [
        "local-host-001",
        "local-host-002",
        "local-host-003",
    ]
    assert driver.capabilities().host_scheduling


def test_host_names_grow_past_999(tmp_path: Path) -> None:
    names = [h.name for h in make_driver(tmp_path, hosts=1000, host_prefix="hv").list_hosts()]
    assert (names[0], names[998], names[999]) == ("hv001", "hv999", "hv1000")
    assert make_driver(tmp_path, hosts=1000, host_prefix="hv").create(spec(host="hv1000")).host


def test_list_hosts_reports_size_and_usage(tmp_path: Path) -> None:
    driver = make_driver(tmp_path, hosts=2, host_ram_mb=4096, host_vcpus=2, host_disk_gb=50)
    driver.create(spec(host="z1-host-002"))
    first, second = driver.list_hosts()
    assert (second.vcpus, second.ram_mb, second.disk_gb) == (2, 4096, 50)
    assert first.extra["instances"] == 0
    assert dict(second.extra) == {
        "used_vcpus": 1,
        "used_ram_mb": 1024,
        "used_disk_gb": 10,
        "instances": 1,
    }


def test_opaque_zone_lists_no_hosts(tmp_path: Path) -> None:
    driver = make_driver(tmp_path, expose_hosts=False)
    assert not driver.capabilities().host_scheduling
    assert driver.list_hosts() == []


# --- capacity ---------------------------------------------------------------------------


def test_full_host_refuses_and_leaves_nothing(tmp_path: Path) -> None:
    driver = make_driver(tmp_path, hosts=2, host_ram_mb=2048)
    host = "z1-host-001"
    driver.create(spec(0, host=host))
    driver.create(spec(1, host=host))

    with pytest.raises(CapacityError, match=r"host z1-host-001 lacks RAM MiB") as caught:
        driver.create(spec(2, host=host))

    assert caught.value.zone == "z1"
    with pytest.raises(InstanceNotFound):
        driver.get(spec(2).uuid)
    assert uuids(driver) == [spec(0).uuid, spec(1).uuid]
    assert driver.create(spec(2, host="z1-host-002")).host == "z1-host-002"


def test_vcpus_overcommit_up_to_four_times(tmp_path: Path) -> None:
    driver = make_driver(tmp_path, hosts=1, host_vcpus=1, host_ram_mb=100_000)
    for n in range(4):
        driver.create(spec(n, host="z1-host-001"))
    with pytest.raises(CapacityError, match="vCPU"):
        driver.create(spec(4, host="z1-host-001"))


def test_disk_is_never_overcommitted(tmp_path: Path) -> None:
    driver = make_driver(tmp_path, hosts=1, host_disk_gb=15)
    driver.create(spec(0, host="z1-host-001"))
    with pytest.raises(CapacityError, match="disk"):
        driver.create(spec(1, host="z1-host-001"))


def test_stopped_instances_still_hold_capacity(tmp_path: Path) -> None:
    driver = make_driver(tmp_path, hosts=1, host_ram_mb=1024)
    driver.stop(driver.create(spec(0)).uuid)
    with pytest.raises(CapacityError):
        driver.create(spec(1))


def test_unknown_host_is_permanent(tmp_path: Path) -> None:
    driver = make_driver(tmp_path, hosts=2)
    for bad in ("z1-host-003", "z1-host-0001", "elsewhere", "z1-host-"):
        with pytest.raises(PermanentError, match="unknown host"):
            driver.create(spec(host=bad))
    assert uuids(driver) == []


def test_opaque_zone_places_best_fit_and_ignores_host(tmp_path: Path) -> None:
    driver = make_driver(tmp_path, hosts=3, host_ram_mb=4096, expose_hosts=False)
    big = FlavorSpec(name="m1.medium", vcpus=2, ram_mb=3072, disk_gb=10)
    assert driver.create(spec(0, flavor=big)).host == "z1-host-001"
    # 1024 MiB left on host 001: the tightest fit for a small instance.
    assert driver.create(spec(1, host="z1-host-003")).host == "z1-host-001"
    assert driver.create(spec(2)).host == "z1-host-002"
    assert driver.create(spec(3, flavor=big)).host == "z1-host-002"


def test_opaque_zone_refuses_when_no_host_fits(tmp_path: Path) -> None:
    driver = make_driver(tmp_path, hosts=2, host_ram_mb=1024, expose_hosts=False)
    driver.create(spec(0))
    driver.create(spec(1))
    with pytest.raises(CapacityError, match=r"no host can take m1\.small"):
        driver.create(spec(2))
    huge = FlavorSpec(name="huge", vcpus=1, ram_mb=16384, disk_gb=1)
    with pytest.raises(CapacityError):
        make_driver(tmp_path / "other", expose_hosts=False).create(spec(9, flavor=huge))
    assert len(uuids(driver)) == 2


# --- failure injection ------------------------------------------------------------------


def _failures(driver: SimDriver, count: int) -> list[int]:
    failed = []
    for n in range(count):
        try:
            driver.create(spec(n))
        except DriverError:
            failed.append(n)
    return failed


def test_seeded_failures_repeat_and_leave_nothing(tmp_path: Path) -> None:
    options: dict[str, Any] = {"failure_rate": 0.5, "seed": 42, "persist": False, "hosts": 40}
    first = _failures(make_driver(tmp_path, **options), 30)
    driver = make_driver(tmp_path, **options)
    second = _failures(driver, 30)

    assert first == second
    assert 0 < len(first) < 30
    assert uuids(driver) == sorted(spec(n).uuid for n in range(30) if n not in first)
    for n in first:
        with pytest.raises(InstanceNotFound):
            driver.get(spec(n).uuid)


@pytest.mark.parametrize(
    ("kind", "error"),
    [("capacity", CapacityError), ("transient", TransientError), ("permanent", PermanentError)],
)
def test_failure_kind_picks_the_error(tmp_path: Path, kind: str, error: type) -> None:
    driver = make_driver(tmp_path, failure_rate=1.0, failure_kind=kind)
    with pytest.raises(error, match="simulated failure"):
        driver.create(spec())
    assert uuids(driver) == []


def test_ex_inject_fails_the_next_creates(tmp_path: Path) -> None:
    driver = make_driver(tmp_path)
    driver.ex_inject("transient", count=2)
    driver.ex_inject("auth")
    for error in (TransientError, TransientError, AuthError):
        with pytest.raises(error):
            driver.create(spec())
    assert driver.create(spec()).state is PowerState.ACTIVE


def test_existing_instance_is_returned_despite_injected_failures(tmp_path: Path) -> None:
    driver = make_driver(tmp_path)
    made = driver.create(spec())
    driver.ex_inject("capacity")
    assert driver.create(spec()).remote_id == made.remote_id
    with pytest.raises(CapacityError):
        driver.create(spec(1))


def test_ex_inject_rejects_unknown_kind(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown failure kind"):
        make_driver(tmp_path).ex_inject("meteor")  # type: ignore[arg-type]


# --- behind the broker's back -----------------------------------------------------------


def test_ex_vanish_and_ex_set_state(tmp_path: Path) -> None:
    driver = make_driver(tmp_path)
    uuid = driver.create(spec()).uuid
    assert driver.ex_set_state(uuid, PowerState.ERROR).state is PowerState.ERROR
    assert driver.get(uuid).state is PowerState.ERROR
    assert driver.ex_vanish(uuid) is True
    assert driver.ex_vanish(uuid) is False
    with pytest.raises(InstanceNotFound):
        driver.get(uuid)


# --- values, time, listing --------------------------------------------------------------


def test_instance_values(tmp_path: Path) -> None:
    fixed = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    driver = make_driver(tmp_path)
    driver.clock = lambda: fixed
    made = driver.create(spec(host="z1-host-002"))

    assert re.fullmatch(r"sim-[0-9a-f]{8}", made.remote_id)
    assert made.host == "z1-host-002"
    assert made.launched_at == fixed
    (address,) = made.addresses["private"]
    assert re.fullmatch(r"10\.\d{1,3}\.\d{1,3}\.\d{1,3}", address)
    other = make_driver(tmp_path / "b", persist=False).create(spec())
    assert other.addresses == made.addresses
    assert dict(made.extra) == {
        "name": "vm-0",
        "flavor": "m1.small",
        "image": "cirros",
        "project_id": "p1",
    }


def test_boot_delay_uses_the_injected_sleep(tmp_path: Path) -> None:
    driver = make_driver(tmp_path, boot_delay_ms=250)
    slept: list[float] = []
    driver.sleep = slept.append
    driver.create(spec())
    driver.create(spec())  # already there: no second boot
    assert slept == [0.25]


def test_list_is_ordered_and_only_this_brokers(tmp_path: Path) -> None:
    driver = make_driver(tmp_path, hosts=10)
    for n in (5, 3, 9, 1):
        driver.create(spec(n))
    driver.create(spec(7, broker_id="another-broker"))
    expected = [spec(n).uuid for n in (1, 3, 5, 9)]
    assert uuids(driver, batch_size=3) == expected
    assert driver.get(spec(7).uuid).uuid == spec(7).uuid
    with pytest.raises(ValueError, match="batch_size"):
        next(driver.list_instances(0))


def test_health_counts_hosts_and_instances(tmp_path: Path) -> None:
    driver = make_driver(tmp_path)
    driver.create(spec(0))
    driver.create(spec(1))
    health = driver.health()
    assert health.ok
    assert health.detail == "4 hosts, 2 instances"


def test_health_reports_a_broken_store(tmp_path: Path) -> None:
    driver = make_driver(tmp_path)
    driver.close()
    health = driver.health()
    assert not health.ok
    assert "sim state store" in health.detail
    with pytest.raises(PermanentError):
        driver.get(spec().uuid)


# --- persistence ------------------------------------------------------------------------


def test_state_survives_a_new_driver_on_the_same_data_dir(tmp_path: Path) -> None:
    first = make_driver(tmp_path)
    made = first.create(spec())
    first.stop(made.uuid)
    first.close()

    assert (tmp_path / STATE_FILE).is_file()
    again = make_driver(tmp_path)
    got = again.get(made.uuid)
    assert (got.remote_id, got.host, got.state) == (made.remote_id, made.host, PowerState.SHUTOFF)
    assert got.launched_at == made.launched_at
    assert again.create(spec()).remote_id == made.remote_id


def test_state_file_uses_wal(tmp_path: Path) -> None:
    make_driver(tmp_path).close()
    with sqlite3.connect(tmp_path / STATE_FILE) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_persist_false_keeps_nothing(tmp_path: Path) -> None:
    made = make_driver(tmp_path, persist=False).create(spec())
    assert not (tmp_path / STATE_FILE).exists()
    with pytest.raises(InstanceNotFound):
        make_driver(tmp_path, persist=False).get(made.uuid)


def test_two_drivers_on_one_file_share_capacity(tmp_path: Path) -> None:
    a = make_driver(tmp_path, hosts=1, host_ram_mb=1024)
    b = make_driver(tmp_path, hosts=1, host_ram_mb=1024)
    a.create(spec(0))
    with pytest.raises(CapacityError):
        b.create(spec(1))


# --- options, through the plugin loader -------------------------------------------------


def _zone(**options: Any) -> ZoneConfig:
    return ZoneConfig(name="edge-1", driver="sim", kind="local", options=options)


def test_loader_builds_a_sim_driver(tmp_path: Path) -> None:
    driver = load_driver(_zone(hosts=2, expose_hosts=False), BROKER, tmp_path)
    assert isinstance(driver, SimDriver)
    assert driver.options.hosts == 2
    assert driver.health().detail == "2 hosts, 0 instances"
    assert (tmp_path / "zones" / "edge-1" / STATE_FILE).is_file()


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"hostz": 3}, "zones.edge-1.options.hostz"),
        ({"hosts": 0}, "zones.edge-1.options.hosts"),
        ({"hosts": 100_001}, "zones.edge-1.options.hosts"),
        ({"failure_rate": 1.5}, "zones.edge-1.options.failure_rate"),
        ({"failure_kind": "auth"}, "zones.edge-1.options.failure_kind"),
    ],
)
def test_bad_options_name_zone_and_key(tmp_path: Path, options: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_driver(_zone(**options), BROKER, tmp_path)
    assert "zone 'edge-1'" in caught.value.message
    assert key in caught.value.message


# --- concurrency ------------------------------------------------------------------------


def test_racing_creates_of_one_uuid_during_boot_delay_make_one(tmp_path: Path) -> None:
    drivers = [make_driver(tmp_path, boot_delay_ms=20) for _ in range(2)]
    gate = threading.Barrier(8)

    def create(n: int) -> str:
        gate.wait()
        return drivers[n % 2].create(spec()).remote_id

    with ThreadPoolExecutor(max_workers=8) as pool:
        remote_ids = set(pool.map(create, range(8)))

    assert len(remote_ids) == 1
    assert uuids(drivers[0]) == [spec().uuid]


def test_racing_creates_never_overfill_a_host(tmp_path: Path) -> None:
    drivers = [make_driver(tmp_path, hosts=1, host_ram_mb=4096) for _ in range(2)]
    gate = threading.Barrier(12)

    def create(n: int) -> bool:
        gate.wait()
        try:
            drivers[n % 2].create(spec(n, host="z1-host-001"))
        except CapacityError:
            return False
        return True

    with ThreadPoolExecutor(max_workers=12) as pool:
        made = list(pool.map(create, range(12)))

    assert made.count(True) == 4
    assert len(uuids(drivers[0])) == 4


def test_ex_add_hosts_adds_hosts_that_persist(tmp_path: Path) -> None:
    driver = make_driver(tmp_path, hosts=2)
    assert driver.ex_add_hosts(2) == ["z1-host-003", "z1-host-004"]
    assert [h.name for h in driver.list_hosts()] == [f"z1-host-00{n}" for n in range(1, 5)]
    assert driver.create(spec(0, host="z1-host-004")).host == "z1-host-004"
    assert driver.health().detail == "4 hosts, 1 instances"
    driver.close()
    again = make_driver(tmp_path, hosts=2)
    assert len(again.list_hosts()) == 4
    with pytest.raises(ValueError):
        again.ex_add_hosts(0)


def test_migrate_moves_an_instance_in_its_state(tmp_path: Path) -> None:
    driver = make_driver(tmp_path, hosts=2)
    uuid = spec(0).uuid
    first = driver.create(spec(0, host="z1-host-001"))
    driver.stop(uuid)
    moved = driver.migrate(uuid, "z1-host-002")
    assert (moved.host, moved.state, moved.remote_id) == (
        "z1-host-002",
        PowerState.SHUTOFF,
        first.remote_id,
    )
    assert driver.get(uuid).host == "z1-host-002"
    usage = {h.name: h.extra["instances"] for h in driver.list_hosts()}
    assert usage == {"z1-host-001": 0, "z1-host-002": 1}
    assert driver.migrate(uuid, "z1-host-002").host == "z1-host-002"  # no-op


def test_migrate_failures_leave_the_instance_where_it_was(tmp_path: Path) -> None:
    big = FlavorSpec(name="m1.large", vcpus=4, ram_mb=8192, disk_gb=80)
    driver = make_driver(tmp_path, hosts=2)
    driver.create(spec(0, host="z1-host-001", flavor=big))
    driver.create(spec(1, host="z1-host-002", flavor=big))
    uuid = spec(0).uuid
    with pytest.raises(CapacityError, match="z1-host-002 lacks RAM MiB"):
        driver.migrate(uuid, "z1-host-002")
    with pytest.raises(PermanentError, match="unknown host"):
        driver.migrate(uuid, "elsewhere")
    with pytest.raises(InstanceNotFound):
        driver.migrate(str(uuidlib.uuid4()), "z1-host-002")
    driver.delete(spec(1).uuid)
    driver.ex_inject("transient")
    with pytest.raises(TransientError, match="relocating"):
        driver.migrate(uuid, "z1-host-002")
    assert driver.get(uuid).host == "z1-host-001"
    assert driver.migrate(uuid, "z1-host-002").host == "z1-host-002"


def test_migrate_needs_exposed_hosts(tmp_path: Path) -> None:
    driver = make_driver(tmp_path, expose_hosts=False)
    created = driver.create(spec(0))
    with pytest.raises(PermanentError, match="does not expose hosts"):
        driver.migrate(created.uuid, "z1-host-002")
