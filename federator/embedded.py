"""The embedded default's AWS zone: the ``aws`` driver against an in-process moto server.

When the broker runs on the built-in zone list (neither the configuration file nor
``FEDERATOR_ZONES`` sets ``zones``), the zone ``aws-standin`` is an ``aws`` zone whose
EC2 endpoint is moto's ``ThreadedMotoServer`` on 127.0.0.1 and a free port, started by
:func:`prepare`. No AWS account is involved: the server imitates the EC2 API in this
process, seeded with a VPC, a subnet, a security group and one AMI per catalog image,
and the zone's driver options are filled in from what was seeded. A configuration that
lists its zones never starts it.

Credentials stay contained: the zone's options set ``stand_in``, which makes the driver
sign with fixed dummy credentials on its own boto3 session (never the credential chain,
never ``os.environ``) and refuse any endpoint that is not a loopback address.

moto is the ``embedded`` extra (``pip install 'federator[embedded]'``). Without it the
zone keeps its name, so the default policy still holds, but is a simulated (``sim``)
stand-in, and a warning says so.

The stand-in's state lives in memory: after a restart, instances the broker had in
``aws-standin`` are gone and the monitor marks their records vanished. moto's state is
also shared by everything in the process, so brokers started in one process see one
imitation of EC2.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Protocol

from federator.config import (
    STAND_IN_LABEL,
    STAND_IN_ZONE,
    FlavorConfig,
    ImageConfig,
    Settings,
    ZoneConfig,
)
from federator.exception import ConfigError

__all__ = [
    "REGION",
    "StandIn",
    "instance_type_for",
    "prepare",
    "simulated_stand_in",
    "uses_builtin_zones",
]

LOG = logging.getLogger(__name__)

REGION = "us-east-1"
# What the seeding client signs with; moto checks no signature. Not the driver's
# constant: the core does not import drivers.
_SEED_CREDENTIALS = {
    "aws_access_key_id": "STAND-IN-NOT-A-KEY",
    "aws_secret_access_key": "stand-in-not-a-secret",
}
_SEED_TAG = "federator:stand-in"
_CIDR = "10.42.0.0/16"
_SUBNET_CIDR = "10.42.0.0/20"

# (instance type, vCPUs, MiB), smallest first: a flavor maps to the first that holds it.
_INSTANCE_TYPES: Sequence[tuple[str, int, int]] = (
    ("t3.nano", 2, 512),
    ("t3.micro", 2, 1024),
    ("t3.small", 2, 2048),
    ("t3.medium", 2, 4096),
    ("t3.large", 2, 8192),
    ("c5.xlarge", 4, 8192),
    ("t3.xlarge", 4, 16384),
    ("t3.2xlarge", 8, 32768),
    ("m5.4xlarge", 16, 65536),
    ("m5.8xlarge", 32, 131072),
    ("m5.16xlarge", 64, 262144),
    ("m5.24xlarge", 96, 393216),
)


class _Server(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def get_host_and_port(self) -> tuple[str, int]: ...


@dataclass
class StandIn:
    """A running stand-in: the zone it backs and its EC2 endpoint."""

    zone: str
    endpoint: str
    region: str
    provider: str
    _server: _Server | None

    def public(self) -> dict[str, str]:
        """What ``GET /federator/v1/zones/{name}`` shows about the stand-in."""
        return {
            "endpoint": self.endpoint,
            "region": self.region,
            "provider": self.provider,
            "credentials": "any (not checked)",
        }

    def stop(self) -> None:
        """Shut the server down and release its port; idempotent."""
        server, self._server = self._server, None
        if server is not None:
            server.stop()
            LOG.info("zone %s: EC2 stand-in at %s stopped", self.zone, self.endpoint)


def uses_builtin_zones(settings: Settings) -> bool:
    """Whether the zone list is the built-in one: no source set ``zones``."""
    return "zones" not in settings.model_fields_set


def prepare(settings: Settings) -> tuple[Settings, StandIn | None]:
    """Complete the built-in ``aws-standin`` zone; other configurations pass unchanged.

    Starts the moto server and returns the settings whose ``aws-standin`` zone points at
    it, with the running :class:`StandIn` (the caller stops it). Without moto, returns
    the settings with a ``sim`` zone of the same name and ``None``.

    :raises ConfigError: moto is installed but the server could not be started or seeded.
    """
    if not uses_builtin_zones(settings) or not any(z.name == STAND_IN_ZONE for z in settings.zones):
        return settings, None
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        LOG.warning(
            "zone %s: moto is not installed (%s), so it is a simulated stand-in instead of "
            "an EC2 API; install federator[embedded] for the in-process EC2 stand-in",
            STAND_IN_ZONE,
            exc,
        )
        return _replace_zone(settings, simulated_stand_in()), None
    # werkzeug logs every request at INFO; the broker's log is for its own decisions.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    stand_in = StandIn(
        zone=STAND_IN_ZONE,
        endpoint=f"http://{host}:{port}",
        region=REGION,
        provider=f"moto {_version('moto')}",
        _server=server,
    )
    try:
        options = _seed(stand_in.endpoint, settings.flavors, settings.images)
    except Exception as exc:
        stand_in.stop()
        raise ConfigError(
            reason=f"zone {STAND_IN_ZONE}: the embedded EC2 stand-in could not be seeded "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    LOG.info(
        "zone %s: EC2 stand-in (%s, in-process, no AWS account) at %s, region %s; "
        "its state lives in memory only",
        STAND_IN_ZONE,
        stand_in.provider,
        stand_in.endpoint,
        REGION,
    )
    zone = ZoneConfig(
        name=STAND_IN_ZONE, driver="aws", kind="virtual", label=STAND_IN_LABEL, options=options
    )
    return _replace_zone(settings, zone), stand_in


def simulated_stand_in() -> ZoneConfig:
    """The ``aws-standin`` zone as a ``sim`` zone: the fallback without moto, and what
    tests use when they do not need EC2."""
    return ZoneConfig(
        name=STAND_IN_ZONE,
        driver="sim",
        kind="virtual",
        label="simulated stand-in for AWS EC2",
        options={"hosts": 8, "host_ram_mb": 16384, "host_vcpus": 16, "expose_hosts": False},
    )


def instance_type_for(flavor: FlavorConfig) -> str | None:
    """The smallest EC2 instance type that holds ``flavor``'s vCPUs and RAM, if any."""
    for name, vcpus, ram_mb in _INSTANCE_TYPES:
        if vcpus >= flavor.vcpus and ram_mb >= flavor.ram_mb:
            return name
    return None


