"""One member of a virtual cluster as a server or a volume: recorded, built, removed.

A member's records are written with its claim (:func:`record`), inside the transaction
that claims the whole plan: a server as a build request the ordinary server API shows as
BUILD (no build task: the cluster builds it where the plan says), a volume as a
``creating`` volume already in its pool. Building (:func:`create_server`,
:func:`create_volume`) asks the zone's driver for it at that place; removing
(:func:`remove`) deletes whatever exists of it in its cloud and in the databases and gives
back its claim. Every step is idempotent on the member's uuid, so a build or a roll-back
resumed after a crash picks up where it stopped.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from federator.blockstorage import RemoteVolume, VolumeNotFound, VolumeSpec, VolumeState
from federator.compute import claims as server_claims
from federator.compute.actions import Actions
from federator.compute.bootspec import BootSpec
from federator.compute.builder import Builder
from federator.compute.context import ComputeContext
from federator.compute.queue import TaskRef
from federator.compute.records import CELL0
from federator.driver import (
    DriverError,
    FlavorSpec,
    InstanceNotFound,
    InstanceSpec,
    PowerState,
    RemoteInstance,
)
from federator.storage.models import (
    BuildRequest,
    Instance,
    InstanceMapping,
    RequestSpec,
    StoragePool,
    VClusterMember,
    Volume,
    VolumeAttachment,
    utcnow,
)
from federator.vclusters.model import SERVER, Assignment
from federator.vclusters.spec import ClusterSpec
from federator.vclusters.spec import InstanceSpec as MemberSpec
from federator.volumes import claims as storage_claims
from federator.volumes import records as vr
from federator.volumes.service import check_project_quota

LOG = logging.getLogger(__name__)

__all__ = ["Built", "create_server", "create_volume", "record", "remove"]


@dataclass(frozen=True, slots=True)
class Built:
    """What asking for a member gave: ``state`` BUILD/ACTIVE/ERROR for a server,
    ``creating``/``available``/``error`` for a volume; ``error`` the driver's refusal."""

    state: str
    error: DriverError | None = None


def record(
    s: Session,
    ctx: ComputeContext,
    row: VClusterMember,
    spec: MemberSpec,
    a: Assignment,
    *,
    cluster: str,
    project_id: str,
    user_id: str,
) -> None:
    """In the claim's transaction: where ``row`` goes, and the server's build request or
    the volume's row (written once; a member placed again gets its new place)."""
    now = utcnow()
    values = {"zone": a.zone, "host": a.host, "pool": a.pool, "availability_zone": a.az}
    s.execute(
        update(VClusterMember)
        .where(VClusterMember.uuid == row.uuid)
        .values(state="claimed", **values)
    )
    placement = {"vcluster": cluster, "zone": a.zone, "host": a.host, "pool": a.pool}
    if row.kind == SERVER:
        if s.get(BuildRequest, row.uuid) is not None:
            s.execute(
                update(BuildRequest)
                .where(BuildRequest.instance_uuid == row.uuid)
                .values(zone=a.zone, host=a.host, placement=placement, updated_at=now)
            )
            return
        meta = {"vcluster": cluster, "vcluster_member": spec.name}
        boot = BootSpec(
            name=spec.name,
            project_id=project_id,
            user_id=user_id,
            flavor_id=spec.flavor_id or "",
            image_id=spec.image_id or "",
            availability_zone=spec.availability_zone,
            metadata=meta,
            group=None,
        )
        s.add(
            BuildRequest(
                instance_uuid=row.uuid, project_id=project_id, user_id=user_id,
                name=spec.name, flavor_id=spec.flavor_id or "", image_id=spec.image_id or "",
                availability_zone=spec.availability_zone, metadata_=meta, zone=a.zone,
                host=a.host, attempts=0, placement=placement, created_at=now, updated_at=now,
            )
        )  # fmt: skip
        s.add(RequestSpec(instance_uuid=row.uuid, spec=boot.to_dict()))
        s.add(InstanceMapping(instance_uuid=row.uuid, cell=None, project_id=project_id,
                              created_at=now))  # fmt: skip
        return
    pool_id = s.scalar(
        select(StoragePool.id).where(StoragePool.zone == a.zone, StoragePool.name == a.pool)
    )
    if s.get(Volume, row.uuid) is not None:
        s.execute(
            update(Volume)
            .where(Volume.uuid == row.uuid)
            .values(zone=a.zone, pool_id=pool_id, host=_pool_host(a), availability_zone=a.az,
                    placement=placement, updated_at=now)
        )  # fmt: skip
        return
    s.add(
        Volume(
            uuid=row.uuid, name=spec.name, description=f"member of virtual cluster {cluster}",
            project_id=project_id, user_id=user_id, size_gb=spec.size_gb, status=vr.CREATING,
            volume_type=spec.volume_type or ctx.settings.volumes.default_type,
            requested_az=spec.availability_zone, availability_zone=a.az, zone=a.zone,
            pool_id=pool_id, host=_pool_host(a), multiattach=False,
            metadata_={"vcluster": cluster, "vcluster_member": spec.name},
            placement=placement, created_at=now, updated_at=now,
        )
    )  # fmt: skip


