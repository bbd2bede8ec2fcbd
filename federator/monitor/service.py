"""APScheduler wiring for the monitor.

Per zone: ``load:<zone>`` (health probe and host inventory), ``sync:<zone>``
(records, vanished instances and remote usage from the driver's listing),
``orphans:<zone>``, and ``volumes:<zone>`` where the zone holds volumes; plus the node
heartbeat, the scheduler cache refresh and ``vclusters`` (built virtual clusters DEGRADED
when a member has gone wrong, ACTIVE again when every member is fine). A zone whose
driver has events (``watch``) also gets ``events:<zone>``: each event brings that one
record up to date at once, on the same thread pool, without waiting for the next sync. The thread
pool has a thread for every job, so a slow or unreachable zone never delays another zone
or another job. Jobs never overlap themselves (``max_instances=1``) and missed runs
coalesce into one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from federator.compute.context import ComputeContext
from federator.driver import PowerState
from federator.monitor import jobs
from federator.monitor.jobs import JobRecord
from federator.monitor.orphans import find_orphans
from federator.monitor.sync import ZoneMemory, sync_instance, sync_zone
from federator.volumes.sync import sync_volumes

LOG = logging.getLogger(__name__)


class Monitor:
    def __init__(self, ctx: ComputeContext) -> None:
        self.ctx = ctx
        self.records: dict[str, JobRecord] = {}
        self.memory = {z.name: ZoneMemory() for z in ctx.settings.zones}
        self._cancels: list[Callable[[], None]] = []
        # Up to four jobs per zone (load, sync, orphans, volumes) and three for the node
        # (heartbeat, hosts-cache, vclusters).
        workers = 4 * len(ctx.settings.zones) + 3
        self._scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(workers)},
            job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": 30},
            timezone="UTC",
        )

    def _add(self, name: str, interval: float, fn: Callable[..., Any], *args: Any) -> None:
        record = JobRecord(name=name)
        self.records[name] = record
        self._scheduler.add_job(
            jobs.timed,
            "interval",
            seconds=interval,
            args=(record, fn, *args),
            id=name,
            name=name,
        )

    def start(self) -> None:
        mon = self.ctx.settings.monitor
        stale = self.ctx.settings.workers.lease_seconds
        self._add("heartbeat", mon.heartbeat_interval, jobs.heartbeat, self.ctx, stale)
        for zone in self.ctx.settings.zones:
            name = zone.name
            self._add(f"load:{name}", mon.load_interval, jobs.refresh_zone, self.ctx, name)
            self._add(
                f"sync:{name}", mon.sync_interval, sync_zone, self.ctx, name, self.memory[name]
            )
            self._add(f"orphans:{name}", mon.orphan_interval, find_orphans, self.ctx, name)
            if self.ctx.drivers[name].block_storage() is not None:
                self._add(f"volumes:{name}", mon.sync_interval, volume_sync, self.ctx, name)
        self._add("hosts-cache", mon.load_interval, jobs.refresh_hosts_cache, self.ctx)
        self._add("vclusters", mon.vcluster_interval, jobs.vcluster_health, self.ctx)
        self._scheduler.start()
        for zone in self.ctx.settings.zones:
            self._watch(zone.name)
        LOG.info("monitor started with %d job(s)", len(self.records))

    def _watch(self, zone: str) -> None:
        record = JobRecord(name=f"events:{zone}")

        def on_event(uuid: str, state: PowerState) -> None:
            # Called on the driver's thread: hand the work to the pool and return.
            if self._scheduler.running:
                self._scheduler.add_job(
                    jobs.timed,
                    args=(record, sync_instance, self.ctx, zone, uuid),
                    name=f"events:{zone}",
                    misfire_grace_time=None,
                )

        try:
            cancel = self.ctx.drivers[zone].watch(on_event)
        except Exception as exc:  # a zone without events still has its periodic sync
            LOG.warning("zone %s: no events: %s", zone, exc)
            return
        if cancel is not None:
            self.records[record.name] = record
            self._cancels.append(cancel)

    def run_now(self, name: str) -> JobRecord:
        """Run one job synchronously (admin call and tests)."""
        job = self._scheduler.get_job(name)
        if job is None:
            raise KeyError(name)
        job.func(*job.args)
        return self.records[name]

    def stop(self) -> None:
        for cancel in self._cancels:
            cancel()
        self._cancels.clear()
        if self._scheduler.running:
            self._scheduler.shutdown(wait=True)


def volume_sync(ctx: ComputeContext, zone: str) -> str:
    """The ``volumes:<zone>`` job: one pass of :func:`federator.volumes.sync.sync_volumes`."""
    return sync_volumes(ctx, zone).summary()
