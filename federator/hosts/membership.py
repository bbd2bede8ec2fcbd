"""Host aggregates and host state in the API database: the rules, inside one transaction.

A host's **availability zone** is the ``availability_zone`` metadata of an aggregate it
belongs to, else its zone's name (the zone name is the default availability zone of its
hosts, as Nova's ``default_availability_zone``). A host's ``enabled`` flag, the one claims
and the scheduler read, is derived: the driver still reports the host, no administrator
disabled it, it belongs to at least one aggregate, and it is not in maintenance.
``disabled_reason`` names the first of these that fails.

Nova's rules, each checked before anything changes, so a refused change leaves the
database as it was:

* aggregate names are unique whatever their case (409);
* a host is in one availability zone at most: it cannot join an aggregate whose
  availability zone differs from that of another aggregate it is in, and an aggregate's
  availability zone cannot change to one that differs from that of another aggregate one
  of its hosts is in (409);
* a host running instances never changes availability zone, whether by joining or
  leaving an aggregate or by its aggregate's availability zone changing (409);
* an aggregate still holding hosts cannot be deleted (409).

This broker adds one: an availability zone lies within one zone, since a boot naming it
is sent to that zone. A zone's own name is the availability zone of that zone's hosts
only, and a virtual zone's name is no aggregate's availability zone (400).

Every function here works in the caller's session; callers write through
``Database.write()``, and :func:`serialize` first, so concurrent changes of
aggregates are checked one after the other on PostgreSQL too (SQLite writers are
serialised already).
"""

from __future__ import annotations

import fnmatch
import logging
import uuid as uuidlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.orm import Session

from federator.config import AZ_NAME_MAX, AggregateConfig, ZoneConfig
from federator.exception import BadRequest, Conflict, FederatorError, NotFound
from federator.storage.db import Database
from federator.storage.models import (
    Aggregate,
    AggregateHost,
    AggregateMetadata,
    Host,
    Zone,
    utcnow,
)

LOG = logging.getLogger(__name__)

AZ_KEY = "availability_zone"
NOT_REPORTED = "not reported by driver"
NOT_IN_AGGREGATE = "not in any aggregate"
DISABLED_BY_ADMIN = "disabled by an administrator"
# Any constant: every transaction changing aggregates or host state takes this lock.
_LOCK_KEY = 0x66656461  # "feda"
# Above this many hosts, read every membership rather than list the ids in the query.
_IN_LIMIT = 500

HostState = Literal["enabled", "disabled", "maintenance"]


@dataclass(frozen=True, slots=True)
class Status:
    """Whether a host takes instances, and if not why, for the API and for explain."""

    enabled: bool
    state: HostState
    reason: str  # stored as ``hosts.disabled_reason``; "" when enabled


def status(host: Host, in_aggregate: bool) -> Status:
    """The derived state of ``host``: the first reason it takes no instances wins."""
    if not host.reported:
        return Status(False, "disabled", NOT_REPORTED)
    if host.admin_disabled:
        return Status(False, "disabled", host.admin_reason or DISABLED_BY_ADMIN)
    if not in_aggregate:
        return Status(False, "disabled", NOT_IN_AGGREGATE)
    if host.maintenance:
        return Status(False, "maintenance", f"maintenance: {host.maintenance_reason}")
    return Status(True, "enabled", "")


def explain_of(host: Host) -> str:
    """Why a stored host takes no instances, as the scheduler explains it:
    ``disabled: not in any aggregate``, ``maintenance: kernel upgrade``; "" when enabled."""
    if host.enabled:
        return ""
    if host.maintenance and host.disabled_reason.startswith("maintenance: "):
        return host.disabled_reason
    return f"disabled: {host.disabled_reason or DISABLED_BY_ADMIN}"


