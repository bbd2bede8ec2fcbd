"""Zone leases: one node at a time runs a zone's monitor jobs.

Several broker processes (nodes) may share one API database. Each zone's monitor jobs
(load, sync, orphans, volumes, events) poll the zone's cloud and act on what they find, so
they must run in one node only. A node holds a zone's lease in ``zone_leases`` until
``expires_at``; its heartbeat renews the leases it holds and takes those nobody holds or
whose holder stopped renewing them. Cluster-wide jobs take a lease on a pseudo-zone whose
name starts with ``*`` (:data:`VCLUSTERS`).

Taking a lease is one conditional ``UPDATE`` (renew our own, or take an expired one),
then, when no row matched, an ``INSERT ... ON CONFLICT DO NOTHING`` (take a lease nobody
ever held). On PostgreSQL the ``UPDATE`` re-evaluates its condition after waiting for a
concurrent writer's row lock and the ``INSERT`` waits for a concurrent insert of the same
key, so of two nodes racing for one lease exactly one gets it; SQLite serialises writers.

Times are seconds since the epoch on each node's clock: nodes sharing a database need
clocks that agree to well within a lease period. A node stops starting a zone's jobs once
the expiry it last wrote has passed on its own clock, even when it cannot reach the
database to learn whether someone else took over; a run already under way finishes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import case, delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from federator.storage.db import Database
from federator.storage.models import ZoneLease

LOG = logging.getLogger(__name__)

VCLUSTERS = "*vclusters"
"""The lease of the cluster-wide ``vclusters`` health job."""


@dataclass(frozen=True, slots=True)
class Lease:
    """One row of ``zone_leases``: ``owner`` holds ``zone`` from ``acquired_at`` (when it
    took it from nobody or from another node) until ``expires_at``."""

    zone: str
    owner: str
    acquired_at: float
    expires_at: float

    def live(self, now: float) -> bool:
        """Whether the lease still holds at ``now``."""
        return now < self.expires_at


def _view(row: ZoneLease) -> Lease:
    return Lease(row.zone, row.owner, row.acquired_at, row.expires_at)


def acquire(
    db: Database, zone: str, node_id: str, period: float, *, now: float | None = None
) -> Lease | None:
    """Take ``zone``'s lease for ``node_id`` or renew it, until ``now + period``.

    It succeeds when nobody holds the lease, when ``node_id`` already holds it (expired or
    not: nobody else took it meanwhile) or when its holder let it expire (``expires_at <=
    now``). ``acquired_at`` stays as it was on a renewal and is ``now`` otherwise.

    :returns: the lease now held, or None when another node holds a live lease.
    """
    at = time.time() if now is None else now
    until = at + period
    with db.write() as s:
        taken = s.execute(
            update(ZoneLease)
            .where(
                ZoneLease.zone == zone,
                or_(ZoneLease.owner == node_id, ZoneLease.expires_at <= at),
            )
            .values(
                owner=node_id,
                # SET expressions see the row as it was: keep the start of our own tenure.
                acquired_at=case((ZoneLease.owner == node_id, ZoneLease.acquired_at), else_=at),
                expires_at=until,
            )
            .execution_options(synchronize_session=False)
        )
        renewed = taken.rowcount == 1  # type: ignore[attr-defined]
        if not renewed and not _insert_if_absent(s, db, zone, node_id, at, until):
            return None
        row = s.get(ZoneLease, zone, populate_existing=True)
        return None if row is None else _view(row)


def _insert_if_absent(
    s: Session, db: Database, zone: str, node_id: str, at: float, until: float
) -> bool:
    """Insert the lease unless a row of ``zone`` exists (or is being inserted)."""
    values = {"zone": zone, "owner": node_id, "acquired_at": at, "expires_at": until}
    dialect = sqlite if db.is_sqlite else postgresql
    stmt = (
        dialect.insert(ZoneLease).values(**values).on_conflict_do_nothing(index_elements=["zone"])
    )
    # RETURNING, not rowcount: an ORM-executed INSERT reports no row count on psycopg.
    return s.connection().execute(stmt.returning(ZoneLease.zone)).first() is not None


def release(db: Database, node_id: str, zones: Iterable[str] | None = None) -> int:
    """Give up the leases ``node_id`` holds (of ``zones`` only, when given) at once, so
    another node takes them at its next heartbeat instead of after they expire.

    :returns: how many leases were given up.
    """
    stmt = delete(ZoneLease).where(ZoneLease.owner == node_id)
    if zones is not None:
        stmt = stmt.where(ZoneLease.zone.in_(list(zones)))
    with db.write() as s:
        n: int = s.execute(stmt.execution_options(synchronize_session=False)).rowcount  # type: ignore[attr-defined]
    return n


def list_leases(db: Database) -> dict[str, Lease]:
    """Every lease recorded, live or expired, by zone."""
    with db.read() as s:
        return {r.zone: _view(r) for r in s.scalars(select(ZoneLease).order_by(ZoneLease.zone))}


class LeaseKeeper:
    """The leases one node wants (its zones and :data:`VCLUSTERS`): takes and renews them
    on :meth:`renew` and answers :meth:`holds` from memory, without a query.

    :param period: how long a lease lasts without renewal (``monitor.zone_lease_seconds``).
    """

    def __init__(
        self,
        db: Database,
        node_id: str,
        zones: Sequence[str],
        period: float,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.node_id = node_id
        self.zones = tuple(zones)
        self.period = period
        self.clock = clock
        self._lock = threading.Lock()
        # zone -> the expiry this node last wrote for its lease
        self._held: dict[str, float] = {}

    def renew(self) -> str:
        """Renew the leases held and take the free or expired ones; a zone whose lease
        could not be written keeps the expiry last written, so it lapses on time.

        :returns: a one-line summary for the heartbeat job's record.
        """
        failed: list[str] = []
        for zone in self.zones:
            now = self.clock()
            try:
                lease = acquire(self.db, zone, self.node_id, self.period, now=now)
            except Exception as exc:  # the database is unreachable: try again next beat
                LOG.warning("zone %s: lease not renewed: %s", zone, exc)
                failed.append(zone)
                continue
            with self._lock:
                had = zone in self._held
                if lease is None:
                    self._held.pop(zone, None)
                else:
                    self._held[zone] = lease.expires_at
            if had != (lease is not None):
                LOG.info(
                    "zone %s: monitor jobs %s on node %s",
                    zone,
                    "run" if lease is not None else "no longer run",
                    self.node_id,
                )
        held = self.held()
        summary = f"{len(held)} of {len(self.zones)} lease(s) held"
        return summary + (f"; not renewed: {', '.join(failed)}" if failed else "")

    def holds(self, zone: str) -> bool:
        """Whether this node holds ``zone``'s lease now, by the expiry it last wrote."""
        with self._lock:
            until = self._held.get(zone)
        return until is not None and self.clock() < until

    def held(self) -> list[str]:
        """The zones whose lease this node holds now."""
        return [z for z in self.zones if self.holds(z)]

    def release(self) -> int:
        """Give up every lease of this node (on a clean stop, once its jobs have ended)."""
        with self._lock:
            self._held.clear()
        return release(self.db, self.node_id, self.zones)
