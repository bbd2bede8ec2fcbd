"""The ``federator`` command: daemon, database and policy tools, and an API client."""

from __future__ import annotations

import sys

import typer

from federator.cli import admin, client_commands, policy_cmd

app = typer.Typer(
    name="federator",
    help="Hybrid-cloud federation broker: one compute API, local hypervisors first, "
    "virtual availability zones when local load crosses the policy's thresholds.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
admin.register(app)
app.add_typer(policy_cmd.app, name="policy")
client_commands.register(app)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover - interactive only
        sys.exit(130)
