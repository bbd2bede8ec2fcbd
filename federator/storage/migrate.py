"""Schema migrations (Alembic), applied by ``federator db upgrade`` and checked at start-up.

Two migration histories: one for the API database, one shared by every cell database
(cell0 included, as in Nova: cell0 is an ordinary cell database).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from federator.exception import DatabaseOutdated
from federator.storage.db import Database

Kind = Literal["api", "cell"]
_HERE = Path(__file__).resolve().parent / "migrations"


def _config(kind: Kind) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_HERE / kind))
    return cfg


def head(kind: Kind) -> str:
    rev = ScriptDirectory.from_config(_config(kind)).get_current_head()
    if rev is None:  # pragma: no cover - the package always ships revisions
        raise RuntimeError(f"no {kind} migrations shipped")
    return rev


def current(db: Database) -> str | None:
    with db.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


@dataclass(frozen=True, slots=True)
class SchemaStatus:
    name: str
    current: str | None
    head: str

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head

    @property
    def empty(self) -> bool:
        return self.current is None


def status(db: Database, kind: Kind) -> SchemaStatus:
    return SchemaStatus(name=db.name, current=current(db), head=head(kind))


def upgrade(db: Database, kind: Kind, revision: str = "head") -> SchemaStatus:
    """Apply migrations up to ``revision``; a no-op when already there."""
    cfg = _config(kind)
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    return status(db, kind)


def ensure_current(db: Database, kind: Kind, *, initialise_empty: bool) -> SchemaStatus:
    """Start-up check.

    An empty database is initialised when ``initialise_empty`` (the embedded default and
    fresh deployments); a database at an older revision is never migrated implicitly.

    :raises DatabaseOutdated: the schema is behind (or ahead of) this release.
    """
    st = status(db, kind)
    if st.up_to_date:
        return st
    if st.empty and initialise_empty:
        return upgrade(db, kind)
    raise DatabaseOutdated(name=db.name, current=st.current or "empty", head=st.head)
