"""The ``libvirt`` driver: a local zone whose hosts are libvirt hypervisors.

The broker's scheduler picks the host (``Capabilities.host_scheduling``); the driver
defines and starts a domain there whose UUID is the broker's instance uuid and whose
``<metadata>`` records the broker id, zone, project, flavor, image and the instance's
own metadata (see :mod:`drivers.libvirt.domainxml`). That metadata is the driver's
memory: a domain is the broker's only when it names this broker and zone, so domains
defined by hand or by another broker on the same hypervisors are never listed, changed
or deleted.

libvirt does not enforce capacity: a test host accepts a 10 TiB domain. The broker's
own accounting is the authority; :meth:`LibvirtDriver.list_hosts` reports each host's
totals and nothing else.

Of the contract's optional parts the driver has:

* :meth:`~LibvirtDriver.pause`, :meth:`~LibvirtDriver.unpause` (freeze in memory),
  :meth:`~LibvirtDriver.suspend` and :meth:`~LibvirtDriver.resume` (save to disk with
  libvirt's managed save, and restore);
* :meth:`~LibvirtDriver.migrate`: cold migration to another host;
* :meth:`~LibvirtDriver.watch`: lifecycle events of the broker's domains;
* :meth:`~LibvirtDriver.block_storage`: data volumes in each host's ``volume_pool``
  (:mod:`drivers.libvirt.blockstorage`), attached as virtio disks.

Beyond the contract, :meth:`~LibvirtDriver.ex_connection` gives a host's ``virConnect``,
for operators and tests.

Time is injectable: replace :attr:`~LibvirtDriver.sleep`, :attr:`~LibvirtDriver.monotonic`
and :attr:`~LibvirtDriver.clock` on an instance.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid as uuidlib
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import ClassVar

import libvirt

from drivers.libvirt.blockstorage import LibvirtBlockStorage
from drivers.libvirt.connection import HostHandle, Opener, on_every_host
from drivers.libvirt.domain import OwnedDomain, discard
from drivers.libvirt.domainxml import BrokerMetadata, domain_disks, domain_xml, parse_metadata
from drivers.libvirt.errors import error_code, translate, translated
from drivers.libvirt.events import EventDispatcher, Watcher, ensure_runtime
from drivers.libvirt.options import LibvirtOptions
from drivers.libvirt.states import RUNNING_STATES, domain_state
from drivers.libvirt.volumes import create_root_volume, delete_root_volume
from federator.driver import (
    AuthError,
    Capabilities,
    Driver,
    DriverError,
    DriverOptions,
    HostInfo,
    InstanceNotFound,
    InstanceSpec,
    PermanentError,
    RemoteInstance,
    TransientError,
    ZoneContext,
    ZoneHealth,
)
from federator.exception import ConfigError
from federator.keyedlocks import KeyedLocks

__all__ = ["LibvirtDriver"]

LOG = logging.getLogger(__name__)

# Deleted uuids remembered so their UNDEFINED event can still be told ours.
_TOMBSTONES = 4096
GIB = 1024**3


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _canonical(uuid: str) -> str | None:
    """``uuid`` in libvirt's form (lowercase, dashed), or ``None`` when it is not one."""
    try:
        return str(uuidlib.UUID(uuid))
    except ValueError:
        return None


