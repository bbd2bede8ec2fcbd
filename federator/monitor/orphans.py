"""Orphans: remote instances tagged with this broker's id that nothing accounts for.

The driver lists only this broker's instances. One of them is an orphan when no build is
under way for it (no build request, no allocation, no instance mapping still waiting for a
cell) and no cell outside cell0 holds a live record of it. The API database is read before
the cells: a build writes its cell record before it removes its build request, so an
instance whose build finishes between the two reads is still seen as accounted for. Each
suspect is then fetched from the driver again, so one deleted meanwhile is not reported.

The policy's ``orphans`` section says what happens to an orphan launched at least
``min_age_seconds`` ago: ``log`` records it once; ``quarantine`` stops it (the driver
contract has no tags, so quarantined means stopped and recorded) and stops it again if it
is found running later; ``delete`` deletes it. Every sighting acted on is a ``monitor_events``
row of kind ``orphan`` whose ``action`` says what was done.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from sqlalchemy import select

from federator.compute.context import ComputeContext
from federator.compute.records import CELL0, aware
from federator.driver import Driver, DriverError, InstanceNotFound, PowerState, RemoteInstance
from federator.policy.model import OrphanPolicy
from federator.storage.events import OrphanHistory, orphan_history, record_event
from federator.storage.models import (
    Allocation,
    BuildRequest,
    Instance,
    InstanceMapping,
    utcnow,
)

LOG = logging.getLogger(__name__)
Clock = Callable[[], datetime]


@dataclass
class OrphanReport:
    """The outcome of one orphan run.

    ``seen``: instances listed; ``orphans``: orphans old enough to be dealt with;
    ``young``: orphans launched less than ``min_age_seconds`` ago (left for later);
    ``recorded``: events written; ``acted``: orphans stopped or deleted.
    """

    zone: str
    seen: int = 0
    orphans: int = 0
    young: int = 0
    recorded: int = 0
    acted: int = 0

    def counts(self) -> dict[str, int]:
        return {k: v for k, v in asdict(self).items() if k != "zone"}

    def __str__(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in self.counts().items())


def find_orphans(ctx: ComputeContext, zone: str, *, clock: Clock = utcnow) -> OrphanReport:
    """Find the orphans of ``zone`` and apply the policy to them (see the module docstring).

    :raises DriverError: the listing failed; orphans already dealt with stay so.
    """
    policy = ctx.policies.current.policy.orphans
    driver = ctx.drivers[zone]
    now = clock()
    report = OrphanReport(zone=zone)
    for batch in driver.list_instances(ctx.settings.monitor.list_batch_size):
        live = [r for r in batch if r.state is not PowerState.DELETED]
        report.seen += len(live)
        suspects = unaccounted(ctx, [r.uuid for r in live])
        if not suspects:
            continue
        history = orphan_history(ctx.api, suspects)
        for remote in live:
            if remote.uuid in suspects:
                _deal_with(ctx, driver, zone, remote, policy, history.get(remote.uuid), now, report)
    return report


def unaccounted(ctx: ComputeContext, uuids: Iterable[str]) -> set[str]:
    """The ``uuids`` no build in progress and no live record (outside cell0) accounts for."""
    wanted = set(uuids)
    if not wanted:
        return set()
    with ctx.api.read() as s:
        building = set(
            s.scalars(
                select(BuildRequest.instance_uuid).where(BuildRequest.instance_uuid.in_(wanted))
            )
        )
        building.update(
            s.scalars(select(Allocation.instance_uuid).where(Allocation.instance_uuid.in_(wanted)))
        )
        building.update(
            s.scalars(
                select(InstanceMapping.instance_uuid).where(
                    InstanceMapping.instance_uuid.in_(wanted), InstanceMapping.cell.is_(None)
                )
            )
        )
    rest = wanted - building
    for name, db in ctx.cells.items():
        if name == CELL0 or not rest:
            continue
        with db.read() as s:
            rest.difference_update(
                s.scalars(
                    select(Instance.uuid).where(
                        Instance.uuid.in_(rest), Instance.deleted.is_(False)
                    )
                )
            )
    return rest


def _deal_with(
    ctx: ComputeContext,
    driver: Driver,
    zone: str,
    listed: RemoteInstance,
    policy: OrphanPolicy,
    history: OrphanHistory | None,
    now: datetime,
    report: OrphanReport,
) -> None:
    try:
        remote = driver.get(listed.uuid)
    except InstanceNotFound:
        return  # deleted since it was listed
    if remote.state is PowerState.DELETED:
        return
    launched = remote.launched_at or listed.launched_at
    if launched is not None:
        since = aware(launched)
    elif history is not None:
        since = aware(history.first_seen)
    else:
        # Without a launch time, the age counts from the first sighting, recorded now.
        _record(ctx, zone, remote, "log", "launch time unknown; its age counts from now")
        report.recorded += 1
        report.young += 1
        return
    if now - since < timedelta(seconds=policy.min_age_seconds):
        report.young += 1
        return
    report.orphans += 1
    action = policy.action
    if action == "log":
        if history is None:
            _record(ctx, zone, remote, "log", "recorded only (policy action log)")
            report.recorded += 1
        return
    if (
        action == "quarantine"
        and remote.state is PowerState.SHUTOFF
        and history is not None
        and history.last_action == "quarantine"
    ):
        return  # quarantined already and still stopped
    try:
        if action == "quarantine":
            driver.stop(remote.uuid)
            outcome = "stopped (policy action quarantine)"
        else:
            driver.delete(remote.uuid)
            outcome = "deleted (policy action delete)"
        report.acted += 1
    except DriverError as exc:
        outcome = f"{'stop' if action == 'quarantine' else 'delete'} failed: {exc.message}"
    _record(ctx, zone, remote, action, outcome)
    report.recorded += 1


def _record(
    ctx: ComputeContext, zone: str, remote: RemoteInstance, action: str, outcome: str
) -> None:
    launched = (
        aware(remote.launched_at).strftime("%Y-%m-%dT%H:%M:%SZ")
        if remote.launched_at
        else "at an unknown time"
    )
    detail = (
        f"instance {remote.uuid} (remote id {remote.remote_id}, {remote.state.value}, launched "
        f"{launched}) carries this broker's id in zone {zone} but no record or build accounts "
        f"for it: {outcome}"
    )
    record_event(
        ctx.api,
        zone=zone,
        kind="orphan",
        instance_uuid=remote.uuid,
        remote_id=remote.remote_id,
        action=action,
        detail=detail,
    )
    LOG.warning("orphan: %s", detail)
