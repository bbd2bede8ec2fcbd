"""Nova server status -> the broker's PowerState, as data."""

from __future__ import annotations

from types import MappingProxyType

from federator.driver import PowerState

NOVA_STATES = MappingProxyType(
    {
        "BUILD": PowerState.BUILD,
        "REBUILD": PowerState.BUILD,
        "MIGRATING": PowerState.BUILD,
        "RESIZE": PowerState.BUILD,
        "VERIFY_RESIZE": PowerState.ACTIVE,
        "ACTIVE": PowerState.ACTIVE,
        "PASSWORD": PowerState.ACTIVE,
        "REBOOT": PowerState.REBOOT,
        "HARD_REBOOT": PowerState.REBOOT,
        "SHUTOFF": PowerState.SHUTOFF,
        "STOPPED": PowerState.SHUTOFF,
        "PAUSED": PowerState.SHUTOFF,
        "SUSPENDED": PowerState.SHUTOFF,
        "SHELVED": PowerState.SHUTOFF,
        "SHELVED_OFFLOADED": PowerState.SHUTOFF,
        "RESCUE": PowerState.ERROR,
        "ERROR": PowerState.ERROR,
        "UNKNOWN": PowerState.ERROR,
        "DELETED": PowerState.DELETED,
        "SOFT_DELETED": PowerState.DELETED,
    }
)


def power_state(status: str | None) -> PowerState:
    return NOVA_STATES.get((status or "").upper(), PowerState.ERROR)
