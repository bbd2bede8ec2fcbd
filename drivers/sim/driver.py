"""The ``sim`` driver: a simulated pool of hypervisor hosts.

It backs the embedded default's local zone, stands in for remote clouds until real
drivers exist, and runs under the tests. With ``expose_hosts`` the broker schedules
its hosts; without, it behaves as an opaque cloud that places instances itself.

The sim enforces physical capacity on its own, independently of the broker's
accounting: RAM and disk are never overcommitted, vCPUs up to :data:`VCPU_RATIO`.

Beyond the contract it offers ``ex_`` operator helpers (Libcloud's convention for
anything non-portable) so tests can misbehave on purpose:

* :meth:`SimDriver.ex_inject` makes the next creates (or relocations) fail with a chosen
  error; :meth:`SimDriver.ex_refuse_name` makes every create of an instance of one name
  fail, on whichever host;
* :meth:`SimDriver.ex_vanish` deletes an instance behind the broker's back;
* :meth:`SimDriver.ex_set_state` changes an instance's state behind the broker's back;
* :meth:`SimDriver.ex_add_hosts` adds hosts to the zone, as racking new servers would;
* :meth:`SimDriver.migrate` moves an instance to another host (a cold migration: the
  broker uses it to drain a host).

Its zone holds volumes too (:meth:`SimDriver.block_storage`, :mod:`drivers.sim.blockstorage`)
unless the ``volumes`` option is off.

Time is injectable: replace :attr:`SimDriver.clock` or :attr:`SimDriver.sleep` on an
instance (or a subclass) to control ``launched_at`` and the simulated boot delay.
"""

from __future__ import annotations

import hashlib
import random
import secrets
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import ClassVar, Literal

from drivers.sim.blockstorage import SimBlockStorage
from drivers.sim.options import SimOptions
from drivers.sim.state import FaultKind, HostUsage, InstanceRow, SimError, SimStore
from federator.blockstorage import VolumeNotFound
from federator.driver import (
    AuthError,
    Capabilities,
    CapacityError,
    Driver,
    DriverError,
    DriverOptions,
    FlavorSpec,
    HostInfo,
    InstanceNotFound,
    InstanceSpec,
    PermanentError,
    PowerState,
    RemoteInstance,
    TransientError,
    ZoneContext,
    ZoneHealth,
)

__all__ = ["DISK_RATIO", "RAM_RATIO", "STATE_FILE", "VCPU_RATIO", "InjectKind", "SimDriver"]

RAM_RATIO = 1.0
DISK_RATIO = 1.0
VCPU_RATIO = 4.0
STATE_FILE = "sim.sqlite"

InjectKind = Literal["capacity", "transient", "permanent", "auth"]

_ERRORS: Mapping[FaultKind, type[DriverError]] = {
    "capacity": CapacityError,
    "transient": TransientError,
    "permanent": PermanentError,
    "auth": AuthError,
    "not_found": InstanceNotFound,
    "volume_not_found": VolumeNotFound,
}

_INJECTED_REASONS: Mapping[InjectKind, str] = {
    "capacity": "insufficient capacity (simulated failure)",
    "transient": "service temporarily unavailable (simulated failure)",
    "permanent": "request rejected (simulated failure)",
    "auth": "credentials rejected (simulated failure)",
}


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _address(uuid: str) -> str:
    """A private address derived from the uuid, so it is stable across restarts."""
    digest = hashlib.sha256(uuid.encode()).digest()
    return f"10.{digest[0]}.{digest[1]}.{1 + digest[2] % 254}"


