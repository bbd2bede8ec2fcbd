"""A group's rule at placement time: where its members are, what each zone may still
take, and the guard that keeps the rule inside the claim transaction.

The builder reads a :class:`GroupState` before it chooses, narrows each candidate zone
with :func:`fit`, and hands the claim a :class:`Guard`. The guard runs first in the
claim's transaction: it locks the group's row (``SELECT ... FOR NO KEY UPDATE`` on
PostgreSQL, which new members joining the group at accept time do not wait for; SQLite's
write transactions are serial already), reads where the members are now, and
refuses the claim when one more member there would break a hard rule. Members of one
group therefore claim one at a time, each seeing every member committed before it, in
one process or many; a claim refused this way is chosen again with the new state.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from federator.driver import Driver
from federator.groups.rules import (
    SOFT_AFFINITY,
    Rule,
    Spot,
    ZoneMode,
    crowded,
    key_of,
    violation,
)
from federator.scheduler.request import HostRequest, SoftGroup
from federator.storage.models import Allocation, Host, Migration, ServerGroup, ServerGroupMember

__all__ = ["GroupState", "Guard", "ZoneFit", "fit", "load", "modes_of", "rule_of"]


@dataclass(frozen=True, slots=True)
class GroupState:
    """A group and where its members other than the one being placed are."""

    uuid: str
    name: str
    rule: Rule
    members: tuple[Spot, ...]
    max_server_per_host: int | None = None
    """The limit as the group was created with it (None: anti-affinity's default, 1)."""

    def describe(self) -> str:
        return f"server group {self.name} ({self.uuid}) {self.rule.describe()}"


def rule_of(group: ServerGroup) -> Rule:
    return Rule(group.policy, group.max_server_per_host or 1, group.scope)


def modes_of(drivers: Mapping[str, Driver]) -> dict[str, ZoneMode]:
    """How each zone's driver lets a rule be kept there (see :mod:`federator.groups.rules`)."""
    modes = {}
    for zone, driver in drivers.items():
        caps = driver.capabilities()
        if caps.host_scheduling:
            modes[zone] = ZoneMode.HOSTS
        elif caps.server_groups:
            modes[zone] = ZoneMode.REMOTE
        else:
            modes[zone] = ZoneMode.SINGLE
    return modes


def placed_members(
    s: Session, group_uuid: str, exclude: str | None = None, *, distinct: int | None = None
) -> list[Spot]:
    """Where the group's members that hold capacity are (members not placed yet, or in
    cell0, hold none and are nowhere). With ``distinct``, at most that many distinct
    places, not one per member."""
    q = (
        select(Allocation.zone, Host.name, Host.az)
        .select_from(ServerGroupMember)
        .join(Allocation, Allocation.instance_uuid == ServerGroupMember.instance_uuid)
        .outerjoin(Host, Host.id == Allocation.host_id)
        .where(ServerGroupMember.group_uuid == group_uuid)
    )
    # A member being moved between hosts (a drain) also holds its destination.
    moving = (
        select(Migration.zone, Host.name, Host.az)
        .select_from(ServerGroupMember)
        .join(Migration, Migration.instance_uuid == ServerGroupMember.instance_uuid)
        .join(Host, Host.id == Migration.dest_host_id)
        .where(ServerGroupMember.group_uuid == group_uuid)
    )
    if exclude is not None:
        q = q.where(ServerGroupMember.instance_uuid != exclude)
        moving = moving.where(ServerGroupMember.instance_uuid != exclude)
    if distinct is not None:
        q = q.distinct().limit(distinct)
        moving = moving.distinct().limit(distinct)
    rows = [*s.execute(q), *s.execute(moving)]
    return [Spot(zone, host, az or zone) for zone, host, az in rows]


def load(s: Session, group_uuid: str, member: str) -> GroupState | None:
    """The group of ``member`` as it stands; None when the group was deleted."""
    group = s.get(ServerGroup, group_uuid)
    if group is None:
        return None
    members = placed_members(s, group_uuid, exclude=member)
    return GroupState(
        group.uuid, group.name, rule_of(group), tuple(members), group.max_server_per_host
    )


@dataclass(frozen=True, slots=True)
class ZoneFit:
    """What the group lets one zone take: ``allowed`` False with ``reason`` when the zone
    cannot take the member at all; otherwise the host-scheduler fields that keep the
    rule (hard) or prefer it (soft)."""

    allowed: bool = True
    reason: str = ""
    anti_affinity_hosts: frozenset[str] = frozenset()
    affinity_hosts: frozenset[str] | None = None
    anti_affinity_azs: frozenset[str] = frozenset()
    affinity_azs: frozenset[str] | None = None
    soft: SoftGroup | None = None
    counts: Mapping[str, int] = field(default_factory=dict)
    az_counts: Mapping[str, int] = field(default_factory=dict)

    def narrow(self, req: HostRequest) -> HostRequest:
        """``req`` with this fit's rule in it, for the host scheduler."""
        return replace(
            req,
            anti_affinity_hosts=self.anti_affinity_hosts,
            affinity_hosts=self.affinity_hosts,
            anti_affinity_azs=self.anti_affinity_azs,
            affinity_azs=self.affinity_azs,
            soft_group=self.soft,
            group_counts=self.counts,
            group_az_counts=self.az_counts,
        )


def fit(state: GroupState, zone: str, mode: ZoneMode, zone_azs: frozenset[str]) -> ZoneFit:
    """How ``zone`` (of kind ``mode``; ``zone_azs`` the availability zones of its hosts)
    may take one more member of ``state``'s group."""
    rule, members = state.rule, state.members
    here = [m for m in members if m.zone == zone]
    if not rule.hard:
        soft: SoftGroup = "soft-affinity" if rule.policy == SOFT_AFFINITY else "soft-anti-affinity"
        if mode is not ZoneMode.HOSTS:
            return ZoneFit(soft=soft)
        if rule.scope == "zone":
            return ZoneFit(soft=soft, az_counts=Counter(m.az for m in members))
        return ZoneFit(soft=soft, counts=Counter(m.host for m in here if m.host))
    if mode is not ZoneMode.HOSTS:
        broken = violation(rule, members, Spot(zone, None, zone), {zone: mode})
        return ZoneFit(False, broken) if broken else ZoneFit()
    if rule.scope == "zone":
        by_az = Counter(m.az for m in members)
        if rule.affinity:
            if not by_az:
                return ZoneFit()
            azs = frozenset(by_az) & zone_azs
            if not azs:
                where = ", ".join(sorted(by_az))
                return ZoneFit(False, f"its members are in availability zone {where}")
            return ZoneFit(affinity_azs=azs)
        full = frozenset(az for az, n in by_az.items() if n >= rule.max_per_host)
        if zone_azs and zone_azs <= full:
            where = ", ".join(sorted(zone_azs))
            return ZoneFit(False, f"availability zone {where} already holds its members")
        return ZoneFit(anti_affinity_azs=full)
    if rule.affinity:
        elsewhere = sorted({m.zone for m in members if m.zone != zone})
        if elsewhere:
            return ZoneFit(False, f"its members are in zone {', '.join(elsewhere)}")
        return ZoneFit(affinity_hosts=frozenset(m.host for m in here if m.host))
    per_host = Counter(m.host for m in here if m.host)
    full_hosts = frozenset(h for h, n in per_host.items() if n >= rule.max_per_host)
    return ZoneFit(anti_affinity_hosts=full_hosts)


class Guard:
    """The group check a claim runs first in its own transaction.

    It reads only what the rule needs, with indexed queries: for anti-affinity the
    members already at the target (host, zone or availability zone), for affinity at
    most two distinct places; so its cost inside the serial part of a claim does not
    grow with the size of the group.
    """

    def __init__(self, group_uuid: str, member: str, modes: Mapping[str, ZoneMode]) -> None:
        self.group_uuid = group_uuid
        self.member = member
        self.modes = modes

    def check(self, s: Session, zone: str, host_id: int | None) -> str | None:
        """Lock the group and say why one more member at (zone, host) breaks its hard
        rule, or None (also when the group was deleted meanwhile)."""
        group = s.execute(
            select(ServerGroup)
            .where(ServerGroup.uuid == self.group_uuid)
            .with_for_update(key_share=True)
        ).scalar_one_or_none()
        if group is None:
            return None
        rule = rule_of(group)
        if not rule.hard:
            return None
        host, az = None, zone
        if host_id is not None:
            row = s.execute(select(Host.name, Host.az).where(Host.id == host_id)).first()
            if row is not None:
                host, az = row[0], row[1]
        target = Spot(zone, host, az)
        mode = self.modes.get(zone, ZoneMode.SINGLE)
        if rule.affinity:
            # Two distinct places are enough to know whether the target is the only one.
            places = placed_members(s, self.group_uuid, exclude=self.member, distinct=2)
            broken = violation(rule, places, target, self.modes)
        else:
            key = key_of(rule, target, mode)
            if key is None:
                return None
            held = self._held(s, rule, target, host_id, mode)
            broken = crowded(rule, key, held)
        if broken is None:
            return None
        return f"server group {group.name} ({group.uuid}) {rule.describe()}: {broken}"

    def _held(
        self, s: Session, rule: Rule, target: Spot, host_id: int | None, mode: ZoneMode
    ) -> int:
        """Members other than this one already at ``target``, as the rule counts them
        (a member moving between hosts counts at its destination too)."""
        if rule.scope == "zone":
            here = func.coalesce(Host.az, Allocation.zone) == target.az
            moving_here: Any = Host.az == target.az
        elif mode is ZoneMode.HOSTS:
            here = Allocation.host_id == host_id
            moving_here = Migration.dest_host_id == host_id
        else:
            here = and_(Allocation.zone == target.zone, Allocation.host_id.is_(None))
            moving_here = None
        mine = and_(
            ServerGroupMember.group_uuid == self.group_uuid,
            ServerGroupMember.instance_uuid != self.member,
        )
        held = (
            s.scalar(
                select(func.count())
                .select_from(Allocation)
                .join(
                    ServerGroupMember, ServerGroupMember.instance_uuid == Allocation.instance_uuid
                )
                .outerjoin(Host, Host.id == Allocation.host_id)
                .where(mine, here)
            )
            or 0
        )
        if moving_here is not None:
            held += (
                s.scalar(
                    select(func.count())
                    .select_from(Migration)
                    .join(
                        ServerGroupMember,
                        ServerGroupMember.instance_uuid == Migration.instance_uuid,
                    )
                    .join(Host, Host.id == Migration.dest_host_id)
                    .where(mine, moving_here)
                )
                or 0
            )
        return int(held)
