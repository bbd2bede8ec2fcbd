"""The driver plugin contract.

A driver connects one zone of the broker to the thing that actually runs VMs:
a pool of local hypervisors, or a remote cloud seen as one virtual availability
zone. Drivers are found only through stevedore entry points in the
``federator.drivers`` namespace; the short entry-point name is what operators
type as ``driver = "..."`` in the broker configuration.

Rules every driver follows:

* Methods take and return the frozen value types below; anything
  provider-specific travels in an ``extra`` mapping.
* Every SDK error is translated, in one place per driver, into the taxonomy at
  the bottom of this module (``raise CapacityError(...) from exc``).
* ``create`` is idempotent on ``spec.uuid``: calling it again for a uuid that
  already exists returns the existing instance instead of making a second one.
* Drivers never import the broker's storage, API, or other drivers.
* Secrets passed in options are never put into exception messages or logs.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict

from federator import errors
from federator.exception import FederatorError

if TYPE_CHECKING:
    from federator.blockstorage import BlockStorage

__all__ = [
    "AuthError",
    "AzCapacity",
    "Capabilities",
    "CapacityError",
    "Driver",
    "DriverError",
    "DriverOptions",
    "FlavorSpec",
    "HostInfo",
    "InstanceNotFound",
    "InstanceSpec",
    "PermanentError",
    "PowerState",
    "RemoteInstance",
    "ServerGroupSpec",
    "TransientError",
    "ZoneCapacity",
    "ZoneContext",
    "ZoneHealth",
    "batched",
]

_EMPTY: Mapping[str, Any] = MappingProxyType({})


class PowerState(enum.StrEnum):
    """The broker's view of an instance's state; drivers map provider states onto it."""

    BUILD = "BUILD"
    ACTIVE = "ACTIVE"
    SHUTOFF = "SHUTOFF"
    PAUSED = "PAUSED"
    SUSPENDED = "SUSPENDED"
    REBOOT = "REBOOT"
    ERROR = "ERROR"
    DELETED = "DELETED"


@dataclass(frozen=True, slots=True)
class FlavorSpec:
    """Size of an instance. ``name`` is the broker's flavor name; drivers map it."""

    name: str
    vcpus: int
    ram_mb: int
    disk_gb: int


@dataclass(frozen=True, slots=True)
class InstanceSpec:
    """What the broker asks a driver to create.

    ``uuid`` is the broker's instance id and the idempotency key. ``host`` is set
    when the broker's scheduler chose a host (drivers with ``host_scheduling``);
    otherwise the driver or remote cloud picks. ``server_group`` is the remote id of
    the server group the instance must join, as :meth:`Driver.create_server_group`
    returned it (drivers with ``server_groups`` only): the remote cloud then keeps the
    group's rule among its members there.
    """

    uuid: str
    name: str
    flavor: FlavorSpec
    image: str
    project_id: str
    broker_id: str
    host: str | None = None
    metadata: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    server_group: str | None = None


@dataclass(frozen=True, slots=True)
class ServerGroupSpec:
    """A broker server group as a remote cloud should keep it.

    ``uuid`` is the broker's group id and the idempotency key of
    :meth:`Driver.create_server_group`. ``policy`` is one of ``affinity``,
    ``anti-affinity``, ``soft-affinity`` and ``soft-anti-affinity``;
    ``max_server_per_host`` is set for anti-affinity only (None: one per host).
    """

    uuid: str
    name: str
    policy: str
    project_id: str
    broker_id: str
    max_server_per_host: int | None = None


@dataclass(frozen=True, slots=True)
class RemoteInstance:
    """An instance as the driver sees it."""

    uuid: str
    remote_id: str
    state: PowerState
    host: str | None = None
    addresses: Mapping[str, Sequence[str]] = field(default_factory=lambda: _EMPTY)
    launched_at: datetime | None = None
    extra: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True, slots=True)
