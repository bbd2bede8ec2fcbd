"""Draining a host: cold-migrate every instance on it to other hosts of its availability
zone, so it can be taken down.

``create`` is idempotent on the broker's uuid, so a second instance of the same uuid
cannot be made through it; a driver that can move instances has the ``cold_migrate``
capability and ``migrate(uuid, host)`` (the instance exists on the destination before it
leaves the source, and a failure leaves it on the source). The ``sim`` and ``libvirt``
drivers have it. A zone whose driver lacks it, or does not let the broker schedule hosts,
cannot be drained (409).

One instance moves in these steps, each leaving the databases consistent:

1. Its record takes ``task_state = "migrating"`` (only from ACTIVE or SHUTOFF with no
   task running), so no start, stop or reboot is accepted and the monitor leaves it alone.
2. **Move claim.** A destination is chosen by the host scheduler among the other hosts
   of the same availability zone; in one transaction its counters take the instance's
   allocated resources and a ``migrations`` row records the move.
3. The instance is stopped if it was ACTIVE, then relocated by the driver.
4. **Settle.** The driver is asked where the instance is. On the destination: one
   transaction points the allocation there and gives the source host's counters back,
   removing the ``migrations`` row; then the record's host follows and the instance is
   started again if it was ACTIVE. Anywhere else: the destination's counters are given
   back (the row goes with them) and the instance is started again on its source.

A crash between 2 and 4 leaves a ``migrations`` row; the broker's next start (and any
drain, host list or host show) settles it the same way (rows of another live broker
process are left to it).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import select, update

from federator.compute import claims
from federator.compute.context import ComputeContext
from federator.compute.records import CELL0
from federator.driver import Driver, DriverError, InstanceNotFound, PowerState, RemoteInstance
from federator.exception import Conflict
from federator.groups.placement import Guard, fit, load, modes_of
from federator.groups.rules import ZoneMode
from federator.groups.service import group_of
from federator.hosts.service import HostService, get_host
from federator.policy.evaluate import zone_weighing
from federator.scheduler.request import HostRequest
from federator.storage.models import (
    Allocation,
    Host,
    Instance,
    InstanceMapping,
    Migration,
    Node,
    utcnow,
)

__all__ = ["DrainReport", "Drainer", "MoveReport"]

LOG = logging.getLogger(__name__)
MIGRATING = "migrating"
ALTERNATES = 5
MAX_RESELECT = 20
_MOVABLE = ("ACTIVE", "SHUTOFF")

Outcome = Literal["moved", "stayed", "failed"]


@dataclass(frozen=True, slots=True)
class MoveReport:
    """What became of one instance of a drained host."""

    uuid: str
    name: str
    outcome: Outcome
    source: str
    target: str | None
    status: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class DrainReport:
    zone: str
    host: str
    moves: tuple[MoveReport, ...]

    def count(self, outcome: Outcome) -> int:
        return sum(1 for m in self.moves if m.outcome == outcome)


class _Moving:
    """Instances this process is moving right now: their ``migrations`` rows are live,
    not left behind by a crash."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._uuids: set[str] = set()

    def claim(self, uuid: str) -> bool:
        with self._lock:
            if uuid in self._uuids:
                return False
            self._uuids.add(uuid)
            return True

    def release(self, uuid: str) -> None:
        with self._lock:
            self._uuids.discard(uuid)

    def __contains__(self, uuid: object) -> bool:
        with self._lock:
            return uuid in self._uuids


_MOVING = _Moving()


@dataclass(frozen=True, slots=True)
class _Move:
    """A ``migrations`` row, detached, with the names of its hosts."""

    uuid: str
    zone: str
    source: str
    target: str
    was_active: bool


