"""Schema migrations: ``federator db upgrade`` reaches head, the migrated schema is exactly
the models' (SQLite and PostgreSQL), and start-up refuses a database at another revision
while initialising an empty one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, text

from federator.broker import Broker, Databases
from federator.config import Settings
from federator.exception import DatabaseOutdated
from federator.storage import migrate
from federator.storage.db import Database
from federator.storage.models import ApiBase, CellBase
from tests.conftest import make_settings
from tests.functional.support import federator, write_broker_toml

METADATA: dict[migrate.Kind, MetaData] = {"api": ApiBase.metadata, "cell": CellBase.metadata}
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]

UrlFactory = Callable[[str], str]


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> UrlFactory:
    """Makes URLs of new, empty databases on the backend under test."""
    if request.param == "sqlite":
        return lambda name: f"sqlite:///{tmp_path / name}.sqlite"
    make_pg: Callable[[], str] = request.getfixturevalue("pg_database_factory")
    return lambda _name: make_pg()


def _schema_diff(db: Database, kind: migrate.Kind) -> list[Any]:
    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff: list[Any] = compare_metadata(context, METADATA[kind])
    return diff


@pytest.mark.parametrize("kind", ["api", "cell"])
def test_migrated_schema_matches_the_models(database_url: UrlFactory, kind: migrate.Kind) -> None:
    db = Database(kind, database_url(kind))
    try:
        assert migrate.status(db, kind).empty
        assert migrate.upgrade(db, kind).up_to_date
        assert _schema_diff(db, kind) == []
        # Upgrading a database at head changes nothing.
        assert migrate.upgrade(db, kind).current == migrate.head(kind)
        assert _schema_diff(db, kind) == []
    finally:
        db.dispose()


def test_db_upgrade_brings_every_database_to_head(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cell2 = f"sqlite:///{tmp_path / 'elsewhere' / 'cell2.sqlite'}"
    config = write_broker_toml(tmp_path / "federator.toml", data_dir=data, cells={"cell2": cell2})

    before = federator("db", "status", "--config", config)
    assert before.returncode == 1, before.stdout + before.stderr
    assert "empty" in before.stdout

    done = federator("db", "upgrade", "--config", config)
    assert done.returncode == 0, done.stderr
    for name in ("api", "cell0", "cell1", "cell2"):
        assert f"{name}: at revision" in done.stdout

    settings = make_settings(tmp_path, database={"cells": {"cell2": cell2}})
    dbs = Databases.from_settings(settings)
    try:
        statuses = {db.name: migrate.status(db, kind) for db, kind in dbs.all()}
        assert set(statuses) == {"api", "cell0", "cell1", "cell2"}
        assert all(st.up_to_date for st in statuses.values()), statuses
        for db, kind in dbs.all():
            assert _schema_diff(db, kind) == [], db.name
    finally:
        dbs.dispose()
    assert (tmp_path / "elsewhere" / "cell2.sqlite").exists()

    after = federator("db", "status", "--config", config)
    assert after.returncode == 0, after.stdout
    again = federator("db", "upgrade", "--config", config)
    assert again.returncode == 0, again.stderr


def _settings(tmp_path: Path, database_url: UrlFactory) -> Settings:
    database = {
        "api_url": database_url("api"),
        "cell0_url": database_url("cell0"),
        "cells": {"cell1": database_url("cell1")},
    }
    return make_settings(tmp_path, database=database)


def test_empty_databases_are_initialised_at_start(tmp_path: Path, database_url: UrlFactory) -> None:
    settings = _settings(tmp_path, database_url)
    broker = Broker.open(settings)
    try:
        for db, kind in broker.dbs.all():
            assert migrate.status(db, kind).up_to_date, db.name
            assert _schema_diff(db, kind) == [], db.name
        assert set(broker.dbs.cells) == {"cell0", "cell1"}
    finally:
        broker.stop()


@pytest.mark.parametrize("which", ["api", "cell1"])
def test_start_refuses_a_database_at_another_revision(
    tmp_path: Path, database_url: UrlFactory, which: str
) -> None:
    settings = _settings(tmp_path, database_url)
    dbs = Databases.from_settings(settings)
    try:
        dbs.upgrade()
        target = dbs.api if which == "api" else dbs.cells[which]
        with target.engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = 'stale_0000'"))
    finally:
        dbs.dispose()

    with pytest.raises(DatabaseOutdated) as caught:
        Broker.open(settings)
    message = caught.value.message
    assert f"database {which} is at revision stale_0000" in message
    assert "run `federator db upgrade`" in message
    assert caught.value.code == "federator.storage.outdated"

    # Nothing was migrated behind the operator's back.
    dbs = Databases.from_settings(settings)
    try:
        target = dbs.api if which == "api" else dbs.cells[which]
        assert migrate.current(target) == "stale_0000"
    finally:
        dbs.dispose()


def test_start_without_initialising_refuses_an_empty_database(tmp_path: Path) -> None:
    with pytest.raises(DatabaseOutdated) as caught:
        Broker.open(make_settings(tmp_path), initialise_empty=False)
    assert "is at revision empty" in caught.value.message
    assert "federator db upgrade" in caught.value.message