@dataclass(frozen=True, slots=True)
class Membership:
    """The aggregates one host belongs to: ``(aggregate id, name, availability zone)``."""

    aggregates: tuple[tuple[int, str, str | None], ...] = ()

    @property
    def ids(self) -> set[int]:
        return {a[0] for a in self.aggregates}

    def zones_besides(self, aggregate_id: int | None) -> dict[str, str]:
        """Availability zone -> aggregate name, over the aggregates other than ``aggregate_id``."""
        return {az: name for i, name, az in self.aggregates if i != aggregate_id and az}


@dataclass(frozen=True, slots=True)
class AggregateView:
    """An aggregate as the API shows it."""

    id: int
    uuid: str
    name: str
    availability_zone: str | None
    hosts: tuple[str, ...]
    metadata: Mapping[str, str] = field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None


# --- reading -----------------------------------------------------------------------------


def serialize(s: Session) -> None:
    """Make concurrent writers of aggregates and host state take turns (PostgreSQL)."""
    if s.get_bind().dialect.name == "postgresql":
        s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})


def memberships(s: Session, host_ids: Iterable[int] | None = None) -> dict[int, Membership]:
    """Each host's aggregates (hosts in none are absent from the answer)."""
    q = (
        select(AggregateHost.host_id, Aggregate.id, Aggregate.name, AggregateMetadata.value)
        .join(Aggregate, Aggregate.id == AggregateHost.aggregate_id)
        .outerjoin(
            AggregateMetadata,
            (AggregateMetadata.aggregate_id == Aggregate.id) & (AggregateMetadata.key == AZ_KEY),
        )
        .order_by(AggregateHost.host_id, Aggregate.id)
    )
    if host_ids is not None:
        q = q.where(AggregateHost.host_id.in_(list(host_ids)))
    found: dict[int, list[tuple[int, str, str | None]]] = {}
    for host_id, agg_id, name, az in s.execute(q):
        found.setdefault(host_id, []).append((agg_id, name, az))
    return {h: Membership(tuple(aggs)) for h, aggs in found.items()}


def host_metadata(s: Session) -> dict[int, dict[str, frozenset[str]]]:
    """Every host's aggregate metadata merged: key -> the values its aggregates give it."""
    q = select(AggregateHost.host_id, AggregateMetadata.key, AggregateMetadata.value).join(
        AggregateMetadata, AggregateMetadata.aggregate_id == AggregateHost.aggregate_id
    )
    merged: dict[int, dict[str, set[str]]] = {}
    for host_id, key, value in s.execute(q):
        merged.setdefault(host_id, {}).setdefault(key, set()).add(value)
    return {h: {k: frozenset(v) for k, v in m.items()} for h, m in merged.items()}


def zone_kinds(s: Session) -> dict[str, str]:
    return {name: kind for name, kind in s.execute(select(Zone.name, Zone.kind))}


def aggregate_zones(db: Database) -> dict[str, str]:
    """Availability zones given by aggregates, each with the zone holding its hosts."""
    with db.read() as s:
        rows = s.execute(select(Host.az, Host.zone).where(Host.az != Host.zone).distinct())
        return {az: zone for az, zone in rows}


def zone_of_az(db: Database, az: str) -> str | None:
    """The zone holding the hosts of aggregate availability zone ``az``, or None when no
    host is in it (zone names are the caller's to recognise)."""
    with db.read() as s:
        return s.scalars(
            select(Host.zone).where(Host.az == az, Host.az != Host.zone).limit(1)
        ).first()


def view(s: Session, agg: Aggregate) -> AggregateView:
    meta = {
        m.key: m.value
        for m in s.scalars(
            select(AggregateMetadata)
            .where(AggregateMetadata.aggregate_id == agg.id)
            .order_by(AggregateMetadata.key)
        )
    }
    hosts = s.scalars(
        select(Host.name)
        .join(AggregateHost, AggregateHost.host_id == Host.id)
        .where(AggregateHost.aggregate_id == agg.id)
        .order_by(Host.zone, Host.name)
    ).all()
    return AggregateView(
        id=agg.id,
        uuid=agg.uuid,
        name=agg.name,
        availability_zone=meta.get(AZ_KEY),
        hosts=tuple(hosts),
        metadata=meta,
        created_at=agg.created_at,
        updated_at=agg.updated_at,
    )


