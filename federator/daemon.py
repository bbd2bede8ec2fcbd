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
import sys
import threading
import time
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

    :raises FederatorError: a start-up check failed (the caller prints it and exits non-zero).
    """
    broker = Broker.open(settings)
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
        "federator %s listening on http://%s:%d (node %s, %d zone(s), policy %s)",
        settings.broker_id,
        settings.api.host,
        settings.api.port,
        settings.node_id,
        len(settings.zones),
        broker.policies.current.policy.version,
    )
    _announce_when_started(server, settings, ready_file)
    try:
        server.run()
    finally:
        LOG.info("shutting down: draining workers and stopping the monitor")
        broker.stop()
        LOG.info("stopped")
    return 0


def _note_stop(signum: int, _frame: FrameType | None) -> None:
    LOG.info("received %s", signal.Signals(signum).name)


def _announce_when_started(server: uvicorn.Server, settings: Settings, path: str | None) -> None:
    """Once the server accepts connections: point the embedded default's openrc file at the
    bound address, then write the bound port to ``path`` (for tests and supervisors that
    start the broker on port 0)."""

    def _watch() -> None:
        while not server.started:
            if server.should_exit:
                return
            time.sleep(0.02)
        servers = getattr(server, "servers", [])
        port = 0
        for srv in servers:
            for sock in srv.sockets:
                port = sock.getsockname()[1]
        point_openrc_at(settings.data_dir, listen_url(settings.api.host, port))
        if path:
            with open(path + ".tmp", "w", encoding="utf-8") as fh:
                fh.write(str(port))
            os.replace(path + ".tmp", path)

    threading.Thread(target=_watch, name="ready-file", daemon=True).start()
