"""What one placement decision asks of the host scheduler."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Literal

__all__ = ["HostRequest", "SoftGroup", "Weighing"]

Weighing = Literal["spread", "pack"]
SoftGroup = Literal["soft-affinity", "soft-anti-affinity"]


def _frozen(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True, slots=True)
class HostRequest:
    """Resources and constraints for one instance in one zone.

    ``anti_affinity_hosts``: hosts already holding as many members of the request's
    anti-affinity group as the group allows. ``affinity_hosts``: when set and
    non-empty, only these hosts qualify (the affinity group is already placed); an
    empty set means the group has no members yet, so any host qualifies.
    ``anti_affinity_azs`` and ``affinity_azs`` say the same of availability zones, for
    groups whose rules apply per availability zone (scope ``zone``).
    ``ignore_hosts``: hosts that already failed this request (reschedule).

    ``soft_group``: the request's group has a soft policy; ``group_counts`` (host name
    to members there) and ``group_az_counts`` (availability zone to members there)
    are what the soft weighers read.

    ``project_id``: the project booting (None: unknown, which a tenant-isolated
    aggregate does not admit). ``extra_specs``: the flavor's extra specs.
    ``image_properties``: the image's properties. The two mappings are copied
    into read-only views, so a request never changes after it is made.

    :raises ValueError: a resource figure is negative or ``weighing`` is unknown.
    """

    zone: str
    vcpus: int
    ram_mb: int
    disk_gb: int
    az: str | None = None
    weighing: Weighing = "spread"
    anti_affinity_hosts: frozenset[str] = frozenset()
    affinity_hosts: frozenset[str] | None = None
    ignore_hosts: frozenset[str] = frozenset()
    anti_affinity_azs: frozenset[str] = frozenset()
    affinity_azs: frozenset[str] | None = None
    soft_group: SoftGroup | None = None
    group_counts: Mapping[str, int] = field(default_factory=dict)
    group_az_counts: Mapping[str, int] = field(default_factory=dict)
    project_id: str | None = None
    extra_specs: Mapping[str, str] = field(default_factory=dict)
    image_properties: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if min(self.vcpus, self.ram_mb, self.disk_gb) < 0:
            raise ValueError("requested vcpus, ram_mb and disk_gb must not be negative")
        if self.weighing not in ("spread", "pack"):
            raise ValueError(f"unknown weighing {self.weighing!r}; expected 'spread' or 'pack'")
        object.__setattr__(self, "extra_specs", _frozen(self.extra_specs))
        object.__setattr__(self, "image_properties", _frozen(self.image_properties))
        object.__setattr__(self, "group_counts", _frozen(self.group_counts))
        object.__setattr__(self, "group_az_counts", _frozen(self.group_az_counts))

    @property
    def group_constrained(self) -> bool:
        """Whether a hard server-group rule narrows the hosts this request may use."""
        return bool(
            self.anti_affinity_hosts
            or self.affinity_hosts
            or self.anti_affinity_azs
            or self.affinity_azs
        )

    def without_group(self) -> HostRequest:
        """The same request with no server-group rule (to tell whether a rule, rather
        than capacity, is what leaves a zone without a host)."""
        return replace(
            self,
            anti_affinity_hosts=frozenset(),
            affinity_hosts=None,
            anti_affinity_azs=frozenset(),
            affinity_azs=None,
        )