def get_aggregate(s: Session, ref: int | str) -> Aggregate:
    """An aggregate by id (an int, or a string of digits).

    :raises NotFound: no such aggregate, or ``ref`` is no id (clients look names up this
        way first and expect a 404).
    """
    agg_id = (
        ref if isinstance(ref, int) else (int(ref) if ref.isascii() and ref.isdigit() else None)
    )
    agg = s.get(Aggregate, agg_id) if agg_id is not None else None
    if agg is None:
        raise NotFound(f"aggregate {ref} could not be found", kind="aggregate", ident=ref)
    return agg


def find_host(s: Session, ref: str) -> Host:
    """A host by name, or ``zone/name`` when several zones have a host of that name.

    :raises NotFound: no such host.
    :raises Conflict: the name is ambiguous.
    """
    zone, sep, name = ref.partition("/")
    q = (
        select(Host).where(Host.name == name, Host.zone == zone)
        if sep
        else select(Host).where(Host.name == ref)
    )
    found = list(s.scalars(q))
    if not found:
        raise NotFound(f"host {ref} could not be found", kind="host", ident=ref)
    if len(found) > 1:
        zones = ", ".join(sorted(h.zone for h in found))
        raise Conflict(f"zones {zones} each have a host {ref}; name it as <zone>/{ref}")
    return found[0]


def hosts_of(s: Session, agg_id: int) -> list[Host]:
    return list(
        s.scalars(
            select(Host)
            .join(AggregateHost, AggregateHost.host_id == Host.id)
            .where(AggregateHost.aggregate_id == agg_id)
            .order_by(Host.zone, Host.name)
        )
    )


def az_of(s: Session, agg_id: int) -> str | None:
    return s.scalars(
        select(AggregateMetadata.value).where(
            AggregateMetadata.aggregate_id == agg_id, AggregateMetadata.key == AZ_KEY
        )
    ).first()


# --- checks ------------------------------------------------------------------------------


def _label(agg: Aggregate) -> str:
    return f"aggregate {agg.name!r} (id {agg.id})"


def check_name(s: Session, name: str, *, besides: int | None = None) -> None:
    """:raises Conflict: another aggregate has this name, whatever its case."""
    q = select(Aggregate).where(Aggregate.name_key == name.casefold())
    if besides is not None:
        q = q.where(Aggregate.id != besides)
    other = s.scalars(q).first()
    if other is not None:
        raise Conflict(f"an aggregate named {other.name!r} exists already (id {other.id})")


def check_az_name(s: Session, az: str, field_name: str = "availability_zone") -> None:
    """:raises BadRequest: the name is empty, too long, has a ':' or names a virtual zone."""
    problem = None
    if not az.strip():
        problem = "must not be empty (give null to remove the availability zone)"
    elif az != az.strip():
        problem = "must not begin or end with whitespace"
    elif len(az) > AZ_NAME_MAX:
        problem = f"must be at most {AZ_NAME_MAX} characters"
    elif ":" in az or any(ord(c) < 32 or ord(c) == 127 for c in az):
        problem = "must not contain ':' or control characters"
    elif zone_kinds(s).get(az) == "virtual":
        problem = (
            f"is the name of virtual zone {az!r}; an aggregate's availability zone holds "
            "hosts of a local zone"
        )
    if problem:
        raise BadRequest(
            f"availability zone {az!r} {problem}",
            problems=[{"field": field_name, "message": problem}],
        )


def _check_az_within_one_zone(s: Session, az: str, hosts: Sequence[Host], what: str) -> None:
    """:raises Conflict: ``hosts`` joining ``az`` would spread it over more than one zone."""
    zones = sorted({h.zone for h in hosts})
    if len(zones) > 1:
        raise Conflict(
            f"availability zone {az!r} would span zones {', '.join(zones)} ({what}); an "
            "availability zone lies within one zone"
        )
    if not zones:
        return
    serving = az if zone_kinds(s).get(az) == "local" else None
    if serving is None:
        serving = s.scalars(
            select(Host.zone).where(Host.az == az, Host.zone != zones[0]).limit(1)
        ).first()
    if serving is not None and serving != zones[0]:
        names = ", ".join(h.name for h in hosts)
        raise Conflict(
            f"availability zone {az!r} lies in zone {serving!r}, and {what} holds host(s) of "
            f"zone {zones[0]!r} ({names}); an availability zone lies within one zone"
        )


