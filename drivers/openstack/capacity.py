"""Read a child broker's capacity report (``GET <federation endpoint>/capacity``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from federator.driver import AzCapacity, ZoneCapacity


def _figure(room: Mapping[str, Any], key: str) -> int | None:
    value = room.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"free.{key} is not a count")
    return value


def capacity_from(doc: Mapping[str, Any], target_az: str | None) -> ZoneCapacity:
    """The report as this zone uses it: the child's total, or, when the zone sends its
    instances to one remote availability zone, that zone's room (none if it is gone or
    unavailable).

    :raises ValueError, KeyError, TypeError: the document is not a capacity report.
    """
    azs = tuple(
        AzCapacity(
            name=str(az["name"]),
            available=bool(az["available"]),
            free_ram_mb=_figure(az["free"], "ram_mb"),
            free_vcpus=_figure(az["free"], "vcpus"),
            free_instances=_figure(az["free"], "instances"),
        )
        for az in doc["availability_zones"]
    )
    if target_az is None:
        free = doc["free"]
        return ZoneCapacity(
            availability_zones=azs,
            free_ram_mb=_figure(free, "ram_mb"),
            free_vcpus=_figure(free, "vcpus"),
            free_instances=_figure(free, "instances"),
            detail=f"{len(azs)} remote availability zone(s)",
        )
    chosen = next((az for az in azs if az.name == target_az), None)
    if chosen is None or not chosen.available:
        state = "not offered" if chosen is None else "unavailable"
        return ZoneCapacity(azs, 0, 0, 0, detail=f"remote availability zone {target_az} {state}")
    return ZoneCapacity(
        availability_zones=azs,
        free_ram_mb=chosen.free_ram_mb,
        free_vcpus=chosen.free_vcpus,
        free_instances=chosen.free_instances,
        detail=f"remote availability zone {target_az}",
    )
