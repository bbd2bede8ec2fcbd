"""What the API asks of server groups: create, list, show, delete, and a boot joining one.

Visibility is the servers' rule: a member of a project sees its own project's groups;
another project's group answers 404 (and, named in a boot's hint, 400, as Nova does).
Deleting a group leaves its members running, outside any group, and hands every remote
group made for it to a clean-up task in the same transaction.
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from federator.compute.context import ComputeContext
from federator.compute.records import aware
from federator.exception import BadRequest, NotFound
from federator.groups import remote
from federator.groups.placement import modes_of
from federator.groups.rules import ZoneMode
from federator.storage.models import (
    Allocation,
    Host,
    ServerGroup,
    ServerGroupMember,
    ServerGroupZone,
    utcnow,
)

if TYPE_CHECKING:
    from federator.compute.service import RequestContext

__all__ = ["GroupService", "GroupView", "MemberPlace"]

_KEPT_BY = {
    ZoneMode.HOSTS: "the broker's host scheduler, on this zone's hosts",
    ZoneMode.REMOTE: "the remote cloud, through its own server group",
    ZoneMode.SINGLE: "the broker, counting this zone as one host",
}


@dataclass(frozen=True, slots=True)
class MemberPlace:
    """Where a placed member is, and who keeps the group's rule there."""

    uuid: str
    zone: str
    host: str | None
    availability_zone: str
    kept_by: str


@dataclass(frozen=True, slots=True)
class GroupView:
    uuid: str
    name: str
    project_id: str
    user_id: str
    policy: str
    max_server_per_host: int | None
    scope: str
    members: tuple[str, ...]
    created_at: datetime
    places: tuple[MemberPlace, ...] = ()
    remote: tuple[tuple[str, str], ...] = ()
    """(zone, remote group id) for each remote cloud holding a group made for this one."""


class GroupService:
    def __init__(self, ctx: ComputeContext) -> None:
        self.ctx = ctx

    def create(
        self,
        rc: RequestContext,
        *,
        name: str,
        policy: str,
        max_server_per_host: int | None,
        scope: str,
    ) -> GroupView:
        """Record a group; the rule was validated at the edge."""
        group = ServerGroup(
            uuid=str(uuidlib.uuid4()),
            name=name,
            project_id=rc.project_id,
            user_id=rc.user_id,
            policy=policy,
            max_server_per_host=max_server_per_host,
            scope=scope,
            created_at=utcnow(),
        )
        with self.ctx.api.write() as s:
            s.add(group)
        return _view(group, ())

    def list(
        self, rc: RequestContext, *, all_projects: bool, limit: int, offset: int
    ) -> list[GroupView]:
        q = select(ServerGroup).order_by(ServerGroup.created_at, ServerGroup.uuid)
        if not (rc.is_admin and all_projects):
            q = q.where(ServerGroup.project_id == rc.project_id)
        with self.ctx.api.read() as s:
            groups = list(s.scalars(q.offset(offset).limit(limit)))
            members = _members_of(s, [g.uuid for g in groups])
        return [_view(g, members.get(g.uuid, ())) for g in groups]

    def get(self, rc: RequestContext, group_uuid: str) -> GroupView:
        """:raises NotFound: unknown, or another project's (never 403)."""
        modes = modes_of(self.ctx.drivers)
        with self.ctx.api.read() as s:
            group = self._visible(s, rc, group_uuid)
            members = _members_of(s, [group.uuid]).get(group.uuid, ())
            rows = s.execute(
                select(Allocation.instance_uuid, Allocation.zone, Host.name, Host.az)
                .select_from(ServerGroupMember)
                .join(Allocation, Allocation.instance_uuid == ServerGroupMember.instance_uuid)
                .outerjoin(Host, Host.id == Allocation.host_id)
                .where(ServerGroupMember.group_uuid == group.uuid)
            ).all()
            remotes = s.execute(
                select(ServerGroupZone.zone, ServerGroupZone.remote_id)
                .where(ServerGroupZone.group_uuid == group.uuid)
                .order_by(ServerGroupZone.zone)
            ).all()
        places = tuple(
            MemberPlace(
                uuid=member,
                zone=zone,
                host=host,
                availability_zone=az or zone,
                kept_by=_KEPT_BY[modes.get(zone, ZoneMode.SINGLE)]
                if group.scope == "host"
                else "the broker, one availability zone at a time",
            )
            for member, zone, host, az in rows
        )
        return _view(group, members, places, tuple((z, r) for z, r in remotes))

    def delete(self, rc: RequestContext, group_uuid: str) -> None:
        """Delete the group; its members stay, in no group.

        :raises NotFound: unknown, or another project's.
        """
        with self.ctx.api.write() as s:
            group = self._visible(s, rc, group_uuid, lock=True)
            queued = remote.enqueue_cleanup(s, group.uuid)
            s.execute(delete(ServerGroupMember).where(ServerGroupMember.group_uuid == group.uuid))
            s.delete(group)
        if queued:
            self.ctx.queue.notifier.notify(queued)

    def _visible(
        self, s: Session, rc: RequestContext, group_uuid: str, *, lock: bool = False
    ) -> ServerGroup:
        q = select(ServerGroup).where(ServerGroup.uuid == group_uuid)
        group = s.execute(q.with_for_update() if lock else q).scalar_one_or_none()
        if group is None or not (rc.is_admin or group.project_id == rc.project_id):
            raise NotFound(kind="server group", ident=group_uuid)
        return group


