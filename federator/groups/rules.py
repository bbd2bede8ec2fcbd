"""What a server group's rule allows, as pure functions of where its members are.

A member's place is a :class:`Spot`: its zone, its host where the broker schedules hosts,
and its availability zone. How a rule sees a spot depends on the kind of zone
(:class:`ZoneMode`):

* ``hosts``: the broker's host scheduler places instances on the zone's hosts, so a
  rule of scope ``host`` is about those hosts;
* ``remote``: the remote cloud keeps the rule on its hosts through a server group of its
  own (the driver's ``server_groups`` capability), so the broker leaves host-scope
  anti-affinity inside that zone to it, and affinity only keeps members in the zone;
* ``single``: a zone the broker can neither see into nor make keep the rule counts as
  one host.

A rule of scope ``zone`` is about availability zones, whatever the kind of zone.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = [
    "AFFINITY",
    "ANTI_AFFINITY",
    "POLICIES",
    "SCOPES",
    "SOFT_AFFINITY",
    "SOFT_ANTI_AFFINITY",
    "Rule",
    "Spot",
    "ZoneMode",
    "crowded",
    "key_of",
    "violation",
]

AFFINITY = "affinity"
ANTI_AFFINITY = "anti-affinity"
SOFT_AFFINITY = "soft-affinity"
SOFT_ANTI_AFFINITY = "soft-anti-affinity"
POLICIES = (AFFINITY, ANTI_AFFINITY, SOFT_AFFINITY, SOFT_ANTI_AFFINITY)
SCOPES = ("host", "zone")


class ZoneMode(enum.StrEnum):
    HOSTS = "hosts"
    REMOTE = "remote"
    SINGLE = "single"


@dataclass(frozen=True, slots=True)
class Rule:
    """A group's policy with its rules. ``max_per_host`` is how many members one host
    (or, with scope ``zone``, one availability zone) may hold under anti-affinity."""

    policy: str
    max_per_host: int = 1
    scope: str = "host"

    @property
    def hard(self) -> bool:
        return self.policy in (AFFINITY, ANTI_AFFINITY)

    @property
    def affinity(self) -> bool:
        return self.policy in (AFFINITY, SOFT_AFFINITY)

    def describe(self) -> str:
        """``anti-affinity (max_server_per_host=2, scope host)``."""
        parts = []
        if not self.affinity:
            parts.append(f"max_server_per_host={self.max_per_host}")
        parts.append(f"scope {self.scope}")
        return f"{self.policy} ({', '.join(parts)})"


@dataclass(frozen=True, slots=True)
class Spot:
    """Where a member is: zone, host (None where the broker does not place hosts) and
    availability zone."""

    zone: str
    host: str | None
    az: str


def key_of(rule: Rule, spot: Spot, mode: ZoneMode) -> str | None:
    """What the rule compares members by at ``spot``; None where the broker leaves the
    rule to the remote cloud (anti-affinity of scope host in a ``remote`` zone)."""
    if rule.scope == "zone":
        return f"az:{spot.az}"
    if mode is ZoneMode.HOSTS:
        return f"host:{spot.zone}/{spot.host}"
    if mode is ZoneMode.REMOTE and not rule.affinity:
        return None
    return f"zone:{spot.zone}"


def describe_key(key: str) -> str:
    """``host:local/h1`` as ``host h1 of zone local``, for messages."""
    kind, _, what = key.partition(":")
    if kind == "host":
        zone, _, host = what.partition("/")
        return f"host {host} of zone {zone}"
    if kind == "az":
        return f"availability zone {what}"
    return f"zone {what} (which counts as one host for the group)"


def violation(
    rule: Rule, members: Iterable[Spot], target: Spot, modes: Mapping[str, ZoneMode]
) -> str | None:
    """Why placing one more member at ``target`` breaks the rule (as if it were hard),
    or None when it keeps it. ``members`` are the members already placed."""
    target_key = key_of(rule, target, modes.get(target.zone, ZoneMode.SINGLE))
    keys = Counter(
        k
        for k in (key_of(rule, m, modes.get(m.zone, ZoneMode.SINGLE)) for m in members)
        if k is not None
    )
    if rule.affinity:
        # Kept only while every member shares one place: joining a group that a soft rule
        # already let split counts as relaxing it too.
        if not keys or set(keys) == {target_key}:
            return None
        where = ", ".join(describe_key(k) for k in sorted(keys))
        return f"its members are on {where}, not only {describe_key(target_key or '')}"
    if target_key is None:
        return None
    return crowded(rule, target_key, keys.get(target_key, 0))


def crowded(rule: Rule, key: str, held: int) -> str | None:
    """Why one more anti-affinity member at ``key``, which holds ``held`` members
    already, breaks the rule; None when there is room."""
    if held < rule.max_per_host:
        return None
    return f"{describe_key(key)} already holds {held} of its members"
