"""The boot flow: rank zones, claim capacity, call the driver, reschedule, or bury in cell0.

Crash safety rests on ordering. Capacity is claimed (with the chosen zone and host written
on the build request) before the driver is called; the cell record is written before the
build request is removed. A build task found running after a crash therefore resumes from
what the databases and the driver say: an instance already recorded in its cell is just
mapped, one the driver already has is recorded, and a claim with nothing behind it is
released and the request scheduled again. The transaction that maps the instance also
ends its build task (the caller's ``also``), so a task is never done while its build
request remains.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import astuple, dataclass, field
from typing import Any

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from federator import errors
from federator.compute import claims
from federator.compute.bootspec import BootSpec
from federator.compute.context import ComputeContext
from federator.compute.queue import TaskRef
from federator.compute.records import CELL0
from federator.compute.refs import placement_zone
from federator.compute.zonestate import record_zone_failure
from federator.driver import (
    AuthError,
    CapacityError,
    DriverError,
    FlavorSpec,
    InstanceNotFound,
    InstanceSpec,
    RemoteInstance,
    TransientError,
)
from federator.groups import remote as remote_groups
from federator.groups.placement import GroupState, Guard, ZoneFit, fit, load, modes_of
from federator.groups.rules import Spot, ZoneMode, violation
from federator.hosts.inventory import zone_loads
from federator.policy.evaluate import Candidate, PlacementRequest, Ranking, ZoneLoad, rank
from federator.scheduler.request import HostRequest
from federator.storage.models import (
    Allocation,
    BuildRequest,
    Host,
    Instance,
    InstanceMapping,
    RequestSpec,
    utcnow,
)

LOG = logging.getLogger(__name__)
ALTERNATES = 5
MAX_RESELECT = 200
# Claims a server group's guard refused because another member committed first; each
# refusal re-reads the group, so this bounds a storm of members racing for few hosts.
MAX_GROUP_RACES = 500
# Work a build's caller adds to the transaction that maps the instance (ending its task).
Also = Callable[[Session], None]

_BUILD_TABLE = BuildRequest.__table__
# (attribute, column) of the build request, to make one from a row of _BUILD_INPUTS.
_BUILD_ATTRS = tuple(BuildRequest.__mapper__.columns.items())
_BUILD_INPUTS = (
    select(
        *(column for _attr, column in _BUILD_ATTRS),
        RequestSpec.spec.label("spec"),
        Allocation.zone.label("held_zone"),
        Host.name.label("held_host"),
    )
    .select_from(_BUILD_TABLE)
    .outerjoin(RequestSpec, RequestSpec.instance_uuid == _BUILD_TABLE.c.instance_uuid)
    .outerjoin(Allocation, Allocation.instance_uuid == _BUILD_TABLE.c.instance_uuid)
    .outerjoin(Host, Host.id == Allocation.host_id)
    .where(_BUILD_TABLE.c.instance_uuid == bindparam("uuid"))
)
"""A build's inputs in one read: the build request, its spec, and the zone and host of
the capacity it holds (none until claimed)."""
# The instance record, once: a resumed build whose record was committed before a crash
# keeps it. Built once, run with each record's values.
_RECORD_SQLITE = sqlite.insert(Instance).on_conflict_do_nothing(index_elements=["uuid"])
_RECORD_POSTGRESQL = postgresql.insert(Instance).on_conflict_do_nothing(index_elements=["uuid"])
_POINT_MAPPING = (
    update(InstanceMapping)
    .where(InstanceMapping.instance_uuid == bindparam("m_uuid"))
    .values(cell=bindparam("m_cell"))
)
_REMOVE_BUILD = delete(BuildRequest).where(BuildRequest.instance_uuid == bindparam("m_uuid"))


@dataclass(frozen=True, slots=True)
class Choice:
    zone: str
    host: str | None
    placement: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Rechoose:
    """A member of the request's group claimed first; choose again with it in view."""

    detail: str


@dataclass(frozen=True, slots=True)
class HostClaim:
    host: str | None = None
    group_blocked: bool = False
    """The group's rule, not capacity, left the zone without a host."""
    rechoose: Rechoose | None = None


@dataclass(frozen=True, slots=True)
class Unplaceable:
    code: str
    notes: list[str]
    placement: dict[str, Any] = field(default_factory=dict)
    headline: str | None = None


