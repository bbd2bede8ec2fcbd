"""Builders for host rows and tables used across the scheduler tests."""

from __future__ import annotations

import random
from typing import Any

from federator.scheduler import HostRow, HostTable

_DEFAULTS: dict[str, Any] = {
    "zone": "z1",
    "az": "az1",
    "enabled": True,
    "vcpus": 16,
    "ram_mb": 65536,
    "disk_gb": 1000,
    "vcpus_used": 0,
    "ram_used_mb": 0,
    "disk_used_gb": 0,
    "instances": 0,
    "cpu_ratio": 1.0,
    "ram_ratio": 1.0,
    "disk_ratio": 1.0,
}


def row(name: str, i: int = 0, **fields: Any) -> HostRow:
    """A host row with plain 1.0 ratios unless told otherwise."""
    return HostRow(id=i, name=name, **{**_DEFAULTS, **fields})


def table(*rows: HostRow) -> HostTable:
    return HostTable.from_rows(rows)


def random_rows(rng: random.Random, n: int, zones: tuple[str, ...] = ("z1",)) -> list[HostRow]:
    """Random hosts with usage near and over capacity, so every filter bites."""
    rows = []
    for i in range(n):
        vcpus = rng.choice([4, 8, 16])
        ram = rng.choice([4096, 8192, 16384])
        disk = rng.choice([40, 100, 200])
        cpu_ratio = rng.choice([1.0, 1.5, 4.0])
        ram_ratio = rng.choice([1.0, 1.3])
        disk_ratio = rng.choice([1.0, 0.9])
        full = rng.random() < 0.25
        rows.append(
            HostRow(
                id=i,
                zone=rng.choice(zones),
                name=f"h{i}",
                az=rng.choice(["az1", "az2", "az3"]),
                enabled=rng.random() > 0.1,
                vcpus=vcpus,
                ram_mb=ram,
                disk_gb=disk,
                # coarse steps make equal free figures (ties) common; one host in
                # four is filled to around (or past) its capacity
                vcpus_used=rng.randint(0, int(vcpus * cpu_ratio * (1.1 if full else 0.5))),
                ram_used_mb=rng.randrange(0, ram + 2048 if full else ram // 2, 1024),
                disk_used_gb=rng.randrange(0, disk + 20 if full else disk // 2, 20),
                instances=rng.randint(0, 6),
                cpu_ratio=cpu_ratio,
                ram_ratio=ram_ratio,
                disk_ratio=disk_ratio,
            )
        )
    rng.shuffle(rows)
    return rows
