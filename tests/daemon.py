"""``federator serve`` as a separate process, for tests that kill or restart a broker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import admin_headers


def federator_command() -> list[str]:
    """The installed ``federator`` script of this interpreter's environment."""
    script = Path(sys.executable).with_name("federator")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from federator.cli.main import main; main()"]


@dataclass
class Daemon:
    """One run of ``federator serve`` on a free port; its output goes to ``log``."""

    proc: subprocess.Popen[bytes]
    url: str
    headers: dict[str, str]  # an admin's token
    log: Path

    @classmethod
    def start(cls, config: Path, workdir: Path, run: int | str, *, timeout: float = 30) -> Daemon:
        """Start and wait until it serves. ``workdir / "data"`` is where an embedded
        default would keep its admin-openrc; the test admin is used otherwise."""
        ready = workdir / f"ready-{run}"
        ready.unlink(missing_ok=True)
        log_path = workdir / f"serve-{run}.log"
        log = open(log_path, "wb")  # noqa: SIM115 - the child owns it
        proc = subprocess.Popen(
            [
                *federator_command(),
                "serve",
                "--config",
                str(config),
                "--port",
                "0",
                "--ready-file",
                str(ready),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()
        deadline = time.monotonic() + timeout
        while not ready.exists() or not ready.read_text().strip():
            if proc.poll() is not None:
                raise AssertionError(f"serve exited with {proc.returncode}:\n{tail(log_path)}")
            if time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"serve did not become ready:\n{tail(log_path)}")
            time.sleep(0.02)
        url = f"http://127.0.0.1:{ready.read_text().strip()}"
        return cls(proc, url, admin_headers(url, workdir / "data"), log_path)

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 40) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL, as a crash or a pulled plug would end it."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


def tail(log: Path, lines: int = 40) -> str:
    text = log.read_text(errors="replace") if log.exists() else ""
    return "\n".join(text.splitlines()[-lines:])
