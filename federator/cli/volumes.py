"""``federator volume``: block-storage volumes (Cinder v3): create, list, show, set, delete,
and attach to or detach from servers (Nova's os-volume_attachments).

The volume calls go to the ``block-storage`` endpoint of the token's catalog
(``/volume/v3/<project id>``) at volume microversion 3.65; attach and detach go to the
server's ``os-volume_attachments``. A volume is named by id or, failing that, by its exact
name among the project's volumes; a server as ``federator server`` names it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any

import typer
from rich.markup import escape

from federator import errors
from federator.cli.client import (
    BLOCK_STORAGE,
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
from federator.cli.servers import DEFAULT_WAIT, WaitOpt, _parse_properties, _wait, fault_of

app = typer.Typer(
    help="Volumes: create, list, show, set, delete, attach to and detach from servers.",
    no_args_is_help=True,
)

# The newest version that changes what a volume shows (volume_type_id at 3.63,
# consumes_quota at 3.65); the later ones change nothing the commands read.
MICROVERSION = "3.65"
HEADERS = {"OpenStack-API-Version": f"volume {MICROVERSION}"}
CREATING, AVAILABLE, ERROR = "creating", "available", "error"
ATTACHING, DETACHING, DELETING = "attaching", "detaching", "deleting"
# Shown in their own sections by ``volume show``.
_SECTIONS = ("links", "attachments", "fault")

VolumeArg = Annotated[str, typer.Argument(metavar="VOLUME", help="Volume id or exact name.")]
ServerArg = Annotated[str, typer.Argument(metavar="SERVER", help="Server id or exact name.")]
PropertyOpt = Annotated[
    list[str] | None,
    typer.Option("--property", metavar="KEY=VALUE", help="Metadata KEY=VALUE; repeat for more."),
]


# --- talking to the block-storage endpoint ---------------------------------------------


def _volumes(client: Client) -> str:
    return f"{client.endpoint(BLOCK_STORAGE)}/volumes"


def get_volume(client: Client, volume_id: str) -> dict[str, Any]:
    """:raises ApiError: no such volume (the broker's 404) or another refusal."""
    body = client.get(f"{_volumes(client)}/{volume_id}", headers=HEADERS)
    found: dict[str, Any] = body["volume"]
    return found


def list_volumes(
    client: Client, params: dict[str, str | int], *, limit: int | None = None
) -> list[dict[str, Any]]:
    """Volumes in detail. With ``limit`` one page; without, every page (marker by marker,
    while the broker gives a next link)."""
    path = f"{_volumes(client)}/detail"
    query = dict(params)
    if limit is not None:
        query["limit"] = limit
        page: list[dict[str, Any]] = client.get(path, query, headers=HEADERS)["volumes"]
        return page
    found: list[dict[str, Any]] = []
    while True:
        body = client.get(path, query, headers=HEADERS)
        page = body["volumes"]
        found.extend(page)
        if not page or not body.get("volumes_links") or page[-1]["id"] == query.get("marker"):
            return found
        query["marker"] = page[-1]["id"]


def find_volume(client: Client, ref: str) -> dict[str, Any]:
    """A volume by id, else by exact name among the project's volumes.

    :raises ApiError: no volume has that id or name (the broker's 404), or several share
        the name (reported as a 409 with ``federator.resource.conflict``).
    """
    try:
        return get_volume(client, ref)
    except ApiError as exc:
        if exc.status != 404:
            raise
        named = [v for v in list_volumes(client, {"name": ref}) if v.get("name") == ref]
        if len(named) == 1:
            return named[0]
        if len(named) > 1:
            raise ApiError(
                409, errors.CONFLICT, f"{len(named)} volumes are named {ref!r}; give an id"
            ) from None
        raise


def _attachments_path(server_id: str) -> str:
    return f"{COMPUTE}/servers/{server_id}/os-volume_attachments"


# --- rendering -------------------------------------------------------------------------


def _server_names(client: Client, volumes: Iterable[dict[str, Any]]) -> dict[str, str]:
    """The name of each server a volume is attached to, by server id; a server the caller
    cannot see (deleted meanwhile, say) is named by its id."""
    names: dict[str, str] = {}
    for v in volumes:
        for a in v.get("attachments") or []:
            sid = str(a.get("server_id"))
            if sid in names:
                continue
            try:
                names[sid] = str(client.server(sid).get("name") or sid)
            except ApiError as exc:
                if exc.status != 404:
                    raise
                names[sid] = sid
    return names


def _attached_to(volume: dict[str, Any], names: dict[str, str]) -> str:
    """``web on /dev/vdb``, one line per attachment."""
    lines = []
    for a in volume.get("attachments") or []:
        sid = str(a.get("server_id"))
        where = f" on {a['device']}" if a.get("device") else ""
        lines.append(f"{names.get(sid, sid)}{where}")
    return "\n".join(lines)


def _volume_table(volumes: list[dict[str, Any]], names: dict[str, str], *, long: bool) -> None:
    columns = ["ID", "Name", "Status", "Size", "AZ", "Attached to"]
    if long:
        columns += ["Type", "Bootable", "Properties", "Fault"]
    table = new_table(*columns)
    for v in volumes:
        row = [
            v["id"],
            v.get("name"),
            v.get("status"),
            v.get("size"),
            v.get("availability_zone"),
            _attached_to(v, names),
        ]
        if long:
            reason = (v.get("fault") or {}).get("reason") or fault_of(v)
            row += [
                v.get("volume_type"),
                v.get("bootable"),
                key_values(v.get("metadata") or {}),
                reason,
            ]
        add_row(table, *row)
    print_table(table)


def _print_volume(volume: dict[str, Any], names: dict[str, str]) -> None:
    rows = [
        (k, key_values(v) if k == "metadata" else v)
        for k, v in volume.items()
        if k not in _SECTIONS
    ]
    rows.append(("attached to", _attached_to(volume, names)))
    print_fields(rows, title="Volume")
    attachments = volume.get("attachments") or []
    if attachments:
        table = new_table(
            "Server ID", "Server", "Device", "Host", "Attached At", title="Attachments"
        )
        for a in attachments:
            sid = str(a.get("server_id"))
            add_row(
                table, sid, names.get(sid), a.get("device"), a.get("host_name"),
                a.get("attached_at"),
            )  # fmt: skip
        print_table(table)
    fault = volume.get("fault")
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


def _error_line(volume: dict[str, Any]) -> str:
    """``volume NAME (ID) is error: CODE: MESSAGE``."""
    return (
        f"volume {volume.get('name') or volume['id']} ({volume['id']}) is "
        f"{volume.get('status')}: {fault_of(volume) or 'no fault'}"
    )


# --- waiting ---------------------------------------------------------------------------


def _wait_while(
    client: Client, volume_id: str, busy: str, what: str, wait_timeout: float
) -> dict[str, Any]:
    """Poll the volume until its status is no longer ``busy``; return it then."""
    volume = get_volume(client, volume_id)

    def done() -> bool:
        nonlocal volume
        volume = get_volume(client, volume_id)
        return volume.get("status") != busy

    _wait(what, lambda: f"volume {volume_id} is still {volume.get('status')}", done, wait_timeout)
    return volume


def _attached_servers(volume: dict[str, Any]) -> set[str]:
    return {str(a.get("server_id")) for a in volume.get("attachments") or []}


# --- commands --------------------------------------------------------------------------


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Volume name.")],
    size: Annotated[int, typer.Option("--size", min=1, help="Size in GB.")],
    volume_type: Annotated[
        str | None, typer.Option("--type", help="Volume type id or name (default: the cloud's).")
    ] = None,
    availability_zone: Annotated[
        str | None, typer.Option("--availability-zone", help="Make it in this zone.")
    ] = None,
    description: Annotated[str | None, typer.Option("--description", help="Free text.")] = None,
    prop: PropertyOpt = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait until it is available (or in error).")
    ] = False,
    wait_timeout: WaitOpt = DEFAULT_WAIT,
    url: UrlOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    json_out: JsonOpt = False,
) -> None:
    """Create a blank volume. With --wait, print it once made; exit 1 if it ends in error,
    printing its fault."""
    volume: dict[str, Any] = {"name": name, "size": size}
    for key, value in (
        ("volume_type", volume_type),
        ("availability_zone", availability_zone),
        ("description", description),
    ):
        if value is not None:
            volume[key] = value
    if prop:
        volume["metadata"] = _parse_properties(prop)
    with session(url, timeout) as client:
        made = client.post(_volumes(client), {"volume": volume}, headers=HEADERS)["volume"]
        if wait:
            made = _wait_while(client, made["id"], CREATING, "the volume to be made", wait_timeout)
    if json_out:
        emit_json({"volume": made})
    else:
        _print_volume(made, {})
    if wait and made.get("status") != AVAILABLE:
        fail(escape(_error_line(made)))


