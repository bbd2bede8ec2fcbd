"""``federator server``: create, list, show, delete, start, stop, reboot, pause, unpause,
suspend and resume through the API."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.markup import escape

from federator.cli import server_groups
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
    new_table,
    print_fields,
    print_table,
    say,
)

app = typer.Typer(
    help="Servers: create, list, show, delete, start, stop, reboot, pause, suspend.",
    no_args_is_help=True,
)

POLL_INTERVAL = 0.25
DEFAULT_WAIT = 300.0
WaitOpt = Annotated[
    float, typer.Option("--wait-timeout", min=1, help="Seconds --wait gives up after.")
]
AZ = "OS-EXT-AZ:availability_zone"
HOST = "OS-EXT-SRV-ATTR:host"
TASK = "OS-EXT-STS:task_state"
# Shown in their own sections by ``server show``.
_SECTIONS = ("links", "fault", "federator:fault", "federator:placement")


# --- reading a server body -------------------------------------------------------------


def fault_of(server: dict[str, Any]) -> str:
    """``code: message`` of the server's fault, or "" when it has none."""
    fault = server.get("federator:fault") or server.get("fault") or {}
    message = str(fault.get("message") or "")
    code = fault.get("code")
    return f"{code}: {message}" if isinstance(code, str) and code else message


def _flavor_name(server: dict[str, Any]) -> str:
    named = server.get("federator:flavor") or {}
    return str(named.get("name") or server.get("flavor", {}).get("id") or "")


def _server_table(servers: list[dict[str, Any]], *, long: bool) -> None:
    columns = ["ID", "Name", "Status", "AZ", "Host"]
    if long:
        columns += ["Flavor", "Cell", "Task State", "Fault"]
    table = new_table(*columns)
    for s in servers:
        row = [s["id"], s["name"], s.get("status"), s.get(AZ), s.get(HOST)]
        if long:
            reason = (s.get("federator:fault") or {}).get("reason") or fault_of(s)
            row += [_flavor_name(s), s.get("federator:cell"), s.get(TASK), reason]
        add_row(table, *row)
    print_table(table)


def _wait(
    what: str,
    describe: Callable[[], str],
    done: Callable[[], bool],
    wait_timeout: float,
) -> None:
    """Poll ``done`` until it is true; exit 1 naming ``what`` after ``wait_timeout`` s."""
    deadline = time.monotonic() + wait_timeout
    while not done():
        if time.monotonic() > deadline:
            fail(escape(f"timed out after {wait_timeout:g}s waiting for {what}; {describe()}"))
        time.sleep(POLL_INTERVAL)


def _wait_until_built(client: Client, ids: list[str], wait_timeout: float) -> list[dict[str, Any]]:
    final: dict[str, dict[str, Any]] = {}

    def done() -> bool:
        for sid in ids:
            if sid not in final:
                server = client.server(sid)
                if server.get("status") != "BUILD":
                    final[sid] = server
        return len(final) == len(ids)

    _wait(
        "the build",
        lambda: f"{len(ids) - len(final)} of {len(ids)} server(s) still BUILD",
        done,
        wait_timeout,
    )
    return [final[sid] for sid in ids]


def _created_ids(
    client: Client, name: str, count: int, before: set[str], wait_timeout: float
) -> list[str]:
    """The ids of the ``count`` servers one request named ``name-1`` .. ``name-count``: the POST
    answers with the first only, so list the others (ignoring ones that existed before)."""
    pattern = f"^{re.escape(name)}-[0-9]+$"
    found: list[str] = []

    def done() -> bool:
        nonlocal found
        listed = (s["id"] for s in client.servers({"name": pattern}))
        found = list(dict.fromkeys(sid for sid in listed if sid not in before))
        return len(found) >= count

    _wait(
        f"{count} servers named {name}-N to appear",
        lambda: f"found {len(found)}",
        done,
        wait_timeout,
    )
    return found


