"""Remote usage of a virtual zone: what the driver's listing says the broker runs there.

Placement never reads these figures: claims and quotas use the zone's own allocation
counters, which move atomically with allocations. Remote usage is the monitor's view,
kept to detect drift between the two: a zone running more of the broker's instances than
the broker has allocated there (orphans, or records lost) is noted once, as a ``drift``
event, when it starts. Fewer remote instances than allocations is normal for a while:
an instance that vanished stays ERROR and keeps its allocation until it is deleted.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import update

from federator.config import Settings
from federator.driver import RemoteInstance
from federator.storage.db import Database
from federator.storage.events import add_event
from federator.storage.models import Zone

LOG = logging.getLogger(__name__)


@dataclass
class RemoteUsage:
    """Running totals of one listing."""

    instances: int = 0
    vcpus: int = 0
    ram_mb: int = 0

    def add(self, vcpus: int, ram_mb: int) -> None:
        self.instances += 1
        self.vcpus += vcpus
        self.ram_mb += ram_mb


def figures(
    settings: Settings, remote: RemoteInstance, flavor: Mapping[str, Any] | None
) -> tuple[int, int]:
    """(vCPUs, RAM MiB) of one remote instance.

    From the instance record's flavor when there is one; otherwise from the driver's
    ``extra`` (``vcpus`` and ``ram_mb``, or a ``flavor`` naming a configured flavor);
    otherwise unknown, counted as zero.
    """
    if flavor is not None:
        return _int(flavor.get("vcpus")), _int(flavor.get("ram"))
    extra = remote.extra
    if "vcpus" in extra and "ram_mb" in extra:
        return _int(extra["vcpus"]), _int(extra["ram_mb"])
    name = extra.get("flavor")
    known = settings.flavor(name) if isinstance(name, str) else None
    return (known.vcpus, known.ram_mb) if known is not None else (0, 0)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def store_remote_usage(db: Database, zone: str, usage: RemoteUsage) -> bool:
    """Keep ``usage`` on the zone; returns True when it changed.

    Writes nothing when the figures are those already stored. When the remote instance
    count starts to exceed the zone's allocated count, a ``drift`` event is recorded with
    the change.
    """
    with db.read() as s:
        row = s.get(Zone, zone)
        if row is None:
            return False
        before = (row.remote_instances, row.remote_vcpus, row.remote_ram_mb)
        allocated = row.instances
    if before == (usage.instances, usage.vcpus, usage.ram_mb):
        return False
    drifting = usage.instances > allocated
    was_drifting = before[0] is not None and before[0] > allocated
    with db.write() as s:
        s.execute(
            update(Zone)
            .where(Zone.name == zone)
            .values(
                remote_instances=usage.instances,
                remote_vcpus=usage.vcpus,
                remote_ram_mb=usage.ram_mb,
            )
        )
        if drifting and not was_drifting:
            detail = (
                f"zone {zone} runs {usage.instances} instance(s) of this broker but "
                f"{allocated} are allocated there"
            )
            add_event(s, zone=zone, kind="drift", action="log", detail=detail)
            LOG.warning("%s", detail)
    return True
