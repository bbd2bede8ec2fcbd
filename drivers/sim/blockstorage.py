"""Volumes of the ``sim`` zone (:mod:`federator.blockstorage`), kept in its state store.

Pools. With ``volume_pools = "host"`` and exposed hosts, every host has one pool, named
``<host>/volumes``, of ``volume_pool_gb``; otherwise the zone has one pool named after
it. The sim enforces a pool's capacity itself, in the same transaction as the insert, so
it refuses what would over-fill a pool whatever the broker's accounting says.

Sharing. Volumes of host pools are host-local unless ``volume_shared`` says otherwise:
such a volume attaches only to servers on its pool's host. A zone pool is shared.

A volume made ``multiattach`` attaches to several servers at once; any other to one.

Attachments name a device ``/dev/vdX`` (``vda`` is the root disk): the one asked for,
``sdX`` and ``xvdX`` read as ``vdX``, else the first free of ``vdb``..``vdz``. Deleting a
server detaches its volumes (in the same transaction), and they read ``available``.

Operator helpers outside the contract, for tests: :meth:`SimBlockStorage.ex_inject`,
:meth:`SimBlockStorage.ex_vanish`, :meth:`SimBlockStorage.ex_add_untracked`.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
import uuid as uuidlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Literal

from drivers.sim.options import SimOptions
from drivers.sim.state import AttachmentRow, SimError, SimStore, VolumeRow
from federator.blockstorage import (
    BlockStorage,
    PoolInfo,
    RemoteAttachment,
    RemoteVolume,
    StorageCapabilities,
    VolumeSpec,
    VolumeState,
)

__all__ = ["POOL_SUFFIX", "SimBlockStorage", "VolumeInjectKind"]

POOL_SUFFIX = "/volumes"
"""A host pool's name is the host's name followed by this."""

VolumeInjectKind = Literal["capacity", "transient", "permanent", "auth"]

_DEVICE = re.compile(r"^/dev/(?:vd|sd|xvd|hd)([a-z]{1,2})$")
_LETTERS = [chr(c) for c in range(ord("b"), ord("z") + 1)]


class SimBlockStorage(BlockStorage):
    """The sim zone's volumes; made by :meth:`drivers.sim.driver.SimDriver.block_storage`.

    :param hosts: the zone's current host names (empty when hosts are not exposed).
    :param host_of: the host of a server, None when the zone has no such server.
    :param translated: the driver's one translation of :class:`SimError` into the taxonomy.
    """

    def __init__(
        self,
        zone: str,
        *,
        broker_id: str,
        options: SimOptions,
        store: SimStore,
        hosts: Callable[[], Sequence[str]],
        host_of: Callable[[str], str | None],
        translated: Callable[[], AbstractContextManager[None]],
        clock: Callable[[], datetime],
    ) -> None:
        super().__init__(zone)
        self._broker_id = broker_id
        self._options = options
        self._store = store
        self._hosts = hosts
        self._host_of = host_of
        self._translated = translated
        self._clock = clock
        self._injected: deque[VolumeInjectKind] = deque()
        self._inject_lock = threading.Lock()
        self.sleep: Callable[[float], None] = time.sleep
        """How the simulated create latency waits (replace it to control time)."""

    # --- the contract ------------------------------------------------------------------

    def storage_capabilities(self) -> StorageCapabilities:
        shared = self._options.volume_shared
        if shared is None:
            shared = not self._host_pools()
        return StorageCapabilities(shared=shared, multiattach=True)

    def pools(self) -> Sequence[PoolInfo]:
        with self._translated():
            used = self._store.pool_used()
        size = self._options.volume_pool_gb
        return [
            PoolInfo(
                name=name,
                host=host,
                capacity_gb=size,
                extra={
                    "used_gb": used.get(name, (0, 0))[0],
                    "volumes": used.get(name, (0, 0))[1],
                },
            )
            for name, host in self._pool_names()
        ]

    def create_volume(self, spec: VolumeSpec) -> RemoteVolume:
        """Create the volume, ``available`` at once, in ``spec.pool`` (the pool with the most
        room when None). Idempotent on ``spec.uuid``; an injected failure or a refusal
        leaves nothing behind.

        :raises PermanentError: ``spec.pool`` is not a pool of this zone, or a size below 1.
        :raises CapacityError: the pool lacks room for it.
        """
        with self._translated():
            existing = self._store.get_volume(spec.uuid)
            if existing is not None:
                return self._remote(existing)
            self._maybe_fail(spec.uuid)
            if spec.size_gb < 1:
                raise SimError("permanent", f"volume size must be at least 1 GB: {spec.size_gb}")
            if self._options.volume_delay_ms:
                self.sleep(self._options.volume_delay_ms / 1000)
            with self._store.atomic():
                existing = self._store.get_volume(spec.uuid)
                if existing is not None:  # a concurrent create of the same uuid won
                    return self._remote(existing)
                row = VolumeRow(
                    uuid=spec.uuid,
                    broker_id=spec.broker_id,
                    remote_id=self._new_remote_id(),
                    name=spec.name,
                    size_gb=spec.size_gb,
                    pool=self._pool_for(spec),
                    project_id=spec.project_id,
                    state=VolumeState.AVAILABLE.value,
                    multiattach=spec.multiattach,
                    created_at=self._clock(),
                )
                self._store.insert_volume(row)
            return self._remote(row)

    def delete_volume(self, uuid: str) -> None:
        with self._translated(), self._store.atomic():
            if self._store.attachments(volumes=[uuid]):
                raise SimError("permanent", f"volume {uuid} is attached; detach it first")
            self._store.delete_volume(uuid)

    def get_volume(self, uuid: str) -> RemoteVolume:
        with self._translated():
            return self._remote(self._require(uuid))

    def list_volumes(self, batch_size: int = 500) -> Iterator[Sequence[RemoteVolume]]:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        after = ""
        while True:
            with self._translated():
                rows = self._store.volume_page(self._broker_id, after, batch_size)
                batch = self._remotes(rows)
            if batch:
                yield batch
            if len(rows) < batch_size:
                return
            after = rows[-1].uuid

    def attach_volume(self, uuid: str, server_uuid: str, device: str | None) -> RemoteAttachment:
        with self._translated(), self._store.atomic():
            volume = self._require(uuid)
            host = self._host_of(server_uuid)
            if host is None:
                raise SimError("not_found", f"no instance {server_uuid}")
            current = self._store.attachments(volumes=[uuid])
            mine = next((a for a in current if a.server_uuid == server_uuid), None)
            if mine is not None:
                return RemoteAttachment(server_uuid, mine.device)
            if current and not volume.multiattach:
                raise SimError(
                    "permanent",
                    f"volume {uuid} is attached to server {current[0].server_uuid} and is not "
                    "multiattach",
                )
            pool_host = self._pool_host(volume.pool)
            if pool_host is not None and pool_host != host and not self._shared():
                raise SimError(
                    "permanent",
                    f"volume {uuid} is in host {pool_host}'s pool; server {server_uuid} runs on "
                    f"host {host} and host-local storage cannot reach it",
                )
            name = self._device(server_uuid, device)
            self._store.attach(AttachmentRow(uuid, server_uuid, name))
            return RemoteAttachment(server_uuid, name)

    def detach_volume(self, uuid: str, server_uuid: str) -> None:
        with self._translated(), self._store.atomic():
            self._require(uuid)
            self._store.detach(uuid, server_uuid)

    # --- operator helpers, outside the contract ----------------------------------------

    def ex_inject(self, kind: VolumeInjectKind, count: int = 1) -> None:
        """Make the next ``count`` volume creates of new uuids fail with ``kind``."""
        with self._inject_lock:
            self._injected.extend([kind] * count)

    def ex_vanish(self, uuid: str) -> bool:
        """Delete a volume (and its attachments) behind the broker's back; true if it
        existed."""
        with self._translated():
            return self._store.delete_volume(uuid)

    def ex_add_untracked(self, size_gb: int = 1, pool: str | None = None) -> str:
        """A volume of this broker that no broker record accounts for (an orphan, as a
        crash between a create and its record would leave); returns its uuid."""
        uuid = str(uuidlib.uuid4())
        self.create_volume(
            VolumeSpec(
                uuid=uuid,
                name="untracked",
                size_gb=size_gb,
                project_id="untracked",
                broker_id=self._broker_id,
                pool=pool,
            )
        )
        return uuid

    # --- internals ---------------------------------------------------------------------

    def _host_pools(self) -> bool:
        return self._options.volume_pools == "host" and self._options.expose_hosts

    def _shared(self) -> bool:
        return self.storage_capabilities().shared

    def _pool_names(self) -> list[tuple[str, str | None]]:
        if self._host_pools():
            return [(f"{h}{POOL_SUFFIX}", h) for h in self._hosts()]
        return [(self.zone, None)]

    def _pool_host(self, pool: str) -> str | None:
        if pool.endswith(POOL_SUFFIX):
            return pool.removesuffix(POOL_SUFFIX)
        return None

    def _pool_for(self, spec: VolumeSpec) -> str:
        """The pool the volume goes in, checked for room; runs inside the create
        transaction."""
        names = [name for name, _ in self._pool_names()]
        used = self._store.pool_used()
        size = self._options.volume_pool_gb
        if spec.pool is None:
            best = min(names, key=lambda n: (used.get(n, (0, 0))[0], n))
            pool = best
        elif spec.pool in names:
            pool = spec.pool
        else:
            raise SimError("permanent", f"unknown pool {spec.pool!r}")
        taken = used.get(pool, (0, 0))[0]
        if taken + spec.size_gb > size:
            raise SimError(
                "capacity",
                f"pool {pool} lacks room for {spec.size_gb} GB ({size - taken} GB free of {size})",
            )
        return pool

    def _device(self, server_uuid: str, requested: str | None) -> str:
        taken = {a.device for a in self._store.attachments(server=server_uuid)}
        if requested is not None:
            match = _DEVICE.match(requested)
            if match is None or match.group(1) == "a":
                raise SimError(
                    "permanent",
                    f"device {requested!r} is not a data disk name like /dev/vdb",
                )
            name = f"/dev/vd{match.group(1)}"
            if name in taken:
                raise SimError(
                    "permanent", f"device {name} of server {server_uuid} is already in use"
                )
            return name
        for letter in _LETTERS:
            if f"/dev/vd{letter}" not in taken:
                return f"/dev/vd{letter}"
        raise SimError("permanent", f"server {server_uuid} has no free device name left")

    def _maybe_fail(self, uuid: str) -> None:
        with self._inject_lock:
            if not self._injected:
                return
            kind = self._injected.popleft()
        raise SimError(kind, f"creating volume {uuid}: {kind} failure (simulated)")

    def _new_remote_id(self) -> str:
        while True:
            remote_id = f"sim-vol-{secrets.token_hex(4)}"
            if not self._store.volume_remote_id_taken(remote_id):
                return remote_id

    def _require(self, uuid: str) -> VolumeRow:
        row = self._store.get_volume(uuid)
        if row is None:
            raise SimError("volume_not_found", f"no volume {uuid}")
        return row

    def _remotes(self, rows: Sequence[VolumeRow]) -> list[RemoteVolume]:
        attached: dict[str, list[AttachmentRow]] = {}
        for a in self._store.attachments(volumes=[r.uuid for r in rows]) if rows else []:
            attached.setdefault(a.volume_uuid, []).append(a)
        return [self._remote(r, attached.get(r.uuid, [])) for r in rows]

    def _remote(
        self, row: VolumeRow, attachments: Sequence[AttachmentRow] | None = None
    ) -> RemoteVolume:
        if attachments is None:
            attachments = self._store.attachments(volumes=[row.uuid])
        state = VolumeState.IN_USE if attachments else VolumeState(row.state)
        return RemoteVolume(
            uuid=row.uuid,
            remote_id=row.remote_id,
            size_gb=row.size_gb,
            state=state,
            pool=row.pool,
            attachments=tuple(RemoteAttachment(a.server_uuid, a.device) for a in attachments),
            created_at=row.created_at,
            extra={"name": row.name, "project_id": row.project_id},
        )