def _replace_zone(settings: Settings, zone: ZoneConfig) -> Settings:
    zones = [zone if z.name == zone.name else z for z in settings.zones]
    return settings.model_copy(update={"zones": zones})


def _seed(
    endpoint: str, flavors: Sequence[FlavorConfig], images: Sequence[ImageConfig]
) -> dict[str, Any]:
    """Find or create the network and AMIs in the stand-in; the zone's driver options.

    Find-or-create, because moto's state is per process: a broker reopened in the same
    process finds what the first one seeded, and the instances launched into it.
    """
    import boto3
    import botocore.session

    # Like the driver's stand-in session: no shared config, credentials file or
    # AWS_PROFILE is read, so the user's AWS setup can neither break nor reach this.
    unconfigured = botocore.session.Session(
        session_vars={
            "profile": (None, None, None, None),
            "config_file": (None, None, os.devnull, None),
            "credentials_file": (None, None, os.devnull, None),
        }
    )
    session = boto3.session.Session(
        region_name=REGION, botocore_session=unconfigured, **_SEED_CREDENTIALS
    )
    ec2 = session.client("ec2", endpoint_url=endpoint)
    try:
        mine = [{"Name": f"tag:{_SEED_TAG}", "Values": ["true"]}]
        tags = [{"Key": _SEED_TAG, "Value": "true"}, {"Key": "Name", "Value": "federator"}]
        vpcs = ec2.describe_vpcs(Filters=mine)["Vpcs"]
        if vpcs:
            vpc = vpcs[0]["VpcId"]
        else:
            vpc = ec2.create_vpc(
                CidrBlock=_CIDR, TagSpecifications=[{"ResourceType": "vpc", "Tags": tags}]
            )["Vpc"]["VpcId"]
        in_vpc = [*mine, {"Name": "vpc-id", "Values": [vpc]}]
        subnets = ec2.describe_subnets(Filters=in_vpc)["Subnets"]
        if subnets:
            subnet = subnets[0]["SubnetId"]
        else:
            subnet = ec2.create_subnet(
                VpcId=vpc,
                CidrBlock=_SUBNET_CIDR,
                AvailabilityZone=f"{REGION}a",
                TagSpecifications=[{"ResourceType": "subnet", "Tags": tags}],
            )["Subnet"]["SubnetId"]
        groups = ec2.describe_security_groups(Filters=in_vpc)["SecurityGroups"]
        if groups:
            group = groups[0]["GroupId"]
        else:
            group = ec2.create_security_group(
                GroupName="federator",
                Description="instances of the federator broker",
                VpcId=vpc,
                TagSpecifications=[{"ResourceType": "security-group", "Tags": tags}],
            )["GroupId"]
        ours = [{"Name": "name", "Values": ["federator-*"]}]
        amis = {
            i["Name"]: i["ImageId"]
            for i in ec2.describe_images(Owners=["self"], Filters=ours)["Images"]
        }
        image_map: dict[str, str] = {}
        for image in images:
            ami_name = f"federator-{image.name}"
            if ami_name not in amis:
                amis[ami_name] = ec2.register_image(
                    Name=ami_name,
                    Description=f"stand-in for the broker's image {image.name} ({image.id})",
                    RootDeviceName="/dev/xvda",
                )["ImageId"]
            image_map[image.id] = amis[ami_name]
    finally:
        ec2.close()
    flavor_map = {f.name: t for f in flavors if (t := instance_type_for(f)) is not None}
    return {
        "stand_in": True,
        "endpoint_url": endpoint,
        "region": REGION,
        "subnet_ids": [subnet],
        "security_group_ids": [group],
        "flavor_map": flavor_map,
        "image_map": image_map,
        # moto moves pending -> running on the next describe: poll at once, not every 5 s.
        "poll_interval": 0.05,
        "wait_timeout": 30,
    }


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:  # pragma: no cover - imported, so installed
        return "unknown version"
