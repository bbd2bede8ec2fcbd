"""Data volumes of the ``libvirt`` zone (:mod:`federator.blockstorage`): host-local storage.

Pools. Every host keeps the broker's volumes in one storage pool, ``volume_pool``
(``federator-volumes`` by default), which the operator defines and starts on each real
host (a ``dir`` pool, or any type that makes volumes). On a host reached through a test
URI the driver defines a ``dir`` pool of that name itself when it is missing. The broker
sees one :class:`~federator.blockstorage.PoolInfo` per host, named ``<host>/<pool>``. The
storage is host-local (``shared`` False): a volume attaches only to servers on its
pool's host, and attaching one to a server elsewhere is refused naming both hosts.

Capacity. A real host's pool reports its own capacity; the test driver reports 100 GiB
for every pool whatever its definition says, so a test host's pool is ``volume_pool_gb``
big. Volumes are sparse (allocation 0), which leaves libvirt nothing to check, so the
driver refuses a volume itself (CapacityError), under a per-host lock, when the
capacities of the pool's volumes would exceed the pool's: the measure the broker claims
space by.

Names and ownership. A pool volume carries no metadata of its own, so its name does:
``fed-<owner>-<uuid>``, ``<owner>`` being 8 hex digits of SHA-256 over the broker id and
zone (the pair an instance's metadata names). ``list_volumes`` yields the volumes with
that prefix and nothing else: not volumes made by hand, by another broker or zone, nor
instances' root volumes. A create retried after a crash finds its volume by name, on
every host that answers, under a per-uuid lock, so concurrent creates make one.

Attachments are read back from the domains, never remembered: a volume is attached to
each domain of its host one of whose disks, in its persistent or its live definition,
names the volume (by pool and volume, or by path); the attachment's server is the
domain's uuid, the broker's instance uuid. ``attach_volume`` adds a ``<disk
type='volume'>`` with target ``vdX``: the device asked for (``/dev/vdc`` is ``vdc``;
``sdX``, ``hdX``, ``xvdX`` are read as ``vdX``, the bus being virtio), else the first free
of ``vdb``..``vdz``; its serial is the volume uuid's first 20 characters (virtio's limit),
so the guest finds it as ``/dev/disk/by-id/virtio-<serial>``. The disk goes through
``virDomainAttachDeviceFlags`` into the persistent definition and, while the domain runs,
the live one. libvirt's test driver implements no device hot-plug (``VIR_ERR_NO_SUPPORT``);
on it, and on any hypervisor answering so, the disk is added to the persistent
definition by redefining the domain (what ``VIR_DOMAIN_AFFECT_CONFIG`` does), and a
running domain keeps its live devices until it next boots. Detach mirrors attach. A live
detach on a real hypervisor ends when the guest lets go of the disk; until then the live
definition still names it and the volume reads ``in-use``.

Deleting a server undefines its domain and its disks with it; its data volumes stay in
the pool (they belong to the broker's volume records) and read ``available`` again.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import uuid as uuidlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import libvirt

from drivers.libvirt.connection import HostHandle, on_every_host
from drivers.libvirt.domain import UNSUPPORTED, OwnedDomain
from drivers.libvirt.domainxml import (
    DiskRef,
    data_disk_xml,
    data_volume_xml,
    domain_disks,
    pool_xml,
    volume_created_at,
    volume_format,
    with_device,
    without_disk,
)
from drivers.libvirt.errors import error_code, translate, translated
from drivers.libvirt.options import LibvirtOptions
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
    AuthError,
    CapacityError,
    DriverError,
    InstanceNotFound,
    PermanentError,
    TransientError,
    batched,
)
from federator.keyedlocks import KeyedLocks

__all__ = ["LibvirtBlockStorage", "owner_tag", "target_device", "volume_name"]

LOG = logging.getLogger(__name__)

GIB = 1024**3
FORMATS = frozenset({"raw", "qcow2"})
_DEVICE = re.compile(r"^(?:/dev/)?(?:vd|sd|hd|xvd)([a-z]{1,2})$")
# vda is the root disk's (when the zone has root volumes).
_FREE_TARGETS = tuple(f"vd{letter}" for letter in "bcdefghijklmnopqrstuvwxyz")
_SERIAL_CHARS = 20  # what a virtio-blk serial holds
_CONFIG = libvirt.VIR_DOMAIN_AFFECT_CONFIG
_LIVE = libvirt.VIR_DOMAIN_AFFECT_LIVE

# (broker uuid of a server, operation) -> its domain; raises InstanceNotFound.
FindServer = Callable[[str, str], OwnedDomain]
# The driver's lock of one server, held around its create, delete and migrate.
ServerLock = Callable[[str], AbstractContextManager[None]]


def owner_tag(broker_id: str, zone: str) -> str:
    """The 8 hex digits that mark the volumes of ``broker_id``'s zone ``zone``."""
    return hashlib.sha256(f"{broker_id}\n{zone}".encode()).hexdigest()[:8]


