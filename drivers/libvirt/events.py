"""libvirt's event loop (one per process) and the delivery of lifecycle events.

libvirt delivers domain events, and runs connection keepalives, only through an event
loop implementation registered *before* the first connection is opened.
:func:`ensure_runtime` registers libvirt's default implementation and runs it on one
daemon thread for the whole process, however many drivers and zones exist; it also
installs a no-op error handler, since libvirt otherwise prints every error to stderr
as well as raising it.

Callbacks registered on connections run on that loop thread, where nothing may block.
They only enqueue; an :class:`EventDispatcher` per driver decides on its own thread
whether the domain is the broker's (which can take a call to the host) and calls the
watchers.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

import libvirt

from drivers.libvirt.states import event_state
from federator.driver import PowerState

__all__ = ["EventDispatcher", "Watcher", "ensure_runtime"]

LOG = logging.getLogger(__name__)

Watcher = Callable[[str, PowerState], None]
# (host, uuid) -> whether the domain belongs to this broker's zone
OwnerCheck = Callable[[str, str], bool]

_RETRY_AFTER_ERROR = 0.1


class _Runtime:
    """Process-wide libvirt set-up, done once."""

    lock = threading.Lock()
    thread: threading.Thread | None = None


def _ignore_error(_ctx: object, _err: object) -> None:
    """libvirt's error callback; errors still reach us as ``libvirtError``."""


def _run_loop() -> None:
    while True:
        try:
            libvirt.virEventRunDefaultImpl()
        except libvirt.libvirtError:
            LOG.exception("libvirt event loop iteration failed")
            time.sleep(_RETRY_AFTER_ERROR)


def ensure_runtime() -> None:
    """Install the error handler and start the event loop thread, once per process.

    Call it before opening any connection: connections opened earlier never deliver
    events.
    """
    with _Runtime.lock:
        if _Runtime.thread is not None:
            return
        libvirt.registerErrorHandler(_ignore_error, None)
        libvirt.virEventRegisterDefaultImpl()
        thread = threading.Thread(target=_run_loop, name="libvirt-event-loop", daemon=True)
        thread.start()
        _Runtime.thread = thread


class EventDispatcher:
    """Delivers one zone's lifecycle events, as ``(uuid, PowerState)``, to watchers.

    Events are delivered in the order libvirt raised them, on one thread. A watcher that
    raises is logged and keeps receiving events.
    """

    def __init__(self, zone: str, owned: OwnerCheck) -> None:
        self.zone = zone
        self._owned = owned
        self._queue: queue.SimpleQueue[tuple[str, str, int] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._watchers: dict[int, Watcher] = {}
        self._next = 0
        self._thread = threading.Thread(
            target=self._run, name=f"libvirt-events-{zone}", daemon=True
        )
        self._thread.start()

    def add(self, watcher: Watcher) -> Callable[[], None]:
        """Start calling ``watcher``; returns the function that stops it."""
        with self._lock:
            key = self._next
            self._next += 1
            self._watchers[key] = watcher

        def cancel() -> None:
            with self._lock:
                self._watchers.pop(key, None)

        return cancel

    def put(self, host: str, uuid: str, event: int) -> None:
        """Queue one libvirt lifecycle event; called on the libvirt event loop thread."""
        self._queue.put((host, uuid, event))

    def stop(self, timeout: float = 5.0) -> None:
        """Deliver what is queued, then stop the thread."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            host, uuid, event = item
            state = event_state(event)
            if state is None:
                continue
            try:
                if not self._owned(host, uuid):
                    continue
            except Exception:
                LOG.exception("zone %s: cannot tell whether %s is ours", self.zone, uuid)
                continue
            with self._lock:
                watchers = list(self._watchers.values())
            for watcher in watchers:
                try:
                    watcher(uuid, state)
                except Exception:
                    LOG.exception("zone %s: event watcher failed on %s", self.zone, uuid)
