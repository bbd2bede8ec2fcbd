"""The ``aws`` driver: one AWS region (or EC2-compatible cloud) as a virtual zone.

Every instance the driver launches carries four tags (keys start with the zone's
``tag_prefix``, ``federator:`` by default): ``instance-uuid`` (the broker's uuid),
``broker-id``, ``zone`` and ``project``, plus ``Name``. The tags, not a local
database, are the driver's memory: ``get``, ``delete`` and the power actions find
an instance by its uuid tag, and ``list_instances`` returns what carries this
broker's id and zone.

``create`` is idempotent on the uuid twice over. It first looks the uuid up by tag
and returns what it finds, so a retry after a lost response finds the instance the
first attempt launched; and it sends a ``ClientToken`` derived from the zone and
uuid, which makes AWS itself answer a repeated launch with the first one's
instance. Concurrent creates of one uuid inside one broker are serialised.

EC2 starts and stops instances asynchronously. ``create``, ``start`` and ``stop``
poll (every ``poll_interval`` seconds, at most ``wait_timeout``) until the instance
is running or stopped, and return what they last saw when the wait runs out.
Replace :attr:`AwsDriver.sleep` and :attr:`AwsDriver.monotonic` on an instance to
control that waiting in tests.

The zone's block storage is EBS (:mod:`drivers.aws.blockstorage`), built on the first
:meth:`AwsDriver.block_storage` call and sharing this driver's client and tag keys.

Operator helper outside the contract: :attr:`AwsDriver.ex_client`, the EC2 client,
for registering botocore event hooks.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, ClassVar

from drivers.aws.blockstorage import EbsBlockStorage, TagKeys
from drivers.aws.client import guard_credential_logs, make_client
from drivers.aws.errors import launch_failure, translated
from drivers.aws.options import AwsOptions
from drivers.aws.states import GONE, LIVE, power_state
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
    ZoneContext,
    ZoneHealth,
)
from federator.exception import ConfigError
from federator.keyedlocks import KeyedLocks

__all__ = ["AwsDriver", "client_token"]

LOG = logging.getLogger(__name__)

Instance = dict[str, Any]  # one element of DescribeInstances' Reservations[].Instances[]

_MAX_TAG_VALUE = 256
_EPOCH = datetime.min.replace(tzinfo=UTC)
# The states an instance passes through on its way to a target state.
_TOWARDS: Mapping[str, frozenset[str]] = MappingProxyType(
    {"running": frozenset({"pending"}), "stopped": frozenset({"stopping"})}
)


def client_token(zone: str, uuid: str) -> str:
    """The RunInstances ``ClientToken`` for ``uuid`` in ``zone``: deterministic, 64 chars.

    The zone is part of it so that two zones sharing an account and region never
    present one token with two different launch requests.
    """
    return hashlib.sha256(f"{zone}/{uuid}".encode()).hexdigest()


class AwsDriver(Driver):
    """An AWS region as an opaque zone; see the module docstring and :class:`AwsOptions`."""

    options_model: ClassVar[type[DriverOptions]] = AwsOptions
    sleep: Callable[[float], None] = staticmethod(time.sleep)
    monotonic: Callable[[], float] = staticmethod(time.monotonic)

    def __init__(self, context: ZoneContext) -> None:
        """Build the one boto3 session and EC2 client of this zone; calls nothing remote.

        :raises ConfigError: the named profile does not exist.
        """
        super().__init__(context)
        opts = context.options
        self.options = (
            opts if isinstance(opts, AwsOptions) else AwsOptions.model_validate(opts.model_dump())
        )
        prefix = self.options.tag_prefix
        self.uuid_tag = f"{prefix}instance-uuid"
        self.broker_tag = f"{prefix}broker-id"
        self.zone_tag = f"{prefix}zone"
        self.project_tag = f"{prefix}project"
        self._images: Mapping[str, str] = MappingProxyType(dict(self.options.image_map))
        self._locks = KeyedLocks()
        guard_credential_logs()
        self._client = make_client(self.options, context.zone)
        self._storage: EbsBlockStorage | None = None
        self._storage_lock = threading.Lock()

    # --- start-up check, outside the contract until the core calls it ------------------

    def validate_catalog(
        self,
        flavors: Sequence[str],
        images: Mapping[str, str],
    ) -> None:
        """Check that every catalog flavor and image has an EC2 counterpart.

        ``flavors`` are flavor names, looked up in ``flavor_map``. ``images`` maps each
        image id (what the broker puts in ``InstanceSpec.image``) to its name, so that
        ``image_map`` may be keyed by either. Images mapped by name are remembered by
        id for :meth:`create`.

        :raises ConfigError: listing every unmapped flavor and image.
        """
        names = images
        missing_flavors = sorted({f for f in flavors if f not in self.options.flavor_map})
        resolved = dict(self.options.image_map)
        missing_images: list[str] = []
        for ref in images:
            name = names.get(ref)
            if ref in resolved:
                continue
            if name is not None and name in self.options.image_map:
                resolved[ref] = self.options.image_map[name]
            else:
                missing_images.append(f"{ref} ({name})" if name and name != ref else ref)
        problems = []
        if missing_flavors:
            problems.append(
                "flavors without an instance type in flavor_map: " + ", ".join(missing_flavors)
            )
        if missing_images:
            problems.append(
                "images without an AMI in image_map: " + ", ".join(sorted(set(missing_images)))
            )
        if problems:
            raise ConfigError(reason=f"zone {self.zone!r} (driver 'aws'): " + "; ".join(problems))
        self._images = MappingProxyType(resolved)

    # --- the contract ------------------------------------------------------------------

    def capabilities(self) -> Capabilities:
        return Capabilities(host_scheduling=False)

    def list_hosts(self) -> Sequence[HostInfo]:
        return []

    def create(self, spec: InstanceSpec) -> RemoteInstance:
        """Launch one instance for ``spec`` and wait until it runs; idempotent on the uuid.

        ``spec.host`` is ignored: EC2 places the instance in the chosen subnet's AZ.
        When EC2 accepts the launch but then terminates the instance (its
        ``StateReason`` says why), nothing is left running and the reason is raised.

        :raises PermanentError: the flavor or image is not mapped, or EC2 refused the
            request as asked; nothing was launched.
        :raises CapacityError: insufficient capacity or an account limit in this zone.
        :raises TransientError: throttled, 5xx or timed out after botocore's retries;
            a launch may have happened, and the retry finds it by its uuid tag.
        :raises AuthError: the zone's credentials are rejected.
        """
        image_id, instance_type = self._launch_target(spec)
        with self._locks.held(spec.uuid):
            found = self._find(spec.uuid, "create")
            if found is None:
                found = self._launch(spec, image_id, instance_type)
            else:
                LOG.info("zone %s: %s already exists as %s", self.zone, spec.uuid, _id(found))
            found = self._wait(found, "running", "create")
        if _state(found) in GONE:
            reason = found.get("StateReason") or {}
            raise launch_failure(
                self.zone,
                spec.uuid,
                str(reason.get("Code") or "Unknown"),
                str(reason.get("Message") or _state(found)),
            )
        return self._to_remote(found, spec.uuid)

    def delete(self, uuid: str) -> None:
        """Terminate every live instance tagged with ``uuid``; none is success."""
        with self._locks.held(uuid):
            ids = [_id(i) for i in self._find_all(uuid, "delete")]
            if not ids:
                return
            try:
                with translated(self.zone, "TerminateInstances"):
                    self._client.terminate_instances(InstanceIds=ids)
            except InstanceNotFound:
                return
        LOG.info("zone %s: terminating %s (%s)", self.zone, uuid, ", ".join(ids))

    def get(self, uuid: str) -> RemoteInstance:
        return self._to_remote(self._require(uuid, "get"), uuid)

    def list_instances(self, batch_size: int = 500) -> Iterator[Sequence[RemoteInstance]]:
        """Live instances tagged with this broker's id and this zone, following every page.

        Pages are ``options.batch_size`` reservations each; batches are regrouped to
        exactly ``batch_size`` instances (the last may be smaller).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        batch: list[RemoteInstance] = []
        for instance in self._describe("list_instances", self._owner_filters()):
            uuid = _tags(instance).get(self.uuid_tag)
            if not uuid:
                continue
            batch.append(self._to_remote(instance, uuid))
            if len(batch) == batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    def start(self, uuid: str) -> RemoteInstance:
        with self._locks.held(uuid):
            instance = self._start(self._require(uuid, "start"))
        return self._to_remote(instance, uuid)

    def stop(self, uuid: str) -> RemoteInstance:
        with self._locks.held(uuid):
            instance = self._require(uuid, "stop")
            if _state(instance) == "pending":
                instance = self._wait(instance, "running", "stop")
            if _state(instance) == "running":
                with translated(self.zone, "StopInstances"):
                    answer = self._client.stop_instances(InstanceIds=[_id(instance)])
                instance = _with_state(instance, answer.get("StoppingInstances"))
            instance = self._wait(instance, "stopped", "stop")
        return self._to_remote(instance, uuid)

    def reboot(self, uuid: str, *, hard: bool = False) -> RemoteInstance:
        """Reboot through EC2 (which forces a hard reset itself if the OS does not
        shut down cleanly); a stopped instance is started instead. ``hard`` changes
        nothing: a stop and start would move the instance to another host and change
        its public address.
        """
        with self._locks.held(uuid):
            instance = self._require(uuid, "reboot")
            if _state(instance) in ("stopping", "stopped"):
                instance = self._start(instance)
            else:
                instance = self._wait(instance, "running", "reboot")
                if _state(instance) == "running":
                    with translated(self.zone, "RebootInstances"):
                        self._client.reboot_instances(InstanceIds=[_id(instance)])
        return self._to_remote(instance, uuid)

    def health(self) -> ZoneHealth:
        """One small DescribeInstances call, the permission every other method needs."""
        try:
            with translated(self.zone, "DescribeInstances"):
                self._client.describe_instances(Filters=self._owner_filters(), MaxResults=5)
        except AuthError as exc:
            return ZoneHealth(ok=False, detail=f"credentials were rejected: {exc.reason}")
        except DriverError as exc:
            return ZoneHealth(ok=False, detail=exc.reason)
        except Exception as exc:
            LOG.warning("zone %s: health probe failed with %s", self.zone, type(exc).__name__)
            return ZoneHealth(ok=False, detail=f"unexpected {type(exc).__name__}")
        return ZoneHealth(ok=True, detail=f"EC2 in {self.options.region} answered")

    def block_storage(self) -> EbsBlockStorage:
        """The zone's EBS volumes: made on the first call (no remote call), the same
        object after."""
        with self._storage_lock:
            if self._storage is None:
                self._storage = EbsBlockStorage(
                    self.zone,
                    broker_id=self.context.broker_id,
                    options=self.options,
                    client=self._client,
                    tags=TagKeys(
                        volume_uuid=f"{self.options.tag_prefix}volume-uuid",
                        server_uuid=self.uuid_tag,
                        broker=self.broker_tag,
                        zone=self.zone_tag,
                        project=self.project_tag,
                    ),
                    find_server=lambda uuid: self._find(uuid, "attach_volume"),
                )
            return self._storage

    def close(self) -> None:
        self._client.close()

    # --- operator helpers, outside the contract ----------------------------------------

    @property
    def ex_client(self) -> Any:
        """The zone's boto3 EC2 client (thread-safe), e.g. to register event hooks."""
        return self._client

    # --- internals ---------------------------------------------------------------------

    def _launch_target(self, spec: InstanceSpec) -> tuple[str, str]:
        instance_type = self.options.flavor_map.get(spec.flavor.name)
        image_id = self._images.get(spec.image)
        missing = []
        if instance_type is None:
            missing.append(f"flavor {spec.flavor.name!r} has no instance type in flavor_map")
        if image_id is None:
            missing.append(f"image {spec.image!r} has no AMI in image_map")
        if missing or instance_type is None or image_id is None:
            raise PermanentError(self.zone, f"cannot create {spec.uuid}: " + "; ".join(missing))
        return image_id, instance_type

    def _launch(self, spec: InstanceSpec, image_id: str, instance_type: str) -> Instance:
        tags = [
            {"Key": self.uuid_tag, "Value": spec.uuid},
            {"Key": self.broker_tag, "Value": spec.broker_id},
            {"Key": self.zone_tag, "Value": self.zone},
            {"Key": self.project_tag, "Value": spec.project_id},
            {"Key": "Name", "Value": spec.name[:_MAX_TAG_VALUE]},
        ]
        params: dict[str, Any] = {
            "ImageId": image_id,
            "InstanceType": instance_type,
            "MinCount": 1,
            "MaxCount": 1,
            "SubnetId": self._subnet(spec.uuid),
            "ClientToken": client_token(self.zone, spec.uuid),
            "TagSpecifications": [
                {"ResourceType": "instance", "Tags": tags},
                {"ResourceType": "volume", "Tags": tags},
            ],
        }
        if self.options.security_group_ids:
            params["SecurityGroupIds"] = list(self.options.security_group_ids)
        if self.options.key_name:
            params["KeyName"] = self.options.key_name
        with translated(self.zone, "RunInstances"):
            answer = self._client.run_instances(**params)
        instance: Instance = answer["Instances"][0]
        LOG.info(
            "zone %s: launched %s for %s (%s, %s)",
            self.zone,
            _id(instance),
            spec.uuid,
            instance_type,
            image_id,
        )
        return instance

    def _subnet(self, uuid: str) -> str:
        """The subnet for ``uuid``: the same one on every retry, so the ClientToken's
        request never changes; ``spread`` distributes uuids evenly over the subnets.
        """
        subnets = self.options.subnet_ids
        if self.options.subnet_strategy == "first" or len(subnets) == 1:
            return subnets[0]
        digest = hashlib.sha256(uuid.encode()).digest()
        return subnets[int.from_bytes(digest[:8], "big") % len(subnets)]

    def _start(self, instance: Instance) -> Instance:
        if _state(instance) == "stopping":
            instance = self._wait(instance, "stopped", "start")
        if _state(instance) == "stopped":
            with translated(self.zone, "StartInstances"):
                answer = self._client.start_instances(InstanceIds=[_id(instance)])
            instance = _with_state(instance, answer.get("StartingInstances"))
        return self._wait(instance, "running", "start")

    def _wait(self, instance: Instance, target: str, operation: str) -> Instance:
        """Poll ``instance`` while it is on its way to ``target`` ("running" or
        "stopped"), at most ``wait_timeout``; return the last description seen. Right
        after a launch EC2 may not know the new id yet (eventual consistency), so
        not-found only means "poll again".
        """
        deadline = self.monotonic() + self.options.wait_timeout
        while _state(instance) in _TOWARDS[target]:
            if self.monotonic() >= deadline:
                LOG.info(
                    "zone %s: %s still %s after %.0f s; %s returns it as it is",
                    self.zone,
                    _id(instance),
                    _state(instance),
                    self.options.wait_timeout,
                    operation,
                )
                return instance
            self.sleep(self.options.poll_interval)
            try:
                with translated(self.zone, "DescribeInstances"):
                    answer = self._client.describe_instances(InstanceIds=[_id(instance)])
            except InstanceNotFound:
                continue
            fresh = [i for r in answer.get("Reservations", []) for i in r.get("Instances", [])]
            if fresh:
                instance = fresh[0]
        return instance

    def _owner_filters(self) -> list[dict[str, Any]]:
        return [
            {"Name": f"tag:{self.broker_tag}", "Values": [self.context.broker_id]},
            {"Name": f"tag:{self.zone_tag}", "Values": [self.zone]},
            {"Name": "instance-state-name", "Values": list(LIVE)},
        ]

    def _describe(self, operation: str, filters: list[dict[str, Any]]) -> Iterator[Instance]:
        """Every instance matching ``filters``, following NextToken page by page."""
        paginator = self._client.get_paginator("describe_instances")
        pages = iter(
            paginator.paginate(
                Filters=filters, PaginationConfig={"PageSize": self.options.batch_size}
            )
        )
        while True:
            with translated(self.zone, f"{operation}: DescribeInstances"):
                page = next(pages, None)
            if page is None:
                return
            for reservation in page.get("Reservations", []):
                yield from reservation.get("Instances", [])

    def _find_all(self, uuid: str, operation: str) -> list[Instance]:
        """Live instances of this broker and zone tagged ``uuid``, oldest first."""
        filters = [{"Name": f"tag:{self.uuid_tag}", "Values": [uuid]}, *self._owner_filters()]
        found = list(self._describe(operation, filters))
        return sorted(found, key=lambda i: (i.get("LaunchTime") or _EPOCH, _id(i)))

    def _find(self, uuid: str, operation: str) -> Instance | None:
        found = self._find_all(uuid, operation)
        if len(found) > 1:
            LOG.warning(
                "zone %s: %d instances carry uuid %s (%s); using the oldest",
                self.zone,
                len(found),
                uuid,
                ", ".join(_id(i) for i in found),
            )
        return found[0] if found else None

    def _require(self, uuid: str, operation: str) -> Instance:
        found = self._find(uuid, operation)
        if found is None:
            raise InstanceNotFound(self.zone, f"no instance {uuid}")
        return found

    def _to_remote(self, instance: Instance, uuid: str) -> RemoteInstance:
        addresses: dict[str, list[str]] = {}
        if instance.get("PrivateIpAddress"):
            addresses["private"] = [instance["PrivateIpAddress"]]
        if instance.get("PublicIpAddress"):
            addresses["public"] = [instance["PublicIpAddress"]]
        launched = instance.get("LaunchTime")
        return RemoteInstance(
            uuid=uuid,
            remote_id=_id(instance),
            state=power_state(_state(instance)),
            host=None,
            addresses=addresses,
            launched_at=launched if isinstance(launched, datetime) else None,
            extra={
                "instance_type": instance.get("InstanceType"),
                "image_id": instance.get("ImageId"),
                "subnet_id": instance.get("SubnetId"),
                "availability_zone": (instance.get("Placement") or {}).get("AvailabilityZone"),
                "security_groups": [g["GroupId"] for g in instance.get("SecurityGroups", [])],
                "ec2_state": _state(instance),
            },
        )


def _id(instance: Instance) -> str:
    return str(instance["InstanceId"])


def _state(instance: Instance) -> str:
    return str((instance.get("State") or {}).get("Name", ""))


def _tags(instance: Instance) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in instance.get("Tags", [])}


def _with_state(instance: Instance, changes: list[dict[str, Any]] | None) -> Instance:
    """``instance`` with the state a Start/StopInstances answer reports for it."""
    for change in changes or []:
        if change.get("InstanceId") == _id(instance) and change.get("CurrentState"):
            return {**instance, "State": change["CurrentState"]}
    return instance
