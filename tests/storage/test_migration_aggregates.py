"""api_0005: hosts known before the upgrade keep taking instances, each zone's in an
aggregate of the zone's name."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import MetaData, insert, select

from federator.hosts import membership
from federator.storage import migrate
from federator.storage.db import Database
from federator.storage.models import Aggregate, Host

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _zone(name: str) -> dict[str, object]:
    counters = dict.fromkeys(
        ("ram_used_mb", "vcpus_used", "disk_used_gb", "instances", "ram_total_mb",
         "vcpus_total", "disk_total_gb", "consecutive_failures"),
        0,
    )  # fmt: skip
    return {"name": name, "kind": "local", "driver": "sim", "cell": "cell1",
            "state": "available", "state_detail": "", "bursting": False,
            "updated_at": NOW, **counters}  # fmt: skip


def _host(zone: str, name: str, reason: str = "") -> dict[str, object]:
    return {"zone": zone, "name": name, "az": zone, "enabled": not reason,
            "disabled_reason": reason, "vcpus": 8, "ram_mb": 8192, "disk_gb": 100,
            "vcpus_used": 1, "ram_used_mb": 1024, "disk_used_gb": 10, "instances": 1,
            "cpu_ratio": 4.0, "ram_ratio": 1.0, "disk_ratio": 1.0, "updated_at": NOW}  # fmt: skip


def test_existing_hosts_join_an_aggregate_of_their_zone(tmp_path: Path) -> None:
    db = Database("api", f"sqlite:///{tmp_path / 'api.sqlite'}")
    try:
        migrate.upgrade(db, "api", "api_0004")
        old = MetaData()
        old.reflect(db.engine)
        with db.engine.begin() as conn:
            conn.execute(insert(old.tables["zones"]), [_zone("rack-a"), _zone("rack-b")])
            conn.execute(
                insert(old.tables["hosts"]),
                [
                    _host("rack-a", "a1"),
                    _host("rack-a", "a2", "not reported by driver"),
                    _host("rack-b", "b1"),
                ],
            )
        assert migrate.upgrade(db, "api").current == migrate.head("api")

        with db.read() as s:
            aggs = {a.name: a for a in s.scalars(select(Aggregate))}
            assert set(aggs) == {"rack-a", "rack-b"}
            views = {name: membership.view(s, a) for name, a in aggs.items()}
            hosts = {h.name: h for h in s.scalars(select(Host))}
        assert views["rack-a"].hosts == ("a1", "a2")
        assert views["rack-b"].hosts == ("b1",)
        assert views["rack-a"].availability_zone is None
        assert (hosts["a1"].reported, hosts["a2"].reported) == (True, False)
        assert not any(h.admin_disabled or h.maintenance for h in hosts.values())
        # The derived state is what it was: a2 is still disabled for the same reason.
        with db.write() as s:
            membership.refresh(s, list(s.scalars(select(Host))))
        with db.read() as s:
            after = {h.name: (h.enabled, h.disabled_reason, h.az) for h in s.scalars(select(Host))}
        assert after == {
            "a1": (True, "", "rack-a"),
            "a2": (False, "not reported by driver", "rack-a"),
            "b1": (True, "", "rack-b"),
        }
    finally:
        db.dispose()
