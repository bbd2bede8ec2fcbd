"""The life of a virtual cluster after the API accepted it: place, build, roll back, delete.

One task per cluster (``vcluster_build``, then ``vcluster_delete``) carries it, and every
run of it picks up from what the databases say, so a broker killed at any moment resumes
(another broker, or the same one restarted, takes the task back):

* ``planning``: nothing is claimed. The gang planner places every member in one decision
  and :func:`federator.vclusters.claims.claim_plan` claims them all in one transaction,
  which also records every member (a server's build request, a volume's row) and moves the
  cluster to ``building``. A plan that does not exist makes the cluster ERROR at once, with
  nothing created anywhere.
* ``building``: each claimed member is created where the plan put it; a member whose cloud
  refuses is placed again (with its not-yet-built affine partners) away from the places
  that refused it, under every grouping with the members built so far; when that is not
  possible the cluster is rolled back. Volumes affine to a server are attached to it once
  both exist. The cluster is ACTIVE when every member is.
* ``rolling_back``: every member is deleted in its cloud and here, every claim released,
  and the cluster ends ERROR with the fault that caused it.

A run that must wait (a server still BUILD in its cloud, a volume still creating, an
attach in progress) asks the queue to run it again shortly (:class:`Retry`).
"""

from __future__ import annotations

import logging
import uuid as uuidlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from federator import errors
from federator.compute.context import ComputeContext
from federator.compute.queue import Retry, TaskRef
from federator.compute.records import aware
from federator.compute.service import ComputeService, RequestContext
from federator.driver import DriverError, PowerState
from federator.groups.placement import modes_of
from federator.storage.models import VCluster, VClusterMember, VolumeAttachment, utcnow
from federator.vclusters import members as mb
from federator.vclusters import remote
from federator.vclusters.claims import claim_plan
from federator.vclusters.inputs import gather
from federator.vclusters.planner import (
    GROUP_POLICY,
    SERVER,
    Assignment,
    Grouping,
    Member,
    Plan,
    ZoneOption,
    plan,
)
from federator.vclusters.spec import ClusterSpec, parse_cluster
from federator.volumes import records as vr
from federator.volumes.service import AttachRequest, VolumeQuotaExceeded, VolumeService

LOG = logging.getLogger(__name__)

__all__ = ["BUILD", "DELETE", "ClusterBuilder", "fault", "plan_members"]

BUILD = "vcluster_build"
DELETE = "vcluster_delete"
ACTIONS = frozenset({BUILD, DELETE})
POLL_SECONDS = 0.2
MAX_CLAIM_RACES = 20
"""Plans whose claim lost a race to another request before the cluster gives up."""
BUILD_TIMEOUT = timedelta(minutes=30)
PLACED = frozenset({"claimed", "created", "attached"})
"""Member states that hold a claim (and whose place the other members must respect)."""


def fault(code: str, message: str, details: Sequence[str] = ()) -> dict[str, Any]:
    return {
        "code": code,
        "reason": errors.FAULT_REASONS.get(code, code.rsplit(".", 1)[-1]),
        "message": message,
        "details": list(details),
        "created": utcnow().isoformat(),
    }


def _code(planner_fault: str | None) -> str:
    if planner_fault == "quota":
        return errors.QUOTA_EXCEEDED
    return errors.GROUP_POLICY if planner_fault == GROUP_POLICY else errors.NO_VALID_HOST


def assignment_of(row: VClusterMember) -> Assignment:
    return Assignment(row.name, row.zone or "", row.host, row.pool, row.availability_zone or "")


