"""What the gang planner reads: the zones a cluster may use, as the broker sees them now.

The zones and their order come from the same rankings single servers and single volumes
get (:func:`federator.policy.evaluate.rank`, :func:`federator.volumes.placement.rank_volume`),
each asked twice:

* with the cluster's total demand (every server's vCPUs, RAM and disk, every volume's
  size): a zone that takes the whole cluster under its thresholds and quotas is a full
  candidate;
* with an empty request (nothing but one more instance or volume): a zone the whole cluster
  would push over a high-water mark or a quota, but that still has room below it, offers
  that room. The planner then fills the local zones first and bursts the rest.

Either way a zone's ceilings are what its candidate's :class:`Limits` leave: the
high-water marks of a local zone, the quota (lowered by thresholds and a child zone's
report) of a virtual one, minus what the zone uses now, as the ``*_left`` figures of
:class:`ZoneOption`. Zones the policy refuses outright (a rule, a zone down, hysteresis:
a bursting zone takes nothing until it is back below low water) are left out, each with
the verdict that says why.

Hosts are the scheduler's, from the columnar host table: every host of the zone that
passes the scheduler's filters for the cluster's smallest server (enabled, in an
aggregate, not in maintenance, tenant isolation), with its free vCPUs, RAM and disk and
its availability zone. Rules that depend on one server's flavor or image (flavor extra
specs, image properties, per-host instance limits) are not judged here: the planner's
members carry sizes only. Storage is the zone's reported pools with their free space.
Both reach the planner as columns (:class:`~federator.vclusters.planner.HostColumns`,
:class:`~federator.vclusters.planner.PoolColumns`), not an object per host or pool.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from sqlalchemy import Integer, Table, func, select, type_coerce

from federator.compute import claims as server_claims
from federator.compute.context import ComputeContext
from federator.groups.placement import modes_of
from federator.groups.rules import ZoneMode
from federator.hosts.inventory import zone_loads
from federator.policy.evaluate import (
    Candidate,
    Limits,
    PlacementRequest,
    Ranking,
    Verdict,
    ZoneLoad,
    rank,
)
from federator.scheduler.request import HostRequest
from federator.storage.models import StoragePool
from federator.vclusters.model import (
    SERVER,
    VOLUME,
    HostColumns,
    Member,
    PoolColumns,
    ZoneOption,
)
from federator.volumes import claims as storage_claims
from federator.volumes.placement import (
    StorageLoad,
    VolumeCandidate,
    VolumeRanking,
    VolumeRequest,
    rank_volume,
)
from federator.volumes.worker import storage_loads

__all__ = ["ClusterInputs", "ZoneCeilings", "gather", "zone_options"]

# The table, not the mapped class: a Core query hands back plain rows, without the ORM's
# work per row (10,000 pools are read for one decision).
_POOLS = cast(Table, StoragePool.__table__)
_POOL_BATCH = 500
NO_SERVERS = Limits(instances=0)
"""The ceilings of a zone the policy lets take no server of this cluster."""
_SERVER_LEFT = ("instances_left", "vcpus_left", "ram_mb_left")
_STORAGE_LEFT = ("volumes_left", "gb_left")


@dataclass(frozen=True, slots=True)
class ZoneCeilings:
    """What the claims of the cluster's members in one zone must respect, as a single
    server's and a single volume's claims take them: absolute ceilings (None: none).

    ``thresholded``: ``limits`` are high-water marks, so a server's claim also requires
    the zone not to be bursting; ``storage_thresholded`` the same for ``gb_limit``.
    """

    zone: str
    limits: Limits
    thresholded: bool
    gb_limit: int | None
    volumes_limit: int | None
    storage_thresholded: bool


@dataclass(frozen=True, slots=True)
class ClusterInputs:
    """The planner's zones, in the policy's order, with what claiming in each needs.

    ``notes``: a verdict for every zone left out (why it can take nothing) and for every
    zone that offers only part of what the cluster asks (what the whole cluster would
    cross, and what is left). ``start_bursting`` and ``storage_start_bursting``: local
    zones the whole cluster would push over high water; whoever claims sets the flag once
    the cluster holds its capacity.
    """

    zones: tuple[ZoneOption, ...]
    ceilings: Mapping[str, ZoneCeilings]
    notes: tuple[Verdict, ...]
    start_bursting: tuple[str, ...] = ()
    storage_start_bursting: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class _Demand:
    servers: int
    vcpus: int
    ram_mb: int
    disk_gb: int
    volumes: int
    gb: int
    smallest: tuple[int, int, int]  # the least vCPUs, RAM, disk any server asks

    @classmethod
    def of(cls, members: Sequence[Member]) -> _Demand:
        servers = [m for m in members if m.kind == SERVER]
        volumes = [m for m in members if m.kind == VOLUME]
        smallest = (
            (
                min(m.vcpus for m in servers),
                min(m.ram_mb for m in servers),
                min(m.disk_gb for m in servers),
            )
            if servers
            else (0, 0, 0)
        )
        return cls(
            servers=len(servers),
            vcpus=sum(m.vcpus for m in servers),
            ram_mb=sum(m.ram_mb for m in servers),
            disk_gb=sum(m.disk_gb for m in servers),
            volumes=len(volumes),
            gb=sum(m.size_gb for m in volumes),
            smallest=smallest,
        )


def zone_options(
    ctx: ComputeContext, project_id: str, members: Sequence[Member]
) -> tuple[list[ZoneOption], list[Verdict]]:
    """The planner's zones for ``members`` of a cluster of ``project_id``, and the
    verdicts on the zones left out or offered in part (see :func:`gather`)."""
    found = gather(ctx, project_id, members)
    return list(found.zones), list(found.notes)


def gather(ctx: ComputeContext, project_id: str, members: Sequence[Member]) -> ClusterInputs:
    """Rank the zones for the cluster and read what is left in each.

    As the builder and the volume worker do after ranking, a bursting local zone the
    ranking finds back below every low-water mark has its flag cleared here (the flag is
    the zone's, not the request's), so claims within its high-water marks can succeed.
    """
    demand = _Demand.of(members)
    loaded = ctx.policies.current
    policy, context = loaded.policy, ctx.policies.context
    loads = zone_loads(ctx.api)
    whole: Ranking | None = None
    least: Ranking | None = None
    if demand.servers:
        whole = rank(policy, context, _server_request(project_id, demand), loads)
        least = rank(policy, context, _server_request(project_id, None), loads)
        for z in least.stop_bursting:
            server_claims.set_bursting(ctx.api, z, False)
    sloads: dict[str, StorageLoad] = {}
    vwhole: VolumeRanking | None = None
    vleast: VolumeRanking | None = None
    if demand.volumes:
        sloads = storage_loads(ctx)
        vwhole = rank_volume(policy, context, _volume_request(project_id, demand.gb), sloads)
        vleast = rank_volume(policy, context, _volume_request(project_id, 0), sloads)
        for z in vleast.stop_bursting:
            storage_claims.set_storage_bursting(ctx.api, z, False)

    servers_in = {c.zone: c for c in (least.candidates if least else ())}
    storage_in = {c.zone: c for c in (vleast.candidates if vleast else ())}
    # Both rankings list zones in the policy's order (local zones, then their overflow
    # targets); a zone either kind of member may use keeps its place in it.
    verdicts = [*(least.verdicts if least else ()), *(vleast.verdicts if vleast else ())]
    order = [
        z for z in dict.fromkeys(v.zone for v in verdicts) if z in servers_in or z in storage_in
    ]
    modes = modes_of(ctx.drivers)
    zones: list[ZoneOption] = []
    ceilings: dict[str, ZoneCeilings] = {}
    for name in order:
        option, ceiling = _zone(
            ctx, name, modes.get(name, ZoneMode.SINGLE), project_id, demand,
            servers_in.get(name), loads.get(name), storage_in.get(name), sloads.get(name),
        )  # fmt: skip
        zones.append(option)
        ceilings[name] = ceiling
    notes = _notes(whole, least, set(servers_in), zones, _SERVER_LEFT) + _notes(
        vwhole, vleast, set(storage_in), zones, _STORAGE_LEFT
    )
    return ClusterInputs(
        zones=tuple(zones),
        ceilings=ceilings,
        notes=tuple(notes),
        start_bursting=whole.start_bursting if whole else (),
        storage_start_bursting=vwhole.start_bursting if vwhole else (),
    )


def _server_request(project_id: str, demand: _Demand | None) -> PlacementRequest:
    # A cluster names no single flavor or image: rules about flavors or images leave it
    # alone, as they leave volumes alone.
    return PlacementRequest(
        project_id=project_id,
        flavor_id="",
        flavor_name="",
        vcpus=demand.vcpus if demand else 0,
        ram_mb=demand.ram_mb if demand else 0,
        disk_gb=demand.disk_gb if demand else 0,
        image_id="",
        image_name="",
    )


def _volume_request(project_id: str, size_gb: int) -> VolumeRequest:
    return VolumeRequest(project_id=project_id, size_gb=size_gb, volume_type="")


def _left(limit: int | None, used: int) -> int | None:
    return None if limit is None else max(0, limit - used)


def _zone(
    ctx: ComputeContext,
    name: str,
    mode: ZoneMode,
    project_id: str,
    demand: _Demand,
    cand: Candidate | None,
    load: ZoneLoad | None,
    vcand: VolumeCandidate | None,
    sload: StorageLoad | None,
) -> tuple[ZoneOption, ZoneCeilings]:
    """The zone as the planner sees it, and the ceilings its claims take."""
    limits, thresholded = NO_SERVERS, False
    hosts: HostColumns | tuple[()] = ()
    left: dict[str, int | None] = {}
    if demand.servers and cand is not None and load is not None:
        limits, thresholded = cand.limits, cand.thresholded
        left.update(
            instances_left=_left(limits.instances, load.instances),
            vcpus_left=_left(limits.vcpus, load.vcpus_used),
            ram_mb_left=_left(limits.ram_mb, load.ram_used_mb),
        )
        if mode is ZoneMode.HOSTS:
            found = _hosts(ctx, name, project_id, demand.smallest)
            hosts = found if len(found) else ()
    elif demand.servers:
        left["instances_left"] = 0
    gb_limit: int | None = 0
    volumes_limit: int | None = 0
    storage_thresholded = False
    pools: PoolColumns | tuple[()] = ()
    if demand.volumes and vcand is not None and sload is not None:
        gb_limit, volumes_limit = vcand.gb_limit, vcand.volumes_limit
        storage_thresholded = vcand.thresholded
        left.update(
            gb_left=_left(gb_limit, sload.gb_used),
            volumes_left=_left(volumes_limit, sload.volumes),
        )
        pools = _pools(ctx, name)
    elif demand.volumes:
        left["volumes_left"] = 0
    storage = ctx.drivers[name].block_storage() if name in ctx.drivers else None
    option = ZoneOption(
        name=name,
        mode=mode,
        az=name,
        hosts=hosts,
        pools=pools,
        shared_storage=True if storage is None else storage.storage_capabilities().shared,
        **left,
    )
    ceiling = ZoneCeilings(name, limits, thresholded, gb_limit, volumes_limit, storage_thresholded)
    return option, ceiling


def _hosts(
    ctx: ComputeContext, zone: str, project_id: str, smallest: tuple[int, int, int]
) -> HostColumns:
    """The zone's hosts that pass the scheduler's filters for the smallest server, with
    what each has free (allocation ratios applied): columns copied from the scheduler's
    host table under its lock, so the planner sees one consistent state."""
    vcpus, ram_mb, disk_gb = smallest
    req = HostRequest(zone=zone, vcpus=vcpus, ram_mb=ram_mb, disk_gb=disk_gb,
                      project_id=project_id)  # fmt: skip
    table = ctx.hosts.table
    with table.lock:
        sl = table.zone_slice(zone)
        passed = np.ones(sl.stop - sl.start, dtype=np.bool_)
        for f in ctx.scheduler.filters:
            f.apply(table, sl, req, passed)
        rel = np.flatnonzero(passed)
        positions = rel + sl.start
        az_names = [""] * len(table.az_codes)
        for az, code in table.az_codes.items():
            az_names[code] = az
        return HostColumns(
            list(map(table.name_at, positions.tolist())),
            table.az_code[positions],
            az_names,
            table.free_vcpus(sl)[rel],
            table.free_ram_mb(sl)[rel],
            table.free_disk_gb(sl)[rel],
        )


def _pools(ctx: ComputeContext, zone: str) -> PoolColumns | tuple[()]:
    """The zone's reported pools with their free space (unbounded where it is NULL), by
    one Core query read straight into columns."""
    t = _POOLS
    query = (
        select(t.c.name, t.c.host, t.c.az, type_coerce(t.c.free_gb.is_(None), Integer),
               func.coalesce(t.c.free_gb, 0))
        .where(t.c.zone == zone, t.c.reported.is_(True))
        .order_by(t.c.id)
    )  # fmt: skip
    cols: tuple[list[Any], ...] = ([], [], [], [], [])
    with ctx.api.read() as s:
        # A few hundred rows at a time, each batch dropped once it is in the columns: ten
        # thousand rows alive at once would survive the collector's young generations into
        # the old one and bring on a full collection (tens of ms in a broker this size).
        for part in s.execute(query).partitions(_POOL_BATCH):
            for col, values in zip(cols, zip(*part, strict=True), strict=True):
                col.extend(values)
    names, hosts, azs, unbounded, free = cols
    if not names:
        return ()
    return PoolColumns(
        names, hosts, azs, np.array(free, dtype=np.int64), np.array(unbounded, dtype=np.bool_)
    )


def _notes(
    whole: Ranking | VolumeRanking | None,
    least: Ranking | VolumeRanking | None,
    offered: set[str],
    zones: Sequence[ZoneOption],
    attrs: tuple[str, ...],
) -> list[Verdict]:
    """Verdicts on zones left out (the empty request's: they can take nothing) and on
    zones offered in part (the whole cluster's, saying what is left)."""
    if whole is None or least is None:
        return []
    by_zone = {z.name: z for z in zones}
    out = [v for v in least.verdicts if not v.accepted and v.zone not in offered]
    for v in whole.verdicts:
        if v.accepted or v.zone not in offered:
            continue
        z = by_zone[v.zone]
        room = [
            f"{attr.removesuffix('_left')} {value}"
            for attr in attrs
            if (value := getattr(z, attr)) is not None
        ]
        left = ", ".join(room) if room else "capacity of its hosts and pools"
        out.append(Verdict(v.zone, True, v.check, f"{v.detail}; offers what is left: {left}",
                           v.figures))  # fmt: skip
    return out
