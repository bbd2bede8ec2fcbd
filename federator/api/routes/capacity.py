"""What this broker will still take: the capabilities a parent broker polls.

Readable with any valid token, member or admin, because a parent usually holds only a
member account in its child: it shows free room and availability zones, never a server.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from federator.api.deps import BrokerDep
from federator.hosts.inventory import zone_loads
from federator.policy.headroom import Room, headroom

router = APIRouter(prefix="/capacity", tags=["capacity"])


def _room(room: Room) -> dict[str, int | None]:
    return {"ram_mb": room.ram_mb, "vcpus": room.vcpus, "instances": room.instances}


@router.get("")
def show_capacity(broker: BrokerDep) -> dict[str, Any]:
    """Free room per availability zone and in total (``null``: unbounded)."""
    found = headroom(
        broker.policies.current.policy, broker.policies.context, zone_loads(broker.dbs.api)
    )
    return {
        "capacity": {
            "broker_id": broker.settings.broker_id,
            "policy_version": broker.policies.current.policy.version,
            "availability_zones": [
                {
                    "name": z.zone,
                    "kind": z.kind,
                    "available": z.available,
                    "reachable_by_overflow": z.zone in found.reachable,
                    "free": _room(z.room),
                }
                for z in found.zones
            ],
            "free": _room(found.total),
        }
    }
