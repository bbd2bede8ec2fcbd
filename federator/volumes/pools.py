"""The storage pools of each zone, as their drivers report them.

Pools are upserted by name: a pool's claimed usage (``used_gb``, ``volumes``) is the
broker's and survives every refresh; capacity is the driver's. A pool the driver stops
reporting takes no new volume (``reported`` false) but keeps what it holds. A pool's
availability zone is its host's (host aggregates may give one), else the zone's name.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select, update

from federator.blockstorage import PoolInfo
from federator.storage.db import Database
from federator.storage.models import Host, StoragePool, Zone, utcnow

__all__ = ["sync_pools"]


def sync_pools(db: Database, zone: str, pools: Sequence[PoolInfo]) -> int:
    """Store what the driver of ``zone`` reports; returns the number of new pools."""
    new = 0
    with db.write() as s:
        host_az = dict(s.execute(select(Host.name, Host.az).where(Host.zone == zone)).all())
        known = {p.name: p for p in s.scalars(select(StoragePool).where(StoragePool.zone == zone))}
        for info in pools:
            az = host_az.get(info.host, zone) if info.host is not None else zone
            row = known.pop(info.name, None)
            if row is None:
                s.add(
                    StoragePool(
                        zone=zone,
                        name=info.name,
                        host=info.host,
                        az=az,
                        capacity_gb=info.capacity_gb,
                        used_gb=0,
                        free_gb=info.capacity_gb,
                        volumes=0,
                        reported=True,
                    )
                )
                new += 1
                continue
            free = None if info.capacity_gb is None else info.capacity_gb - row.used_gb
            if (row.capacity_gb, row.free_gb, row.az, row.host, row.reported) != (
                info.capacity_gb,
                free,
                az,
                info.host,
                True,
            ):
                row.capacity_gb, row.free_gb, row.az = info.capacity_gb, free, az
                row.host, row.reported, row.updated_at = info.host, True, utcnow()
        for row in known.values():
            if row.reported:
                row.reported = False
                row.updated_at = utcnow()
        s.flush()
        total = s.scalar(
            select(func.coalesce(func.sum(StoragePool.capacity_gb), 0)).where(
                StoragePool.zone == zone, StoragePool.reported.is_(True)
            )
        )
        s.execute(
            update(Zone)
            .where(Zone.name == zone, Zone.volume_gb_total != int(total or 0))
            .values(volume_gb_total=int(total or 0))
        )
    return new


def refresh_host_azs(db: Database, zone: str) -> None:
    """Give host pools their host's availability zone again (after aggregates changed)."""
    with db.write() as s:
        for pool in s.scalars(
            select(StoragePool).where(StoragePool.zone == zone, StoragePool.host.is_not(None))
        ):
            az = s.scalar(select(Host.az).where(Host.zone == zone, Host.name == pool.host))
            if az is not None and az != pool.az:
                pool.az = az
