"""Instance records across the API database and the cells.

An instance is, at any moment, exactly one of: a build request in the API database
(status BUILD, not placed yet), a record in a cell database (placed), or a record in cell0
(could not be placed: ERROR with a fault). ``find`` and ``list_servers`` look in all of them
so the API answers the same way whatever the instance's fate.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, and_, or_, select

from federator.storage.db import Database
from federator.storage.models import BuildRequest, Host, Instance, InstanceMapping

CELL0 = "cell0"
_REGEX_CHARS = re.compile(r"[.^$*+?{}\[\]\\|()]")


@dataclass(frozen=True, slots=True)
class ServerView:
    """One instance as the API presents it, whatever holds its record."""

    uuid: str
    name: str
    project_id: str
    user_id: str
    status: str
    task_state: str | None
    flavor_id: str
    flavor: Mapping[str, Any]
    image_id: str
    availability_zone: str | None
    host: str | None
    cell: str | None
    created_at: datetime
    updated_at: datetime
    launched_at: datetime | None = None
    addresses: Mapping[str, Any] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    fault: Mapping[str, Any] | None = None
    placement: Mapping[str, Any] = field(default_factory=dict)
    policy_version: str | None = None
    remote_id: str | None = None
    host_az: str | None = None
    """The availability zone of the instance's host when a host aggregate gives it one."""

    @property
    def in_cell0(self) -> bool:
        return self.cell == CELL0

    @property
    def shown_az(self) -> str | None:
        """The availability zone the API shows: the host's, else the zone's (or the one a
        build in progress asked for)."""
        return self.host_az or self.availability_zone


@dataclass(frozen=True, slots=True)
class ListFilters:
    project_id: str | None = None  # None = every project (admin with all_tenants)
    name: str | None = None
    status: str | None = None
    availability_zone: str | None = None
    host: str | None = None


def aware(ts: datetime) -> datetime:
    """SQLite hands datetimes back without a zone; every stored time is UTC."""
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def view_of_build(br: BuildRequest, flavor: Mapping[str, Any]) -> ServerView:
    return ServerView(
        uuid=br.instance_uuid,
        name=br.name,
        project_id=br.project_id,
        user_id=br.user_id,
        status="BUILD",
        task_state="scheduling",
        flavor_id=br.flavor_id,
        flavor=flavor,
        image_id=br.image_id,
        availability_zone=br.availability_zone,
        host=None,
        cell=None,
        created_at=aware(br.created_at),
        updated_at=aware(br.updated_at),
        metadata=dict(br.metadata_),
    )


def view_of_instance(inst: Instance, cell: str) -> ServerView:
    return ServerView(
        uuid=inst.uuid,
        name=inst.name,
        project_id=inst.project_id,
        user_id=inst.user_id,
        status=inst.status,
        task_state=inst.task_state,
        flavor_id=inst.flavor_id,
        flavor=dict(inst.flavor),
        image_id=inst.image_id,
        availability_zone=inst.availability_zone,
        host=inst.host,
        cell=cell,
        created_at=aware(inst.created_at),
        updated_at=aware(inst.updated_at),
        launched_at=aware(inst.launched_at) if inst.launched_at else None,
        addresses=dict(inst.addresses),
        metadata=dict(inst.metadata_),
        fault=dict(inst.fault) if inst.fault else None,
        placement=dict(inst.placement),
        policy_version=inst.policy_version,
        remote_id=inst.remote_id,
    )