def volume_name(owner: str, uuid: str) -> str:
    """The pool volume name of broker volume ``uuid`` (see the module docstring)."""
    return f"fed-{owner}-{uuid}"


def target_device(device: str) -> str | None:
    """The virtio target (``vdc``) for a requested device (``/dev/vdc``), or None when
    ``device`` is no disk name."""
    match = _DEVICE.match(device.strip())
    return None if match is None else f"vd{match.group(1)}"


def _canonical(uuid: str) -> str | None:
    try:
        return str(uuidlib.UUID(uuid))
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class _Found:
    """Broker volume ``uuid``, found in the pool of ``handle``'s host."""

    uuid: str
    handle: HostHandle
    vol: libvirt.virStorageVol

    @property
    def host(self) -> str:
        return self.handle.name

    @property
    def name(self) -> str:
        return str(self.vol.name())


class LibvirtBlockStorage(BlockStorage):
    """The ``volume_pool`` of every host of a ``libvirt`` zone; see the module docstring.

    ``find_server`` and ``server_lock`` are the compute driver's: the lookup of a zone's
    domain by broker uuid (every host, last-seen first) and the per-server lock its own
    create, delete and migrate hold, so a disk is never plugged into a domain mid-delete.
    """

    def __init__(
        self,
        zone: str,
        *,
        broker_id: str,
        hosts: Mapping[str, HostHandle],
        options: LibvirtOptions,
        find_server: FindServer,
        server_lock: ServerLock,
    ) -> None:
        super().__init__(zone)
        if options.volume_pool is None:
            raise ValueError("block storage needs a volume_pool")
        self.pool_name = options.volume_pool
        self._options = options
        self._hosts = dict(hosts)
        self._owner = owner_tag(broker_id, zone)
        self._prefix = volume_name(self._owner, "")
        self._broker_id = broker_id
        self._find_server = find_server
        self._server_lock = server_lock
        self._volume_locks = KeyedLocks()
        self._host_locks = KeyedLocks()
        self._define_lock = threading.Lock()
        self._places_lock = threading.Lock()
        self._places: dict[str, str] = {}  # volume uuid -> host, verified on use

    # --- the contract --------------------------------------------------------------

    def storage_capabilities(self) -> StorageCapabilities:
        return StorageCapabilities(shared=False)

    def pools(self) -> Sequence[PoolInfo]:
        """One pool per host that answers; hosts that do not are left out (as from
        ``list_hosts``), and so are a pool not started and a real host without
        ``volume_pool`` (logged: it holds no volumes until the operator defines it).

        :raises TransientError: no host answered.
        """

        def info(handle: HostHandle) -> PoolInfo:
            pool = self._pool(handle, "read storage pool")
            with translated(self.zone, handle.name, f"read storage pool {self.pool_name}"):
                capacity = self._capacity(handle, pool)
                committed = self._committed(handle, pool)
            return PoolInfo(
                name=self._label(handle.name),
                host=handle.name,
                capacity_gb=capacity // GIB,
                extra={"pool": self.pool_name, "committed_gb": -(-committed // GIB)},
            )

        found, failed = on_every_host(list(self._hosts.values()), info)
        missing = [e for e in failed if isinstance(e, _NoPool)]
        if missing:  # that host holds no volumes; the others still do
            LOG.warning("zone %s: %s", self.zone, "; ".join(e.reason for e in missing))
            failed = [e for e in failed if not isinstance(e, _NoPool)]
        for exc in failed:
            if not isinstance(exc, TransientError | AuthError):
                raise exc
        if failed:
            reasons = "; ".join(e.reason for e in failed)
            LOG.warning("zone %s: storage pools left out: %s", self.zone, reasons)
            if not found:
                raise TransientError(self.zone, f"no host's storage pool answered: {reasons}")
        return [p for p in found if p.capacity_gb]  # a pool under 1 GiB holds nothing

    def create_volume(self, spec: VolumeSpec) -> RemoteVolume:
        """A sparse volume of ``spec.size_gb`` GiB in the pool ``spec.pool`` names (None:
        the only host's), in format ``spec.backend`` (``raw`` by default, or ``qcow2``).

        :raises CapacityError: the pool's volumes would outgrow it.
        :raises PermanentError: an id that is not a UUID, another broker's id, a size
            under 1 GiB, an unknown backend or pool, a pool missing on its host.
        :raises TransientError, AuthError: the host cannot be reached.
        """
        uuid = _canonical(spec.uuid)
        if uuid is None:
            raise PermanentError(self.zone, f"volume id {spec.uuid!r} is not a UUID")
        if spec.broker_id != self._broker_id:
            raise PermanentError(
                self.zone,
                f"create volume {uuid}: asked for broker {spec.broker_id!r}; this zone "
                f"serves {self._broker_id!r}",
            )
        if spec.size_gb < 1:
            raise PermanentError(self.zone, f"create volume {uuid}: size {spec.size_gb} GiB")
        fmt = spec.backend or "raw"
        if fmt not in FORMATS:
            raise PermanentError(
                self.zone,
                f"create volume {uuid}: unknown backend {spec.backend!r}; the zone's pools "
                f"make {' or '.join(sorted(FORMATS))} volumes",
            )
        handle = self._host_of_pool(spec.pool, uuid)
        with self._volume_locks.held(uuid):
            found = self._find(uuid, first=handle.name, strict=False)
            if found is not None:
                return self._describe(found, self._attachments(found))
            found = self._make(handle, uuid, spec.size_gb, fmt)
            LOG.info("zone %s: created volume %s on host %s", self.zone, uuid, handle.name)
            return self._describe(found, ())

    def delete_volume(self, uuid: str) -> None:
        """Delete the pool volume; none is success.

        :raises PermanentError: a domain's disk names it (detach it first).
        :raises TransientError, AuthError: a host that may hold it cannot be reached.
        """
        canonical = _canonical(uuid)
        if canonical is None:
            return
        with self._volume_locks.held(canonical):
            found = self._find(canonical)
            if found is None:
                return
            attached = self._attachments(found)
            if attached:
                servers = ", ".join(a.server_uuid for a in attached)
                raise PermanentError(
                    self.zone, f"volume {canonical} is attached to {servers}; detach it first"
                )
            try:
                found.vol.delete(0)
            except libvirt.libvirtError as exc:
                if error_code(exc) != libvirt.VIR_ERR_NO_STORAGE_VOL:
                    raise translate(self.zone, found.host, "delete volume", exc) from exc
            self._forget(canonical)
        LOG.info("zone %s: deleted volume %s from host %s", self.zone, canonical, found.host)

    def get_volume(self, uuid: str) -> RemoteVolume:
        found = self._require(uuid)
        return self._describe(found, self._attachments(found))

    def list_volumes(self, batch_size: int = 500) -> Iterator[Sequence[RemoteVolume]]:
        """The broker's volumes host by host, in uuid order within a host; each host's
        domains are read once for the attachments of all its volumes.

        :raises DriverError: a host cannot be listed; batches already yielded stand.
        """
        listed = (remote for handle in self._hosts.values() for remote in self._listed(handle))
        yield from batched(listed, batch_size)

    def attach_volume(self, uuid: str, server_uuid: str, device: str | None) -> RemoteAttachment:
        """Plug the volume into the server's domain as ``device`` (see the module
        docstring for names and for hypervisors without hot-plug).

        :raises VolumeNotFound: no such volume.
        :raises InstanceNotFound: no such server in the zone.
        :raises PermanentError: the server is on another host than the volume, the volume
            is attached to another server, ``device`` is no disk name or is taken, no
            ``vdX`` name is free.
        :raises TransientError, AuthError:
        """
        target = None if device is None else target_device(device)
        if device is not None and target is None:
            raise PermanentError(self.zone, f"device {device!r} is not a disk name like /dev/vdc")
        canonical = self._canonical_volume(uuid)
        with self._volume_locks.held(canonical):
            found = self._require(canonical)
            server = _canonical(server_uuid)
            if server is None:
                raise InstanceNotFound(self.zone, f"no instance {server_uuid!r}")
            with self._server_lock(server):
                owned = self._find_server(server, "attach volume")
                if owned.host != found.host:
                    raise PermanentError(
                        self.zone,
                        f"volume {canonical} is in the pool of host {found.host}, server "
                        f"{server} is on host {owned.host}: host-local volumes attach only "
                        "to servers on their own host",
                    )
                attached = self._attachments(found)
                for attachment in attached:
                    if attachment.server_uuid == server:
                        return attachment
                if attached:
                    raise PermanentError(
                        self.zone,
                        f"volume {canonical} is attached to server {attached[0].server_uuid}",
                    )
                persistent, live = self._definitions(owned)
                target = self._choose_target(owned, target, {d.target for d in persistent + live})
                xml = str(self._call(found, "read volume", found.vol.XMLDesc, 0))
                fmt = volume_format(xml, "raw")
                disk = data_disk_xml(
                    self.pool_name, found.name, target, fmt, canonical[:_SERIAL_CHARS]
                )
                self._plug(owned, disk)
        LOG.info("zone %s: attached volume %s to %s as %s", self.zone, canonical, server, target)
        return RemoteAttachment(server_uuid=server, device=f"/dev/{target}")

    def detach_volume(self, uuid: str, server_uuid: str) -> None:
        """Unplug the volume from the server's domain; not attached there (or no such
        server) is success.

        :raises VolumeNotFound: no such volume.
        :raises TransientError, AuthError, PermanentError:
        """
        canonical = self._canonical_volume(uuid)
        with self._volume_locks.held(canonical):
            found = self._require(canonical)
            server = _canonical(server_uuid)
            if server is None:
                return
            with self._server_lock(server):
                try:
                    owned = self._find_server(server, "detach volume")
                except InstanceNotFound:
                    return
                if owned.host != found.host:
                    return
                path = self._path(found)
                persistent, live = self._definitions(owned)
                in_config = [d for d in persistent if self._names(d, found.name, path)]
                in_live = [d for d in live if self._names(d, found.name, path)]
                if not in_config and not in_live:
                    return
                self._unplug(owned, in_config, in_live)
        LOG.info("zone %s: detached volume %s from %s", self.zone, canonical, server)

    # --- pools -----------------------------------------------------------------------

    def _label(self, host: str) -> str:
        return f"{host}/{self.pool_name}"

    def _host_of_pool(self, pool: str | None, uuid: str) -> HostHandle:
        if pool is None:
            if len(self._hosts) == 1:
                return next(iter(self._hosts.values()))
            raise PermanentError(self.zone, f"create volume {uuid}: no pool chosen")
        host, _, name = pool.partition("/")
        handle = self._hosts.get(host)
        if handle is None or name != self.pool_name:
            raise PermanentError(self.zone, f"create volume {uuid}: unknown pool {pool!r}")
        return handle

    def _pool(self, handle: HostHandle, op: str) -> libvirt.virStoragePool:
        """The host's ``volume_pool``, defined and started first on a test host.

        :raises _NoPool: a real host has no such pool.
        :raises TransientError: the pool is not started (the operator may start it; the
            host is left out of :meth:`pools` meanwhile), or the host cannot be reached.
        """
        conn = handle.connection()
        if self._options.on_test_driver(handle.uri):
            return self._test_pool(handle, conn, op)
        with translated(self.zone, handle.name, op):
            try:
                pool = conn.storagePoolLookupByName(self.pool_name)
            except libvirt.libvirtError as exc:
                if error_code(exc) != libvirt.VIR_ERR_NO_STORAGE_POOL:
                    raise
                raise _NoPool(
                    self.zone,
                    f"host {handle.name}: no storage pool {self.pool_name!r}; define and "
                    "start it (or set volume_pool to another pool, or none)",
                ) from exc
            if not pool.isActive():
                raise TransientError(
                    self.zone, f"host {handle.name}: storage pool {self.pool_name} is not active"
                )
        return pool

    def _pool_if_any(self, handle: HostHandle, op: str) -> libvirt.virStoragePool | None:
        """The host's pool, or None when a real host has none (so it holds no volumes)."""
        try:
            return self._pool(handle, op)
        except _NoPool:
            return None

    def _test_pool(
        self, handle: HostHandle, conn: libvirt.virConnect, op: str
    ) -> libvirt.virStoragePool:
        """The test host's pool, defined and started when it is not (under one lock, so
        concurrent first calls define and start it once)."""
        with self._define_lock, translated(self.zone, handle.name, op):
            try:
                pool = conn.storagePoolLookupByName(self.pool_name)
            except libvirt.libvirtError as exc:
                if error_code(exc) != libvirt.VIR_ERR_NO_STORAGE_POOL:
                    raise
                pool = conn.storagePoolDefineXML(pool_xml(self.pool_name, f"/{self.pool_name}"))
                LOG.info("zone %s: defined pool %s on %s", self.zone, self.pool_name, handle.name)
            if not pool.isActive():
                pool.create(0)
            return pool

    def _capacity(self, handle: HostHandle, pool: libvirt.virStoragePool) -> int:
        """The pool's size in bytes (see the module docstring for test hosts)."""
        if self._options.on_test_driver(handle.uri):
            return self._options.volume_pool_gb * GIB
        return int(pool.info()[1])

    def _committed(self, handle: HostHandle, pool: libvirt.virStoragePool) -> int:
        """The capacities of every volume in the pool (the broker's or not), in bytes."""
        total = 0
        for vol in pool.listAllVolumes(0):
            try:
                total += int(vol.info()[1])
            except libvirt.libvirtError as exc:
                if error_code(exc) != libvirt.VIR_ERR_NO_STORAGE_VOL:
                    raise translate(self.zone, handle.name, "read volume", exc) from exc
        return total

    # --- volumes ---------------------------------------------------------------------

    def _make(self, handle: HostHandle, uuid: str, size_gb: int, fmt: str) -> _Found:
        pool = self._pool(handle, "create volume")
        name = volume_name(self._owner, uuid)
        size = size_gb * GIB
        op = f"create volume in pool {self.pool_name}"
        with self._host_locks.held(handle.name), translated(self.zone, handle.name, op):
            capacity = self._capacity(handle, pool)
            committed = self._committed(handle, pool)
            if committed + size > capacity:
                raise CapacityError(
                    self.zone,
                    f"host {handle.name}: pool {self.pool_name}: {size_gb} GiB asked, "
                    f"{max(capacity - committed, 0) // GIB} of {capacity // GIB} GiB free",
                )
            try:
                vol = pool.createXML(data_volume_xml(name, size, fmt), 0)
            except libvirt.libvirtError:
                # Another process made it meanwhile (libvirt refuses the name then); the
                # per-uuid lock keeps this process's own creates apart.
                vol = self._volume_named(pool, name)
                if vol is None:
                    raise
        return self._remembered(_Found(uuid, handle, vol))

    @staticmethod
    def _volume_named(pool: libvirt.virStoragePool, name: str) -> libvirt.virStorageVol | None:
        """The pool's volume ``name``; None when there is none."""
        try:
            return pool.storageVolLookupByName(name)
        except libvirt.libvirtError as exc:
            if error_code(exc) == libvirt.VIR_ERR_NO_STORAGE_VOL:
                return None
            raise

    def _canonical_volume(self, uuid: str) -> str:
        canonical = _canonical(uuid)
        if canonical is None:
            raise VolumeNotFound(self.zone, f"no volume {uuid!r}")
        return canonical

    def _require(self, uuid: str) -> _Found:
        """:raises VolumeNotFound: no host that answered holds it, and all answered."""
        canonical = self._canonical_volume(uuid)
        found = self._find(canonical)
        if found is None:
            raise VolumeNotFound(self.zone, f"no volume {canonical}")
        return found

    def _find(self, uuid: str, *, first: str | None = None, strict: bool = True) -> _Found | None:
        """Broker volume ``uuid``: on ``first``, where it was last seen, then every host.

        :raises TransientError: not on the hosts that answered, some did not, ``strict``.
        """
        name = volume_name(self._owner, uuid)
        cached = self._place_of(uuid)
        order = sorted(self._hosts, key=lambda h: (h != first, h != cached))
        unreachable: list[DriverError] = []
        for host in order:
            handle = self._hosts[host]
            try:
                pool = self._pool_if_any(handle, "look up volume")
                with translated(self.zone, host, "look up volume"):
                    vol = None if pool is None else self._volume_named(pool, name)
            except (TransientError, AuthError) as exc:
                unreachable.append(exc)
                continue
            if vol is not None:
                return self._remembered(_Found(uuid, handle, vol))
        self._forget(uuid)
        if unreachable:
            reasons = "; ".join(e.reason for e in unreachable)
            if strict:
                raise TransientError(
                    self.zone, f"volume {uuid}: not on the hosts that answered; {reasons}"
                )
            LOG.warning("zone %s: volume %s: hosts not asked: %s", self.zone, uuid, reasons)
        return None

    def _listed(self, handle: HostHandle) -> Iterator[RemoteVolume]:
        pool = self._pool_if_any(handle, "list volumes")
        if pool is None:
            return
        with translated(self.zone, handle.name, "list volumes"):
            vols = pool.listAllVolumes(0)
        ours = sorted(
            (uuid, vol) for vol in vols if (uuid := self._uuid_of(str(vol.name()))) is not None
        )
        if not ours:
            return
        found: list[_Found] = []
        paths: dict[str, str | None] = {}
        for uuid, vol in ours:
            volume = _Found(uuid, handle, vol)
            try:
                paths[volume.name] = self._path(volume)
            except VolumeNotFound:
                continue  # deleted since the listing
            found.append(volume)
        attached = self._attached_on(handle, paths)
        for volume in found:
            try:
                remote = self._describe(volume, attached.get(volume.name, ()))
            except VolumeNotFound:
                continue  # deleted since the listing
            self._remembered(volume)
            yield remote

    def _uuid_of(self, name: str) -> str | None:
        if not name.startswith(self._prefix):
            return None
        rest = name[len(self._prefix) :]
        return rest if _canonical(rest) == rest else None

    def _call(self, found: _Found, op: str, fn: Callable[..., Any], *args: object) -> Any:
        """``fn(*args)``, a call on the volume; a volume gone raises VolumeNotFound."""
        try:
            return fn(*args)
        except libvirt.libvirtError as exc:
            if error_code(exc) == libvirt.VIR_ERR_NO_STORAGE_VOL:
                raise VolumeNotFound(self.zone, f"no volume {found.uuid}") from exc
            raise translate(self.zone, found.host, op, exc) from exc

    def _path(self, found: _Found) -> str:
        return str(self._call(found, "read volume", found.vol.path))

    def _describe(self, found: _Found, attachments: Sequence[RemoteAttachment]) -> RemoteVolume:
        _kind, capacity, allocation = self._call(found, "read volume", found.vol.info)
        xml = str(self._call(found, "read volume", found.vol.XMLDesc, 0))
        return RemoteVolume(
            uuid=found.uuid,
            remote_id=f"{found.host}/{self.pool_name}/{found.name}",
            size_gb=-(-int(capacity) // GIB),
            state=VolumeState.IN_USE if attachments else VolumeState.AVAILABLE,
            pool=self._label(found.host),
            attachments=tuple(attachments),
            created_at=volume_created_at(xml),
            extra={
                "host": found.host,
                "pool": self.pool_name,
                "volume": found.name,
                "path": self._path(found),
                "format": volume_format(xml, "raw"),
                "allocation_bytes": int(allocation),
            },
        )

    # --- attachments -----------------------------------------------------------------

    def _attachments(self, found: _Found) -> tuple[RemoteAttachment, ...]:
        return self._attached_on(found.handle, {found.name: self._path(found)}).get(found.name, ())

    def _attached_on(
        self, handle: HostHandle, volumes: Mapping[str, str | None]
    ) -> dict[str, tuple[RemoteAttachment, ...]]:
        """For volumes (name -> path) of the host's pool, the domains whose disks name
        them: every domain of the host, the broker's or not."""
        conn = handle.connection()
        with translated(self.zone, handle.name, "list domains"):
            domains = conn.listAllDomains(0)
        by_path = {path: name for name, path in volumes.items() if path}
        seen: dict[str, dict[str, str]] = {}  # volume -> server -> device
        for dom in domains:
            try:
                server = str(dom.UUIDString())
                persistent, live = self._read_definitions(dom)
            except libvirt.libvirtError as exc:
                if error_code(exc) == libvirt.VIR_ERR_NO_DOMAIN:
                    continue  # undefined since the listing
                raise translate(self.zone, handle.name, "read domain", exc) from exc
            for disk in persistent + live:
                name = disk.volume if disk.pool == self.pool_name else by_path.get(disk.file or "")
                if name in volumes and name is not None:
                    seen.setdefault(name, {}).setdefault(server, f"/dev/{disk.target}")
        return {
            name: tuple(RemoteAttachment(s, d) for s, d in sorted(servers.items()))
            for name, servers in seen.items()
        }

    def _names(self, disk: DiskRef, name: str, path: str) -> bool:
        """Whether ``disk`` is volume ``name`` (at ``path``) of the pool."""
        return (disk.pool, disk.volume) == (self.pool_name, name) or disk.file == path

    @staticmethod
    def _read_definitions(dom: libvirt.virDomain) -> tuple[list[DiskRef], list[DiskRef]]:
        """The disks of the domain's persistent definition, and of its live one while it
        runs (none when it is shut off: its live definition is the persistent one)."""
        persistent = domain_disks(str(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)))
        live = domain_disks(str(dom.XMLDesc(0))) if dom.isActive() else []
        return persistent, live

    def _definitions(self, owned: OwnedDomain) -> tuple[list[DiskRef], list[DiskRef]]:
        return owned.call("read domain", lambda: self._read_definitions(owned.dom))

    def _choose_target(self, owned: OwnedDomain, asked: str | None, taken: set[str]) -> str:
        if asked is not None:
            if asked in taken:
                raise PermanentError(
                    self.zone, f"server {owned.uuid} already has a disk /dev/{asked}"
                )
            return asked
        for target in _FREE_TARGETS:
            if target not in taken:
                return target
        raise PermanentError(self.zone, f"server {owned.uuid} has no free disk name left")

    def _plug(self, owned: OwnedDomain, disk: str) -> None:
        """Attach ``disk`` to the persistent definition, and the live one if it runs."""
        active = owned.call("read domain state", owned.dom.isActive)
        flags = _CONFIG | (_LIVE if active else 0)
        try:
            owned.dom.attachDeviceFlags(disk, flags)
        except libvirt.libvirtError as exc:
            if error_code(exc) not in UNSUPPORTED:
                raise translate(self.zone, owned.host, "attach disk", exc) from exc
            self._redefine(owned, "attach disk", lambda xml: with_device(xml, disk))

    def _unplug(self, owned: OwnedDomain, in_config: list[DiskRef], in_live: list[DiskRef]) -> None:
        """Detach the disk from the definitions that hold it (``in_config``, ``in_live``)."""
        flags = (_CONFIG if in_config else 0) | (_LIVE if in_live else 0)
        disk = (in_config or in_live)[0]
        try:
            owned.dom.detachDeviceFlags(disk.element, flags)
        except libvirt.libvirtError as exc:
            if error_code(exc) not in UNSUPPORTED:
                raise translate(self.zone, owned.host, "detach disk", exc) from exc
            if in_config:
                targets = {d.target for d in in_config}

                def edit(xml: str) -> str:
                    for target in targets:
                        xml = without_disk(xml, target)
                    return xml

                self._redefine(owned, "detach disk", edit)
            if in_live:
                LOG.warning(
                    "zone %s: host %s cannot unplug a disk from running %s; it keeps %s "
                    "until it stops",
                    self.zone,
                    owned.host,
                    owned.uuid,
                    disk.target,
                )

    def _redefine(self, owned: OwnedDomain, op: str, edit: Callable[[str], str]) -> None:
        """Define the domain again with ``edit`` applied to its persistent definition (for
        a hypervisor without device hot-plug: the test driver)."""
        with translated(self.zone, owned.host, op):
            if not owned.dom.isPersistent():
                raise PermanentError(
                    self.zone, f"host {owned.host}: {op}: {owned.uuid} is not persistent"
                )
            flags = libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE
            xml = str(owned.dom.XMLDesc(flags))
            owned.handle.connection().defineXML(edit(xml))

    # --- where volumes were seen -----------------------------------------------------

    def _place_of(self, uuid: str) -> str | None:
        with self._places_lock:
            return self._places.get(uuid)

    def _remembered(self, found: _Found) -> _Found:
        with self._places_lock:
            self._places[found.uuid] = found.host
        return found

    def _forget(self, uuid: str) -> None:
        with self._places_lock:
            self._places.pop(uuid, None)


class _NoPool(PermanentError):
    """A real host has no ``volume_pool``."""
