"""The health of built virtual clusters: DEGRADED when a member has gone wrong, ACTIVE
again once every member is fine.

The monitor's ``vclusters`` job runs :func:`check_clusters`. It looks at every cluster
whose build is over (phase ``done``) and that is ACTIVE or DEGRADED, and reads each
member's current record, as the broker's other jobs keep them (the zones' syncs mark a
server that vanished from its cloud ERROR with the ``federator.monitor.vanished`` fault,
and a volume ``error``):

* a server has gone wrong when its instance mapping, its cell or its cell record is
  missing, when it is buried in cell0, deleted or being deleted, or when it is ERROR;
* a volume has gone wrong when its record is missing, deleted or being deleted, or when it
  is ``error`` or ``error_deleting``;
* a member whose row says it was never built (``planned``, ``claimed``, ``replan``,
  ``failed``) in a cluster whose build is over has gone wrong too: the cluster lacks it.

A cluster with a member gone wrong becomes DEGRADED with a ``federator.vcluster.degraded``
fault whose details name each such member and what is wrong with it; a DEGRADED cluster
whose members are all fine becomes ACTIVE, its fault cleared. Each move is one conditional
update: the cluster moves only while its status, phase and ``updated_at`` are still those
read before its members were, so a concurrent update, delete or build (which all change
them) always wins and the cluster is judged again on the next run. The move and its
``monitor_events`` rows (kind ``vcluster``) commit together.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, TypeVar

from sqlalchemy import select, update

from federator import errors
from federator.compute.context import ComputeContext
from federator.compute.records import CELL0
from federator.storage.events import EventKind, add_event
from federator.storage.models import (
    Instance,
    InstanceMapping,
    VCluster,
    VClusterMember,
    Volume,
    utcnow,
)
from federator.vclusters.build import fault
from federator.vclusters.model import SERVER
from federator.volumes import records as vr

__all__ = ["Change", "HealthReport", "Problem", "Verdict", "apply", "check_clusters", "judge"]

ACTIVE: Final = "ACTIVE"
DEGRADED: Final = "DEGRADED"
WATCHED: Final = (ACTIVE, DEGRADED)
BUILT: Final = frozenset({"created", "attached"})
"""Member states of a member that exists in its cloud."""
EVENT_KIND: Final[EventKind] = "vcluster"
_CHUNK = 500
"""Ids per ``IN (...)`` query, well under every database's parameter limit."""
_BAD_VOLUME: Final = frozenset({vr.ERROR, vr.ERROR_DELETING})

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Problem:
    """One member gone wrong: its name, type (``server``/``volume``), id, zone, and what
    is wrong with it (a sentence)."""

    member: str
    kind: str
    uuid: str
    zone: str | None
    what: str

    def detail(self) -> str:
        """The line of the cluster's fault that names this member."""
        return f"{self.kind} {self.member} ({self.uuid}): {self.what}"


@dataclass(frozen=True, slots=True)
class Verdict:
    """One cluster as read (``status``, ``updated_at``, ``fault``) and its members'
    problems (none: every member is fine). ``zones``: the zones its members were placed in."""

    uuid: str
    name: str
    status: str
    updated_at: datetime
    fault: Mapping[str, Any] | None
    problems: tuple[Problem, ...]
    zones: tuple[str, ...] = ()

    @property
    def wanted(self) -> str:
        return DEGRADED if self.problems else ACTIVE

    def details(self) -> list[str]:
        return [p.detail() for p in self.problems]

    def needs_change(self) -> bool:
        """True when the cluster's status, or the members its fault names, are not what
        was found."""
        if not self.problems:
            return self.status == DEGRADED
        return self.status != DEGRADED or list((self.fault or {}).get("details", [])) != (
            self.details()
        )


@dataclass(frozen=True, slots=True)
class Change:
    """A cluster moved (or, DEGRADED still, its fault rewritten) by one run."""

    cluster: str
    name: str
    before: str
    after: str
    problems: tuple[Problem, ...] = ()


@dataclass(frozen=True, slots=True)
class HealthReport:
    """One run: clusters ``checked``, how many are ``degraded`` after it, what ``changes``
    it made."""

    checked: int = 0
    degraded: int = 0
    changes: list[Change] = field(default_factory=list)

    def __str__(self) -> str:
        moved = ", ".join(f"{c.name} {c.before}->{c.after}" for c in self.changes)
        summary = f"checked {self.checked}, degraded {self.degraded}, changed {len(self.changes)}"
        return summary + (f" ({moved})" if moved else "")