def plan_members(
    ctx: ComputeContext,
    project_id: str,
    spec: ClusterSpec,
    new: Sequence[str],
    placed: Sequence[VClusterMember],
    *,
    avoid: Mapping[str, frozenset[str | None]] | None = None,
) -> tuple[Plan, list[Member], Any]:
    """Plan the members named ``new`` around the ``placed`` ones; the plan, the new
    members' sizes and the inputs it was made from (for the claim). ``avoid``: hosts
    (None: the whole zone) no new member may use, by zone."""
    everyone = {m.name: m for m in spec.members(ctx.settings)}
    members = [everyone[n] for n in new]
    inputs = gather(ctx, project_id, members)
    zones: list[ZoneOption] = []
    for z in inputs.zones:
        banned = (avoid or {}).get(z.name, frozenset())
        if None in banned:
            continue
        zones.append(
            replace(z, hosts=[h for h in z.hosts if h.name not in banned]) if banned else z
        )
    fixed = [(everyone[r.name], assignment_of(r)) for r in placed if r.name in everyone]
    p = plan(members, spec.groupings, zones, fixed=fixed, modes=modes_of(ctx.drivers))
    return p, members, inputs


class ClusterBuilder:
    """Runs a cluster's tasks. Stateless between runs; safe from many threads."""

    def __init__(self, ctx: ComputeContext) -> None:
        self.ctx = ctx

    def run(self, task: TaskRef) -> None:
        """:raises Retry: run again shortly (something is still on its way)."""
        if task.action == DELETE:
            self._delete(task.instance_uuid)
            return
        cluster = self._cluster(task.instance_uuid)
        if cluster is None or cluster.deleted or cluster.status == "DELETING":
            return
        if cluster.phase == "planning":
            self._place(cluster)
            cluster = self._cluster(task.instance_uuid)
            if cluster is None:
                return
        if cluster.phase == "building":
            self._build(cluster)
            cluster = self._cluster(task.instance_uuid)
            if cluster is None:
                return
        if cluster.phase == "rolling_back":
            self._roll_back(cluster)

    def abandon(self, task: TaskRef, reason: str) -> None:
        """Out of retries after broker faults: roll the cluster back (or finish deleting)."""
        if task.action == DELETE:
            return
        self._start_roll_back(
            task.instance_uuid, fault(errors.BUILD_FAILED, f"internal error: {reason}")
        )
        cluster = self._cluster(task.instance_uuid)
        if cluster is not None:
            self._roll_back(cluster)

    # --- reading ------------------------------------------------------------------------

    def _cluster(self, uuid: str) -> VCluster | None:
        with self.ctx.api.read() as s:
            c = s.get(VCluster, uuid)
            if c is not None:
                s.expunge(c)
            return c

    def _members(self, uuid: str) -> list[VClusterMember]:
        with self.ctx.api.read() as s:
            rows = list(
                s.scalars(
                    select(VClusterMember)
                    .where(VClusterMember.cluster_uuid == uuid)
                    .order_by(VClusterMember.created_at, VClusterMember.name)
                )
            )
            for r in rows:
                s.expunge(r)
            return rows

    def _spec(self, cluster: VCluster) -> ClusterSpec:
        return parse_cluster({"vcluster": cluster.spec}, self.ctx.settings)

    # --- planning -------------------------------------------------------------------------

    def _place(self, cluster: VCluster) -> None:
        """Plan and claim every ``planned`` member, or end ERROR with nothing created."""
        spec = self._spec(cluster)
        rows = self._members(cluster.uuid)
        todo = [r for r in rows if r.state in ("planned", "replan")]
        placed = [r for r in rows if r.state in PLACED]
        if not todo:
            self._set_phase(cluster.uuid, "planning", "building")
            return
        for r in todo:
            if r.state == "replan":
                mb.release_claim(self.ctx, r)
        avoid = _avoid(todo)
        last = ""
        for _ in range(MAX_CLAIM_RACES):
            p, members, inputs = plan_members(
                self.ctx, cluster.project_id, spec, [r.name for r in todo], placed, avoid=avoid
            )
            if not p.ok:
                self._unplaceable(cluster, todo, p)
                return
            try:
                claimed = claim_plan(
                    self.ctx,
                    p,
                    members,
                    {r.name: r.uuid for r in todo},
                    inputs.ceilings,
                    also=self._recorder(cluster, spec, todo, p),
                )
            except _Gone:
                return
            except VolumeQuotaExceeded as exc:
                self._unplaceable(
                    cluster, todo, Plan(fault="quota", blocked_by="project volume quota",
                                        message=exc.message)
                )  # fmt: skip
                return
            if claimed.ok:
                LOG.info(
                    "vcluster %s: %d member(s) claimed (%s)",
                    cluster.uuid,
                    len(todo),
                    ", ".join(f"{a.member}@{a.zone}/{a.host or a.pool or '-'}"
                              for a in p.assignments),
                )  # fmt: skip
                return
            last = f"{claimed.member}: {claimed.resource} was taken by another request"
            # The claim re-read only the host that refused it. Hosts another broker filled
            # look free in this broker's cache until its next reload, and planning again
            # on them would lose one race per stale host: re-read the plan's zones.
            for zone in sorted({a.zone for a in p.assignments}):
                self.ctx.hosts.refresh_zone(zone)
        self._unplaceable(
            cluster, todo, Plan(fault="no_valid_host", blocked_by="claims", message=last)
        )

    def _recorder(
        self, cluster: VCluster, spec: ClusterSpec, todo: Sequence[VClusterMember], p: Plan
    ) -> Callable[[Session], None]:
        by_name = {i.name: i for i in spec.instances}
        rows = {r.name: r for r in todo}

        def record(s: Session) -> None:
            moved = s.execute(
                update(VCluster)
                .where(
                    VCluster.uuid == cluster.uuid,
                    VCluster.phase.in_(("planning", "building")),
                    VCluster.status != "DELETING",
                )
                .values(phase="building", updated_at=utcnow())
            )
            if moved.rowcount != 1:  # type: ignore[attr-defined]
                raise _Gone()
            if cluster.phase == "planning" and cluster.status == "BUILD":
                mb.volume_quota(
                    self.ctx,
                    s,
                    cluster.project_id,
                    spec,
                    [a.member for a in p.assignments if rows[a.member].state == "planned"],
                )
            for a in p.assignments:
                mb.record(
                    s, self.ctx, rows[a.member], by_name[a.member], a, cluster=cluster.uuid,
                    project_id=cluster.project_id, user_id=cluster.user_id,
                )  # fmt: skip

        return record

    def _unplaceable(self, cluster: VCluster, todo: Sequence[VClusterMember], p: Plan) -> None:
        """The plan does not exist: a new cluster is ERROR with nothing created; members
        that were being placed again roll the cluster back."""
        f = fault(_code(p.fault), p.message or "no plan", [f"blocked by {p.blocked_by}"])
        failed = [r for r in todo if r.attempts and (r.fault or {}).get("reason")]
        if failed:
            # A member that failed to build found no other place: that failure is the
            # cluster's fault, the plan's verdict its detail.
            reason = str((failed[0].fault or {})["reason"])
            f = fault(
                errors.BUILD_FAILED,
                f"{reason}; no other place keeps the groupings ({p.message})",
                [f"blocked by {p.blocked_by}"],
            )
        if failed or any(r.state == "replan" for r in todo) or self._has_placed(cluster.uuid):
            self._start_roll_back(cluster.uuid, f)
            return
        with self.ctx.api.write() as s:
            s.execute(
                update(VCluster)
                .where(VCluster.uuid == cluster.uuid, VCluster.phase == "planning")
                .values(status="ERROR", phase="done", fault=f, updated_at=utcnow())
            )
            s.execute(
                update(VClusterMember)
                .where(VClusterMember.cluster_uuid == cluster.uuid)
                .values(state="failed")
            )
        LOG.warning("vcluster %s: ERROR, not placed: %s", cluster.uuid, f["message"])

    def _has_placed(self, uuid: str) -> bool:
        return any(r.state in PLACED for r in self._members(uuid))

    def _set_phase(self, uuid: str, before: str, after: str, **values: Any) -> bool:
        with self.ctx.api.write() as s:
            moved = s.execute(
                update(VCluster)
                .where(VCluster.uuid == uuid, VCluster.phase == before)
                .values(phase=after, updated_at=utcnow(), **values)
            )
            return bool(moved.rowcount == 1)  # type: ignore[attr-defined]

    # --- building -------------------------------------------------------------------------

    def _build(self, cluster: VCluster) -> None:
        spec = self._spec(cluster)
        rows = self._members(cluster.uuid)
        if any(r.state in ("planned", "replan") for r in rows):
            self._set_phase(cluster.uuid, "building", "planning")
            self._place(cluster)
            raise Retry(0.0, "members placed again")
        waiting: list[str] = []
        # While an update builds, the members it kept are not its to judge (the monitor
        # reports them): only what it added is built, waited for and placed again.
        kept = _names(cluster.previous_spec) if cluster.previous_spec is not None else set()
        for r in rows:
            if r.kind != SERVER or r.state != "claimed":
                continue
            built = mb.create_server(
                self.ctx, r.uuid, remote.server_group(self.ctx, cluster, spec, r)
            )
            if built.error is not None:
                self._refused(cluster, r, built.error)
                raise Retry(0.0, f"{r.name} placed again")
            self._set_member(r.uuid, state="created")
        for r in rows:
            if r.kind == SERVER and r.state in ("created", "claimed") and r.name not in kept:
                state = mb.server_state(self.ctx, r.uuid)
                if state == PowerState.BUILD.value and r.zone is not None:
                    state = mb.refresh_server(self.ctx, r.uuid, r.zone)
                if state == PowerState.ERROR.value or state is None:
                    self._refused(
                        cluster, r, DriverError(r.zone or "", "it reports the server ERROR")
                    )
                    raise Retry(0.0, f"{r.name} placed again")
                if state != PowerState.ACTIVE.value:
                    waiting.append(r.name)
        for r in rows:
            if r.kind == SERVER or r.state not in ("claimed", "created") or r.name in kept:
                continue
            built = mb.create_volume(self.ctx, r.uuid)
            if built.error is not None or built.state == vr.ERROR:
                self._refused(
                    cluster, r, built.error or DriverError(r.zone or "", "the volume is in error")
                )
                raise Retry(0.0, f"{r.name} placed again")
            if built.state == vr.CREATING:
                waiting.append(r.name)
            elif r.state == "claimed":
                self._set_member(r.uuid, state="created")
        if waiting:
            self._check_timeout(cluster, waiting)
            raise Retry(POLL_SECONDS, f"waiting for {', '.join(waiting)}")
        if not self._attach(cluster, spec, self._members(cluster.uuid)):
            raise Retry(POLL_SECONDS, "attaching volumes")
        self._finish_removals(cluster)
        with self.ctx.api.write() as s:
            s.execute(
                update(VCluster)
                .where(VCluster.uuid == cluster.uuid, VCluster.phase == "building")
                .values(status="ACTIVE", phase="done", fault=None, previous_spec=None,
                        updated_at=utcnow())
            )  # fmt: skip
        LOG.info("vcluster %s: ACTIVE", cluster.uuid)

    def _check_timeout(self, cluster: VCluster, waiting: Sequence[str]) -> None:
        if utcnow() - aware(cluster.updated_at) > BUILD_TIMEOUT:
            self._start_roll_back(
                cluster.uuid,
                fault(
                    errors.BUILD_FAILED,
                    f"member {waiting[0]} was not ready after "
                    f"{int(BUILD_TIMEOUT.total_seconds())} s",
                ),
            )
            raise Retry(0.0, "rolling back")

    def _set_member(self, uuid: str, **values: Any) -> None:
        with self.ctx.api.write() as s:
            s.execute(update(VClusterMember).where(VClusterMember.uuid == uuid).values(**values))

    def _refused(self, cluster: VCluster, row: VClusterMember, exc: DriverError) -> None:
        """A member's cloud refused it: place it again (with its affine partners not built
        yet) away from where it failed, or roll the cluster back."""
        where = f"{row.zone}/{row.host}" if row.host else str(row.zone)
        LOG.warning("vcluster %s: member %s failed in %s: %s", cluster.uuid, row.name, where,
                    exc.reason)  # fmt: skip
        mb.remove(self.ctx, row)
        failed = [*((row.fault or {}).get("failed_at", [])), where]
        reason = f"member {row.name} failed to build in {where}: {exc.reason}"
        if len(failed) > self.ctx.settings.workers.max_attempts:
            self._start_roll_back(cluster.uuid, fault(errors.BUILD_FAILED, reason))
            return
        spec = self._spec(cluster)
        partners = _affine(spec.groupings, row.name)
        rows = self._members(cluster.uuid)
        again = [r for r in rows if r.name in partners and r.state == "claimed"]
        with self.ctx.api.write() as s:
            # A new id: the failed attempt's records (a deleted server or volume) keep theirs.
            s.execute(
                update(VClusterMember)
                .where(VClusterMember.uuid == row.uuid)
                .values(uuid=str(uuidlib.uuid4()), state="replan",
                        attempts=VClusterMember.attempts + 1,
                        fault={"failed_at": failed, "reason": reason})
            )  # fmt: skip
            for r in again:
                s.execute(
                    update(VClusterMember)
                    .where(VClusterMember.uuid == r.uuid)
                    .values(state="replan")
                )
            s.execute(
                update(VCluster)
                .where(VCluster.uuid == cluster.uuid, VCluster.phase == "building")
                .values(phase="planning", updated_at=utcnow())
            )
        self._place(self._cluster(cluster.uuid) or cluster)
        cluster_now = self._cluster(cluster.uuid)
        if cluster_now is not None and cluster_now.phase == "planning":
            self._start_roll_back(cluster.uuid, fault(errors.BUILD_FAILED, reason))

    def _attach(self, cluster: VCluster, spec: ClusterSpec, rows: Sequence[VClusterMember]) -> bool:
        """Attach each volume to the server it is affine to; True once all are attached."""
        by_name = {r.name: r for r in rows}
        pending = False
        rc = RequestContext(cluster.project_id, cluster.user_id, is_admin=True)
        for volume, server in attach_pairs(spec).items():
            v, srv = by_name.get(volume), by_name.get(server)
            if v is None or srv is None or v.state == "attached":
                continue
            with self.ctx.api.read() as s:
                att = s.scalar(
                    select(VolumeAttachment.state).where(
                        VolumeAttachment.volume_uuid == v.uuid,
                        VolumeAttachment.server_uuid == srv.uuid,
                    )
                )
            if att == "attached":
                self._set_member(v.uuid, state="attached")
                continue
            pending = True
            if att is None:
                service = VolumeService(self.ctx, ComputeService(self.ctx))
                service.attach(rc, srv.uuid, AttachRequest(volume_id=v.uuid))
        return not pending

    def _finish_removals(self, cluster: VCluster) -> None:
        for r in self._members(cluster.uuid):
            if r.state == "removing":
                if not mb.remove(self.ctx, r):
                    raise Retry(POLL_SECONDS * 10, f"removing {r.name}")
                with self.ctx.api.write() as s:
                    gone = s.get(VClusterMember, r.uuid)
                    if gone is not None:
                        s.delete(gone)

    # --- rolling back and deleting ----------------------------------------------------

    def _start_roll_back(self, uuid: str, f: dict[str, Any]) -> None:
        with self.ctx.api.write() as s:
            s.execute(
                update(VCluster)
                .where(VCluster.uuid == uuid, VCluster.phase.in_(("planning", "building")))
                .values(phase="rolling_back", fault=f, updated_at=utcnow())
            )
        LOG.warning("vcluster %s: rolling back: %s", uuid, f["message"])

    def _roll_back(self, cluster: VCluster) -> None:
        previous = cluster.previous_spec
        rows = self._members(cluster.uuid)
        if previous is not None:
            # An update that could not be built: only what it added goes.
            old = {i.get("name") for i in previous.get("instances", [])}
            rows = [r for r in rows if r.name not in old]
        self._remove_all(rows, drop=previous is not None)
        with self.ctx.api.write() as s:
            if previous is not None:
                s.execute(
                    update(VClusterMember)
                    .where(VClusterMember.cluster_uuid == cluster.uuid,
                           VClusterMember.state == "removing")
                    .values(state="created")
                )  # fmt: skip
                values: dict[str, Any] = {"status": "ACTIVE", "spec": previous, "fault": None}
            else:
                values = {"status": "ERROR"}
            s.execute(
                update(VCluster)
                .where(VCluster.uuid == cluster.uuid, VCluster.phase == "rolling_back")
                .values(phase="done", previous_spec=None, updated_at=utcnow(), **values)
            )
        if previous is None:
            remote.drop_groups(self.ctx, cluster)
        LOG.warning("vcluster %s: rolled back", cluster.uuid)

    def _remove_all(self, rows: Sequence[VClusterMember], *, drop: bool) -> None:
        """Remove every member's resources; the rows go (``drop``) or stay ``failed``."""
        left = []
        for r in rows:
            if r.state != "failed" and not mb.remove(self.ctx, r):
                left.append(r.name)
                continue
            with self.ctx.api.write() as s:
                gone = s.get(VClusterMember, r.uuid)
                if gone is not None and drop:
                    s.delete(gone)
                elif gone is not None:
                    gone.state = "failed"
        if left:
            raise Retry(POLL_SECONDS * 10, f"could not remove {', '.join(left)} yet")

    def _delete(self, uuid: str) -> None:
        cluster = self._cluster(uuid)
        if cluster is None or cluster.deleted:
            return
        self._remove_all(self._members(uuid), drop=False)
        remote.drop_groups(self.ctx, cluster)
        with self.ctx.api.write() as s:
            s.execute(
                update(VCluster)
                .where(VCluster.uuid == uuid)
                .values(deleted=True, status="DELETED", phase="done", updated_at=utcnow())
            )
        LOG.info("vcluster %s: deleted", uuid)


