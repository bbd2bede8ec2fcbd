"""Host weighers: one score per module, normalised and summed by the host scheduler."""

from __future__ import annotations

from federator.scheduler.weighers.base import HostWeigher, normalize
from federator.scheduler.weighers.instances import InstancesWeigher
from federator.scheduler.weighers.ram import RamWeigher
from federator.scheduler.weighers.server_group import SoftAffinityWeigher, SoftAntiAffinityWeigher
from federator.scheduler.weighers.vcpu import VcpuWeigher

__all__ = [
    "HostWeigher",
    "InstancesWeigher",
    "RamWeigher",
    "SoftAffinityWeigher",
    "SoftAntiAffinityWeigher",
    "VcpuWeigher",
    "normalize",
]
