"""EC2 instance and EBS volume states, and the broker state each one maps to.

The tables are data: adding a state EC2 grows is one line here. A state missing from
a table maps to ``ERROR`` so that the broker notices instead of guessing.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from federator.blockstorage import VolumeState
from federator.driver import PowerState

__all__ = [
    "GONE",
    "LIVE",
    "LIVE_ATTACHMENTS",
    "LIVE_VOLUMES",
    "STATE_TABLE",
    "VOLUME_STATE_TABLE",
    "power_state",
    "volume_state",
]

STATE_TABLE: Mapping[str, PowerState] = MappingProxyType(
    {
        "pending": PowerState.BUILD,
        "running": PowerState.ACTIVE,
        "rebooting": PowerState.REBOOT,  # not an EC2 state today; kept in case one appears
        "stopping": PowerState.SHUTOFF,
        "stopped": PowerState.SHUTOFF,
        "shutting-down": PowerState.DELETED,
        "terminated": PowerState.DELETED,
    }
)

# States of an instance that is gone or going: never returned by get or list.
GONE: frozenset[str] = frozenset({"shutting-down", "terminated"})
# States of an instance that exists; the value of the instance-state-name filter.
LIVE: tuple[str, ...] = ("pending", "running", "stopping", "stopped")

VOLUME_STATE_TABLE: Mapping[str, VolumeState] = MappingProxyType(
    {
        "creating": VolumeState.CREATING,
        "available": VolumeState.AVAILABLE,
        "in-use": VolumeState.IN_USE,
        "deleting": VolumeState.DELETED,
        "deleted": VolumeState.DELETED,
        "error": VolumeState.ERROR,
    }
)

# States of a volume that exists for the broker; the value of the ``status`` filter. A
# deleting volume is already gone: get raises VolumeNotFound and list leaves it out.
LIVE_VOLUMES: tuple[str, ...] = ("creating", "available", "in-use", "error")
# Attachment states of a volume still on its instance ("detached" is history). A
# detaching volume is still attached: it stays in-use until EC2 finishes.
LIVE_ATTACHMENTS: frozenset[str] = frozenset({"attaching", "attached", "busy", "detaching"})


def power_state(ec2_state: str) -> PowerState:
    """The broker's state for EC2 state name ``ec2_state``; ``ERROR`` when unknown."""
    return STATE_TABLE.get(ec2_state, PowerState.ERROR)


def volume_state(ebs_state: str) -> VolumeState:
    """The broker's state for EBS volume state ``ebs_state``; ``ERROR`` when unknown."""
    return VOLUME_STATE_TABLE.get(ebs_state, VolumeState.ERROR)
