"""The gang planner: one decision placing every member of a virtual cluster, or none.

Pure: it reads a snapshot of where capacity is (:class:`ZoneOption`: a zone the policy
allows, in the policy's order, with its free hosts or its quota, and its storage pools)
and returns a :class:`Plan` assigning every member a zone and a host or pool, or the
grouping or resource that made it impossible. Claiming what the plan uses is the caller's.

How it searches:

1. **Units.** Hard affinity merges members into units placed together: servers of a
   host-scope ``affinity`` grouping share one host; a volume affine to a server goes with
   it (into its host's pool when the zone's storage is host-local, else a pool of the same
   zone); volumes affine only to each other share a pool.
2. **Order.** Units with the most hard anti-affinity partners go first, then the largest:
   the most constrained choices are made while there is most room.
3. **Depth-first search with backtracking.** For a unit, candidate places come in order
   of preference: zones in the policy's order (local zones first); within a zone, hosts
   with the most free RAM first (spread), and pools with the most free space. A
   candidate must fit the unit in what is left and keep every hard grouping with the
   members placed so far; candidates that also keep the soft groupings are tried first.
   The first complete assignment is the plan; a dead end backs up to the previous unit's
   next candidate.

The search is exhaustive: a plan that exists is found, unless the search tries more than
``budget`` candidates first (:data:`NODE_BUDGET`), which the answer then says. Hosts (and
pools) are sorted once per decision; the few the search books into are re-sorted as it
goes, so offering the best candidate costs a few vectorised passes over the zone.

How a rule compares members: servers by :func:`federator.groups.rules.key_of` (a host, or
the zone where it counts as one host, or nothing where the remote cloud keeps
anti-affinity itself); volumes by their pool (``pool:<zone>/<pool>``) in host scope; every
member by its availability zone in zone scope.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import compress, repeat

import numpy as np
from numpy.typing import NDArray

from federator.groups.rules import Spot, ZoneMode, key_of
from federator.vclusters.model import (
    GROUP_POLICY,
    NO_VALID_HOST,
    SERVER,
    VOLUME,
    Assignment,
    Grouping,
    HostColumns,
    HostSlot,
    Member,
    Plan,
    PoolColumns,
    PoolSlot,
    ZoneOption,
)

__all__ = [
    "GROUP_POLICY",
    "NODE_BUDGET",
    "NO_VALID_HOST",
    "SERVER",
    "VOLUME",
    "Assignment",
    "Grouping",
    "HostColumns",
    "HostSlot",
    "Member",
    "Plan",
    "PoolColumns",
    "PoolSlot",
    "ZoneOption",
    "plan",
]

NODE_BUDGET = 100_000
"""Candidates the search may try before it gives up (and says so)."""

# --- the zones, as arrays the search books into -------------------------------------------


_UNBOUNDED = np.iinfo(np.int64).max // 4
_LEFT = ("instances_left", "vcpus_left", "ram_mb_left", "volumes_left", "gb_left")


class _Zone:
    def __init__(self, z: ZoneOption) -> None:
        self.name, self.mode, self.az, self.shared = z.name, z.mode, z.az, z.shared_storage
        hosts, pools = HostColumns.of(z.hosts), PoolColumns.of(z.pools)
        self.hosts = hosts
        self.host_names = hosts.names
        # Copies: the search books into them, the zone option stays as it was given.
        self.vcpus = np.array(hosts.free_vcpus, dtype=np.int64)
        self.ram = np.array(hosts.free_ram_mb, dtype=np.int64)
        self.disk = np.array(hosts.free_disk_gb, dtype=np.int64)
        self.pool_names = pools.names
        self.pool_hosts = pools.hosts
        self.pool_azs = pools.azs
        self.pool_free = np.where(pools.unbounded, _UNBOUNDED, pools.free_gb).astype(np.int64)
        # Keyed by name; a pool's host (None for a zone's pool) is looked up in it too.
        positions = range(len(hosts))
        self.index: dict[str | None, int] = dict(zip(self.host_names, positions, strict=True))
        self.by_ram = _Ranked(self.ram)
        # Each listed host's pools, as runs of one array (no list per host): pools sorted
        # by their host's position, ``_pool_runs[i]:_pool_runs[i + 1]`` those of host i.
        on = np.fromiter(map(self.index.get, pools.hosts, repeat(-1)), np.intp, len(pools))
        self._pools_by_host = np.argsort(on, kind="stable")
        self._pool_runs = np.searchsorted(on[self._pools_by_host], np.arange(len(hosts) + 1))
        self.by_free = _Ranked(self.pool_free)
        self.left = {a: getattr(z, a) for a in _LEFT}

    def pools_on(self, host: str) -> list[int]:
        """The positions of the pools on host ``host``, in pool order (none for a host the
        zone does not list)."""
        i = self.index.get(host)
        return [] if i is None else self.pools_at(i)

    def pools_at(self, i: int) -> list[int]:
        """The positions of the pools on the host at position ``i``, in pool order."""
        run: list[int] = self._pools_by_host[self._pool_runs[i] : self._pool_runs[i + 1]].tolist()
        return run


# --- units ------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Unit:
    servers: list[Member]
    volumes: list[Member]
    partners: int = 0
    anchor: tuple[str, str | None] | None = None
    """The zone (and host) of an already placed member the unit is hard-affine to."""
    soft: bool = False
    soft_apart: bool = False
    """In a soft anti-affinity grouping and no soft affinity one: when the rule must be
    relaxed, a zone the broker cannot see into goes before doubling up on a host."""
    vcpus: int = 0
    ram: int = 0
    disk: int = 0
    gb: int = 0

    def finish(self) -> None:
        self.vcpus = sum(m.vcpus for m in self.servers)
        self.ram = sum(m.ram_mb for m in self.servers)
        self.disk = sum(m.disk_gb for m in self.servers)
        self.gb = sum(m.size_gb for m in self.volumes)

    @property
    def names(self) -> list[str]:
        return [m.name for m in (*self.servers, *self.volumes)]


def _units(members: Sequence[Member], groupings: Sequence[Grouping]) -> list[_Unit]:
    kinds = {m.name: m.kind for m in members}
    parent = {m.name: m.name for m in members}

    def find(n: str) -> str:
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    def join(a: str, b: str) -> None:
        parent[find(a)] = find(b)

    for g in groupings:
        if g.rule.policy != "affinity":
            continue
        servers = [n for n in g.members if kinds[n] == SERVER]
        if g.rule.scope == "host" or not servers:
            for a, b in zip(g.members, g.members[1:], strict=False):
                join(a, b)
        else:  # zone scope: each volume still goes with a server it attaches to
            for v in (n for n in g.members if kinds[n] == VOLUME):
                join(v, servers[0])
    found: dict[str, _Unit] = {}
    for m in members:
        unit = found.setdefault(find(m.name), _Unit([], []))
        (unit.servers if m.kind == SERVER else unit.volumes).append(m)
    for u in found.values():
        u.finish()
    return list(found.values())


# --- rules ------------------------------------------------------------------------------------


class _Rules:
    """Each grouping's members counted by the key its rule compares them by, kept up to
    date as the search places and removes members."""

    def __init__(self, groupings: Sequence[Grouping], kinds: Mapping[str, str]) -> None:
        self.by_name = {g.name: g for g in groupings}
        self.of: dict[str, list[Grouping]] = {n: [] for n in kinds}
        for g in groupings:
            for n in g.members:
                self.of[n].append(g)
        self.kinds = kinds
        self.held: dict[str, Counter[str]] = {g.name: Counter() for g in groupings}
        self.zones: dict[str, Counter[str]] = {g.name: Counter() for g in groupings}

    def key(self, g: Grouping, a: Assignment, mode: ZoneMode) -> str | None:
        if g.rule.scope == "zone":
            return f"az:{a.az}"
        if self.kinds[a.member] == VOLUME:
            return f"pool:{a.zone}/{a.pool}"
        return key_of(g.rule, Spot(a.zone, a.host, a.az), mode)

    def broken(
        self, assignments: Sequence[Assignment], mode: ZoneMode, *, hard: bool
    ) -> str | None:
        """The first grouping (hard ones, or with ``hard`` False the soft ones) that the
        candidate breaks with the members placed so far; None when it keeps them all."""
        adding: dict[str, Counter[str]] = {}
        zones: dict[str, set[str]] = {}
        for a in assignments:
            for g in self.of[a.member]:
                if g.rule.hard != hard:
                    continue
                k = self.key(g, a, mode)
                if k is not None:
                    adding.setdefault(g.name, Counter())[self._kind_key(g, a, k)] += 1
                zones.setdefault(g.name, set()).add(a.zone)
        for name, counts in adding.items():
            g = self.by_name[name]
            held = self.held[name]
            if g.rule.affinity:
                for kind in (SERVER, VOLUME):
                    keys = {
                        k for k in (*held, *counts) if k.startswith(kind) and held[k] + counts[k]
                    }
                    if len(keys) > 1:
                        return name
                if len({z for z, n in self.zones[name].items() if n} | zones[name]) > 1:
                    return name
            else:
                for k, n in counts.items():
                    if held[k] + n > g.rule.max_per_host:
                        return name
        return None

    def _kind_key(self, g: Grouping, a: Assignment, key: str) -> str:
        # Affinity compares servers with servers and volumes with volumes (a volume goes
        # with its server by being in its zone and, for host-local storage, its host's
        # pool); anti-affinity compares every member by its key.
        if g.rule.affinity:
            return f"{self.kinds[a.member]}|{key}"
        return key

    def book(self, assignments: Sequence[Assignment], mode: ZoneMode, sign: int) -> None:
        for a in assignments:
            for g in self.of[a.member]:
                k = self.key(g, a, mode)
                if k is not None:
                    self.held[g.name][self._kind_key(g, a, k)] += sign
                self.zones[g.name][a.zone] += sign


# --- the search -------------------------------------------------------------------------------


@dataclass(slots=True)
class _Search:
    units: list[_Unit]
    zones: list[_Zone]
    rules: _Rules
    budget: int
    placed: dict[str, Assignment] = field(default_factory=dict)
    tried: int = 0
    blocked: Counter[str] = field(default_factory=Counter)

    def run(self, i: int = 0) -> bool:
        if i == len(self.units):
            return True
        unit = self.units[i]
        passes = (True, False) if unit.soft else (None,)
        failed: set[tuple[object, ...]] = set()
        for keep_soft in passes:
            relaxed = keep_soft is False and unit.soft_apart
            for zone, assignments, book in self._candidates(unit, opaque_first=relaxed):
                # Symmetry: a place just like one that already led to a dead end (same
                # zone, same room left, holding nothing of the unit's groupings) would
                # lead to the same dead end.
                sig = self._signature(zone, assignments)
                if sig in failed:
                    continue
                if keep_soft is not None:
                    keeps = self.rules.broken(assignments, zone.mode, hard=False) is None
                    if keeps != keep_soft:
                        continue
                self.tried += 1
                if self.tried > self.budget:
                    return False
                book(+1)
                self.rules.book(assignments, zone.mode, +1)
                for a in assignments:
                    self.placed[a.member] = a
                if self.run(i + 1):
                    return True
                for a in assignments:
                    del self.placed[a.member]
                self.rules.book(assignments, zone.mode, -1)
                book(-1)
                if self.tried > self.budget:
                    return False
                if sig is not None:
                    failed.add(sig)
        return False

    def _signature(self, zone: _Zone, assignments: list[Assignment]) -> tuple[object, ...] | None:
        """What makes a candidate different from another for the rest of the search; None
        when the candidate touches a place holding members of its groupings (never
        interchangeable)."""
        parts: list[object] = [zone.name]
        for a in assignments:
            for g in self.rules.of[a.member]:
                k = self.rules.key(g, a, zone.mode)
                if k is not None and self.rules.held[g.name][self.rules._kind_key(g, a, k)]:
                    return None
        host = assignments[0].host if assignments else None
        # A volume's pool may be on a host the zone does not list (one the scheduler's
        # filters leave out): such a host has no room figures to compare.
        i = None if host is None else zone.index.get(host)
        if i is not None:
            parts += [int(zone.vcpus[i]), int(zone.ram[i]), int(zone.disk[i]), zone.hosts.az_at(i)]
            parts += sorted(int(zone.pool_free[p]) for p in zone.pools_at(i))
        else:
            parts.append(host)
        parts += [(a.pool, a.az) if a.pool is not None and a.host is None else a.az
                  for a in assignments]  # fmt: skip
        return tuple(parts)

    def _candidates(
        self, unit: _Unit, *, opaque_first: bool = False
    ) -> Iterator[tuple[_Zone, list[Assignment], Callable[[int], None]]]:
        if unit.anchor is not None:
            yield from self._anchored(unit, unit.anchor)
            return
        zones = self.zones
        if opaque_first:
            # An opaque cloud counts as one host only because the broker cannot see its
            # hosts; it spreads instances over many. Relaxing a soft anti-affinity rule
            # there most likely keeps it in fact; doubling up on a known host breaks it.
            zones = sorted(zones, key=lambda z: z.mode is ZoneMode.HOSTS)
        for zone in zones:
            if not self._zone_room(zone, unit):
                continue
            if zone.mode is ZoneMode.HOSTS and unit.servers:
                fits = (
                    (zone.vcpus >= unit.vcpus) & (zone.ram >= unit.ram) & (zone.disk >= unit.disk)
                )
                if not fits.any():
                    self.blocked[f"host capacity in zone {zone.name}"] += 1
                    continue
                for h in zone.by_ram.best_first(fits):
                    yield from self._with_pools(unit, zone, h)
            else:
                yield from self._with_pools(unit, zone, None)

    def _anchored(
        self, unit: _Unit, anchor: tuple[str, str | None]
    ) -> Iterator[tuple[_Zone, list[Assignment], Callable[[int], None]]]:
        """Candidates for a unit that must join an already placed member: its zone and,
        where the zone's hosts are the broker's, its host."""
        zone = next((z for z in self.zones if z.name == anchor[0]), None)
        if zone is None:
            self.blocked[f"zone {anchor[0]} (where affine members are) takes nothing now"] += 1
            return
        if not self._zone_room(zone, unit):
            return
        host = None if anchor[1] is None else zone.index.get(anchor[1])
        if anchor[1] is not None and host is None and zone.host_names:
            self.blocked[f"host {anchor[1]} of zone {zone.name}"] += 1
            return
        if host is None and unit.servers and zone.mode is ZoneMode.HOSTS:
            room = (zone.vcpus >= unit.vcpus) & (zone.ram >= unit.ram) & (zone.disk >= unit.disk)
            for h in zone.by_ram.best_first(room):
                yield from self._with_pools(unit, zone, h)
            return
        if host is not None and unit.servers:
            fits = (
                zone.vcpus[host] >= unit.vcpus
                and zone.ram[host] >= unit.ram
                and zone.disk[host] >= unit.disk
            )
            if not fits:
                self.blocked[f"host capacity in zone {zone.name}"] += 1
                return
        yield from self._with_pools(unit, zone, host)

    def _zone_room(self, zone: _Zone, unit: _Unit) -> bool:
        wanted = (len(unit.servers), unit.vcpus, unit.ram, len(unit.volumes), unit.gb)
        for attr, amount in zip(_LEFT, wanted, strict=True):
            left = zone.left[attr]
            if amount and left is not None and left < amount:
                self.blocked[f"{attr.removesuffix('_left')} quota of zone {zone.name}"] += 1
                return False
        return True

    def _with_pools(
        self, unit: _Unit, zone: _Zone, host: int | None
    ) -> Iterator[tuple[_Zone, list[Assignment], Callable[[int], None]]]:
        host_name = None if host is None else zone.host_names[host]
        az = zone.az if host is None else zone.hosts.az_at(host)
        servers = [Assignment(m.name, zone.name, host_name, None, az) for m in unit.servers]
        for pool in self._pools(unit, zone, host_name):
            volumes = []
            if pool is not None:
                pool_az = zone.pool_azs[pool] if zone.pool_hosts[pool] is not None else az
                volumes = [
                    Assignment(v.name, zone.name, zone.pool_hosts[pool], zone.pool_names[pool],
                               pool_az)
                    for v in unit.volumes
                ]  # fmt: skip
            assignments = servers + volumes
            broken = self.rules.broken(assignments, zone.mode, hard=True)
            if broken is not None:
                self.blocked[broken] += 1
                continue
            yield zone, assignments, _booking(zone, unit, host, pool)

    def _pools(self, unit: _Unit, zone: _Zone, host: str | None) -> Iterator[int | None]:
        if not unit.volumes:
            yield None
            return
        if not zone.shared and host is not None:
            local = [p for p in zone.pools_on(host) if zone.pool_free[p] >= unit.gb]
            if not local:
                self.blocked[f"storage pool capacity in zone {zone.name}"] += 1
            yield from sorted(local, key=lambda p: -int(zone.pool_free[p]))
            return
        fits = zone.pool_free >= unit.gb
        if not fits.any():
            self.blocked[f"storage pool capacity in zone {zone.name}"] += 1
            return
        if host is not None:  # shared storage: the server's own host's pool first
            own = [p for p in zone.pools_on(host) if fits[p]]
            yield from own
            fits = fits.copy()
            fits[own] = False
        yield from zone.by_free.best_first(fits)


_RANKED_STRETCH = 256


class _Ranked:
    """Positions best first by a value the search books into (free RAM of hosts, free
    space of pools): sorted once, then kept exact by re-sorting only the few positions
    booked since (the rest still hold their first value)."""

    def __init__(self, values: NDArray[np.int64]) -> None:
        self.values = values
        self.order = np.argsort(-values, kind="stable")
        self.touched = np.zeros(values.size, dtype=np.bool_)
        self.touched_list: list[int] = []

    def touch(self, i: int) -> None:
        if not self.touched[i]:
            self.touched[i] = True
            self.touched_list.append(i)

    def best_first(self, mask: NDArray[np.bool_]) -> Iterator[int]:
        """The positions where ``mask`` holds, largest value first (ties by position)."""
        booked = sorted(
            (i for i in self.touched_list if mask[i]), key=lambda i: (-int(self.values[i]), i)
        )
        b = 0
        # The untouched positions a stretch of the order at a time: the search mostly takes
        # one of the first, and need not sift the whole zone for it.
        for start in range(0, self.order.size, _RANKED_STRETCH):
            part = self.order[start : start + _RANKED_STRETCH]
            for c in part[mask[part] & ~self.touched[part]]:
                key = (-int(self.values[c]), int(c))
                while b < len(booked) and (-int(self.values[booked[b]]), booked[b]) < key:
                    yield booked[b]
                    b += 1
                yield int(c)
        yield from booked[b:]


def _booking(zone: _Zone, unit: _Unit, host: int | None, pool: int | None) -> Callable[[int], None]:
    wanted = dict(zip(_LEFT, (len(unit.servers), unit.vcpus, unit.ram, len(unit.volumes),
                              unit.gb), strict=True))  # fmt: skip

    def book(sign: int) -> None:
        if host is not None:
            zone.vcpus[host] -= sign * unit.vcpus
            zone.ram[host] -= sign * unit.ram
            zone.disk[host] -= sign * unit.disk
            zone.by_ram.touch(host)
        if pool is not None:
            zone.pool_free[pool] -= sign * unit.gb
            zone.by_free.touch(pool)
        for attr, amount in wanted.items():
            left = zone.left[attr]
            if left is not None:
                zone.left[attr] = left - sign * amount

    return book


def _anchors(
    groupings: Sequence[Grouping], kinds: Mapping[str, str], fixed: Mapping[str, Assignment]
) -> dict[str, tuple[str, str | None]]:
    """For each new member hard-affine (host scope) to a placed one: where it must go, the
    placed server's zone and host, else the placed volume's zone and pool host."""
    found: dict[str, tuple[str, str | None]] = {}
    for g in groupings:
        if g.rule.policy != "affinity" or g.rule.scope != "host":
            continue
        placed = [fixed[n] for n in g.members if n in fixed]
        if not placed:
            continue
        servers = [a for a in placed if kinds[a.member] == SERVER]
        anchor = servers[0] if servers else placed[0]
        for n in g.members:
            if n not in fixed:
                found.setdefault(n, (anchor.zone, anchor.host))
    return found


def _too_few_places(
    g: Grouping, members: Sequence[Member], zones: Sequence[ZoneOption]
) -> str | None:
    """Why a hard anti-affinity grouping cannot hold whatever the search does: fewer
    places (hosts that can take its smallest server, zones that count as one, availability
    zones in zone scope) than it needs; None when there may be enough."""
    if not g.rule.hard or g.rule.affinity or not members:
        return None
    servers = [m for m in members if m.kind == SERVER]
    if len(servers) != len(members):
        return None  # volumes are compared by pool: left to the search
    small = min(servers, key=lambda m: (m.ram_mb, m.vcpus))
    places: set[str] = set()
    hosts = 0  # hosts of ``hosts`` zones with room: each a place of its own
    for z in zones:
        if z.instances_left is not None and z.instances_left < 1:
            continue
        if g.rule.scope == "zone" and z.hosts:
            cols = HostColumns.of(z.hosts)
            codes = np.unique(cols.az_codes[cols.fits(small.vcpus, small.ram_mb, small.disk_gb)])
            places.update(cols.az_names[c] for c in codes.tolist())
        elif g.rule.scope == "zone":
            places.add(z.az)
        elif z.mode is ZoneMode.HOSTS:
            cols = HostColumns.of(z.hosts)
            fits = cols.fits(small.vcpus, small.ram_mb, small.disk_gb)
            hosts += len(set(compress(cols.names, fits.tolist())))
        elif z.mode is ZoneMode.REMOTE:
            return None  # the remote cloud has places enough, as far as anyone can tell
        else:
            places.add(z.name)
    found = len(places) + hosts
    if found * g.rule.max_per_host >= len(members):
        return None
    what = "availability zones" if g.rule.scope == "zone" else "hosts (a zone the broker "
    what += "" if g.rule.scope == "zone" else "cannot see into counts as one)"
    return (
        f"grouping {g.name!r} ({g.rule.describe()}) needs {len(members)} places and the "
        f"policy's zones have {found} {what} with room"
    )


def plan(
    members: Sequence[Member],
    groupings: Sequence[Grouping],
    zones: Sequence[ZoneOption],
    *,
    budget: int = NODE_BUDGET,
    fixed: Sequence[tuple[Member, Assignment]] = (),
    modes: Mapping[str, ZoneMode] | None = None,
) -> Plan:
    """Assign every member a place that keeps every hard grouping, or say why not.

    ``zones`` come in the policy's order of preference and are not changed. ``fixed``
    are members placed already (their capacity is not in ``zones`` any more): the new
    members keep every grouping with them too, and the plan lists only the new members.
    ``modes`` says how each fixed member's zone counts, where it is not in ``zones``.
    """
    kinds = {m.name: m.kind for m in members}
    kinds.update({m.name: m.kind for m, _ in fixed})
    new = set(m.name for m in members)
    mine = [Grouping(g.name, tuple(n for n in g.members if n in new), g.rule) for g in groupings]
    units = _units(members, mine)
    # Hosts and pools listed one by one become columns once, here, for every pass below.
    zones = [replace(z, hosts=HostColumns.of(z.hosts), pools=PoolColumns.of(z.pools))
             for z in zones]  # fmt: skip
    zone_modes = {**(modes or {}), **{z.name: z.mode for z in zones}}
    rules = _Rules(groupings, kinds)
    for m, a in fixed:
        mode = zone_modes.get(a.zone, ZoneMode.SINGLE)
        broken = rules.broken([a], mode, hard=True)
        if broken is not None:
            return Plan(
                fault=GROUP_POLICY,
                blocked_by=broken,
                message=f"grouping {broken!r} ({rules.by_name[broken].rule.describe()}) is "
                f"broken by members placed already ({m.name} in {a.zone})",
            )
        rules.book([a], mode, +1)
    anchors = _anchors(groupings, kinds, {m.name: a for m, a in fixed})
    for u in units:
        u.anchor = next((anchors[n] for n in u.names if n in anchors), None)
    partners: Counter[str] = Counter()
    soft: set[str] = set()
    soft_apart: set[str] = set()
    soft_together: set[str] = set()
    for g in groupings:
        if g.rule.hard and not g.rule.affinity:
            for n in g.members:
                partners[n] += len(g.members) - 1
        if not g.rule.hard:
            soft.update(g.members)
            (soft_together if g.rule.affinity else soft_apart).update(g.members)
    for u in units:
        u.partners = sum(partners[n] for n in u.names)
        u.soft = any(n in soft for n in u.names)
        u.soft_apart = any(n in soft_apart for n in u.names) and not any(
            n in soft_together for n in u.names
        )
    units.sort(key=lambda u: (-u.partners, -(u.ram + u.gb), u.names[0]))
    by_name = {m.name: m for m in members}
    for g in groupings:
        if any(n not in by_name for n in g.members):
            continue  # with members placed already: left to the search
        short = _too_few_places(g, [by_name[n] for n in g.members], zones)
        if short is not None:
            return Plan(fault=GROUP_POLICY, blocked_by=g.name, message=short)
    search = _Search(units, [_Zone(z) for z in zones], rules, budget)
    if search.run():
        return Plan(tuple(search.placed[m.name] for m in members), tried=search.tried)
    if search.tried > budget:
        return Plan(
            fault=NO_VALID_HOST,
            blocked_by="search",
            message=f"no plan found within {budget} candidates",
            tried=search.tried,
        )
    culprit = search.blocked.most_common(1)[0][0] if search.blocked else "capacity"
    grouping = search.rules.by_name.get(culprit)
    if grouping is not None:
        return Plan(
            fault=GROUP_POLICY,
            blocked_by=culprit,
            message=f"grouping {culprit!r} ({grouping.rule.describe()}) cannot hold with the "
            "capacity left",
            tried=search.tried,
        )
    return Plan(
        fault=NO_VALID_HOST,
        blocked_by=culprit,
        message=f"not every member fits: {culprit} runs out",
        tried=search.tried,
    )