def _pool_host(a: Assignment) -> str | None:
    return a.host if a.pool is not None else None


# --- servers -------------------------------------------------------------------------


def create_server(ctx: ComputeContext, uuid: str, server_group: str | None) -> Built:
    """Create the server where its build request says, and record it in its cell.

    On a refusal nothing is left in the cloud (the driver's contract, and a delete after
    an ambiguous failure); the claim stays, for the caller to give back or keep.
    """
    with ctx.api.read() as s:
        br = s.get(BuildRequest, uuid)
        spec_row = s.get(RequestSpec, uuid)
        if br is not None:
            s.expunge(br)
    if br is None or spec_row is None or br.zone is None:
        return Built(server_state(ctx, uuid) or PowerState.ERROR.value)
    spec = BootSpec.from_dict(spec_row.spec)
    flavor = ctx.settings.flavor(spec.flavor_id)
    if flavor is None:
        return Built(
            PowerState.ERROR.value, DriverError(br.zone, f"flavor {spec.flavor_id} is gone")
        )
    ispec = InstanceSpec(
        uuid=uuid,
        name=spec.name,
        flavor=FlavorSpec(flavor.name, flavor.vcpus, flavor.ram_mb, flavor.disk_gb),
        image=spec.image_id,
        project_id=spec.project_id,
        broker_id=ctx.settings.broker_id,
        host=br.host,
        metadata={str(k): str(v) for k, v in spec.metadata.items()},
        server_group=server_group,
    )
    builder = Builder(ctx)
    try:
        remote = builder.create_at(br.zone, ispec)
    except DriverError as exc:
        _forget_server(ctx, br.zone, uuid)
        return Built(PowerState.ERROR.value, exc)
    except Exception as exc:  # a driver bug: treated as a refusal, nothing kept
        LOG.exception("vcluster member %s: driver of %s raised unexpectedly", uuid, br.zone)
        _forget_server(ctx, br.zone, uuid)
        return Built(
            PowerState.ERROR.value, DriverError(br.zone, f"unexpected {type(exc).__name__}")
        )
    builder.finalize(br, spec, br.zone, br.host, remote, dict(br.placement))
    return Built(remote.state.value)


def _forget_server(ctx: ComputeContext, zone: str, uuid: str) -> bool:
    """Delete the server in its cloud, if it is there; False when the cloud failed."""
    try:
        ctx.drivers[zone].delete(uuid)
    except InstanceNotFound:
        pass
    except DriverError as exc:
        LOG.warning("vcluster member %s: delete in %s failed: %s", uuid, zone, exc)
        return False
    return True


def server_state(ctx: ComputeContext, uuid: str) -> str | None:
    """The server's recorded status; None when it has no cell record (yet, or any more)."""
    with ctx.api.read() as s:
        m = s.get(InstanceMapping, uuid)
        cell = None if m is None else m.cell
    if cell is None or cell == CELL0:
        return None
    with ctx.cells[cell].read() as s:
        inst = s.get(Instance, uuid)
        return None if inst is None or inst.deleted else inst.status


def refresh_server(ctx: ComputeContext, uuid: str, zone: str) -> str | None:
    """Ask the cloud how a server that was BUILD is now, and record it."""
    try:
        remote: RemoteInstance = ctx.drivers[zone].get(uuid)
    except InstanceNotFound:
        return PowerState.ERROR.value
    cell = ctx.cell_of_zone(zone)
    with ctx.cells[cell].write() as s:
        s.execute(
            update(Instance)
            .where(Instance.uuid == uuid, Instance.deleted.is_(False))
            .values(
                status=remote.state.value,
                host=remote.host,
                addresses={k: list(v) for k, v in remote.addresses.items()},
                updated_at=utcnow(),
            )
        )
    return remote.state.value


# --- volumes -------------------------------------------------------------------------


def create_volume(ctx: ComputeContext, uuid: str) -> Built:
    """Create the volume in its claimed pool; a volume still creating in its cloud is
    asked again on the next call."""
    with ctx.api.read() as s:
        vol = s.get(Volume, uuid)
        if vol is not None:
            s.expunge(vol)
        pool = None if vol is None or vol.pool_id is None else s.get(StoragePool, vol.pool_id)
        pool_name = None if pool is None else pool.name
    if vol is None or vol.deleted:
        return Built(vr.ERROR)
    if vol.status != vr.CREATING:
        return Built(vol.status)
    driver = ctx.drivers.get(vol.zone or "")
    storage = None if driver is None else driver.block_storage()
    if storage is None:
        return Built(vr.ERROR, DriverError(vol.zone or "", "it holds no volumes"))
    vtype = ctx.settings.volumes.type(vol.volume_type)
    spec = VolumeSpec(
        uuid=vol.uuid,
        name=vol.name or "",
        size_gb=vol.size_gb,
        project_id=vol.project_id,
        broker_id=ctx.settings.broker_id,
        pool=pool_name,
        backend=None if vtype is None else vtype.backends.get(vol.zone or ""),
        metadata={str(k): str(v) for k, v in (vol.metadata_ or {}).items()},
    )
    try:
        remote: RemoteVolume = storage.create_volume(spec)
    except DriverError as exc:
        try:
            storage.delete_volume(uuid)
        except (DriverError, VolumeNotFound):
            LOG.warning("vcluster member %s: could not remove a failed volume", uuid)
        return Built(vr.ERROR, exc)
    if remote.state == VolumeState.AVAILABLE:
        _set_volume(ctx, uuid, status=vr.AVAILABLE, remote_id=remote.remote_id)
        return Built(vr.AVAILABLE)
    if remote.state == VolumeState.CREATING:
        _set_volume(ctx, uuid, remote_id=remote.remote_id)
        return Built(vr.CREATING)
    return Built(vr.ERROR, DriverError(vol.zone or "", f"it reports the volume {remote.state}"))


