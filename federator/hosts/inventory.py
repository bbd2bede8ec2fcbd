"""Zones and hosts in the API database, and the scheduler's in-memory copy of them.

``sync_zones`` registers every configured zone; ``sync_hosts`` records the hosts a zone's
driver reports and recomputes the zone's schedulable totals. ``HostCache`` keeps the
columnar host table the scheduler reads; it is refreshed from the database periodically
and host by host whenever a claim finds the cache stale (the database stays the truth).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import select

from federator.config import Settings, ZoneConfig
from federator.driver import HostInfo
from federator.hosts import membership
from federator.policy.evaluate import Limits, ZoneLoad
from federator.scheduler.hoststate import HostRow, HostTable
from federator.storage.db import Database
from federator.storage.models import Host, Zone

LOG = logging.getLogger(__name__)


def sync_zones(db: Database, settings: Settings) -> None:
    """Make the zones table match the configuration (zones never configured stay, unused),
    then apply the aggregates each zone declares to the hosts already known (start-up)."""
    with db.write() as s:
        membership.serialize(s)
        for zc in settings.zones:
            row = s.get(Zone, zc.name)
            if row is None:
                s.add(Zone(name=zc.name, kind=zc.kind, driver=zc.driver, cell=zc.cell))
            else:
                row.kind, row.driver, row.cell = zc.kind, zc.driver, zc.cell
        s.flush()
        for zc in settings.zones:
            for config in zc.aggregates:
                membership.ensure_declared(s, config)
            if zc.aggregates:
                known = list(s.scalars(select(Host).where(Host.zone == zc.name)))
                membership.join_declared(s, zc, known)


def sync_hosts(db: Database, zone: ZoneConfig, hosts: Sequence[HostInfo]) -> int:
    """Upsert the hosts a driver reports; returns how many were new.

    Usage counters are never touched here: they move only with allocations.
    Hosts the driver no longer reports are disabled, not deleted, so their allocations
    stay accounted for. A new host joins the zone's declared aggregates whose ``hosts``
    patterns match its name; in none, it is disabled (``not in any aggregate``) until an
    administrator adds it to one.
    """
    with db.write() as s:
        membership.serialize(s)
        existing = {h.name: h for h in s.scalars(select(Host).where(Host.zone == zone.name))}
        added: list[Host] = []
        seen = set()
        for info in hosts:
            seen.add(info.name)
            row = existing.get(info.name)
            if row is None:
                row = Host(
                    zone=zone.name,
                    name=info.name,
                    az=zone.name,
                    enabled=False,
                    disabled_reason=membership.NOT_IN_AGGREGATE,
                    reported=True,
                    vcpus=info.vcpus,
                    ram_mb=info.ram_mb,
                    disk_gb=info.disk_gb,
                    cpu_ratio=zone.cpu_allocation_ratio,
                    ram_ratio=zone.ram_allocation_ratio,
                    disk_ratio=zone.disk_allocation_ratio,
                )
                s.add(row)
                added.append(row)
            else:
                row.vcpus, row.ram_mb, row.disk_gb = info.vcpus, info.ram_mb, info.disk_gb
                row.cpu_ratio = zone.cpu_allocation_ratio
                row.ram_ratio = zone.ram_allocation_ratio
                row.disk_ratio = zone.disk_allocation_ratio
                row.reported = True
        for name, row in existing.items():
            if name not in seen:
                row.reported = False
        s.flush()
        if added:
            membership.join_declared(s, zone, added)
            for h in added:
                LOG.info("zone %s: new host %s", zone.name, h.name)
        membership.refresh(s, [*existing.values(), *added])
        membership.update_zone_totals(s, zone.name)
    return len(added)


_ZONE_LOADS = select(
    Zone.name,
    Zone.kind,
    Zone.state,
    Zone.bursting,
    Zone.ram_used_mb,
    Zone.ram_total_mb,
    Zone.vcpus_used,
    Zone.vcpus_total,
    Zone.instances,
    Zone.capabilities,
)


def zone_loads(db: Database) -> dict[str, ZoneLoad]:
    """Current usage and totals of every zone, as the policy evaluates them."""
    with db.read() as s:
        # Core rows, not ORM objects: every build reads this, and the ORM's identity
        # map and instance state would cost more than the query.
        return {
            z.name: ZoneLoad(
                zone=z.name,
                kind="local" if z.kind == "local" else "virtual",
                available=z.state == "available",
                bursting=z.bursting,
                ram_used_mb=z.ram_used_mb,
                ram_total_mb=z.ram_total_mb,
                vcpus_used=z.vcpus_used,
                vcpus_total=z.vcpus_total,
                instances=z.instances,
                reported=reported_limits(z.capabilities),
            )
            for z in s.connection().execute(_ZONE_LOADS)
        }


def reported_limits(report: Mapping[str, Any] | None) -> Limits | None:
    """Ceilings from a child zone's stored report: its free room plus the usage counters
    this broker had when it asked (see :mod:`federator.monitor.capabilities`).

    Claims made since then count against the room through the usage counters; a figure
    the child leaves unbounded sets no ceiling.
    """
    if not report:
        return None
    free, base = report.get("free") or {}, report.get("base") or {}

    def ceiling(key: str) -> int | None:
        room = free.get(key)
        return None if room is None else int(base.get(key, 0)) + int(room)

    return Limits(ram_mb=ceiling("ram_mb"), vcpus=ceiling("vcpus"), instances=ceiling("instances"))


def _row(h: Host, metadata: Mapping[str, frozenset[str]] | None = None) -> HostRow:
    return HostRow(
        id=h.id,
        zone=h.zone,
        name=h.name,
        az=h.az,
        enabled=h.enabled,
        vcpus=h.vcpus,
        ram_mb=h.ram_mb,
        disk_gb=h.disk_gb,
        vcpus_used=h.vcpus_used,
        ram_used_mb=h.ram_used_mb,
        disk_used_gb=h.disk_used_gb,
        instances=h.instances,
        cpu_ratio=h.cpu_ratio,
        ram_ratio=h.ram_ratio,
        disk_ratio=h.disk_ratio,
        disabled_reason=membership.explain_of(h),
        metadata=metadata or {},
    )


@dataclass(frozen=True, slots=True)
class Hold:
    """Resources a claim in flight in this process takes on a host, until it settles."""

    host_id: int
    vcpus: int
    ram_mb: int
    disk_gb: int


class HostCache:
    """The scheduler's columnar copy of the hosts table.

    Claims in flight in this process are held in it, as Nova's HostState consumes each
    selection in memory: a worker chooses a host and holds what its instance takes in one
    step (:meth:`choosing`, :meth:`hold`), so the next worker's choice sees it before the
    claim commits; :meth:`settle` then replaces the hold by the database's figures (or
    drops it). Every figure read from the database (a claim's result, a refresh, a reload)
    is shown plus the holds still in flight on that host, so none is lost or counted
    twice.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self._swap = threading.Lock()
        self._table = HostTable.from_rows([])
        self._ids: dict[int, int] = {}
        self._held: dict[int, list[int]] = {}  # host id -> [vcpus, ram, disk, instances]
        self._holds = threading.Lock()
        self._choose = threading.Lock()

    def choosing(self) -> threading.Lock:
        """The lock a worker holds while it chooses a host and holds it (:meth:`hold`), so two
        workers of this process never choose on the same figures."""
        return self._choose

    def hold(self, zone: str, name: str, vcpus: int, ram_mb: int, disk_gb: int) -> Hold | None:
        """Count a claim about to be made on host ``name`` of ``zone`` in the table now;
        None when the host is not in the table."""
        host_id = self.host_id(zone, name)
        if host_id is None:
            return None
        hold = Hold(host_id, vcpus, ram_mb, disk_gb)
        with self._holds:
            held = self._held.setdefault(host_id, [0, 0, 0, 0])
            for k, v in enumerate((vcpus, ram_mb, disk_gb, 1)):
                held[k] += v
            self._shift(host_id, (vcpus, ram_mb, disk_gb, 1))
        return hold

    def settle(self, hold: Hold | None, usage: Any = None) -> None:
        """The held claim ended: committed, with the host's figures as the claim left them
        (``usage``, a :class:`federator.compute.claims.Usage`), or not (``usage`` None)."""
        if hold is None:
            return
        with self._holds:
            held = self._held.get(hold.host_id)
            if held is not None:
                for k, v in enumerate((hold.vcpus, hold.ram_mb, hold.disk_gb, 1)):
                    held[k] -= v
                if not any(held):
                    del self._held[hold.host_id]
            if usage is None:
                self._shift(hold.host_id, (-hold.vcpus, -hold.ram_mb, -hold.disk_gb, -1))
        if usage is not None:
            self.set_usage(
                usage.host_id, usage.vcpus_used, usage.ram_used_mb, usage.disk_used_gb,
                usage.instances,
            )  # fmt: skip

    def _shift(self, host_id: int, delta: tuple[int, int, int, int]) -> None:
        i = self._ids.get(host_id)
        if i is None:
            return
        t = self._table
        with t.lock:
            t.set_usage(
                i,
                vcpus_used=max(0, int(t.vcpus_used[i]) + delta[0]),
                ram_used_mb=max(0, int(t.ram_used[i]) + delta[1]),
                disk_used_gb=max(0, int(t.disk_used[i]) + delta[2]),
                instances=max(0, int(t.instances[i]) + delta[3]),
            )

    def _in_flight(self, host_id: int) -> tuple[int, int, int, int]:
        held = self._held.get(host_id)
        return (0, 0, 0, 0) if held is None else (held[0], held[1], held[2], held[3])

    @property
    def table(self) -> HostTable:
        return self._table

    def reload(self) -> None:
        """Rebuild the table from the database (start-up, host changes, periodic refresh),
        with each host's availability zone and merged aggregate metadata."""
        with self._db.read() as s:
            metadata = membership.host_metadata(s)
            rows = [
                _row(h, metadata.get(h.id))
                for h in s.scalars(select(Host).order_by(Host.zone, Host.id))
            ]
        with self._holds:
            rows = [_plus(r, self._in_flight(r.id)) for r in rows]
            table = HostTable.from_rows(rows)
            ids = {}
            for r in rows:
                i = table.index_of(r.zone, r.name)
                if i is not None:
                    ids[r.id] = i
            with self._swap:
                self._table, self._ids = table, ids

    def host_id(self, zone: str, name: str) -> int | None:
        i = self._table.index_of(zone, name)
        return None if i is None else self._table.row_at(i).id

    def set_usage(
        self, host_id: int, vcpus_used: int, ram_used_mb: int, disk_used_gb: int, instances: int
    ) -> None:
        """Show the host's figures as the database has them, plus this process's claims
        still in flight on it."""
        with self._holds:
            i = self._ids.get(host_id)
            if i is None:
                return
            dv, dr, dd, di = self._in_flight(host_id)
            self._table.set_usage(
                i,
                vcpus_used=vcpus_used + dv,
                ram_used_mb=ram_used_mb + dr,
                disk_used_gb=disk_used_gb + dd,
                instances=instances + di,
            )

    def refresh_host(self, host_id: int) -> None:
        """Re-read one host after a claim found the cached figures stale."""
        with self._db.read() as s:
            h = s.get(Host, host_id)
            if h is not None:
                self._apply(h)

    def refresh_zone(self, zone: str) -> None:
        """Re-read the hosts of ``zone``.

        Claims refresh the cache when it understates usage (the claim fails); capacity
        released since the cache was read (a delete, a failed build, another node) is only
        seen this way or at the next periodic reload.
        """
        with self._db.read() as s:
            for h in s.scalars(select(Host).where(Host.zone == zone)):
                self._apply(h)

    def _apply(self, h: Host) -> None:
        i = self._ids.get(h.id)
        if i is None:
            return
        self._table.set_enabled(i, h.enabled, membership.explain_of(h))
        self.set_usage(h.id, h.vcpus_used, h.ram_used_mb, h.disk_used_gb, h.instances)


def _plus(r: HostRow, held: tuple[int, int, int, int]) -> HostRow:
    if not any(held):
        return r
    return replace(
        r,
        vcpus_used=r.vcpus_used + held[0],
        ram_used_mb=r.ram_used_mb + held[1],
        disk_used_gb=r.disk_used_gb + held[2],
        instances=r.instances + held[3],
    )
