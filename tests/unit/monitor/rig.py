"""A real broker (SQLite, sim zones) whose tasks run synchronously, for monitor job tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.engine import Engine

from drivers.sim.driver import SimDriver
from federator.broker import Broker
from federator.compute.service import BootRequest
from federator.driver import FlavorSpec, InstanceSpec
from federator.storage.events import EventView, list_events
from federator.storage.models import Allocation, Instance, InstanceMapping, Zone
from tests.conftest import ADMIN_CONTEXT, make_settings, sim_zone

ADMIN = ADMIN_CONTEXT


def open_broker(
    tmp_path: Path,
    *,
    orphans: dict[str, Any] | None = None,
    monitor: dict[str, Any] | None = None,
    database: dict[str, Any] | None = None,
) -> Broker:
    """A local zone of sim hosts and two opaque virtual zones; vanished instances are judged
    at once (no grace) unless ``monitor`` says otherwise."""
    policy: dict[str, Any] = {"version": "monitor-1", "allow_explicit_virtual_az": True}
    if orphans is not None:
        policy["orphans"] = orphans
    settings = make_settings(
        tmp_path,
        zones=[
            sim_zone("local", "local", hosts=2),
            sim_zone("cloud-a", "virtual", expose_hosts=False),
            sim_zone("cloud-b", "virtual", expose_hosts=False),
        ],
        policy=policy,
        monitor={"vanish_grace_seconds": 0, **(monitor or {})},
        database=database,
    )
    return Broker.open(settings)


@dataclass
class Rig:
    broker: Broker

    def settle(self) -> None:
        """Run every queued task to its end, in this thread."""
        while (task := self.broker.queue.take()) is not None:
            self.broker.workers.run_one(task)

    def boot(self, zone: str = "cloud-a", name: str = "vm", flavor: str = "m1.small") -> str:
        views = self.broker.compute.boot(
            ADMIN,
            BootRequest(name=name, flavor_ref=flavor, image_ref="cirros", availability_zone=zone),
        )
        self.settle()
        return views[0].uuid

    def sim(self, zone: str = "cloud-a") -> SimDriver:
        driver = self.broker.drivers[zone]
        assert isinstance(driver, SimDriver)
        return driver

    def record(self, uuid: str, cell: str = "cell1") -> Instance:
        with self.broker.dbs.cells[cell].read() as s:
            inst = s.get(Instance, uuid)
            assert inst is not None
            return inst

    def records(self) -> dict[str, tuple[Any, ...]]:
        """Every cell1 record's mutable fields, to show what a job left untouched."""
        with self.broker.dbs.cells["cell1"].read() as s:
            return {
                i.uuid: (i.status, i.task_state, i.fault, i.host, i.remote_id, i.updated_at)
                for i in s.scalars(select(Instance))
            }

    def allocation(self, uuid: str) -> Allocation | None:
        with self.broker.dbs.api.read() as s:
            return s.get(Allocation, uuid)

    def mapping(self, uuid: str) -> InstanceMapping | None:
        with self.broker.dbs.api.read() as s:
            return s.get(InstanceMapping, uuid)

    def zone(self, name: str) -> Zone:
        with self.broker.dbs.api.read() as s:
            z = s.get(Zone, name)
            assert z is not None
            return z

    def events(self, kind: str | None = None, zone: str | None = None) -> list[EventView]:
        return list_events(self.broker.dbs.api, zone=zone, kind=kind)

    def create_behind_our_back(self, uuid: str, zone: str = "cloud-a") -> None:
        """An instance tagged with this broker's id that the broker never asked for."""
        self.sim(zone).create(
            InstanceSpec(
                uuid=uuid,
                name="stray",
                flavor=FlavorSpec("m1.tiny", 1, 512, 1),
                image="cirros",
                project_id="someone",
                broker_id=self.broker.settings.broker_id,
            )
        )

    @contextmanager
    def statements(self) -> Iterator[list[str]]:
        """Every SQL statement run against the API database and the cells meanwhile."""
        seen: list[str] = []
        engines: list[Engine] = [self.broker.dbs.api.engine]
        engines += [db.engine for db in self.broker.dbs.cells.values()]

        def note(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            seen.append(statement)

        for engine in engines:
            event.listen(engine, "before_cursor_execute", note)
        try:
            yield seen
        finally:
            for engine in engines:
                event.remove(engine, "before_cursor_execute", note)


def writes(statements: list[str]) -> list[str]:
    return [
        s
        for s in statements
        if s.lstrip().split(None, 1)[0].upper() in {"INSERT", "UPDATE", "DELETE"}
    ]
