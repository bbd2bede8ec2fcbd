"""``federator flavor``: the sizes the broker offers."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from federator.cli.client import COMPUTE, DEFAULT_TIMEOUT, ApiError, TimeoutOpt, UrlOpt, session
from federator.cli.output import JsonOpt, add_row, emit_json, new_table, print_fields, print_table

app = typer.Typer(help="Flavors: list and show.", no_args_is_help=True)


@app.command("list")
def flavor_list(
    url: UrlOpt = None, timeout: TimeoutOpt = DEFAULT_TIMEOUT, json_out: JsonOpt = False
) -> None:
    """Every flavor with its size."""
    with session(url, timeout) as client:
        flavors: list[dict[str, Any]] = client.get(f"{COMPUTE}/flavors/detail")["flavors"]
    if json_out:
        emit_json(flavors)
        return
    table = new_table("ID", "Name", "vCPUs", "RAM (MB)", "Disk (GB)")
    for f in flavors:
        add_row(table, f["id"], f["name"], f.get("vcpus"), f.get("ram"), f.get("disk"))
    print_table(table)


@app.command("show")
def flavor_show(
    flavor_ref: Annotated[str, typer.Argument(metavar="ID", help="Flavor id or name.")],
    url: UrlOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    json_out: JsonOpt = False,
) -> None:
    """One flavor, by id or, failing that, by name."""
    with session(url, timeout) as client:
        try:
            body = client.get(f"{COMPUTE}/flavors/{flavor_ref}")
        except ApiError as exc:
            # The API looks flavors up by id only; a name is found by listing.
            if exc.status != 404:
                raise
            named = [
                f
                for f in client.get(f"{COMPUTE}/flavors/detail")["flavors"]
                if f["name"] == flavor_ref
            ]
            if not named:
                raise
            body = {"flavor": named[0]}
    if json_out:
        emit_json(body)
        return
    f = body["flavor"]
    print_fields((k, v) for k, v in f.items() if k != "links")
