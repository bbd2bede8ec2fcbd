"""The driver contract: what every driver does, checked against each in turn.

Drivers come from ``conftest.FACTORIES``. Only the portable behaviour of
:mod:`federator.driver` is asserted here; driver-specific behaviour belongs in the
driver's own unit tests.
"""

from __future__ import annotations

import threading
import uuid as uuidlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest

from federator.driver import (
    Driver,
    DriverError,
    FlavorSpec,
    InstanceNotFound,
    InstanceSpec,
    PermanentError,
    PowerState,
    RemoteInstance,
    ServerGroupSpec,
)

FLAVOR = FlavorSpec(name="contract.tiny", vcpus=1, ram_mb=256, disk_gb=1)


def make_spec(driver: Driver, n: int = 0, uuid: str | None = None) -> InstanceSpec:
    """A small instance; on drivers that schedule hosts, spread over the listed hosts."""
    host = None
    if driver.capabilities().host_scheduling:
        hosts = driver.list_hosts()
        host = hosts[n % len(hosts)].name
    return InstanceSpec(
        uuid=uuid or str(uuidlib.uuid4()),
        name=f"contract-{n}",
        flavor=FLAVOR,
        image="cirros",
        project_id="contract-project",
        broker_id=driver.context.broker_id,
        host=host,
    )


def group_spec(
    driver: Driver, policy: str = "anti-affinity", max_server_per_host: int | None = None
) -> ServerGroupSpec:
    """A broker server group of a fresh uuid, as the broker would ask for it."""
    return ServerGroupSpec(
        uuid=str(uuidlib.uuid4()),
        name=f"contract-{policy}",
        policy=policy,
        project_id="contract-project",
        broker_id=driver.context.broker_id,
        max_server_per_host=max_server_per_host,
    )


def listed(driver: Driver, batch_size: int = 500) -> list[RemoteInstance]:
    return [i for batch in driver.list_instances(batch_size) for i in batch]


def require_start_stop(driver: Driver) -> None:
    if not driver.capabilities().start_stop:
        pytest.skip("driver does not support start/stop")


def require_reboot(driver: Driver) -> None:
    if not driver.capabilities().reboot:
        pytest.skip("driver does not support reboot")


def refuses_server_groups(driver: Driver) -> bool:
    """False for a driver with ``server_groups``. For one without, check what it owes
    instead (both group methods raise ``PermanentError`` and change nothing) and return
    True: the test then ends there. Like the pause and migrate tests, these follow the
    capability rather than skip, so a driver without it runs no skipped test."""
    if driver.capabilities().server_groups:
        return False
    before = [(i.uuid, i.remote_id, i.state) for i in listed(driver)]
    with pytest.raises(PermanentError) as caught:
        driver.create_server_group(group_spec(driver))
    assert caught.value.zone == driver.zone
    with pytest.raises(PermanentError) as caught:
        driver.delete_server_group("any-remote-group")
    assert caught.value.zone == driver.zone
    assert [(i.uuid, i.remote_id, i.state) for i in listed(driver)] == before
    return True


MakeGroup = Callable[[ServerGroupSpec], str]


# --- create, get, list ------------------------------------------------------------------


def test_create_returns_active_instance_with_spec_uuid(driver: Driver) -> None:
    spec = make_spec(driver)
    made = driver.create(spec)
    assert made.uuid == spec.uuid
    assert made.state is PowerState.ACTIVE
    assert made.remote_id
    if spec.host is not None:
        assert made.host == spec.host


def test_create_twice_makes_one_instance(driver: Driver) -> None:
    spec = make_spec(driver)
    first = driver.create(spec)
    second = driver.create(spec)
    assert second.remote_id == first.remote_id
    assert [i.uuid for i in listed(driver)] == [spec.uuid]


def test_get_returns_what_create_made(driver: Driver) -> None:
    made = driver.create(make_spec(driver))
    got = driver.get(made.uuid)
    assert (got.uuid, got.remote_id, got.state, got.host) == (
        made.uuid,
        made.remote_id,
        made.state,
        made.host,
    )


def test_list_shows_created_instances(driver: Driver) -> None:
    made = {driver.create(make_spec(driver, n)).remote_id for n in range(3)}
    assert {i.remote_id for i in listed(driver)} == made


def test_list_of_empty_zone_is_empty(driver: Driver) -> None:
    assert listed(driver) == []