def _check_moves(host: Host, after: str, why: str) -> None:
    """:raises Conflict: ``host`` runs instances and would change availability zone."""
    if after != host.az and host.instances:
        raise Conflict(
            f"host {host.name} runs {host.instances} instance(s) in availability zone "
            f"{host.az!r}; {why} would move it to availability zone {after!r}. Move or delete "
            "its instances first (federator host drain)"
        )


def _az_after(host: Host, member: Membership, aggregate_id: int | None, az: str | None) -> str:
    others = member.zones_besides(aggregate_id)
    if az:
        return az
    return next(iter(others), host.zone)


# --- changes -----------------------------------------------------------------------------


def create(s: Session, name: str, az: str | None) -> Aggregate:
    """:raises Conflict: the name is taken. :raises BadRequest: a bad availability zone."""
    check_name(s, name)
    if az is not None:
        check_az_name(s, az)
    agg = Aggregate(uuid=str(uuidlib.uuid4()), name=name, name_key=name.casefold())
    s.add(agg)
    s.flush()
    if az is not None:
        s.add(AggregateMetadata(aggregate_id=agg.id, key=AZ_KEY, value=az))
    return agg


def rename(s: Session, agg: Aggregate, name: str) -> None:
    """:raises Conflict: another aggregate has the name."""
    if name == agg.name:
        return
    check_name(s, name, besides=agg.id)
    agg.name, agg.name_key, agg.updated_at = name, name.casefold(), utcnow()


def set_metadata(s: Session, agg: Aggregate, updates: Mapping[str, str | None]) -> None:
    """Set keys to values; a None value removes the key (an absent key is no error).

    ``availability_zone`` is the aggregate's availability zone: changing it is checked
    against every rule first, and nothing changes when one fails.

    :raises BadRequest: a bad availability zone. :raises Conflict: a rule forbids it.
    """
    if AZ_KEY in updates:
        set_availability_zone(s, agg, updates[AZ_KEY], field_name=f"metadata.{AZ_KEY}")
    for key, value in updates.items():
        if key == AZ_KEY:
            continue
        row = s.get(AggregateMetadata, (agg.id, key))
        if value is None:
            if row is not None:
                s.delete(row)
        elif row is None:
            s.add(AggregateMetadata(aggregate_id=agg.id, key=key, value=value))
        else:
            row.value = value
    agg.updated_at = utcnow()


def set_availability_zone(
    s: Session, agg: Aggregate, az: str | None, *, field_name: str = AZ_KEY
) -> None:
    """Give ``agg`` availability zone ``az`` (None: none), moving its hosts with it.

    :raises BadRequest: a bad name. :raises Conflict: a rule forbids the change.
    """
    old = az_of(s, agg.id)
    if az == old:
        return
    if az is not None:
        check_az_name(s, az, field_name)
    hosts = hosts_of(s, agg.id)
    member = memberships(s, [h.id for h in hosts] if len(hosts) <= _IN_LIMIT else None)
    for h in hosts:
        others = member.get(h.id, Membership()).zones_besides(agg.id)
        clash = {z: n for z, n in others.items() if z != az}
        if az is not None and clash:
            z, n = next(iter(clash.items()))
            raise Conflict(
                f"host {h.name} of {_label(agg)} is also in aggregate {n!r}, of availability "
                f"zone {z!r}; a host is in one availability zone at most"
            )
    if az is not None:
        _check_az_within_one_zone(s, az, hosts, _label(agg))
    for h in hosts:
        after = _az_after(h, member.get(h.id, Membership()), agg.id, az)
        _check_moves(h, after, f"changing the availability zone of {_label(agg)}")
    row = s.get(AggregateMetadata, (agg.id, AZ_KEY))
    if az is None:
        if row is not None:
            s.delete(row)
    elif row is None:
        s.add(AggregateMetadata(aggregate_id=agg.id, key=AZ_KEY, value=az))
    else:
        row.value = az
    agg.updated_at = utcnow()
    s.flush()
    refresh(s, hosts)


