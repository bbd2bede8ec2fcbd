"""``federator policy``: validate, schema (offline) and show, reload, explain (through the API)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from federator.cli.client_commands import register_policy_client
from federator.cli.common import ConfigOpt, err_console, out_console, settings_or_exit
from federator.exception import PolicyInvalid

app = typer.Typer(
    help="Policy tools: validate, schema, show, reload, explain.", no_args_is_help=True
)
register_policy_client(app)


@app.command("validate")
def validate(
    files: Annotated[list[Path], typer.Argument(help="policy.json files to check")],
    config: ConfigOpt = None,
    no_references: Annotated[
        bool, typer.Option("--no-references", help="Skip checks against the configuration.")
    ] = False,
) -> None:
    """Validate policy files: exit 0 when all are valid, 1 listing every problem otherwise."""
    from federator.policy.loader import PolicyContext, load_policy

    context = None if no_references else PolicyContext.from_settings(settings_or_exit(config))
    bad = 0
    for path in files:
        try:
            loaded = load_policy(path, context)
        except PolicyInvalid as exc:
            bad += 1
            err_console.print(exc.render(), markup=False)
            continue
        out_console.print(f"{path}: valid (version {loaded.policy.version})", markup=False)
    if bad:
        err_console.print(f"{bad} of {len(files)} file(s) invalid", markup=False)
        raise typer.Exit(1)


@app.command("schema")
def schema() -> None:
    """Print the policy JSON Schema (the same as policies/policy.schema.json)."""
    from federator.policy.schema import render_schema

    typer.echo(render_schema(), nl=False)
