"""The block-storage plugin contract, beside the compute contract and optional.

A driver whose zone can hold volumes returns a :class:`BlockStorage` from
:meth:`federator.driver.Driver.block_storage`; a compute-only driver keeps the default
(None) and its zone simply holds no volumes. The same rules as for compute hold:

* methods take and return the frozen value types below, provider data in ``extra``;
* every SDK error is translated, in one place per driver, into the taxonomy of
  :mod:`federator.driver` (capacity, transient, permanent, auth, not found);
* ``create_volume`` is idempotent on ``spec.uuid``;
* nothing here imports the broker's storage or API, and no secret reaches a message.

Where a volume lives: a zone whose driver schedules hosts keeps volumes in *pools*, one
per host (``PoolInfo.host``) or shared by the zone (``host`` None); a virtual zone
reports one pool for the whole zone, with ``capacity_gb`` None when the cloud sets no
bound the broker can see. The broker picks the pool (``VolumeSpec.pool``) and claims its
space before it calls ``create_volume``. Whether a volume in one host's pool can be
attached to a server on another host of the zone is :attr:`StorageCapabilities.shared`.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from federator import errors
from federator.driver import DriverError

__all__ = [
    "BlockStorage",
    "PoolInfo",
    "RemoteAttachment",
    "RemoteVolume",
    "StorageCapabilities",
    "VolumeNotFound",
    "VolumeSpec",
    "VolumeState",
]

_EMPTY: Mapping[str, Any] = MappingProxyType({})


class VolumeState(enum.StrEnum):
    """A volume as the cloud reports it; drivers map provider states onto these.

    Only the states a cloud itself reports: the broker's own transitional statuses
    (``attaching``, ``detaching``, ``deleting``) exist only in its records.
    """

    CREATING = "creating"
    AVAILABLE = "available"
    IN_USE = "in-use"
    ERROR = "error"
    DELETED = "deleted"


@dataclass(frozen=True, slots=True)
class VolumeSpec:
    """What the broker asks a driver to create.

    ``uuid`` is the broker's volume id and the idempotency key. ``pool`` names the pool
    the broker claimed the space in (one of :meth:`BlockStorage.pools`); ``backend`` is
    the backend a volume type names for this zone (an EBS volume type, a remote Cinder
    type, a libvirt pool's format), None for the zone's default.
    """

    uuid: str
    name: str
    size_gb: int
    project_id: str
    broker_id: str
    pool: str | None = None
    backend: str | None = None
    metadata: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    multiattach: bool = False
    """The volume may be attached to several servers at once; the broker asks for it only
    of a zone whose :attr:`StorageCapabilities.multiattach` is true."""


@dataclass(frozen=True, slots=True)
class RemoteAttachment:
    """One attachment of a volume: the broker uuid of the server and the device name."""

    server_uuid: str
    device: str | None = None


@dataclass(frozen=True, slots=True)
class RemoteVolume:
    """A volume as the driver sees it. ``uuid`` is the broker's id (None for an untracked
    volume found by a listing without the broker's id on it: never returned by
    ``list_volumes``, which yields only the broker's own)."""

    uuid: str
    remote_id: str
    size_gb: int
    state: VolumeState
    pool: str | None = None
    attachments: tuple[RemoteAttachment, ...] = ()
    created_at: Any = None
    """A timezone-aware datetime when the cloud reports one (orphan age), else None."""
    extra: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True, slots=True)
class PoolInfo:
    """Where volumes can be made. ``host`` is the host whose pool it is (host-scheduling
    zones), None for a pool of the whole zone. ``capacity_gb`` None: no bound known."""

    name: str
    host: str | None
    capacity_gb: int | None
    extra: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True, slots=True)
class StorageCapabilities:
    """What a zone's block storage can do.

    ``shared``: a volume can be attached to a server on any host of its zone (network
    storage, or a remote cloud that places both); False means host-local storage, so the
    server must run on the host of the volume's pool. ``multiattach``: a volume made
    multiattach may be attached to several servers at once.
    """

    shared: bool
    multiattach: bool = False


class VolumeNotFound(DriverError):
    """The zone has no volume for this broker uuid."""

    code = errors.DRIVER_NOT_FOUND_VOLUME
    http_status = 404


class BlockStorage(abc.ABC):
    """What a driver implements for its zone to hold volumes. ``zone`` names the zone in
    errors."""

    def __init__(self, zone: str) -> None:
        self.zone = zone

    @abc.abstractmethod
    def storage_capabilities(self) -> StorageCapabilities:
        """Describe the zone's block storage. Pure; never fails."""

    @abc.abstractmethod
    def pools(self) -> Sequence[PoolInfo]:
        """The zone's pools with their capacity (the broker claims space within it).

        :raises DriverError: the zone could not be asked.
        """

    @abc.abstractmethod
    def create_volume(self, spec: VolumeSpec) -> RemoteVolume:
        """Create a volume of ``spec.size_gb`` GB in ``spec.pool``; it ends ``available``
        (or ``creating``, for a cloud that finishes later: the broker then polls
        :meth:`get_volume`). Idempotent on ``spec.uuid``: a volume already made for it is
        returned instead of a second one.

        On failure no volume is left for ``spec.uuid``.

        :raises CapacityError: the pool or zone has no room for it now.
        :raises TransientError, AuthError:
        :raises PermanentError: the request is unacceptable (an unknown backend, a size the
            cloud refuses).
        """

    @abc.abstractmethod
    def delete_volume(self, uuid: str) -> None:
        """Delete the volume; deleting one that does not exist succeeds. An attached volume
        is refused with PermanentError (the broker detaches first). On failure the volume is
        left as it was.

        :raises TransientError, AuthError, PermanentError:
        """

    @abc.abstractmethod
    def get_volume(self, uuid: str) -> RemoteVolume:
        """The volume made for broker uuid ``uuid``.

        :raises VolumeNotFound: no such volume exists in the zone.
        """

    @abc.abstractmethod
    def list_volumes(self, batch_size: int = 500) -> Iterator[Sequence[RemoteVolume]]:
        """Yield every volume this broker owns in the zone, ``batch_size`` at a time.

        :raises DriverError: listing failed part way; batches already yielded stand.
        """

    @abc.abstractmethod
    def attach_volume(self, uuid: str, server_uuid: str, device: str | None) -> RemoteAttachment:
        """Attach volume ``uuid`` to the zone's server with broker uuid ``server_uuid``, as
        ``device`` when given (else the driver picks the next free name); returns the
        attachment with the device actually used. Attaching it again to the same server
        returns the existing attachment. On failure the volume is not attached.

        :raises VolumeNotFound: no such volume.
        :raises InstanceNotFound: no such server in the zone.
        :raises PermanentError: the volume is attached elsewhere (and not made with
            ``VolumeSpec.multiattach``), the
            device is taken, or host-local storage is on another host.
        :raises TransientError, AuthError:
        """

    @abc.abstractmethod
    def detach_volume(self, uuid: str, server_uuid: str) -> None:
        """Detach volume ``uuid`` from server ``server_uuid``; detaching a volume that is
        not attached there succeeds. On failure it stays attached.

        :raises VolumeNotFound: no such volume.
        :raises TransientError, AuthError, PermanentError:
        """
