"""The ``federator`` command: daemon, database and policy tools, and an API client."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from federator.cli import (
    admin,
    aggregates,
    client_commands,
    hosts,
    identity_cmd,
    policy_cmd,
    vclusters,
)
from federator.cli.client import Credentials, use_credentials

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
app.add_typer(identity_cmd.app, name="identity")
client_commands.register(app)
app.add_typer(hosts.app, name="host")
aggregates.register(app)
app.add_typer(vclusters.app, name="vcluster")


def _os_option(name: str, help_text: str) -> Any:
    env = name.upper().replace("-", "_")
    return typer.Option(f"--{name}", envvar=env, show_envvar=True, help=help_text)


@app.callback()
def credentials(
    os_auth_url: Annotated[
        str | None, _os_option("os-auth-url", "Identity endpoint. Default: <url>/identity.")
    ] = None,
    os_username: Annotated[str | None, _os_option("os-username", "User name.")] = None,
    os_password: Annotated[
        str | None,
        typer.Option("--os-password", envvar="OS_PASSWORD", help="Password (prefer $OS_PASSWORD)."),
    ] = None,
    os_project_name: Annotated[
        str | None, _os_option("os-project-name", "Project to act in.")
    ] = None,
    os_project_id: Annotated[
        str | None, _os_option("os-project-id", "Project to act in, by id.")
    ] = None,
    os_user_domain_name: Annotated[
        str, _os_option("os-user-domain-name", "The user's domain.")
    ] = "Default",
    os_project_domain_name: Annotated[
        str, _os_option("os-project-domain-name", "The project's domain.")
    ] = "Default",
) -> None:
    """Client commands authenticate with the OS_* variables (source the broker's
    admin-openrc) or these options."""
    use_credentials(
        Credentials(
            auth_url=os_auth_url,
            username=os_username,
            password=os_password,
            project_name=os_project_name,
            project_id=os_project_id,
            user_domain_name=os_user_domain_name,
            project_domain_name=os_project_domain_name,
        )
    )


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover - interactive only
        sys.exit(130)