@app.command("list")
def list_cmd(
    name: Annotated[str | None, typer.Option("--name", help="Only volumes of this name.")] = None,
    status: Annotated[
        str | None, typer.Option("--status", help="Only this status (available, in-use, ...).")
    ] = None,
    all_projects: Annotated[
        bool, typer.Option("--all-projects", help="Every project's volumes (admins).")
    ] = False,
    long: Annotated[
        bool, typer.Option("--long", help="Add type, bootable, properties and fault.")
    ] = False,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="One page of at most N; default all.")
    ] = None,
    marker: Annotated[
        str | None, typer.Option("--marker", help="Start after this volume id.")
    ] = None,
    url: UrlOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    json_out: JsonOpt = False,
) -> None:
    """List volumes, newest first, following pages unless --limit is given."""
    params: dict[str, str | int] = {}
    for key, value in (("name", name), ("status", status), ("marker", marker)):
        if value:
            params[key] = value
    if all_projects:
        params["all_tenants"] = "1"
    with session(url, timeout) as client:
        volumes = list_volumes(client, params, limit=limit)
        names = {} if json_out else _server_names(client, volumes)
    if json_out:
        emit_json(volumes)
    else:
        _volume_table(volumes, names, long=long)


@app.command("show")
def show(
    volume_ref: VolumeArg,
    url: UrlOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    json_out: JsonOpt = False,
) -> None:
    """Every field of a volume, the servers it is attached to, and its fault."""
    with session(url, timeout) as client:
        volume = find_volume(client, volume_ref)
        names = {} if json_out else _server_names(client, [volume])
    if json_out:
        emit_json({"volume": volume})
        return
    _print_volume(volume, names)


