"""Load and bookkeeping helpers for the concurrency and crash tests.

``boot_concurrently`` fires boots from many HTTP clients at once. ``check_ledger`` reads the
databases directly and asserts that capacity accounting is exact: every host's and every
zone's counters equal the sum of the allocations recorded on them, which equal what the
placed instances use, and no host is over its schedulable capacity. ``check_drivers``
asserts that what the drivers hold is exactly what the broker has placed (no orphans, no
instance missing behind a record).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import select

from federator.broker import Databases
from federator.driver import Driver
from federator.storage.models import Allocation, Host, Instance, Zone

COMPUTE = "/compute/v2.1"


# --- load --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """One POST /servers: the HTTP status and, when accepted, the server id."""

    status: int
    server_id: str | None
    seconds: float


def boot_concurrently(
    url: str,
    count: int,
    *,
    clients: int = 32,
    name: str = "burst",
    flavor: str = "m1.small",
    image: str = "cirros",
    on_answer: Callable[[Answer], None] | None = None,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> list[Answer]:
    """POST ``count`` boots from ``clients`` threads, each with its own HTTP client.

    ``extra`` adds top-level keys to every body (scheduler hints, for example).

    Every thread waits at a barrier before its first request, so the requests really do
    overlap. A request that fails at the transport level counts as status 0.
    """
    answers: list[Answer | None] = [None] * count
    barrier = threading.Barrier(clients)

    def run(first: int) -> None:
        with httpx.Client(base_url=url, timeout=60, headers=headers) as client:
            barrier.wait()
            for i in range(first, count, clients):
                body = {
                    "server": {"name": f"{name}-{i}", "flavorRef": flavor, "imageRef": image},
                    **(extra or {}),
                }
                t0 = time.perf_counter()
                try:
                    r = client.post(f"{COMPUTE}/servers", json=body)
                    sid = r.json()["server"]["id"] if r.status_code == 202 else None
                    answer = Answer(r.status_code, sid, time.perf_counter() - t0)
                except httpx.HTTPError:
                    answer = Answer(0, None, time.perf_counter() - t0)
                answers[i] = answer
                if on_answer is not None:
                    on_answer(answer)

    threads = [threading.Thread(target=run, args=(n,), daemon=True) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [a if a is not None else Answer(0, None, 0.0) for a in answers]


def list_servers(client: httpx.Client, url: str) -> dict[str, dict[str, Any]]:
    """Every visible server (all tenants), by id, following the pagination markers."""
    found: dict[str, dict[str, Any]] = {}
    marker: str | None = None
    while True:
        params: dict[str, Any] = {"all_tenants": "1", "limit": 500}
        if marker:
            params["marker"] = marker
        r = client.get(f"{url}{COMPUTE}/servers/detail", params=params)
        assert r.status_code == 200, r.text
        page = r.json()["servers"]
        for srv in page:
            found[srv["id"]] = srv
        if len(page) < 500:
            return found
        marker = page[-1]["id"]


# --- bookkeeping -------------------------------------------------------------------------


@dataclass
class Ledger:
    """What the databases say once everything has settled."""

    placed: dict[str, Instance] = field(default_factory=dict)  # live records in cells
    buried: dict[str, Instance] = field(default_factory=dict)  # live records in cell0
    zones: dict[str, Zone] = field(default_factory=dict)
    hosts: list[Host] = field(default_factory=list)

    def placed_in(self, zone: str) -> list[Instance]:
        return [i for i in self.placed.values() if i.availability_zone == zone]

    def statuses(self) -> Counter[str]:
        return Counter(i.status for i in (*self.placed.values(), *self.buried.values()))


def _resources(inst: Instance) -> tuple[int, int, int, int]:
    f = inst.flavor
    return int(f["vcpus"]), int(f["ram"]), int(f["disk"]), 1


def _sum(rows: Iterable[tuple[int, int, int, int]]) -> tuple[int, int, int, int]:
    total = (0, 0, 0, 0)
    for r in rows:
        total = (total[0] + r[0], total[1] + r[1], total[2] + r[2], total[3] + r[3])
    return total


def check_ledger(dbs: Databases) -> Ledger:
    """Assert that capacity accounting is exact; return what was read.

    For every host: counters == sum of its allocations == resources of the live
    instances placed on it, and within ``capacity * ratio``. For every zone: counters ==
    sum of its allocations == resources of its live instances. Allocations exist for
    exactly the placed instances, and an instance never has records in two cells.
    """
    ledger = Ledger()
    for cell, db in dbs.cells.items():
        with db.read() as s:
            for inst in s.scalars(select(Instance).where(Instance.deleted.is_(False))):
                target = ledger.buried if cell == "cell0" else ledger.placed
                assert inst.uuid not in ledger.placed and inst.uuid not in ledger.buried, (
                    f"{inst.uuid} has records in more than one cell"
                )
                target[inst.uuid] = inst
    with dbs.api.read() as s:
        ledger.zones = {z.name: z for z in s.scalars(select(Zone))}
        ledger.hosts = list(s.scalars(select(Host).order_by(Host.zone, Host.name)))
        allocations = list(s.scalars(select(Allocation)))
    by_uuid = {a.instance_uuid: a for a in allocations}

    assert set(by_uuid) == set(ledger.placed), (
        f"allocations without a placed instance: {sorted(set(by_uuid) - set(ledger.placed))}; "
        f"placed instances without an allocation: {sorted(set(ledger.placed) - set(by_uuid))}"
    )
    host_names = {h.id: (h.zone, h.name) for h in ledger.hosts}
    for uuid, inst in ledger.placed.items():
        a = by_uuid[uuid]
        assert a.zone == inst.availability_zone, f"{uuid}: allocation in {a.zone}, record not"
        assert (a.vcpus, a.ram_mb, a.disk_gb, 1) == _resources(inst), f"{uuid}: sizes differ"
        if a.host_id is not None:
            assert host_names[a.host_id] == (a.zone, inst.host), f"{uuid}: on another host"

    for h in ledger.hosts:
        counters = (h.vcpus_used, h.ram_used_mb, h.disk_used_gb, h.instances)
        allocated = _sum(
            (a.vcpus, a.ram_mb, a.disk_gb, 1) for a in allocations if a.host_id == h.id
        )
        used = _sum(
            _resources(i)
            for i in ledger.placed.values()
            if i.availability_zone == h.zone and i.host == h.name
        )
        where = f"host {h.zone}/{h.name}"
        assert counters == allocated, f"{where}: counters {counters} != allocations {allocated}"
        assert counters == used, f"{where}: counters {counters} != instances {used}"
        assert h.vcpus_used <= h.vcpus * h.cpu_ratio, f"{where}: vCPUs over capacity"
        assert h.ram_used_mb <= h.ram_mb * h.ram_ratio, f"{where}: RAM over capacity"
        assert h.disk_used_gb <= h.disk_gb * h.disk_ratio, f"{where}: disk over capacity"
        assert min(counters) >= 0, f"{where}: negative counters {counters}"

    for name, z in ledger.zones.items():
        counters = (z.vcpus_used, z.ram_used_mb, z.disk_used_gb, z.instances)
        allocated = _sum((a.vcpus, a.ram_mb, a.disk_gb, 1) for a in allocations if a.zone == name)
        used = _sum(_resources(i) for i in ledger.placed_in(name))
        assert counters == allocated, f"zone {name}: counters {counters} != {allocated}"
        assert counters == used, f"zone {name}: counters {counters} != instances {used}"
    return ledger


def check_drivers(ledger: Ledger, drivers: Mapping[str, Driver]) -> None:
    """Assert each driver holds exactly the instances the broker placed in its zone."""
    for zone, driver in drivers.items():
        remote = {r.uuid: r for batch in driver.list_instances() for r in batch}
        placed = {i.uuid: i for i in ledger.placed_in(zone)}
        assert set(remote) - set(placed) == set(), f"{zone}: orphans {set(remote) - set(placed)}"
        assert set(placed) - set(remote) == set(), f"{zone}: lost {set(placed) - set(remote)}"
        for uuid, inst in placed.items():
            assert remote[uuid].host == inst.host or inst.host is None, f"{uuid}: host differs"
