"""Server groups a cluster's groupings get in remote clouds that keep rules themselves.

A zone whose driver has the ``server_groups`` capability but does not let the broker pick
hosts (a remote OpenStack) keeps a host-scope rule among the members it holds itself: the
broker makes one server group there per grouping (idempotent on a uuid derived from the
cluster and the grouping, so a build resumed after a crash finds the same one), records
it on the cluster, and deletes it with the cluster or its roll-back.
"""

from __future__ import annotations

import logging
import uuid as uuidlib

from sqlalchemy import update

from federator.compute.context import ComputeContext
from federator.driver import DriverError, ServerGroupSpec
from federator.groups.placement import modes_of
from federator.groups.rules import ZoneMode
from federator.storage.models import VCluster, VClusterMember
from federator.vclusters.model import SERVER, Grouping
from federator.vclusters.spec import ClusterSpec

LOG = logging.getLogger(__name__)

__all__ = ["drop_groups", "server_group"]


def server_group(
    ctx: ComputeContext, cluster: VCluster, spec: ClusterSpec, row: VClusterMember
) -> str | None:
    """The remote id of the server group keeping ``row``'s first host-scope grouping of
    servers (hard or soft) in its zone, made there on first use; None where the zone is
    not such a cloud, or the cloud could not make it (the member is then placed without)."""
    zone = row.zone or ""
    if modes_of({zone: ctx.drivers[zone]}).get(zone) is not ZoneMode.REMOTE:
        return None
    kinds = {i.name: i.kind for i in spec.instances}
    for g in spec.groupings:
        servers = [n for n in g.members if kinds.get(n) == SERVER]
        if row.name in servers and len(servers) >= 2 and g.rule.scope == "host":
            return _group(ctx, cluster, g, zone)
    return None


def _group(ctx: ComputeContext, cluster: VCluster, g: Grouping, zone: str) -> str | None:
    known = (cluster.remote_groups or {}).get(g.name, {})
    if zone in known:
        return str(known[zone])
    try:
        made = ctx.drivers[zone].create_server_group(
            ServerGroupSpec(
                uuid=str(uuidlib.uuid5(uuidlib.UUID(cluster.uuid), g.name)),
                name=f"{cluster.name}-{g.name}",
                policy=g.rule.policy,
                project_id=cluster.project_id,
                broker_id=ctx.settings.broker_id,
                max_server_per_host=None if g.rule.affinity else g.rule.max_per_host,
            )
        )
    except DriverError as exc:
        LOG.warning("vcluster %s: server group in %s: %s", cluster.uuid, zone, exc)
        return None
    with ctx.api.write() as s:
        row = s.get(VCluster, cluster.uuid)
        if row is not None:
            groups = {k: dict(v) for k, v in (row.remote_groups or {}).items()}
            groups.setdefault(g.name, {})[zone] = made
            row.remote_groups = groups
    cluster.remote_groups = {**(cluster.remote_groups or {}), g.name: {**known, zone: made}}
    return made


def drop_groups(ctx: ComputeContext, cluster: VCluster) -> None:
    """Delete every remote group the cluster made (a failure is logged: the group is
    empty by then), and forget them."""
    for zones in (cluster.remote_groups or {}).values():
        for zone, remote_id in zones.items():
            driver = ctx.drivers.get(zone)
            if driver is None:
                continue
            try:
                driver.delete_server_group(str(remote_id))
            except DriverError as exc:
                LOG.warning("vcluster %s: remote group %s in %s: %s", cluster.uuid,
                            remote_id, zone, exc)  # fmt: skip
    with ctx.api.write() as s:
        s.execute(update(VCluster).where(VCluster.uuid == cluster.uuid).values(remote_groups={}))
