"""``federator serve``: the API, the workers and the monitor in one process.

SIGTERM and SIGINT stop it gracefully: the API stops accepting, running tasks finish,
the monitor stops. SIGHUP reloads the policy file; an invalid file is logged with every
problem and the policy in force stays. After a crash, start-up resumes this node's
unfinished tasks, so no accepted request is lost or left in BUILD.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType

import uvicorn

from federator.api.app import asgi_app
from federator.broker import Broker
from federator.config import Settings
from federator.exception import PolicyInvalid
from federator.identity.bootstrap import listen_url, point_openrc_at

LOG = logging.getLogger("federator.daemon")


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Access logs at INFO would drown the broker's own decisions.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


def serve(settings: Settings, *, ready_file: str | None = None) -> int:
    """Run until SIGTERM/SIGINT; returns the process exit code.

    With ``api.workers`` above 1, a supervisor runs that many broker processes behind
    one listening socket (:mod:`federator.supervisor`).

    :raises FederatorError: a start-up check failed (the caller prints it and exits non-zero).
    """
    if settings.api.workers > 1:
        from federator.supervisor import supervise

        return supervise(settings, ready_file=ready_file)
    broker = Broker.open(settings)
    return run_broker(
        broker, sockets=None, on_started=lambda port: publish_port(settings, port, ready_file)
    )


def run_broker(
    broker: Broker,
    *,
    sockets: list[socket.socket] | None,
    on_started: Callable[[int], None],
    should_stop: Callable[[], bool] | None = None,
) -> int:
    """Start ``broker`` and serve its API until SIGTERM/SIGINT, then drain it.

    ``sockets``: already listening sockets to serve on (an API worker process), or
    ``None`` to bind ``api.host``/``api.port``. ``on_started`` gets the bound port once
    connections are accepted. ``should_stop`` is polled while serving; when it answers
    true the server stops as on SIGTERM.
    """
    settings = broker.settings
    broker.start()

    def _reload(_signum: int, _frame: FrameType | None) -> None:
        try:
            result = broker.policies.load()
            LOG.info(
                "SIGHUP: policy %s in force (%s)",
                result.version,
                "changed" if result.changed else "unchanged",
            )
        except PolicyInvalid:
            pass  # already logged with every problem; the old policy stays

    signal.signal(signal.SIGHUP, _reload)
    # uvicorn restores the handlers it found and re-raises the signal once it has shut
    # down; benign handlers here keep that re-raise from killing the process before the
    # workers are drained below.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _note_stop)
    config = uvicorn.Config(
        asgi_app(broker),
        host=settings.api.host,
        port=settings.api.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=30,
        timeout_keep_alive=settings.api.keep_alive_seconds,
    )
    server = uvicorn.Server(config)
    LOG.info(
        "federator %s %s on http://%s:%d (node %s, %d zone(s), policy %s)",
        settings.broker_id,
        "listening" if sockets is None else "serving",
        settings.api.host,
        settings.api.port,
        settings.node_id,
        len(settings.zones),
        broker.policies.current.policy.version,
    )
    _announce_when_started(server, on_started, should_stop)
    try:
        server.run(sockets=sockets)
    finally:
        LOG.info("shutting down: draining workers and stopping the monitor")
        broker.stop()
        LOG.info("stopped")
    return 0


def publish_port(settings: Settings, port: int, path: str | None) -> None:
    """Point the embedded default's openrc file at the bound address, then write the
    bound port to ``path`` (for tests and supervisors that start the broker on port 0)."""
    point_openrc_at(settings.data_dir, listen_url(settings.api.host, port))
    if path:
        with open(path + ".tmp", "w", encoding="utf-8") as fh:
            fh.write(str(port))
        os.replace(path + ".tmp", path)


def _note_stop(signum: int, _frame: FrameType | None) -> None:
    LOG.info("received %s", signal.Signals(signum).name)


def _announce_when_started(
    server: uvicorn.Server,
    on_started: Callable[[int], None],
    should_stop: Callable[[], bool] | None,
) -> None:
    """Once the server accepts connections, call ``on_started`` with the bound port; then,
    if ``should_stop`` is given, stop the server when it answers true."""

    def _watch() -> None:
        while not server.started:
            if server.should_exit:
                return
            time.sleep(0.02)
        port = 0
        for srv in getattr(server, "servers", []):
            for sock in srv.sockets:
                port = sock.getsockname()[1]
        on_started(port)
        while should_stop is not None and not server.should_exit:
            if should_stop():
                LOG.warning("stopping: the supervising process is gone")
                server.should_exit = True
                return
            time.sleep(0.5)

    threading.Thread(target=_watch, name="ready-file", daemon=True).start()
