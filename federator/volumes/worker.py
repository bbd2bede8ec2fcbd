"""Volume tasks: create (place, claim, make), delete, attach and detach.

Every task is safe to run again after a crash: placement happens once (a claimed volume
keeps its pool), ``create_volume`` is idempotent on the broker's volume id, and the
attach and detach calls leave the cloud as asked when repeated. A task that cannot
succeed ends the uncertainty: the volume is ``error`` with a fault naming why, and the
storage it claimed is given back, so nothing is stuck in ``creating`` and nothing is left
behind in a cloud.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select, update

from federator import errors
from federator.blockstorage import (
    BlockStorage,
    RemoteVolume,
    VolumeNotFound,
    VolumeSpec,
    VolumeState,
)
from federator.compute.context import ComputeContext
from federator.compute.queue import Retry, TaskRef
from federator.compute.refs import placement_zone
from federator.compute.zonestate import record_zone_failure
from federator.driver import (
    AuthError,
    CapacityError,
    DriverError,
    InstanceNotFound,
    TransientError,
)
from federator.storage.events import record_event
from federator.storage.models import StoragePool, Volume, VolumeAttachment, Zone, utcnow
from federator.volumes import claims
from federator.volumes import records as r
from federator.volumes.placement import StorageLoad, VolumeRanking, VolumeRequest, rank_volume

LOG = logging.getLogger(__name__)
ACTIONS = frozenset({"volume_create", "volume_delete", "volume_attach", "volume_detach"})
MAX_TRANSIENT = 5
MAX_CAPACITY_RETRIES = 8
CREATE_TIMEOUT = timedelta(minutes=10)
POLL_SECONDS = 0.2


def storage_loads(ctx: ComputeContext) -> dict[str, StorageLoad]:
    storages = {name: d.block_storage() for name, d in ctx.drivers.items()}
    with ctx.api.read() as s:
        return {
            z.name: StorageLoad(
                zone=z.name,
                kind="local" if z.kind == "local" else "virtual",
                available=z.state == "available",
                has_storage=storages.get(z.name) is not None,
                multiattach=_multiattach(storages.get(z.name)),
                bursting=z.storage_bursting,
                gb_used=z.volume_gb_used,
                gb_total=z.volume_gb_total,
                volumes=z.volumes,
            )
            for z in s.scalars(select(Zone))
        }


def _multiattach(storage: BlockStorage | None) -> bool:
    return storage is not None and storage.storage_capabilities().multiattach


def fault(code: str, message: str, details: list[str] | None = None) -> dict[str, Any]:
    notes = list(dict.fromkeys(details or []))
    return {
        "code": code,
        "reason": errors.FAULT_REASONS.get(code, code.rsplit(".", 1)[-1]),
        "message": message + (": " + "; ".join(notes) if notes else ""),
        "details": notes,
        "created": utcnow().isoformat(),
    }


class VolumeTasks:
    def __init__(self, ctx: ComputeContext) -> None:
        self.ctx = ctx

    def run(self, task: TaskRef) -> None:
        """:raises Retry: try again later (a transient failure, a volume still creating)."""
        {
            "volume_create": self._create,
            "volume_delete": self._delete,
            "volume_attach": self._attach,
            "volume_detach": self._detach,
        }[task.action](task)

    def abandon(self, task: TaskRef, reason: str) -> None:
        """Out of retries after broker faults: leave the volume in a settled state."""
        if task.action == "volume_create":
            self._fail_create(task.instance_uuid, errors.BUILD_FAILED, f"internal error: {reason}")
        elif task.action == "volume_delete":
            self._set(task.instance_uuid, status=r.ERROR_DELETING)
        elif task.action == "volume_attach":
            self._drop_attachment(task.instance_uuid, str(task.payload.get("server")))
        else:
            self._mark_attached(task.instance_uuid, str(task.payload.get("server")))

    # --- helpers ----------------------------------------------------------------------

    def _volume(self, uuid: str) -> Volume | None:
        with self.ctx.api.read() as s:
            v = s.get(Volume, uuid)
            if v is not None:
                s.expunge(v)
            return v

    def _storage(self, zone: str | None) -> BlockStorage | None:
        driver = self.ctx.drivers.get(zone or "")
        return None if driver is None else driver.block_storage()

    def _set(self, uuid: str, **values: Any) -> None:
        with self.ctx.api.write() as s:
            s.execute(
                update(Volume).where(Volume.uuid == uuid).values(updated_at=utcnow(), **values)
            )

    def _transient(self, task: TaskRef, exc: DriverError) -> Retry:
        if isinstance(exc, AuthError):
            record_zone_failure(self.ctx.api, exc.zone, exc.reason, force_down=True)
        delay = self.ctx.settings.workers.transient_backoff * (2 ** min(task.attempts, 8))
        return Retry(delay, f"{exc.code}: {exc.message}")

    # --- create -----------------------------------------------------------------------

    def _create(self, task: TaskRef) -> None:
        vol = self._volume(task.instance_uuid)
        if vol is None or vol.deleted or vol.status != r.CREATING:
            return
        if vol.pool_id is None and not self._place(vol):
            return
        vol = self._volume(task.instance_uuid)
        if vol is None or vol.status != r.CREATING or vol.pool_id is None:
            return
        storage = self._storage(vol.zone)
        if storage is None:
            self._fail_create(vol.uuid, errors.BUILD_FAILED, f"zone {vol.zone} holds no volumes")
            return
        with self.ctx.api.read() as s:
            pool = s.get(StoragePool, vol.pool_id)
            pool_name = None if pool is None else pool.name
        vtype = self.ctx.settings.volumes.type(vol.volume_type)
        spec = VolumeSpec(
            uuid=vol.uuid,
            name=vol.name or "",
            size_gb=vol.size_gb,
            project_id=vol.project_id,
            broker_id=self.ctx.settings.broker_id,
            pool=pool_name,
            backend=None if vtype is None else vtype.backends.get(vol.zone or ""),
            metadata={str(k): str(v) for k, v in (vol.metadata_ or {}).items()},
            multiattach=vol.multiattach,
        )
        try:
            remote = storage.create_volume(spec)
        except CapacityError as exc:
            self._replace(vol, exc)
            raise Retry(0.0, f"{exc.code}: {exc.message}") from None
        except (TransientError, AuthError) as exc:
            if task.attempts + 1 >= MAX_TRANSIENT:
                self._fail_create(vol.uuid, exc.code, exc.message)
                return
            raise self._transient(task, exc) from None
        except DriverError as exc:
            self._fail_create(vol.uuid, exc.code, f"zone {vol.zone}: {exc.reason}")
            return
        self._settle_create(vol, remote)

    def _settle_create(self, vol: Volume, remote: RemoteVolume) -> None:
        if remote.state == VolumeState.AVAILABLE:
            with self.ctx.api.write() as s:
                s.execute(
                    update(Volume)
                    .where(Volume.uuid == vol.uuid, Volume.status == r.CREATING)
                    .values(status=r.AVAILABLE, remote_id=remote.remote_id, updated_at=utcnow())
                )
            LOG.info("volume %s: available in %s (%s)", vol.uuid, vol.zone, remote.remote_id)
            return
        if remote.state == VolumeState.CREATING:
            self._set(vol.uuid, remote_id=remote.remote_id)
            if utcnow() - r.aware(vol.created_at) > CREATE_TIMEOUT:
                self._fail_create(
                    vol.uuid,
                    errors.BUILD_FAILED,
                    f"zone {vol.zone}: still creating after "
                    f"{int(CREATE_TIMEOUT.total_seconds())} s",
                )
                return
            raise Retry(POLL_SECONDS, "volume still creating in the cloud")
        self._fail_create(
            vol.uuid, errors.BUILD_FAILED, f"zone {vol.zone} reports the volume {remote.state}"
        )

    def _fail_create(
        self, uuid: str, code: str, message: str, details: list[str] | None = None
    ) -> None:
        """The create cannot succeed: nothing left in the cloud, nothing claimed, ERROR."""
        vol = self._volume(uuid)
        if vol is None:
            return
        storage = self._storage(vol.zone)
        if storage is not None:
            try:
                storage.delete_volume(uuid)
            except DriverError:  # the monitor reports what it finds later as an orphan
                LOG.exception("volume %s: could not remove what a failed create left", uuid)
        claims.release(self.ctx.api, uuid)
        self._set(uuid, status=r.ERROR, fault=fault(code, message, details))
        LOG.warning("volume %s: ERROR (%s): %s", uuid, code, message)

    def _replace(self, vol: Volume, exc: CapacityError) -> None:
        """The cloud refused the pool: give its claim back and let placement pick again,
        without that pool; after too many refusals the volume is ERROR."""
        failed = [*vol.placement.get("failed_pools", []), vol.pool_id]
        claims.release(self.ctx.api, vol.uuid, unplace=True)
        placement = {**vol.placement, "failed_pools": failed}
        notes = [*vol.placement.get("notes", []), f"{vol.zone}: {exc.reason}"]
        placement["notes"] = notes
        self._set(vol.uuid, placement=placement)
        if len(failed) >= MAX_CAPACITY_RETRIES:
            self._fail_create(
                vol.uuid, errors.NO_VALID_HOST, "no pool could take the volume", notes
            )

    def _place(self, vol: Volume) -> bool:
        """Rank zones, then claim in the first pool that takes it; False when the volume
        could not be placed (it is then ERROR with the placement fault)."""
        loaded = self.ctx.policies.current
        vtype = self.ctx.settings.volumes.type(vol.volume_type)
        zone_of_az = placement_zone(self.ctx.settings, self.ctx.api, vol.requested_az)
        request = VolumeRequest(
            project_id=vol.project_id,
            size_gb=vol.size_gb,
            volume_type=vol.volume_type,
            availability_zone=zone_of_az or vol.requested_az,
            type_zones=frozenset(vtype.backends) if vtype and vtype.backends else None,
            multiattach=vol.multiattach,
        )
        loads = storage_loads(self.ctx)
        ranking = rank_volume(loaded.policy, self.ctx.policies.context, request, loads)
        for z in ranking.stop_bursting:
            if claims.set_storage_bursting(self.ctx.api, z, False):
                LOG.info("zone %s: storage fell below low water: volumes placed locally again", z)
        for z in ranking.start_bursting:
            if claims.set_storage_bursting(self.ctx.api, z, True):
                LOG.info("zone %s: storage crossed high water: volumes overflow", z)
        notes = list(ranking.reasons())
        failed = frozenset(int(p) for p in vol.placement.get("failed_pools", []) if p is not None)
        az_filter = (
            vol.requested_az if vol.requested_az and vol.requested_az != zone_of_az else None
        )
        for cand in ranking.candidates:
            placement = _placement(loaded.policy.version, loaded.sha256, ranking, loads, cand.zone)
            placement.update({k: v for k, v in vol.placement.items() if k in ("failed_pools",)})
            c = claims.StorageClaim(
                vol.uuid, cand.zone, vol.size_gb, cand.gb_limit, cand.volumes_limit,
                cand.thresholded,
            )  # fmt: skip
            outcome = self._claim_in_zone(c, cand.weighing == "pack", az_filter, failed, placement)
            if outcome is claims.StorageOutcome.OK:
                LOG.info("volume %s: placed in %s (%s)", vol.uuid, cand.zone, cand.reason)
                return True
            if outcome is claims.StorageOutcome.GONE:
                return False
            if outcome is claims.StorageOutcome.ZONE_LIMIT:
                if cand.thresholded and claims.set_storage_bursting(self.ctx.api, cand.zone, True):
                    LOG.info("zone %s: storage crossed high water meanwhile", cand.zone)
                notes.append(f"{cand.zone}: its storage ceiling was reached by other volumes")
            else:
                notes.append(f"{cand.zone}: no pool has {vol.size_gb} GB free")
        code = ranking.fault or errors.NO_VALID_HOST
        with self.ctx.api.write() as s:
            s.execute(
                update(Volume)
                .where(Volume.uuid == vol.uuid)
                .values(
                    placement=_placement(loaded.policy.version, loaded.sha256, ranking, loads, None)
                )
            )
        self._fail_create(
            vol.uuid, code, _PLACEMENT_MESSAGES.get(code, "no valid pool was found"), notes
        )
        return False

    def _claim_in_zone(
        self,
        c: claims.StorageClaim,
        pack: bool,
        az: str | None,
        failed: frozenset[int],
        placement: dict[str, Any],
    ) -> claims.StorageOutcome:
        tried: set[int] = set(failed)
        outcome = claims.StorageOutcome.POOL_FULL
        while True:
            pools = claims.free_pools(
                self.ctx.api, c.zone, c.size_gb, az=az, pack=pack, exclude=frozenset(tried)
            )
            if not pools:
                return outcome
            for pool in pools:
                tried.add(pool.id)
                outcome = claims.claim(
                    self.ctx.api, c, pool, {**placement, "pool": pool.name, "host": pool.host}
                )
                if outcome is not claims.StorageOutcome.POOL_FULL:
                    return outcome

    # --- delete -----------------------------------------------------------------------

    def _delete(self, task: TaskRef) -> None:
        vol = self._volume(task.instance_uuid)
        if vol is None or vol.deleted or vol.status != r.DELETING:
            return
        storage = self._storage(vol.zone)
        if storage is not None:
            try:
                storage.delete_volume(vol.uuid)
            except (TransientError, AuthError) as exc:
                if task.attempts + 1 >= MAX_TRANSIENT:
                    self._set(vol.uuid, status=r.ERROR_DELETING, fault=fault(exc.code, exc.message))
                    return
                raise self._transient(task, exc) from None
            except DriverError as exc:
                self._set(
                    vol.uuid,
                    status=r.ERROR_DELETING,
                    fault=fault(exc.code, f"zone {vol.zone}: {exc.reason}"),
                )
                return
        claims.release(self.ctx.api, vol.uuid)
        now = utcnow()
        self._set(vol.uuid, status="deleted", deleted=True, deleted_at=now)
        LOG.info("volume %s: deleted", vol.uuid)

    # --- attach and detach ------------------------------------------------------------

    def _attachment(self, volume: str, server: str) -> VolumeAttachment | None:
        with self.ctx.api.read() as s:
            a = s.scalar(
                select(VolumeAttachment).where(
                    VolumeAttachment.volume_uuid == volume, VolumeAttachment.server_uuid == server
                )
            )
            if a is not None:
                s.expunge(a)
            return a

    def _attach(self, task: TaskRef) -> None:
        server = str(task.payload.get("server"))
        att = self._attachment(task.instance_uuid, server)
        vol = self._volume(task.instance_uuid)
        if att is None or att.state != "attaching" or vol is None:
            return
        storage = self._storage(vol.zone)
        if storage is None:
            self._drop_attachment(vol.uuid, server)
            return
        try:
            storage.attach_volume(vol.uuid, server, att.device)
        except (TransientError, AuthError) as exc:
            if task.attempts + 1 < MAX_TRANSIENT:
                raise self._transient(task, exc) from None
            self._drop_attachment(vol.uuid, server, exc)
            return
        except (DriverError, VolumeNotFound, InstanceNotFound) as exc:
            self._drop_attachment(vol.uuid, server, exc)
            return
        self._mark_attached(vol.uuid, server)
        LOG.info("volume %s: attached to %s as %s", vol.uuid, server, att.device)

    def _mark_attached(self, volume: str, server: str) -> None:
        with self.ctx.api.write() as s:
            s.execute(
                update(VolumeAttachment)
                .where(
                    VolumeAttachment.volume_uuid == volume, VolumeAttachment.server_uuid == server
                )
                .values(state="attached")
            )
            _settle_status(s, volume)

    def _drop_attachment(self, volume: str, server: str, exc: DriverError | None = None) -> None:
        with self.ctx.api.write() as s:
            s.execute(
                delete(VolumeAttachment).where(
                    VolumeAttachment.volume_uuid == volume, VolumeAttachment.server_uuid == server
                )
            )
            _settle_status(s, volume)
        if exc is not None:
            vol = self._volume(volume)
            LOG.warning("volume %s: attach to %s failed: %s", volume, server, exc.message)
            record_event(
                self.ctx.api,
                zone=(vol.zone if vol else None) or "",
                kind="volume",
                instance_uuid=volume,
                action="attach_failed",
                detail=f"attach to server {server} failed: {exc.message}",
            )

    def _detach(self, task: TaskRef) -> None:
        server = str(task.payload.get("server"))
        att = self._attachment(task.instance_uuid, server)
        vol = self._volume(task.instance_uuid)
        if att is None or att.state != "detaching" or vol is None:
            return
        storage = self._storage(vol.zone)
        if storage is not None:
            try:
                storage.detach_volume(vol.uuid, server)
            except VolumeNotFound:
                pass  # gone from the cloud: the monitor marks the volume vanished
            except (TransientError, AuthError) as exc:
                if task.attempts + 1 < MAX_TRANSIENT:
                    raise self._transient(task, exc) from None
                self._mark_attached(vol.uuid, server)
                return
            except DriverError as exc:
                LOG.warning("volume %s: detach from %s failed: %s", vol.uuid, server, exc.message)
                self._mark_attached(vol.uuid, server)
                return
        self._drop_attachment(vol.uuid, server)
        LOG.info("volume %s: detached from %s", vol.uuid, server)


def detach_all(ctx: ComputeContext, server_uuid: str) -> int:
    """The server is gone: its volumes are detached (clouds detach them on delete; the
    call makes sure) and available again. Returns how many were attached.

    :raises TransientError, AuthError: the cloud could not be asked; the caller retries.
    """
    with ctx.api.read() as s:
        rows = s.execute(
            select(VolumeAttachment.volume_uuid, Volume.zone)
            .join(Volume, Volume.uuid == VolumeAttachment.volume_uuid)
            .where(VolumeAttachment.server_uuid == server_uuid)
        ).all()
    for volume, zone in rows:
        driver = ctx.drivers.get(zone or "")
        storage = None if driver is None else driver.block_storage()
        if storage is not None:
            try:
                storage.detach_volume(volume, server_uuid)
            except (VolumeNotFound, InstanceNotFound):
                pass
            except (TransientError, AuthError):
                raise
            except DriverError:
                LOG.exception("volume %s: detach from deleted server %s", volume, server_uuid)
        with ctx.api.write() as s:
            s.execute(
                delete(VolumeAttachment).where(
                    VolumeAttachment.volume_uuid == volume,
                    VolumeAttachment.server_uuid == server_uuid,
                )
            )
            _settle_status(s, volume)
    return len(rows)


def _settle_status(s: Any, volume: str) -> None:
    """in-use while any attachment stands, available otherwise; a volume still being
    attached or detached elsewhere keeps that status."""
    states = set(
        s.scalars(select(VolumeAttachment.state).where(VolumeAttachment.volume_uuid == volume))
    )
    if "attaching" in states:
        status = r.ATTACHING
    elif "detaching" in states:
        status = r.DETACHING
    elif states:
        status = r.IN_USE
    else:
        status = r.AVAILABLE
    s.execute(
        update(Volume)
        .where(
            Volume.uuid == volume,
            Volume.deleted.is_(False),
            Volume.status.in_((r.ATTACHING, r.DETACHING, r.IN_USE, r.AVAILABLE)),
        )
        .values(status=status, updated_at=utcnow())
    )


_PLACEMENT_MESSAGES: Mapping[str, str] = {
    errors.NO_VALID_HOST: "no availability zone has a pool that can take this volume",
    errors.QUOTA_EXCEEDED: "every candidate availability zone is at its volume quota",
    errors.POLICY_DENIED: "the policy allows this volume in no availability zone",
}


def _placement(
    version: str,
    sha256: str,
    ranking: VolumeRanking,
    loads: Mapping[str, StorageLoad],
    zone: str | None,
) -> dict[str, Any]:
    chosen = next((c for c in ranking.candidates if c.zone == zone), None)
    return {
        "policy_version": version,
        "policy_sha256": sha256,
        "decided_at": utcnow().isoformat(),
        "zone": zone,
        "reason": chosen.reason if chosen else None,
        "matched_rules": list(ranking.matched_rules),
        "load": {
            name: {
                "gb_used": ld.gb_used,
                "gb_total": ld.gb_total,
                "volumes": ld.volumes,
                "bursting": ld.bursting,
            }
            for name, ld in loads.items()
            if ld.has_storage
        },
        "verdicts": [v.as_dict() for v in ranking.verdicts],
    }
