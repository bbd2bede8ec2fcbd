"""The state and event tables."""

from __future__ import annotations

import libvirt
import pytest

from drivers.libvirt.states import EVENT_TABLE, STATE_TABLE, domain_state, event_state
from federator.driver import PowerState


@pytest.mark.parametrize(
    ("state", "name", "power_state", "expected"),
    [
        (libvirt.VIR_DOMAIN_NOSTATE, "nostate", "nostate", PowerState.BUILD),
        (libvirt.VIR_DOMAIN_RUNNING, "running", "running", PowerState.ACTIVE),
        (libvirt.VIR_DOMAIN_BLOCKED, "blocked", "blocked", PowerState.ACTIVE),
        (libvirt.VIR_DOMAIN_PAUSED, "paused", "paused", PowerState.PAUSED),
        (libvirt.VIR_DOMAIN_SHUTDOWN, "shutdown", "shutting-down", PowerState.ACTIVE),
        (libvirt.VIR_DOMAIN_SHUTOFF, "shutoff", "shutoff", PowerState.SHUTOFF),
        (libvirt.VIR_DOMAIN_CRASHED, "crashed", "crashed", PowerState.ERROR),
        (libvirt.VIR_DOMAIN_PMSUSPENDED, "pmsuspended", "pmsuspended", PowerState.SUSPENDED),
    ],
)
def test_every_libvirt_state_is_mapped(
    state: int, name: str, power_state: str, expected: PowerState
) -> None:
    shown = domain_state(state)
    assert (shown.libvirt_state, shown.power_state, shown.state) == (name, power_state, expected)


def test_the_table_covers_every_state_libvirt_defines() -> None:
    assert set(STATE_TABLE) == set(range(libvirt.VIR_DOMAIN_PMSUSPENDED + 1))


def test_an_unknown_state_is_an_error_so_the_broker_notices() -> None:
    shown = domain_state(99)
    assert shown.state is PowerState.ERROR
    assert shown.libvirt_state == "unknown-99"


def test_a_shut_off_domain_with_a_saved_state_is_suspended() -> None:
    shown = domain_state(libvirt.VIR_DOMAIN_SHUTOFF, managed_save=True)
    assert (shown.state, shown.power_state) == (PowerState.SUSPENDED, "suspended")
    # A saved state only matters for a shut-off domain.
    assert domain_state(libvirt.VIR_DOMAIN_RUNNING, managed_save=True).power_state == "running"


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (libvirt.VIR_DOMAIN_EVENT_DEFINED, None),
        (libvirt.VIR_DOMAIN_EVENT_UNDEFINED, PowerState.DELETED),
        (libvirt.VIR_DOMAIN_EVENT_STARTED, PowerState.ACTIVE),
        (libvirt.VIR_DOMAIN_EVENT_SUSPENDED, PowerState.PAUSED),
        (libvirt.VIR_DOMAIN_EVENT_RESUMED, PowerState.ACTIVE),
        (libvirt.VIR_DOMAIN_EVENT_STOPPED, PowerState.SHUTOFF),
        (libvirt.VIR_DOMAIN_EVENT_SHUTDOWN, None),
        (libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED, PowerState.SUSPENDED),
        (libvirt.VIR_DOMAIN_EVENT_CRASHED, PowerState.ERROR),
        (99, None),
    ],
)
def test_lifecycle_events_map_to_the_state_they_leave(
    event: int, expected: PowerState | None
) -> None:
    assert event_state(event) is expected


def test_every_lifecycle_event_is_in_the_table() -> None:
    assert set(EVENT_TABLE) == set(range(libvirt.VIR_DOMAIN_EVENT_CRASHED + 1))