class Builder:
    """Runs build tasks. Stateless between tasks; safe to call from many threads."""

    def __init__(self, ctx: ComputeContext) -> None:
        self.ctx = ctx

    # --- entry point ---------------------------------------------------------------

    def build(self, task: TaskRef, *, also: Also | None = None) -> None:
        """Run one build task to its end: the instance mapped to a cell, or to cell0.

        ``also`` runs inside the API-database transaction that maps the instance (and
        removes its build request), so the caller can end the task in that same commit;
        it does not run when the build ends without mapping (the request was deleted, or
        an exception is raised).
        """
        uuid = task.instance_uuid
        with self.ctx.api.read() as s:
            # One statement for the build request, its spec and any claim it holds.
            row = s.connection().execute(_BUILD_INPUTS, {"uuid": uuid}).first()
            mapped = row is not None or s.get(InstanceMapping, uuid) is not None
        if row is None or row.spec is None:
            if not mapped:
                LOG.info("build %s: request was deleted before it ran", uuid)
            return
        br = BuildRequest(**{attr: row._mapping[column] for attr, column in _BUILD_ATTRS})
        spec = BootSpec.from_dict(row.spec)
        held = None if row.held_zone is None else (str(row.held_zone), row.held_host)
        if held is not None and self._resume(br, spec, held[0], held[1], also):
            return
        # Only a task that ran before (requeued after a crash) can have left a cell0 record.
        if held is None and task.attempts and self._buried_already(uuid, also):
            return
        self._schedule_and_build(br, spec, also)

    def fail(self, uuid: str, message: str) -> None:
        """Bury a build that cannot be completed because of a broker fault."""
        with self.ctx.api.read() as s:
            br = s.get(BuildRequest, uuid)
            spec_row = s.get(RequestSpec, uuid)
            if br is not None:
                s.expunge(br)
        if br is None or spec_row is None:
            return
        self._abandon_any(uuid)
        self._bury(br, BootSpec.from_dict(spec_row.spec), errors.BUILD_FAILED, message, [])

    def _abandon_any(self, uuid: str) -> None:
        held = claims.allocation_of(self.ctx.api, uuid)
        if held is not None:
            self._abandon(held[0], uuid, cleanup=True)

    # --- resume after a crash ------------------------------------------------------

    def _resume(
        self, br: BuildRequest, spec: BootSpec, zone: str, host: str | None, also: Also | None
    ) -> bool:
        """True when the build is complete after looking at what already exists."""
        uuid = br.instance_uuid
        cell = self.ctx.cell_of_zone(zone)
        with self.ctx.cells[cell].read() as s:
            recorded = s.get(Instance, uuid) is not None
        if recorded:
            LOG.info("build %s: resuming, record already in %s", uuid, cell)
            self._map(uuid, cell, also)
            return True
        driver = self.ctx.drivers[zone]
        try:
            remote = driver.get(uuid)
        except InstanceNotFound:
            LOG.info("build %s: resuming, nothing was created in %s; rescheduling", uuid, zone)
            claims.release(self.ctx.api, uuid)
            return False
        LOG.info("build %s: resuming, %s already created it", uuid, zone)
        self._finalize(br, spec, zone, host, remote, dict(br.placement), also)
        return True

    def _buried_already(self, uuid: str, also: Also | None) -> bool:
        """True when a previous run wrote the cell0 record but died before mapping it.

        Scheduling again could place the instance while its cell0 record stays behind;
        the verdict already given stands instead.
        """
        with self.ctx.cells[CELL0].read() as s:
            buried = s.get(Instance, uuid) is not None
        if buried:
            LOG.info("build %s: resuming, already buried in cell0", uuid)
            self._map(uuid, CELL0, also)
        return buried

    # --- scheduling loop -----------------------------------------------------------

    def _schedule_and_build(
        self, br: BuildRequest, spec: BootSpec, also: Also | None = None
    ) -> None:
        uuid = br.instance_uuid
        max_attempts = self.ctx.settings.workers.max_attempts
        attempts = br.attempts
        ignored: dict[str, set[str]] = {}
        failed_zones: set[str] = set()
        notes: list[str] = []
        flavor = self.ctx.settings.flavor(spec.flavor_id)
        if flavor is None:
            self._bury(
                br,
                spec,
                errors.BUILD_FAILED,
                f"flavor {spec.flavor_id} no longer exists",
                [],
                also=also,
            )
            return
        fspec = FlavorSpec(flavor.name, flavor.vcpus, flavor.ram_mb, flavor.disk_gb)
        races = 0
        regrouped = False
        while attempts < max_attempts:
            choice = self._choose(br, spec, ignored, failed_zones)
            if isinstance(choice, Rechoose):
                races += 1
                if races <= MAX_GROUP_RACES:
                    continue
                choice = Unplaceable(
                    errors.GROUP_POLICY,
                    [choice.detail, f"gave up after {races} races with other members"],
                )
            if isinstance(choice, Unplaceable):
                self._bury(
                    br,
                    spec,
                    choice.code,
                    choice.headline or _headline(choice.code),
                    notes + choice.notes,
                    choice.placement,
                    also=also,
                )
                return
            attempts += 1
            where = f"{choice.zone}/{choice.host}" if choice.host else choice.zone
            try:
                server_group = self._remote_group(spec, choice.zone)
            except DriverError as exc:
                LOG.warning("build %s: %s could not make the server group: %s", uuid, where, exc)
                notes.append(f"{where}: server group: {exc.reason}")
                claims.release(self.ctx.api, uuid)
                failed_zones.add(choice.zone)
                continue
            ispec = InstanceSpec(
                uuid=uuid,
                name=spec.name,
                flavor=fspec,
                image=spec.image_id,
                project_id=spec.project_id,
                broker_id=self.ctx.settings.broker_id,
                host=choice.host,
                metadata=dict(spec.metadata),
                server_group=server_group,
            )
            try:
                remote = self._create(choice.zone, ispec)
            except (CapacityError, TransientError) as exc:
                LOG.warning("build %s: %s refused: %s; trying the next candidate", uuid, where, exc)
                notes.append(f"{where}: {exc.reason}")
                self._abandon(choice.zone, uuid, cleanup=isinstance(exc, TransientError))
                if choice.host:
                    ignored.setdefault(choice.zone, set()).add(choice.host)
                else:
                    failed_zones.add(choice.zone)
                continue
            except AuthError as exc:
                LOG.error("build %s: %s rejected the broker's credentials", uuid, choice.zone)
                notes.append(f"{choice.zone}: credentials rejected; zone marked down")
                claims.release(self.ctx.api, uuid)
                record_zone_failure(self.ctx.api, choice.zone, exc.reason, force_down=True)
                failed_zones.add(choice.zone)
                continue
            except DriverError as exc:
                claims.release(self.ctx.api, uuid)
                if (
                    server_group is not None
                    and not regrouped
                    and self._regroup(spec, choice.zone, server_group)
                ):
                    # The remote group was deleted behind the broker's back: made again.
                    regrouped = True
                    attempts -= 1
                    continue
                notes.append(f"{where}: {exc.reason}")
                self._bury(
                    br,
                    spec,
                    errors.BUILD_FAILED,
                    f"{where} failed the build: {exc.reason}",
                    notes,
                    choice.placement,
                    also=also,
                )
                return
            except Exception as exc:
                LOG.exception("build %s: driver of %s raised an unexpected error", uuid, where)
                self._abandon(choice.zone, uuid, cleanup=True)
                self._bury(
                    br,
                    spec,
                    errors.BUILD_FAILED,
                    f"{where}: unexpected driver error ({type(exc).__name__})",
                    notes,
                    choice.placement,
                    also=also,
                )
                return
            self._finalize(br, spec, choice.zone, choice.host, remote, choice.placement, also)
            return
        self._bury(
            br,
            spec,
            errors.NO_VALID_HOST,
            f"no valid host was found after {attempts} attempt(s)",
            notes,
            also=also,
        )

    def _group(self, spec: BootSpec, uuid: str) -> GroupState | None:
        if spec.group is None:
            return None
        with self.ctx.api.read() as s:
            state = load(s, spec.group, uuid)
        if state is None:
            LOG.info("build %s: server group %s was deleted; placing freely", uuid, spec.group)
        return state

    def _remote_group(self, spec: BootSpec, zone: str) -> str | None:
        """The remote group the member joins in ``zone``, for zones whose cloud keeps
        host-scope rules itself; None elsewhere.

        :raises DriverError: the remote cloud could not make it.
        """
        if spec.group is None or not self.ctx.drivers[zone].capabilities().server_groups:
            return None
        if self.ctx.drivers[zone].capabilities().host_scheduling:
            return None
        with self.ctx.api.read() as s:
            state = load(s, spec.group, "")
        if state is None or state.rule.scope != "host":
            return None
        try:
            return remote_groups.remote_group(self.ctx, state, zone, spec.project_id)
        except remote_groups.GroupGone:
            return None

    def _regroup(self, spec: BootSpec, zone: str, remote_id: str) -> bool:
        """After a refused create: True when the zone's remote group had vanished and a
        new one now stands in its place."""
        if spec.group is None:
            return False
        with self.ctx.api.read() as s:
            state = load(s, spec.group, "")
        if state is None:
            return False
        try:
            return remote_groups.refresh(self.ctx, state, zone, remote_id, spec.project_id)
        except DriverError as exc:
            LOG.warning(
                "group %s: could not check its remote group in %s: %s", state.uuid, zone, exc
            )
            return False

    def create_at(self, zone: str, ispec: InstanceSpec) -> RemoteInstance:
        """Create ``ispec`` in ``zone`` (on ``ispec.host``), where a gang plan put it; the
        caller holds the claim. Transient failures are retried as for any boot.

        :raises DriverError: the zone refused; nothing was left there.
        """
        return self._create(zone, ispec)

    def finalize(
        self,
        br: BuildRequest,
        spec: BootSpec,
        zone: str,
        host: str | None,
        remote: RemoteInstance,
        placement: dict[str, Any],
    ) -> None:
        """Record a created instance in its zone's cell and map it (build request gone)."""
        self._finalize(br, spec, zone, host, remote, placement)

    def _create(self, zone: str, ispec: InstanceSpec) -> RemoteInstance:
        """Create with bounded retries of transient failures (create is idempotent)."""
        driver = self.ctx.drivers[zone]
        retries = self.ctx.settings.workers.transient_retries
        backoff = self.ctx.settings.workers.transient_backoff
        for n in range(retries + 1):
            try:
                return driver.create(ispec)
            except TransientError:
                if n == retries:
                    raise
                self.ctx.sleep(backoff * (2**n))
        raise AssertionError("unreachable")  # pragma: no cover

    def _abandon(self, zone: str, uuid: str, *, cleanup: bool) -> None:
        """Give back the claim; after an ambiguous failure make sure nothing was left."""
        if cleanup:
            try:
                self.ctx.drivers[zone].delete(uuid)
            except DriverError as exc:
                LOG.warning("build %s: cleanup in %s failed: %s", uuid, zone, exc)
        claims.release(self.ctx.api, uuid)

    def _choose(
        self,
        br: BuildRequest,
        spec: BootSpec,
        ignored: Mapping[str, set[str]],
        failed_zones: set[str],
    ) -> Choice | Unplaceable | Rechoose:
        loaded = self.ctx.policies.current
        flavor = self.ctx.settings.flavor(spec.flavor_id)
        image = self.ctx.settings.image(spec.image_id)
        assert flavor is not None
        request = PlacementRequest(
            project_id=spec.project_id,
            flavor_id=flavor.id,
            flavor_name=flavor.name,
            vcpus=flavor.vcpus,
            ram_mb=flavor.ram_mb,
            disk_gb=flavor.disk_gb,
            image_id=image.id if image else spec.image_id,
            image_name=image.name if image else spec.image_id,
            # The policy ranks zones: an aggregate's availability zone stands for the zone
            # holding its hosts, and the host scheduler keeps to the hosts in it.
            availability_zone=placement_zone(
                self.ctx.settings, self.ctx.api, spec.availability_zone
            )
            or spec.availability_zone,
        )
        loads = zone_loads(self.ctx.api)
        ranking = rank(loaded.policy, self.ctx.policies.context, request, loads)
        for z in ranking.stop_bursting:
            if claims.set_bursting(self.ctx.api, z, False):
                LOG.info("zone %s fell below every low-water mark: placing locally again", z)
        for z in ranking.start_bursting:
            if claims.set_bursting(self.ctx.api, z, True):
                LOG.info("zone %s crossed a high-water mark: bursting to its overflow zones", z)
        notes = [f"{v.zone}: {v.detail}" for v in ranking.verdicts if not v.accepted]
        res = claims.Resources(flavor.vcpus, flavor.ram_mb, flavor.disk_gb)
        group = self._group(spec, br.instance_uuid)
        modes = modes_of(self.ctx.drivers)
        guard = Guard(group.uuid, br.instance_uuid, modes) if group and group.rule.hard else None
        blocked_by_group = False
        for cand in ranking.candidates:
            if cand.zone in failed_zones:
                continue
            placement = _placement(loaded.policy.version, loaded.sha256, ranking, loads, cand)
            mode = modes.get(cand.zone, ZoneMode.SINGLE)
            zfit = ZoneFit()
            if group is not None:
                zfit = fit(group, cand.zone, mode, self.ctx.hosts.table.zone_azs(cand.zone))
                if not zfit.allowed:
                    notes.append(f"{cand.zone}: {zfit.reason}")
                    blocked_by_group = True
                    continue
            if mode is ZoneMode.HOSTS:
                got = self._claim_on_host(
                    br.instance_uuid,
                    cand,
                    res,
                    ignored.get(cand.zone),
                    placement,
                    notes,
                    az=spec.availability_zone,
                    project_id=spec.project_id,
                    extra_specs=flavor.extra_specs,
                    image_properties=image.properties if image else None,
                    zfit=zfit,
                    guard=guard,
                    group=group,
                )
                if got.rechoose is not None:
                    return got.rechoose
                blocked_by_group = blocked_by_group or got.group_blocked
                if got.host is not None:
                    placement["host"] = got.host
                    _note_group(
                        placement,
                        group,
                        modes,
                        cand.zone,
                        got.host,
                        self._az_of(cand.zone, got.host),
                    )
                    return Choice(cand.zone, got.host, placement)
                continue
            if group is not None:
                _note_group(placement, group, modes, cand.zone, None, cand.zone)
            outcome = claims.claim(
                self.ctx.api,
                instance_uuid=br.instance_uuid,
                zone=cand.zone,
                host_id=None,
                host_name=None,
                res=res,
                limits=cand.limits,
                require_not_bursting=cand.thresholded,
                placement=placement,
                guard=guard,
            )
            if outcome.outcome is claims.ClaimOutcome.OK:
                return Choice(cand.zone, None, placement)
            if outcome.outcome is claims.ClaimOutcome.GROUP_CONFLICT:
                return Rechoose(outcome.detail)
            notes.append(f"{cand.zone}: limit reached by concurrent requests")
        final = _placement(loaded.policy.version, loaded.sha256, ranking, loads, None)
        if group is not None and blocked_by_group:
            _note_group(final, group, modes, None, None, None)
            headline = f"{group.describe()} cannot take another member"
            return Unplaceable(errors.GROUP_POLICY, notes, final, headline)
        code = ranking.fault or errors.NO_VALID_HOST
        return Unplaceable(code, notes, final)

    def _az_of(self, zone: str, host: str) -> str:
        table = self.ctx.hosts.table
        i = table.index_of(zone, host)
        return zone if i is None else table.az_at(i)

    def _claim_on_host(
        self,
        uuid: str,
        cand: Candidate,
        res: claims.Resources,
        ignored: set[str] | None,
        placement: dict[str, Any],
        notes: list[str],
        *,
        az: str | None = None,
        project_id: str | None = None,
        extra_specs: Mapping[str, str] | None = None,
        image_properties: Mapping[str, str] | None = None,
        zfit: ZoneFit | None = None,
        guard: Guard | None = None,
        group: GroupState | None = None,
    ) -> HostClaim:
        zfit = zfit or ZoneFit()
        hreq = zfit.narrow(
            HostRequest(
                zone=cand.zone,
                vcpus=res.vcpus,
                ram_mb=res.ram_mb,
                disk_gb=res.disk_gb,
                az=az,
                weighing=cand.weighing,
                ignore_hosts=frozenset(ignored or ()),
                project_id=project_id,
                extra_specs=extra_specs or {},
                image_properties=image_properties or {},
            )
        )
        cache = self.ctx.hosts
        reread = False
        for _ in range(MAX_RESELECT):
            # Choosing and holding the first choice is one step, so the next worker of this
            # process chooses with this claim counted (Nova's HostState does the same).
            with cache.choosing():
                names = self.ctx.scheduler.select(cache.table, hreq, limit=ALTERNATES)
                first = cache.hold(cand.zone, names[0], *astuple(res)) if names else None
            if not names and not reread:
                # The cache may overstate usage (capacity released since it was read):
                # look at the database once before calling the zone full.
                cache.refresh_zone(cand.zone)
                reread = True
                continue
            if not names:
                if group is not None and hreq.group_constrained:
                    free = self.ctx.scheduler.select(cache.table, hreq.without_group(), limit=1)
                    if free:
                        notes.append(
                            f"{cand.zone}: no host keeps the group's rule"
                            + _rejections(self.ctx.scheduler.filter_counts(cache.table, hreq))
                        )
                        return HostClaim(group_blocked=True)
                notes.append(
                    f"{cand.zone}: no host"
                    + (f" of availability zone {az}" if az else "")
                    + f" has {res.ram_mb} MB RAM, {res.vcpus} vCPU and "
                    f"{res.disk_gb} GB disk free"
                    + (" (after excluding failed hosts)" if ignored else "")
                    + _rejections(self.ctx.scheduler.filter_counts(cache.table, hreq))
                )
                return HostClaim()
            for n, name in enumerate(names):
                host_id = cache.host_id(cand.zone, name)
                if host_id is None:
                    cache.settle(first if n == 0 else None)
                    continue
                held = first if n == 0 else cache.hold(cand.zone, name, *astuple(res))
                try:
                    result = claims.claim(
                        self.ctx.api,
                        instance_uuid=uuid,
                        zone=cand.zone,
                        host_id=host_id,
                        host_name=name,
                        res=res,
                        limits=cand.limits,
                        require_not_bursting=cand.thresholded,
                        placement={**placement, "host": name},
                        guard=guard,
                    )
                except BaseException:
                    cache.settle(held)
                    raise
                if result.outcome is claims.ClaimOutcome.OK:
                    cache.settle(held, result.host_usage)
                    return HostClaim(host=name)
                cache.settle(held)
                if result.outcome is claims.ClaimOutcome.GROUP_CONFLICT:
                    return HostClaim(rechoose=Rechoose(result.detail))
                if result.outcome is claims.ClaimOutcome.ZONE_LIMIT:
                    if cand.thresholded and claims.set_bursting(self.ctx.api, cand.zone, True):
                        LOG.info("zone %s crossed a high-water mark: bursting", cand.zone)
                    notes.append(f"{cand.zone}: limit reached by concurrent requests")
                    return HostClaim()
                cache.refresh_host(host_id)
        notes.append(f"{cand.zone}: gave up after {MAX_RESELECT} contended claims")
        return HostClaim()

    # --- outcomes ------------------------------------------------------------------

    def _finalize(
        self,
        br: BuildRequest,
        spec: BootSpec,
        zone: str,
        host: str | None,
        remote: RemoteInstance,
        placement: dict[str, Any],
        also: Also | None = None,
    ) -> None:
        now = utcnow()
        cell = self.ctx.cell_of_zone(zone)
        self._record(
            cell,
            br,
            spec,
            placement,
            availability_zone=zone,
            host=host or remote.host,
            remote_id=remote.remote_id,
            status=remote.state.value,
            addresses={k: list(v) for k, v in remote.addresses.items()},
            launched_at=remote.launched_at or now,
            also=also,
        )
        on = f" on {host}" if host else ""
        LOG.info("build %s: %s in %s%s", br.instance_uuid, remote.state.value, zone, on)

    def _bury(
        self,
        br: BuildRequest,
        spec: BootSpec,
        code: str,
        message: str,
        notes: Sequence[str],
        placement: dict[str, Any] | None = None,
        *,
        also: Also | None = None,
    ) -> None:
        claims.release(self.ctx.api, br.instance_uuid)
        details = list(dict.fromkeys(notes))
        fault = {
            "code": code,
            "reason": errors.FAULT_REASONS.get(code, code.rsplit(".", 1)[-1]),
            "message": message + (": " + "; ".join(details) if details else ""),
            "details": details,
            "created": utcnow().isoformat(),
        }
        self._record(
            CELL0,
            br,
            spec,
            placement or {},
            availability_zone=spec.availability_zone,
            status="ERROR",
            fault=fault,
            also=also,
        )
        LOG.warning(
            "build %s: buried in cell0 (%s): %s",
            br.instance_uuid,
            fault["reason"],
            fault["message"],
        )

    def _record(
        self,
        cell: str,
        br: BuildRequest,
        spec: BootSpec,
        placement: dict[str, Any],
        *,
        also: Also | None = None,
        **outcome: Any,
    ) -> None:
        """Write the instance record into ``cell`` (once) and map the instance to it;
        ``also`` runs in the mapping transaction."""
        uuid = br.instance_uuid
        values = {
            "uuid": uuid,
            "name": spec.name,
            "project_id": spec.project_id,
            "user_id": spec.user_id,
            "flavor_id": spec.flavor_id,
            "flavor": self.ctx.flavor_snapshot(spec.flavor_id),
            "image_id": spec.image_id,
            "requested_az": spec.availability_zone,
            "task_state": None,
            "metadata": dict(spec.metadata),
            "placement": placement,
            "policy_version": placement.get("policy_version"),
            "created_at": br.created_at,
            "updated_at": utcnow(),
            **outcome,
        }
        db = self.ctx.cells[cell]
        record = _RECORD_SQLITE if db.is_sqlite else _RECORD_POSTGRESQL

        def write_record(s: Session) -> None:
            s.connection().execute(record, [values])

        db.batched(write_record)
        self._map(uuid, cell, also)

    def _map(self, uuid: str, cell: str, also: Also | None = None) -> None:
        """Point the instance's mapping at ``cell`` and remove its build request, then run
        ``also`` in the same transaction. The cell record must already be committed: a
        crash before this commit leaves the build request, and the task, to resume."""

        def map_instance(s: Session) -> None:
            conn = s.connection()
            conn.execute(_POINT_MAPPING, {"m_uuid": uuid, "m_cell": cell})
            conn.execute(_REMOVE_BUILD, {"m_uuid": uuid})
            if also is not None:
                also(s)

        self.ctx.api.batched(map_instance)