class Records:
    """Reads that span the API database and every cell database."""

    def __init__(
        self,
        api: Database,
        cells: Mapping[str, Database],
        flavor_lookup: Any,
    ) -> None:
        self.api = api
        self.cells = cells
        self._flavor = flavor_lookup  # Callable[[str], Mapping[str, Any]]

    def find(self, uuid: str) -> ServerView | None:
        """The instance with this uuid wherever it lives; None if unknown or deleted."""
        with self.api.read() as s:
            mapping = s.get(InstanceMapping, uuid)
            if mapping is None:
                return None
            if mapping.cell is None:
                br = s.get(BuildRequest, uuid)
                if br is not None:
                    return view_of_build(br, self._flavor(br.flavor_id))
                cell_name = None
            else:
                cell_name = mapping.cell
        candidates = [cell_name] if cell_name else list(self.cells)
        for name in candidates:
            with self.cells[name].read() as s:
                inst = s.get(Instance, uuid)
                if inst is not None and not inst.deleted:
                    return self._with_host_az([view_of_instance(inst, name)])[0]
        return None

    def _with_host_az(self, views: list[ServerView]) -> list[ServerView]:
        """Views with the availability zone host aggregates give their hosts, where one
        differs from the zone's own name."""
        placed = {(v.availability_zone, v.host) for v in views if v.host and v.availability_zone}
        if not placed:
            return views
        with self.api.read() as s:
            rows = s.execute(
                select(Host.zone, Host.name, Host.az).where(
                    Host.zone.in_({z for z, _ in placed}), Host.name.in_({h for _, h in placed})
                )
            ).all()
        azs: dict[tuple[str | None, str | None], str] = {
            (zone, name): az for zone, name, az in rows if az and az != zone
        }
        return [
            replace(v, host_az=azs[(v.availability_zone, v.host)])
            if (v.availability_zone, v.host) in azs
            else v
            for v in views
        ]

    def _az_scope(self, az: str) -> tuple[str, list[str] | None, list[str]]:
        """How to find instances in availability zone ``az``: (zone, hosts it must be on or
        None for any, hosts of the zone it must not be on)."""
        with self.api.read() as s:
            given = s.execute(select(Host.zone, Host.name).where(Host.az == az)).all()
            if given and all(zone != az for zone, _ in given):
                return given[0][0], [name for _, name in given], []
            elsewhere = s.scalars(select(Host.name).where(Host.zone == az, Host.az != az)).all()
        return az, None, list(elsewhere)

    def list_servers(
        self, filters: ListFilters, *, limit: int, marker: ServerView | None
    ) -> list[ServerView]:
        """Newest first (created_at, then uuid), at most ``limit``, after ``marker``."""
        # A build moving into its cell is briefly both a build request and a cell record
        # (the record is written first); the cell record is the truth.
        by_uuid: dict[str, ServerView] = {}
        for view in self._list_builds(filters, limit, marker):
            by_uuid[view.uuid] = view
        for name, db in self.cells.items():
            for view in self._list_cell(name, db, filters, limit, marker):
                by_uuid[view.uuid] = view
        found = sorted(by_uuid.values(), key=lambda v: (v.created_at, v.uuid), reverse=True)
        return self._with_host_az(found[:limit])

    def _list_builds(
        self, f: ListFilters, limit: int, marker: ServerView | None
    ) -> Sequence[ServerView]:
        if f.status not in (None, "BUILD") or f.host is not None:
            return []
        q = select(BuildRequest)
        q = _scope(q, BuildRequest.project_id, BuildRequest.name, f)
        if f.availability_zone:
            q = q.where(BuildRequest.availability_zone == f.availability_zone)
        if marker is not None:
            q = q.where(_after(BuildRequest.created_at, BuildRequest.instance_uuid, marker))
        q = q.order_by(BuildRequest.created_at.desc(), BuildRequest.instance_uuid.desc())
        out: list[ServerView] = []
        with self.api.read() as s:
            for br in s.scalars(q.limit(_fetch(limit, f))):
                if _name_ok(br.name, f.name):
                    out.append(view_of_build(br, self._flavor(br.flavor_id)))
        return out[:limit]

    def _list_cell(
        self, cell: str, db: Database, f: ListFilters, limit: int, marker: ServerView | None
    ) -> Sequence[ServerView]:
        q = select(Instance).where(Instance.deleted.is_(False))
        q = _scope(q, Instance.project_id, Instance.name, f)
        if f.status:
            q = q.where(Instance.status == f.status)
        if f.availability_zone:
            zone, only, never = self._az_scope(f.availability_zone)
            q = q.where(Instance.availability_zone == zone)
            if only is not None:
                q = q.where(Instance.host.in_(only))
            if never:
                q = q.where(or_(Instance.host.is_(None), Instance.host.not_in(never)))
        if f.host:
            q = q.where(Instance.host == f.host)
        if marker is not None:
            q = q.where(_after(Instance.created_at, Instance.uuid, marker))
        q = q.order_by(Instance.created_at.desc(), Instance.uuid.desc())
        out: list[ServerView] = []
        with db.read() as s:
            for inst in s.scalars(q.limit(_fetch(limit, f))):
                if _name_ok(inst.name, f.name):
                    out.append(view_of_instance(inst, cell))
        return out[:limit]


def _scope(q: Select[Any], project_col: Any, name_col: Any, f: ListFilters) -> Select[Any]:
    if f.project_id is not None:
        q = q.where(project_col == f.project_id)
    if f.name and not _REGEX_CHARS.search(f.name):
        # A name without regex syntax is a plain substring search: do it in SQL.
        escaped = f.name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        q = q.where(name_col.like(f"%{escaped}%", escape="\\"))
    return q


def _fetch(limit: int, f: ListFilters) -> int:
    # A regex name filter is applied in Python, so read further ahead.
    if f.name and _REGEX_CHARS.search(f.name):
        return max(limit * 20, 1000)
    return limit


def _name_ok(name: str, pattern: str | None) -> bool:
    if not pattern or not _REGEX_CHARS.search(pattern):
        return True
    try:
        return re.search(pattern, name) is not None
    except re.error:
        return pattern in name


def _after(created_col: Any, uuid_col: Any, marker: ServerView) -> Any:
    return or_(
        created_col < marker.created_at,
        and_(created_col == marker.created_at, uuid_col < marker.uuid),
    )
