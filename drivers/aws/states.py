"""EC2 instance states and the broker's :class:`PowerState` each one maps to.

The table is data: adding a state EC2 grows is one line here. A state missing from
the table maps to ``ERROR`` so that the broker notices instead of guessing.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from federator.driver import PowerState

__all__ = ["GONE", "LIVE", "STATE_TABLE", "power_state"]

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


def power_state(ec2_state: str) -> PowerState:
    """The broker's state for EC2 state name ``ec2_state``; ``ERROR`` when unknown."""
    return STATE_TABLE.get(ec2_state, PowerState.ERROR)
