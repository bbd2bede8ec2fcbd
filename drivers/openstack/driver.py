"""The ``openstack`` driver: a virtual availability zone backed by a remote OpenStack cloud.

The remote cloud may be a real OpenStack or another federator broker (a child zone).
Instances are created through openstacksdk with the broker's instance uuid and broker id
in server metadata; a create is idempotent because the driver looks the uuid up before it
creates, so a retry after a timeout finds the server instead of making a second one.

Look-ups do not scan the remote project. A server's remote name ends with the broker's
uuid (``<name>-<uuid>``), so finding it is one server list with Nova's ``name`` filter set
to the uuid, which the remote side evaluates (a regex match in Nova, a substring match in
a child broker; a uuid holds no regex syntax, so both read it literally); what comes back
is confirmed on its metadata (the uuid and this broker's id). Servers made before names
carried the uuid are found through one scan of the project per driver object, done at the
first miss unless a complete :meth:`OpenStackDriver.list_instances` has already learnt
every server's id; after that, a miss is one filtered query and nothing more.
Server groups have no metadata in Nova, so a remote group's name carries the broker id
and the broker's group uuid, and the same look-up before create makes it idempotent.

The zone's block storage is the remote cloud's Cinder (:mod:`drivers.openstack.blockstorage`),
built on the first :meth:`OpenStackDriver.block_storage` call and sharing this driver's
connection, metadata keys and server look-up.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

from drivers.openstack.blockstorage import CinderBlockStorage, MetadataKeys
from drivers.openstack.capacity import capacity_from
from drivers.openstack.errors import translated
from drivers.openstack.options import OpenStackOptions
from drivers.openstack.states import power_state, remote_time
from federator.driver import (
    Capabilities,
    CapacityError,
    Driver,
    HostInfo,
    InstanceNotFound,
    InstanceSpec,
    PermanentError,
    PowerState,
    RemoteInstance,
    ServerGroupSpec,
    TransientError,
    ZoneCapacity,
    ZoneContext,
    ZoneHealth,
)
from federator.exception import ConfigError
from federator.keyedlocks import KeyedLocks

LOG = logging.getLogger(__name__)
_SETTLED = {PowerState.ACTIVE, PowerState.SHUTOFF, PowerState.ERROR, PowerState.DELETED}
_GROUP_NAME_MAX = 255  # Nova's limit on a server group's name
_SERVER_NAME_MAX = 255  # and on a server's
# A remote build fault that means "not here, now": try the next zone. Nova says "No valid
# host was found"; a child broker also says so, or that a server group "cannot take
# another member" when the group's rule (kept there) refuses it on every host.
_TRY_ELSEWHERE = re.compile(r"no valid host|quota|capacity|cannot take another member", re.I)


class OpenStackDriver(Driver):
    options_model: ClassVar[type[OpenStackOptions]] = OpenStackOptions
    sleep: Callable[[float], None] = staticmethod(time.sleep)
    clock: Callable[[], float] = staticmethod(time.monotonic)

    def __init__(self, context: ZoneContext) -> None:
        super().__init__(context)
        opts = context.options
        assert isinstance(opts, OpenStackOptions)
        self.options = opts
        self._images: dict[str, str] = dict(opts.image_map)
        self._conn: Any = None
        # uuid -> remote server id, learned from creates and listings; lookups try it first
        # (one GET), then the remote name filter (one list call).
        self._ids: dict[str, str] = {}
        # Whether every server of this broker in the remote project has had its id put in
        # _ids (by a full listing): then servers named before names carried the uuid
        # need no scan to be found.
        self._indexed = False
        self._indexing = threading.Lock()
        self._creating = KeyedLocks()
        self._grouping = KeyedLocks()
        self._storage: CinderBlockStorage | None = None
        self._storage_lock = threading.Lock()

    # --- connection ----------------------------------------------------------------

    @property
    def conn(self) -> Any:
        """The openstacksdk connection, made on first use (start-up never blocks on it)."""
        if self._conn is None:
            import openstack

            o = self.options
            kwargs: dict[str, Any] = {"api_timeout": o.api_timeout}
            if o.region_name:
                kwargs["region_name"] = o.region_name
            with translated(self.zone):
                if o.cloud is not None:
                    self._conn = openstack.connect(cloud=o.cloud, **kwargs)
                else:
                    assert o.auth is not None
                    self._conn = openstack.connection.Connection(
                        auth={
                            "auth_url": o.auth.auth_url,
                            "username": o.auth.username,
                            "password": o.auth.password.get_secret_value(),
                            "project_name": o.auth.project_name,
                            "user_domain_name": o.auth.user_domain_name,
                            "project_domain_name": o.auth.project_domain_name,
                        },
                        auth_type="password",
                        **kwargs,
                    )
        return self._conn

    def _key(self, name: str) -> str:
        return f"{self.options.metadata_prefix}{name}"

    # --- catalog ---------------------------------------------------------------------

    def validate_catalog(self, flavors: Sequence[str], images: Mapping[str, str]) -> None:
        """Every broker flavor needs a remote flavor; images may be mapped by id or name
        (unmapped ones pass through unchanged when the remote cloud shares the catalog,
        as a child broker does, so only an explicit empty map is checked for flavors)."""
        fmap = self.options.flavor_map
        missing = sorted(f for f in flavors if fmap and f not in fmap)
        if missing:
            raise ConfigError(
                reason=f"zone {self.zone!r} (driver 'openstack'): flavors without a remote "
                f"flavor in flavor_map: {', '.join(missing)}"
            )
        for image_id, name in images.items():
            if image_id not in self._images and name in self.options.image_map:
                self._images[image_id] = self.options.image_map[name]

    def _flavor(self, name: str) -> str:
        return self.options.flavor_map.get(name, name)

    def _image(self, ref: str) -> str:
        return self._images.get(ref, ref)

    # --- the contract ----------------------------------------------------------------

    def capabilities(self) -> Capabilities:
        return Capabilities(host_scheduling=False, server_groups=self.options.server_groups)

    def list_hosts(self) -> Sequence[HostInfo]:
        return []

    def create(self, spec: InstanceSpec) -> RemoteInstance:
        with self._creating.held(spec.uuid):
            return self._create(spec)

    def _create(self, spec: InstanceSpec) -> RemoteInstance:
        existing = self._find(spec.uuid)
        if existing is None:
            metadata = {
                **{k: v for k, v in spec.metadata.items() if not k.startswith(self._key(""))},
                self._key("instance-uuid"): spec.uuid,
                self._key("broker-id"): spec.broker_id,
                self._key("project"): spec.project_id,
            }
            attrs: dict[str, Any] = {
                "name": self._server_name(spec.name, spec.uuid),
                "flavor_id": self._resolve_flavor(spec.flavor.name),
                "image_id": self._image(spec.image),
                "networks": self._networks(),
                "metadata": metadata,
            }
            if self.options.availability_zone:
                attrs["availability_zone"] = self.options.availability_zone
            if spec.server_group is not None:
                attrs["scheduler_hints"] = {"group": spec.server_group}
            with translated(self.zone, uuid=spec.uuid):
                existing = self.conn.compute.create_server(**attrs)
                self._ids[spec.uuid] = str(existing.id)
                LOG.info("zone %s: created %s for %s", self.zone, existing.id, spec.uuid)
        server = self._wait(existing.id, spec.uuid, PowerState.ACTIVE)
        remote = self._remote(server)
        if remote.state is PowerState.ERROR:
            fault = (getattr(server, "fault", None) or {}).get("message", "")
            self.delete(spec.uuid)
            reason = f"the remote cloud could not build it: {fault or 'status ERROR'}"
            if _TRY_ELSEWHERE.search(fault):
                raise CapacityError(self.zone, reason)
            raise PermanentError(self.zone, reason)
        return remote

    def delete(self, uuid: str) -> None:
        server = self._find(uuid)
        if server is None:
            return
        with translated(self.zone, uuid=uuid):
            self.conn.compute.delete_server(server.id, ignore_missing=True)
        self._wait_gone(server.id, uuid)

    def get(self, uuid: str) -> RemoteInstance:
        server = self._find(uuid)
        if server is None:
            raise InstanceNotFound(self.zone, f"no instance for {uuid}")
        return self._remote(server)

    def list_instances(self, batch_size: int = 500) -> Iterator[Sequence[RemoteInstance]]:
        batch: list[RemoteInstance] = []
        with translated(self.zone):
            for server in self.conn.compute.servers(details=True, limit=batch_size):
                if not self._mine(server):
                    continue
                remote = self._remote(server)
                self._ids[remote.uuid] = remote.remote_id
                batch.append(remote)
                if len(batch) >= batch_size:
                    yield batch
                    batch = []
        # Every server of this broker has been seen: its id is known from here on.
        self._indexed = True
        if batch:
            yield batch

    def start(self, uuid: str) -> RemoteInstance:
        return self._act(uuid, "start")

    def stop(self, uuid: str) -> RemoteInstance:
        return self._act(uuid, "stop")

    def reboot(self, uuid: str, *, hard: bool = False) -> RemoteInstance:
        return self._act(uuid, "reboot", hard=hard)

    def create_server_group(self, spec: ServerGroupSpec) -> str:
        """A remote group named for ``spec`` (see :meth:`_group_name`), found by that name
        or made with ``spec.policy`` (and ``max_server_per_host`` as a rule when it allows
        more than one member per host, which needs microversion 2.64 at the remote)."""
        if not self.options.server_groups:
            return super().create_server_group(spec)
        name = self._group_name(spec.broker_id, spec.uuid)
        with self._grouping.held(name):
            found = self._find_group(name)
            if found is not None:
                return found
            attrs: dict[str, Any] = {"name": name, "policy": spec.policy}
            if spec.policy == "anti-affinity" and (spec.max_server_per_host or 1) > 1:
                attrs["rules"] = {"max_server_per_host": spec.max_server_per_host}
            try:
                with translated(self.zone, about="server group"):
                    made = self.conn.compute.create_server_group(**attrs)
            except TransientError:
                # The request may have reached the remote cloud before the failure: a group
                # it made is the result, not a leftover.
                found = self._find_group(name)
                if found is None:
                    raise
                return found
        LOG.info("zone %s: created server group %s for %s", self.zone, made.id, spec.uuid)
        return str(made.id)

    def delete_server_group(self, remote_id: str) -> None:
        if not self.options.server_groups:
            return super().delete_server_group(remote_id)
        with translated(self.zone, about="server group"):
            self.conn.compute.delete_server_group(remote_id, ignore_missing=True)

    def health(self) -> ZoneHealth:
        try:
            with translated(self.zone):
                next(iter(self.conn.compute.servers(details=False, limit=1)), None)
        except Exception as exc:
            return ZoneHealth(False, getattr(exc, "reason", type(exc).__name__))
        return ZoneHealth(True, "remote compute API answers")

    def capacity(self) -> ZoneCapacity | None:
        """The child's own report when it is a federator broker (its catalog lists a
        ``federation`` endpoint); None for a cloud that reports nothing."""
        with translated(self.zone):
            url = self.conn.endpoint_for("federation")
            if not url:
                return None
            resp = self.conn.session.get(url.rstrip("/") + "/capacity", raise_exc=True)
        try:
            return capacity_from(resp.json()["capacity"], self.options.availability_zone)
        except (ValueError, KeyError, TypeError) as exc:
            raise PermanentError(
                self.zone, f"the remote capacity report is malformed: {type(exc).__name__}"
            ) from exc

    def block_storage(self) -> CinderBlockStorage | None:
        """The remote cloud's volumes: made on the first call (no remote call), the same
        object after; None when the ``volumes`` option is off."""
        if not self.options.volumes:
            return None
        with self._storage_lock:
            if self._storage is None:
                self._storage = CinderBlockStorage(
                    self.zone,
                    broker_id=self.context.broker_id,
                    options=self.options,
                    keys=MetadataKeys(
                        volume_uuid=self._key("volume-uuid"),
                        server_uuid=self._key("instance-uuid"),
                        broker=self._key("broker-id"),
                        project=self._key("project"),
                    ),
                    conn=lambda: self.conn,
                    find_server=self._find,
                    # Looked up on every call: tests replace sleep and clock on the driver.
                    sleep=lambda seconds: self.sleep(seconds),  # noqa: PLW0108
                    clock=lambda: self.clock(),  # noqa: PLW0108
                )
            return self._storage

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # --- helpers ---------------------------------------------------------------------

    def _networks(self) -> Any:
        net = self.options.network
        return net if net in ("auto", "none") else [{"uuid": net}]

    def _group_name(self, broker_id: str, uuid: str) -> str:
        """``<metadata_prefix><broker id>:<group uuid>``, the remote name that tells this
        broker's group apart (Nova groups carry no metadata). Past Nova's 255 characters
        the broker id is replaced by a digest of it."""
        name = f"{self.options.metadata_prefix}{broker_id}:{uuid}"
        if len(name) <= _GROUP_NAME_MAX:
            return name
        digest = hashlib.sha256(broker_id.encode()).hexdigest()[:16]
        prefix = self.options.metadata_prefix[: _GROUP_NAME_MAX - len(digest) - len(uuid) - 1]
        return f"{prefix}{digest}:{uuid}"

    def _find_group(self, name: str) -> str | None:
        """The id of the project's server group named ``name``, or None. Should two have
        been made at once (by two processes), the lowest id is the answer, every time."""
        with translated(self.zone, about="server group"):
            ids = sorted(str(g.id) for g in self.conn.compute.server_groups() if g.name == name)
        return ids[0] if ids else None

    def _resolve_flavor(self, name: str) -> str:
        """The remote id of the broker flavor ``name`` (mapped through ``flavor_map``).

        :raises PermanentError: the remote cloud has no such flavor.
        """
        from openstack.exceptions import NotFoundException

        ref = self._flavor(name)
        with translated(self.zone):
            # ignore_missing=True is deprecated in openstacksdk (its default turns False
            # in 6.0): a missing flavor is the exception, caught here.
            try:
                flavor = self.conn.compute.find_flavor(ref, ignore_missing=False)
            except NotFoundException:
                flavor = None
        if flavor is None:
            raise PermanentError(self.zone, f"the remote cloud has no flavor {ref!r}")
        return str(flavor.id)

    def _server_name(self, name: str, uuid: str) -> str:
        """``<name>-<uuid>`` (the uuid alone for an empty name), the name cut to fit Nova's
        255 characters: the uuid in the name is what :meth:`_find` filters on."""
        suffix = f"-{uuid}" if name else uuid
        return name[: max(0, _SERVER_NAME_MAX - len(suffix))] + suffix

    def _find(self, uuid: str) -> Any:
        """The remote server of this broker carrying broker uuid ``uuid`` in its metadata,
        or None: one GET when its id is known, else one server list filtered by name on
        the remote side (see the module docstring), else, once per driver object and only
        if no full listing has been made, one scan for servers named the old way."""
        from openstack.exceptions import NotFoundException

        known = self._ids.get(uuid)
        with translated(self.zone, uuid=uuid):
            if known is not None:
                try:
                    server = self.conn.compute.get_server(known)
                except NotFoundException:
                    server = None
                if server is not None and self._owns(server, uuid):
                    return server
                self._ids.pop(uuid, None)
            # No paging parameters: one filtered answer fits in the remote's first page.
            for server in self.conn.compute.servers(details=True, name=uuid):
                if self._owns(server, uuid):
                    self._ids[uuid] = str(server.id)
                    return server
            return self._index_unfiltered(uuid)

    def _index_unfiltered(self, uuid: str) -> Any:
        """Scan the project once for servers of this broker whose names do not carry their
        uuid (made before names did), learning every one's id; the server carrying
        ``uuid`` if the scan meets it, else None. Later calls scan nothing: a server named
        the old way is never made again, so all of them have been learnt."""
        with self._indexing:
            if self._indexed:
                return None
            found = None
            for server in self.conn.compute.servers(details=True):
                if not self._mine(server):
                    continue
                owner = str(server.metadata[self._key("instance-uuid")])
                self._ids.setdefault(owner, str(server.id))
                if owner == uuid:
                    found = server
            self._indexed = True
        return found

    def _mine(self, server: Any) -> bool:
        """Made by this broker: its id and an instance uuid in the server's metadata."""
        meta = server.metadata or {}
        return (
            meta.get(self._key("broker-id")) == self.context.broker_id
            and self._key("instance-uuid") in meta
        )

    def _owns(self, server: Any, uuid: str) -> bool:
        return self._mine(server) and server.metadata[self._key("instance-uuid")] == uuid

    def _wait(self, server_id: str, uuid: str, target: PowerState | None = None) -> Any:
        """Poll (bounded by ``wait_timeout``) until the server settles: reaches ``target``
        (or any settled state) with no task in progress, or fails. On timeout the current
        state is returned and the monitor's sync carries on from there."""
        deadline = self.clock() + self.options.wait_timeout
        while True:
            with translated(self.zone, uuid=uuid):
                server = self.conn.compute.get_server(server_id)
            state = power_state(server.status)
            busy = bool(getattr(server, "task_state", None))
            done = state is target if target is not None else state in _SETTLED
            if (done and not busy) or state in (PowerState.ERROR, PowerState.DELETED):
                return server
            if self.clock() >= deadline:
                return server
            self.sleep(self.options.poll_interval)

    def _wait_gone(self, server_id: str, uuid: str) -> None:
        """Deletes are asynchronous in Nova: wait (bounded) until the server is gone, so
        that a deleted instance is never listed or found again."""
        from openstack.exceptions import NotFoundException

        deadline = self.clock() + self.options.wait_timeout
        while self.clock() < deadline:
            try:
                with translated(self.zone, uuid=uuid):
                    server = self.conn.compute.get_server(server_id)
            except InstanceNotFound:
                break
            except NotFoundException:
                break
            if power_state(server.status) is PowerState.DELETED:
                break
            self.sleep(self.options.poll_interval)
        else:
            raise TransientError(self.zone, f"{uuid} still exists after the delete was accepted")
        self._ids.pop(uuid, None)

    def _act(self, uuid: str, action: str, *, hard: bool = False) -> RemoteInstance:
        server = self._find(uuid)
        if server is None:
            raise InstanceNotFound(self.zone, f"no instance for {uuid}")
        state = power_state(server.status)
        with translated(self.zone, uuid=uuid):
            if action == "start" and state is not PowerState.ACTIVE:
                self.conn.compute.start_server(server.id)
            elif action == "stop" and state is not PowerState.SHUTOFF:
                self.conn.compute.stop_server(server.id)
            elif action == "reboot":
                self.conn.compute.reboot_server(server.id, "HARD" if hard else "SOFT")
        target = PowerState.SHUTOFF if action == "stop" else PowerState.ACTIVE
        return self._remote(self._wait(server.id, uuid, target))

    def _remote(self, server: Any) -> RemoteInstance:
        meta = server.metadata or {}
        addresses: dict[str, list[str]] = {}
        for net, entries in (server.addresses or {}).items():
            addresses[net] = [e.get("addr", "") for e in entries if isinstance(e, dict)]
        return RemoteInstance(
            uuid=meta.get(self._key("instance-uuid"), ""),
            remote_id=str(server.id),
            state=power_state(server.status),
            host=getattr(server, "availability_zone", None) or None,
            addresses=addresses,
            launched_at=remote_time(getattr(server, "launched_at", None)),
            extra={"remote_status": server.status, "remote_name": server.name},
        )