class HostInfo:
    """One hypervisor host of a zone whose driver lets the broker schedule hosts."""

    name: str
    vcpus: int
    ram_mb: int
    disk_gb: int
    extra: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a driver can do.

    ``host_scheduling``: the driver exposes hosts (``list_hosts``) and honours
    ``InstanceSpec.host``; the broker's host scheduler then picks the host.
    Otherwise the zone is opaque and the remote cloud places the instance.
    """

    host_scheduling: bool
    start_stop: bool = True
    reboot: bool = True
    pause_suspend: bool = False
    """``pause``/``unpause`` (freeze in memory) and ``suspend``/``resume`` (save to disk)."""
    cold_migrate: bool = False
    """``migrate``: move an instance to another host of the zone (host-scheduling drivers)."""
    server_groups: bool = False
    """``create_server_group``/``delete_server_group``: the remote cloud keeps a server
    group's rule among the members placed in it (members carry ``InstanceSpec.server_group``).
    Without it, a zone that does not let the broker schedule hosts counts as one host for
    the rules of a group: hard anti-affinity puts at most ``max_server_per_host`` members
    there."""


@dataclass(frozen=True, slots=True)
class ZoneHealth:
    """Result of a health probe: ``ok`` plus a human ``detail`` (never a secret)."""

    ok: bool
    detail: str = ""


@dataclass(frozen=True, slots=True)
class AzCapacity:
    """One availability zone a remote cloud reports, with what more it will take there.

    ``None`` for a figure means the remote cloud sets no bound on it (or cannot tell).
    """

    name: str
    available: bool
    free_ram_mb: int | None = None
    free_vcpus: int | None = None
    free_instances: int | None = None


@dataclass(frozen=True, slots=True)
class ZoneCapacity:
    """What a remote cloud (typically a child broker) says it can still take.

    ``free_*`` figures are for the zone as this broker uses it (after the driver's own
    choice of remote availability zone, if any); ``None`` means unbounded or unknown, and
    the broker then sets no ceiling from the report. ``detail`` is one human line.
    """

    availability_zones: tuple[AzCapacity, ...]
    free_ram_mb: int | None
    free_vcpus: int | None
    free_instances: int | None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class ZoneContext:
    """Everything a driver is constructed with.

    ``options`` is the driver's own validated options model (see
    :attr:`Driver.options_model`). ``data_dir`` is a directory the driver may
    use for state of its own; it survives broker restarts.
    """

    zone: str
    broker_id: str
    options: DriverOptions
    data_dir: Path


class DriverOptions(BaseModel):
    """Base for a driver's options model. Unknown keys are configuration errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Driver(abc.ABC):
    """Abstract base every driver plugin implements.

    Subclasses set :attr:`options_model` to a :class:`DriverOptions` subclass;
    the broker validates the zone's ``options`` table against it at start-up,
    so a typo in a zone's options stops the daemon with a clear message
    instead of surfacing at boot time.
    """

    options_model: ClassVar[type[DriverOptions]] = DriverOptions

    def __init__(self, context: ZoneContext) -> None:
        self.context = context

    @property
    def zone(self) -> str:
        return self.context.zone

    @abc.abstractmethod
    def capabilities(self) -> Capabilities:
        """Describe what this driver supports. Pure; never fails."""

    @abc.abstractmethod
    def list_hosts(self) -> Sequence[HostInfo]:
        """Hosts the broker may schedule onto; empty when ``host_scheduling`` is false.

        :raises DriverError: the zone could not be asked.
        """

    @abc.abstractmethod
    def create(self, spec: InstanceSpec) -> RemoteInstance:
        """Create and start an instance; idempotent on ``spec.uuid``.

        On failure nothing is left running or billed for ``spec.uuid``.

        :raises CapacityError: this host or zone cannot take it now; try elsewhere.
        :raises TransientError: retry later (the broker bounds retries).
        :raises PermanentError: the request itself is unacceptable.
        :raises AuthError: the zone's credentials are rejected.
        """

    @abc.abstractmethod
    def delete(self, uuid: str) -> None:
        """Delete the instance. Deleting one that does not exist succeeds.

        On failure the instance is left as it was.

        :raises TransientError, AuthError, PermanentError:
        """

    @abc.abstractmethod
    def get(self, uuid: str) -> RemoteInstance:
        """Return the instance created for broker uuid ``uuid``.

        :raises InstanceNotFound: no such instance exists in the zone.
        """

    @abc.abstractmethod
    def list_instances(self, batch_size: int = 500) -> Iterator[Sequence[RemoteInstance]]:
        """Yield every instance this broker owns in the zone, ``batch_size`` at a time.

        :raises DriverError: listing failed part way; batches already yielded stand.
        """

    @abc.abstractmethod
    def start(self, uuid: str) -> RemoteInstance:
        """Power the instance on. Starting a running instance is a no-op.

        :raises InstanceNotFound, TransientError, AuthError:
        """

    @abc.abstractmethod
    def stop(self, uuid: str) -> RemoteInstance:
        """Power the instance off. Stopping a stopped instance is a no-op.

        :raises InstanceNotFound, TransientError, AuthError:
        """

    @abc.abstractmethod
    def reboot(self, uuid: str, *, hard: bool = False) -> RemoteInstance:
        """Reboot the instance; it ends ACTIVE.

        :raises InstanceNotFound, TransientError, AuthError:
        """

    def watch(self, callback: Callable[[str, PowerState], None]) -> Callable[[], None] | None:
        """Call ``callback(uuid, state)`` when an instance of this zone changes state.

        Calls come from a thread of the driver's and must return quickly. Returns the
        function that stops them, or None when the driver has no events (the default):
        the monitor's periodic sync then is the only way changes come back.
        """
        return None

    def migrate(self, uuid: str, host: str) -> RemoteInstance:
        """Move instance ``uuid`` to ``host`` of this zone, keeping its power state (a cold
        migration: the broker stops a running instance first). It exists on ``host`` before
        it leaves its source; on failure it stays on its source as it was. Moving it to the
        host it is on changes nothing. Only for drivers whose capabilities say
        ``cold_migrate``.

        :raises InstanceNotFound, TransientError, AuthError:
        :raises CapacityError: ``host`` lacks room.
        :raises PermanentError: the driver cannot migrate, or ``host`` is not in the zone.
        """
        raise PermanentError(self.zone, "this zone cannot move instances between hosts")

    def pause(self, uuid: str) -> RemoteInstance:
        """Freeze a running instance in memory; it ends ``PAUSED``. Pausing a paused one is
        a no-op. Only for drivers whose capabilities say ``pause_suspend``.

        :raises InstanceNotFound, TransientError, AuthError:
        :raises PermanentError: the driver cannot pause, or not from the current state.
        """
        raise PermanentError(self.zone, "this zone cannot pause instances")

    def unpause(self, uuid: str) -> RemoteInstance:
        """Let a paused instance run again; it ends ``ACTIVE``.

        :raises InstanceNotFound, TransientError, AuthError, PermanentError:
        """
        raise PermanentError(self.zone, "this zone cannot unpause instances")

    def suspend(self, uuid: str) -> RemoteInstance:
        """Save a running instance's memory to disk and stop it; it ends ``SUSPENDED``.

        :raises InstanceNotFound, TransientError, AuthError, PermanentError:
        """
        raise PermanentError(self.zone, "this zone cannot suspend instances")

    def resume(self, uuid: str) -> RemoteInstance:
        """Restore a suspended instance; it ends ``ACTIVE``.

        :raises InstanceNotFound, TransientError, AuthError, PermanentError:
        """
        raise PermanentError(self.zone, "this zone cannot resume instances")

    def create_server_group(self, spec: ServerGroupSpec) -> str:
        """Make the remote server group for broker group ``spec.uuid`` and return its
        remote id; idempotent: a group already made for ``spec.uuid`` is found and
        returned instead of a second one. On failure no group is left behind. Only for
        drivers whose capabilities say ``server_groups``.

        :raises TransientError, AuthError:
        :raises PermanentError: the driver cannot make groups, or the cloud refuses the
            policy.
        """
        raise PermanentError(self.zone, "this zone cannot keep server groups")

    def delete_server_group(self, remote_id: str) -> None:
        """Delete the remote server group ``remote_id``; deleting one that does not exist
        succeeds. Its members keep running. On failure the group is left as it was.

        :raises TransientError, AuthError, PermanentError:
        """
        raise PermanentError(self.zone, "this zone cannot keep server groups")

    @abc.abstractmethod
    def health(self) -> ZoneHealth:
        """Probe the zone cheaply. Never raises: failures come back as ``ok=False``."""

    def capacity(self) -> ZoneCapacity | None:
        """What the remote cloud reports it can still take; None when it reports nothing.

        Polled by the monitor for virtual zones; placement then sends the zone no more
        than it reported room for. Optional: the default reports nothing, and the zone is
        bounded only by the policy's quota and by the capacity errors ``create`` raises.

        :raises DriverError: the cloud could not be asked.
        """
        return None

    def validate_catalog(  # noqa: B027 - optional hook, accepts everything by default
        self, flavors: Sequence[str], images: Mapping[str, str]
    ) -> None:
        """Check at start-up that the zone can serve every broker flavor and image.

        Called once with the broker's flavor names and its images as a mapping from image
        id (what ``InstanceSpec.image`` carries) to image name.
        Drivers that map them to provider objects (instance types, AMIs) raise here, so a
        missing mapping stops the daemon instead of failing a boot later. Optional: the
        default accepts everything.

        :raises federator.exception.ConfigError: naming every unmapped flavor and image.
        """

    def block_storage(self) -> BlockStorage | None:
        """The zone's block storage (:mod:`federator.blockstorage`), or None when the zone
        holds no volumes (the default: a compute-only driver implements nothing more).
        Called often: return the same object every time (made once, with no remote call)."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook, no-op by default
        """Release connections. Called once at broker shutdown."""


# --- the error taxonomy -------------------------------------------------------------


class DriverError(FederatorError):
    """Base of every error a driver raises. ``zone`` names where it happened."""

    code = errors.DRIVER_PERMANENT
    title = "Driver error"
    template = "zone {zone}: {reason}"
    http_status = 502

    def __init__(self, zone: str, reason: str, **detail: Any) -> None:
        self.zone = zone
        self.reason = reason
        super().__init__(zone=zone, reason=reason, **detail)


class CapacityError(DriverError):
    """The host or zone cannot take the instance now; the broker tries the next candidate."""

    code = errors.DRIVER_CAPACITY


class TransientError(DriverError):
    """A passing failure (throttling, 5xx, timeout); the broker retries with backoff."""

    code = errors.DRIVER_TRANSIENT
    http_status = 503


class PermanentError(DriverError):
    """The request cannot succeed in this zone as asked; the provider's message is kept."""

    code = errors.DRIVER_PERMANENT


class AuthError(DriverError):
    """Credentials were rejected; the zone is marked unhealthy."""

    code = errors.DRIVER_AUTH


class InstanceNotFound(DriverError):
    """The zone has no instance for this broker uuid."""

    code = errors.DRIVER_NOT_FOUND_INSTANCE
    http_status = 404


_T = TypeVar("_T")


def batched(items: Iterable[_T], size: int) -> Iterator[list[_T]]:
    """``items`` regrouped into lists of exactly ``size`` (the last may be smaller), for a
    driver's ``list_*`` that pages the cloud in pages of its own size.

    :raises ValueError: ``size`` is below 1 (raised on the first ``next``).
    """
    if size < 1:
        raise ValueError(f"batch_size must be at least 1, not {size}")
    batch: list[_T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
