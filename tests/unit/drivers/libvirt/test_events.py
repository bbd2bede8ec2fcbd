"""Lifecycle events: what libvirt raises reaches watchers as (uuid, PowerState), for the
zone's own domains only."""

from __future__ import annotations

import threading
import time
import uuid as uuidlib

from drivers.libvirt.driver import LibvirtDriver
from drivers.libvirt.events import EventDispatcher, _Runtime, ensure_runtime
from federator.driver import PowerState
from tests.unit.drivers.libvirt.conftest import MakeDriver, define_by_hand, make_spec

WAIT = 10.0


class Recorder:
    """Collects events; ``wait_for`` blocks until a sequence has arrived."""

    def __init__(self) -> None:
        self.events: list[tuple[str, PowerState]] = []
        self._changed = threading.Condition()

    def __call__(self, uuid: str, state: PowerState) -> None:
        with self._changed:
            self.events.append((uuid, state))
            self._changed.notify_all()

    def of(self, uuid: str) -> list[PowerState]:
        with self._changed:
            return [s for u, s in self.events if u == uuid]

    def wait_for(self, uuid: str, expected: list[PowerState]) -> list[PowerState]:
        """Wait (bounded) until ``uuid``'s events are ``expected``; return what came."""
        deadline = time.monotonic() + WAIT
        with self._changed:
            while [s for u, s in self.events if u == uuid] != expected:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
            return [s for u, s in self.events if u == uuid]


def test_create_stop_start_delete_produce_events(make_driver: MakeDriver) -> None:
    driver = make_driver()
    seen = Recorder()
    driver.watch(seen)
    uuid = driver.create(make_spec("host2")).uuid
    assert seen.wait_for(uuid, [PowerState.ACTIVE]) == [PowerState.ACTIVE]
    driver.stop(uuid)
    driver.start(uuid)
    expected = [PowerState.ACTIVE, PowerState.SHUTOFF, PowerState.ACTIVE]
    assert seen.wait_for(uuid, expected) == expected
    driver.delete(uuid)
    expected += [PowerState.SHUTOFF, PowerState.DELETED]
    assert seen.wait_for(uuid, expected) == expected


def test_pause_and_suspend_produce_events(make_driver: MakeDriver) -> None:
    driver = make_driver()
    seen = Recorder()
    driver.watch(seen)
    uuid = driver.create(make_spec("host1")).uuid
    driver.pause(uuid)
    driver.unpause(uuid)
    driver.suspend(uuid)
    driver.resume(uuid)
    active, paused = PowerState.ACTIVE, PowerState.PAUSED
    # A managed save reports "stopped" (the next sync shows it SUSPENDED).
    expected = [active, paused, active, PowerState.SHUTOFF, active]
    assert seen.wait_for(uuid, expected) == expected


def test_only_the_zones_own_domains_are_reported(make_driver: MakeDriver) -> None:
    driver = make_driver()
    seen = Recorder()
    driver.watch(seen)
    foreign = str(uuidlib.uuid4())
    define_by_hand(driver, "host1", foreign).destroy()
    mine = driver.create(make_spec("host1")).uuid
    assert seen.wait_for(mine, [PowerState.ACTIVE]) == [PowerState.ACTIVE]
    # Events of one host arrive in order: the foreign domain's came before ours.
    assert seen.of(foreign) == []


def test_watching_can_stop_and_a_failing_watcher_does_not_stop_others(
    make_driver: MakeDriver,
) -> None:
    driver = make_driver()
    seen, stopped = Recorder(), Recorder()

    def broken(_uuid: str, _state: PowerState) -> None:
        raise RuntimeError("watcher bug")

    driver.watch(broken)
    cancel = driver.watch(stopped)
    driver.watch(seen)
    cancel()
    uuid = driver.create(make_spec("host3")).uuid
    assert seen.wait_for(uuid, [PowerState.ACTIVE]) == [PowerState.ACTIVE]
    assert stopped.of(uuid) == []


def test_hosts_connected_later_deliver_events_too(make_driver: MakeDriver) -> None:
    driver: LibvirtDriver = make_driver()
    seen = Recorder()
    driver.watch(seen)  # opens every host and registers on each
    uuids = [driver.create(make_spec(f"host{n}", n=n)).uuid for n in (1, 2, 3)]
    for uuid in uuids:
        assert seen.wait_for(uuid, [PowerState.ACTIVE]) == [PowerState.ACTIVE]


def test_the_event_loop_is_one_thread_per_process(make_driver: MakeDriver) -> None:
    make_driver()
    thread = _Runtime.thread
    assert thread is not None and thread.is_alive() and thread.daemon
    make_driver(zone="other")
    ensure_runtime()
    assert _Runtime.thread is thread
    loops = [t for t in threading.enumerate() if t.name == "libvirt-event-loop"]
    assert loops == [thread]


def test_the_dispatcher_skips_events_that_report_no_state() -> None:
    seen = Recorder()
    dispatcher = EventDispatcher("z", lambda _host, _uuid: True)
    dispatcher.add(seen)
    dispatcher.put("h", "u1", 0)  # DEFINED: nothing to report
    dispatcher.put("h", "u1", 2)  # STARTED
    dispatcher.stop()
    assert seen.of("u1") == [PowerState.ACTIVE]
