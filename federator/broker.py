"""The broker: wires configuration, databases, drivers, policy, workers and monitor.

``Broker.open`` does every start-up check and fails with a clear error before anything
runs: schema revisions, users and projects (creating the embedded default's admin on first
start), driver plugins and their options, the policy file, and the host scheduler's
filters and weighers. On the
built-in zone list it first starts the embedded EC2 stand-in (:mod:`federator.embedded`).
``start`` resumes work a previous run of this node left unfinished and starts the
workers and the monitor; ``stop`` drains them, then stops the stand-in.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from federator import embedded
from federator.compute.context import ComputeContext
from federator.compute.queue import TaskQueue
from federator.compute.service import ComputeService
from federator.compute.workers import WorkerPool
from federator.config import Settings
from federator.driver import Driver, DriverError
from federator.exception import FederatorError
from federator.groups.service import GroupService
from federator.hosts.inventory import HostCache, sync_zones
from federator.hosts.maintenance import Drainer
from federator.identity.bootstrap import identity_config
from federator.identity.model import Directory
from federator.identity.service import IdentityService
from federator.monitor import jobs
from federator.monitor.service import Monitor
from federator.plugins import load_driver
from federator.policy.loader import PolicyContext
from federator.policy.store import PolicyStore
from federator.scheduler.loader import scheduler_from_config
from federator.storage import migrate
from federator.storage.db import Database
from federator.vclusters.service import VClusterService
from federator.volumes.service import VolumeService

LOG = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Databases:
    api: Database
    cells: dict[str, Database]  # cell0 included

    @classmethod
    def from_settings(cls, settings: Settings) -> Databases:
        pool = settings.workers.count + 16
        api = Database("api", settings.api_db_url(), pool_size=pool)
        cells = {"cell0": Database("cell0", settings.cell_db_url("cell0"), pool_size=pool)}
        for name in settings.cell_names():
            cells[name] = Database(name, settings.cell_db_url(name), pool_size=pool)
        return cls(api, cells)

    def all(self) -> list[tuple[Database, migrate.Kind]]:
        return [(self.api, "api"), *((db, "cell") for db in self.cells.values())]

    def upgrade(self) -> list[migrate.SchemaStatus]:
        return [migrate.upgrade(db, kind) for db, kind in self.all()]

    def check(self, *, initialise_empty: bool) -> list[migrate.SchemaStatus]:
        """:raises DatabaseOutdated: a database is at another revision than this release."""
        return [
            migrate.ensure_current(db, kind, initialise_empty=initialise_empty)
            for db, kind in self.all()
        ]

    def dispose(self) -> None:
        for db, _ in self.all():
            db.dispose()


class Broker:
    def __init__(
        self,
        settings: Settings,
        dbs: Databases,
        drivers: dict[str, Driver],
        policies: PolicyStore,
        identity: IdentityService,
        stand_in: embedded.StandIn | None = None,
    ) -> None:
        self.settings = settings
        self.stand_in = stand_in
        self.dbs = dbs
        self.identity = identity
        self.drivers = drivers
        self.policies = policies
        self.hosts = HostCache(dbs.api)
        self.queue = TaskQueue(dbs.api, settings.node_id)
        self.ctx = ComputeContext(
            settings=settings,
            api=dbs.api,
            cells=dbs.cells,
            drivers=drivers,
            policies=policies,
            hosts=self.hosts,
            scheduler=scheduler_from_config(settings.scheduler),
            queue=self.queue,
        )
        self.compute = ComputeService(self.ctx)
        self.groups = GroupService(self.ctx)
        self.volumes = VolumeService(self.ctx, self.compute)
        self.vclusters = VClusterService(self.ctx, self.compute)
        self.workers = WorkerPool(self.ctx)
        self.monitor = Monitor(self.ctx)
        self._started = False

    @classmethod
    def open(cls, settings: Settings, *, initialise_empty: bool = True) -> Broker:
        """Check everything and build the broker; nothing runs yet.

        :raises FederatorError: (ConfigError, DriverNotFound, PolicyInvalid, DatabaseOutdated)
            with a message naming what is wrong.
        """
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        settings, stand_in = embedded.prepare(settings)
        try:
            return cls._open(settings, stand_in, initialise_empty=initialise_empty)
        except BaseException:
            if stand_in is not None:
                stand_in.stop()
            raise

    @classmethod
    def _open(
        cls, settings: Settings, stand_in: embedded.StandIn | None, *, initialise_empty: bool
    ) -> Broker:
        dbs = Databases.from_settings(settings)
        drivers: dict[str, Driver] = {}
        try:
            dbs.check(initialise_empty=initialise_empty)
            directory = Directory.from_config(identity_config(settings))
            identity = IdentityService.from_settings(settings, dbs.api, directory)
            flavors = [f.name for f in settings.flavors]
            images = {i.id: i.name for i in settings.images}
            for zone in settings.zones:
                driver = load_driver(zone, settings.broker_id, settings.data_dir)
                drivers[zone.name] = driver
                driver.validate_catalog(flavors, images)
            policies = PolicyStore(
                settings.resolved_policy_file(),
                PolicyContext.from_settings(settings),
                dbs.api,
                settings.node_id,
            )
            policies.load()
            broker = cls(settings, dbs, drivers, policies, identity, stand_in)
            sync_zones(dbs.api, settings)
            for zone in settings.zones:
                record = jobs.JobRecord(name=f"load:{zone.name}")
                jobs.timed(record, jobs.refresh_zone, broker.ctx, zone.name)
                if record.last_error:
                    LOG.error(
                        "zone %s is not reachable at start-up: %s", zone.name, record.last_error
                    )
            broker.hosts.reload()
            return broker
        except (FederatorError, DriverError):
            for d in drivers.values():
                d.close()
            dbs.dispose()
            raise

    def start(self, *, workers: bool = True, monitor: bool = True) -> None:
        """Resume this node's unfinished tasks, settle host moves a crash interrupted, then
        start workers and monitor."""
        self.queue.heartbeat(os.getpid())
        resumed = self.queue.requeue_own()
        if resumed:
            LOG.warning("resuming %d task(s) left running by this node's previous run", resumed)
        try:
            settled = Drainer(self.ctx).reconcile()
        except Exception:  # a zone that cannot be asked now is settled by a later drain
            LOG.exception("could not settle host moves left by a previous run")
        else:
            if settled:
                LOG.warning("settled %d host move(s) left by a previous run", settled)
        if workers:
            self.workers.start()
        if monitor:
            self.monitor.start()
        self._started = True

    def stop(self) -> None:
        """Stop taking work, let running tasks finish, stop the monitor, close everything;
        the EC2 stand-in last, since draining tasks may still call it."""
        if self._started:
            self.workers.stop()
            self.monitor.stop()
            self._started = False
        for d in self.drivers.values():
            try:
                d.close()
            except Exception:
                LOG.exception("closing the driver of zone %s failed", d.zone)
        self.dbs.dispose()
        if self.stand_in is not None:
            self.stand_in.stop()
