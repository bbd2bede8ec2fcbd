"""EBS volumes as the ``aws`` zone's block storage (:mod:`federator.blockstorage`).

Every volume the driver makes carries tags like an instance's (keys start with the
zone's ``tag_prefix``): ``volume-uuid`` (the broker's volume uuid), ``broker-id``,
``zone`` and ``project``, plus ``Name``. The uuid key is not the instances'
``instance-uuid`` on purpose: RunInstances gives each instance's root volume the
instance's tags, and those volumes are not the broker's. ``list_volumes`` returns the
volumes with a ``volume-uuid`` tag and this broker's id and zone, and nothing else.

Where volumes live: an EBS volume belongs to one availability zone and attaches only to
instances there. The zone's volumes are all made in the availability zone of its first
subnet (asked of DescribeSubnets once), and that AZ is the zone's one pool: ``host``
None, ``capacity_gb`` from ``volume_quota_gb``. A zone whose subnets span several AZs
(``subnet_strategy = "spread"``) launches some servers where its volumes cannot follow;
attaching to one of those is refused naming both AZs (EC2 refuses it too; moto does
not), and a warning says so when the pool is first reported.

``create_volume`` is idempotent on the uuid twice over, as instances are: it looks the
uuid up by tag under a per-uuid lock and returns what it finds, and it sends a
``ClientToken`` derived from the zone and uuid, which makes EC2 answer a repeated
CreateVolume with the first one's volume (moto ignores the token; the lookup holds there).

Devices: a requested name is put in EC2's form (``/dev/vdc`` and ``/dev/hdc`` become
``/dev/sdc``; ``/dev/sdc`` and ``/dev/xvdc`` stay); with none the driver takes the first
of ``/dev/sdf`` to ``/dev/sdp`` the instance does not use (``sdX`` and ``xvdX`` count as
one name, since Xen kernels rename one to the other). Attachments name the broker uuid
of their server, read from the instance's tags (the EC2 instance id for an instance the
broker does not own).
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from drivers.aws.errors import NOT_ATTACHED_CODES, aws_code, translated
from drivers.aws.options import EBS_VOLUME_TYPES, AwsOptions
from drivers.aws.states import LIVE_ATTACHMENTS, LIVE_VOLUMES, volume_state
from federator.blockstorage import (
    BlockStorage,
    PoolInfo,
    RemoteAttachment,
    RemoteVolume,
    StorageCapabilities,
    VolumeNotFound,
    VolumeSpec,
)
from federator.driver import (
    CapacityError,
    InstanceNotFound,
    PermanentError,
    TransientError,
    batched,
)
from federator.keyedlocks import KeyedLocks

__all__ = ["EbsBlockStorage", "TagKeys", "ec2_device", "volume_token"]

LOG = logging.getLogger(__name__)

Volume = dict[str, Any]  # one element of DescribeVolumes' Volumes[]
Instance = dict[str, Any]  # one element of DescribeInstances' Reservations[].Instances[]

_MAX_TAG_VALUE = 256
_EPOCH = datetime.min.replace(tzinfo=UTC)
# DescribeVolumes takes MaxResults 5..500; filters take at most 200 values.
_MAX_VOLUME_PAGE = 500
_MAX_FILTER_VALUES = 200
_REQUESTED = re.compile(r"^/dev/(sd|xvd|vd|hd)([a-z]{1,2})$")
_IN_USE = re.compile(r"^/dev/(?:sd|xvd|vd|hd)([a-z]{1,2})\d*$")
# The names AWS recommends for EBS data volumes on Linux instances.
_FREE_LETTERS = "fghijklmnop"


@dataclass(frozen=True, slots=True)
class TagKeys:
    """The tag keys of the zone: the volume's uuid, the server's uuid on instances, and
    the broker id, zone and project both carry."""

    volume_uuid: str
    server_uuid: str
    broker: str
    zone: str
    project: str


def volume_token(zone: str, uuid: str) -> str:
    """The CreateVolume ``ClientToken`` for volume ``uuid`` in ``zone``: deterministic,
    64 characters (CreateVolume's limit), never equal to an instance's token."""
    return hashlib.sha256(f"{zone}/volume/{uuid}".encode()).hexdigest()


def ec2_device(name: str) -> str | None:
    """``name`` as EC2 names block devices, or None when it is no device name.

    ``vd``/``hd`` names (what a KVM guest calls its disks) become ``sd`` names, which
    is how EC2's API spells them; ``/dev/`` is added when missing.
    """
    text = name.strip()
    if not text.startswith("/dev/"):
        text = f"/dev/{text}"
    match = _REQUESTED.match(text)
    if match is None:
        return None
    prefix, letters = match.groups()
    return f"/dev/{'sd' if prefix in ('vd', 'hd') else prefix}{letters}"


class EbsBlockStorage(BlockStorage):
    """EBS in one availability zone of the ``aws`` zone; see the module docstring.

    ``find_server(uuid)`` is the compute driver's lookup of the live instance tagged
    with broker server uuid ``uuid`` (None when there is none).
    """

    def __init__(
        self,
        zone: str,
        *,
        broker_id: str,
        options: AwsOptions,
        client: Any,
        tags: TagKeys,
        find_server: Callable[[str], Instance | None],
    ) -> None:
        super().__init__(zone)
        self.broker_id = broker_id
        self.options = options
        self.tags = tags
        self._client = client
        self._find_server = find_server
        self._locks = KeyedLocks()  # one per volume uuid
        self._device_locks = KeyedLocks()  # one per instance: picking a free device
        self._az_lock = threading.Lock()
        self._az: str | None = None

    # --- the contract ------------------------------------------------------------------

    def storage_capabilities(self) -> StorageCapabilities:
        return StorageCapabilities(shared=True, multiattach=False)

    def pools(self) -> Sequence[PoolInfo]:
        """One pool: the zone's volume availability zone, bounded by ``volume_quota_gb``."""
        az = self._availability_zone()
        return [
            PoolInfo(
                name=az,
                host=None,
                capacity_gb=self.options.volume_quota_gb,
                extra={"availability_zone": az, "volume_type": self.options.volume_type},
            )
        ]

    def create_volume(self, spec: VolumeSpec) -> RemoteVolume:
        """Create an EBS volume of ``spec.backend`` (else ``volume_type``) in the zone's
        availability zone; EC2 reports it ``creating`` at first, moto ``available``.

        :raises PermanentError: an unknown volume type, another pool, a size below 1 GB
            or one EC2 refuses; nothing was made.
        :raises CapacityError: it does not fit ``volume_quota_gb``, or EC2 is out of
            volume capacity or over an account limit.
        :raises TransientError: throttled, 5xx or timed out; a volume may have been
            made, and the retry finds it by its uuid tag (or its client token).
        :raises AuthError:
        """
        volume_type = spec.backend or self.options.volume_type
        refused = self._refusal(spec, volume_type)
        if refused:
            raise PermanentError(self.zone, f"cannot create volume {spec.uuid}: {refused}")
        az = self._availability_zone()
        if spec.pool is not None and spec.pool != az:
            raise PermanentError(
                self.zone,
                f"cannot create volume {spec.uuid}: no pool {spec.pool!r} (the zone's one "
                f"pool is {az!r})",
            )
        with self._locks.held(spec.uuid):
            found = self._find(spec.uuid, "create_volume")
            if found is not None:
                LOG.info(
                    "zone %s: volume %s already exists as %s", self.zone, spec.uuid, _id(found)
                )
                return self._remote(found, spec.uuid, self._servers([found]))
            self._check_quota(spec)
            made = self._create(spec, az, volume_type)
        return self._remote(made, spec.uuid, {})

    def delete_volume(self, uuid: str) -> None:
        """Delete the volume tagged ``uuid``; none (or one already deleting) is success.

        :raises PermanentError: it is attached (detach it first).
        :raises TransientError: it is still being created; or throttled, 5xx, timed out.
        :raises AuthError:
        """
        with self._locks.held(uuid):
            volume = self._find(uuid, "delete_volume")
            if volume is None:
                return
            attached = _attachments(volume)
            if attached:
                servers = self._servers([volume])
                raise PermanentError(
                    self.zone,
                    f"cannot delete volume {uuid}: it is attached to "
                    + ", ".join(servers.get(a["InstanceId"], a["InstanceId"]) for a in attached),
                )
            if _state(volume) == "creating":
                raise TransientError(self.zone, f"cannot delete volume {uuid} yet: still creating")
            try:
                with translated(self.zone, "DeleteVolume", about="volume"):
                    self._client.delete_volume(VolumeId=_id(volume))
            except VolumeNotFound:
                return
        LOG.info("zone %s: deleting volume %s (%s)", self.zone, uuid, _id(volume))

    def get_volume(self, uuid: str) -> RemoteVolume:
        volume = self._require(uuid, "get_volume")
        return self._remote(volume, uuid, self._servers([volume]))

    def list_volumes(self, batch_size: int = 500) -> Iterator[Sequence[RemoteVolume]]:
        """The broker's volumes of this zone, following every DescribeVolumes page.

        Batches are regrouped to exactly ``batch_size`` volumes (the last may be smaller);
        the servers of each batch's attachments are read with one DescribeInstances.
        """
        owned = (
            v
            for v in self._describe("list_volumes", self._owner_filters())
            if _tags(v).get(self.tags.volume_uuid)
        )
        for batch in batched(owned, batch_size):
            yield self._remotes(batch)

    def attach_volume(self, uuid: str, server_uuid: str, device: str | None) -> RemoteAttachment:
        """Attach the volume to the instance tagged ``server_uuid`` as ``device`` (in EC2's
        form) or the first free of ``/dev/sdf``..``/dev/sdp``; returns the device EC2
        attached it as. EC2 reports the attachment ``attaching`` at first.

        :raises VolumeNotFound, InstanceNotFound: no such volume, no such live server.
        :raises PermanentError: the volume is attached elsewhere or not available; the
            server is in another availability zone; the device is taken or no name.
        :raises TransientError: the volume is still creating, or detaching from the
            server; or throttled, 5xx, timed out.
        :raises AuthError:
        """
        with self._locks.held(uuid):
            volume = self._require(uuid, "attach_volume")
            instance = self._server(server_uuid)
            existing = self._existing_attachment(volume, instance, uuid, server_uuid)
            if existing is not None:
                return existing
            self._check_attachable(volume, instance, uuid, server_uuid)
            with self._device_locks.held(_iid(instance)):
                # Described again under the instance's lock: another attach may have just
                # taken a device.
                instance = self._server(server_uuid)
                name = self._device(instance, device, server_uuid)
                with translated(self.zone, "AttachVolume", about="volume"):
                    answer = self._client.attach_volume(
                        VolumeId=_id(volume), InstanceId=_iid(instance), Device=name
                    )
        LOG.info("zone %s: attached volume %s to %s as %s", self.zone, uuid, server_uuid, name)
        return RemoteAttachment(server_uuid=server_uuid, device=str(answer.get("Device") or name))

    def detach_volume(self, uuid: str, server_uuid: str) -> None:
        """Detach the volume from server ``server_uuid`` (its broker uuid, or the EC2
        instance id of an instance the broker does not own); not attached there is
        success. EC2 reports the volume ``in-use`` (attachment ``detaching``) for a while.

        :raises VolumeNotFound: no such volume.
        :raises TransientError, AuthError, PermanentError:
        """
        with self._locks.held(uuid):
            volume = self._require(uuid, "detach_volume")
            attached = _attachments(volume)
            servers = self._servers([volume]) if attached else {}
            for attachment in attached:
                iid = attachment["InstanceId"]
                if server_uuid not in (iid, servers.get(iid)):
                    continue
                if attachment.get("State") == "detaching":
                    continue
                try:
                    with translated(self.zone, "DetachVolume", about="volume"):
                        self._client.detach_volume(VolumeId=_id(volume), InstanceId=iid)
                except InstanceNotFound:
                    continue  # the instance is gone, and its attachments with it
                except PermanentError as exc:
                    if aws_code(exc) not in NOT_ATTACHED_CODES:
                        raise
                    continue
                LOG.info("zone %s: detaching volume %s from %s", self.zone, uuid, server_uuid)
            if attached:
                self._await_detached(uuid, server_uuid)

    def _await_detached(self, uuid: str, server_uuid: str) -> None:
        """Wait (up to ``wait_timeout``) until EC2 no longer lists the attachment: a real
        EC2 detaches asynchronously, and the volume is not free until it has.

        :raises TransientError: still detaching (the broker retries the detach, which then
            finds it detaching and waits again).
        """
        deadline = time.monotonic() + self.options.wait_timeout
        while True:
            volume = self._require(uuid, "detach_volume")
            servers = self._servers([volume]) if _attachments(volume) else {}
            left = [
                a
                for a in _attachments(volume)
                if server_uuid in (a["InstanceId"], servers.get(a["InstanceId"]))
            ]
            if not left:
                return
            if time.monotonic() >= deadline:
                raise TransientError(
                    self.zone,
                    f"volume {uuid} is still {left[0].get('State', 'attached')} from server "
                    f"{server_uuid}",
                )
            time.sleep(self.options.poll_interval)

    # --- internals ---------------------------------------------------------------------

    def _availability_zone(self) -> str:
        """The zone's volume AZ: the first subnet's, looked up once.

        :raises PermanentError: the subnet is unknown.
        :raises TransientError, AuthError:
        """
        with self._az_lock:
            if self._az is None:
                self._az = self._lookup_availability_zone()
            return self._az

    def _lookup_availability_zone(self) -> str:
        subnets = list(self.options.subnet_ids)
        with translated(self.zone, "DescribeSubnets"):
            answer = self._client.describe_subnets(SubnetIds=subnets)
        azs = {s.get("SubnetId"): s.get("AvailabilityZone") for s in answer.get("Subnets", [])}
        az = azs.get(subnets[0])
        if not az:
            raise PermanentError(self.zone, f"subnet {subnets[0]} has no availability zone")
        others = sorted({str(a) for a in azs.values() if a and a != az})
        if others and self.options.subnet_strategy == "spread":
            LOG.warning(
                "zone %s: volumes are made in %s, but the subnets also put servers in %s, "
                "which cannot attach them; keep a zone with volumes in one availability zone "
                'or use subnet_strategy = "first"',
                self.zone,
                az,
                ", ".join(others),
            )
        return str(az)

    def _refusal(self, spec: VolumeSpec, volume_type: str) -> str | None:
        if volume_type not in EBS_VOLUME_TYPES:
            return f"{volume_type!r} is no EBS volume type ({', '.join(sorted(EBS_VOLUME_TYPES))})"
        if spec.size_gb < 1:
            return f"a size of {spec.size_gb} GB"
        return None

    def _check_quota(self, spec: VolumeSpec) -> None:
        quota = self.options.volume_quota_gb
        if quota is None:
            return
        used = sum(
            int(v.get("Size") or 0) for v in self._describe("create_volume", self._owner_filters())
        )
        if used + spec.size_gb > quota:
            raise CapacityError(
                self.zone,
                f"cannot create volume {spec.uuid}: {spec.size_gb} GB do not fit the zone's "
                f"volume quota ({used} of {quota} GB in use)",
            )

    def _create(self, spec: VolumeSpec, az: str, volume_type: str) -> Volume:
        tags = [
            {"Key": self.tags.volume_uuid, "Value": spec.uuid},
            {"Key": self.tags.broker, "Value": spec.broker_id},
            {"Key": self.tags.zone, "Value": self.zone},
            {"Key": self.tags.project, "Value": spec.project_id},
            {"Key": "Name", "Value": spec.name[:_MAX_TAG_VALUE]},
        ]
        with translated(self.zone, "CreateVolume", about="volume"):
            made: Volume = self._client.create_volume(
                AvailabilityZone=az,
                Size=spec.size_gb,
                VolumeType=volume_type,
                ClientToken=volume_token(self.zone, spec.uuid),
                TagSpecifications=[{"ResourceType": "volume", "Tags": tags}],
            )
        LOG.info(
            "zone %s: created volume %s for %s (%d GB %s in %s)",
            self.zone,
            _id(made),
            spec.uuid,
            spec.size_gb,
            volume_type,
            az,
        )
        return made

    def _existing_attachment(
        self, volume: Volume, instance: Instance, uuid: str, server_uuid: str
    ) -> RemoteAttachment | None:
        """The volume's attachment to ``instance``, None when it has none; refuses it when
        it is attached (or on its way off) elsewhere."""
        attached = _attachments(volume)
        for attachment in attached:
            if attachment["InstanceId"] != _iid(instance):
                continue
            if attachment.get("State") == "detaching":
                raise TransientError(
                    self.zone, f"volume {uuid} is still detaching from {server_uuid}"
                )
            return RemoteAttachment(server_uuid=server_uuid, device=attachment.get("Device"))
        if not attached:
            return None
        servers = self._servers([volume])
        elsewhere = ", ".join(servers.get(a["InstanceId"], a["InstanceId"]) for a in attached)
        if all(a.get("State") == "detaching" for a in attached):
            raise TransientError(self.zone, f"volume {uuid} is still detaching from {elsewhere}")
        raise PermanentError(
            self.zone,
            f"cannot attach volume {uuid} to {server_uuid}: it is attached to {elsewhere} "
            "(EBS volumes here are not multiattach)",
        )

    def _check_attachable(
        self, volume: Volume, instance: Instance, uuid: str, server_uuid: str
    ) -> None:
        state = _state(volume)
        if state == "creating":
            raise TransientError(self.zone, f"volume {uuid} is still creating")
        if state != "available":
            raise PermanentError(self.zone, f"cannot attach volume {uuid}: it is {state}")
        volume_az = volume.get("AvailabilityZone")
        server_az = (instance.get("Placement") or {}).get("AvailabilityZone")
        if volume_az != server_az:
            # EC2 refuses this too (InvalidVolume.ZoneMismatch); stand-ins may not, and the
            # broker deserves a message naming both zones either way.
            raise PermanentError(
                self.zone,
                f"cannot attach volume {uuid} to {server_uuid}: the volume is in availability "
                f"zone {volume_az}, the server in {server_az}; an EBS volume attaches only "
                "to instances of its own availability zone",
                volume_az=volume_az,
                server_az=server_az,
            )

    def _device(self, instance: Instance, requested: str | None, server_uuid: str) -> str:
        """The EC2 device name to attach as: ``requested`` in EC2's form, else the first
        free of /dev/sdf../dev/sdp on ``instance``."""
        used = _used_letters(instance)
        if requested:
            name = ec2_device(requested)
            if name is None:
                raise PermanentError(self.zone, f"{requested!r} is no block device name")
            if _letters(name) in used:
                raise PermanentError(
                    self.zone, f"device {requested} is already in use on server {server_uuid}"
                )
            return name
        for letter in _FREE_LETTERS:
            if letter not in used:
                return f"/dev/sd{letter}"
        raise PermanentError(
            self.zone, f"server {server_uuid} has no free device among /dev/sdf../dev/sdp"
        )

    def _server(self, server_uuid: str) -> Instance:
        instance = self._find_server(server_uuid)
        if instance is None:
            raise InstanceNotFound(self.zone, f"no server {server_uuid}")
        return instance

    def _servers(self, volumes: Iterable[Volume]) -> dict[str, str]:
        """Instance id -> broker server uuid for every attachment of ``volumes``, with
        DescribeInstances calls of up to 200 ids. An instance without this broker's tags
        maps to its own id."""
        ids = sorted({a["InstanceId"] for v in volumes for a in _attachments(v)})
        servers = {iid: iid for iid in ids}
        paginator = self._client.get_paginator("describe_instances")
        for start in range(0, len(ids), _MAX_FILTER_VALUES):
            chunk = ids[start : start + _MAX_FILTER_VALUES]
            pages = paginator.paginate(Filters=[{"Name": "instance-id", "Values": chunk}])
            with translated(self.zone, "DescribeInstances"):
                instances = [
                    i for p in pages for r in p.get("Reservations", []) for i in r["Instances"]
                ]
            for instance in instances:
                tags = _tags(instance)
                uuid = tags.get(self.tags.server_uuid)
                if (
                    uuid
                    and tags.get(self.tags.broker) == self.broker_id
                    and tags.get(self.tags.zone) == self.zone
                ):
                    servers[_iid(instance)] = uuid
        return servers

    def _remotes(self, volumes: Sequence[Volume]) -> list[RemoteVolume]:
        servers = self._servers(volumes)
        return [self._remote(v, _tags(v)[self.tags.volume_uuid], servers) for v in volumes]

    def _remote(self, volume: Volume, uuid: str, servers: dict[str, str]) -> RemoteVolume:
        attachments = tuple(
            RemoteAttachment(
                server_uuid=servers.get(a["InstanceId"], a["InstanceId"]), device=a.get("Device")
            )
            for a in _attachments(volume)
        )
        created = volume.get("CreateTime")
        return RemoteVolume(
            uuid=uuid,
            remote_id=_id(volume),
            size_gb=int(volume.get("Size") or 0),
            state=volume_state(_state(volume)),
            pool=volume.get("AvailabilityZone"),
            attachments=attachments,
            created_at=created if isinstance(created, datetime) else None,
            extra={
                "volume_type": volume.get("VolumeType"),
                "availability_zone": volume.get("AvailabilityZone"),
                "iops": volume.get("Iops"),
                "encrypted": bool(volume.get("Encrypted")),
                "ebs_state": _state(volume),
                "attachment_states": {
                    a["InstanceId"]: a.get("State") for a in _attachments(volume)
                },
            },
        )

    def _owner_filters(self) -> list[dict[str, Any]]:
        return [
            {"Name": f"tag:{self.tags.broker}", "Values": [self.broker_id]},
            {"Name": f"tag:{self.tags.zone}", "Values": [self.zone]},
            {"Name": "tag-key", "Values": [self.tags.volume_uuid]},
            {"Name": "status", "Values": list(LIVE_VOLUMES)},
        ]

    def _describe(self, operation: str, filters: list[dict[str, Any]]) -> Iterator[Volume]:
        """Every volume matching ``filters``, following NextToken page by page."""
        paginator = self._client.get_paginator("describe_volumes")
        size = min(self.options.batch_size, _MAX_VOLUME_PAGE)
        pages = iter(paginator.paginate(Filters=filters, PaginationConfig={"PageSize": size}))
        while True:
            with translated(self.zone, f"{operation}: DescribeVolumes", about="volume"):
                page = next(pages, None)
            if page is None:
                return
            yield from page.get("Volumes", [])

    def _find(self, uuid: str, operation: str) -> Volume | None:
        """The live volume of this broker and zone tagged ``uuid`` (the oldest, should a
        cloud that ignores client tokens hold two)."""
        filters = [
            {"Name": f"tag:{self.tags.volume_uuid}", "Values": [uuid]},
            *self._owner_filters(),
        ]
        found = sorted(
            self._describe(operation, filters),
            key=lambda v: (v.get("CreateTime") or _EPOCH, _id(v)),
        )
        if len(found) > 1:
            LOG.warning(
                "zone %s: %d volumes carry uuid %s (%s); using the oldest",
                self.zone,
                len(found),
                uuid,
                ", ".join(_id(v) for v in found),
            )
        return found[0] if found else None

    def _require(self, uuid: str, operation: str) -> Volume:
        found = self._find(uuid, operation)
        if found is None:
            raise VolumeNotFound(self.zone, f"no volume {uuid}")
        return found


def _id(volume: Volume) -> str:
    return str(volume["VolumeId"])


def _iid(instance: Instance) -> str:
    return str(instance["InstanceId"])


def _state(volume: Volume) -> str:
    return str(volume.get("State") or "")


def _tags(resource: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags", [])}


def _attachments(volume: Volume) -> list[dict[str, Any]]:
    """The attachments still on an instance (attaching, attached, busy or detaching)."""
    return [
        a
        for a in volume.get("Attachments", [])
        if a.get("InstanceId") and (a.get("State") or "attached") in LIVE_ATTACHMENTS
    ]


def _used_letters(instance: Instance) -> set[str]:
    """The device letters ``instance`` uses (its root device and every mapping), with
    ``sdX``, ``xvdX`` and partitions of one disk counted as one."""
    names = [m.get("DeviceName", "") for m in instance.get("BlockDeviceMappings", [])]
    names.append(instance.get("RootDeviceName") or "")
    return {letters for letters in map(_letters, names) if letters}


def _letters(device: str) -> str | None:
    """The disk letters of device name ``device`` ("f" for /dev/sdf, /dev/xvdf1)."""
    match = _IN_USE.match(device)
    return match.group(1) if match else None
