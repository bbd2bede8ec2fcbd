"""Monitor jobs as plain functions; ``federator.monitor.service`` only schedules them."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field

from federator.compute.context import ComputeContext
from federator.compute.zonestate import record_zone_failure, record_zone_success
from federator.driver import DriverError
from federator.hosts.inventory import sync_hosts
from federator.monitor.capabilities import poll_capabilities, store_report
from federator.vclusters.health import check_clusters
from federator.volumes.pools import sync_pools

LOG = logging.getLogger(__name__)


@dataclass
class JobRecord:
    """What the API shows for each job: last run, duration, result, error. ``lease``: the
    zone whose lease a run needs (None: the job runs in every node); ``skipped``: runs that
    did nothing because this node did not hold it."""

    name: str
    lease: str | None = None
    skipped: int = 0
    runs: int = 0
    last_started: float | None = None
    last_duration: float | None = None
    last_result: str = ""
    last_error: str = ""
    failures: int = 0
    extra: dict[str, str] = field(default_factory=dict)


def refresh_zone(ctx: ComputeContext, zone: str) -> str:
    """Probe a zone's health and re-read its hosts, or for a virtual zone what it reports it
    can still take; returns a one-line summary.

    :raises DriverError: the zone could not be asked (counted towards marking it down).
    """
    driver = ctx.drivers[zone]
    zc = ctx.settings.zone(zone)
    threshold = ctx.settings.monitor.failures_to_down
    health = driver.health()
    if not health.ok:
        if not driver.capabilities().host_scheduling:
            store_report(ctx.api, zone, None)
        down = record_zone_failure(ctx.api, zone, health.detail, threshold=threshold)
        return f"unhealthy ({'down' if down else 'degraded'}): {health.detail}"
    new = 0
    reported = ""
    try:
        if driver.capabilities().host_scheduling:
            new = sync_hosts(ctx.api, zc, driver.list_hosts())
        else:
            reported = poll_capabilities(ctx.api, zone, driver.capacity)
    except DriverError as exc:
        record_zone_failure(ctx.api, zone, exc.message, threshold=threshold)
        raise
    record_zone_success(ctx.api, zone, health.detail)
    summary = f"ok: {health.detail}" + (f"; {new} new host(s)" if new else "")
    return summary + (f"; {reported}" if reported else "") + _refresh_pools(ctx, zone)


def _refresh_pools(ctx: ComputeContext, zone: str) -> str:
    """Re-read the zone's storage pools; a failure keeps the pools as last seen and does not
    count against the zone's compute (servers still boot where volumes cannot be made)."""
    storage = ctx.drivers[zone].block_storage()
    if storage is None:
        return ""
    try:
        sync_pools(ctx.api, zone, storage.pools())
    except DriverError as exc:
        LOG.warning("zone %s: storage pools not refreshed: %s", zone, exc.message)
        return f"; storage pools not refreshed: {exc.message}"
    return ""


def refresh_hosts_cache(ctx: ComputeContext) -> str:
    ctx.hosts.reload()
    return f"{len(ctx.hosts.table)} host(s) cached"


def vcluster_health(ctx: ComputeContext) -> str:
    """The ``vclusters`` job: built clusters DEGRADED when a member has gone wrong, ACTIVE
    again when every member is fine (:func:`federator.vclusters.health.check_clusters`)."""
    return str(check_clusters(ctx))


def heartbeat(ctx: ComputeContext, stale_after: float) -> str:
    ctx.queue.heartbeat(os.getpid())
    n = ctx.queue.requeue_orphaned(stale_after)
    return f"alive; {n} orphaned task(s) requeued" if n else "alive"


def timed(record: JobRecord, fn: object, *args: object) -> None:
    """Run ``fn`` and keep its outcome on ``record``; never raises."""
    record.runs += 1
    record.last_started = time.time()
    t0 = time.perf_counter()
    try:
        result = fn(*args)  # type: ignore[operator]
        record.last_result = str(result)
        record.last_error = ""
    except Exception as exc:
        record.failures += 1
        record.last_error = f"{type(exc).__name__}: {exc}"
        record.last_result = "failed"
        LOG.warning("monitor job %s failed: %s", record.name, record.last_error)
    finally:
        record.last_duration = time.perf_counter() - t0