class SimDriver(Driver):
    """A simulated zone; see the module docstring and :class:`SimOptions`."""

    options_model: ClassVar[type[DriverOptions]] = SimOptions
    clock: Callable[[], datetime] = staticmethod(_utc_now)
    sleep: Callable[[float], None] = staticmethod(time.sleep)

    def __init__(self, context: ZoneContext) -> None:
        super().__init__(context)
        opts = context.options
        self.options = (
            opts if isinstance(opts, SimOptions) else SimOptions.model_validate(opts.model_dump())
        )
        self.prefix = self.options.host_prefix or f"{context.zone}-host-"
        self._rng = random.Random(self.options.seed)
        self._injected: deque[InjectKind] = deque()
        self._refused_names: dict[str, InjectKind] = {}
        self._fail_lock = threading.Lock()
        path = context.data_dir / STATE_FILE if self.options.persist else None
        with self._translated():
            self._store = SimStore(path)
        self._storage = (
            SimBlockStorage(
                context.zone,
                broker_id=context.broker_id,
                options=self.options,
                store=self._store,
                hosts=self._host_names,
                host_of=self._server_host,
                translated=self._translated,
                clock=self._now,
            )
            if self.options.volumes
            else None
        )

    # --- the contract ------------------------------------------------------------------

    def capabilities(self) -> Capabilities:
        hosts = self.options.expose_hosts
        return Capabilities(host_scheduling=hosts, cold_migrate=hosts)

    def block_storage(self) -> SimBlockStorage | None:
        """The zone's volumes (:mod:`drivers.sim.blockstorage`); None when the ``volumes``
        option is off. The same object on every call."""
        return self._storage

    def list_hosts(self) -> Sequence[HostInfo]:
        """Every host with its size; ``extra`` carries the sim's own usage of it."""
        if not self.options.expose_hosts:
            return []
        with self._translated():
            usage = self._store.usage()
        return [
            self._host_info(self._host_name(i), usage) for i in range(1, self._host_count() + 1)
        ]

    def create(self, spec: InstanceSpec) -> RemoteInstance:
        """Create an instance, ACTIVE at once; idempotent on ``spec.uuid``.

        With ``expose_hosts`` the instance goes on ``spec.host`` (best fit when unset);
        otherwise the sim picks the best-fitting host and ignores ``spec.host``.
        Injected failures strike before anything is stored, so a failed create
        leaves nothing behind.

        :raises PermanentError: ``spec.host`` is not a host of this zone.
        :raises CapacityError: the host, or with no host given every host, lacks room.
        :raises TransientError: injected, or the state store stayed busy.
        """
        with self._translated():
            existing = self._store.get(spec.uuid)
            if existing is not None:
                return self._to_remote(existing)
            refused = self._refused_names.get(spec.name)
            if refused is not None:
                raise SimError(refused, f"creating {spec.name}: {_INJECTED_REASONS[refused]}")
            self._maybe_fail(spec.uuid)
            if self.options.boot_delay_ms:
                self.sleep(self.options.boot_delay_ms / 1000)
            with self._store.atomic():
                existing = self._store.get(spec.uuid)
                if existing is not None:  # a concurrent create of the same uuid won
                    return self._to_remote(existing)
                row = InstanceRow(
                    uuid=spec.uuid,
                    broker_id=spec.broker_id,
                    remote_id=self._new_remote_id(),
                    name=spec.name,
                    host=self._place(spec),
                    state=PowerState.ACTIVE.value,
                    flavor=spec.flavor.name,
                    vcpus=spec.flavor.vcpus,
                    ram_mb=spec.flavor.ram_mb,
                    disk_gb=spec.flavor.disk_gb,
                    image=spec.image,
                    project_id=spec.project_id,
                    address=_address(spec.uuid),
                    launched_at=self.clock(),
                )
                self._store.insert(row)
        return self._to_remote(row)

    def delete(self, uuid: str) -> None:
        """Delete the instance; volumes attached to it are detached and stay."""
        with self._translated():
            self._store.delete(uuid)

    def get(self, uuid: str) -> RemoteInstance:
        with self._translated():
            return self._to_remote(self._require(uuid))

    def list_instances(self, batch_size: int = 500) -> Iterator[Sequence[RemoteInstance]]:
        """Instances whose ``spec.broker_id`` is this broker's, in uuid order."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        after = ""
        while True:
            with self._translated():
                rows = self._store.page(self.context.broker_id, after, batch_size)
            if rows:
                yield [self._to_remote(r) for r in rows]
            if len(rows) < batch_size:
                return
            after = rows[-1].uuid

    def start(self, uuid: str) -> RemoteInstance:
        return self._set_state(uuid, PowerState.ACTIVE)

    def stop(self, uuid: str) -> RemoteInstance:
        return self._set_state(uuid, PowerState.SHUTOFF)

    def reboot(self, uuid: str, *, hard: bool = False) -> RemoteInstance:
        return self._set_state(uuid, PowerState.ACTIVE)

    def health(self) -> ZoneHealth:
        try:
            with self._translated():
                count = self._store.count()
        except DriverError as exc:
            return ZoneHealth(ok=False, detail=exc.message)
        return ZoneHealth(ok=True, detail=f"{self._host_count()} hosts, {count} instances")

    def close(self) -> None:
        self._store.close()

    # --- operator helpers, outside the contract ----------------------------------------

    def ex_inject(self, kind: InjectKind, count: int = 1) -> None:
        """Make the next ``count`` creates of new uuids (or relocations) fail with ``kind``.

        Injected failures are used before ``failure_rate`` is consulted and, like
        those, leave nothing behind: a relocation that fails leaves the instance where
        it was.
        """
        if kind not in _INJECTED_REASONS:
            raise ValueError(f"unknown failure kind {kind!r}")
        with self._fail_lock:
            self._injected.extend([kind] * count)

    def ex_refuse_name(self, name: str, kind: InjectKind = "capacity") -> None:
        """Make every create of an instance named ``name`` fail with ``kind``, whatever
        host it is asked on, until :meth:`ex_refuse_name` is called with another name
        or the driver is made again. Like injected failures, it leaves nothing behind."""
        if kind not in _INJECTED_REASONS:
            raise ValueError(f"unknown failure kind {kind!r}")
        with self._fail_lock:
            self._refused_names = {name: kind}

    def ex_vanish(self, uuid: str) -> bool:
        """Delete an instance behind the broker's back; true if it existed."""
        with self._translated():
            return self._store.delete(uuid)

    def ex_set_state(self, uuid: str, state: PowerState) -> RemoteInstance:
        """Put an instance in any state (ERROR, say) behind the broker's back.

        :raises InstanceNotFound:
        """
        return self._set_state(uuid, state)

    def ex_add_hosts(self, count: int = 1) -> list[str]:
        """Add ``count`` hosts of the configured size; returns their names.

        The broker sees them at its next look at the zone's hosts. They are kept in the
        state store, so they survive a restart when ``persist`` is on.
        """
        if count < 1:
            raise ValueError(f"count must be at least 1, not {count}")
        before = self._host_count()
        with self._translated():
            self._store.add_hosts(count)
        return [self._host_name(i) for i in range(before + 1, before + count + 1)]

    def migrate(self, uuid: str, host: str) -> RemoteInstance:
        """Move instance ``uuid``, in whatever state it is, to ``host`` (a cold migration).

        The instance is created on ``host`` before it is removed from its source, in one
        transaction of the state store: at every moment it exists on exactly one host, and
        a failure (an injected one included) leaves it on the source, as it was. Moving
        it to the host it is on changes nothing.

        :raises InstanceNotFound: no such instance.
        :raises PermanentError: ``host`` is not a host of this zone, the zone does not
            expose hosts, or host-local volumes are attached to the instance.
        :raises CapacityError: ``host`` lacks room for the instance.
        """
        with self._translated():
            if not self.options.expose_hosts:
                raise SimError("permanent", "this zone does not expose hosts")
            row = self._require(uuid)
            if row.host == host:
                return self._to_remote(row)
            if self._pins(uuid):
                raise SimError(
                    "permanent",
                    f"instance {uuid} has host-local volumes attached; detach them first",
                )
            self._maybe_fail(uuid, "relocating")
            with self._store.atomic():
                row = self._require(uuid)
                if self._host_index(host) is None:
                    raise SimError("permanent", f"unknown host {host!r}")
                flavor = FlavorSpec(row.flavor, row.vcpus, row.ram_mb, row.disk_gb)
                missing = self._shortfall(self._store.usage(host).get(host, HostUsage()), flavor)
                if missing:
                    raise SimError(
                        "capacity", f"host {host} lacks {', '.join(missing)} for {row.flavor}"
                    )
                self._store.set_host(uuid, host)
                return self._to_remote(self._require(uuid))

    # --- internals ---------------------------------------------------------------------

    def _now(self) -> datetime:
        return self.clock()  # looked up on each call: tests replace ``clock`` on the instance

    def _pins(self, uuid: str) -> bool:
        """Whether volumes attached to instance ``uuid`` tie it to its host."""
        storage = self._storage
        if storage is None or storage.storage_capabilities().shared:
            return False
        return bool(self._store.attachments(server=uuid))

    def _host_names(self) -> list[str]:
        if not self.options.expose_hosts:
            return []
        return [self._host_name(i) for i in range(1, self._host_count() + 1)]

    def _server_host(self, uuid: str) -> str | None:
        row = self._store.get(uuid)
        return None if row is None else row.host

    def _host_count(self) -> int:
        return self.options.hosts + self._store.added_hosts()

    @contextmanager
    def _translated(self) -> Iterator[None]:
        """The one place where the simulation's failures become the core taxonomy."""
        try:
            yield
        except SimError as exc:
            raise _ERRORS[exc.kind](self.zone, exc.reason) from exc
        except sqlite3.OperationalError as exc:  # locked or busy beyond the timeout
            raise TransientError(self.zone, f"sim state store: {exc}") from exc
        except sqlite3.Error as exc:
            raise PermanentError(self.zone, f"sim state store: {exc}") from exc

    def _require(self, uuid: str) -> InstanceRow:
        row = self._store.get(uuid)
        if row is None:
            raise SimError("not_found", f"no instance {uuid}")
        return row

    def _set_state(self, uuid: str, state: PowerState) -> RemoteInstance:
        with self._translated(), self._store.atomic():
            if not self._store.set_state(uuid, state.value):
                raise SimError("not_found", f"no instance {uuid}")
            return self._to_remote(self._require(uuid))

    def _maybe_fail(self, uuid: str, doing: str = "creating") -> None:
        kind: InjectKind
        with self._fail_lock:
            if self._injected:
                kind = self._injected.popleft()
            elif self.options.failure_rate and self._rng.random() < self.options.failure_rate:
                kind = self.options.failure_kind
            else:
                return
        raise SimError(kind, f"{doing} {uuid}: {_INJECTED_REASONS[kind]}")

    def _new_remote_id(self) -> str:
        while True:
            remote_id = f"sim-{secrets.token_hex(4)}"
            if not self._store.remote_id_taken(remote_id):
                return remote_id

    def _place(self, spec: InstanceSpec) -> str:
        """Pick the host for ``spec``; runs inside the create transaction."""
        flavor = spec.flavor
        if self.options.expose_hosts and spec.host is not None:
            if self._host_index(spec.host) is None:
                raise SimError("permanent", f"unknown host {spec.host!r}")
            used = self._store.usage(spec.host).get(spec.host, HostUsage())
            missing = self._shortfall(used, flavor)
            if missing:
                raise SimError(
                    "capacity", f"host {spec.host} lacks {', '.join(missing)} for {flavor.name}"
                )
            return spec.host
        return self._best_fit(flavor)

    def _best_fit(self, flavor: FlavorSpec) -> str:
        """The fitting host left with the least free RAM; an empty host if none is used."""
        usage = self._store.usage()
        best: tuple[int, int] | None = None
        for name, used in usage.items():
            index = self._host_index(name)
            if index is None or self._shortfall(used, flavor):
                continue
            key = (self._limit(self.options.host_ram_mb, RAM_RATIO) - used.ram_mb, index)
            best = key if best is None or key < best else best
        if best is not None:
            return self._host_name(best[1])
        if not self._shortfall(HostUsage(), flavor):
            for index in range(1, self._host_count() + 1):
                if self._host_name(index) not in usage:
                    return self._host_name(index)
        raise SimError(
            "capacity",
            f"no host can take {flavor.name} ({flavor.vcpus} vCPU, {flavor.ram_mb} MiB RAM, "
            f"{flavor.disk_gb} GiB disk)",
        )

    def _shortfall(self, used: HostUsage, flavor: FlavorSpec) -> list[str]:
        """The resources a host with ``used`` lacks for ``flavor``; empty when it fits."""
        opts = self.options
        checks = (
            ("vCPU", used.vcpus, flavor.vcpus, self._limit(opts.host_vcpus, VCPU_RATIO)),
            ("RAM MiB", used.ram_mb, flavor.ram_mb, self._limit(opts.host_ram_mb, RAM_RATIO)),
            ("disk GiB", used.disk_gb, flavor.disk_gb, self._limit(opts.host_disk_gb, DISK_RATIO)),
        )
        return [
            f"{what} ({wanted} wanted, {limit - taken} free)"
            for what, taken, wanted, limit in checks
            if taken + wanted > limit
        ]

    @staticmethod
    def _limit(physical: int, ratio: float) -> int:
        return int(physical * ratio)

    def _host_name(self, index: int) -> str:
        return f"{self.prefix}{index:03d}"

    def _host_index(self, name: str) -> int | None:
        """The index of host ``name``, or ``None`` when it is not a host of this zone."""
        suffix = name.removeprefix(self.prefix)
        if suffix == name or not (suffix.isascii() and suffix.isdigit()):
            return None
        index = int(suffix)
        if 1 <= index <= self._host_count() and self._host_name(index) == name:
            return index
        return None

    def _host_info(self, name: str, usage: Mapping[str, HostUsage]) -> HostInfo:
        used = usage.get(name, HostUsage())
        return HostInfo(
            name=name,
            vcpus=self.options.host_vcpus,
            ram_mb=self.options.host_ram_mb,
            disk_gb=self.options.host_disk_gb,
            extra={
                "used_vcpus": used.vcpus,
                "used_ram_mb": used.ram_mb,
                "used_disk_gb": used.disk_gb,
                "instances": used.instances,
            },
        )

    def _to_remote(self, row: InstanceRow) -> RemoteInstance:
        return RemoteInstance(
            uuid=row.uuid,
            remote_id=row.remote_id,
            state=PowerState(row.state),
            host=row.host,
            addresses={"private": [row.address]},
            launched_at=row.launched_at,
            extra={
                "name": row.name,
                "flavor": row.flavor,
                "image": row.image,
                "project_id": row.project_id,
            },
        )