class LibvirtDriver(Driver):
    """A zone of libvirt hosts; see the module docstring and :class:`LibvirtOptions`."""

    options_model: ClassVar[type[DriverOptions]] = LibvirtOptions
    sleep: Callable[[float], None] = staticmethod(time.sleep)
    monotonic: Callable[[], float] = staticmethod(time.monotonic)
    clock: Callable[[], datetime] = staticmethod(_utc_now)

    def __init__(self, context: ZoneContext, *, opener: Opener = libvirt.open) -> None:
        """Prepare one handle per host; connections open on first use.

        :param opener: opens a connection for a URI (``libvirt.open``).
        """
        super().__init__(context)
        opts = context.options
        self.options = (
            opts
            if isinstance(opts, LibvirtOptions)
            else LibvirtOptions.model_validate(opts.model_dump())
        )
        ensure_runtime()  # before any connection opens, or it delivers no events
        keepalive = (self.options.keepalive_interval, self.options.keepalive_count)
        self._hosts: dict[str, HostHandle] = {
            name: HostHandle(self.zone, name, uri, keepalive=keepalive, opener=opener)
            for name, uri in self.options.hosts.items()
        }
        self._locks = KeyedLocks()
        self._places_lock = threading.Lock()
        self._places: dict[str, str] = {}  # uuid -> host, verified on use
        self._tombstones: OrderedDict[str, str] = OrderedDict()
        self._images: Mapping[str, str] = dict(self.options.image_volumes)
        self._events: EventDispatcher | None = None
        self._events_lock = threading.Lock()
        self._storage: LibvirtBlockStorage | None = None
        self._storage_lock = threading.Lock()

    # --- start-up check ------------------------------------------------------------

    def validate_catalog(self, flavors: Sequence[str], images: Mapping[str, str]) -> None:
        """With a ``storage_pool``, every image needs a base volume in ``image_volumes``
        (keyed by image id or name); images mapped by name are remembered by id.

        :raises ConfigError: naming every unmapped image.
        """
        if self.options.storage_pool is None:
            return
        mapped = self.options.image_volumes
        resolved: dict[str, str] = dict(mapped)
        missing = []
        for image_id, name in images.items():
            if image_id in mapped:
                continue
            if name in mapped:
                resolved[image_id] = mapped[name]
            else:
                missing.append(f"{image_id} ({name})" if name != image_id else image_id)
        if missing:
            raise ConfigError(
                reason=f"zone {self.zone!r} (driver 'libvirt'): images without a base volume "
                f"in image_volumes: {', '.join(sorted(missing))}"
            )
        self._images = resolved

    # --- the contract --------------------------------------------------------------

    def capabilities(self) -> Capabilities:
        return Capabilities(
            host_scheduling=True,
            start_stop=True,
            reboot=True,
            pause_suspend=True,
            cold_migrate=self.options.storage_pool is None,
        )

    def list_hosts(self) -> Sequence[HostInfo]:
        """Every host that answers, sized from ``virNodeGetInfo``.

        Disk is ``host_disk_gb`` for the host when given, else the ``storage_pool``'s
        capacity when a pool is configured, else ``disk_gb``.

        A host that cannot be reached is left out, so the broker stops scheduling onto it
        until it answers again.

        :raises TransientError: no host answered.
        """

        def info(handle: HostHandle) -> HostInfo:
            conn = handle.connection()
            with translated(self.zone, handle.name, "read host info"):
                model, memory_mb, cpus, mhz, *_ = conn.getInfo()
                hypervisor = conn.getType()
            return HostInfo(
                name=handle.name,
                vcpus=int(cpus),
                ram_mb=int(memory_mb),
                disk_gb=self._disk_gb(handle, conn),
                extra={
                    "uri": handle.shown_uri,
                    "hypervisor": str(hypervisor),
                    "cpu_model": str(model),
                    "cpu_mhz": int(mhz),
                },
            )

        found, failed = on_every_host(list(self._hosts.values()), info)
        if failed:
            LOG.warning("zone %s: hosts left out: %s", self.zone, _reasons(failed))
            if not found:
                raise TransientError(self.zone, f"no host answered: {_reasons(failed)}")
        return found

    def create(self, spec: InstanceSpec) -> RemoteInstance:
        """Define and start a domain for ``spec`` on ``spec.host``; idempotent on the uuid.

        A domain of this zone with the uuid already on the host (or wherever a previous
        create put it) is returned, started first if it is shut off. On failure nothing is
        left defined and no volume is left behind.

        :raises PermanentError: no or an unknown host, another broker's id, a uuid that is
            not a UUID or that a domain outside this zone uses, a definition libvirt refuses.
        :raises CapacityError: the host ran out of memory or disk while creating it.
        :raises TransientError: the host cannot be reached now.
        :raises AuthError: the host's daemon refused the connection.
        """
        uuid = _canonical(spec.uuid)
        if uuid is None:
            raise PermanentError(self.zone, f"instance id {spec.uuid!r} is not a UUID")
        if spec.host is None:
            raise PermanentError(self.zone, f"create {uuid}: no host chosen")
        handle = self._hosts.get(spec.host)
        if handle is None:
            raise PermanentError(self.zone, f"create {uuid}: unknown host {spec.host!r}")
        if spec.broker_id != self.context.broker_id:
            raise PermanentError(
                self.zone,
                f"create {uuid}: asked for broker {spec.broker_id!r}; this zone serves "
                f"{self.context.broker_id!r}",
            )
        with self._locks.held(uuid):
            found = self._existing(handle, uuid)
            if found is None:
                found = self._define_and_start(handle, spec, uuid)
                LOG.info("zone %s: created %s on host %s", self.zone, uuid, handle.name)
            elif found.state() == libvirt.VIR_DOMAIN_SHUTOFF:
                found.start()
            self._remember(uuid, found.host)
            return found.describe(self.options.network)

    def delete(self, uuid: str) -> None:
        """Destroy and undefine the domain, and delete its root volume; none is success.

        :raises TransientError: a host that may hold it cannot be reached.
        """
        canonical = _canonical(uuid)
        if canonical is None:
            return
        with self._locks.held(canonical):
            try:
                found = self._locate(canonical, "delete")
            except InstanceNotFound:
                return
            found.destroy()
            found.undefine()
            if self.options.storage_pool is not None:
                delete_root_volume(self.zone, found.handle, self.options.storage_pool, canonical)
            self._forget(canonical, deleted_from=found.host)
        LOG.info("zone %s: deleted %s from host %s", self.zone, canonical, found.host)

    def get(self, uuid: str) -> RemoteInstance:
        canonical = _canonical(uuid)
        if canonical is None:
            raise InstanceNotFound(self.zone, f"no instance {uuid!r}")
        return self._locate(canonical, "get").describe(self.options.network)

    def list_instances(self, batch_size: int = 500) -> Iterator[Sequence[RemoteInstance]]:
        """This zone's domains on every host, host by host, in uuid order within a host.

        :raises DriverError: a host cannot be listed; batches already yielded stand.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        batch: list[RemoteInstance] = []
        for handle in self._hosts.values():
            conn = handle.connection()
            with translated(self.zone, handle.name, "list domains"):
                domains = sorted(conn.listAllDomains(0), key=lambda d: str(d.UUIDString()))
            for dom in domains:
                try:
                    meta = self._metadata(handle, dom, "list domains")
                    if meta is None:
                        continue
                    remote = OwnedDomain(self.zone, handle, dom, meta).describe(
                        self.options.network
                    )
                except InstanceNotFound:
                    continue  # undefined since the listing
                self._remember(remote.uuid, handle.name)
                batch.append(remote)
                if len(batch) == batch_size:
                    yield batch
                    batch = []
        if batch:
            yield batch

    def start(self, uuid: str) -> RemoteInstance:
        """Boot a shut-off domain (restoring a managed save); no-op when it runs.

        A paused domain stays paused (``unpause`` resumes it); a crashed one is destroyed
        and booted.
        """

        def act(found: OwnedDomain) -> None:
            state = found.state()
            if state == libvirt.VIR_DOMAIN_CRASHED:
                found.destroy()
                state = libvirt.VIR_DOMAIN_SHUTOFF
            if state == libvirt.VIR_DOMAIN_SHUTOFF:
                found.start()

        return self._act(uuid, "start", act)

    def stop(self, uuid: str) -> RemoteInstance:
        """Ask the guest to shut down, wait up to ``stop_timeout``, then destroy it.

        A paused, crashed or PM-suspended guest cannot act on the request and is destroyed
        at once. No-op when the domain is shut off.
        """

        def act(found: OwnedDomain) -> None:
            found.power_off(
                timeout=self.options.stop_timeout,
                interval=self.options.stop_poll_interval,
                sleep=self.sleep,
                monotonic=self.monotonic,
            )

        return self._act(uuid, "stop", act)

    def reboot(self, uuid: str, *, hard: bool = False) -> RemoteInstance:
        """Reboot; the domain ends running.

        Soft asks the guest (``virDomainReboot``); hard resets the virtual machine
        (``virDomainReset``, or destroy and start where reset is unsupported). A shut-off
        domain boots afresh (any managed save image is discarded); a paused, crashed or
        PM-suspended one is destroyed and booted.
        """

        def act(found: OwnedDomain) -> None:
            state = found.state()
            if state not in RUNNING_STATES:
                found.destroy()
                found.boot_fresh()
            elif hard or not found.attempt("reboot domain", lambda: found.dom.reboot(0)):
                found.reset()

        return self._act(uuid, "reboot", act)

    def health(self) -> ZoneHealth:
        """Every host's connection is opened if needed and asked for libvirt's version.

        ``ok`` while at least one host answers (the others are left out of
        :meth:`list_hosts`, so the broker stops using them); ``detail`` names the hosts
        that do not, by their configured names, never their URIs.
        """

        def probe(handle: HostHandle) -> str:
            conn = handle.connection()
            with translated(self.zone, handle.name, "probe"):
                conn.getLibVersion()
            return handle.name

        try:
            alive, failed = on_every_host(list(self._hosts.values()), probe)
        except Exception as exc:  # health never raises
            return ZoneHealth(ok=False, detail=f"health probe failed: {type(exc).__name__}")
        total = len(self._hosts)
        if not failed:
            return ZoneHealth(ok=True, detail=f"{total} of {total} hosts reachable")
        detail = f"{len(alive)} of {total} hosts reachable; unreachable: {_reasons(failed)}"
        return ZoneHealth(ok=bool(alive), detail=detail)

    def block_storage(self) -> LibvirtBlockStorage | None:
        """The zone's data volumes, in every host's ``volume_pool``; None when
        ``volume_pool`` is none. Made on first call, the same object after."""
        if self.options.volume_pool is None:
            return None
        with self._storage_lock:
            if self._storage is None:
                self._storage = LibvirtBlockStorage(
                    self.zone,
                    broker_id=self.context.broker_id,
                    hosts=self._hosts,
                    options=self.options,
                    find_server=self._locate,
                    server_lock=self._locks.held,
                )
            return self._storage

    def close(self) -> None:
        with self._events_lock:
            if self._events is not None:
                self._events.stop()
                self._events = None
        for handle in self._hosts.values():
            handle.close()

    # --- cold migration (capability ``cold_migrate``) ---------------------------------

    def migrate(self, uuid: str, host: str) -> RemoteInstance:
        """Move a shut-off domain to ``host``: define its persistent XML there, then
        undefine it on its source; if that fails the copy on ``host`` is undefined again.

        Only without ``storage_pool``: a root volume lives in its host's pool and is not
        copied, so a zone with volumes has no ``cold_migrate`` capability.

        :raises PermanentError: volumes are configured, ``host`` is unknown, the domain
            is not shut off (running, paused, or suspended with a saved memory image), or a
            data volume is attached (it lives in its host's pool and cannot follow).
        """
        canonical = _canonical(uuid)
        if canonical is None:
            raise InstanceNotFound(self.zone, f"no instance {uuid!r}")
        if self.options.storage_pool is not None:
            raise PermanentError(self.zone, "instances with root volumes cannot be moved")
        target = self._hosts.get(host)
        if target is None:
            raise PermanentError(self.zone, f"migrate {canonical}: unknown host {host!r}")
        with self._locks.held(canonical):
            found = self._locate(canonical, "migrate")
            if found.host == host:
                return found.describe(self.options.network)
            state = found.state()
            if state != libvirt.VIR_DOMAIN_SHUTOFF or found.has_saved_state():
                shown = domain_state(state, managed_save=found.has_saved_state()).power_state
                raise PermanentError(
                    self.zone, f"migrate {canonical}: stop it first (it is {shown})"
                )
            xml = found.call(
                "read domain definition", lambda: found.dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
            )
            volume_pool = self.options.volume_pool
            if volume_pool is not None and any(
                d.pool == volume_pool for d in domain_disks(str(xml))
            ):
                raise PermanentError(
                    self.zone, f"migrate {canonical}: detach its volumes first (host-local)"
                )
            conn = target.connection()
            with translated(self.zone, host, "define domain"):
                copy = conn.defineXML(xml)
            try:
                found.undefine()
            except DriverError:
                with contextlib.suppress(libvirt.libvirtError):
                    copy.undefine()
                raise
            self._forget(canonical, deleted_from=found.host)
            self._remember(canonical, host)
            moved = self._lookup(target, canonical, "migrate")
            if moved is None:
                raise PermanentError(self.zone, f"migrate {canonical}: lost on {host}")
        LOG.info("zone %s: moved %s from %s to %s", self.zone, canonical, found.host, host)
        return moved.describe(self.options.network)

    # --- pause, unpause, suspend, resume (capability ``pause_suspend``) ----------------

    def pause(self, uuid: str) -> RemoteInstance:
        """Freeze a running domain in memory (``virDomainSuspend``); no-op when paused.

        The domain is then ``PAUSED``.

        :raises PermanentError: the domain is not running.
        """

        def act(found: OwnedDomain) -> None:
            state = found.state()
            if state != libvirt.VIR_DOMAIN_PAUSED:
                found.require_state(state, RUNNING_STATES, "pause")
                found.call("pause domain", found.dom.suspend)

        return self._act(uuid, "pause", act)

    def unpause(self, uuid: str) -> RemoteInstance:
        """Let a paused domain run again (``virDomainResume``); no-op when running.

        :raises PermanentError: the domain is neither paused nor running.
        """

        def act(found: OwnedDomain) -> None:
            state = found.state()
            if state not in RUNNING_STATES:
                found.require_state(state, {libvirt.VIR_DOMAIN_PAUSED}, "unpause")
                found.call("unpause domain", found.dom.resume)

        return self._act(uuid, "unpause", act)

    def suspend(self, uuid: str) -> RemoteInstance:
        """Save a running or paused domain's memory to disk and stop it (managed save).

        The domain is then ``SUSPENDED`` (``extra["power_state"] == "suspended"``);
        ``resume`` or ``start`` restores it. No-op when already suspended.

        :raises PermanentError: the domain is shut off without a saved state.
        """

        def act(found: OwnedDomain) -> None:
            state = found.state()
            if state == libvirt.VIR_DOMAIN_SHUTOFF and found.has_saved_state():
                return
            found.require_state(state, RUNNING_STATES | {libvirt.VIR_DOMAIN_PAUSED}, "suspend")
            found.call("suspend domain", lambda: found.dom.managedSave(0))

        return self._act(uuid, "suspend", act)

    def resume(self, uuid: str) -> RemoteInstance:
        """Restore a suspended domain from its saved state; no-op when running.

        :raises PermanentError: the domain is paused, or shut off without a saved state.
        """

        def act(found: OwnedDomain) -> None:
            state = found.state()
            if state in RUNNING_STATES:
                return
            if state != libvirt.VIR_DOMAIN_SHUTOFF or not found.has_saved_state():
                shown = domain_state(state).power_state
                raise PermanentError(self.zone, f"cannot resume {found.uuid} while it is {shown}")
            found.start()

        return self._act(uuid, "resume", act)

    # --- events, and beyond the contract: operator helpers -------------------------

    def watch(self, callback: Watcher) -> Callable[[], None]:
        """Call ``callback(uuid, PowerState)`` for lifecycle events of this zone's domains.

        Events come from every host, in the order each host raised them, on one thread
        of this driver; the callback must not block for long. Returns the function that
        stops the calls. A host that cannot be reached now delivers events once it
        connects.
        """
        with self._events_lock:
            if self._events is None:
                self._events = EventDispatcher(self.zone, self._owned_for_event)
            dispatcher = self._events
        cancel = dispatcher.add(callback)
        for handle in self._hosts.values():
            try:
                handle.watch(dispatcher.put)  # also registers again after a reconnect
                handle.connection()
            except DriverError as exc:
                LOG.warning("zone %s: events start once it connects: %s", self.zone, exc.reason)
        return cancel

    def ex_connection(self, host: str) -> libvirt.virConnect:
        """The live connection to ``host`` (a configured host name).

        :raises PermanentError: ``host`` is not a host of this zone.
        """
        handle = self._hosts.get(host)
        if handle is None:
            raise PermanentError(self.zone, f"unknown host {host!r}")
        return handle.connection()

    # --- finding domains -------------------------------------------------------------

    def _metadata(
        self, handle: HostHandle, dom: libvirt.virDomain, op: str
    ) -> BrokerMetadata | None:
        """The broker metadata of ``dom`` when it belongs to this broker's zone, else None."""
        try:
            text = dom.metadata(
                libvirt.VIR_DOMAIN_METADATA_ELEMENT, self.options.metadata_namespace, 0
            )
        except libvirt.libvirtError as exc:
            if error_code(exc) == libvirt.VIR_ERR_NO_DOMAIN_METADATA:
                return None
            raise translate(self.zone, handle.name, op, exc) from exc
        meta = parse_metadata(str(text))
        if meta is None or (meta.broker_id, meta.zone) != (self.context.broker_id, self.zone):
            return None
        return meta

    def _lookup(self, handle: HostHandle, uuid: str, op: str) -> OwnedDomain | None:
        """The domain with ``uuid`` on ``handle``'s host, if there is one.

        :raises _Foreign: a domain outside this zone has the uuid.
        """
        conn = handle.connection()
        try:
            with translated(self.zone, handle.name, op):
                dom = conn.lookupByUUIDString(uuid)
        except InstanceNotFound:
            return None
        meta = self._metadata(handle, dom, op)
        if meta is None:
            raise _Foreign(self.zone, f"host {handle.name}: domain {uuid} is not this zone's")
        return OwnedDomain(self.zone, handle, dom, meta)

    def _existing(self, handle: HostHandle, uuid: str) -> OwnedDomain | None:
        """What an earlier create of ``uuid`` made: on ``handle`` or where it was put.

        :raises PermanentError: a domain outside this zone has the uuid on ``handle``.
        """
        try:
            found = self._lookup(handle, uuid, "create")
        except _Foreign as exc:
            raise PermanentError(self.zone, f"create {uuid}: {exc.reason}") from exc
        elsewhere = self._place_of(uuid)
        if found is not None or elsewhere is None or elsewhere == handle.name:
            return found
        try:
            return self._lookup(self._hosts[elsewhere], uuid, "create")
        except (_Foreign, InstanceNotFound):
            return None

    def _locate(self, uuid: str, op: str) -> OwnedDomain:
        """Find this zone's domain ``uuid``: where it was last seen, then on every host.

        :raises InstanceNotFound: no host has it.
        :raises TransientError: not on the hosts that answered, and some did not.
        """
        cached = self._place_of(uuid)
        names = sorted(self._hosts, key=lambda name: name != cached)  # cached host first
        unreachable: list[DriverError] = []
        for name in names:
            try:
                found = self._lookup(self._hosts[name], uuid, op)
            except _Foreign:
                continue
            except (TransientError, AuthError) as exc:
                unreachable.append(exc)
                continue
            if found is not None:
                self._remember(uuid, name)
                return found
        self._forget(uuid)
        if unreachable:
            raise TransientError(
                self.zone,
                f"{op} {uuid}: not on the hosts that answered; {_reasons(unreachable)}",
            )
        raise InstanceNotFound(self.zone, f"no instance {uuid}")

    def _owned_for_event(self, host: str, uuid: str) -> bool:
        """Whether the domain an event names is this zone's (for the event dispatcher)."""
        with self._places_lock:
            if host in (self._places.get(uuid), self._tombstones.get(uuid)):
                return True
        handle = self._hosts.get(host)
        if handle is None:
            return False
        try:
            return self._lookup(handle, uuid, "event") is not None
        except DriverError:
            return False

    def _place_of(self, uuid: str) -> str | None:
        with self._places_lock:
            return self._places.get(uuid)

    def _remember(self, uuid: str, host: str) -> None:
        with self._places_lock:
            self._places[uuid] = host

    def _forget(self, uuid: str, *, deleted_from: str | None = None) -> None:
        with self._places_lock:
            self._places.pop(uuid, None)
            if deleted_from is not None:
                self._tombstones[uuid] = deleted_from
                while len(self._tombstones) > _TOMBSTONES:
                    self._tombstones.popitem(last=False)

    # --- acting on domains -----------------------------------------------------------

    def _act(self, uuid: str, op: str, action: Callable[[OwnedDomain], None]) -> RemoteInstance:
        """Run ``action`` on this zone's domain ``uuid`` under its lock; describe it after.

        :raises InstanceNotFound: no such domain in the zone.
        """
        canonical = _canonical(uuid)
        if canonical is None:
            raise InstanceNotFound(self.zone, f"no instance {uuid!r}")
        with self._locks.held(canonical):
            found = self._locate(canonical, op)
            action(found)
            return found.describe(self.options.network)

    def _define_and_start(self, handle: HostHandle, spec: InstanceSpec, uuid: str) -> OwnedDomain:
        """Define and start the domain; on failure undefine it and drop its volume."""
        pool = self.options.storage_pool
        disk = None
        if pool is not None:
            base = self._images.get(spec.image)
            if base is None:
                raise PermanentError(self.zone, f"image {spec.image} has no base volume")
            disk = create_root_volume(self.zone, handle, pool, base, spec, uuid)
        try:
            conn = handle.connection()
            xml = domain_xml(
                spec,
                zone=self.zone,
                domain_type=self.options.domain_type_for(handle.uri),
                namespace=self.options.metadata_namespace,
                created_at=self.clock(),
                arch=self.options.arch,
                machine=self.options.machine,
                network=self._network(handle, conn),
                disk=disk,
            )
            with translated(self.zone, handle.name, "define domain"):
                dom = conn.defineXML(xml)
            try:
                with translated(self.zone, handle.name, "start domain"):
                    dom.create()
                meta = self._metadata(handle, dom, "create")
                if meta is None:
                    raise PermanentError(
                        self.zone, f"host {handle.name}: {uuid}: libvirt dropped the metadata"
                    )
            except DriverError:
                discard(self.zone, handle.name, dom)
                raise
        except DriverError:
            if pool is not None:
                delete_root_volume(self.zone, handle, pool, uuid, quietly=True)
            raise
        return OwnedDomain(self.zone, handle, dom, meta)

    def _disk_gb(self, handle: HostHandle, conn: libvirt.virConnect) -> int:
        """The disk reported for a host; see :meth:`list_hosts`."""
        pool = self.options.storage_pool
        if handle.name in self.options.host_disk_gb or pool is None:
            return self.options.disk_of(handle.name)
        with translated(self.zone, handle.name, f"read storage pool {pool}"):
            return int(conn.storagePoolLookupByName(pool).info()[1]) // GIB

    def _network(self, handle: HostHandle, conn: libvirt.virConnect) -> str | None:
        """The configured network if this host has it active, remembered per connection."""
        name = self.options.network
        if name is None:
            return None
        key = f"network:{name}"
        if key not in handle.facts:
            try:
                with translated(self.zone, handle.name, f"look up network {name}"):
                    present = bool(conn.networkLookupByName(name).isActive())
            except PermanentError:
                present = False
            handle.facts[key] = present
        return name if handle.facts[key] else None


class _Foreign(PermanentError):
    """A domain with the uuid exists but belongs to another broker or zone."""


def _reasons(failed: Sequence[DriverError]) -> str:
    """The failures' reasons; each names its host."""
    return "; ".join(exc.reason for exc in failed)