@app.command("set")
def set_cmd(
    volume_ref: VolumeArg,
    name: Annotated[str | None, typer.Option("--name", help="New name.")] = None,
    description: Annotated[
        str | None, typer.Option("--description", help="New description.")
    ] = None,
    prop: Annotated[
        list[str] | None,
        typer.Option(
            "--property",
            metavar="KEY=VALUE",
            help="Add or change a metadata item; repeat for more. Other items are kept.",
        ),
    ] = None,
    no_property: Annotated[
        bool,
        typer.Option("--no-property", help="Remove every metadata item not given by --property."),
    ] = False,
    url: UrlOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    json_out: JsonOpt = False,
) -> None:
    """Change a volume's name, description or metadata."""
    update: dict[str, Any] = {}
    if name is not None:
        update["name"] = name
    if description is not None:
        update["description"] = description
    given = _parse_properties(prop) if prop else {}
    if name is None and description is None and not prop and not no_property:
        fail("give at least one of --name, --description, --property, --no-property", 2)
    with session(url, timeout) as client:
        volume = find_volume(client, volume_ref)
        if prop or no_property:
            # The API replaces the whole metadata: merge with what the volume has.
            kept = {} if no_property else dict(volume.get("metadata") or {})
            update["metadata"] = {**kept, **given}
        path = f"{_volumes(client)}/{volume['id']}"
        changed = client.request("PUT", path, body={"volume": update}, headers=HEADERS)["volume"]
        names = {} if json_out else _server_names(client, [changed])
    if json_out:
        emit_json({"volume": changed})
        return
    _print_volume(changed, names)


@app.command("delete")
def delete(
    volume_refs: Annotated[
        list[str], typer.Argument(metavar="VOLUME...", help="Volume ids or exact names.")
    ],
    wait: Annotated[bool, typer.Option("--wait", help="Wait until each one is gone.")] = False,
    wait_timeout: WaitOpt = DEFAULT_WAIT,
    url: UrlOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    json_out: JsonOpt = False,
) -> None:
    """Delete volumes (available or in error, and not attached). Carries on past failures
    and exits 1 if any delete failed (with --wait: or any volume failed to go)."""
    deleted: list[str] = []
    problems: list[str] = []
    with session(url, timeout) as client:
        for ref in volume_refs:
            try:
                vid = str(find_volume(client, ref)["id"])
                client.delete(f"{_volumes(client)}/{vid}", headers=HEADERS)
            except ApiError as exc:
                problems.append(exc.message)
                continue
            deleted.append(vid)
        if wait:
            for v in _wait_gone(client, deleted, wait_timeout):
                deleted.remove(v["id"])
                problems.append(_error_line(v))
    if json_out:
        emit_json({"deleted": deleted})
    else:
        for vid in deleted:
            say(f"volume {vid} {'deleted' if wait else 'delete accepted'}")
    if problems:
        fail(escape("\n".join(problems)))