def add_host(s: Session, agg: Aggregate, host: Host) -> None:
    """:raises Conflict: already in it, or a rule forbids it."""
    member = memberships(s, [host.id]).get(host.id, Membership())
    if agg.id in member.ids:
        raise Conflict(f"host {host.name} is already in {_label(agg)}")
    az = az_of(s, agg.id)
    others = member.zones_besides(agg.id)
    clash = {z: n for z, n in others.items() if z != az}
    if az is not None and clash:
        z, n = next(iter(clash.items()))
        raise Conflict(
            f"host {host.name} is in aggregate {n!r}, of availability zone {z!r}; it cannot "
            f"also join {_label(agg)}, of availability zone {az!r}: a host is in one "
            "availability zone at most"
        )
    if az is not None:
        _check_az_within_one_zone(s, az, [*hosts_of(s, agg.id), host], _label(agg))
    _check_moves(host, _az_after(host, member, None, az), f"adding it to {_label(agg)}")
    s.add(AggregateHost(aggregate_id=agg.id, host_id=host.id))
    agg.updated_at = utcnow()
    s.flush()
    refresh(s, [host])


def remove_host(s: Session, agg: Aggregate, host: Host) -> None:
    """A host leaving its last aggregate is disabled (``not in any aggregate``).

    :raises NotFound: the host is not in the aggregate. :raises Conflict: it runs
        instances and would change availability zone.
    """
    member = memberships(s, [host.id]).get(host.id, Membership())
    if agg.id not in member.ids:
        raise NotFound(f"host {host.name} is not in {_label(agg)}", kind="host", ident=host.name)
    after = next(iter(member.zones_besides(agg.id)), host.zone)
    _check_moves(host, after, f"removing it from {_label(agg)}")
    s.execute(
        delete(AggregateHost).where(
            AggregateHost.aggregate_id == agg.id, AggregateHost.host_id == host.id
        )
    )
    agg.updated_at = utcnow()
    s.flush()
    refresh(s, [host])


def delete_aggregate(s: Session, agg: Aggregate) -> None:
    """:raises Conflict: the aggregate still has hosts."""
    hosts = hosts_of(s, agg.id)
    if hosts:
        names = ", ".join(h.name for h in hosts[:5]) + (", ..." if len(hosts) > 5 else "")
        raise Conflict(
            f"{_label(agg)} still holds {len(hosts)} host(s) ({names}); remove them first"
        )
    s.execute(delete(AggregateMetadata).where(AggregateMetadata.aggregate_id == agg.id))
    s.delete(agg)


# --- derived host state ------------------------------------------------------------------


def refresh(s: Session, hosts: Sequence[Host]) -> set[str]:
    """Recompute the availability zone, ``enabled`` and ``disabled_reason`` of ``hosts``
    and their zones' schedulable totals; returns the zones whose hosts changed."""
    if not hosts:
        return set()
    member = memberships(s, [h.id for h in hosts] if len(hosts) <= _IN_LIMIT else None)
    changed: set[str] = set()
    for h in hosts:
        m = member.get(h.id, Membership())
        az = next(iter(m.zones_besides(None)), h.zone)
        st = status(h, bool(m.aggregates))
        if (h.az, h.enabled, h.disabled_reason) != (az, st.enabled, st.reason):
            h.az, h.enabled, h.disabled_reason = az, st.enabled, st.reason
            h.updated_at = utcnow()
            changed.add(h.zone)
    s.flush()
    for zone in changed:
        update_zone_totals(s, zone)
    return changed


