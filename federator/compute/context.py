"""The services the compute layer works with, wired once by the broker."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from federator.compute.queue import TaskQueue
from federator.config import FlavorConfig, Settings
from federator.driver import Driver
from federator.hosts.inventory import HostCache
from federator.policy.store import PolicyStore
from federator.scheduler.scheduler import HostScheduler
from federator.storage.db import Database


@dataclass
class ComputeContext:
    settings: Settings
    api: Database
    cells: Mapping[str, Database]  # every cell database, cell0 included
    drivers: Mapping[str, Driver]
    policies: PolicyStore
    hosts: HostCache
    scheduler: HostScheduler
    queue: TaskQueue
    sleep: Callable[[float], None] = field(default=time.sleep)

    def cell_of_zone(self, zone: str) -> str:
        return self.settings.zone(zone).cell

    def flavor_snapshot(self, flavor_id: str) -> dict[str, Any]:
        """The flavor as recorded on an instance (kept even if the flavor is later removed)."""
        f = self.settings.flavor(flavor_id)
        if f is None:
            return {"id": flavor_id, "name": flavor_id, "vcpus": 0, "ram": 0, "disk": 0}
        return flavor_dict(f)


def flavor_dict(f: FlavorConfig) -> dict[str, Any]:
    return {"id": f.id, "name": f.name, "vcpus": f.vcpus, "ram": f.ram_mb, "disk": f.disk_gb}