def check_clusters(ctx: ComputeContext) -> HealthReport:
    """Judge every built ACTIVE or DEGRADED cluster and move those whose state is not what
    their members say (see the module docstring). Never moves a cluster that changed since
    it was read."""
    verdicts = judge(ctx)
    changes = [c for v in verdicts if v.needs_change() and (c := apply(ctx, v)) is not None]
    moved = {c.cluster: c.after for c in changes}
    degraded = sum(1 for v in verdicts if moved.get(v.uuid, v.status) == DEGRADED)
    return HealthReport(checked=len(verdicts), degraded=degraded, changes=changes)


# --- reading -----------------------------------------------------------------------------


def judge(ctx: ComputeContext) -> list[Verdict]:
    """Every built ACTIVE or DEGRADED cluster and what is wrong with its members now.

    Clusters are read before their members, so a verdict is never newer than the cluster
    state :func:`apply` checks it against.
    """
    with ctx.api.read() as s:
        clusters = s.execute(
            select(
                VCluster.uuid, VCluster.name, VCluster.status, VCluster.updated_at, VCluster.fault
            )
            .where(
                VCluster.deleted.is_(False),
                VCluster.phase == "done",
                VCluster.status.in_(WATCHED),
            )
            .order_by(VCluster.created_at, VCluster.uuid)
        ).all()
    if not clusters:
        return []
    rows: dict[str, list[VClusterMember]] = {}
    with ctx.api.read() as s:
        for ids in _chunks([c.uuid for c in clusters]):
            for r in s.scalars(
                select(VClusterMember)
                .where(VClusterMember.cluster_uuid.in_(ids))
                .order_by(VClusterMember.created_at, VClusterMember.name)
            ):
                s.expunge(r)
                rows.setdefault(r.cluster_uuid, []).append(r)
    members = [r for rs in rows.values() for r in rs]
    built = [r for r in members if r.state in BUILT]
    wrong = _servers(ctx, [r for r in built if r.kind == SERVER])
    wrong.update(_volumes(ctx, [r for r in built if r.kind != SERVER]))
    verdicts = []
    for uuid, name, status, updated_at, cluster_fault in clusters:
        problems = []
        for r in rows.get(uuid, []):
            what = wrong.get(r.uuid) if r.state in BUILT else f"is not built (state {r.state})"
            if what is not None:
                problems.append(Problem(r.name, r.kind, r.uuid, r.zone, what))
        zones = sorted({r.zone for r in rows.get(uuid, []) if r.zone})
        verdicts.append(
            Verdict(uuid, name, status, updated_at, cluster_fault, tuple(problems), tuple(zones))
        )
    return verdicts


def _servers(ctx: ComputeContext, rows: Sequence[VClusterMember]) -> dict[str, str]:
    """What is wrong with each server member that has gone wrong, by id."""
    wrong: dict[str, str] = {}
    cells: dict[str, list[str]] = {}
    with ctx.api.read() as s:
        mapped: dict[str, str | None] = {}
        for ids in _chunks([r.uuid for r in rows]):
            for uuid, cell in s.execute(
                select(InstanceMapping.instance_uuid, InstanceMapping.cell).where(
                    InstanceMapping.instance_uuid.in_(ids)
                )
            ):
                mapped[uuid] = cell
    for r in rows:
        if r.uuid not in mapped:
            wrong[r.uuid] = "has no instance record"
            continue
        cell = mapped[r.uuid]
        if cell is None:
            wrong[r.uuid] = "was never recorded in a cell (its build request is pending)"
        elif cell == CELL0:
            wrong[r.uuid] = "is buried in cell0"
        elif cell not in ctx.cells:
            wrong[r.uuid] = f"is recorded in cell {cell}, which this broker does not have"
        else:
            cells.setdefault(cell, []).append(r.uuid)
    for cell, uuids in cells.items():
        with ctx.cells[cell].read() as s:
            found = {
                uuid: (deleted, status, task_state, inst_fault)
                for ids in _chunks(uuids)
                for uuid, deleted, status, task_state, inst_fault in s.execute(
                    select(
                        Instance.uuid,
                        Instance.deleted,
                        Instance.status,
                        Instance.task_state,
                        Instance.fault,
                    ).where(Instance.uuid.in_(ids))
                )
            }
        for uuid in uuids:
            what = _server_problem(cell, found.get(uuid))
            if what is not None:
                wrong[uuid] = what
    return wrong


