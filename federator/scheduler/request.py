"""What one placement decision asks of the host scheduler."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

__all__ = ["HostRequest", "Weighing"]

Weighing = Literal["spread", "pack"]


def _frozen(mapping: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True, slots=True)
class HostRequest:
    """Resources and constraints for one instance in one zone.

    ``anti_affinity_hosts``: hosts already holding a member of the request's
    anti-affinity group. ``affinity_hosts``: when set and non-empty, only these
    hosts qualify (the affinity group is already placed); an empty set means the
    group has no members yet, so any host qualifies. ``ignore_hosts``: hosts
    that already failed this request (reschedule).

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
