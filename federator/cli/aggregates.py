"""``federator aggregate-*``: host aggregates (os-aggregates), admin only.

The commands of the host aggregates blueprint: ``aggregate-list``, ``aggregate-create``,
``aggregate-delete``, ``aggregate-details``, ``aggregate-add-host``,
``aggregate-remove-host``, ``aggregate-set-metadata`` and ``aggregate-update``. An
aggregate is named by id or, failing that, by name.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape

from federator.cli.client import (
    COMPUTE,
    DEFAULT_TIMEOUT,
    ApiError,
    Client,
    TimeoutOpt,
    UrlOpt,
    session,
)
from federator.cli.common import fail
from federator.cli.output import (
    JsonOpt,
    add_row,
    emit_json,
    key_values,
    new_table,
    print_fields,
    print_table,
    say,
)

AGGREGATES = f"{COMPUTE}/os-aggregates"
AggregateArg = Annotated[str, typer.Argument(metavar="ID", help="Aggregate id or name.")]
HostArg = Annotated[
    str, typer.Argument(metavar="HOST", help="Host name (<zone>/<host> if ambiguous).")
]


def register(app: typer.Typer) -> None:
    app.command("aggregate-list")(aggregate_list)
    app.command("aggregate-create")(aggregate_create)
    app.command("aggregate-delete")(aggregate_delete)
    app.command("aggregate-details")(aggregate_details)
    app.command("aggregate-add-host")(aggregate_add_host)
    app.command("aggregate-remove-host")(aggregate_remove_host)
    app.command("aggregate-set-metadata")(aggregate_set_metadata)
    app.command("aggregate-update")(aggregate_update)


def _metadata(a: dict[str, Any]) -> str:
    return key_values(
        {k: v for k, v in (a.get("metadata") or {}).items() if k != "availability_zone"}
    )


def _print(a: dict[str, Any]) -> None:
    print_fields(
        [
            ("id", a["id"]),
            ("name", a["name"]),
            ("availability zone", a.get("availability_zone")),
            ("hosts", ", ".join(a.get("hosts") or []) or None),
            ("metadata", _metadata(a)),
            ("uuid", a.get("uuid")),
            ("created", a.get("created_at")),
            ("updated", a.get("updated_at")),
        ],
        title=f"Aggregate {a['name']}",
    )


def _find(client: Client, ref: str) -> dict[str, Any]:
    """An aggregate by id, else by exact name (the API knows ids only)."""
    try:
        found: dict[str, Any] = client.get(f"{AGGREGATES}/{ref}")["aggregate"]
        return found
    except ApiError as exc:
        if exc.status != 404:
            raise
        named: list[dict[str, Any]] = [
            a for a in client.get(AGGREGATES)["aggregates"] if a["name"] == ref
        ]
        if len(named) != 1:
            raise
        return named[0]


def _act(ref: str, action: dict[str, Any], url: str | None, timeout: float, json_out: bool) -> None:
    with session(url, timeout) as client:
        agg = _find(client, ref)
        body = client.post(f"{AGGREGATES}/{agg['id']}/action", action)
    if json_out:
        emit_json(body)
        return
    _print(body["aggregate"])


def aggregate_list(
    url: UrlOpt = None, timeout: TimeoutOpt = DEFAULT_TIMEOUT, json_out: JsonOpt = False
) -> None:
    """Print a list of all aggregates."""
    with session(url, timeout) as client:
        aggregates: list[dict[str, Any]] = client.get(AGGREGATES)["aggregates"]
    if json_out:
        emit_json(aggregates)
        return
    table = new_table("ID", "Name", "Availability Zone", "Hosts", "Metadata")
    for a in aggregates:
        add_row(
            table,
            a["id"],
            a["name"],
            a.get("availability_zone"),
            ", ".join(a.get("hosts") or []) or None,
            _metadata(a),
        )
    print_table(table)


def aggregate_create(
    name: Annotated[str, typer.Argument(help="Aggregate name.")],
    availability_zone: Annotated[
        str | None,
        typer.Argument(help="The availability zone its hosts go to (none when left out)."),
    ] = None,
    url: UrlOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    json_out: JsonOpt = False,
) -> None:
    """Create a new aggregate with the specified details."""
    request: dict[str, Any] = {"name": name}
    if availability_zone is not None:
        request["availability_zone"] = availability_zone
    with session(url, timeout) as client:
        body = client.post(AGGREGATES, {"aggregate": request})
    if json_out:
        emit_json(body)
        return
    _print(body["aggregate"])


def aggregate_delete(
    aggregate: AggregateArg, url: UrlOpt = None, timeout: TimeoutOpt = DEFAULT_TIMEOUT
) -> None:
    """Delete the aggregate by its id (it must hold no host)."""
    with session(url, timeout) as client:
        agg = _find(client, aggregate)
        client.delete(f"{AGGREGATES}/{agg['id']}")
    say(f"aggregate {agg['name']} (id {agg['id']}) deleted")


def aggregate_details(
    aggregate: AggregateArg,
    url: UrlOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    json_out: JsonOpt = False,
) -> None:
    """Show details of the specified aggregate."""
    with session(url, timeout) as client:
        agg = _find(client, aggregate)
    if json_out:
        emit_json({"aggregate": agg})
        return
    _print(agg)


def aggregate_add_host(
    aggregate: AggregateArg,
    host: HostArg,
    url: UrlOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    json_out: JsonOpt = False,
) -> None:
    """Add the host to the specified aggregate (a host in no aggregate takes no VMs)."""
    _act(aggregate, {"add_host": {"host": host}}, url, timeout, json_out)


def aggregate_remove_host(
    aggregate: AggregateArg,
    host: HostArg,
    url: UrlOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    json_out: JsonOpt = False,
) -> None:
    """Remove the specified host from the specified aggregate."""
    _act(aggregate, {"remove_host": {"host": host}}, url, timeout, json_out)


def aggregate_set_metadata(
    aggregate: AggregateArg,
    pairs: Annotated[
        list[str],
        typer.Argument(
            metavar="KEY=VALUE...", help="Metadata to set; KEY= (nothing after =) removes KEY."
        ),
    ],
    url: UrlOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    json_out: JsonOpt = False,
) -> None:
    """Update the metadata associated with the aggregate (availability_zone=... moves its
    hosts to that availability zone)."""
    metadata: dict[str, str | None] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail(escape(f"{pair!r} is not KEY=VALUE (KEY= removes KEY)"), 2)
        metadata[key] = value or None
    _act(aggregate, {"set_metadata": {"metadata": metadata}}, url, timeout, json_out)


def aggregate_update(
    aggregate: AggregateArg,
    name: Annotated[str, typer.Argument(help="The aggregate's (new) name.")],
    availability_zone: Annotated[
        str | None, typer.Argument(help="Its new availability zone (unchanged when left out).")
    ] = None,
    url: UrlOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    json_out: JsonOpt = False,
) -> None:
    """Update the aggregate's name and optionally availability zone."""
    request: dict[str, Any] = {"name": name}
    if availability_zone is not None:
        request["availability_zone"] = availability_zone
    with session(url, timeout) as client:
        agg = _find(client, aggregate)
        body = client.request("PUT", f"{AGGREGATES}/{agg['id']}", body={"aggregate": request})
    if json_out:
        emit_json(body)
        return
    _print(body["aggregate"])
