"""Cinder v3 volumes as the ``openstack`` zone's block storage (:mod:`federator.blockstorage`).

Every volume the driver makes carries metadata like a server's (keys start with the
zone's ``metadata_prefix``): ``volume-uuid`` (the broker's volume uuid), ``broker-id`` and
``project``. The uuid key is not the servers' ``instance-uuid``, so that a volume is never
taken for a server nor the other way round. Lookups ask the remote cloud for exactly those
keys (``GET /volumes/detail?metadata={...}``, a filter Cinder has) and check them again on
what comes back, so a cloud that ignores the filter is still read right; ``list_volumes``
returns the volumes with a ``volume-uuid`` key and this broker's id, and nothing else.

Where volumes live: the remote cloud places them, so the zone has one pool (``host``
None), named after the remote availability zone: ``availability_zone`` when the options
name one (volumes are then made there, as servers are), else the remote cloud's only
volume availability zone, else the zone's own name. Its capacity is ``volume_quota_gb``.
Volumes of any pool name are made the same way: there is only the one.

``create_volume`` is idempotent on the uuid: under a per-uuid lock it looks the uuid up
and returns what it finds; a create whose answer was lost (a timeout) is found by the next
look-up. Like servers, a create waits (bounded by ``wait_timeout``) for the volume to leave
``creating``; a volume the remote cloud could not make is deleted and the reason raised.
Attach and detach go through Nova's ``os-volume_attachments`` of the remote server that
carries the broker's server uuid, and wait the same way for Cinder to show the outcome;
a delete waits until the volume is gone. A volume the remote cloud is deleting is already
gone for the broker: get raises VolumeNotFound and list leaves it out.

Statuses (:func:`drivers.openstack.states.volume_state`): a volume in the middle of an
operation (``attaching``, ``detaching``, ``reserved``, ``extending``, ...) keeps the state
its attachments give it: in-use while the remote cloud lists an attachment, else available.
Attachments name the broker uuid of their server, read from the server's metadata (the
remote server id for a server the broker does not own).
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from drivers.openstack.errors import translated
from drivers.openstack.options import OpenStackOptions
from drivers.openstack.states import BUSY, GONE, remote_time, volume_state
from federator.blockstorage import (
    BlockStorage,
    PoolInfo,
    RemoteAttachment,
    RemoteVolume,
    StorageCapabilities,
    VolumeNotFound,
    VolumeSpec,
    VolumeState,
)
from federator.driver import (
    CapacityError,
    DriverError,
    InstanceNotFound,
    PermanentError,
    TransientError,
    batched,
)
from federator.keyedlocks import KeyedLocks

__all__ = ["CinderBlockStorage", "MetadataKeys"]

LOG = logging.getLogger(__name__)

_EPOCH = datetime.min.replace(tzinfo=UTC)
# A remote create fault that means "not here, now": the broker tries another pool. The
# broker's own wording ("no pool has 5 GB free", "no valid host") and Cinder's ("No valid
# backend was found", quotas) both say so.
_TRY_ELSEWHERE = re.compile(
    r"no valid (host|backend|pool)|quota|capacity|insufficient|no_valid_host|no pool", re.I
)
# Unknown attached servers looked up one GET each; more are read with one listing.
_GET_AT_MOST = 20
_MULTIATTACH_SPEC = re.compile(r"^\s*(<is>\s*)?true\s*$", re.I)


@dataclass(frozen=True, slots=True)
class MetadataKeys:
    """The metadata keys of the zone: the volume's uuid, the server's uuid on servers, the
    broker id both carry, and the project."""

    volume_uuid: str
    server_uuid: str
    broker: str
    project: str


class CinderBlockStorage(BlockStorage):
    """The remote cloud's Cinder for the ``openstack`` zone; see the module docstring.

    ``conn()`` is the driver's openstacksdk connection (made on first use);
    ``find_server(uuid)`` the driver's look-up of the remote server carrying broker server
    uuid ``uuid`` (None when there is none); ``sleep`` and ``clock`` pace the waits.
    """

    def __init__(
        self,
        zone: str,
        *,
        broker_id: str,
        options: OpenStackOptions,
        keys: MetadataKeys,
        conn: Callable[[], Any],
        find_server: Callable[[str], Any | None],
        sleep: Callable[[float], None],
        clock: Callable[[], float],
    ) -> None:
        super().__init__(zone)
        self.broker_id = broker_id
        self.options = options
        self.keys = keys
        self._conn = conn
        self._find_server = find_server
        self._sleep = sleep
        self._clock = clock
        self._locks = KeyedLocks()  # one per volume uuid
        self._lock = threading.Lock()
        self._pool: str | None = None
        self._multiattach: bool | None = None
        # remote server id -> broker server uuid (a server's metadata uuid never changes)
        self._servers: dict[str, str] = {}

    # --- the contract ------------------------------------------------------------------

    def storage_capabilities(self) -> StorageCapabilities:
        """Shared (the remote cloud attaches any of its volumes to any of its servers);
        multiattach when the remote volume type says so, as last read by :meth:`pools`
        (False until then)."""
        return StorageCapabilities(shared=True, multiattach=bool(self._multiattach))

    def pools(self) -> Sequence[PoolInfo]:
        """One pool named after the remote availability zone, of ``volume_quota_gb``.

        :raises TransientError, AuthError, PermanentError: the remote cloud could not be
            asked for its availability zones.
        """
        name = self._pool_name()
        self._learn_multiattach()
        return [
            PoolInfo(
                name=name,
                host=None,
                capacity_gb=self.options.volume_quota_gb,
                extra={
                    "availability_zone": self.options.availability_zone or name,
                    "volume_type": self.options.volume_type,
                },
            )
        ]

    def create_volume(self, spec: VolumeSpec) -> RemoteVolume:
        """Create a volume of remote type ``spec.backend`` (else ``volume_type``, else the
        remote default) and wait, bounded, for it to leave ``creating``. Cinder makes a
        volume multiattach by its type (the ``multiattach`` flag of old is refused), so
        ``spec.multiattach`` is a check: a volume the remote type did not make multiattach
        is deleted and refused.

        :raises PermanentError: a size below 1 GB; the remote cloud refuses the request
            (an unknown type, a size it does not take) or could not make the volume; the
            remote type makes no multiattach volume and one was asked for. Nothing is left.
        :raises CapacityError: it does not fit ``volume_quota_gb``; the remote cloud is
            over its quota (413) or had no room for it. Nothing is left.
        :raises TransientError: 5xx, timeouts, an unreachable cloud; a volume may have been
            made, and the retry finds it by its uuid.
        :raises AuthError:
        """
        if spec.size_gb < 1:
            raise PermanentError(
                self.zone, f"cannot create volume {spec.uuid}: a size of {spec.size_gb} GB"
            )
        with self._locks.held(spec.uuid):
            found = self._find(spec.uuid)
            if found is not None:
                LOG.info("zone %s: volume %s already exists as %s", self.zone, spec.uuid, found.id)
            else:
                self._check_quota(spec)
                found = self._create(spec)
            volume = self._wait_created(found, spec.uuid)
            if volume_state(_status(volume), False) is VolumeState.ERROR:
                self._fail(volume, spec.uuid)
            if spec.multiattach and not getattr(volume, "is_multiattach", False):
                self._discard(volume, spec.uuid)
                raise PermanentError(
                    self.zone,
                    f"cannot create volume {spec.uuid} multiattach: remote volume type "
                    f"{getattr(volume, 'volume_type', None) or 'default'} does not make "
                    "multiattach volumes",
                )
        return self._remote(volume)

    def delete_volume(self, uuid: str) -> None:
        """Delete the volume carrying ``uuid`` and wait, bounded, until it is gone; none (or
        one already deleting) is success.

        :raises PermanentError: it is attached (detach it first); the remote cloud refused
            the delete or failed it (``error_deleting``).
        :raises TransientError: it is still being created or is busy; 5xx, timeouts.
        :raises AuthError:
        """
        with self._locks.held(uuid):
            volume = self._find(uuid)
            if volume is None:
                return
            attached = _attachments(volume)
            if attached:
                servers = self._server_uuids(a.get("server_id") for a in attached)
                raise PermanentError(
                    self.zone,
                    f"cannot delete volume {uuid}: it is attached to "
                    + ", ".join(_names(attached, servers)),
                )
            status = _status(volume)
            if status == "creating" or status in BUSY:
                raise TransientError(self.zone, f"cannot delete volume {uuid} yet: it is {status}")
            with translated(self.zone, uuid=uuid, about="volume"):
                self._conn().block_storage.delete_volume(volume.id, ignore_missing=True)
            LOG.info("zone %s: deleting volume %s (%s)", self.zone, uuid, volume.id)
            self._wait_gone(volume.id, uuid)

    def get_volume(self, uuid: str) -> RemoteVolume:
        """:raises VolumeNotFound: no volume carries ``uuid`` (or it is being deleted)."""
        return self._remote(self._require(uuid))

    def list_volumes(self, batch_size: int = 500) -> Iterator[Sequence[RemoteVolume]]:
        """The broker's volumes of the remote project, following every remote page,
        regrouped to exactly ``batch_size`` volumes (the last may be smaller)."""
        owned = (
            v
            for v in self._volumes({self.keys.broker: self.broker_id})
            if _meta(v).get(self.keys.volume_uuid)
        )
        for batch in batched(owned, batch_size):
            yield self._remotes(batch)

    def attach_volume(self, uuid: str, server_uuid: str, device: str | None) -> RemoteAttachment:
        """Attach the volume to the remote server carrying ``server_uuid`` as ``device``
        (else the remote cloud picks) and wait, bounded, until Cinder lists the attachment;
        returns the device it shows.

        :raises VolumeNotFound, InstanceNotFound: no such volume, no such server.
        :raises PermanentError: the volume is attached elsewhere (and not multiattach) or
            not available; the remote cloud refused (a device taken or no device name) or
            could not attach it.
        :raises TransientError: the volume is still creating or busy; 5xx, timeouts.
        :raises AuthError:
        """
        with self._locks.held(uuid):
            volume = self._require(uuid)
            server = self._find_server(server_uuid)
            if server is None:
                raise InstanceNotFound(self.zone, f"no server {server_uuid}")
            sid = str(server.id)
            self._servers[sid] = server_uuid
            existing = _attachment_on(volume, sid)
            if existing is not None and _status(volume) == "detaching":
                raise TransientError(
                    self.zone, f"volume {uuid} is still detaching from {server_uuid}"
                )
            if existing is not None:
                return RemoteAttachment(server_uuid=server_uuid, device=existing.get("device"))
            self._check_attachable(volume, uuid, server_uuid)
            attrs: dict[str, Any] = {"device": device} if device else {}
            with translated(self.zone, about="attachment"):
                made = self._conn().compute.create_volume_attachment(sid, volume.id, **attrs)
            LOG.info("zone %s: attaching volume %s to %s", self.zone, uuid, server_uuid)
            shown = self._wait_attached(volume.id, sid, uuid, server_uuid)
        return RemoteAttachment(
            server_uuid=server_uuid, device=shown or getattr(made, "device", None) or device
        )

    def detach_volume(self, uuid: str, server_uuid: str) -> None:
        """Detach the volume from server ``server_uuid`` (its broker uuid, or the remote id
        of a server the broker does not own) and wait, bounded, until Cinder no longer
        lists the attachment; not attached there is success.

        :raises VolumeNotFound: no such volume.
        :raises TransientError, AuthError, PermanentError:
        """
        from openstack.compute.v2.server import Server
        from openstack.exceptions import ConflictException

        with self._locks.held(uuid):
            volume = self._require(uuid)
            attached = _attachments(volume)
            servers = self._server_uuids(a.get("server_id") for a in attached)
            targets = [
                str(a["server_id"])
                for a in attached
                if server_uuid in (a.get("server_id"), servers.get(str(a.get("server_id"))))
            ]
            if not targets:
                return
            for sid in targets:
                # A conflict: it is already being detached, and the wait below sees it end.
                # The server goes as a Server, not an id: given a bare id, openstacksdk
                # first looks it up to tell server from volume (one more remote call).
                with translated(self.zone, about="attachment"), suppress(ConflictException):
                    self._conn().compute.delete_volume_attachment(
                        Server(id=sid), volume.id, ignore_missing=True
                    )
            LOG.info("zone %s: detaching volume %s from %s", self.zone, uuid, server_uuid)
            self._wait_detached(volume.id, set(targets), uuid, server_uuid)

    # --- look-ups ----------------------------------------------------------------------

    def _volumes(self, wanted: Mapping[str, str]) -> Iterator[Any]:
        """Every live volume of the project whose metadata holds ``wanted`` (and this
        broker's id), following the remote pages; the filter is checked here again."""
        query = {**wanted, self.keys.broker: self.broker_id}
        # No ``limit``: given one, openstacksdk asks for one more page after every page (with
        # the last volume as marker, which fails once that volume is deleted); the remote
        # cloud's own page size and next links serve instead.
        with translated(self.zone, about="volume"):
            proxy = self._conn().block_storage
        pages = iter(proxy.volumes(details=True, properties=json.dumps(query)))
        while True:
            with translated(self.zone, about="volume"):
                volume = next(pages, None)
            if volume is None:
                return
            meta = _meta(volume)
            if all(meta.get(k) == v for k, v in query.items()) and _status(volume) not in GONE:
                yield volume

    def _find(self, uuid: str) -> Any | None:
        """The live volume carrying ``uuid`` (the oldest, should two have been made)."""
        found = sorted(
            self._volumes({self.keys.volume_uuid: uuid}),
            key=lambda v: (_created(v) or _EPOCH, str(v.id)),
        )
        if len(found) > 1:
            LOG.warning(
                "zone %s: %d volumes carry uuid %s (%s); using the oldest",
                self.zone,
                len(found),
                uuid,
                ", ".join(str(v.id) for v in found),
            )
        return found[0] if found else None

    def _require(self, uuid: str) -> Any:
        found = self._find(uuid)
        if found is None:
            raise VolumeNotFound(self.zone, f"no volume {uuid}")
        return found

    def _get(self, volume_id: str, uuid: str, *, deleting: bool = False) -> Any | None:
        """The volume of remote id ``volume_id`` as it is now; None once it is gone (or
        being deleted, unless ``deleting``)."""
        try:
            with translated(self.zone, uuid=uuid, about="volume"):
                volume = self._conn().block_storage.get_volume(volume_id)
        except VolumeNotFound:
            return None
        status = _status(volume)
        return None if status == "deleted" or (status in GONE and not deleting) else volume

    def _pool_name(self) -> str:
        """The zone's one pool: the options' availability zone, else the remote cloud's
        only volume availability zone (asked once), else the zone's name."""
        if self.options.availability_zone:
            return self.options.availability_zone
        with self._lock:
            if self._pool is not None:
                return self._pool
        with translated(self.zone, about="volume"):
            azs = sorted(
                {
                    str(az.name)
                    for az in self._conn().block_storage.availability_zones()
                    if az.name and (az.state or {}).get("available", True)
                }
            )
        if len(azs) != 1:
            if len(azs) > 1:
                LOG.warning(
                    "zone %s: the remote cloud offers volumes in %s; set availability_zone "
                    "so that volumes and servers are made in the same one",
                    self.zone,
                    ", ".join(azs),
                )
            return self.zone
        with self._lock:
            self._pool = azs[0]
            return self._pool

    def _learn_multiattach(self) -> None:
        """Read once whether the remote volume type makes multiattach volumes (Cinder's
        ``multiattach`` extra spec); what cannot be read counts as False."""
        if self._multiattach is not None:
            return
        conn = self._conn()
        specs: Mapping[str, Any] = {}
        try:
            with translated(self.zone, about="volume"):
                if self.options.volume_type:
                    vtype = conn.block_storage.find_type(
                        self.options.volume_type, ignore_missing=False
                    )
                    specs = vtype.extra_specs or {}
                else:
                    resp = conn.block_storage.get("/types/default", microversion="3.62")
                    if resp.status_code == 200:
                        specs = resp.json().get("volume_type", {}).get("extra_specs") or {}
        except (TransientError, PermanentError, VolumeNotFound) as exc:
            LOG.info("zone %s: volume type not readable (%s): no multiattach", self.zone, exc)
            return
        self._multiattach = bool(_MULTIATTACH_SPEC.match(str(specs.get("multiattach", ""))))

    def _server_uuids(self, ids: Iterable[Any]) -> dict[str, str]:
        """Remote server id -> broker server uuid for ``ids``: from what is known, else one
        GET per unknown id (or, past ``_GET_AT_MOST`` unknown ids, one listing, which
        costs less than that many GETs). A server without this broker's metadata maps to
        its own id."""
        from openstack.exceptions import NotFoundException

        wanted = {str(i) for i in ids if i}
        unknown = sorted(wanted - set(self._servers))
        if unknown:
            with translated(self.zone):
                compute = self._conn().compute
                servers: list[Any] = []
                if len(unknown) <= _GET_AT_MOST:
                    for sid in unknown:
                        with suppress(NotFoundException):
                            servers.append(compute.get_server(sid))
                else:
                    servers = [s for s in compute.servers(details=True) if str(s.id) in unknown]
            for server in servers:
                meta = server.metadata or {}
                owner = meta.get(self.keys.server_uuid)
                if owner and meta.get(self.keys.broker) == self.broker_id:
                    self._servers[str(server.id)] = str(owner)
        return {i: self._servers.get(i, i) for i in wanted}

    # --- create ------------------------------------------------------------------------

    def _check_quota(self, spec: VolumeSpec) -> None:
        quota = self.options.volume_quota_gb
        if quota is None:
            return
        used = sum(
            int(v.size or 0) for v in self._volumes({}) if _meta(v).get(self.keys.volume_uuid)
        )
        if used + spec.size_gb > quota:
            raise CapacityError(
                self.zone,
                f"cannot create volume {spec.uuid}: {spec.size_gb} GB do not fit the zone's "
                f"volume quota ({used} of {quota} GB in use)",
            )

    def _create(self, spec: VolumeSpec) -> Any:
        prefix = self.options.metadata_prefix
        metadata = {
            **{k: v for k, v in spec.metadata.items() if not k.startswith(prefix)},
            self.keys.volume_uuid: spec.uuid,
            self.keys.broker: spec.broker_id,
            self.keys.project: spec.project_id,
        }
        attrs: dict[str, Any] = {"size": spec.size_gb, "metadata": metadata}
        if spec.name:
            attrs["name"] = spec.name[:255]
        volume_type = spec.backend or self.options.volume_type
        if volume_type:
            attrs["volume_type"] = volume_type
        if self.options.availability_zone:
            attrs["availability_zone"] = self.options.availability_zone
        try:
            with translated(self.zone, uuid=spec.uuid, about="volume"):
                made = self._conn().block_storage.create_volume(**attrs)
        except TransientError:
            # The request may have reached the remote cloud before the failure: a volume it
            # made is the result, not a leftover.
            found = self._find(spec.uuid)
            if found is None:
                raise
            return found
        LOG.info(
            "zone %s: created volume %s for %s (%d GB, type %s)",
            self.zone,
            made.id,
            spec.uuid,
            spec.size_gb,
            volume_type or "default",
        )
        return made

    def _wait_created(self, volume: Any, uuid: str) -> Any:
        """Poll (bounded by ``wait_timeout``) until the volume leaves ``creating``; on
        timeout the volume as it is (the broker polls :meth:`get_volume` from there)."""
        deadline = self._clock() + self.options.wait_timeout
        while _status(volume) == "creating" and self._clock() < deadline:
            self._sleep(self.options.poll_interval)
            now = self._get(str(volume.id), uuid)
            if now is None:
                raise PermanentError(self.zone, f"volume {uuid} vanished while it was created")
            volume = now
        return volume

    def _fail(self, volume: Any, uuid: str) -> None:
        """The remote cloud could not make the volume: delete it, raise why."""
        reason = self._fault(str(volume.id)) or "status error"
        self._discard(volume, uuid)
        message = f"the remote cloud could not create volume {uuid}: {reason}"
        if _TRY_ELSEWHERE.search(reason):
            raise CapacityError(self.zone, message)
        raise PermanentError(self.zone, message)

    def _discard(self, volume: Any, uuid: str) -> None:
        """Delete a volume a create made but cannot keep, and wait until it is gone."""
        with translated(self.zone, uuid=uuid, about="volume"):
            self._conn().block_storage.delete_volume(volume.id, ignore_missing=True)
        self._wait_gone(str(volume.id), uuid)

    def _fault(self, volume_id: str) -> str:
        """Why a volume is in error, when the remote cloud says (a child broker shows a
        ``fault`` on the volume, as Nova does on servers); empty otherwise."""
        try:
            with translated(self.zone, about="volume"):
                resp = self._conn().block_storage.get(f"/volumes/{volume_id}")
            fault = resp.json().get("volume", {}).get("fault") or {}
        except (DriverError, ValueError, AttributeError):  # the reason is a courtesy only
            return ""
        text = " ".join(str(fault.get(k) or "") for k in ("code", "message")).strip()
        return re.sub(r"\?\S*", "", text)[:500]

    # --- waits -------------------------------------------------------------------------

    def _wait_gone(self, volume_id: str, uuid: str) -> None:
        """Cinder deletes asynchronously: wait (bounded) until the volume is gone, so that
        it is not listed again; on timeout it is still ``deleting``, gone for the broker.

        :raises PermanentError: the remote cloud failed the delete (``error_deleting``).
        """
        deadline = self._clock() + self.options.wait_timeout
        while self._clock() < deadline:
            volume = self._get(volume_id, uuid, deleting=True)
            if volume is None:
                return
            if _status(volume) == "error_deleting":
                raise PermanentError(self.zone, f"the remote cloud could not delete volume {uuid}")
            self._sleep(self.options.poll_interval)

    def _wait_attached(self, volume_id: str, sid: str, uuid: str, server_uuid: str) -> str | None:
        """Wait (bounded) until Cinder lists the attachment to remote server ``sid``;
        returns its device (None on timeout: the attach is under way).

        :raises PermanentError: the remote cloud gave up the attach.
        """
        deadline = self._clock() + self.options.wait_timeout
        while True:
            volume = self._get(volume_id, uuid)
            if volume is None:
                raise VolumeNotFound(self.zone, f"no volume {uuid}")
            shown = _attachment_on(volume, sid)
            status = _status(volume)
            if shown is not None and status not in BUSY:
                return str(shown.get("device") or "") or None
            if status not in BUSY and shown is None:
                raise PermanentError(
                    self.zone,
                    f"the remote cloud did not attach volume {uuid} to {server_uuid} "
                    f"(the volume is {status})",
                )
            if self._clock() >= deadline:
                return None
            self._sleep(self.options.poll_interval)

    def _wait_detached(self, volume_id: str, sids: set[str], uuid: str, server_uuid: str) -> None:
        """Wait (bounded) until Cinder no longer lists an attachment to ``sids``; on
        timeout the detach is under way, and the broker's sync sees it end."""
        deadline = self._clock() + self.options.wait_timeout
        while True:
            volume = self._get(volume_id, uuid)
            if volume is None:
                return
            left = {str(a.get("server_id")) for a in _attachments(volume)} & sids
            if not left and _status(volume) not in BUSY:
                return
            if self._clock() >= deadline:
                LOG.info(
                    "zone %s: volume %s is still detaching from %s", self.zone, uuid, server_uuid
                )
                return
            self._sleep(self.options.poll_interval)

    def _check_attachable(self, volume: Any, uuid: str, server_uuid: str) -> None:
        status = _status(volume)
        attached = _attachments(volume)
        if attached and not getattr(volume, "is_multiattach", False):
            servers = self._server_uuids(a.get("server_id") for a in attached)
            raise PermanentError(
                self.zone,
                f"cannot attach volume {uuid} to {server_uuid}: it is attached to "
                + ", ".join(_names(attached, servers))
                + " (and is not multiattach)",
            )
        if status == "creating" or status in BUSY:
            raise TransientError(self.zone, f"volume {uuid} is {status}")
        if status not in ("available", "in-use"):
            raise PermanentError(self.zone, f"cannot attach volume {uuid}: it is {status}")

    # --- what the broker sees ----------------------------------------------------------

    def _remotes(self, volumes: Sequence[Any]) -> list[RemoteVolume]:
        self._server_uuids(a.get("server_id") for v in volumes for a in _attachments(v))
        return [self._remote(v) for v in volumes]

    def _remote(self, volume: Any) -> RemoteVolume:
        attached = _attachments(volume)
        servers = self._server_uuids(a.get("server_id") for a in attached)
        az = getattr(volume, "availability_zone", None) or None
        return RemoteVolume(
            uuid=str(_meta(volume)[self.keys.volume_uuid]),
            remote_id=str(volume.id),
            size_gb=int(volume.size or 0),
            state=volume_state(_status(volume), bool(attached)),
            pool=self.options.availability_zone or self._pool or az or self.zone,
            attachments=tuple(
                RemoteAttachment(
                    server_uuid=servers.get(str(a["server_id"]), str(a["server_id"])),
                    device=a.get("device"),
                )
                for a in attached
            ),
            created_at=_created(volume),
            extra={
                "remote_status": _status(volume),
                "remote_name": getattr(volume, "name", None),
                "volume_type": getattr(volume, "volume_type", None),
                "availability_zone": az,
                "multiattach": bool(getattr(volume, "is_multiattach", False)),
            },
        )


def _status(volume: Any) -> str:
    return str(getattr(volume, "status", None) or "").lower()


def _meta(volume: Any) -> dict[str, str]:
    return dict(getattr(volume, "metadata", None) or {})


def _attachments(volume: Any) -> list[dict[str, Any]]:
    return [
        a
        for a in (getattr(volume, "attachments", None) or [])
        if isinstance(a, dict) and a.get("server_id")
    ]


def _attachment_on(volume: Any, sid: str) -> dict[str, Any] | None:
    return next((a for a in _attachments(volume) if str(a["server_id"]) == sid), None)


def _names(attached: Sequence[dict[str, Any]], servers: Mapping[str, str]) -> list[str]:
    return [servers.get(str(a["server_id"]), str(a["server_id"])) for a in attached]


def _created(volume: Any) -> datetime | None:
    """Cinder's ``created_at``, or None."""
    return remote_time(getattr(volume, "created_at", None))
