"""Options of the ``libvirt`` driver, validated from a zone's ``options`` table.

A zone is a set of libvirt hypervisors, each named by the operator and reached through
its own connection URI. The names are what the broker's scheduler, its host table and
its records use; the URIs are only for opening connections and are never shown with
their user information (see :func:`drivers.libvirt.errors.redact_uri`).
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, StringConstraints, field_validator, model_validator

from federator.driver import DriverOptions

__all__ = [
    "DEFAULT_NAMESPACE",
    "HostName",
    "LibvirtOptions",
    "in_process_test_uri",
    "uri_driver",
]

DEFAULT_NAMESPACE = "https://federator.dev/xmlns/instance/1"

HostName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")]
_LibvirtName = Annotated[
    str, StringConstraints(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9_.+-]+$")
]
_DomainType = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9]{0,15}$")]


def uri_driver(uri: str) -> str:
    """The hypervisor driver a connection URI names: ``qemu`` for ``qemu+ssh://...``."""
    return urlsplit(uri).scheme.partition("+")[0].lower()


def in_process_test_uri(uri: str) -> bool:
    """Whether ``uri`` opens libvirt's test driver inside this process (``test:///...``).

    Such a connection *is* the simulated host: its state lives in the connection object
    and is lost when the connection closes, so it must never be reopened. A test driver
    behind a daemon (``test+unix://``) keeps its state in the daemon instead.
    """
    return urlsplit(uri).scheme.lower() == "test"


def _private_per_open(uri: str) -> bool:
    return in_process_test_uri(uri) and urlsplit(uri).path != "/default"


class LibvirtOptions(DriverOptions):
    """A local zone of libvirt hypervisors.

    ``hosts`` maps each host's name (what the broker schedules onto) to its libvirt
    URI: ``qemu:///system``, ``qemu+ssh://root@hv1/system``,
    ``test:///abs/path/host1.xml`` for a simulated host. libvirt does not enforce
    capacity; the broker's own accounting does, against the sizes :meth:`list_hosts`
    reports.
    """

    hosts: dict[HostName, str] = Field(
        min_length=1, description="host name -> libvirt connection URI"
    )
    domain_type: _DomainType = Field(
        default="kvm",
        description='<domain type> of new domains; hosts reached through a "test" URI always '
        'use "test"',
    )
    arch: _LibvirtName | None = Field(
        default=None, description="guest architecture (<os><type arch>); default: the host's"
    )
    machine: _LibvirtName | None = Field(
        default=None, description="guest machine type (<os><type machine>), e.g. q35"
    )
    network: _LibvirtName | None = Field(
        default="default",
        description="libvirt network the instance's interface joins, when the host has it; "
        "none: no interface",
    )
    storage_pool: _LibvirtName | None = Field(
        default=None,
        description="storage pool holding each instance's root volume; none: diskless domains",
    )
    image_volumes: dict[str, _LibvirtName] = Field(
        default_factory=dict,
        description="broker image id or name -> base volume in storage_pool that root "
        "volumes are copy-on-write overlays of",
    )
    volume_pool: _LibvirtName | None = Field(
        default="federator-volumes",
        description="storage pool on every host holding the broker's data volumes (block "
        "storage, host-local); the operator defines it, except on test hosts, where the "
        "driver does; none: the zone holds no volumes",
    )
    volume_pool_gb: int = Field(
        default=1000,
        ge=1,
        le=1024**3,
        description="size of volume_pool on hosts reached through a test URI, GiB (the test "
        "driver reports every pool as 100 GiB, so the driver holds volumes to this size "
        "itself); real hosts report their pool's own capacity",
    )
    disk_gb: int = Field(
        default=100,
        ge=0,
        description="disk reported for each host without a storage_pool, GiB (libvirt's "
        "test driver reports every pool as 100 GiB)",
    )
    host_disk_gb: dict[HostName, int] = Field(
        default_factory=dict, description="host name -> disk reported for that host, GiB"
    )
    stop_timeout: float = Field(
        default=60.0,
        ge=0,
        le=3600,
        description="seconds a graceful shutdown may take before the domain is destroyed",
    )
    stop_poll_interval: float = Field(
        default=0.5, gt=0, le=10, description="seconds between state polls while stopping"
    )
    keepalive_interval: int = Field(
        default=5,
        ge=1,
        le=300,
        description="seconds between keepalive probes on remote connections",
    )
    keepalive_count: int = Field(
        default=3,
        ge=1,
        le=100,
        description="unanswered keepalive probes after which a remote connection is dead",
    )
    metadata_namespace: str = Field(
        default=DEFAULT_NAMESPACE,
        min_length=1,
        max_length=255,
        description="XML namespace of the broker's <metadata> element in each domain",
    )

    @field_validator("hosts")
    @classmethod
    def _uris(cls, hosts: dict[str, str]) -> dict[str, str]:
        for name, uri in hosts.items():
            parts = urlsplit(uri)
            if not parts.scheme or "://" not in uri:
                # The URI itself is not echoed: it may carry user information.
                raise ValueError(f"host {name!r}: not a libvirt URI (driver[+transport]://...)")
            if _private_per_open(uri) and not parts.path.endswith(".xml"):
                raise ValueError(
                    f"host {name!r}: a test URI is test:///default or test:///<abs path>.xml"
                )
        # Every in-process open of a test:///<file>.xml is a fresh private host, so such a
        # URI may repeat; any other URI names one host, which two names cannot share.
        uris = [u for u in hosts.values() if not _private_per_open(u)]
        if len(set(uris)) != len(uris):
            raise ValueError("two hosts share one URI; every host needs its own")
        return hosts

    @field_validator("metadata_namespace")
    @classmethod
    def _absolute_uri(cls, value: str) -> str:
        parts = urlsplit(value)
        if not parts.scheme or not (parts.netloc or parts.path):
            raise ValueError("must be an absolute URI, e.g. " + DEFAULT_NAMESPACE)
        return value

    @model_validator(mode="after")
    def _known_hosts(self) -> LibvirtOptions:
        unknown = sorted(set(self.host_disk_gb) - set(self.hosts))
        if unknown:
            raise ValueError(f"host_disk_gb names hosts not in hosts: {', '.join(unknown)}")
        if any(size < 0 for size in self.host_disk_gb.values()):
            raise ValueError("host_disk_gb sizes must be 0 or more")
        if self.image_volumes and self.storage_pool is None:
            raise ValueError("image_volumes needs storage_pool")
        return self

    def domain_type_for(self, uri: str) -> str:
        """The ``<domain type>`` for a host reached through ``uri``."""
        return "test" if self.on_test_driver(uri) else self.domain_type

    def on_test_driver(self, uri: str) -> bool:
        """Whether ``uri`` reaches libvirt's test driver (in process or behind a daemon)."""
        return uri_driver(uri) == "test"

    def disk_of(self, host: str) -> int:
        """The disk size, GiB, reported for ``host``."""
        return self.host_disk_gb.get(host, self.disk_gb)
