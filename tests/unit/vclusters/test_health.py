"""The health of built virtual clusters on a real broker (SQLite, sim zones): a member gone
wrong in its cloud or in its record makes the cluster DEGRADED naming it, a cluster whole
again is ACTIVE, and clusters being built, updated, deleted or in ERROR are left alone."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from drivers.sim.blockstorage import SimBlockStorage
from drivers.sim.driver import SimDriver
from federator import errors
from federator.broker import Broker
from federator.driver import PowerState
from federator.monitor.service import Monitor
from federator.monitor.sync import sync_zone
from federator.storage.events import list_events
from federator.storage.models import Instance, VCluster, VClusterMember, Volume
from federator.vclusters.health import EVENT_KIND, apply, check_clusters, judge
from federator.volumes.sync import sync_volumes
from tests.conftest import ADMIN_CONTEXT, make_settings, sim_zone
from tests.functional import vcluster_support as vc


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    settings = make_settings(
        tmp_path,
        zones=[sim_zone("local", "local", hosts=2, volume_pool_gb=100)],
        policy={"version": "vc-health-1", "zones": {"local": {}}},
        monitor={"vanish_grace_seconds": 0},
    )
    b = Broker.open(settings)
    yield b
    b.stop()


def settle(b: Broker, timeout: float = 30.0) -> None:
    """Run every queued task to its end in this thread, waiting for postponed ones."""
    deadline = time.monotonic() + timeout
    while b.queue.pending():
        task = b.queue.take()
        if task is None:
            assert time.monotonic() < deadline, "tasks still pending"
            time.sleep(0.01)  # a postponed task is not due yet
            continue
        b.workers.run_one(task)


def built(b: Broker, body: dict[str, Any]) -> str:
    cid = b.vclusters.create(ADMIN_CONTEXT, body).id
    settle(b)
    assert b.vclusters.get(ADMIN_CONTEXT, cid).status == "ACTIVE"
    return cid


def member(b: Broker, cid: str, name: str) -> str:
    with b.dbs.api.read() as s:
        uuid = s.scalar(
            select(VClusterMember.uuid).where(
                VClusterMember.cluster_uuid == cid, VClusterMember.name == name
            )
        )
    assert uuid is not None
    return uuid


def row(b: Broker, cid: str) -> VCluster:
    with b.dbs.api.read() as s:
        c = s.get(VCluster, cid)
        assert c is not None
        s.expunge(c)
        return c


def sim(b: Broker) -> SimDriver:
    driver = b.drivers["local"]
    assert isinstance(driver, SimDriver)
    return driver


def storage(b: Broker) -> SimBlockStorage:
    s = sim(b).block_storage()
    assert isinstance(s, SimBlockStorage)
    return s


def shown(b: Broker, cid: str) -> dict[str, Any]:
    return b.vclusters.get(ADMIN_CONTEXT, cid).as_dict()


def events(b: Broker) -> list[Any]:
    return list_events(b.dbs.api, kind=EVENT_KIND)


def test_a_healthy_cluster_is_checked_and_left_as_it_is(broker: Broker) -> None:
    cid = built(broker, vc.use_case_2())
    before = row(broker, cid)
    report = check_clusters(broker.ctx)
    assert (report.checked, report.degraded, report.changes) == (1, 0, [])
    assert row(broker, cid).updated_at == before.updated_at
    assert events(broker) == []


def test_a_member_server_vanishing_in_its_cloud_degrades_the_cluster_naming_it(
    broker: Broker,
) -> None:
    cid = built(broker, vc.use_case_1())
    sid = member(broker, cid, "web-server")
    assert sim(broker).ex_vanish(sid)
    assert sync_zone(broker.ctx, "local").vanished == 1

    report = check_clusters(broker.ctx)
    assert [(c.cluster, c.before, c.after) for c in report.changes] == [(cid, "ACTIVE", "DEGRADED")]
    assert report.degraded == 1
    c = shown(broker, cid)
    assert c["status"] == "DEGRADED"
    f = c["fault"]
    assert f["code"] == errors.VCLUSTER_DEGRADED == "federator.vcluster.degraded"
    assert "server web-server" in f["message"]
    assert len(f["details"]) == 1
    assert f["details"][0].startswith(f"server web-server ({sid}): instance vanished from zone")
    assert row(broker, cid).fault["reason"] == "degraded"  # type: ignore[index]
    [e] = events(broker)
    assert (e.zone, e.instance_uuid, e.action) == ("local", sid, "degraded")
    assert cid in e.detail and "ACTIVE -> DEGRADED" in e.detail

    # Nothing new: no write, no second event.
    updated = row(broker, cid).updated_at
    again = check_clusters(broker.ctx)
    assert (again.changes, again.degraded) == ([], 1)
    assert row(broker, cid).updated_at == updated
    assert len(events(broker)) == 1


def test_a_member_set_error_behind_the_brokers_back_degrades_and_healing_restores_active(
    broker: Broker,
) -> None:
    cid = built(broker, vc.use_case_1())
    sid = member(broker, cid, "web-server")
    sim(broker).ex_set_state(sid, PowerState.ERROR)
    assert sync_zone(broker.ctx, "local").changed == 1

    assert [c.after for c in check_clusters(broker.ctx).changes] == ["DEGRADED"]
    c = shown(broker, cid)
    assert c["status"] == "DEGRADED"
    assert c["fault"]["details"] == [f"server web-server ({sid}): is ERROR"]

    sim(broker).ex_set_state(sid, PowerState.ACTIVE)
    assert sync_zone(broker.ctx, "local").changed == 1
    report = check_clusters(broker.ctx)
    assert [(c.before, c.after) for c in report.changes] == [("DEGRADED", "ACTIVE")]
    c = shown(broker, cid)
    assert c["status"] == "ACTIVE" and "fault" not in c
    assert row(broker, cid).fault is None
    healed, degraded = events(broker)
    assert (healed.action, healed.zone, healed.instance_uuid) == ("active", "local", None)
    assert "DEGRADED -> ACTIVE" in healed.detail
    assert degraded.action == "degraded"


def test_a_member_volume_vanishing_in_its_cloud_degrades_the_cluster(broker: Broker) -> None:
    cid = built(broker, vc.use_case_1())
    vid = member(broker, cid, "web-vol")
    assert storage(broker).ex_vanish(vid)
    assert sync_volumes(broker.ctx, "local").vanished == 1

    assert [c.after for c in check_clusters(broker.ctx).changes] == ["DEGRADED"]
    [detail] = shown(broker, cid)["fault"]["details"]
    assert detail.startswith(f"volume web-vol ({vid}): is error: ")
    assert "local" in detail


def test_a_member_volume_record_deleted_degrades_the_cluster(broker: Broker) -> None:
    cid = built(broker, vc.use_case_1())
    vid = member(broker, cid, "web-vol")
    with broker.dbs.api.write() as s:
        s.execute(update(Volume).where(Volume.uuid == vid).values(deleted=True, status="deleted"))

    assert [c.after for c in check_clusters(broker.ctx).changes] == ["DEGRADED"]
    assert shown(broker, cid)["fault"]["details"] == [f"volume web-vol ({vid}): was deleted"]


def test_a_second_member_going_wrong_rewrites_the_fault_and_notes_only_it(
    broker: Broker,
) -> None:
    cid = built(broker, vc.use_case_2())
    s1, s2 = member(broker, cid, "db-server-1"), member(broker, cid, "db-server-2")
    assert sim(broker).ex_vanish(s1)
    sync_zone(broker.ctx, "local")
    check_clusters(broker.ctx)
    assert [d.split(" (")[0] for d in shown(broker, cid)["fault"]["details"]] == [
        "server db-server-1"
    ]

    sim(broker).ex_set_state(s2, PowerState.ERROR)
    sync_zone(broker.ctx, "local")
    report = check_clusters(broker.ctx)
    assert [(c.before, c.after) for c in report.changes] == [("DEGRADED", "DEGRADED")]
    f = shown(broker, cid)["fault"]
    assert [d.split(" (")[0] for d in f["details"]] == ["server db-server-1", "server db-server-2"]
    assert "2 members" in f["message"]
    assert [e.instance_uuid for e in events(broker)] == [s2, s1]  # newest first
    assert "still DEGRADED" in events(broker)[0].detail


def test_build_error_and_deleting_clusters_are_never_touched(broker: Broker) -> None:
    unplaceable = {"vcluster": {
        "name": "too-many",
        "instances": [vc.server("a"), vc.server("b"), vc.server("c")],
        "groupings": [vc.grouping("apart", "anti-affinity", "a", "b", "c")],
    }}  # fmt: skip
    error = broker.vclusters.create(ADMIN_CONTEXT, unplaceable).id
    settle(broker)
    assert row(broker, error).status == "ERROR"
    deleting = built(broker, vc.use_case_1())
    assert sim(broker).ex_vanish(member(broker, deleting, "web-server"))
    sync_zone(broker.ctx, "local")
    broker.vclusters.delete(ADMIN_CONTEXT, deleting)
    # Accepted, not yet built: its members have no records at all.
    building = broker.vclusters.create(ADMIN_CONTEXT, vc.use_case_1()).id
    before = {cid: row(broker, cid) for cid in (error, deleting, building)}

    report = check_clusters(broker.ctx)
    assert (report.checked, report.changes) == (0, [])
    for cid, was in before.items():
        now = row(broker, cid)
        assert (now.status, now.phase, now.fault, now.updated_at) == (
            was.status,
            was.phase,
            was.fault,
            was.updated_at,
        )
    assert (before[error].status, before[deleting].status, before[building].status) == (
        "ERROR",
        "DELETING",
        "BUILD",
    )
    assert before[error].fault["code"] == errors.GROUP_POLICY  # type: ignore[index]
    assert events(broker) == []


def test_a_cluster_updated_after_it_was_judged_is_not_moved(broker: Broker) -> None:
    body = {"vcluster": {"name": "solo", "instances": [vc.server("solo")]}}
    cid = built(broker, body)
    sid = member(broker, cid, "solo")
    assert sim(broker).ex_vanish(sid)
    sync_zone(broker.ctx, "local")
    [verdict] = judge(broker.ctx)
    assert verdict.wanted == "DEGRADED" and verdict.needs_change()

    # The same body again: an update rebuilds nothing it kept, but it moves the cluster.
    broker.vclusters.update(ADMIN_CONTEXT, cid, body)
    assert row(broker, cid).status == "BUILD"
    assert apply(broker.ctx, verdict) is None
    assert row(broker, cid).status == "BUILD"

    settle(broker)
    assert row(broker, cid).status == "ACTIVE"
    # ACTIVE and done again, as when it was judged, but changed meanwhile.
    assert apply(broker.ctx, verdict) is None
    c = shown(broker, cid)
    assert c["status"] == "ACTIVE", c
    assert events(broker) == []
    # Judged afresh, the member that vanished still degrades it.
    assert len(check_clusters(broker.ctx).changes) == 1
    c = shown(broker, cid)
    assert c["status"] == "DEGRADED" and sid in c["fault"]["details"][0]


def test_a_member_never_built_in_a_done_cluster_degrades_it(broker: Broker) -> None:
    cid = built(broker, vc.use_case_1())
    with broker.dbs.api.write() as s:
        s.execute(
            update(VClusterMember)
            .where(VClusterMember.cluster_uuid == cid, VClusterMember.name == "web-vol")
            .values(state="replan")
        )
    check_clusters(broker.ctx)
    assert shown(broker, cid)["fault"]["details"] == [
        f"volume web-vol ({member(broker, cid, 'web-vol')}): is not built (state replan)"
    ]


def test_a_server_being_deleted_or_deleted_degrades_the_cluster(broker: Broker) -> None:
    cid = built(broker, vc.use_case_2())
    s1, s2 = member(broker, cid, "db-server-1"), member(broker, cid, "db-server-2")
    with broker.dbs.cells["cell1"].write() as s:
        s.execute(update(Instance).where(Instance.uuid == s1).values(task_state="deleting"))
        s.execute(update(Instance).where(Instance.uuid == s2).values(deleted=True))
    check_clusters(broker.ctx)
    assert shown(broker, cid)["fault"]["details"] == [
        f"server db-server-1 ({s1}): is being deleted",
        f"server db-server-2 ({s2}): was deleted",
    ]


def test_the_monitor_runs_the_check_as_its_own_job(broker: Broker) -> None:
    cid = built(broker, vc.use_case_1())
    sim(broker).ex_set_state(member(broker, cid, "web-server"), PowerState.ERROR)
    sync_zone(broker.ctx, "local")
    monitor = Monitor(broker.ctx)
    try:
        monitor.start()
        record = monitor.run_now("vclusters")
        assert record.last_error == ""
        assert record.last_result == "checked 1, degraded 1, changed 1 (web ACTIVE->DEGRADED)"
        assert row(broker, cid).status == "DEGRADED"
    finally:
        monitor.stop()


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_the_move_is_conditional_on_what_was_read_on_each_backend(
    tmp_path: Path, request: pytest.FixtureRequest, backend: str
) -> None:
    database = None
    if backend == "postgresql":
        make_pg: Callable[[], str] = request.getfixturevalue("pg_database_factory")
        database = {"api_url": make_pg(), "cell0_url": make_pg(), "cells": {"cell1": make_pg()}}
    settings = make_settings(
        tmp_path,
        zones=[sim_zone("local", "local", hosts=2, volume_pool_gb=100)],
        policy={"version": "vc-health-1", "zones": {"local": {}}},
        monitor={"vanish_grace_seconds": 0},
        database=database,
    )
    b = Broker.open(settings)
    try:
        cid = built(b, vc.use_case_1())
        assert sim(b).ex_vanish(member(b, cid, "web-server"))
        sync_zone(b.ctx, "local")
        [verdict] = judge(b.ctx)
        # The cluster as read: the move happens, once.
        change = apply(b.ctx, verdict)
        assert change is not None and (change.before, change.after) == ("ACTIVE", "DEGRADED")
        assert row(b, cid).status == "DEGRADED"
        assert apply(b.ctx, verdict) is None
        assert len(events(b)) == 1
    finally:
        b.stop()