def _rejections(counts: Mapping[str, int]) -> str:
    """`` (EnabledFilter removed 2 hosts, RamFilter 1)``: why hosts were turned down."""
    shown = [(name, n) for name, n in counts.items() if n]
    if not shown:
        return ""
    first, *rest = shown
    parts = [f"{first[0]} removed {first[1]} host(s)", *(f"{name} {n}" for name, n in rest)]
    return " (" + ", ".join(parts) + ")"


def _note_group(
    placement: dict[str, Any],
    group: GroupState | None,
    modes: Mapping[str, ZoneMode],
    zone: str | None,
    host: str | None,
    az: str | None,
) -> None:
    """Record the group's rule on the placement, and for a soft rule whether this choice
    had to relax it."""
    if group is None:
        return
    entry: dict[str, Any] = {
        "id": group.uuid,
        "name": group.name,
        "policy": group.rule.policy,
        "max_server_per_host": None if group.rule.affinity else group.rule.max_per_host,
        "scope": group.rule.scope,
        "members_placed": len(group.members),
        "relaxed": False,
    }
    if zone is not None and az is not None:
        broken = violation(group.rule, group.members, Spot(zone, host, az), modes)
        if broken is not None and not group.rule.hard:
            entry["relaxed"] = True
            entry["detail"] = f"soft rule relaxed: no candidate kept it ({broken})"
        elif not group.rule.hard:
            entry["detail"] = "soft rule kept"
        else:
            entry["detail"] = "hard rule kept"
    placement["group"] = entry


def _headline(code: str) -> str:
    return {
        errors.POLICY_DENIED: "the policy allows this request in no availability zone",
        errors.QUOTA_EXCEEDED: "every candidate availability zone is at its quota",
        errors.GROUP_POLICY: "the server group's rule leaves no valid host",
    }.get(code, "no valid host was found")


def _placement(
    version: str,
    sha256: str,
    ranking: Ranking,
    loads: Mapping[str, ZoneLoad],
    cand: Candidate | None,
) -> dict[str, Any]:
    """What decided a placement: policy version and the figures each verdict saw."""
    return {
        "policy_version": version,
        "policy_sha256": sha256,
        "decided_at": utcnow().isoformat(),
        "zone": cand.zone if cand else None,
        "reason": cand.reason if cand else None,
        "matched_rules": list(ranking.matched_rules),
        "load": {
            name: {
                "ram_used_mb": ld.ram_used_mb,
                "ram_total_mb": ld.ram_total_mb,
                "vcpus_used": ld.vcpus_used,
                "vcpus_total": ld.vcpus_total,
                "instances": ld.instances,
                "bursting": ld.bursting,
            }
            for name, ld in loads.items()
        },
        "verdicts": [v.as_dict() for v in ranking.verdicts],
    }
