"""``federator identity``: hash a password for the configuration, get a token."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from federator.cli.client import DEFAULT_TIMEOUT, TimeoutOpt, UrlOpt, session
from federator.cli.common import fail, out_console

app = typer.Typer(help="Identity: password hashes and tokens.", no_args_is_help=True)

MIN_PASSWORD = 8


@app.command("hash-password")
def hash_password(
    confirm: Annotated[
        bool, typer.Option("--confirm/--no-confirm", help="At a terminal, ask twice.")
    ] = True,
) -> None:
    """Print the argon2 hash of a password, for ``password_hash`` in [[identity.users]].

    The password is read without echo at a terminal, else as the first line of stdin;
    it is never printed or stored.
    """
    from federator.identity.passwords import hash_password as make_hash

    if sys.stdin.isatty():
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=confirm, err=True)
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if len(password) < MIN_PASSWORD:
        fail(f"the password must have at least {MIN_PASSWORD} characters")
    out_console.print(make_hash(password), markup=False, highlight=False)


@app.command("token")
def issue_token(url: UrlOpt = None, timeout: TimeoutOpt = DEFAULT_TIMEOUT) -> None:
    """Authenticate (OS_* variables or --os-* options) and print a token, for tools such
    as curl: ``curl -H "X-Auth-Token: $(federator identity token)" ...``."""
    with session(url, timeout) as client:
        token = client.token()
    out_console.print(token, markup=False, highlight=False, soft_wrap=True)