def _parse_properties(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail(escape(f"--property expects KEY=VALUE, got {pair!r}"), 2)
        out[key] = value
    return out


# --- commands --------------------------------------------------------------------------


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Server name (with --count N: NAME-1..NAME-N).")],
    flavor: Annotated[str, typer.Option("--flavor", help="Flavor id or name.")],
    image: Annotated[str, typer.Option("--image", help="Image id or name.")],
    availability_zone: Annotated[
        str | None, typer.Option("--availability-zone", help="Ask for this zone.")
    ] = None,
    prop: Annotated[
        list[str] | None,
        typer.Option("--property", help="Metadata KEY=VALUE; repeat for more."),
    ] = None,
    count: Annotated[int, typer.Option("--count", min=1, help="How many servers.")] = 1,
    group: Annotated[
        str | None,
        typer.Option(
            "--group",
            metavar="ID",
            help="Join this server group (id or exact name): its rule places them.",
        ),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait until every server has left BUILD.")
    ] = False,
    wait_timeout: WaitOpt = DEFAULT_WAIT,
    url: UrlOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    json_out: JsonOpt = False,
) -> None:
    """Create servers. With --wait, print where they ended up; exit 1 if any is in ERROR."""
    server: dict[str, Any] = {"name": name, "flavorRef": flavor, "imageRef": image}
    if availability_zone:
        server["availability_zone"] = availability_zone
    if prop:
        server["metadata"] = _parse_properties(prop)
    if count > 1:
        server["min_count"] = server["max_count"] = count
    with session(url, timeout) as client:
        pattern = f"^{re.escape(name)}-[0-9]+$"
        before = (
            {s["id"] for s in client.servers({"name": pattern})} if wait and count > 1 else set()
        )
        request: dict[str, Any] = {"server": server}
        if group:
            request["os:scheduler_hints"] = {"group": server_groups.group_id(client, group)}
        answer = client.post(f"{COMPUTE}/servers", request)
        first = answer["server"]["id"]
        if not wait:
            if json_out:
                emit_json(answer)
                return
            print_fields(
                [("id", first), ("name", answer["server"].get("name")), ("requested", count)]
            )
            return
        ids = [first] if count == 1 else _created_ids(client, name, count, before, wait_timeout)
        final = _wait_until_built(client, ids, wait_timeout)
    if json_out:
        emit_json(final)
    else:
        _server_table(final, long=False)
    failed = [s for s in final if s.get("status") == "ERROR"]
    if failed:
        fail(
            "\n".join(
                escape(f"server {s['name']} ({s['id']}) is in ERROR: {fault_of(s) or 'no fault'}")
                for s in failed
            )
        )


@app.command("list")
def list_servers(
    status: Annotated[str | None, typer.Option("--status", help="Only this status.")] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="Name substring, or a regular expression.")
    ] = None,
    availability_zone: Annotated[
        str | None, typer.Option("--availability-zone", help="Only this zone.")
    ] = None,
    host: Annotated[str | None, typer.Option("--host", help="Only this host.")] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=0, help="One page of at most N; default all.")
    ] = None,
    marker: Annotated[
        str | None, typer.Option("--marker", help="Start after this server id.")
    ] = None,
    all_tenants: Annotated[
        bool, typer.Option("--all-tenants", help="Every project's servers.")
    ] = False,
    long: Annotated[
        bool, typer.Option("--long", help="Add flavor, cell, task state and fault.")
    ] = False,
    url: UrlOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    json_out: JsonOpt = False,
) -> None:
    """List servers, following pages unless --limit is given."""
    params: dict[str, str | int] = {}
    for key, value in (
        ("status", status),
        ("name", name),
        ("host", host),
        ("availability_zone", availability_zone),
        ("marker", marker),
    ):
        if value:
            params[key] = value
    if all_tenants:
        params["all_tenants"] = "1"
    with session(url, timeout) as client:
        servers = client.servers(params, limit=limit)
    if json_out:
        emit_json(servers)
    else:
        _server_table(servers, long=long)


@app.command("show")
def show(
    server_ref: Annotated[str, typer.Argument(metavar="ID", help="Server id or exact name.")],
    url: UrlOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    json_out: JsonOpt = False,
) -> None:
    """Every field of a server, its fault, and what decided its placement."""
    with session(url, timeout) as client:
        server = client.find_server(server_ref)
    if json_out:
        emit_json({"server": server})
        return
    print_fields(((k, v) for k, v in server.items() if k not in _SECTIONS), title="Server")
    fault = server.get("federator:fault") or server.get("fault")
    if fault:
        details = fault.get("details")
        print_fields(
            [
                ("code", fault.get("code")),
                ("reason", fault.get("reason")),
                ("message", fault.get("message")),
                ("details", "\n".join(details) if isinstance(details, list) else details),
            ],
            title="Fault",
        )
    placement = server.get("federator:placement")
    if not placement:
        say("Placement: not decided yet")
        return
    print_fields(
        [
            ("policy version", placement.get("policy_version")),
            ("policy sha256", placement.get("policy_sha256")),
            ("zone", placement.get("zone")),
            ("host", placement.get("host") or server.get(HOST)),
            ("reason", placement.get("reason")),
            ("matched rules", placement.get("matched_rules")),
            ("server group", _group_note(placement.get("group"))),
            ("decided at", placement.get("decided_at")),
        ],
        title="Placement",
    )