def _server_problem(
    cell: str, record: tuple[bool, str, str | None, dict[str, Any] | None] | None
) -> str | None:
    if record is None:
        return f"has no instance record in {cell}"
    deleted, status, task_state, inst_fault = record
    if deleted:
        return "was deleted"
    if status == "ERROR":
        code = (inst_fault or {}).get("code")
        message = str((inst_fault or {}).get("message") or "")
        if code == errors.MONITOR_VANISHED:
            # The sync's own sentence: the zone, when it was missed, when it was last seen.
            return message or "vanished from its zone"
        return "is ERROR" + (f": {message}" if message else "")
    if task_state == "deleting":
        return "is being deleted"
    return None


def _volumes(ctx: ComputeContext, rows: Sequence[VClusterMember]) -> dict[str, str]:
    """What is wrong with each volume member that has gone wrong, by id."""
    with ctx.api.read() as s:
        found = {
            uuid: (deleted, status, vol_fault)
            for ids in _chunks([r.uuid for r in rows])
            for uuid, deleted, status, vol_fault in s.execute(
                select(Volume.uuid, Volume.deleted, Volume.status, Volume.fault).where(
                    Volume.uuid.in_(ids)
                )
            )
        }
    wrong: dict[str, str] = {}
    for r in rows:
        record = found.get(r.uuid)
        if record is None:
            wrong[r.uuid] = "has no volume record"
            continue
        deleted, status, vol_fault = record
        message = str((vol_fault or {}).get("message") or "")
        if deleted:
            wrong[r.uuid] = "was deleted"
        elif status in _BAD_VOLUME:
            wrong[r.uuid] = f"is {status}" + (f": {message}" if message else "")
        elif status == vr.DELETING:
            wrong[r.uuid] = "is being deleted"
    return wrong


def _chunks(items: Sequence[T], size: int = _CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --- moving ------------------------------------------------------------------------------


def apply(ctx: ComputeContext, v: Verdict) -> Change | None:
    """Move the cluster of ``v`` to what ``v`` found, with its events, in one transaction;
    None when the cluster changed since ``v`` was read (nothing is written then)."""
    after = v.wanted
    new_fault = fault(errors.VCLUSTER_DEGRADED, _message(v), v.details()) if v.problems else None
    with ctx.api.write() as s:
        moved = s.execute(
            update(VCluster)
            .where(
                VCluster.uuid == v.uuid,
                VCluster.deleted.is_(False),
                VCluster.phase == "done",
                VCluster.status == v.status,
                VCluster.updated_at == v.updated_at,
            )
            .values(status=after, fault=new_fault, updated_at=utcnow())
        )
        if moved.rowcount != 1:  # type: ignore[attr-defined]
            return None
        for zone, member, detail in _events(v):
            add_event(
                s,
                zone=zone,
                kind=EVENT_KIND,
                instance_uuid=member,
                action=after.lower(),
                detail=detail,
            )
    return Change(v.uuid, v.name, v.status, after, v.problems)


def _message(v: Verdict) -> str:
    names = ", ".join(f"{p.kind} {p.member}" for p in v.problems)
    count = len(v.problems)
    return (
        f"{count} member{'s' if count > 1 else ''} of vcluster {v.name} "
        f"{'have' if count > 1 else 'has'} gone wrong: {names}"
    )


def _events(v: Verdict) -> Iterable[tuple[str, str | None, str]]:
    """(zone, member id, detail) of each event a move records: one per member newly gone
    wrong, or, for a cluster whole again, one per zone it is in."""
    moved = f"still {v.status}" if v.status == v.wanted else f"{v.status} -> {v.wanted}"
    head = f"vcluster {v.name} ({v.uuid}) {moved}"
    if not v.problems:
        for zone in v.zones or ("",):
            yield zone, None, f"{head}: every member is fine again"
        return
    known = set((v.fault or {}).get("details", [])) if v.status == DEGRADED else set()
    for p in v.problems:
        if p.detail() not in known:
            yield p.zone or "", p.uuid, f"{head}: {p.detail()}"