def _set_volume(ctx: ComputeContext, uuid: str, **values: Any) -> None:
    with ctx.api.write() as s:
        s.execute(
            update(Volume)
            .where(Volume.uuid == uuid, Volume.deleted.is_(False))
            .values(updated_at=utcnow(), **values)
        )


def volume_status(ctx: ComputeContext, uuid: str) -> str | None:
    with ctx.api.read() as s:
        vol = s.get(Volume, uuid)
        return None if vol is None or vol.deleted else vol.status


# --- removal -------------------------------------------------------------------------


def remove(ctx: ComputeContext, row: VClusterMember) -> bool:
    """Delete whatever exists of the member, in its cloud and here, and give back its
    claim; True once nothing is left (False: a cloud could not be asked, try later)."""
    if row.kind == SERVER:
        return _remove_server(ctx, row.uuid, row.zone)
    return _remove_volume(ctx, row.uuid)


def _remove_server(ctx: ComputeContext, uuid: str, zone: str | None) -> bool:
    with ctx.api.read() as s:
        m = s.get(InstanceMapping, uuid)
        cell = None if m is None else m.cell
    if cell is not None:
        Actions(ctx).run(TaskRef(0, uuid, "delete", 0, {}))
        with ctx.api.read() as s:
            if s.get(InstanceMapping, uuid) is not None:
                return False
    elif zone is not None and zone in ctx.drivers and not _forget_server(ctx, zone, uuid):
        return False
    server_claims.release(ctx.api, uuid)
    with ctx.api.write() as s:
        s.execute(delete(BuildRequest).where(BuildRequest.instance_uuid == uuid))
        s.execute(delete(RequestSpec).where(RequestSpec.instance_uuid == uuid))
        s.execute(delete(InstanceMapping).where(InstanceMapping.instance_uuid == uuid))
    return True


def _remove_volume(ctx: ComputeContext, uuid: str) -> bool:
    with ctx.api.read() as s:
        vol = s.get(Volume, uuid)
        zone = None if vol is None else vol.zone
        gone = vol is None or vol.deleted
    if not gone:
        driver = ctx.drivers.get(zone or "")
        storage = None if driver is None else driver.block_storage()
        if storage is not None:
            try:
                _detach_all(ctx, storage, uuid)
                storage.delete_volume(uuid)
            except VolumeNotFound:
                pass
            except DriverError as exc:
                LOG.warning("vcluster member %s: volume delete in %s failed: %s", uuid, zone, exc)
                return False
    storage_claims.release(ctx.api, uuid)
    now = utcnow()
    with ctx.api.write() as s:
        s.execute(
            update(Volume)
            .where(Volume.uuid == uuid, Volume.deleted.is_(False))
            .values(status="deleted", deleted=True, deleted_at=now, updated_at=now)
        )
    return True


def _detach_all(ctx: ComputeContext, storage: Any, uuid: str) -> None:
    """Detach the volume from every server still holding it (a member removed by an
    update while its server stays), then forget the attachments.

    :raises DriverError: the cloud could not detach it; nothing is forgotten.
    """
    with ctx.api.read() as s:
        servers = list(
            s.scalars(
                select(VolumeAttachment.server_uuid).where(VolumeAttachment.volume_uuid == uuid)
            )
        )
    for server in servers:
        with contextlib.suppress(VolumeNotFound, InstanceNotFound):
            storage.detach_volume(uuid, server)
        with ctx.api.write() as s:
            s.execute(
                delete(VolumeAttachment).where(
                    VolumeAttachment.volume_uuid == uuid, VolumeAttachment.server_uuid == server
                )
            )


def release_claim(ctx: ComputeContext, row: VClusterMember) -> None:
    """Give back a member's claim before it is placed again (its records stay)."""
    if row.kind == SERVER:
        server_claims.release(ctx.api, row.uuid)
    else:
        storage_claims.release(ctx.api, row.uuid)


def volume_quota(
    ctx: ComputeContext, s: Session, project_id: str, spec: ClusterSpec, names: Sequence[str]
) -> None:
    """The volumes among ``names`` fit the project's volume quotas.

    :raises VolumeQuotaExceeded: (413) they do not.
    """
    wanted = set(names)
    sizes = [i.size_gb for i in spec.instances if i.kind != SERVER and i.name in wanted]
    if sizes:
        check_project_quota(ctx, s, project_id, sum(sizes), len(sizes))
