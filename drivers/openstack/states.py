"""Nova server status -> the broker's PowerState, and Cinder volume status -> its
VolumeState, as data."""

from __future__ import annotations

from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from federator.blockstorage import VolumeState
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


# Cinder volume status -> the broker's VolumeState, as data. The statuses of a volume in
# the middle of an operation (attaching, detaching, extending, ...) are in BUSY instead:
# such a volume keeps the state its attachments give it, in-use while the remote cloud
# lists one, available otherwise (an attach Cinder has not finished lists none yet, a
# detach not finished still lists its attachment). A status in neither is ERROR.
CINDER_STATES = MappingProxyType(
    {
        "creating": VolumeState.CREATING,
        "available": VolumeState.AVAILABLE,
        "in-use": VolumeState.IN_USE,
        "deleting": VolumeState.DELETED,
        "deleted": VolumeState.DELETED,
        "error": VolumeState.ERROR,
        "error_deleting": VolumeState.ERROR,
        "error_restoring": VolumeState.ERROR,
        "error_extending": VolumeState.ERROR,
        "error_managing": VolumeState.ERROR,
        "error_backing-up": VolumeState.ERROR,
    }
)
BUSY = frozenset(
    {
        "attaching",
        "detaching",
        "reserved",
        "extending",
        "retyping",
        "maintenance",
        "backing-up",
        "restoring-backup",
        "downloading",
        "uploading",
        "awaiting-transfer",
    }
)
# A volume that is going or gone: lookups and listings leave it out.
GONE = frozenset({"deleting", "deleted"})


def volume_state(status: str | None, attached: bool) -> VolumeState:
    """The broker's state for Cinder status ``status``; ``attached``: the remote cloud
    lists an attachment of the volume."""
    key = (status or "").lower()
    if key in BUSY:
        return VolumeState.IN_USE if attached else VolumeState.AVAILABLE
    return CINDER_STATES.get(key, VolumeState.ERROR)


def remote_time(value: Any) -> datetime | None:
    """A timestamp as Nova and Cinder send it (ISO 8601, often without a zone: UTC), or
    None when there is none or it does not parse."""
    if not isinstance(value, str) or not value:
        return None
    try:
        ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)