def _group_note(group: dict[str, Any] | None) -> str | None:
    """``spread (id): anti-affinity, hard rule kept``: the group rule a placement kept."""
    if not group:
        return None
    head = f"{group.get('name')} ({group.get('id')}): {group.get('policy')}"
    return f"{head}, {group['detail']}" if group.get("detail") else head


@app.command("delete")
def delete(
    server_refs: Annotated[
        list[str], typer.Argument(metavar="ID...", help="Server ids or exact names.")
    ],
    wait: Annotated[bool, typer.Option("--wait", help="Wait until each one is gone.")] = False,
    wait_timeout: WaitOpt = DEFAULT_WAIT,
    url: UrlOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    json_out: JsonOpt = False,
) -> None:
    """Delete servers. Carries on past failures and exits 1 if any delete failed."""
    deleted: list[str] = []
    problems: list[str] = []
    with session(url, timeout) as client:
        for ref in server_refs:
            try:
                sid = client.find_server(ref)["id"]
                client.delete(f"{COMPUTE}/servers/{sid}")
            except ApiError as exc:
                problems.append(exc.message)
                continue
            deleted.append(sid)
        if wait:
            gone: set[str] = set()

            def done() -> bool:
                for sid in deleted:
                    if sid not in gone:
                        try:
                            client.server(sid)
                        except ApiError as exc:
                            if exc.status != 404:
                                raise
                            gone.add(sid)
                return len(gone) == len(deleted)

            _wait(
                "the deletes",
                lambda: f"{len(deleted) - len(gone)} server(s) remain",
                done,
                wait_timeout,
            )
    if json_out:
        emit_json({"deleted": deleted})
    else:
        for sid in deleted:
            say(f"server {sid} {'deleted' if wait else 'delete accepted'}")
    if problems:
        fail(escape("\n".join(problems)))


def _act(
    server_ref: str,
    action: dict[str, Any],
    verb: str,
    wait: bool,
    wait_timeout: float,
    url: str | None,
    timeout: float,
    json_out: bool,
) -> None:
    with session(url, timeout) as client:
        sid = client.find_server(server_ref)["id"]
        client.server_action(sid, action)
        server = client.server(sid)
        if wait:

            def done() -> bool:
                nonlocal server
                server = client.server(sid)
                return not server.get(TASK)

            _wait(
                f"{verb} of server {sid}",
                lambda: f"it is {server.get('status')} with task {server.get(TASK)}",
                done,
                wait_timeout,
            )
    if json_out:
        emit_json({"server": server})
    elif wait:
        say(f"server {server['name']} ({sid}): {server.get('status')}")
    else:
        say(f"{verb} accepted for server {server['name']} ({sid})")
    if wait and server.get("status") == "ERROR":
        fail(escape(f"server {sid} is in ERROR: {fault_of(server) or 'no fault'}"))


IdArg = Annotated[str, typer.Argument(metavar="ID", help="Server id or exact name.")]
ActWait = Annotated[
    bool, typer.Option("--wait", help="Wait until the task finishes; print the final status.")
]


def _simple_action(verb: str, body_key: str, doc: str) -> None:
    """Register ``federator server <verb>``: the action ``{body_key: null}`` on one server."""

    def command(
        server_ref: IdArg,
        wait: ActWait = False,
        wait_timeout: WaitOpt = DEFAULT_WAIT,
        url: UrlOpt = None,
        timeout: TimeoutOpt = DEFAULT_TIMEOUT,
        json_out: JsonOpt = False,
    ) -> None:
        _act(server_ref, {body_key: None}, verb, wait, wait_timeout, url, timeout, json_out)

    command.__doc__ = doc
    app.command(verb)(command)


for _verb, _key, _doc in (
    ("start", "os-start", "Start a stopped server."),
    ("stop", "os-stop", "Stop a running server."),
    ("pause", "pause", "Pause a running server (frozen in memory; zones that support it)."),
    ("unpause", "unpause", "Let a paused server run again."),
    ("suspend", "suspend", "Suspend a running server (saved to disk; zones that support it)."),
    ("resume", "resume", "Resume a suspended server."),
):
    _simple_action(_verb, _key, _doc)


@app.command("reboot")
def reboot(
    server_ref: IdArg,
    hard: Annotated[
        bool, typer.Option("--hard", help="Power-cycle instead of a soft reboot.")
    ] = False,
    wait: ActWait = False,
    wait_timeout: WaitOpt = DEFAULT_WAIT,
    url: UrlOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    json_out: JsonOpt = False,
) -> None:
    """Reboot a server (soft unless --hard)."""
    action = {"reboot": {"type": "HARD" if hard else "SOFT"}}
    _act(server_ref, action, "reboot", wait, wait_timeout, url, timeout, json_out)
