"""The orphans job as a plain function: what is an orphan, and what the policy does with it."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from datetime import timedelta

import pytest

from federator.compute.service import BootRequest
from federator.driver import InstanceNotFound, InstanceSpec, PowerState, RemoteInstance
from federator.monitor.orphans import OrphanReport, find_orphans
from federator.storage.models import utcnow
from tests.unit.monitor.conftest import RigFactory
from tests.unit.monitor.rig import ADMIN, Rig

STRAY = "00000000-0000-4000-8000-0000000000aa"
NOW_ORPHANS = {"min_age_seconds": 0}


def _run(rig: Rig, zone: str = "cloud-a") -> OrphanReport:
    return find_orphans(rig.broker.ctx, zone)


def test_log_records_the_orphan_once_and_leaves_it_alone(make_rig: RigFactory) -> None:
    rig = make_rig(orphans={"action": "log", **NOW_ORPHANS})
    mine = rig.boot()
    before = rig.records()
    rig.create_behind_our_back(STRAY)

    report = _run(rig)
    assert report.counts() == {"seen": 2, "orphans": 1, "young": 0, "recorded": 1, "acted": 0}
    (event,) = rig.events("orphan")
    assert (event.zone, event.instance_uuid, event.action) == ("cloud-a", STRAY, "log")
    assert event.remote_id == rig.sim().get(STRAY).remote_id
    assert "no record or build accounts for it" in event.detail
    assert rig.sim().get(STRAY).state is PowerState.ACTIVE
    assert rig.records() == before  # the broker's own records are untouched
    assert rig.sim().get(mine).state is PowerState.ACTIVE

    again = _run(rig)
    assert (again.orphans, again.recorded) == (1, 0)
    assert len(rig.events("orphan")) == 1


def test_quarantine_stops_the_orphan_and_stops_it_again_if_restarted(
    make_rig: RigFactory,
) -> None:
    rig = make_rig(orphans={"action": "quarantine", **NOW_ORPHANS})
    mine = rig.boot()
    before = rig.records()
    rig.create_behind_our_back(STRAY)

    assert _run(rig).acted == 1
    assert rig.sim().get(STRAY).state is PowerState.SHUTOFF
    assert [e.action for e in rig.events("orphan")] == ["quarantine"]
    assert rig.sim().get(mine).state is PowerState.ACTIVE
    assert rig.records() == before

    assert (_run(rig).acted, len(rig.events("orphan"))) == (0, 1)  # still stopped
    rig.sim().start(STRAY)
    assert _run(rig).acted == 1
    assert rig.sim().get(STRAY).state is PowerState.SHUTOFF
    assert len(rig.events("orphan")) == 2


def test_delete_deletes_the_orphan(make_rig: RigFactory) -> None:
    rig = make_rig(orphans={"action": "delete", **NOW_ORPHANS})
    mine = rig.boot()
    before = rig.records()
    rig.create_behind_our_back(STRAY)

    assert _run(rig).acted == 1
    with pytest.raises(InstanceNotFound):
        rig.sim().get(STRAY)
    (event,) = rig.events("orphan")
    assert event.action == "delete" and "deleted" in event.detail
    assert rig.sim().get(mine).state is PowerState.ACTIVE
    assert rig.records() == before
    assert rig.zone("cloud-a").instances == 1


def test_young_orphans_wait_for_min_age(make_rig: RigFactory) -> None:
    rig = make_rig(orphans={"action": "delete", "min_age_seconds": 300})
    rig.create_behind_our_back(STRAY)
    report = _run(rig)
    assert (report.orphans, report.young, report.acted) == (0, 1, 0)
    assert rig.events("orphan") == []
    rig.sim().get(STRAY)  # still there

    later = utcnow() + timedelta(seconds=301)
    assert find_orphans(rig.broker.ctx, "cloud-a", clock=lambda: later).acted == 1


def test_the_default_policy_only_logs(rig: Rig) -> None:
    rig.create_behind_our_back(STRAY)
    later = utcnow() + timedelta(seconds=301)
    report = find_orphans(rig.broker.ctx, "cloud-a", clock=lambda: later)
    assert (report.orphans, report.acted) == (1, 0)
    assert [e.action for e in rig.events("orphan")] == ["log"]


def test_an_instance_being_built_is_never_an_orphan(make_rig: RigFactory) -> None:
    """Run the orphans job inside the driver's create: the instance exists remotely, but
    its record is not written yet."""
    rig = make_rig(orphans={"action": "delete", **NOW_ORPHANS})
    driver = rig.sim()
    create = driver.create
    during: list[OrphanReport] = []

    def create_then_look(spec: InstanceSpec) -> RemoteInstance:
        remote = create(spec)
        during.append(_run(rig))
        return remote

    driver.create = create_then_look  # type: ignore[method-assign]
    uuid = rig.boot()
    assert len(during) == 1
    assert (during[0].seen, during[0].orphans, during[0].young) == (1, 0, 0)
    assert rig.events("orphan") == []
    assert rig.record(uuid).status == "ACTIVE"


def test_accepted_but_unplaced_builds_are_not_orphans(make_rig: RigFactory) -> None:
    rig = make_rig(orphans={"action": "delete", **NOW_ORPHANS})
    (view,) = rig.broker.compute.boot(
        ADMIN,
        BootRequest(
            name="vm", flavor_ref="m1.tiny", image_ref="cirros", availability_zone="cloud-a"
        ),
    )
    rig.create_behind_our_back(view.uuid)  # as if a worker were creating it right now
    assert _run(rig).orphans == 0
    rig.sim().get(view.uuid)


def test_an_instance_whose_record_was_deleted_is_an_orphan(make_rig: RigFactory) -> None:
    rig = make_rig(orphans={"action": "log", **NOW_ORPHANS})
    uuid = rig.boot()
    rig.broker.compute.delete(ADMIN, uuid)
    rig.settle()
    rig.create_behind_our_back(uuid)  # the same uuid reappears behind the broker's back
    assert _run(rig).orphans == 1
    assert [e.instance_uuid for e in rig.events("orphan")] == [uuid]


def test_without_a_launch_time_age_counts_from_the_first_sighting(
    make_rig: RigFactory,
) -> None:
    rig = make_rig(orphans={"action": "delete", "min_age_seconds": 300})
    rig.create_behind_our_back(STRAY)
    driver = rig.sim()
    get, listing = driver.get, driver.list_instances

    def get_undated(uuid: str) -> RemoteInstance:
        return dataclasses.replace(get(uuid), launched_at=None)

    def list_undated(batch_size: int = 500) -> Iterator[Sequence[RemoteInstance]]:
        for batch in listing(batch_size):
            yield [dataclasses.replace(r, launched_at=None) for r in batch]

    driver.get = get_undated  # type: ignore[method-assign]
    driver.list_instances = list_undated  # type: ignore[method-assign]

    first = _run(rig)
    assert (first.young, first.recorded, first.acted) == (1, 1, 0)
    assert "launch time unknown" in rig.events("orphan")[0].detail
    assert _run(rig).counts() == {"seen": 1, "orphans": 0, "young": 1, "recorded": 0, "acted": 0}
    later = utcnow() + timedelta(seconds=301)
    assert find_orphans(rig.broker.ctx, "cloud-a", clock=lambda: later).acted == 1
    assert [e.action for e in rig.events("orphan")] == ["delete", "log"]
