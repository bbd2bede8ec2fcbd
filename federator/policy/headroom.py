"""How much more this broker will take, by its policy: what it reports to parent brokers.

Pure: the caller gathers the zones' loads. For every zone, the room left before the policy
stops sending requests there:

* a local zone: up to its high-water marks (and never past its schedulable totals); none
  while it is bursting, since new requests then overflow until it falls below low water;
* a virtual zone: up to its quota and, for a child zone, up to what the child itself
  last reported.

``None`` for a figure means nothing bounds it. The broker's total counts the zones a
request that names no availability zone can reach: the local zones and their overflow
targets. A parent uses the total as a ceiling on what it forwards; it is a promise of
nothing, since other parents and local users share the room.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from federator.policy.evaluate import ZoneLoad
from federator.policy.loader import PolicyContext
from federator.policy.model import Policy

__all__ = ["BrokerHeadroom", "Room", "ZoneRoom", "headroom"]


@dataclass(frozen=True, slots=True)
class Room:
    """Free RAM (MiB), vCPUs and instance slots; None = unbounded."""

    ram_mb: int | None
    vcpus: int | None
    instances: int | None

    def plus(self, other: Room) -> Room:
        return Room(
            ram_mb=_add(self.ram_mb, other.ram_mb),
            vcpus=_add(self.vcpus, other.vcpus),
            instances=_add(self.instances, other.instances),
        )


NONE = Room(0, 0, 0)


@dataclass(frozen=True, slots=True)
class ZoneRoom:
    zone: str
    kind: str
    available: bool
    room: Room


@dataclass(frozen=True, slots=True)
class BrokerHeadroom:
    zones: tuple[ZoneRoom, ...]
    total: Room
    reachable: tuple[str, ...]
    """The zones counted in ``total``."""


def headroom(
    policy: Policy, context: PolicyContext, loads: Mapping[str, ZoneLoad]
) -> BrokerHeadroom:
    """Room left in every configured zone, and in all the zones overflow can reach."""
    rooms: list[ZoneRoom] = []
    for zone in context.zones:
        load = loads.get(zone)
        kind = context.kind(zone) or "virtual"
        if load is None or not load.available:
            rooms.append(ZoneRoom(zone, kind, False, NONE))
            continue
        room = _local(policy, load) if kind == "local" else _virtual(policy, load)
        rooms.append(ZoneRoom(zone, kind, True, room))
    reachable = _reachable(policy, context)
    total = NONE
    for zr in rooms:
        if zr.zone in reachable:
            total = total.plus(zr.room)
    return BrokerHeadroom(tuple(rooms), total, reachable)


def _reachable(policy: Policy, context: PolicyContext) -> tuple[str, ...]:
    out = list(context.local_zones)
    for zone in context.local_zones:
        for target in policy.zone(zone).overflow:
            if context.kind(target) == "virtual" and target not in out:
                out.append(target)
    return tuple(out)


def _local(policy: Policy, load: ZoneLoad) -> Room:
    if load.bursting:
        return NONE
    marks = policy.zone(load.zone).thresholds
    ram_cap, vcpu_cap = load.ram_total_mb, load.vcpus_total
    count: int | None = None
    if marks is not None:
        if marks.ram_percent is not None:
            ram_cap = min(ram_cap, math.floor(marks.ram_percent.high * load.ram_total_mb / 100))
        if marks.vcpu_percent is not None:
            vcpu_cap = min(vcpu_cap, math.floor(marks.vcpu_percent.high * load.vcpus_total / 100))
        if marks.instances is not None:
            count = max(0, int(marks.instances.high) - load.instances)
    return Room(
        ram_mb=max(0, ram_cap - load.ram_used_mb),
        vcpus=max(0, vcpu_cap - load.vcpus_used),
        instances=count,
    )


def _virtual(policy: Policy, load: ZoneLoad) -> Room:
    quota = policy.zone(load.zone).quota
    ceilings: Sequence[tuple[int | None, int | None, int | None]] = [
        (quota.ram_mb, quota.vcpus, quota.instances) if quota is not None else (None, None, None),
        (
            (load.reported.ram_mb, load.reported.vcpus, load.reported.instances)
            if load.reported is not None
            else (None, None, None)
        ),
    ]
    ram = _lowest(c[0] for c in ceilings)
    vcpus = _lowest(c[1] for c in ceilings)
    count = _lowest(c[2] for c in ceilings)
    return Room(
        ram_mb=None if ram is None else max(0, ram - load.ram_used_mb),
        vcpus=None if vcpus is None else max(0, vcpus - load.vcpus_used),
        instances=None if count is None else max(0, count - load.instances),
    )


def _lowest(values: Iterable[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return min(known) if known else None


def _add(a: int | None, b: int | None) -> int | None:
    return None if a is None or b is None else a + b
