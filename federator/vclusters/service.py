"""What the API asks of virtual clusters: accept, show, update, delete and explain.

Accepting a cluster writes it, its members (``planned``) and its build task in one
transaction and answers at once; placing and building are the worker's
(:mod:`federator.vclusters.build`). An update is decided here, in the request: the new
members are planned around the placed ones and claimed in one transaction, or the update
is refused (409) and nothing changes.
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select, update

from federator.compute import queue as taskqueue
from federator.compute.context import ComputeContext
from federator.compute.records import aware
from federator.compute.service import ComputeService, RequestContext
from federator.exception import BadRequest, Conflict, NotFound
from federator.storage.models import (
    VCluster,
    VClusterMember,
    Volume,
    VolumeAttachment,
    utcnow,
)
from federator.vclusters import build as vbuild
from federator.vclusters.claims import claim_plan
from federator.vclusters.members import volume_quota
from federator.vclusters.model import SERVER, Plan
from federator.vclusters.spec import ClusterSpec, parse_cluster

__all__ = ["ClusterView", "MemberView", "VClusterService"]

_BUSY = frozenset({"BUILD", "DELETING"})


@dataclass(frozen=True, slots=True)
class MemberView:
    name: str
    kind: str
    id: str | None
    status: str
    availability_zone: str | None
    host: str | None
    pool: str | None = None
    attached_to: str | None = None
    fault: Mapping[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "type": self.kind,
            "id": self.id,
            "status": self.status,
            "availability_zone": self.availability_zone,
            "host": self.host,
        }
        if self.kind != SERVER:
            d["pool"] = self.pool
            d["attached_to"] = self.attached_to
        return d


@dataclass(frozen=True, slots=True)
class ClusterView:
    id: str
    name: str
    status: str
    project_id: str
    user_id: str
    created_at: datetime
    updated_at: datetime
    spec: Mapping[str, Any]
    fault: Mapping[str, Any] | None = None
    instances: Sequence[MemberView] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "status": self.status,
            "project_id": self.project_id,
            "user_id": self.user_id,
            "created": aware(self.created_at).isoformat(timespec="seconds"),
            "updated": aware(self.updated_at).isoformat(timespec="seconds"),
            "instances": [m.as_dict() for m in self.instances],
            "groupings": list(self.spec.get("groupings", [])),
        }
        if self.fault is not None and self.status in ("ERROR", "DEGRADED"):
            d["fault"] = {k: self.fault[k] for k in ("code", "message", "details", "created")
                          if k in self.fault}  # fmt: skip
        return d


class VClusterService:
    def __init__(self, ctx: ComputeContext, compute: ComputeService) -> None:
        self.ctx = ctx
        self.compute = compute

    # --- create -------------------------------------------------------------------------

    def create(self, rc: RequestContext, body: Any) -> ClusterView:
        """Accept a cluster; it ends ACTIVE, or ERROR with nothing created.

        :raises BadRequest: naming the JSON path of every value at fault.
        """
        spec = parse_cluster(body, self.ctx.settings)
        uuid = str(uuidlib.uuid4())
        now = utcnow()
        with self.ctx.api.write() as s:
            s.add(
                VCluster(
                    uuid=uuid, name=spec.name, project_id=rc.project_id, user_id=rc.user_id,
                    status="BUILD", phase="planning", spec=_stored(body), remote_groups={},
                    deleted=False, created_at=now, updated_at=now,
                )
            )  # fmt: skip
            s.flush()
            volume_quota(self.ctx, s, rc.project_id, spec, [i.name for i in spec.instances])
            for i in spec.instances:
                s.add(_member_row(uuid, i.name, i.kind, now))
            taskqueue.enqueue(s, uuid, vbuild.BUILD)
        self.ctx.queue.notifier.notify()
        # The answer is the cluster as accepted: a worker may already be placing it (or
        # have found it unplaceable) by the time a read would run.
        return ClusterView(
            id=uuid, name=spec.name, status="BUILD", project_id=rc.project_id,
            user_id=rc.user_id, created_at=now, updated_at=now, spec=_stored(body),
            instances=tuple(MemberView(i.name, i.kind, None, "BUILD", None, None)
                            for i in spec.instances),
        )  # fmt: skip

    # --- read ---------------------------------------------------------------------------

    def get(self, rc: RequestContext, uuid: str) -> ClusterView:
        """:raises NotFound: unknown, deleted, or another project's (never 403)."""
        with self.ctx.api.read() as s:
            c = s.get(VCluster, uuid)
            if c is None or c.deleted or not (rc.is_admin or c.project_id == rc.project_id):
                raise NotFound(kind="vcluster", ident=uuid)
            s.expunge(c)
        return self._views([c])[0]

    def list(self, rc: RequestContext, *, all_tenants: bool = False) -> Sequence[ClusterView]:
        q = select(VCluster).where(VCluster.deleted.is_(False))
        if not (rc.is_admin and all_tenants):
            q = q.where(VCluster.project_id == rc.project_id)
        with self.ctx.api.read() as s:
            rows = list(s.scalars(q.order_by(VCluster.created_at, VCluster.uuid)))
            for r in rows:
                s.expunge(r)
        return self._views(rows)

    def _views(self, clusters: Sequence[VCluster]) -> Sequence[ClusterView]:
        ids = [c.uuid for c in clusters]
        with self.ctx.api.read() as s:
            rows = list(
                s.scalars(
                    select(VClusterMember)
                    .where(VClusterMember.cluster_uuid.in_(ids))
                    .order_by(VClusterMember.created_at, VClusterMember.name)
                )
            )
            for r in rows:
                s.expunge(r)
            vol_ids = [r.uuid for r in rows if r.kind != SERVER]
            volumes = {
                v.uuid: (v.status, v.deleted, v.host, v.availability_zone)
                for v in s.scalars(select(Volume).where(Volume.uuid.in_(vol_ids)))
            }
            attached: dict[str, str] = {}
            for vid, sid in s.execute(
                select(VolumeAttachment.volume_uuid, VolumeAttachment.server_uuid).where(
                    VolumeAttachment.volume_uuid.in_(vol_ids)
                )
            ):
                attached.setdefault(vid, sid)
        by_cluster: dict[str, list[VClusterMember]] = {}
        for r in rows:
            by_cluster.setdefault(r.cluster_uuid, []).append(r)
        order = {c.uuid: _order(c.spec) for c in clusters}
        views = []
        for c in clusters:
            ms = sorted(by_cluster.get(c.uuid, []), key=lambda r: order[c.uuid].get(r.name, 0))
            views.append(
                ClusterView(
                    id=c.uuid, name=c.name, status=c.status, project_id=c.project_id,
                    user_id=c.user_id, created_at=c.created_at, updated_at=c.updated_at,
                    spec=c.spec, fault=c.fault,
                    instances=tuple(self._member(c, r, volumes, attached) for r in ms),
                )
            )  # fmt: skip
        return views

    def _member(
        self,
        c: VCluster,
        r: VClusterMember,
        volumes: Mapping[str, tuple[str, bool, str | None, str | None]],
        attached: Mapping[str, str],
    ) -> MemberView:
        if r.state in ("planned", "failed", "replan"):
            if c.status == "DELETING":
                status = "DELETED" if r.state == "failed" else "DELETING"
            else:
                status = "ERROR" if r.state == "failed" or c.status == "ERROR" else "BUILD"
            return MemberView(r.name, r.kind, None, status, None, None, fault=r.fault)
        if r.kind == SERVER:
            view = self.compute.records.find(r.uuid)
            if view is None:
                return MemberView(r.name, r.kind, r.uuid, "DELETED", r.availability_zone, r.host)
            return MemberView(
                r.name, r.kind, r.uuid, view.status, view.shown_az or r.availability_zone,
                view.host or r.host,
            )  # fmt: skip
        status, deleted, host, az = volumes.get(r.uuid, ("deleted", True, r.host, None))
        return MemberView(
            r.name, r.kind, r.uuid, "deleted" if deleted else status,
            az or r.availability_zone, host, pool=r.pool, attached_to=attached.get(r.uuid),
        )  # fmt: skip

    # --- update -------------------------------------------------------------------------

    def update(self, rc: RequestContext, uuid: str, body: Any) -> ClusterView:
        """Take the whole desired cluster: new members are placed (all of them, or the
        update is refused), members no longer named are deleted.

        :raises BadRequest: the body is invalid, or a member changed its type or spec.
        :raises Conflict: the cluster is busy, or the change cannot be placed under its
            groupings (nothing changes).
        """
        current = self.get(rc, uuid)
        spec = parse_cluster(body, self.ctx.settings)
        if current.status in _BUSY or current.status == "ERROR":
            raise Conflict(reason=f"vcluster {uuid} is {current.status}: it cannot be updated now")
        old = parse_cluster({"vcluster": current.spec}, self.ctx.settings)
        old_by_name = {i.name: i for i in old.instances}
        for n, i in enumerate(spec.instances):
            was = old_by_name.get(i.name)
            if was is not None and was != i:
                raise BadRequest(
                    f"vcluster.instances[{n}]: member {i.name!r} cannot change; remove it and "
                    "add it under another name",
                    problems=[{"field": f"vcluster.instances[{n}]", "message": "changed"}],
                )
        names = {i.name for i in spec.instances}
        added = [i.name for i in spec.instances if i.name not in old_by_name]
        removed = [i.name for i in old.instances if i.name not in names]
        with self.ctx.api.read() as s:
            q = select(VClusterMember).where(VClusterMember.cluster_uuid == uuid)
            rows = list(s.scalars(q))
            for r in rows:
                s.expunge(r)
        kept = [r for r in rows if r.name in names and r.state in vbuild.PLACED]
        now = utcnow()
        new_rows = {n: _member_row(uuid, n, _kind(spec, n), now) for n in added}
        p: Plan | None = None
        if added:
            p, members, inputs = vbuild.plan_members(
                self.ctx, current.project_id, spec, added, kept
            )
            if not p.ok:
                raise Conflict(reason=f"vcluster {uuid}: the update cannot be placed: {p.message}")
        else:
            fixed_check = vbuild.plan_members(self.ctx, current.project_id, spec, [], kept)[0]
            if not fixed_check.ok:
                raise Conflict(reason=f"vcluster {uuid}: {fixed_check.message}")

        def record(s: Any) -> None:
            moved = s.execute(
                update(VCluster)
                .where(VCluster.uuid == uuid, VCluster.phase == "done",
                       VCluster.status.in_(("ACTIVE", "DEGRADED")))
                .values(status="BUILD", phase="building", previous_spec=current.spec,
                        spec=_stored(body), fault=None, updated_at=utcnow())
            )  # fmt: skip
            if moved.rowcount != 1:
                raise Conflict(reason=f"vcluster {uuid} changed meanwhile; try again")
            volume_quota(self.ctx, s, current.project_id, spec, added)
            for row in new_rows.values():
                s.add(row)
            s.flush()
            if p is not None:
                by_name = {i.name: i for i in spec.instances}
                from federator.vclusters import members as mb

                for a in p.assignments:
                    mb.record(
                        s, self.ctx, new_rows[a.member], by_name[a.member], a, cluster=uuid,
                        project_id=current.project_id, user_id=current.user_id,
                    )  # fmt: skip
            for r in rows:
                if r.name in removed:
                    s.execute(
                        update(VClusterMember)
                        .where(VClusterMember.uuid == r.uuid)
                        .values(state="removing")
                    )
            taskqueue.enqueue(s, uuid, vbuild.BUILD)

        if p is not None:
            claimed = claim_plan(
                self.ctx, p, members, {n: r.uuid for n, r in new_rows.items()},
                inputs.ceilings, also=record,
            )  # fmt: skip
            if not claimed.ok:
                raise Conflict(
                    reason=f"vcluster {uuid}: the update cannot be placed: {claimed.member}: "
                    f"{claimed.resource} is full"
                )
        else:
            with self.ctx.api.write() as s:
                record(s)
        self.ctx.queue.notifier.notify()
        return self.get(rc, uuid)

    # --- delete -------------------------------------------------------------------------

    def delete(self, rc: RequestContext, uuid: str) -> None:
        """Accept a delete: every member goes, then the cluster.

        :raises Conflict: a delete is already in progress.
        """
        self.get(rc, uuid)
        with self.ctx.api.write() as s:
            moved = s.execute(
                update(VCluster)
                .where(VCluster.uuid == uuid, VCluster.deleted.is_(False),
                       VCluster.status != "DELETING")
                .values(status="DELETING", updated_at=utcnow())
            )  # fmt: skip
            if moved.rowcount != 1:  # type: ignore[attr-defined]
                raise Conflict(reason=f"vcluster {uuid} is already being deleted")
            taskqueue.enqueue(s, uuid, vbuild.DELETE)
        self.ctx.queue.notifier.notify()

    # --- explain ------------------------------------------------------------------------

    def explain(self, rc: RequestContext, body: Any) -> dict[str, Any]:
        """The plan the broker would make now, without claiming or creating anything."""
        spec = parse_cluster(body, self.ctx.settings)
        p, _, inputs = vbuild.plan_members(
            self.ctx, rc.project_id, spec, [i.name for i in spec.instances], []
        )
        out: dict[str, Any] = {
            "name": spec.name,
            "placeable": p.ok,
            "candidates_tried": p.tried,
            "zones": [z.name for z in inputs.zones],
            "notes": [f"{v.zone}: {v.detail}" for v in inputs.notes],
            "instances": [
                {"name": a.member, "type": _kind(spec, a.member), "zone": a.zone,
                 "availability_zone": a.az, "host": a.host, "pool": a.pool}
                for a in p.assignments
            ],
        }  # fmt: skip
        if not p.ok:
            out["fault"] = {
                "code": vbuild._code(p.fault),
                "blocked_by": p.blocked_by,
                "message": p.message,
            }
        return out


def _stored(body: Any) -> dict[str, Any]:
    root = dict(body["vcluster"])
    root.setdefault("groupings", [])
    return root


def _member_row(cluster: str, name: str, kind: str, now: datetime) -> VClusterMember:
    return VClusterMember(
        uuid=str(uuidlib.uuid4()), cluster_uuid=cluster, name=name, kind=kind, state="planned",
        attempts=0, created_at=now,
    )  # fmt: skip


def _kind(spec: ClusterSpec, name: str) -> str:
    return next(i.kind for i in spec.instances if i.name == name)


def _order(spec: Mapping[str, Any]) -> dict[str, int]:
    return {str(i.get("name")): n for n, i in enumerate(spec.get("instances", []))}
