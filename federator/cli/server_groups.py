"""``federator server-group``: server groups (os-server-groups): create, list, show, delete.

Every call is made at compute microversion 2.64, where a group has one ``policy``
(``affinity``, ``anti-affinity``, ``soft-affinity`` or ``soft-anti-affinity``) and
``rules``: ``max_server_per_host`` (anti-affinity only) and ``scope``, the broker's
extension (``host``, the default, or ``zone``: one member per availability zone for
anti-affinity, all in one availability zone for affinity). A group is named by id or,
failing that, by its exact name among the project's groups. Servers join a group when
they are created: ``federator server create ... --group ID``.
"""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Any

import typer
from rich.markup import escape

from federator import errors
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

app = typer.Typer(
    help="Server groups: affinity and anti-affinity rules for the servers that join them.",
    no_args_is_help=True,
)

GROUPS = f"{COMPUTE}/os-server-groups"
MICROVERSION = "2.64"
# The form with "policy" and "rules"; below 2.64 a group has a list of "policies".
HEADERS = {"OpenStack-API-Version": f"compute {MICROVERSION}"}
_INTEGER = re.compile(r"[+-]?[0-9]+")
GroupArg = Annotated[str, typer.Argument(metavar="ID", help="Server group id or exact name.")]


# --- finding groups --------------------------------------------------------------------


def _get(client: Client, group_id: str) -> dict[str, Any]:
    found: dict[str, Any] = client.get(f"{GROUPS}/{group_id}", headers=HEADERS)["server_group"]
    return found


def _listed(client: Client, *, all_projects: bool = False) -> list[dict[str, Any]]:
    params: dict[str, str | int] = {"all_projects": "True"} if all_projects else {}
    groups: list[dict[str, Any]] = client.get(GROUPS, params, headers=HEADERS)["server_groups"]
    return groups


def find_group(client: Client, ref: str) -> dict[str, Any]:
    """A group as ``show`` answers it (with ``federator:members``), by id, else by exact
    name among the project's groups.

    :raises ApiError: no group has that id or name (the broker's 404), or several of the
        project's groups share the name (a 409 with ``federator.resource.conflict``).
    """
    try:
        return _get(client, ref)
    except ApiError as exc:
        if exc.status != 404:
            raise
        named = [g for g in _listed(client) if g["name"] == ref]
        if len(named) == 1:
            return _get(client, named[0]["id"])
        if len(named) > 1:
            raise ApiError(
                409, errors.CONFLICT, f"{len(named)} server groups are named {ref!r}; give an id"
            ) from None
        raise


def group_id(client: Client, ref: str) -> str:
    """The id to put in a boot's ``group`` hint: ``ref`` itself when it is a UUID (the
    broker checks that the group exists), else the id of the group of that name.

    :raises ApiError: ``ref`` is not a UUID and names no group of the project (or several).
    """
    try:
        return str(uuid.UUID(ref))
    except ValueError:
        return str(find_group(client, ref)["id"])


# --- rendering -------------------------------------------------------------------------


def _rules(group: dict[str, Any]) -> str:
    return key_values(group.get("rules") or {})


def _print(group: dict[str, Any]) -> None:
    print_fields(
        [
            ("id", group["id"]),
            ("name", group["name"]),
            ("policy", group.get("policy")),
            ("rules", _rules(group)),
            ("members", len(group.get("members") or [])),
            ("project", group.get("project_id")),
            ("user", group.get("user_id")),
        ],
        title=f"Server group {group['name']}",
    )


def _member_servers(client: Client, members: list[str]) -> dict[str, dict[str, Any]]:
    """Each member's server, for its name and status; a member deleted meanwhile is
    left out."""
    found: dict[str, dict[str, Any]] = {}
    for sid in members:
        try:
            found[sid] = client.server(sid)
        except ApiError as exc:
            if exc.status != 404:
                raise
    return found


