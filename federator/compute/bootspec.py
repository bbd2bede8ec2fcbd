"""The request spec: what a boot asked for, stored with the build request."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class BootSpec:
    name: str
    project_id: str
    user_id: str
    flavor_id: str
    image_id: str
    availability_zone: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    group: str | None = None
    """The server group the boot's scheduler hint named."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BootSpec:
        return cls(
            name=str(data["name"]),
            project_id=str(data["project_id"]),
            user_id=str(data["user_id"]),
            flavor_id=str(data["flavor_id"]),
            image_id=str(data["image_id"]),
            availability_zone=data.get("availability_zone"),
            metadata={str(k): str(v) for k, v in (data.get("metadata") or {}).items()},
            group=data.get("group"),
        )
