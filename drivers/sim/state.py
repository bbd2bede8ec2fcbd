"""The sim driver's own state: its instances and volumes, in SQLite.

One connection per store, guarded by a re-entrant lock, serves every worker thread;
SQLite itself serialises writers between stores opened on the same file
(``BEGIN IMMEDIATE`` with a busy timeout), so two drivers on one data directory stay
consistent too. Nothing here knows about the broker's error taxonomy: problems are
raised as :class:`SimError` and translated by the driver.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

FaultKind = Literal["capacity", "transient", "permanent", "auth", "not_found", "volume_not_found"]

SCHEMA_VERSION = 3
BUSY_TIMEOUT_MS = 5000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    uuid        TEXT PRIMARY KEY,
    broker_id   TEXT NOT NULL,
    remote_id   TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    host        TEXT NOT NULL,
    state       TEXT NOT NULL,
    flavor      TEXT NOT NULL,
    vcpus       INTEGER NOT NULL,
    ram_mb      INTEGER NOT NULL,
    disk_gb     INTEGER NOT NULL,
    image       TEXT NOT NULL,
    project_id  TEXT NOT NULL,
    address     TEXT NOT NULL,
    launched_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_host ON instances (host);
CREATE INDEX IF NOT EXISTS instances_broker ON instances (broker_id, uuid);
CREATE TABLE IF NOT EXISTS volumes (
    uuid        TEXT PRIMARY KEY,
    broker_id   TEXT NOT NULL,
    remote_id   TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    size_gb     INTEGER NOT NULL,
    pool        TEXT NOT NULL,
    project_id  TEXT NOT NULL,
    state       TEXT NOT NULL,
    multiattach INTEGER NOT NULL DEFAULT 0,
    created_at  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS volumes_pool ON volumes (pool);
CREATE INDEX IF NOT EXISTS volumes_broker ON volumes (broker_id, uuid);
CREATE TABLE IF NOT EXISTS volume_attachments (
    volume_uuid TEXT NOT NULL REFERENCES volumes (uuid),
    server_uuid TEXT NOT NULL,
    device      TEXT NOT NULL,
    PRIMARY KEY (volume_uuid, server_uuid),
    UNIQUE (server_uuid, device)
);
CREATE INDEX IF NOT EXISTS volume_attachments_server ON volume_attachments (server_uuid);
CREATE TABLE IF NOT EXISTS settings (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""

_COLUMNS = (
    "uuid, broker_id, remote_id, name, host, state, flavor, vcpus, ram_mb, disk_gb, "
    "image, project_id, address, launched_at"
)


class SimError(Exception):
    """A failure inside the simulation; ``kind`` picks the driver error it becomes."""

    def __init__(self, kind: FaultKind, reason: str) -> None:
        super().__init__(reason)
        self.kind: FaultKind = kind
        self.reason = reason


@dataclass(frozen=True, slots=True)
class InstanceRow:
    uuid: str
    broker_id: str
    remote_id: str
    name: str
    host: str
    state: str
    flavor: str
    vcpus: int
    ram_mb: int
    disk_gb: int
    image: str
    project_id: str
    address: str
    launched_at: datetime


@dataclass(frozen=True, slots=True)
class VolumeRow:
    uuid: str
    broker_id: str
    remote_id: str
    name: str
    size_gb: int
    pool: str
    project_id: str
    state: str
    multiattach: bool
    created_at: datetime


@dataclass(frozen=True, slots=True)
class AttachmentRow:
    volume_uuid: str
    server_uuid: str
    device: str


@dataclass(frozen=True, slots=True)
class HostUsage:
    """What the instances on one host consume; stopped instances still hold resources."""

    vcpus: int = 0
    ram_mb: int = 0
    disk_gb: int = 0
    instances: int = 0


class SimStore:
    """Instances of one sim zone.

    :param path: the SQLite file, created if missing; ``None`` keeps state in memory
        for the life of the store.
    :raises SimError: the file holds a schema this code does not know.
    """

    def __init__(self, path: Path | None) -> None:
        self._lock = threading.RLock()
        self._depth = 0
        if path is None:
            target = ":memory:"
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            target = str(path)
        self._conn = sqlite3.connect(
            target,
            timeout=BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,  # transactions are explicit, see atomic()
            check_same_thread=False,  # shared by worker threads under self._lock
        )
        self._conn.row_factory = sqlite3.Row
        self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if path is not None:
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")
        self._migrate()

    def _migrate(self) -> None:
        with self.atomic():
            version = int(self._conn.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise SimError(
                    "permanent",
                    f"sim state is at schema {version}, newer than {SCHEMA_VERSION}",
                )
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self._conn.execute(statement)
            self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """One write transaction; nested calls join the outer one."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self._conn.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            else:
                self._conn.execute("COMMIT")
            finally:
                self._depth = 0

    def get(self, uuid: str) -> InstanceRow | None:
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_COLUMNS} FROM instances WHERE uuid = ?", (uuid,)
            ).fetchone()
        return None if row is None else _to_row(row)

    def remote_id_taken(self, remote_id: str) -> bool:
        with self._lock:
            found = self._conn.execute(
                "SELECT 1 FROM instances WHERE remote_id = ?", (remote_id,)
            ).fetchone()
        return found is not None

    def insert(self, row: InstanceRow) -> None:
        with self.atomic():
            self._conn.execute(
                f"INSERT INTO instances ({_COLUMNS}) VALUES ({', '.join('?' * 14)})",
                (
                    row.uuid,
                    row.broker_id,
                    row.remote_id,
                    row.name,
                    row.host,
                    row.state,
                    row.flavor,
                    row.vcpus,
                    row.ram_mb,
                    row.disk_gb,
                    row.image,
                    row.project_id,
                    row.address,
                    row.launched_at.isoformat(),
                ),
            )

    def set_state(self, uuid: str, state: str) -> bool:
        """Set an instance's state; false when there is no such instance."""
        with self.atomic():
            cur = self._conn.execute("UPDATE instances SET state = ? WHERE uuid = ?", (state, uuid))
        return cur.rowcount > 0

    def set_host(self, uuid: str, host: str) -> bool:
        """Move an instance to ``host``; false when there is no such instance."""
        with self.atomic():
            cur = self._conn.execute("UPDATE instances SET host = ? WHERE uuid = ?", (host, uuid))
        return cur.rowcount > 0

    def added_hosts(self) -> int:
        """Hosts added to the zone beyond those its options configure."""
        with self._lock:
            row = self._conn.execute(
                "SELECT value FROM settings WHERE key = 'added_hosts'"
            ).fetchone()
        return 0 if row is None else int(row[0])

    def add_hosts(self, count: int) -> int:
        """Add ``count`` hosts; returns the new number of added hosts."""
        with self.atomic():
            total = self.added_hosts() + count
            self._conn.execute(
                "INSERT INTO settings (key, value) VALUES ('added_hosts', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (total,),
            )
        return total

    def delete(self, uuid: str) -> bool:
        """Remove an instance, detaching every volume from it; false when there was none."""
        with self.atomic():
            self._conn.execute("DELETE FROM volume_attachments WHERE server_uuid = ?", (uuid,))
            cur = self._conn.execute("DELETE FROM instances WHERE uuid = ?", (uuid,))
        return cur.rowcount > 0

    # --- volumes ---------------------------------------------------------------------------

    def get_volume(self, uuid: str) -> VolumeRow | None:
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_VOLUME_COLUMNS} FROM volumes WHERE uuid = ?", (uuid,)
            ).fetchone()
        return None if row is None else _to_volume(row)

    def volume_remote_id_taken(self, remote_id: str) -> bool:
        with self._lock:
            found = self._conn.execute(
                "SELECT 1 FROM volumes WHERE remote_id = ?", (remote_id,)
            ).fetchone()
        return found is not None

    def insert_volume(self, row: VolumeRow) -> None:
        with self.atomic():
            self._conn.execute(
                f"INSERT INTO volumes ({_VOLUME_COLUMNS}) VALUES ({', '.join('?' * 10)})",
                (
                    row.uuid,
                    row.broker_id,
                    row.remote_id,
                    row.name,
                    row.size_gb,
                    row.pool,
                    row.project_id,
                    row.state,
                    int(row.multiattach),
                    row.created_at.isoformat(),
                ),
            )

    def delete_volume(self, uuid: str) -> bool:
        """Remove a volume and its attachments; false when there was none."""
        with self.atomic():
            self._conn.execute("DELETE FROM volume_attachments WHERE volume_uuid = ?", (uuid,))
            cur = self._conn.execute("DELETE FROM volumes WHERE uuid = ?", (uuid,))
        return cur.rowcount > 0

    def pool_used(self) -> dict[str, tuple[int, int]]:
        """(GB, volumes) held in each pool that has volumes."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT pool, SUM(size_gb), COUNT(*) FROM volumes GROUP BY pool"
            ).fetchall()
        return {r[0]: (int(r[1]), int(r[2])) for r in rows}

    def volume_page(self, broker_id: str, after: str, limit: int) -> list[VolumeRow]:
        """Up to ``limit`` volumes of ``broker_id`` with uuid greater than ``after``."""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_VOLUME_COLUMNS} FROM volumes WHERE broker_id = ? AND uuid > ? "
                "ORDER BY uuid LIMIT ?",
                (broker_id, after, limit),
            ).fetchall()
        return [_to_volume(r) for r in rows]

    def attachments(
        self, *, volumes: list[str] | None = None, server: str | None = None
    ) -> list[AttachmentRow]:
        """Attachments of the given volumes, or of one server (by device)."""
        with self._lock:
            if server is not None:
                rows = self._conn.execute(
                    "SELECT volume_uuid, server_uuid, device FROM volume_attachments "
                    "WHERE server_uuid = ? ORDER BY device",
                    (server,),
                ).fetchall()
            else:
                wanted = volumes or []
                rows = self._conn.execute(
                    "SELECT volume_uuid, server_uuid, device FROM volume_attachments "
                    f"WHERE volume_uuid IN ({', '.join('?' * len(wanted))}) "
                    "ORDER BY volume_uuid, server_uuid",
                    tuple(wanted),
                ).fetchall()
        return [AttachmentRow(r[0], r[1], r[2]) for r in rows]

    def attach(self, row: AttachmentRow) -> None:
        with self.atomic():
            self._conn.execute(
                "INSERT INTO volume_attachments (volume_uuid, server_uuid, device) "
                "VALUES (?, ?, ?)",
                (row.volume_uuid, row.server_uuid, row.device),
            )

    def detach(self, volume_uuid: str, server_uuid: str) -> bool:
        with self.atomic():
            cur = self._conn.execute(
                "DELETE FROM volume_attachments WHERE volume_uuid = ? AND server_uuid = ?",
                (volume_uuid, server_uuid),
            )
        return cur.rowcount > 0

    def usage(self, host: str | None = None) -> dict[str, HostUsage]:
        """Consumption per host that has instances, or of ``host`` alone."""
        sql = "SELECT host, SUM(vcpus), SUM(ram_mb), SUM(disk_gb), COUNT(*) FROM instances"
        params: tuple[str, ...] = ()
        if host is not None:
            sql += " WHERE host = ?"
            params = (host,)
        with self._lock:
            rows = self._conn.execute(sql + " GROUP BY host", params).fetchall()
        return {r[0]: HostUsage(int(r[1]), int(r[2]), int(r[3]), int(r[4])) for r in rows}

    def page(self, broker_id: str, after: str, limit: int) -> list[InstanceRow]:
        """Up to ``limit`` instances of ``broker_id`` with uuid greater than ``after``."""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM instances WHERE broker_id = ? AND uuid > ? "
                "ORDER BY uuid LIMIT ?",
                (broker_id, after, limit),
            ).fetchall()
        return [_to_row(r) for r in rows]

    def count(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM instances").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()


_VOLUME_COLUMNS = (
    "uuid, broker_id, remote_id, name, size_gb, pool, project_id, state, multiattach, created_at"
)


def _to_volume(row: sqlite3.Row) -> VolumeRow:
    values = dict(row)
    values["created_at"] = datetime.fromisoformat(values["created_at"])
    values["multiattach"] = bool(values["multiattach"])
    return VolumeRow(**values)


def _to_row(row: sqlite3.Row) -> InstanceRow:
    values = dict(row)
    values["launched_at"] = datetime.fromisoformat(values["launched_at"])
    return InstanceRow(**values)
