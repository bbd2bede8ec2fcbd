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

Several broker processes may share one database: each per-zone job, and ``vclusters``, runs
only in the node that holds the zone's lease (:mod:`federator.monitor.leases`; the
``vclusters`` job's lease is the pseudo-zone ``*vclusters``). Every job stays scheduled in
every node and checks, from memory, whether this node holds the lease when a run starts; a
run of a node without it does nothing and counts as ``skipped``. So a node that takes a
zone over runs its jobs at their next tick, with no rescheduling. The heartbeat (which
renews the leases, at least three times a lease period), task requeueing and the host
cache refresh run in every node.
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
from federator.monitor.leases import VCLUSTERS, LeaseKeeper
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
        self.leases = LeaseKeeper(
            ctx.api,
            ctx.settings.node_id,
            [*(z.name for z in ctx.settings.zones), VCLUSTERS],
            ctx.settings.monitor.zone_lease_seconds,
        )
        # Up to four jobs per zone (load, sync, orphans, volumes) and three for the node
        # (heartbeat, hosts-cache, vclusters).
        workers = 4 * len(ctx.settings.zones) + 3
        self._scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(workers)},
            job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": 30},
            timezone="UTC",
        )

    def _add(
        self,
        name: str,
        interval: float,
        fn: Callable[..., Any],
        *args: Any,
        lease: str | None = None,
    ) -> None:
        """Schedule ``fn(*args)`` every ``interval`` seconds; with ``lease``, a run does
        anything only while this node holds that zone's lease."""
        record = JobRecord(name=name, lease=lease)
        self.records[name] = record
        if lease is None:
            func: Callable[..., None] = jobs.timed
            job_args: tuple[Any, ...] = (record, fn, *args)
        else:
            func, job_args = self._leased, (lease, record, fn, *args)
        self._scheduler.add_job(
            func, "interval", seconds=interval, args=job_args, id=name, name=name
        )

    def _leased(self, lease: str, record: JobRecord, fn: Callable[..., Any], *args: Any) -> None:
        if not self.leases.holds(lease):
            record.skipped += 1
            return
        jobs.timed(record, fn, *args)

    def _heartbeat(self, stale_after: float) -> str:
        """Renew the leases first: a slow requeue must not let them lapse."""
        leases = self.leases.renew()
        return f"{jobs.heartbeat(self.ctx, stale_after)}; {leases}"

    def start(self) -> None:
        mon = self.ctx.settings.monitor
        stale = self.ctx.settings.workers.lease_seconds
        # Take the leases before the first tick, so the owner's jobs start at once.
        LOG.info("zone leases: %s", self.leases.renew())
        beat = min(mon.heartbeat_interval, mon.zone_lease_seconds / 3)
        self._add("heartbeat", beat, self._heartbeat, stale)
        for zone in self.ctx.settings.zones:
            name = zone.name
            self._add(
                f"load:{name}", mon.load_interval, jobs.refresh_zone, self.ctx, name, lease=name
            )
            self._add(
                f"sync:{name}",
                mon.sync_interval,
                sync_zone,
                self.ctx,
                name,
                self.memory[name],
                lease=name,
            )
            self._add(
                f"orphans:{name}", mon.orphan_interval, find_orphans, self.ctx, name, lease=name
            )
            if self.ctx.drivers[name].block_storage() is not None:
                self._add(
                    f"volumes:{name}", mon.sync_interval, volume_sync, self.ctx, name, lease=name
                )
        self._add("hosts-cache", mon.load_interval, jobs.refresh_hosts_cache, self.ctx)
        self._add(
            "vclusters", mon.vcluster_interval, jobs.vcluster_health, self.ctx, lease=VCLUSTERS
        )
        self._scheduler.start()
        for zone in self.ctx.settings.zones:
            self._watch(zone.name)
        LOG.info("monitor started with %d job(s)", len(self.records))

    def _watch(self, zone: str) -> None:
        record = JobRecord(name=f"events:{zone}", lease=zone)

        def on_event(uuid: str, state: PowerState) -> None:
            # Called on the driver's thread: hand the work to the pool and return.
            # Every node watches (a driver's events reach every watcher); only the
            # zone's owner acts on them.
            if self._scheduler.running:
                self._scheduler.add_job(
                    self._leased,
                    args=(zone, record, sync_instance, self.ctx, zone, uuid),
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
        """Run one job synchronously (admin call and tests), as its schedule would: a
        leased job whose lease this node does not hold only counts a skipped run."""
        job = self._scheduler.get_job(name)
        if job is None:
            raise KeyError(name)
        job.func(*job.args)
        return self.records[name]

    def stop(self) -> None:
        """Stop the jobs, wait for runs under way, then give up this node's leases so
        another node takes its zones at its next heartbeat."""
        for cancel in self._cancels:
            cancel()
        self._cancels.clear()
        if self._scheduler.running:
            self._scheduler.shutdown(wait=True)
            try:
                released = self.leases.release()
            except Exception:  # they expire on their own within a lease period
                LOG.exception("could not give up the zone leases")
            else:
                LOG.info("gave up %d zone lease(s)", released)


def volume_sync(ctx: ComputeContext, zone: str) -> str:
    """The ``volumes:<zone>`` job: one pass of :func:`federator.volumes.sync.sync_volumes`."""
    return sync_volumes(ctx, zone).summary()
