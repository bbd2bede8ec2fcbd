"""Options of the ``sim`` driver, validated from a zone's ``options`` table."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from federator.driver import DriverOptions

FailureKind = Literal["capacity", "transient", "permanent"]
VolumePools = Literal["host", "zone"]


class SimOptions(DriverOptions):
    """A simulated pool of identical hypervisor hosts.

    ``expose_hosts`` chooses what the zone looks like to the broker: true makes it a
    local pool whose hosts the broker schedules (``Capabilities.host_scheduling``);
    false makes it an opaque cloud that places each instance itself, best fit first.
    """

    hosts: int = Field(default=4, ge=1, le=100_000, description="number of hosts")
    host_ram_mb: int = Field(default=8192, ge=1, description="RAM of each host, MiB")
    host_vcpus: int = Field(default=8, ge=1, description="physical vCPUs of each host")
    host_disk_gb: int = Field(default=200, ge=1, description="local disk of each host, GiB")
    host_prefix: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description='host names are "<prefix><index>"; default "<zone>-host-"',
    )
    expose_hosts: bool = Field(default=True, description="let the broker schedule hosts")
    failure_rate: float = Field(
        default=0.0, ge=0.0, le=1.0, description="probability that a create fails"
    )
    failure_kind: FailureKind = Field(
        default="capacity", description="the error an injected failure raises"
    )
    seed: int | None = Field(default=None, description="seed for repeatable failures")
    boot_delay_ms: int = Field(default=0, ge=0, description="simulated latency of create")
    volume_delay_ms: int = Field(
        default=0, ge=0, description="simulated latency of a volume's create"
    )
    persist: bool = Field(default=True, description="keep state in <data_dir>/sim.sqlite")
    volumes: bool = Field(default=True, description="hold block-storage volumes")
    volume_pools: VolumePools = Field(
        default="host",
        description='"host": a pool on every host (when hosts are exposed); "zone": one pool',
    )
    volume_pool_gb: int = Field(default=1000, ge=1, description="capacity of each pool, GiB")
    volume_shared: bool | None = Field(
        default=None,
        description="volumes attach to servers on any host; default false for host pools",
    )