def join(
    s: Session,
    rc: RequestContext,
    group_uuid: str,
    instance_uuids: Sequence[str],
    *,
    field: str = "os:scheduler_hints.group",
) -> None:
    """Inside a boot's accept transaction: the new servers join the group its hint names.

    :raises BadRequest: no such group, or another project's (as Nova answers a hint
        naming a group it cannot find).
    """
    group = s.get(ServerGroup, group_uuid)
    if group is None or not (rc.is_admin or group.project_id == rc.project_id):
        raise BadRequest(
            f"Invalid server group {group_uuid!r}: no such server group",
            problems=[
                {
                    "field": field,
                    "message": f"server group {group_uuid} could not be found",
                }
            ],
        )
    now = utcnow()
    s.add_all(
        ServerGroupMember(instance_uuid=u, group_uuid=group_uuid, created_at=now)
        for u in instance_uuids
    )


def leave(s: Session, instance_uuid: str) -> None:
    """Inside a server delete's transaction: the server leaves its group, if any."""
    s.execute(delete(ServerGroupMember).where(ServerGroupMember.instance_uuid == instance_uuid))


def group_of(s: Session, instance_uuid: str) -> str | None:
    member = s.get(ServerGroupMember, instance_uuid)
    return None if member is None else member.group_uuid


def _members_of(s: Session, groups: Sequence[str]) -> dict[str, tuple[str, ...]]:
    if not groups:
        return {}
    found: dict[str, list[str]] = {}
    rows = s.execute(
        select(ServerGroupMember.group_uuid, ServerGroupMember.instance_uuid)
        .where(ServerGroupMember.group_uuid.in_(groups))
        .order_by(ServerGroupMember.created_at, ServerGroupMember.instance_uuid)
    )
    for group, member in rows:
        found.setdefault(group, []).append(member)
    return {g: tuple(m) for g, m in found.items()}


def _view(
    g: ServerGroup,
    members: Sequence[str],
    places: tuple[MemberPlace, ...] = (),
    remotes: tuple[tuple[str, str], ...] = (),
) -> GroupView:
    return GroupView(
        uuid=g.uuid,
        name=g.name,
        project_id=g.project_id,
        user_id=g.user_id,
        policy=g.policy,
        max_server_per_host=g.max_server_per_host,
        scope=g.scope,
        members=tuple(members),
        created_at=aware(g.created_at),
        places=places,
        remote=remotes,
    )
