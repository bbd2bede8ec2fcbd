"""Polling a child zone's capacity report and keeping it on the zone row."""

from __future__ import annotations

from pathlib import Path

import pytest

from federator.driver import AzCapacity, TransientError, ZoneCapacity
from federator.hosts.inventory import reported_limits, zone_loads
from federator.monitor.capabilities import poll_capabilities
from federator.policy.evaluate import Limits
from tests.unit.monitor.rig import open_broker

REPORT = ZoneCapacity(
    availability_zones=(AzCapacity("local", True, 4096, 8, None),),
    free_ram_mb=4096,
    free_vcpus=8,
    free_instances=None,
)


def test_report_is_kept_with_the_counters_read_before_asking(tmp_path: Path) -> None:
    broker = open_broker(tmp_path)
    db = broker.dbs.api
    try:
        summary = poll_capabilities(db, "cloud-a", lambda: REPORT)
        assert summary == "free ram_mb 4096, vcpus 8, instances unbounded"
        load = zone_loads(db)["cloud-a"]
        assert load.reported == Limits(ram_mb=4096, vcpus=8, instances=None)
    finally:
        broker.stop()


def test_a_claim_while_the_child_answers_makes_the_poll_ask_again(tmp_path: Path) -> None:
    from sqlalchemy import update

    from federator.storage.models import Zone

    broker = open_broker(tmp_path)
    db = broker.dbs.api
    asked: list[int] = []

    def ask() -> ZoneCapacity:
        asked.append(1)
        if len(asked) == 1:  # a claim of 1024 MB lands while the child computes its answer
            with db.write() as s:
                s.execute(update(Zone).where(Zone.name == "cloud-a").values(ram_used_mb=1024))
        return REPORT

    try:
        poll_capabilities(db, "cloud-a", ask)
        assert len(asked) == 2
        # The kept report is the second one, with 1024 MB as its base.
        assert zone_loads(db)["cloud-a"].reported == Limits(ram_mb=5120, vcpus=8, instances=None)
    finally:
        broker.stop()


def test_a_failed_poll_clears_the_report(tmp_path: Path) -> None:
    broker = open_broker(tmp_path)
    db = broker.dbs.api

    def fail() -> ZoneCapacity:
        raise TransientError("cloud-a", "cannot reach the remote cloud")

    try:
        poll_capabilities(db, "cloud-a", lambda: REPORT)
        with pytest.raises(TransientError):
            poll_capabilities(db, "cloud-a", fail)
        assert zone_loads(db)["cloud-a"].reported is None
        # A zone whose driver reports nothing keeps no report either.
        assert poll_capabilities(db, "cloud-b", lambda: None) == "reports no capacity"
        assert zone_loads(db)["cloud-b"].reported is None
    finally:
        broker.stop()


def test_reported_limits_adds_room_to_the_base() -> None:
    assert reported_limits(None) is None
    doc = {
        "free": {"ram_mb": 100, "vcpus": None, "instances": 0},
        "base": {"ram_mb": 50, "vcpus": 3, "instances": 2},
    }
    assert reported_limits(doc) == Limits(ram_mb=150, vcpus=None, instances=2)