def update_zone_totals(s: Session, zone: str) -> None:
    """A zone's schedulable totals: the capacity of its enabled hosts."""
    totals = s.execute(
        select(
            func.coalesce(func.sum(Host.ram_mb * Host.ram_ratio), 0),
            func.coalesce(func.sum(Host.vcpus * Host.cpu_ratio), 0),
            func.coalesce(func.sum(Host.disk_gb * Host.disk_ratio), 0),
        ).where(Host.zone == zone, Host.enabled.is_(True))
    ).one()
    s.execute(
        update(Zone)
        .where(Zone.name == zone)
        .values(
            ram_total_mb=int(totals[0]),
            vcpus_total=int(totals[1]),
            disk_total_gb=int(totals[2]),
            updated_at=utcnow(),
        )
    )


# --- aggregates declared in the configuration ---------------------------------------------


def matches(config: AggregateConfig, host: str) -> bool:
    return any(fnmatch.fnmatchcase(host, pattern) for pattern in config.hosts)


def ensure_declared(s: Session, config: AggregateConfig) -> Aggregate | None:
    """The declared aggregate, created if missing and given the declared availability zone
    and metadata; None when a rule keeps it from being created or updated (logged)."""
    agg = s.scalars(select(Aggregate).where(Aggregate.name_key == config.name.casefold())).first()
    try:
        if agg is None:
            agg = create(s, config.name, config.availability_zone)
            LOG.info("aggregate %s created from the configuration", config.name)
        elif config.availability_zone is not None:
            set_availability_zone(s, agg, config.availability_zone)
        if config.metadata:
            current = {
                m.key: m.value
                for m in s.scalars(
                    select(AggregateMetadata).where(AggregateMetadata.aggregate_id == agg.id)
                )
            }
            wanted = {k: v for k, v in config.metadata.items() if current.get(k) != v}
            if wanted:
                set_metadata(s, agg, wanted)
    except FederatorError as exc:
        LOG.error("aggregate %s of the configuration was not applied: %s", config.name, exc)
        return agg
    return agg


def join_declared(s: Session, zone: ZoneConfig, hosts: Sequence[Host]) -> int:
    """Add each of ``hosts`` (of ``zone``) to the zone's declared aggregates it matches;
    returns how many memberships were added. The rules are checked as for
    :func:`add_host`, for all the hosts at once; a host a rule refuses is logged and
    skipped, and an aggregate whose availability zone would leave its zone takes none."""
    added = 0
    for config in zone.aggregates:
        wanted = [h for h in hosts if matches(config, h.name)]
        if not wanted:
            continue
        agg = ensure_declared(s, config)
        if agg is None:
            continue
        present = set(
            s.scalars(select(AggregateHost.host_id).where(AggregateHost.aggregate_id == agg.id))
        )
        joining = [h for h in wanted if h.id not in present]
        if not joining:
            continue
        az = az_of(s, agg.id)
        if az is not None:
            try:
                _check_az_within_one_zone(s, az, [*hosts_of(s, agg.id), *joining], _label(agg))
            except FederatorError as exc:
                LOG.error("no host of zone %s joins aggregate %s: %s", zone.name, agg.name, exc)
                continue
        member = memberships(s, [h.id for h in joining]) if len(joining) <= _IN_LIMIT else None
        if member is None:
            member = memberships(s)
        accepted = []
        for h in joining:
            m = member.get(h.id, Membership())
            try:
                clash = {z: n for z, n in m.zones_besides(agg.id).items() if z != az}
                if az is not None and clash:
                    z, n = next(iter(clash.items()))
                    raise Conflict(
                        f"it is in aggregate {n!r}, of availability zone {z!r}; a host is in "
                        "one availability zone at most"
                    )
                _check_moves(h, _az_after(h, m, None, az), f"adding it to {_label(agg)}")
            except FederatorError as exc:
                LOG.error("host %s does not join aggregate %s: %s", h.name, agg.name, exc)
                continue
            accepted.append(h)
        s.add_all(AggregateHost(aggregate_id=agg.id, host_id=h.id) for h in accepted)
        s.flush()
        refresh(s, accepted)
        added += len(accepted)
    return added
