"""Options of the ``openstack`` driver."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator

from federator.driver import DriverOptions


class OpenStackAuth(DriverOptions):
    """Explicit password authentication. Prefer ``cloud`` (a clouds.yaml entry) so that the
    password stays out of the broker configuration; when given here it is a secret that is
    never logged, shown or put in an error message."""

    auth_url: str
    username: str
    password: SecretStr
    project_name: str
    user_domain_name: str = "Default"
    project_domain_name: str = "Default"


class OpenStackOptions(DriverOptions):
    cloud: str | None = None
    auth: OpenStackAuth | None = None
    region_name: str | None = None
    flavor_map: dict[str, str] = Field(default_factory=dict)
    image_map: dict[str, str] = Field(default_factory=dict)
    network: Literal["auto", "none"] | str = "auto"
    availability_zone: str | None = None
    metadata_prefix: str = "federator:"
    server_groups: bool = True
    """Keep a broker server group's rule here with a remote server group of the same
    policy. False: the zone counts as one host for every group (the remote cloud refuses
    server groups, or has no quota for them)."""
    volumes: bool = True
    """Hold the broker's volumes in the remote cloud's block storage (Cinder v3). False:
    the zone holds no volumes."""
    volume_type: str | None = Field(default=None, min_length=1, max_length=255)
    """The remote volume type (name or id) of a volume whose broker volume type names no
    backend for this zone; None: the remote cloud's default type."""
    volume_quota_gb: int | None = Field(default=None, ge=1)
    """GB of volumes the broker may keep in the remote cloud: the capacity of the zone's
    one pool. None: no bound (the remote cloud's own quota still answers 413)."""
    wait_timeout: float = Field(default=600.0, ge=0)
    poll_interval: float = Field(default=1.0, gt=0)
    api_timeout: float = Field(default=30.0, gt=0)
    batch_size: int = Field(default=500, ge=1)

    @model_validator(mode="after")
    def _one_source_of_credentials(self) -> OpenStackOptions:
        if (self.cloud is None) == (self.auth is None):
            raise ValueError("give exactly one of 'cloud' (a clouds.yaml entry) or 'auth'")
        return self
