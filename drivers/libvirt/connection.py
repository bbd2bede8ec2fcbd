"""One long-lived libvirt connection per configured host.

A :class:`HostHandle` is keyed by the operator's host name, never by
``virConnectGetHostname()``: every ``test:///`` connection reports the machine's own
hostname, and a real host may report a name the operator does not use.

libvirt connections are thread-safe, so calls on one connection run concurrently from
the broker's worker threads; the handle's lock guards the connection's life only
(opening it, checking it is alive, replacing it, closing it). A dead connection to a
real hypervisor is replaced on next use. An in-process ``test:///`` connection is never
reopened: the simulated host's state lives inside it, so a new one would be an empty
host, and using it would silently lose every domain.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import libvirt

from drivers.libvirt.errors import error_code, redact_uri, translated
from drivers.libvirt.options import in_process_test_uri
from federator.driver import DriverError, PermanentError

__all__ = ["EventSink", "HostHandle", "Opener", "on_every_host"]

LOG = logging.getLogger(__name__)

# Receives (host name, domain uuid, lifecycle event) from the libvirt event loop thread.
EventSink = Callable[[str, str, int], None]
Opener = Callable[[str], libvirt.virConnect]


class HostHandle:
    """The connection to one host of a zone; see the module docstring.

    :param opener: opens a connection for a URI (``libvirt.open``; tests replace it).
    """

    def __init__(
        self,
        zone: str,
        name: str,
        uri: str,
        *,
        keepalive: tuple[int, int] = (5, 3),
        opener: Opener = libvirt.open,
    ) -> None:
        self.zone = zone
        self.name = name
        self.uri = uri
        self.shown_uri = redact_uri(uri)
        self.in_process = in_process_test_uri(uri)
        self._keepalive = keepalive
        self._opener = opener
        self._lock = threading.Lock()
        self._conn: libvirt.virConnect | None = None
        self._closed = False
        self._sink: EventSink | None = None
        self._callback_id: int | None = None
        # Per-connection facts (does network X exist?); cleared when the connection is.
        self.facts: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"HostHandle({self.zone}/{self.name}, {self.shown_uri})"

    @property
    def opened(self) -> bool:
        return self._conn is not None

    def connection(self) -> libvirt.virConnect:
        """The live connection, opened (or for a real host reopened) when needed.

        :raises TransientError: the host cannot be reached now.
        :raises AuthError: the host's daemon refused the connection.
        :raises PermanentError: the handle is closed, or the in-process simulated host's
            connection was lost (its state cannot come back).
        """
        with self._lock:
            if self._closed:
                raise PermanentError(self.zone, f"host {self.name}: the driver is closed")
            conn = self._conn
            if conn is not None:
                if _alive(conn):
                    return conn
                if self.in_process:
                    raise PermanentError(
                        self.zone,
                        f"host {self.name}: the simulated host's connection was closed; "
                        "its domains are gone and it is never reopened",
                    )
                LOG.warning("zone %s: connection to host %s is dead; reconnecting", *self._who())
                self._drop(conn)
            self._conn = self._open()
            return self._conn

    def watch(self, sink: EventSink) -> None:
        """Deliver this host's lifecycle events to ``sink``, now and after reconnects.

        :raises DriverError: the host cannot be reached; events start when it can.
        """
        with self._lock:
            self._sink = sink
            conn = self._conn
            if conn is not None and self._callback_id is None and _alive(conn):
                self._register(conn)

    def close(self) -> None:
        """Close the connection for good; later use raises ``PermanentError``."""
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._drop(self._conn)
                self._conn = None

    # --- internals -----------------------------------------------------------------

    def _who(self) -> tuple[str, str]:
        return self.zone, self.name

    def _open(self) -> libvirt.virConnect:
        with translated(self.zone, self.name, "connect"):
            conn = self._opener(self.uri)
        LOG.info("zone %s: connected to host %s (%s)", self.zone, self.name, self.shown_uri)
        self.facts = {}
        if not self.in_process:
            try:
                # Needs the event loop (see drivers.libvirt.events); lets libvirt notice a
                # peer that went away, so isAlive() turns false and we reconnect.
                conn.setKeepAlive(*self._keepalive)
            except libvirt.libvirtError as exc:
                LOG.debug("zone %s: host %s has no keepalive (%s)", *self._who(), error_code(exc))
        self._callback_id = None
        if self._sink is not None:
            try:
                self._register(conn)
            except DriverError as exc:
                LOG.warning("zone %s: no lifecycle events from host %s: %s", *self._who(), exc)
        return conn

    def _register(self, conn: libvirt.virConnect) -> None:
        sink = self._sink
        name = self.name

        def on_lifecycle(
            _conn: libvirt.virConnect, dom: libvirt.virDomain, event: int, _detail: int, _o: Any
        ) -> None:
            # Runs on the libvirt event loop thread: hand over, never block or raise here.
            try:
                if sink is not None:
                    sink(name, dom.UUIDString(), event)
            except Exception:
                LOG.exception("zone %s: dropping a lifecycle event of host %s", *self._who())

        with translated(self.zone, self.name, "register for lifecycle events"):
            self._callback_id = conn.domainEventRegisterAny(
                None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, on_lifecycle, None
            )

    def _drop(self, conn: libvirt.virConnect) -> None:
        """Forget ``conn``, deregistering its callback and closing it; never raises."""
        if self._callback_id is not None:
            # A dead connection has no callbacks left to remove, and closes with an error.
            with contextlib.suppress(libvirt.libvirtError):
                conn.domainEventDeregisterAny(self._callback_id)
            self._callback_id = None
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()
        self._conn = None
        self.facts = {}


def _alive(conn: libvirt.virConnect) -> bool:
    try:
        return bool(conn.isAlive())
    except libvirt.libvirtError:
        return False


_MAX_PROBE_THREADS = 16
T = TypeVar("T")


def on_every_host(
    handles: Sequence[HostHandle], fn: Callable[[HostHandle], T]
) -> tuple[list[T], list[DriverError]]:
    """``fn`` on every host in parallel (one unreachable host does not delay the others'
    answers): the results in host order, and the errors of the hosts that failed."""
    if not handles:
        return [], []

    def run(handle: HostHandle) -> T | DriverError:
        try:
            return fn(handle)
        except DriverError as exc:
            return exc

    workers = min(len(handles), _MAX_PROBE_THREADS)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="libvirt-probe") as pool:
        outcomes = list(pool.map(run, handles))
    results = [o for o in outcomes if not isinstance(o, DriverError)]
    failed = [o for o in outcomes if isinstance(o, DriverError)]
    return results, failed
