"""How few API-database transactions a boot takes, and that merging them keeps it safe.

Accepting writes every row of a (multi-)create in one transaction; a successful build ends
its task in the transaction that maps the instance; and the transaction that ends a task
also takes the worker's next one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from federator.broker import Broker, Databases
from federator.compute.queue import DONE, TaskQueue, TaskRef
from federator.compute.service import BootRequest
from federator.config import Settings
from federator.storage.models import BuildRequest, InstanceMapping, RequestSpec, Task
from tests.conftest import ADMIN_CONTEXT, make_settings, sim_zone
from tests.functional.capacity import check_drivers, check_ledger


class Crash(BaseException):
    """Stands for the process dying inside a transaction: nothing catches it."""


def _settings(tmp_path: Path, database: dict[str, Any] | None = None) -> Settings:
    return make_settings(
        tmp_path,
        zones=[sim_zone("local", "local", hosts=2, host_ram_mb=16384)],
        policy={"version": "boot-tx.1", "zones": {}, "rules": []},
        workers={"count": 1, "poll_interval": 0.1},
        database=database,
    )


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """A one-worker broker's settings on SQLite, or with every database on PostgreSQL
    (where taking a task locks its row ``FOR UPDATE SKIP LOCKED``)."""
    if request.param == "sqlite":
        return _settings(tmp_path)
    make: Callable[[], str] = request.getfixturevalue("pg_database_factory")
    return _settings(tmp_path, {"api_url": make(), "cell0_url": make(), "cells": {"cell1": make()}})


def _settle(broker: Broker, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while broker.queue.pending():
        assert time.monotonic() < deadline, "the builds did not finish"
        time.sleep(0.02)


def _task_states(settings: Settings) -> dict[str, int]:
    dbs = Databases.from_settings(settings)
    try:
        with dbs.api.read() as s:
            return dict(s.execute(select(Task.state, func.count()).group_by(Task.state)).all())
    finally:
        dbs.dispose()


def test_a_multi_create_is_accepted_in_one_api_transaction(tmp_path: Path) -> None:
    broker = Broker.open(_settings(tmp_path))
    try:
        before = broker.dbs.api.write_gate_stats().count
        views = broker.compute.boot(
            ADMIN_CONTEXT,
            BootRequest(
                name="vm", flavor_ref="m1.small", image_ref="cirros", min_count=3, max_count=3
            ),
        )
        assert broker.dbs.api.write_gate_stats().count - before == 1
        assert [v.name for v in views] == ["vm-1", "vm-2", "vm-3"]
        assert all(v.status == "BUILD" and v.flavor["name"] == "m1.small" for v in views)
        uuids = {v.uuid for v in views}
        with broker.dbs.api.read() as s:
            assert set(s.scalars(select(BuildRequest.instance_uuid))) == uuids
            assert set(s.scalars(select(RequestSpec.instance_uuid))) == uuids
            mapped = s.execute(select(InstanceMapping.instance_uuid, InstanceMapping.cell)).all()
            assert {(u, None) for u in uuids} == set(mapped)
            tasks = s.execute(select(Task.instance_uuid, Task.action, Task.state)).all()
            assert sorted(tasks) == sorted((u, "build", "queued") for u in uuids)
            spec = s.get_one(RequestSpec, views[0].uuid).spec
            assert spec["name"] == "vm-1" and spec["flavor_id"] == views[0].flavor_id
    finally:
        broker.stop()


def test_a_successful_build_ends_its_task_in_the_mapping_transaction(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = Broker.open(settings)
    seen: list[tuple[int, bool, str | None]] = []
    finished: list[int] = []
    queue = broker.queue
    finish_in, finish = queue.finish_in, queue.finish

    def spy_finish_in(s: Session, task_id: int, **kwargs: Any) -> None:
        uuid = s.get_one(Task, task_id).instance_uuid
        mapping = s.get_one(InstanceMapping, uuid)
        seen.append((task_id, s.get(BuildRequest, uuid) is None, mapping.cell))
        finish_in(s, task_id, **kwargs)

    def spy_finish(task_id: int, **kwargs: Any) -> TaskRef | None:
        finished.append(task_id)
        return finish(task_id, **kwargs)

    monkeypatch.setattr(queue, "finish_in", spy_finish_in)
    monkeypatch.setattr(queue, "finish", spy_finish)
    try:
        broker.start(monitor=False)
        [view] = broker.compute.boot(
            ADMIN_CONTEXT, BootRequest(name="vm", flavor_ref="m1.small", image_ref="cirros")
        )
        _settle(broker)
        assert broker.compute.get(ADMIN_CONTEXT, view.uuid).status == "ACTIVE"
        with broker.dbs.api.read() as s:
            [(task_id, state)] = s.execute(select(Task.id, Task.state)).all()
        assert state == DONE
        # Ended where the build request was already gone and the mapping pointed at the
        # cell: the same transaction; and the worker did not end it a second time.
        assert seen == [(task_id, True, "cell1")]
        assert finished == []
    finally:
        broker.stop()


def test_a_crash_while_ending_the_task_rolls_back_the_mapping_too(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    died = threading.Event()
    default_hook = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if isinstance(args.exc_value, Crash):
            died.set()
        else:
            default_hook(args)

    def crash(*_args: Any, **_kwargs: Any) -> None:
        raise Crash

    monkeypatch.setattr(threading, "excepthook", hook)
    broker = Broker.open(settings)
    try:
        monkeypatch.setattr(broker.queue, "finish_in", crash)
        broker.start(monitor=False)
        [view] = broker.compute.boot(
            ADMIN_CONTEXT, BootRequest(name="vm", flavor_ref="m1.small", image_ref="cirros")
        )
        assert died.wait(10), "the build did not reach the end of its task"
        with broker.dbs.api.read() as s:
            assert s.get(BuildRequest, view.uuid) is not None
            assert s.get_one(InstanceMapping, view.uuid).cell is None
    finally:
        broker.stop()
    assert _task_states(settings) == {"running": 1}

    broker = Broker.open(settings)
    try:
        broker.start(monitor=False)
        _settle(broker)
        final = broker.compute.get(ADMIN_CONTEXT, view.uuid)
        assert (final.status, final.cell) == ("ACTIVE", "cell1")
        ledger = check_ledger(broker.dbs)
        assert set(ledger.placed) == {view.uuid} and not ledger.buried
        check_drivers(ledger, broker.drivers)
    finally:
        broker.stop()
    assert _task_states(settings) == {DONE: 1}


def test_ending_a_task_takes_the_workers_next_one_in_the_same_transaction(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = Broker.open(settings)
    taken_alone: list[int] = []
    take = TaskQueue.take

    def spy_take(self: TaskQueue) -> TaskRef | None:
        got = take(self)
        if got is not None:
            taken_alone.append(got.id)
        return got

    monkeypatch.setattr(TaskQueue, "take", spy_take)
    try:
        broker.start(monitor=False)
        views = broker.compute.boot(
            ADMIN_CONTEXT,
            BootRequest(
                name="vm", flavor_ref="m1.small", image_ref="cirros", min_count=4, max_count=4
            ),
        )
        _settle(broker)
        assert {broker.compute.get(ADMIN_CONTEXT, v.uuid).status for v in views} == {"ACTIVE"}
        with broker.dbs.api.read() as s:
            states = s.execute(select(Task.id, Task.state).order_by(Task.id)).all()
        assert {state for _, state in states} == {DONE}
        # One worker: it took the first task on its own, each later one in the
        # transaction that ended the one before.
        assert taken_alone == [states[0][0]]
    finally:
        broker.stop()
