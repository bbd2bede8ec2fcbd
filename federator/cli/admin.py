"""Commands that act on this machine: serve, db, drivers."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from federator.cli.common import ConfigOpt, fail, out_console, settings_or_exit
from federator.exception import FederatorError, PolicyInvalid

db_app = typer.Typer(help="Database schema: upgrade and status.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.add_typer(db_app, name="db")
    app.command("drivers")(drivers)


def serve(
    config: ConfigOpt = None,
    host: Annotated[str | None, typer.Option(help="Bind address (default 127.0.0.1).")] = None,
    port: Annotated[
        int | None, typer.Option(help="Port (default 8774; 0 = any free port).")
    ] = None,
    ready_file: Annotated[
        str | None, typer.Option(help="Write the bound port to this file once serving.")
    ] = None,
    api_workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=64,
            help="API worker processes on the one socket, each a node with its own build "
            "workers (default: api.workers, 1).",
        ),
    ] = None,
) -> None:
    """Run the broker: API, build workers and monitor, in one process or api.workers."""
    from federator.daemon import configure_logging
    from federator.daemon import serve as run

    settings = settings_or_exit(config)
    api = settings.api.model_copy(
        update={
            k: v
            for k, v in (("host", host), ("port", port), ("workers", api_workers))
            if v is not None
        }
    )
    settings = settings.model_copy(update={"api": api})
    configure_logging(settings.log_level)
    try:
        code = run(settings, ready_file=ready_file)
    except PolicyInvalid as exc:
        fail(escape(f"refusing to start: the policy is invalid\n{exc.render()}"), 2)
    except FederatorError as exc:
        fail(escape(f"refusing to start: {exc.message}"), 2)
    raise typer.Exit(code)


@db_app.command("upgrade")
def db_upgrade(config: ConfigOpt = None) -> None:
    """Apply schema migrations to the API database, cell0 and every cell."""
    from federator.broker import Databases

    settings = settings_or_exit(config)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    dbs = Databases.from_settings(settings)
    try:
        for st in dbs.upgrade():
            out_console.print(f"{st.name}: at revision {st.current}")
    finally:
        dbs.dispose()


@db_app.command("status")
def db_status(config: ConfigOpt = None) -> None:
    """Show each database's schema revision; exits 1 when any is not current."""
    from federator.broker import Databases
    from federator.storage import migrate

    settings = settings_or_exit(config)
    dbs = Databases.from_settings(settings)
    behind = False
    try:
        table = Table("database", "url", "revision", "expected", "state")
        for db, kind in dbs.all():
            st = migrate.status(db, kind)
            state = "current" if st.up_to_date else ("empty" if st.empty else "outdated")
            behind |= not st.up_to_date
            table.add_row(db.name, db.describe(), st.current or "-", st.head, state)
        out_console.print(table)
    finally:
        dbs.dispose()
    if behind:
        raise typer.Exit(1)


def drivers(json_out: Annotated[bool, typer.Option("--json", help="JSON output.")] = False) -> None:
    """List installed driver plugins (entry points in federator.drivers)."""
    import json
    from dataclasses import asdict

    from federator.plugins import installed

    found = installed()
    if json_out:
        out_console.print_json(json.dumps([asdict(p) for p in found]))
        return
    table = Table("name", "target", "package", "version", "status")
    for p in found:
        table.add_row(
            p.name, p.target, p.distribution, p.version, f"[red]{p.error}[/]" if p.error else "ok"
        )
    out_console.print(table)