class Drainer:
    def __init__(self, ctx: ComputeContext) -> None:
        self.ctx = ctx

    def relocating_driver(self, zone: str) -> Driver:
        """The zone's driver, if it can move instances between hosts.

        :raises Conflict: it does not let the broker schedule hosts, or cannot move an
            instance from one host to another.
        """
        driver = self.ctx.drivers.get(zone)
        if driver is None or not driver.capabilities().host_scheduling:
            raise Conflict(
                f"zone {zone}'s driver does not let the broker schedule hosts, so the broker "
                "cannot move instances between its hosts; drain them with the cloud's own tools"
            )
        if not driver.capabilities().cold_migrate:
            raise Conflict(
                f"zone {zone}'s driver ({self.ctx.settings.zone(zone).driver}) cannot move an "
                "instance from one host to another (no cold migration), so its hosts "
                "cannot be drained by the broker"
            )
        return driver

    def drain(self, zone: str, name: str, reason: str = "") -> DrainReport:
        """Move every instance of the host elsewhere in its availability zone.

        The host is put in maintenance first if it still takes instances. Instances that
        cannot move (still building, busy, in ERROR, or with no room elsewhere) stay and
        are reported with the reason.

        :raises NotFound: no such host. :raises Conflict: the zone's driver cannot move
            instances between hosts.
        """
        driver = self.relocating_driver(zone)
        self.reconcile()
        with self.ctx.api.read() as s:
            host = get_host(s, zone, name)
            s.expunge(host)
        if host.enabled:
            HostService(self.ctx).enter_maintenance(zone, name, reason or "draining")
        with self.ctx.api.read() as s:
            uuids = s.scalars(
                select(Allocation.instance_uuid)
                .where(Allocation.host_id == host.id)
                .order_by(Allocation.created_at, Allocation.instance_uuid)
            ).all()
        moves = tuple(self._move(driver, host, uuid) for uuid in uuids)
        self.ctx.hosts.refresh_zone(zone)
        done = sum(1 for m in moves if m.outcome == "moved")
        LOG.info("drain %s/%s: %d of %d instance(s) moved", zone, name, done, len(moves))
        return DrainReport(zone, name, moves)

    def reconcile(self) -> int:
        """Settle moves a crash (or a driver that could not be asked) left behind; moves
        this process is carrying out, and those of other live broker processes, are left
        alone. Returns how many were settled."""
        lease = self.ctx.settings.workers.lease_seconds
        now = self.ctx.queue.clock()
        with self.ctx.api.read() as s:
            alive = {
                n.node_id
                for n in s.scalars(select(Node))
                if n.heartbeat_at >= now - lease and n.node_id != self.ctx.settings.node_id
            }
            rows = [m for m in s.scalars(select(Migration)) if m.node not in alive]
        settled = 0
        for row in rows:
            if not _MOVING.claim(row.instance_uuid):
                continue
            try:
                move = self._load(row.instance_uuid)
                if move is not None:
                    LOG.warning("move of %s was interrupted; settling it", move.uuid)
                    self._settle(move, "the move was interrupted")
                    settled += 1
            finally:
                _MOVING.release(row.instance_uuid)
        if settled:
            self.ctx.hosts.reload()
        return settled

    # --- one instance ------------------------------------------------------------------

    def _move(self, driver: Driver, source: Host, uuid: str) -> MoveReport:
        def stayed(name: str, status: str, detail: str) -> MoveReport:
            return MoveReport(uuid, name, "stayed", source.name, None, status, detail)

        with self.ctx.api.read() as s:
            mapping = s.get(InstanceMapping, uuid)
            cell = None if mapping is None else mapping.cell
        if cell is None or cell == CELL0:
            return stayed("", "BUILD", "still being built")
        with self.ctx.cells[cell].read() as s:
            inst = s.get(Instance, uuid)
            if inst is not None:
                s.expunge(inst)
        if inst is None or inst.deleted:
            return stayed("", "DELETED", "deleted meanwhile")
        if inst.task_state or inst.status not in _MOVABLE:
            what = f"{inst.status} with task {inst.task_state} in progress"
            return stayed(
                inst.name,
                inst.status,
                f"{what if inst.task_state else inst.status}: only ACTIVE and SHUTOFF "
                "instances with no task in progress are moved",
            )
        if not _MOVING.claim(uuid):
            return stayed(inst.name, inst.status, "another drain is moving it")
        try:
            if not self._mark(cell, uuid):
                return stayed(inst.name, inst.status, "a task started on it meanwhile")
            was_active = inst.status == "ACTIVE"
            target, why = self._reserve(source, uuid, was_active, inst)
            if target is None:
                self._unmark(cell, uuid, None)
                return stayed(inst.name, inst.status, why)
            error = self._relocate(driver, uuid, target, was_active)
            move = _Move(uuid, source.zone, source.name, target, was_active)
            return self._settle(move, error, name=inst.name)
        finally:
            _MOVING.release(uuid)

    def _reserve(
        self, source: Host, uuid: str, was_active: bool, inst: Instance | None = None
    ) -> tuple[str | None, str]:
        """Choose a destination and claim the instance's resources on it; the destination
        meets the aggregate rules the instance was placed under (``inst``'s project,
        flavor extra specs and image properties)."""
        with self.ctx.api.read() as s:
            alloc = s.get(Allocation, uuid)
        if alloc is None or alloc.host_id != source.id:
            return None, "its allocation is no longer on this host"
        flavor = self.ctx.settings.flavor(inst.flavor_id) if inst else None
        image = self.ctx.settings.image(inst.image_id) if inst else None
        req = HostRequest(
            zone=source.zone,
            vcpus=alloc.vcpus,
            ram_mb=alloc.ram_mb,
            disk_gb=alloc.disk_gb,
            az=source.az,
            weighing=zone_weighing(self.ctx.policies.current.policy, source.zone),
            ignore_hosts=frozenset({source.name}),
            project_id=inst.project_id if inst else None,
            extra_specs=flavor.extra_specs if flavor else {},
            image_properties=image.properties if image else {},
        )
        req, guard = self._group_rule(uuid, source.zone, req)
        cache = self.ctx.hosts
        cache.refresh_zone(source.zone)
        for _ in range(MAX_RESELECT):
            names = self.ctx.scheduler.select(cache.table, req, limit=ALTERNATES)
            if not names:
                counts = self.ctx.scheduler.filter_counts(cache.table, req)
                removed = ", ".join(f"{f} removed {n}" for f, n in counts.items() if n)
                if guard is not None and self.ctx.scheduler.select(
                    cache.table, req.without_group(), limit=1
                ):
                    return None, (
                        f"its server group {guard.group_uuid}'s rule leaves no other host of "
                        f"availability zone {source.az} ({removed})"
                    )
                return None, (
                    f"no other host of availability zone {source.az} has {alloc.ram_mb} MB RAM, "
                    f"{alloc.vcpus} vCPU and {alloc.disk_gb} GB disk free"
                    + (f" ({removed})" if removed else "")
                )
            for name in names:
                host_id = cache.host_id(source.zone, name)
                if host_id is None:
                    continue
                usage = claims.reserve_move(
                    self.ctx.api,
                    instance_uuid=uuid,
                    source_host_id=source.id,
                    dest_host_id=host_id,
                    was_active=was_active,
                    node=self.ctx.settings.node_id,
                    guard=guard,
                )
                if usage is not None:
                    cache.set_usage(
                        host_id,
                        usage.vcpus_used,
                        usage.ram_used_mb,
                        usage.disk_used_gb,
                        usage.instances,
                    )
                    return name, ""
                cache.refresh_host(host_id)
        return None, f"gave up after {MAX_RESELECT} contended claims"

    def _group_rule(
        self, uuid: str, zone: str, req: HostRequest
    ) -> tuple[HostRequest, Guard | None]:
        """The request narrowed by the instance's server group, if it has a hard rule,
        and the guard its move claim runs (the destination must keep the rule too)."""
        with self.ctx.api.read() as s:
            group = group_of(s, uuid)
            state = load(s, group, uuid) if group else None
        if state is None or not state.rule.hard:
            return req, None
        zfit = fit(state, zone, ZoneMode.HOSTS, self.ctx.hosts.table.zone_azs(zone))
        return zfit.narrow(req), Guard(state.uuid, uuid, modes_of(self.ctx.drivers))

    def _relocate(self, driver: Driver, uuid: str, target: str, was_active: bool) -> str | None:
        """Stop (if running) and relocate; the error, or None. Never raises: whatever
        happened, the driver is asked afterwards where the instance is."""
        try:
            if was_active:
                driver.stop(uuid)
            driver.migrate(uuid, target)
        except DriverError as exc:
            return exc.message
        except Exception as exc:
            LOG.exception("moving %s to %s failed unexpectedly", uuid, target)
            return f"unexpected error ({type(exc).__name__})"
        return None

    def _settle(self, move: _Move, error: str | None, *, name: str = "") -> MoveReport:
        """Finish or undo a move according to where the driver says the instance is."""
        driver = self.ctx.drivers.get(move.zone)
        remote: RemoteInstance | None = None
        try:
            if driver is not None:
                remote = driver.get(move.uuid)
        except InstanceNotFound:
            remote = None
        except DriverError as exc:
            # Where it is cannot be told now; the row stays for the next reconcile.
            return MoveReport(
                move.uuid,
                name,
                "failed",
                move.source,
                move.target,
                "UNKNOWN",
                f"{error or 'moved'}; then the zone could not be asked where it is "
                f"({exc.message}); it is settled at the next drain or host listing",
            )
        cell = self._cell_of(move.uuid)
        if remote is not None and remote.host == move.target:
            result = claims.finish_move(self.ctx.api, move.uuid)
            if result is None:
                return MoveReport(
                    move.uuid,
                    name,
                    "failed",
                    move.source,
                    move.target,
                    remote.state.value,
                    "the move was settled elsewhere meanwhile",
                )
            if not result.moved:
                return MoveReport(
                    move.uuid,
                    name,
                    "failed",
                    move.source,
                    move.target,
                    "DELETED",
                    "deleted while it moved",
                )
            remote, detail = self._restart(driver, move, remote)
            if cell is not None:
                self._record_move(cell, move.uuid, move.target, remote.state.value)
            LOG.info("moved %s from %s to %s", move.uuid, move.source, move.target)
            return MoveReport(
                move.uuid, name, "moved", move.source, move.target, remote.state.value, detail
            )
        claims.undo_move(self.ctx.api, move.uuid)
        reason = error or "the driver did not move it"
        if remote is None:
            if cell is not None:
                self._unmark(cell, move.uuid, None)
            return MoveReport(
                move.uuid,
                name,
                "failed",
                move.source,
                None,
                "UNKNOWN",
                f"{reason}; it no longer exists in the zone",
            )
        remote, detail = self._restart(driver, move, remote)
        if cell is not None:
            self._unmark(cell, move.uuid, remote.state.value)
        LOG.warning(
            "moving %s to %s failed, it stays on %s: %s",
            move.uuid,
            move.target,
            move.source,
            reason,
        )
        return MoveReport(
            move.uuid,
            name,
            "failed",
            move.source,
            None,
            remote.state.value,
            reason + (f"; {detail}" if detail else ""),
        )

    def _restart(
        self, driver: Driver | None, move: _Move, remote: RemoteInstance
    ) -> tuple[RemoteInstance, str]:
        if not move.was_active or remote.state is not PowerState.SHUTOFF or driver is None:
            return remote, ""
        try:
            return driver.start(move.uuid), ""
        except DriverError as exc:
            return remote, f"it could not be started again: {exc.message}"

    # --- records -----------------------------------------------------------------------

    def _load(self, uuid: str) -> _Move | None:
        with self.ctx.api.read() as s:
            m = s.get(Migration, uuid)
            if m is None:
                return None
            wanted = [m.source_host_id, m.dest_host_id]
            names = {
                host_id: name
                for host_id, name in s.execute(
                    select(Host.id, Host.name).where(Host.id.in_(wanted))
                )
            }
            return _Move(uuid, m.zone, names[m.source_host_id], names[m.dest_host_id], m.was_active)

    def _cell_of(self, uuid: str) -> str | None:
        with self.ctx.api.read() as s:
            m = s.get(InstanceMapping, uuid)
            return None if m is None or m.cell in (None, CELL0) else m.cell

    def _mark(self, cell: str, uuid: str) -> bool:
        with self.ctx.cells[cell].write() as s:
            done = s.execute(
                update(Instance)
                .where(
                    Instance.uuid == uuid,
                    Instance.task_state.is_(None),
                    Instance.status.in_(_MOVABLE),
                    Instance.deleted.is_(False),
                )
                .values(task_state=MIGRATING, updated_at=utcnow())
            )
            return bool(done.rowcount == 1)  # type: ignore[attr-defined]

    def _unmark(self, cell: str, uuid: str, status: str | None) -> None:
        values: dict[str, object] = {"task_state": None, "updated_at": utcnow()}
        if status is not None:
            values["status"] = status
        with self.ctx.cells[cell].write() as s:
            s.execute(
                update(Instance)
                .where(Instance.uuid == uuid, Instance.task_state == MIGRATING)
                .values(**values)
            )

    def _record_move(self, cell: str, uuid: str, host: str, status: str) -> None:
        """The record's host follows the allocation; its task ends unless a delete took
        it over meanwhile."""
        now = utcnow()
        with self.ctx.cells[cell].write() as s:
            s.execute(
                update(Instance)
                .where(Instance.uuid == uuid, Instance.deleted.is_(False))
                .values(host=host, updated_at=now)
            )
            s.execute(
                update(Instance)
                .where(Instance.uuid == uuid, Instance.task_state == MIGRATING)
                .values(task_state=None, status=status, updated_at=now)
            )
