"""Options of the ``aws`` driver, validated from a zone's ``options`` table.

There is deliberately no option for an access key, a secret key or a session token:
credentials come from boto3's standard chain (environment, shared config and
credentials files, container or instance role), optionally narrowed to a named
``profile``. A key written into the options table is an unknown key and stops the
broker at start-up, so no secret ever sits in the configuration or the policy.

The one exception is ``stand_in``: a zone whose endpoint is a local EC2 imitation (the
embedded default's moto server) signs with fixed dummy credentials instead, and is
refused any endpoint that is not a loopback address. See :func:`drivers.aws.client.make_client`.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, StringConstraints, field_validator, model_validator

from federator.driver import DriverOptions

__all__ = ["EBS_VOLUME_TYPES", "AwsOptions", "SubnetStrategy"]

SubnetStrategy = Literal["spread", "first"]

# Every EBS volume type CreateVolume accepts; a volume type's backend must be one of them.
EBS_VOLUME_TYPES: frozenset[str] = frozenset({"standard", "io1", "io2", "gp2", "gp3", "sc1", "st1"})

_Name = Annotated[str, StringConstraints(min_length=1, max_length=255, strip_whitespace=True)]
_AwsId = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=r"^[\w.:/-]+$")]

# Tag keys are at most 128 characters; the longest key the driver adds is
# "<prefix>instance-uuid" (13 characters after the prefix).
_TAG_PREFIX_MAX = 128 - len("instance-uuid")


class AwsOptions(DriverOptions):
    """One AWS region, or an EC2-compatible endpoint, seen as one virtual zone.

    ``flavor_map`` maps the broker's flavor names to EC2 instance types and
    ``image_map`` maps the broker's image ids or names to AMI ids. Both are checked
    against the broker's catalog at start-up (:meth:`AwsDriver.validate_catalog`).
    """

    region: _AwsId = Field(description="AWS region, e.g. eu-west-1")
    endpoint_url: str | None = Field(
        default=None,
        description="EC2 endpoint to use instead of AWS's own (EC2-compatible clouds, tests)",
    )
    profile: _Name | None = Field(
        default=None, description="named profile of the shared AWS config files"
    )
    subnet_ids: tuple[_AwsId, ...] = Field(
        min_length=1, description="subnets instances are launched into"
    )
    subnet_strategy: SubnetStrategy = Field(
        default="spread",
        description='"spread": each instance uuid picks one subnet, evenly; "first": always '
        "the first subnet",
    )
    security_group_ids: tuple[_AwsId, ...] = Field(
        default=(), description="security groups of every instance"
    )
    key_name: _Name | None = Field(default=None, description="EC2 key pair name")
    flavor_map: dict[_Name, _AwsId] = Field(
        default_factory=dict, description="broker flavor name -> EC2 instance type"
    )
    image_map: dict[_Name, _AwsId] = Field(
        default_factory=dict, description="broker image id or name -> AMI id"
    )
    batch_size: int = Field(
        default=500, ge=5, le=1000, description="page size of DescribeInstances calls"
    )
    connect_timeout: float = Field(default=10.0, gt=0, le=300, description="seconds")
    read_timeout: float = Field(default=60.0, gt=0, le=900, description="seconds")
    max_attempts: int = Field(
        default=5,
        ge=1,
        le=20,
        description="attempts per API call, first included (botocore standard retry mode)",
    )
    max_connections: int = Field(
        default=32, ge=1, le=1000, description="HTTP connection pool size of the client"
    )
    wait_timeout: float = Field(
        default=600.0,
        ge=0,
        le=3600,
        description="seconds create/start/stop wait for running or stopped; 0: do not wait",
    )
    poll_interval: float = Field(
        default=5.0, gt=0, le=300, description="seconds between state polls while waiting"
    )
    stand_in: bool = Field(
        default=False,
        description="the endpoint is a local EC2 stand-in: sign with fixed dummy credentials "
        "and never read the credential chain; endpoint_url must be a loopback address",
    )
    tag_prefix: str = Field(
        default="federator:",
        min_length=1,
        max_length=_TAG_PREFIX_MAX,
        description="prefix of the tag keys that mark the broker's instances and volumes",
    )
    volume_type: str = Field(
        default="gp3",
        description="EBS volume type of a volume whose volume type names no backend",
    )
    volume_quota_gb: int | None = Field(
        default=None,
        ge=1,
        description="GB of EBS volumes the broker may keep in the zone (its one pool's "
        "capacity); None: no bound",
    )

    @field_validator("endpoint_url")
    @classmethod
    def _plain_endpoint(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL")
        if parts.username is not None or parts.password is not None:
            # Rejected without echoing the value: it would put a secret in the error.
            raise ValueError("must not carry credentials; use the AWS credential chain")
        return value

    @model_validator(mode="after")
    def _stand_in_stays_local(self) -> AwsOptions:
        if not self.stand_in:
            return self
        if self.profile is not None:
            raise ValueError("stand_in: a stand-in signs with dummy credentials; remove profile")
        host = urlsplit(self.endpoint_url).hostname if self.endpoint_url else None
        if host is None or not _is_loopback(host):
            raise ValueError(
                "stand_in: endpoint_url must be an http(s) URL on a loopback address "
                "(127.0.0.0/8 or ::1)"
            )
        return self

    @field_validator("volume_type")
    @classmethod
    def _known_volume_type(cls, value: str) -> str:
        if value not in EBS_VOLUME_TYPES:
            raise ValueError("must be one of " + ", ".join(sorted(EBS_VOLUME_TYPES)))
        return value

    @field_validator("tag_prefix")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value.lower().startswith("aws:"):
            raise ValueError('tag keys starting with "aws:" are reserved by AWS')
        return value


def _is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback IP literal; names are refused, since a name can
    resolve anywhere."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