@pytest.mark.parametrize("batch_size", [1, 2, 500])
def test_list_batches_hold_every_instance_exactly_once(driver: Driver, batch_size: int) -> None:
    uuids = sorted(driver.create(make_spec(driver, n)).uuid for n in range(5))
    batches = [list(b) for b in driver.list_instances(batch_size=batch_size)]
    assert all(0 < len(b) <= batch_size for b in batches)
    assert sorted(i.uuid for b in batches for i in b) == uuids
    assert len(batches) == -(-len(uuids) // batch_size)


# --- power actions ----------------------------------------------------------------------


def test_stop_start_reboot(driver: Driver) -> None:
    require_start_stop(driver)
    require_reboot(driver)
    uuid = driver.create(make_spec(driver)).uuid
    assert driver.stop(uuid).state is PowerState.SHUTOFF
    assert driver.get(uuid).state is PowerState.SHUTOFF
    assert driver.start(uuid).state is PowerState.ACTIVE
    assert driver.reboot(uuid).state is PowerState.ACTIVE
    assert driver.reboot(uuid, hard=True).state is PowerState.ACTIVE
    assert driver.get(uuid).state is PowerState.ACTIVE


def test_stop_and_start_are_no_ops_when_already_there(driver: Driver) -> None:
    require_start_stop(driver)
    uuid = driver.create(make_spec(driver)).uuid
    assert driver.start(uuid).state is PowerState.ACTIVE
    driver.stop(uuid)
    assert driver.stop(uuid).state is PowerState.SHUTOFF


def test_pause_and_suspend_follow_the_capability(driver: Driver) -> None:
    uuid = driver.create(make_spec(driver)).uuid
    if not driver.capabilities().pause_suspend:
        # Without the capability the calls are refused and change nothing.
        for call in (driver.pause, driver.unpause, driver.suspend, driver.resume):
            with pytest.raises(PermanentError):
                call(uuid)
        assert driver.get(uuid).state is PowerState.ACTIVE
        return
    assert driver.pause(uuid).state is PowerState.PAUSED
    assert driver.pause(uuid).state is PowerState.PAUSED  # a no-op the second time
    assert driver.get(uuid).state is PowerState.PAUSED
    assert driver.unpause(uuid).state is PowerState.ACTIVE
    assert driver.suspend(uuid).state is PowerState.SUSPENDED
    assert driver.get(uuid).state is PowerState.SUSPENDED
    assert [i.state for i in listed(driver) if i.uuid == uuid] == [PowerState.SUSPENDED]
    assert driver.resume(uuid).state is PowerState.ACTIVE
    assert driver.get(uuid).state is PowerState.ACTIVE


def test_migrate_follows_the_capability(driver: Driver) -> None:
    caps = driver.capabilities()
    created = driver.create(make_spec(driver))
    uuid = created.uuid
    if not caps.cold_migrate:
        with pytest.raises(PermanentError):
            driver.migrate(uuid, created.host or "elsewhere")
        assert driver.get(uuid).host == created.host
        return
    assert caps.host_scheduling, "moving between hosts needs hosts"
    hosts = [h.name for h in driver.list_hosts()]
    assert len(hosts) >= 2, "a zone of one host cannot show a move"
    target = next(h for h in hosts if h != created.host)
    driver.stop(uuid)
    moved = driver.migrate(uuid, target)
    assert (moved.uuid, moved.host, moved.state) == (uuid, target, PowerState.SHUTOFF)
    assert driver.get(uuid).host == target
    assert [i.host for i in listed(driver) if i.uuid == uuid] == [target]  # exactly one copy
    assert driver.migrate(uuid, target).host == target  # already there: a no-op
    with pytest.raises(PermanentError):
        driver.migrate(uuid, "no-such-host")
    assert driver.start(uuid).state is PowerState.ACTIVE
    assert driver.get(uuid).host == target


# --- server groups ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "max_server_per_host"),
    [("anti-affinity", None), ("anti-affinity", 2), ("affinity", None)],
)
def test_create_server_group_twice_returns_one_group(
    driver: Driver, make_group: MakeGroup, policy: str, max_server_per_host: int | None
) -> None:
    if refuses_server_groups(driver):
        return
    spec = group_spec(driver, policy, max_server_per_host)
    first = make_group(spec)
    assert first
    assert make_group(spec) == first
    # Another broker group, even of the same name and policy, is another remote group.
    assert make_group(replace(spec, uuid=str(uuidlib.uuid4()))) != first


def test_concurrent_creates_of_one_server_group_make_one(
    driver: Driver, make_group: MakeGroup
) -> None:
    if refuses_server_groups(driver):
        return
    spec = group_spec(driver)
    gate = threading.Barrier(8)

    def create(_: int) -> str:
        gate.wait()
        return make_group(spec)

    with ThreadPoolExecutor(max_workers=8) as pool:
        made = set(pool.map(create, range(8)))

    assert len(made) == 1
    assert make_group(spec) in made