def _wait_gone(client: Client, ids: list[str], wait_timeout: float) -> list[dict[str, Any]]:
    """Wait until every volume of ``ids`` is gone or has stopped deleting; return those
    that stopped without going (``error_deleting``, with a fault)."""
    settled: dict[str, dict[str, Any] | None] = {}

    def done() -> bool:
        for vid in ids:
            if vid in settled:
                continue
            try:
                volume = get_volume(client, vid)
            except ApiError as exc:
                if exc.status != 404:
                    raise
                settled[vid] = None
                continue
            if volume.get("status") != DELETING:
                settled[vid] = volume
        return len(settled) == len(ids)

    _wait(
        "the deletes",
        lambda: f"{len(ids) - len(settled)} volume(s) still deleting",
        done,
        wait_timeout,
    )
    return [v for v in settled.values() if v is not None]


WaitAttach = Annotated[
    bool, typer.Option("--wait", help="Wait until the cloud has done it; exit 1 if it failed.")
]


@app.command("attach")
def attach(
    server_ref: ServerArg,
    volume_ref: VolumeArg,
    device: Annotated[
        str | None,
        typer.Option("--device", metavar="/dev/vdX", help="Device name (default: the next free)."),
    ] = None,
    wait: WaitAttach = False,
    wait_timeout: WaitOpt = DEFAULT_WAIT,
    url: UrlOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    json_out: JsonOpt = False,
) -> None:
    """Attach a volume to a server in its availability zone."""
    request: dict[str, Any] = {}
    if device is not None:
        request["device"] = device
    with session(url, timeout) as client:
        server = client.find_server(server_ref)
        volume = find_volume(client, volume_ref)
        request["volumeId"] = volume["id"]
        answer = client.post(_attachments_path(server["id"]), {"volumeAttachment": request})
        attachment = answer["volumeAttachment"]
        if wait:
            volume = _wait_while(
                client, volume["id"], ATTACHING, "the volume to be attached", wait_timeout
            )
    if json_out:
        emit_json(answer)
    elif wait:
        say(
            f"volume {_label(volume)} attached to server {_label(server)} as {attachment['device']}"
        )
    else:
        say(
            f"attach accepted: volume {_label(volume)} to server {_label(server)} "
            f"as {attachment['device']}"
        )
    if wait and server["id"] not in _attached_servers(volume):
        fail(
            escape(
                f"volume {volume['id']} was not attached to server {server['id']}; it is "
                f"{volume.get('status')} (the reason is in `federator monitor events`)"
            )
        )


@app.command("detach")
def detach(
    server_ref: ServerArg,
    volume_ref: VolumeArg,
    wait: WaitAttach = False,
    wait_timeout: WaitOpt = DEFAULT_WAIT,
    url: UrlOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    json_out: JsonOpt = False,
) -> None:
    """Detach a volume from a server."""
    with session(url, timeout) as client:
        server = client.find_server(server_ref)
        volume = find_volume(client, volume_ref)
        client.delete(f"{_attachments_path(server['id'])}/{volume['id']}")
        if wait:
            volume = _wait_while(
                client, volume["id"], DETACHING, "the volume to be detached", wait_timeout
            )
    if json_out:
        emit_json({"detached": {"server_id": server["id"], "volume_id": volume["id"]}})
    elif wait:
        say(f"volume {_label(volume)} detached from server {_label(server)}")
    else:
        say(f"detach accepted: volume {_label(volume)} from server {_label(server)}")
    if wait and server["id"] in _attached_servers(volume):
        fail(
            escape(
                f"volume {volume['id']} is still attached to server {server['id']}; it is "
                f"{volume.get('status')}"
            )
        )


def _label(resource: dict[str, Any]) -> str:
    """``name (id)``, or the id alone when there is no name."""
    name = resource.get("name")
    return f"{name} ({resource['id']})" if name else str(resource["id"])
