"""``federator serve`` with ``api.workers`` > 1: several broker processes on one socket.

The supervisor checks everything once (:meth:`Broker.open`, which also creates an empty
database's schema), starts the embedded EC2 stand-in if the zone list is the built-in one,
binds the listening socket and starts ``api.workers`` worker processes (``spawn``, so no
thread or connection of the supervisor is copied into them). Each worker is a broker node
of its own, ``<node_id>-<n>``: its API serves connections accepted on the shared socket
(the kernel hands each new connection to one of them), its build workers take tasks from
the shared queue, and the zones' monitor jobs run in whichever node holds the zone's lease
(:mod:`federator.monitor.leases`), so every job runs once however many workers there are.
Because every worker is a node, what holds for several brokers on one database holds for
the workers: a claim conflict is re-read, a dead node's tasks are requeued by the others.

Signals: SIGTERM and SIGINT stop every worker gracefully (each drains its running tasks)
and then the supervisor; SIGHUP is passed on, so every worker reloads the policy file. A
worker that exits on its own is restarted under the same node id, which resumes the tasks
it left running; one that fails its start-up checks stops the whole service with exit
code 2. A worker whose supervisor is gone (SIGKILL) stops by itself.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event
from types import FrameType

from federator import embedded
from federator.broker import Broker
from federator.config import Settings
from federator.exception import ConfigError, FederatorError

LOG = logging.getLogger("federator.supervisor")

START_FAILED = 2
"""Exit code of a worker whose start-up checks failed (as ``federator serve``'s)."""
STOP_TIMEOUT = 90.0
"""Seconds a stopping worker gets to drain (uvicorn's 30 s, then its running tasks)."""
RESTART_BACKOFF_MAX = 30.0


def worker_node_id(node_id: str, index: int) -> str:
    """The node id of API worker ``index``: ``<node_id>-<index>``, within 63 characters."""
    suffix = f"-{index}"
    return node_id[: 63 - len(suffix)] + suffix


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (IPv6 when ``host`` has a colon)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


@dataclass
class _Worker:
    index: int
    node_id: str
    process: BaseProcess | None = None
    ready: Event | None = None
    started_at: float = 0.0
    restart_at: float | None = None
    backoff: float = 1.0
    served: bool = False  # became ready at least once


class Supervisor:
    """Starts, watches and stops the worker processes of one ``federator serve``."""

    def __init__(self, settings: Settings, sock: socket.socket) -> None:
        self.settings = settings
        self.sock = sock
        self.port: int = sock.getsockname()[1]
        self._ctx = multiprocessing.get_context("spawn")
        self._workers = [
            _Worker(i, worker_node_id(settings.node_id, i)) for i in range(settings.api.workers)
        ]
        self._stop_signal: int | None = None
        self._hup = False

    def run(self, ready_file: str | None) -> int:
        """Serve until SIGTERM/SIGINT; the exit code of ``federator serve``."""
        from federator.daemon import publish_port

        previous = {
            sig: signal.signal(sig, self._on_signal)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        }
        announced = False
        code = 0
        try:
            for w in self._workers:
                self._start(w)
            while self._stop_signal is None:
                if self._hup:
                    self._hup = False
                    self._forward(signal.SIGHUP)
                if not announced and all(
                    w.ready is not None and w.ready.is_set() for w in self._workers
                ):
                    for w in self._workers:
                        w.served = True
                    publish_port(self.settings, self.port, ready_file)
                    LOG.info(
                        "federator %s listening on http://%s:%d with %d API workers (nodes %s)",
                        self.settings.broker_id,
                        self.settings.api.host,
                        self.port,
                        len(self._workers),
                        ", ".join(w.node_id for w in self._workers),
                    )
                    announced = True
                if self._reap() == START_FAILED:
                    code = START_FAILED
                    break
                self._restart_due()
            if self._stop_signal is not None:
                LOG.info("received %s", signal.Signals(self._stop_signal).name)
        finally:
            self._stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return code

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            self._hup = True
        else:
            self._stop_signal = signum

    def _start(self, w: _Worker) -> None:
        w.ready = self._ctx.Event()
        w.process = self._ctx.Process(
            target=_worker_main,
            args=(self.settings, w.index, self.sock, w.ready, os.getpid()),
            name=f"federator-api-{w.index}",
            daemon=False,
        )
        w.process.start()
        w.started_at = time.monotonic()
        w.restart_at = None
        LOG.info("API worker %d (node %s) started, pid %s", w.index, w.node_id, w.process.pid)

    def _reap(self) -> int | None:
        """Wait briefly for a worker to exit; note each exit and schedule its restart.

        :returns: :data:`START_FAILED` when a worker failed its start-up checks before
            any worker had served (the configuration is at fault, not the worker).
        """
        alive = {w.process.sentinel: w for w in self._workers if w.process is not None}
        for sentinel in wait(list(alive), timeout=0.2):
            w = alive[sentinel]  # type: ignore[index]
            assert w.process is not None
            w.process.join()
            code = w.process.exitcode
            w.process = None
            if self._stop_signal is not None:
                continue
            if code == START_FAILED and not w.served:
                LOG.error("API worker %d failed its start-up checks; stopping", w.index)
                return START_FAILED
            lived = time.monotonic() - w.started_at
            w.backoff = (
                1.0 if lived > RESTART_BACKOFF_MAX else min(w.backoff * 2, RESTART_BACKOFF_MAX)
            )
            w.restart_at = time.monotonic() + (0.0 if lived > RESTART_BACKOFF_MAX else w.backoff)
            LOG.error(
                "API worker %d (node %s) exited with %s after %.1f s; restarting it",
                w.index,
                w.node_id,
                _describe_exit(code),
                lived,
            )
        return None

    def _restart_due(self) -> None:
        now = time.monotonic()
        for w in self._workers:
            if w.process is None and w.restart_at is not None and now >= w.restart_at:
                self._start(w)

    def _forward(self, sig: signal.Signals) -> None:
        for w in self._workers:
            if w.process is not None and w.process.pid is not None and w.process.is_alive():
                os.kill(w.process.pid, sig)

    def _stop_all(self) -> None:
        self._forward(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for w in self._workers:
            if w.process is None:
                continue
            w.process.join(max(0.0, deadline - time.monotonic()))
            if w.process.is_alive():
                LOG.error(
                    "API worker %d did not stop within %.0f s; killing it", w.index, STOP_TIMEOUT
                )
                w.process.kill()
                w.process.join()
        self.sock.close()


def _describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        return f"signal {signal.Signals(-code).name}"
    return f"code {code}"


def supervise(settings: Settings, *, ready_file: str | None = None) -> int:
    """Check everything, bind the socket and run ``api.workers`` workers until stopped.

    :raises FederatorError: a start-up check failed (nothing was started).
    """
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings, stand_in = embedded.prepare(settings)
    try:
        # every check a worker would make, once, before any worker runs; an empty
        # database gets its schema here rather than from racing workers
        Broker.open(settings).stop()
        try:
            sock = bind(settings.api.host, settings.api.port)
        except OSError as exc:
            raise ConfigError(
                reason=f"api: cannot listen on {settings.api.host}:{settings.api.port}: "
                f"{exc.strerror}"
            ) from exc
        return Supervisor(settings, sock).run(ready_file)
    finally:
        if stand_in is not None:
            stand_in.stop()


def _worker_main(
    settings: Settings, index: int, sock: socket.socket, ready: Event, parent: int
) -> None:
    """One API worker process: a broker node serving the shared socket."""
    from federator.daemon import configure_logging, run_broker

    configure_logging(settings.log_level)
    node = settings.model_copy(update={"node_id": worker_node_id(settings.node_id, index)})
    # Out of the terminal's process group: Ctrl-C and a hang-up reach the supervisor
    # only, which passes them on once (SIGTERM); a second signal would make uvicorn
    # skip its graceful close.
    os.setpgrp()
    try:
        broker = Broker.open(node, initialise_empty=False)
    except FederatorError as exc:
        LOG.error("API worker %d: refusing to start: %s", index, exc.message)
        sys.exit(START_FAILED)
    code = run_broker(
        broker,
        sockets=[sock],
        on_started=lambda _port: ready.set(),
        should_stop=lambda: os.getppid() != parent,
    )
    sys.exit(code)
