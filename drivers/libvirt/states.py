"""libvirt domain states and lifecycle events, and the :class:`PowerState` each maps to.

Both tables are data: a state or event libvirt grows is one line here. A state missing
from :data:`STATE_TABLE` maps to ``ERROR`` so that the broker notices instead of
guessing. A paused domain is ``PAUSED``; a managed-saved one (``suspend``) and a guest
suspended by power management are ``SUSPENDED``; libvirt's own state name travels in
``RemoteInstance.extra["power_state"]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import libvirt

from federator.driver import PowerState

__all__ = [
    "EVENT_TABLE",
    "RUNNING_STATES",
    "STATE_TABLE",
    "SUSPENDED",
    "DomainState",
    "domain_state",
    "event_state",
]


@dataclass(frozen=True, slots=True)
class DomainState:
    """A libvirt state: its name (``libvirt_state``), the finer ``power_state`` shown in
    ``extra``, and the broker's :class:`PowerState`."""

    libvirt_state: str
    power_state: str
    state: PowerState


def _s(name: str, state: PowerState, power: str | None = None) -> DomainState:
    return DomainState(name, power or name, state)


STATE_TABLE: Mapping[int, DomainState] = MappingProxyType(
    {
        libvirt.VIR_DOMAIN_NOSTATE: _s("nostate", PowerState.BUILD),
        libvirt.VIR_DOMAIN_RUNNING: _s("running", PowerState.ACTIVE),
        libvirt.VIR_DOMAIN_BLOCKED: _s("blocked", PowerState.ACTIVE),  # running, waiting on I/O
        libvirt.VIR_DOMAIN_PAUSED: _s("paused", PowerState.PAUSED),
        libvirt.VIR_DOMAIN_SHUTDOWN: _s("shutdown", PowerState.ACTIVE, "shutting-down"),
        libvirt.VIR_DOMAIN_SHUTOFF: _s("shutoff", PowerState.SHUTOFF),
        libvirt.VIR_DOMAIN_CRASHED: _s("crashed", PowerState.ERROR),
        libvirt.VIR_DOMAIN_PMSUSPENDED: _s("pmsuspended", PowerState.SUSPENDED),
    }
)

# A shut-off domain with a managed save image: suspend() put it there, resume() or
# start() restores it.
SUSPENDED = DomainState("shutoff", "suspended", PowerState.SUSPENDED)

# Domain states in which the guest runs or can be resumed without a boot.
RUNNING_STATES: frozenset[int] = frozenset(
    {
        libvirt.VIR_DOMAIN_RUNNING,
        libvirt.VIR_DOMAIN_BLOCKED,
        libvirt.VIR_DOMAIN_SHUTDOWN,
    }
)


def domain_state(state: int, *, managed_save: bool = False) -> DomainState:
    """The state of a domain libvirt reports as ``state``; ``ERROR`` when unknown."""
    if state == libvirt.VIR_DOMAIN_SHUTOFF and managed_save:
        return SUSPENDED
    return STATE_TABLE.get(state, DomainState(f"unknown-{state}", "unknown", PowerState.ERROR))


# Lifecycle event -> the state it leaves the domain in; ``None``: not reported (a
# definition changed, or a guest-side shutdown that a STOPPED event follows).
EVENT_TABLE: Mapping[int, PowerState | None] = MappingProxyType(
    {
        libvirt.VIR_DOMAIN_EVENT_DEFINED: None,
        libvirt.VIR_DOMAIN_EVENT_UNDEFINED: PowerState.DELETED,
        libvirt.VIR_DOMAIN_EVENT_STARTED: PowerState.ACTIVE,
        libvirt.VIR_DOMAIN_EVENT_SUSPENDED: PowerState.PAUSED,  # libvirt's word for paused
        libvirt.VIR_DOMAIN_EVENT_RESUMED: PowerState.ACTIVE,
        libvirt.VIR_DOMAIN_EVENT_STOPPED: PowerState.SHUTOFF,
        libvirt.VIR_DOMAIN_EVENT_SHUTDOWN: None,
        libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: PowerState.SUSPENDED,
        libvirt.VIR_DOMAIN_EVENT_CRASHED: PowerState.ERROR,
    }
)


def event_state(event: int) -> PowerState | None:
    """The state lifecycle ``event`` leaves a domain in, or ``None`` to skip it.

    A domain that crashed and was shut off reports ``SHUTOFF``, as :func:`domain_state`
    does for it afterwards; only a domain kept in libvirt's crashed state is ``ERROR``.
    """
    return EVENT_TABLE.get(event)
