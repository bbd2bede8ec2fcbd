"""Hypervisor hosts for administrators: what each holds and runs, enable, disable and
maintenance.

A host takes new instances only while it is **enabled**: reported by its driver, in at
least one aggregate, not disabled by an administrator and not in maintenance. Disabling a
host or putting it in maintenance never touches what runs on it; ``enable`` lifts both an
administrator's disable and maintenance.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from federator.compute.context import ComputeContext
from federator.compute.records import Records
from federator.exception import NotFound
from federator.hosts import membership
from federator.storage.models import Allocation, Host, Migration, utcnow

__all__ = ["HostService", "HostView", "ServerOnHost"]


@dataclass(frozen=True, slots=True)
class ServerOnHost:
    """An instance holding capacity on a host."""

    uuid: str
    name: str
    status: str
    task_state: str | None
    project_id: str


@dataclass(frozen=True, slots=True)
class HostView:
    """A host as the API shows it."""

    id: int
    zone: str
    name: str
    az: str
    aggregates: tuple[tuple[int, str], ...]
    enabled: bool
    state: membership.HostState
    disabled_reason: str
    reported: bool
    admin_disabled: bool
    admin_reason: str
    maintenance: bool
    maintenance_reason: str
    maintenance_since: datetime | None
    vcpus: int
    ram_mb: int
    disk_gb: int
    cpu_ratio: float
    ram_ratio: float
    disk_ratio: float
    vcpus_used: int
    ram_used_mb: int
    disk_used_gb: int
    instances: int
    moving: int  # instances being moved off this host or onto it
    updated_at: datetime
    metadata: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def _view(
    h: Host,
    member: membership.Membership,
    metadata: Mapping[str, frozenset[str]],
    moving: int,
) -> HostView:
    st = membership.status(h, bool(member.aggregates))
    return HostView(
        id=h.id,
        zone=h.zone,
        name=h.name,
        az=h.az,
        aggregates=tuple((i, name) for i, name, _ in member.aggregates),
        enabled=h.enabled,
        state=st.state,
        disabled_reason=h.disabled_reason,
        reported=h.reported,
        admin_disabled=h.admin_disabled,
        admin_reason=h.admin_reason,
        maintenance=h.maintenance,
        maintenance_reason=h.maintenance_reason,
        maintenance_since=h.maintenance_since,
        vcpus=h.vcpus,
        ram_mb=h.ram_mb,
        disk_gb=h.disk_gb,
        cpu_ratio=h.cpu_ratio,
        ram_ratio=h.ram_ratio,
        disk_ratio=h.disk_ratio,
        vcpus_used=h.vcpus_used,
        ram_used_mb=h.ram_used_mb,
        disk_used_gb=h.disk_used_gb,
        instances=h.instances,
        moving=moving,
        updated_at=h.updated_at,
        metadata={k: tuple(sorted(v)) for k, v in sorted(metadata.items())},
    )


def get_host(s: Session, zone: str, name: str) -> Host:
    """:raises NotFound: no host ``name`` in ``zone``."""
    host = s.scalars(select(Host).where(Host.zone == zone, Host.name == name)).first()
    if host is None:
        raise NotFound(f"host {name} of zone {zone} could not be found", kind="host", ident=name)
    return host


class HostService:
    def __init__(self, ctx: ComputeContext) -> None:
        self.ctx = ctx
        self.records = Records(ctx.api, ctx.cells, ctx.flavor_snapshot)

    # --- read ------------------------------------------------------------------------

    def list_hosts(self, zone: str | None = None) -> list[HostView]:
        with self.ctx.api.read() as s:
            q = select(Host).order_by(Host.zone, Host.name)
            if zone is not None:
                q = q.where(Host.zone == zone)
            return self._views(s, s.scalars(q).all())

    def get(self, zone: str, name: str) -> HostView:
        """:raises NotFound:"""
        with self.ctx.api.read() as s:
            return self._views(s, [get_host(s, zone, name)])[0]

    def servers(self, zone: str, name: str) -> list[ServerOnHost]:
        """The instances holding capacity on the host (building, running, stopped, ERROR),
        oldest first.

        :raises NotFound:
        """
        with self.ctx.api.read() as s:
            host = get_host(s, zone, name)
            uuids = s.scalars(
                select(Allocation.instance_uuid)
                .where(Allocation.host_id == host.id)
                .order_by(Allocation.created_at, Allocation.instance_uuid)
            ).all()
        found = []
        for uuid in uuids:
            v = self.records.find(uuid)
            if v is not None:
                found.append(ServerOnHost(v.uuid, v.name, v.status, v.task_state, v.project_id))
        return found

    # --- change ----------------------------------------------------------------------

    def enable(self, zone: str, name: str) -> HostView:
        """Lift an administrator's disable and maintenance; the host then takes instances
        if its driver reports it and it is in an aggregate.

        :raises NotFound:
        """
        with self._change(zone, name) as h:
            h.admin_disabled, h.admin_reason = False, ""
            h.maintenance, h.maintenance_reason, h.maintenance_since = False, "", None
        return self.get(zone, name)

    def disable(self, zone: str, name: str, reason: str = "") -> HostView:
        """:raises NotFound:"""
        with self._change(zone, name) as h:
            h.admin_disabled, h.admin_reason = True, reason
        return self.get(zone, name)

    def enter_maintenance(self, zone: str, name: str, reason: str = "") -> HostView:
        """The host takes no new instances; what runs on it keeps running.

        :raises NotFound:
        """
        with self._change(zone, name) as h:
            if not h.maintenance:
                h.maintenance_since = utcnow()
            h.maintenance, h.maintenance_reason = True, reason or "maintenance"
        return self.get(zone, name)

    def exit_maintenance(self, zone: str, name: str) -> HostView:
        """:raises NotFound:"""
        with self._change(zone, name) as h:
            h.maintenance, h.maintenance_reason, h.maintenance_since = False, "", None
        return self.get(zone, name)

    # --- internals -------------------------------------------------------------------

    @contextmanager
    def _change(self, zone: str, name: str) -> Iterator[Host]:
        with self.ctx.api.write() as s:
            membership.serialize(s)
            host = get_host(s, zone, name)
            yield host
            membership.refresh(s, [host])
        self.ctx.hosts.reload()

    def _views(self, s: Session, hosts: Sequence[Host]) -> list[HostView]:
        ids = [h.id for h in hosts]
        member = membership.memberships(s, ids)
        metadata = membership.host_metadata(s)
        moving: dict[int, int] = {}
        for src, dst in s.execute(select(Migration.source_host_id, Migration.dest_host_id)):
            moving[src] = moving.get(src, 0) + 1
            moving[dst] = moving.get(dst, 0) + 1
        return [
            _view(
                h,
                member.get(h.id, membership.Membership()),
                metadata.get(h.id, {}),
                moving.get(h.id, 0),
            )
            for h in hosts
        ]