class _Gone(Exception):
    """The cluster was deleted while it was being placed: the claim rolls back."""


def _names(spec: Mapping[str, Any]) -> set[str]:
    return {str(i.get("name")) for i in spec.get("instances", [])}


def _avoid(rows: Sequence[VClusterMember]) -> dict[str, frozenset[str | None]]:
    """Places members being placed again failed in: ``zone/host`` or ``zone``."""
    found: dict[str, set[str | None]] = {}
    for r in rows:
        for where in (r.fault or {}).get("failed_at", []):
            zone, _, host = str(where).partition("/")
            found.setdefault(zone, set()).add(host or None)
    return {z: frozenset(h) for z, h in found.items()}


def _affine(groupings: Sequence[Grouping], name: str) -> set[str]:
    """Members that must share ``name``'s place (hard host-scope affinity), transitively."""
    found = {name}
    grew = True
    while grew:
        grew = False
        for g in groupings:
            hard = g.rule.hard and g.rule.affinity and g.rule.scope == "host"
            if hard and found & set(g.members) and not set(g.members) <= found:
                found |= set(g.members)
                grew = True
    return found - {name}


def attach_pairs(spec: ClusterSpec) -> dict[str, str]:
    """Each volume and the server it is attached to: the first server of the first
    affinity grouping (hard or soft, any scope) holding both."""
    kinds = {i.name: i.kind for i in spec.instances}
    pairs: dict[str, str] = {}
    for g in spec.groupings:
        if not g.rule.affinity:
            continue
        servers = [n for n in g.members if kinds.get(n) == SERVER]
        if not servers:
            continue
        for n in g.members:
            if kinds.get(n) != SERVER:
                pairs.setdefault(n, servers[0])
    return pairs