def _print_members(group: dict[str, Any], servers: dict[str, dict[str, Any]]) -> None:
    """One row per member: where it is (members not placed, such as those in cell0, are
    nowhere) and who keeps the group's rule there."""
    places = {p["id"]: p for p in group.get("federator:members") or []}
    table = new_table(
        "Server ID", "Name", "Status", "Zone", "AZ", "Host", "Rule Kept By", title="Members"
    )
    for sid in group.get("members") or []:
        server = servers.get(sid, {})
        place = places.get(sid, {})
        add_row(
            table,
            sid,
            server.get("name"),
            server.get("status"),
            place.get("zone"),
            place.get("availability_zone"),
            place.get("host"),
            place.get("rule_kept_by"),
        )
    print_table(table)
    for remote in group.get("federator:remote_groups") or []:
        say(f"remote group in zone {remote['zone']}: {remote['id']}")


def _parse_rules(pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs as the group's rules; whole numbers are sent as numbers."""
    rules: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail(escape(f"--rule expects KEY=VALUE, got {pair!r}"), 2)
        rules[key] = int(value) if _INTEGER.fullmatch(value) else value
    return rules


# --- commands --------------------------------------------------------------------------


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Server group name.")],
    policy: Annotated[
        str,
        typer.Option(
            "--policy",
            help="affinity, anti-affinity, soft-affinity or soft-anti-affinity.",
        ),
    ],
    rule: Annotated[
        list[str] | None,
        typer.Option(
            "--rule",
            metavar="KEY=VALUE",
            help="max_server_per_host=N (anti-affinity), scope=host|zone; repeat for more.",
        ),
    ] = None,
    url: UrlOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    json_out: JsonOpt = False,
) -> None:
    """Create a server group. The broker checks the policy and rules."""
    request: dict[str, Any] = {"name": name, "policy": policy}
    if rule:
        request["rules"] = _parse_rules(rule)
    with session(url, timeout) as client:
        body = client.post(GROUPS, {"server_group": request}, headers=HEADERS)
    if json_out:
        emit_json(body)
        return
    _print(body["server_group"])


@app.command("list")
def list_groups(
    all_projects: Annotated[
        bool, typer.Option("--all-projects", help="Every project's groups (admins).")
    ] = False,
    url: UrlOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    json_out: JsonOpt = False,
) -> None:
    """List the project's server groups (with --all-projects, every project's)."""
    with session(url, timeout) as client:
        groups = _listed(client, all_projects=all_projects)
    if json_out:
        emit_json(groups)
        return
    table = new_table("ID", "Name", "Policy", "Rules", "Members", "Project")
    for g in groups:
        add_row(
            table,
            g["id"],
            g["name"],
            g.get("policy"),
            _rules(g),
            len(g.get("members") or []),
            g.get("project_id"),
        )
    print_table(table)


@app.command("show")
def show(
    group: GroupArg,
    url: UrlOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    json_out: JsonOpt = False,
) -> None:
    """A server group and its members: each one's zone, availability zone and host, and
    who keeps the rule there."""
    with session(url, timeout) as client:
        found = find_group(client, group)
        servers = {} if json_out else _member_servers(client, list(found.get("members") or []))
    if json_out:
        emit_json({"server_group": found})
        return
    _print(found)
    _print_members(found, servers)


@app.command("delete")
def delete(
    groups: Annotated[
        list[str], typer.Argument(metavar="ID...", help="Server group ids or exact names.")
    ],
    url: UrlOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    json_out: JsonOpt = False,
) -> None:
    """Delete server groups; their members keep running, in no group. Carries on past
    failures and exits 1 if any delete failed."""
    deleted: list[dict[str, Any]] = []
    problems: list[str] = []
    with session(url, timeout) as client:
        for ref in groups:
            try:
                found = find_group(client, ref)
                client.delete(f"{GROUPS}/{found['id']}", headers=HEADERS)
            except ApiError as exc:
                problems.append(exc.message)
                continue
            deleted.append(found)
    if json_out:
        emit_json({"deleted": [g["id"] for g in deleted]})
    else:
        for g in deleted:
            say(f"server group {g['name']} (id {g['id']}) deleted")
    if problems:
        fail(escape("\n".join(problems)))
