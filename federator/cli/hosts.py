"""``federator host``: hypervisor hosts, their state and load; enable, disable,
maintenance and drain (admin only).

A host is named by its name, with ``--zone`` (or as ``<zone>/<host>``) when several zones
have a host of that name.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape

from federator.cli.client import (
    BROKER,
    DEFAULT_TIMEOUT,
    Client,
    ClientError,
    TimeoutOpt,
    UrlOpt,
    session,
)
from federator.cli.common import fail
from federator.cli.output import (
    NONE,
    JsonOpt,
    add_row,
    emit_json,
    heading,
    key_values,
    new_table,
    number,
    print_fields,
    print_table,
    say,
)

app = typer.Typer(
    help="Hypervisor hosts: state, load, enable, disable, maintenance and drain.",
    no_args_is_help=True,
)
HOSTS = f"{BROKER}/hosts"
HostArg = Annotated[str, typer.Argument(metavar="HOST", help="Host name, or <zone>/<host>.")]
ZoneOpt = Annotated[
    str | None, typer.Option("--zone", help="The host's zone (when the name is ambiguous).")
]
ReasonOpt = Annotated[str, typer.Option("--reason", help="Why, in a few words.")]


def _locate(client: Client, host: str, zone: str | None) -> str:
    """``<zone>/<host>`` for the API path."""
    if zone is None and "/" in host:
        zone, host = host.split("/", 1)
    if zone is not None:
        return f"{zone}/{host}"
    zones = [h["zone"] for h in client.get(HOSTS)["hosts"] if h["name"] == host]
    if not zones:
        raise ClientError(f"no host is named {host}")
    if len(zones) > 1:
        raise ClientError(f"zones {', '.join(zones)} each have a host {host}; give --zone")
    return f"{zones[0]}/{host}"


def _use(cap: dict[str, Any]) -> str:
    return f"{cap.get('used', 0)} of {cap.get('schedulable', 0)}"


def _state(h: dict[str, Any]) -> str:
    """``enabled``, ``disabled: not in any aggregate`` or ``maintenance: kernel upgrade``."""
    if h.get("enabled"):
        return "enabled"
    reason = str(h.get("disabled_reason") or "")
    return reason if h.get("state") == "maintenance" else f"disabled: {reason}"


def _aggregates(h: dict[str, Any]) -> str:
    return ", ".join(a["name"] for a in h.get("aggregates") or []) or NONE


def _print_host(h: dict[str, Any]) -> None:
    cap = h.get("capacity") or {}
    maintenance = h.get("maintenance") or {}
    rows: list[tuple[str, Any]] = [
        ("zone", h["zone"]),
        ("name", h["name"]),
        ("availability zone", h.get("availability_zone")),
        ("aggregates", _aggregates(h)),
        ("state", _state(h)),
        ("maintenance since", maintenance.get("since")),
        ("vcpus", _capacity(cap.get("vcpus") or {}, "")),
        ("ram", _capacity(cap.get("ram_mb") or {}, " MB")),
        ("disk", _capacity(cap.get("disk_gb") or {}, " GB")),
        ("instances", h.get("instances")),
        ("moving", h.get("moving")),
        ("metadata", key_values({k: ",".join(v) for k, v in (h.get("metadata") or {}).items()})),
        ("updated", h.get("updated_at")),
    ]
    print_fields(rows, title=f"Host {h['zone']}/{h['name']}")


def _capacity(c: dict[str, Any], unit: str) -> str:
    return (
        f"{c.get('used', 0)} of {c.get('schedulable', 0)}{unit} "
        f"({c.get('total', 0)}{unit} x {number(c.get('allocation_ratio', 1))})"
    )


def _print_servers(servers: list[dict[str, Any]], title: str) -> None:
    if not servers:
        say(f"{title}: none")
        return
    table = new_table("ID", "Name", "Status", "Task", "Project", title=title)
    for s in servers:
        add_row(
            table, s["id"], s.get("name"), s.get("status"), s.get("task_state"), s.get("project_id")
        )
    print_table(table)


@app.command("list")
def host_list(
    zone: Annotated[str | None, typer.Option("--zone", help="Only this zone's hosts.")] = None,
    url: UrlOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    json_out: JsonOpt = False,
) -> None:
    """Every host: availability zone, aggregates, state and load."""
    with session(url, timeout) as client:
        hosts: list[dict[str, Any]] = client.get(HOSTS, {"zone": zone} if zone else None)["hosts"]
    if json_out:
        emit_json(hosts)
        return
    table = new_table(
        "Zone", "Host", "AZ", "Aggregates", "State", "vCPU", "RAM (MB)", "Disk (GB)", "Instances"
    )
    for h in hosts:
        cap = h.get("capacity") or {}
        add_row(
            table,
            h["zone"],
            h["name"],
            h.get("availability_zone"),
            _aggregates(h),
            _state(h),
            _use(cap.get("vcpus") or {}),
            _use(cap.get("ram_mb") or {}),
            _use(cap.get("disk_gb") or {}),
            h.get("instances"),
        )
    print_table(table)


@app.command("show")
def host_show(
    host: HostArg,
    zone: ZoneOpt = None,
    url: UrlOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    json_out: JsonOpt = False,
) -> None:
    """One host and the servers on it."""
    with session(url, timeout) as client:
        body = client.get(f"{HOSTS}/{_locate(client, host, zone)}")
    if json_out:
        emit_json(body)
        return
    _print_host(body["host"])
    _print_servers(body.get("servers") or [], "Servers")


def _change(
    host: str,
    zone: str | None,
    action: str,
    body: Any,
    url: str | None,
    timeout: float,
    json_out: bool,
) -> dict[str, Any]:
    with session(url, timeout) as client:
        answer: dict[str, Any] = client.post(
            f"{HOSTS}/{_locate(client, host, zone)}/{action}", body
        )
    if json_out:
        emit_json(answer)
    else:
        _print_host(answer["host"])
    return answer


@app.command("enable")
def host_enable(
    host: HostArg,
    zone: ZoneOpt = None,
    url: UrlOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    json_out: JsonOpt = False,
) -> None:
    """Lift a disable and end maintenance. A host in no aggregate still takes no VMs."""
    _change(host, zone, "enable", None, url, timeout, json_out)


@app.command("disable")
def host_disable(
    host: HostArg,
    zone: ZoneOpt = None,
    reason: ReasonOpt = "",
    url: UrlOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    json_out: JsonOpt = False,
) -> None:
    """Take no new VMs on the host; what runs there keeps running."""
    _change(host, zone, "disable", {"reason": reason}, url, timeout, json_out)


@app.command("maintenance")
def host_maintenance(
    host: HostArg,
    zone: ZoneOpt = None,
    reason: ReasonOpt = "",
    exit_: Annotated[bool, typer.Option("--exit", help="End maintenance instead.")] = False,
    url: UrlOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    json_out: JsonOpt = False,
) -> None:
    """Put the host in maintenance (no new VMs) and list what still runs on it; with
    --exit, end it."""
    if exit_:
        _change(host, zone, "maintenance/exit", None, url, timeout, json_out)
        return
    answer = _change(host, zone, "maintenance", {"reason": reason}, url, timeout, json_out)
    if not json_out:
        _print_servers(answer.get("servers") or [], "Still running here")


@app.command("drain")
def host_drain(
    host: HostArg,
    zone: ZoneOpt = None,
    reason: ReasonOpt = "",
    url: UrlOpt = None,
    timeout: Annotated[
        float,
        typer.Option("--timeout", min=0.1, help="Seconds to wait for the whole drain."),
    ] = 600.0,
    json_out: JsonOpt = False,
) -> None:
    """Move every VM of the host to other hosts of its availability zone (the host goes
    into maintenance first). Exits 1 when any VM is left on it."""
    with session(url, timeout) as client:
        answer = client.post(f"{HOSTS}/{_locate(client, host, zone)}/drain", {"reason": reason})
    if json_out:
        emit_json(answer)
    else:
        h = answer["host"]
        heading(f"Drain of {h['zone']}/{h['name']}")
        table = new_table("ID", "Name", "Outcome", "From", "To", "Status", "Detail")
        for m in answer.get("moves") or []:
            add_row(
                table,
                m["id"],
                m.get("name"),
                m["outcome"],
                m.get("from"),
                m.get("to"),
                m.get("status"),
                m.get("detail"),
            )
        print_table(table)
        say(
            f"moved {answer['moved']}, stayed {answer['stayed']}, failed {answer['failed']}; "
            f"the host is {_state(h)}"
        )
    left = answer["stayed"] + answer["failed"]
    if left:
        fail(escape(f"{left} instance(s) remain on {answer['host']['name']}"))
