"""Host filters: one placement rule per module, composed by the host scheduler."""

from __future__ import annotations

from federator.scheduler.filters.affinity import AffinityFilter
from federator.scheduler.filters.aggregate_extra_specs import AggregateInstanceExtraSpecsFilter
from federator.scheduler.filters.aggregate_image_properties import (
    AggregateImagePropertiesIsolation,
)
from federator.scheduler.filters.aggregate_instance_limit import AggregateNumInstancesFilter
from federator.scheduler.filters.aggregate_tenant_isolation import AggregateMultiTenancyIsolation
from federator.scheduler.filters.anti_affinity import AntiAffinityFilter
from federator.scheduler.filters.availability_zone import AvailabilityZoneFilter
from federator.scheduler.filters.base import HostFilter
from federator.scheduler.filters.disk import DiskFilter
from federator.scheduler.filters.enabled import EnabledFilter
from federator.scheduler.filters.host_instance_limit import NumInstancesFilter
from federator.scheduler.filters.ignore_hosts import IgnoreHostsFilter
from federator.scheduler.filters.ram import RamFilter
from federator.scheduler.filters.vcpu import VcpuFilter

__all__ = [
    "AffinityFilter",
    "AggregateImagePropertiesIsolation",
    "AggregateInstanceExtraSpecsFilter",
    "AggregateMultiTenancyIsolation",
    "AggregateNumInstancesFilter",
    "AntiAffinityFilter",
    "AvailabilityZoneFilter",
    "DiskFilter",
    "EnabledFilter",
    "HostFilter",
    "IgnoreHostsFilter",
    "NumInstancesFilter",
    "RamFilter",
    "VcpuFilter",
]
