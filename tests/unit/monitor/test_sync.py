"""The sync job as a plain function: records follow the driver's listing, vanished instances
are noted, and a run that finds nothing new writes nothing."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta

import pytest

from federator.driver import PowerState, RemoteInstance, TransientError
from federator.monitor.sync import ZoneMemory, sync_zone
from federator.storage.models import utcnow
from tests.unit.monitor.conftest import RigFactory
from tests.unit.monitor.rig import ADMIN, Rig, writes


def test_status_drift_is_synced_and_a_second_run_writes_nothing(rig: Rig) -> None:
    a, b = rig.boot(name="a"), rig.boot(name="b")
    rig.sim().ex_set_state(a, PowerState.SHUTOFF)

    first = sync_zone(rig.broker.ctx, "cloud-a")
    assert first.counts() == {
        "seen": 2,
        "changed": 1,
        "vanished": 0,
        "deleted": 0,
        "unrecorded": 0,
    }
    assert rig.record(a).status == "SHUTOFF"
    assert rig.record(b).status == "ACTIVE"

    before = rig.records()
    with rig.statements() as statements:
        second = sync_zone(rig.broker.ctx, "cloud-a")
    assert second.changed == 0 and second.seen == 2
    assert any(s.lstrip().upper().startswith("SELECT") for s in statements)
    assert writes(statements) == []
    assert rig.records() == before


def test_a_record_a_worker_owns_is_not_overwritten(rig: Rig) -> None:
    uuid = rig.boot()
    rig.broker.compute.action(ADMIN, uuid, "reboot")  # task_state set, task not run yet
    rig.sim().ex_set_state(uuid, PowerState.SHUTOFF)
    assert sync_zone(rig.broker.ctx, "cloud-a").changed == 0
    record = rig.record(uuid)
    assert (record.status, record.task_state) == ("ACTIVE", "rebooting")


def test_vanished_instance_becomes_error_and_keeps_its_allocation(rig: Rig) -> None:
    gone, stays = rig.boot(name="gone"), rig.boot(name="stays")
    untouched = rig.records()[stays]
    assert rig.sim().ex_vanish(gone)

    report = sync_zone(rig.broker.ctx, "cloud-a", ZoneMemory())
    assert (report.seen, report.vanished, report.deleted) == (1, 1, 0)
    record = rig.record(gone)
    assert record.status == "ERROR" and record.fault is not None
    assert record.fault["code"] == "federator.monitor.vanished"
    assert record.fault["reason"] == "vanished"
    assert "zone cloud-a" in record.fault["message"]
    assert "not seen in any listing since" in record.fault["message"]
    # Like Nova's ERROR instances, it holds its capacity until deleted.
    assert rig.allocation(gone) is not None
    assert rig.zone("cloud-a").instances == 2
    assert rig.records()[stays] == untouched
    (event,) = rig.events("vanished")
    assert (event.zone, event.instance_uuid, event.action) == ("cloud-a", gone, "error")

    # Noted once: the next run changes nothing.
    with rig.statements() as statements:
        again = sync_zone(rig.broker.ctx, "cloud-a")
    assert (again.vanished, again.changed) == (0, 0)
    assert writes(statements) == []

    # Deleting it gives the capacity back.
    rig.broker.compute.delete(ADMIN, gone)
    rig.settle()
    assert rig.allocation(gone) is None
    assert rig.zone("cloud-a").instances == 1


def test_fault_says_when_the_instance_was_last_seen(rig: Rig) -> None:
    uuid = rig.boot()
    memory = ZoneMemory()
    sync_zone(rig.broker.ctx, "cloud-a", memory)
    rig.sim().ex_vanish(uuid)
    sync_zone(rig.broker.ctx, "cloud-a", memory)
    fault = rig.record(uuid).fault
    assert fault is not None
    assert "last seen in a listing at" in fault["message"]


def test_delete_in_progress_and_vanished_completes_the_delete(rig: Rig) -> None:
    uuid = rig.boot()
    assert rig.zone("cloud-a").instances == 1
    rig.broker.compute.delete(ADMIN, uuid)  # task_state deleting; the task has not run
    assert rig.record(uuid).task_state == "deleting"
    rig.sim().ex_vanish(uuid)

    report = sync_zone(rig.broker.ctx, "cloud-a")
    assert (report.vanished, report.deleted) == (0, 1)
    record = rig.record(uuid)
    assert (record.deleted, record.status, record.task_state) == (True, "DELETED", None)
    assert rig.allocation(uuid) is None
    assert rig.mapping(uuid) is None
    zone = rig.zone("cloud-a")
    assert (zone.instances, zone.vcpus_used, zone.ram_used_mb) == (0, 0, 0)
    assert [e.action for e in rig.events("vanished")] == ["deleted"]

    rig.settle()  # the queued delete finds nothing left to do
    assert rig.zone("cloud-a").instances == 0


def test_nothing_is_concluded_from_an_incomplete_listing(make_rig: RigFactory) -> None:
    rig = make_rig(monitor={"list_batch_size": 1})
    first, second = sorted([rig.boot(name="a"), rig.boot(name="b")])
    driver = rig.sim()
    rig.sim().ex_vanish(second)
    rig.sim().ex_set_state(first, PowerState.SHUTOFF)
    listing = driver.list_instances

    def broken(batch_size: int = 500) -> Iterator[Sequence[RemoteInstance]]:
        yield from listing(batch_size)
        raise TransientError("cloud-a", "listing timed out")

    driver.list_instances = broken  # type: ignore[method-assign]
    with pytest.raises(TransientError):
        sync_zone(rig.broker.ctx, "cloud-a")
    assert rig.record(first).status == "SHUTOFF"  # the batch it got stands
    assert rig.record(second).status == "ACTIVE"  # but nothing is judged vanished
    assert rig.events("vanished") == []
    assert rig.zone("cloud-a").remote_instances is None


def test_recently_launched_instances_get_a_grace_period(make_rig: RigFactory) -> None:
    rig = make_rig(monitor={"vanish_grace_seconds": 60})
    uuid = rig.boot()
    rig.sim().ex_vanish(uuid)
    assert sync_zone(rig.broker.ctx, "cloud-a").vanished == 0
    assert rig.record(uuid).status == "ACTIVE"
    later = utcnow() + timedelta(seconds=61)
    assert sync_zone(rig.broker.ctx, "cloud-a", clock=lambda: later).vanished == 1
    assert rig.record(uuid).status == "ERROR"


def test_an_instance_that_comes_back_loses_its_vanished_fault(rig: Rig) -> None:
    uuid = rig.boot()
    old_remote_id = rig.record(uuid).remote_id
    rig.sim().ex_vanish(uuid)
    sync_zone(rig.broker.ctx, "cloud-a")
    assert rig.record(uuid).status == "ERROR"
    rig.create_behind_our_back(uuid)  # same broker uuid, a new remote instance
    assert sync_zone(rig.broker.ctx, "cloud-a").changed == 1
    record = rig.record(uuid)
    assert (record.status, record.fault) == ("ACTIVE", None)
    assert record.remote_id != old_remote_id


def test_remote_usage_is_stored_and_drift_noted_once(rig: Rig) -> None:
    rig.boot(flavor="m1.small")
    rig.boot(flavor="m1.medium")
    report = sync_zone(rig.broker.ctx, "cloud-a")
    assert report.unrecorded == 0
    zone = rig.zone("cloud-a")
    assert (zone.remote_instances, zone.remote_vcpus, zone.remote_ram_mb) == (2, 3, 5120)
    assert rig.events("drift") == []

    rig.create_behind_our_back("00000000-0000-4000-8000-00000000beef")  # m1.tiny
    report = sync_zone(rig.broker.ctx, "cloud-a")
    assert report.unrecorded == 1
    zone = rig.zone("cloud-a")
    assert (zone.remote_instances, zone.remote_vcpus, zone.remote_ram_mb) == (3, 4, 5632)
    assert zone.instances == 2  # placement's counters do not move
    (drift,) = rig.events("drift")
    assert "runs 3 instance(s)" in drift.detail and "2 are allocated" in drift.detail
    sync_zone(rig.broker.ctx, "cloud-a")
    assert len(rig.events("drift")) == 1


def test_local_zones_are_synced_but_keep_their_scheduled_host(rig: Rig) -> None:
    uuid = rig.boot(zone="local")
    rig.sim("local").ex_set_state(uuid, PowerState.SHUTOFF)
    report = sync_zone(rig.broker.ctx, "local")
    assert (report.seen, report.changed) == (1, 1)
    assert rig.record(uuid).status == "SHUTOFF"
    assert rig.zone("local").remote_instances is None  # remote usage is for virtual zones


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_sync_on_each_backend(
    make_rig: RigFactory, request: pytest.FixtureRequest, backend: str
) -> None:
    database = None
    if backend == "postgresql":
        make_pg: Callable[[], str] = request.getfixturevalue("pg_database_factory")
        database = {
            "api_url": make_pg(),
            "cell0_url": make_pg(),
            "cells": {"cell1": make_pg()},
        }
    rig = make_rig(database=database)
    drifted, gone, deleting = rig.boot(name="d"), rig.boot(name="g"), rig.boot(name="x")
    rig.broker.compute.delete(ADMIN, deleting)
    sim = rig.sim()
    sim.ex_set_state(drifted, PowerState.SHUTOFF)
    sim.ex_vanish(gone)
    sim.ex_vanish(deleting)

    report = sync_zone(rig.broker.ctx, "cloud-a")
    assert (report.seen, report.changed, report.vanished, report.deleted) == (1, 1, 1, 1)
    assert rig.record(drifted).status == "SHUTOFF"
    assert rig.record(gone).status == "ERROR"
    assert rig.record(deleting).deleted
    assert rig.zone("cloud-a").instances == 2
    with rig.statements() as statements:
        again = sync_zone(rig.broker.ctx, "cloud-a")
    assert (again.changed, again.vanished, again.deleted) == (0, 0, 0)
    assert writes(statements) == []
