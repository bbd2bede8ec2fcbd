"""Helpers for the tests of zone leases: what each ``federator serve`` process reports on
GET /federator/v1/monitor (its jobs' run counters, who holds each lease), polling with a
deadline, and a read of the shared ``tasks`` table."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import create_engine, select

from federator.storage.models import Task
from tests.daemon import Daemon, tail


def status(d: Daemon) -> dict[str, Any]:
    """The monitor status of one node."""
    r = httpx.get(f"{d.url}/federator/v1/monitor", headers=d.headers, timeout=10)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def jobs(d: Daemon) -> dict[str, dict[str, Any]]:
    """The node's jobs by name."""
    return {j["name"]: j for j in status(d)["jobs"]}


def runs(d: Daemon, job: str) -> int:
    """How many times ``job`` did its work in node ``d`` (skipped runs left out)."""
    count: int = jobs(d)[job]["runs"]
    return count


def owners(d: Daemon) -> dict[str, str | None]:
    """Who holds each lease, as a node sees it (None: nobody, or the lease expired)."""
    return {
        lease["zone"]: None if lease["expired"] else lease["owner"] for lease in status(d)["leases"]
    }


def wait_for(what: str, check: Callable[[], bool], timeout: float, logs: Sequence[Daemon]) -> float:
    """Poll ``check`` until it is true; the monotonic time when it was. On timeout the
    assertion carries the end of every log in ``logs``."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            ends = "\n".join(f"--- {d.log.name}\n{tail(d.log, 25)}" for d in logs)
            raise AssertionError(f"{what}: not within {timeout}s\n{ends}")
        time.sleep(0.1)
    return time.monotonic()


@dataclass(frozen=True)
class TaskRow:
    id: int
    instance_uuid: str
    action: str
    state: str
    node: str | None
    attempts: int


class TaskTable:
    """Reads the ``tasks`` table of the API database the nodes share (read only)."""

    def __init__(self, api_url: str) -> None:
        self._engine = create_engine(api_url, pool_size=1)

    def rows(self, *, action: str | None = None) -> list[TaskRow]:
        stmt = select(
            Task.id, Task.instance_uuid, Task.action, Task.state, Task.node, Task.attempts
        ).order_by(Task.id)
        if action is not None:
            stmt = stmt.where(Task.action == action)
        with self._engine.connect() as conn:
            return [TaskRow(*row) for row in conn.execute(stmt).all()]

    def close(self) -> None:
        self._engine.dispose()


def await_take_over(
    survivors: Sequence[Daemon], victim: str, lost: Sequence[str], killed_at: float, lease: float
) -> dict[str, str | None]:
    """Wait until a survivor holds every lease in ``lost`` that ``victim`` held; require it
    within two lease periods of ``killed_at``, every survivor to agree on the new owners,
    and ``victim`` to own nothing. Returns the owners."""

    def taken_over() -> bool:
        seen = owners(survivors[0])
        return all(seen[z] not in (None, victim) for z in lost)

    took = wait_for("the take-over", taken_over, 4 * lease, survivors) - killed_at
    assert took < 2 * lease, took
    now = owners(survivors[0])
    assert all(owners(d) == now for d in survivors[1:])
    assert victim not in now.values()
    return now
