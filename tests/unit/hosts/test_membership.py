"""The aggregate and host-state rules as plain functions over a SQLite API database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from federator.config import AggregateConfig, ZoneConfig
from federator.exception import BadRequest, Conflict, NotFound
from federator.hosts import membership
from federator.storage.db import Database
from federator.storage.models import ApiBase, Host, Zone


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    """Zones ``a`` and ``b`` (local) and ``cloud`` (virtual); hosts a1, a2 in a, b1 in b,
    in no aggregate."""
    database = Database("api", f"sqlite:///{tmp_path / 'api.sqlite'}")
    ApiBase.metadata.create_all(database.engine)
    with database.write() as s:
        s.add_all(
            [
                Zone(name="a", kind="local", driver="sim", cell="cell1"),
                Zone(name="b", kind="local", driver="sim", cell="cell1"),
                Zone(name="cloud", kind="virtual", driver="sim", cell="cell1"),
            ]
        )
        s.flush()
        for zone, name in (("a", "a1"), ("a", "a2"), ("b", "b1")):
            s.add(Host(zone=zone, name=name, az=zone, vcpus=8, ram_mb=8192, disk_gb=100))
        s.flush()
        membership.refresh(s, list(s.scalars(select(Host))))
    yield database
    database.dispose()


def host(db: Database, name: str) -> Host:
    with db.read() as s:
        found = s.scalars(select(Host).where(Host.name == name)).one()
        s.expunge(found)
        return found


def run(db: Database, fn: object, *args: object) -> None:
    """Call ``fn(session, aggregate-or-host objects...)`` in one write transaction; names
    are looked up in it (``"agg:x"`` an aggregate by name, ``"host:x"`` a host)."""
    with db.write() as s:
        resolved: list[object] = []
        for a in args:
            if isinstance(a, str) and a.startswith("agg:"):
                resolved.append(
                    s.scalars(
                        select(membership.Aggregate).where(membership.Aggregate.name == a[4:])
                    ).one()
                )
            elif isinstance(a, str) and a.startswith("host:"):
                resolved.append(membership.find_host(s, a[5:]))
            else:
                resolved.append(a)
        fn(s, *resolved)  # type: ignore[operator]


def create(db: Database, name: str, az: str | None = None) -> None:
    with db.write() as s:
        membership.create(s, name, az)


def test_a_host_in_no_aggregate_is_disabled_and_joining_one_enables_it(db: Database) -> None:
    assert (host(db, "a1").enabled, host(db, "a1").disabled_reason) == (
        False,
        "not in any aggregate",
    )
    create(db, "rack-a")
    run(db, membership.add_host, "agg:rack-a", "host:a1")
    a1 = host(db, "a1")
    assert (a1.enabled, a1.disabled_reason, a1.az) == (True, "", "a")
    run(db, membership.remove_host, "agg:rack-a", "host:a1")
    assert host(db, "a1").disabled_reason == "not in any aggregate"


def test_status_names_the_first_reason() -> None:
    h = Host(zone="a", name="h", az="a", reported=True, admin_disabled=False, maintenance=True)
    h.maintenance_reason = "kernel upgrade"
    assert membership.status(h, True).reason == "maintenance: kernel upgrade"
    assert membership.status(h, False).reason == "not in any aggregate"
    h.admin_disabled, h.admin_reason = True, "broken fan"
    assert membership.status(h, True).reason == "broken fan"
    h.reported = False
    assert membership.status(h, True) == membership.Status(
        False, "disabled", "not reported by driver"
    )


def test_explain_of_a_stored_host() -> None:
    h = Host(enabled=False, maintenance=True, disabled_reason="maintenance: disks")
    assert membership.explain_of(h) == "maintenance: disks"
    h = Host(enabled=False, maintenance=False, disabled_reason="not in any aggregate")
    assert membership.explain_of(h) == "disabled: not in any aggregate"
    assert membership.explain_of(Host(enabled=True, disabled_reason="")) == ""


def test_an_aggregate_availability_zone_moves_its_hosts(db: Database) -> None:
    create(db, "fast", "az-fast")
    run(db, membership.add_host, "agg:fast", "host:a1")
    assert host(db, "a1").az == "az-fast"
    run(db, membership.set_availability_zone, "agg:fast", None)
    assert host(db, "a1").az == "a"
    run(db, membership.set_metadata, "agg:fast", {"availability_zone": "az-2", "ssd": "true"})
    assert host(db, "a1").az == "az-2"
    with db.read() as s:
        assert membership.host_metadata(s)[host(db, "a1").id] == {
            "availability_zone": frozenset({"az-2"}),
            "ssd": frozenset({"true"}),
        }


def test_names_are_unique_whatever_their_case(db: Database) -> None:
    create(db, "Rack-A")
    with pytest.raises(Conflict, match="an aggregate named 'Rack-A' exists already"):
        create(db, "rack-a")
    create(db, "other")
    with pytest.raises(Conflict):
        run(db, membership.rename, "agg:other", "RACK-A")


def test_a_host_is_in_one_availability_zone_at_most(db: Database) -> None:
    create(db, "x", "az-x")
    create(db, "y", "az-y")
    create(db, "plain")
    run(db, membership.add_host, "agg:x", "host:a1")
    with pytest.raises(Conflict, match="one availability zone at most"):
        run(db, membership.add_host, "agg:y", "host:a1")
    run(db, membership.add_host, "agg:plain", "host:a1")  # no availability zone: fine
    run(db, membership.add_host, "agg:y", "host:a2")
    with pytest.raises(Conflict, match="also in aggregate 'x'"):
        run(db, membership.set_availability_zone, "agg:plain", "az-y")
    assert host(db, "a1").az == "az-x"


def test_an_availability_zone_lies_within_one_zone(db: Database) -> None:
    create(db, "x", "az-x")
    run(db, membership.add_host, "agg:x", "host:a1")
    with pytest.raises(Conflict, match="would span zones a, b"):
        run(db, membership.add_host, "agg:x", "host:b1")
    create(db, "named-after-a", "a")
    with pytest.raises(Conflict, match="lies in zone 'a'"):
        run(db, membership.add_host, "agg:named-after-a", "host:b1")
    run(db, membership.add_host, "agg:named-after-a", "host:a2")


def test_a_virtual_zone_name_is_no_availability_zone(db: Database) -> None:
    with pytest.raises(BadRequest, match="virtual zone 'cloud'"):
        create(db, "x", "cloud")
    for bad in ("", "a:b", " lead"):
        with pytest.raises(BadRequest):
            create(db, "x", bad)


def test_a_host_running_instances_keeps_its_availability_zone(db: Database) -> None:
    create(db, "home")
    create(db, "away", "az-away")
    run(db, membership.add_host, "agg:home", "host:a1")
    with db.write() as s:
        membership.find_host(s, "a1").instances = 2
    with pytest.raises(Conflict, match="runs 2 instance"):
        run(db, membership.add_host, "agg:away", "host:a1")
    run(db, membership.set_availability_zone, "agg:away", None)
    run(db, membership.add_host, "agg:away", "host:a1")  # no move: allowed
    with pytest.raises(Conflict, match="runs 2 instance"):
        run(db, membership.set_availability_zone, "agg:away", "az-away")
    run(db, membership.remove_host, "agg:away", "host:a1")  # no move either
    assert host(db, "a1").enabled


def test_delete_refuses_an_aggregate_with_hosts(db: Database) -> None:
    create(db, "x")
    run(db, membership.add_host, "agg:x", "host:a1")
    with pytest.raises(Conflict, match="still holds 1 host"):
        run(db, membership.delete_aggregate, "agg:x")
    run(db, membership.remove_host, "agg:x", "host:a1")
    run(db, membership.delete_aggregate, "agg:x")


def test_unknown_and_duplicate_membership(db: Database) -> None:
    create(db, "x")
    with pytest.raises(NotFound, match="host nope could not be found"):
        run(db, membership.add_host, "agg:x", "host:nope")
    with pytest.raises(NotFound, match="not in aggregate 'x'"):
        run(db, membership.remove_host, "agg:x", "host:a1")
    run(db, membership.add_host, "agg:x", "host:a1")
    with pytest.raises(Conflict, match="already in aggregate 'x'"):
        run(db, membership.add_host, "agg:x", "host:a1")
    with db.read() as s, pytest.raises(NotFound):
        membership.get_aggregate(s, "x")


def test_declared_aggregates_take_matching_hosts(db: Database) -> None:
    zone = ZoneConfig(
        name="a",
        driver="sim",
        kind="local",
        aggregates=[
            AggregateConfig(name="odd", hosts=["*1"], availability_zone="az-odd"),
            AggregateConfig(name="gpu", hosts=["a2"], metadata={"gpu": "yes"}),
        ],
    )
    with db.write() as s:
        added = membership.join_declared(
            s, zone, list(s.scalars(select(Host).where(Host.zone == "a")))
        )
    assert added == 2
    assert (host(db, "a1").az, host(db, "a1").enabled) == ("az-odd", True)
    assert (host(db, "a2").az, host(db, "a2").enabled) == ("a", True)
    with db.read() as s:
        assert membership.host_metadata(s)[host(db, "a2").id] == {"gpu": frozenset({"yes"})}
        assert membership.aggregate_zones(db) == {"az-odd": "a"}
    assert membership.zone_of_az(db, "az-odd") == "a"
    assert membership.zone_of_az(db, "az-none") is None


def test_zone_totals_count_enabled_hosts_only(db: Database) -> None:
    create(db, "x")
    run(db, membership.add_host, "agg:x", "host:a1")
    with db.read() as s:
        a = s.get_one(Zone, "a")
        assert (a.vcpus_total, a.ram_total_mb) == (32, 8192)  # one host: 8 x ratio 4