def test_member_created_in_a_server_group_exists(driver: Driver, make_group: MakeGroup) -> None:
    if refuses_server_groups(driver):
        return
    remote_id = make_group(group_spec(driver))
    spec = replace(make_spec(driver), server_group=remote_id)
    made = driver.create(spec)
    assert (made.uuid, made.state) == (spec.uuid, PowerState.ACTIVE)
    assert driver.create(spec).remote_id == made.remote_id  # still idempotent
    assert driver.get(spec.uuid).remote_id == made.remote_id
    assert [i.uuid for i in listed(driver)] == [spec.uuid]


def test_delete_server_group_removes_it_and_deleting_twice_succeeds(driver: Driver) -> None:
    if refuses_server_groups(driver):
        return
    spec = group_spec(driver)
    first = driver.create_server_group(spec)
    member = driver.create(replace(make_spec(driver), server_group=first))
    driver.delete_server_group(first)
    driver.delete_server_group(first)
    driver.delete_server_group(str(uuidlib.uuid4()))
    # The group is gone: asking again for the same broker group makes a new one...
    second = driver.create_server_group(spec)
    try:
        assert second != first
    finally:
        driver.delete_server_group(second)
    # ...and its member kept running.
    assert driver.get(member.uuid).state is PowerState.ACTIVE
    assert [i.uuid for i in listed(driver)] == [member.uuid]


def test_server_group_calls_leave_other_instances_alone(driver: Driver) -> None:
    uuid = driver.create(make_spec(driver)).uuid
    if not refuses_server_groups(driver):
        group = driver.create_server_group(group_spec(driver))
        driver.delete_server_group(group)
    assert [i.uuid for i in listed(driver)] == [uuid]
    assert driver.get(uuid).state is PowerState.ACTIVE


# --- delete and unknown instances -------------------------------------------------------


def test_delete_then_get_raises_not_found(driver: Driver) -> None:
    uuid = driver.create(make_spec(driver)).uuid
    driver.delete(uuid)
    with pytest.raises(InstanceNotFound) as caught:
        driver.get(uuid)
    assert caught.value.zone == driver.zone
    assert listed(driver) == []


def test_delete_twice_and_unknown_succeed(driver: Driver) -> None:
    uuid = driver.create(make_spec(driver)).uuid
    driver.delete(uuid)
    driver.delete(uuid)
    driver.delete(str(uuidlib.uuid4()))


@pytest.mark.parametrize("action", ["get", "start", "stop", "reboot"])
def test_unknown_uuid_raises_not_found(driver: Driver, action: str) -> None:
    if action in ("start", "stop"):
        require_start_stop(driver)
    if action == "reboot":
        require_reboot(driver)
    with pytest.raises(InstanceNotFound) as caught:
        getattr(driver, action)(str(uuidlib.uuid4()))
    assert isinstance(caught.value, DriverError)
    assert caught.value.zone == driver.zone


# --- zone-level -------------------------------------------------------------------------


def test_health_is_ok(driver: Driver) -> None:
    health = driver.health()
    assert health.ok, health.detail


def test_capabilities_agree_with_list_hosts(driver: Driver) -> None:
    hosts = driver.list_hosts()
    if not driver.capabilities().host_scheduling:
        assert list(hosts) == []
        return
    assert hosts
    assert len({h.name for h in hosts}) == len(hosts)
    assert all(h.vcpus > 0 and h.ram_mb > 0 and h.disk_gb >= 0 for h in hosts)


# --- concurrency ------------------------------------------------------------------------


def test_concurrent_creates_of_distinct_uuids(driver: Driver) -> None:
    specs = [make_spec(driver, n) for n in range(16)]
    gate = threading.Barrier(len(specs))

    def create(spec: InstanceSpec) -> RemoteInstance:
        gate.wait()
        return driver.create(spec)

    with ThreadPoolExecutor(max_workers=len(specs)) as pool:
        made = list(pool.map(create, specs))

    assert [m.uuid for m in made] == [s.uuid for s in specs]
    uuids = [i.uuid for i in listed(driver)]
    assert sorted(uuids) == sorted(s.uuid for s in specs)


def test_concurrent_creates_of_one_uuid_make_one_instance(driver: Driver) -> None:
    spec = make_spec(driver)
    gate = threading.Barrier(8)

    def create(_: int) -> RemoteInstance:
        gate.wait()
        return driver.create(spec)

    with ThreadPoolExecutor(max_workers=8) as pool:
        made = list(pool.map(create, range(8)))

    assert len({m.remote_id for m in made}) == 1
    assert [i.uuid for i in listed(driver)] == [spec.uuid]
