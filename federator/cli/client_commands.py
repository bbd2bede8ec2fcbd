"""The command groups that talk to a running broker over its API.

``register`` adds ``server``, ``server-group``, ``volume``, ``zone``, ``az``, ``flavor`` and
``monitor``;
``register_policy_client`` adds ``show``, ``reload`` and ``explain`` to the ``policy`` group.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from federator.cli import flavors, server_groups, servers, volumes, zones
from federator.cli.client import BROKER, DEFAULT_TIMEOUT, TimeoutOpt, UrlOpt, session
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
    text,
)

monitor_app = typer.Typer(
    help="The broker's periodic jobs and build workers.", no_args_is_help=True
)
TOP_HOSTS = 5


def register(app: typer.Typer) -> None:
    app.add_typer(servers.app, name="server")
    app.add_typer(server_groups.app, name="server-group")
    app.add_typer(volumes.app, name="volume")
    app.add_typer(zones.zone_app, name="zone")
    app.add_typer(zones.az_app, name="az")
    app.add_typer(flavors.app, name="flavor")
    app.add_typer(monitor_app, name="monitor")


def register_policy_client(policy_app: typer.Typer) -> None:
    """Add the commands that read or change the policy of a running broker."""
    policy_app.command("show")(policy_show)
    policy_app.command("reload")(policy_reload)
    policy_app.command("explain")(policy_explain)


# --- policy ------------------------------------------------------------------------------


def policy_show(
    url: UrlOpt = None, timeout: TimeoutOpt = DEFAULT_TIMEOUT, json_out: JsonOpt = False
) -> None:
    """The policy in force: version, checksum, source and the document itself."""
    with session(url, timeout) as client:
        body = client.get(f"{BROKER}/policy")
    if json_out:
        emit_json(body)
        return
    p = body["policy"]
    doc = p.get("document") or {}
    print_fields(
        [
            ("version", p.get("version")),
            ("sha256", p.get("sha256")),
            ("source", p.get("source")),
            ("loaded at", p.get("loaded_at")),
            ("zones", ", ".join(doc.get("zones") or {}) or NONE),
            ("rules", len(doc.get("rules") or [])),
        ],
        title="Policy",
    )
    heading("Document")
    emit_json(doc)


def policy_reload(
    url: UrlOpt = None, timeout: TimeoutOpt = DEFAULT_TIMEOUT, json_out: JsonOpt = False
) -> None:
    """Make the broker re-read its policy file. An invalid file changes nothing: every
    problem is printed and the exit status is 1."""
    with session(url, timeout) as client:
        body = client.post(f"{BROKER}/policy/reload")
    if json_out:
        emit_json(body)
        return
    r = body["reload"]
    state = "reloaded" if r.get("changed") else "unchanged"
    say(f"policy {state}: version {r.get('version')} (sha256 {r.get('sha256')})")


def policy_explain(
    flavor: Annotated[str | None, typer.Option("--flavor", help="Flavor id or name.")] = None,
    image: Annotated[str | None, typer.Option("--image", help="Image id or name.")] = None,
    volume_size: Annotated[
        int | None,
        typer.Option("--volume-size", help="Explain a volume create of this size (GB) instead."),
    ] = None,
    volume_type: Annotated[
        str | None, typer.Option("--volume-type", help="Volume type of --volume-size.")
    ] = None,
    project: Annotated[str, typer.Option("--project", help="Project asking.")] = "default",
    availability_zone: Annotated[
        str | None, typer.Option("--availability-zone", help="Zone asked for.")
    ] = None,
    max_hosts: Annotated[
        int | None,
        typer.Option("--max-hosts", min=0, help=f"Hosts to show per zone (default {TOP_HOSTS})."),
    ] = None,
    group: Annotated[
        str | None, typer.Option("--group", help="Server group id the boot would join.")
    ] = None,
    url: UrlOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    json_out: JsonOpt = False,
) -> None:
    """Where a boot (--flavor, --image) or a volume (--volume-size) would go now and why:
    every zone's verdicts and its best hosts or pools. Nothing is reserved."""
    request: dict[str, Any] = {"project_id": project}
    if volume_size is not None:
        if flavor or image or group:
            fail("--volume-size explains a volume: leave out --flavor, --image and --group")
        request["volume"] = {"size": volume_size}
        if volume_type:
            request["volume"]["volume_type"] = volume_type
    elif flavor and image:
        request.update(flavor=flavor, image=image)
    else:
        fail("give --flavor and --image (a boot) or --volume-size (a volume)")
    if availability_zone:
        request["availability_zone"] = availability_zone
    if group:
        request["group"] = group
    if max_hosts is not None and json_out:
        # For the table every host is fetched: the API cuts its list before ranking it.
        request["max_hosts"] = max_hosts
    with session(url, timeout) as client:
        body = client.post(f"{BROKER}/policy/explain", request)
    if json_out:
        emit_json(body)
        return
    _print_explain(body["explain"], TOP_HOSTS if max_hosts is None else max_hosts)


def _print_explain(ex: dict[str, Any], top: int) -> None:
    decision = ex.get("decision")
    if decision:
        where = f"zone {decision['zone']}"
        if decision.get("host"):
            where += f", host {decision['host']}"
        say(f"Decision: {where}")
    else:
        say(f"Decision: no placement ({ex.get('fault')})")
    req = ex.get("request") or {}
    say(f"Policy: version {ex.get('policy_version')} (sha256 {ex.get('policy_sha256')})")
    what = (
        f"volume of {req.get('size')} GB, type {req.get('volume_type')}"
        if "size" in req
        else f"flavor {req.get('flavor')}, image {req.get('image')}"
    )
    say(
        f"Request: {what}, project {req.get('project_id')}, availability zone "
        f"{req.get('availability_zone') or 'any'}"
    )
    if ex.get("group"):
        g = ex["group"]
        say(f"Server group: {g.get('rule')}, {g.get('members_placed')} member(s) placed")
    for label, key in (
        ("Matched rules", "matched_rules"),
        ("Would start bursting", "would_start_bursting"),
        ("Would stop bursting", "would_stop_bursting"),
    ):
        if ex.get(key):
            say(f"{label}: {', '.join(ex[key])}")
    for zone in ex.get("zones") or []:
        _print_zone(zone, top)


def _print_zone(zone: dict[str, Any], top: int) -> None:
    rank = f"rank {zone['rank']}" if zone.get("rank") else "not a candidate"
    say("")
    heading(f"Zone {zone['zone']} ({zone.get('kind')}): {rank}")
    if zone.get("reason"):
        say(f"  reason: {zone['reason']}")
    for v in zone.get("verdicts") or []:
        verdict = "accepted" if v.get("accepted") else "rejected"
        say(f"  {verdict} by {v.get('check')}: {v.get('detail')}")
        if v.get("figures"):
            say(f"    figures: {key_values(v['figures'])}")
    if zone.get("storage"):
        say(f"  storage: {key_values(zone['storage'])}")
    if zone.get("limits"):
        say(f"  limits: {key_values(zone['limits'])}")
    if zone.get("detail"):
        say(f"  {zone['detail']}")
    for p in zone.get("pools") or []:
        free = "unbounded" if p.get("free_gb") is None else f"{p['free_gb']} GB free"
        say(f"  pool {p.get('pool')}: {free}")
    if zone.get("group"):
        verdict = "allows" if zone["group"].get("allowed") else "refuses"
        say(f"  server group {verdict} it: {zone['group'].get('detail')}")
    hosts: list[dict[str, Any]] | None = zone.get("hosts")
    if hosts is None:
        return
    say(
        f"  hosts: {zone.get('hosts_passed', 0)} of {zone.get('hosts_total', len(hosts))} "
        "passed the filters"
    )
    ranked = sorted(hosts, key=lambda h: (not h.get("passed"), -(h.get("weight") or 0.0)))
    shown = ranked[:top]
    if not shown:
        return
    table = new_table(
        "Host",
        "Passed",
        "Weight",
        "Free RAM (MB)",
        "Free vCPUs",
        "Free Disk (GB)",
        "Detail",
        title=f"  top {len(shown)} host(s)",
    )
    for h in shown:
        weight = h.get("weight")
        add_row(
            table,
            h.get("host"),
            bool(h.get("passed")),
            NONE if weight is None else f"{weight:.4f}",
            h.get("free_ram_mb"),
            h.get("free_vcpus"),
            h.get("free_disk_gb"),
            h.get("detail") if h.get("passed") else f"{h.get('rejected_by')}: {h.get('detail')}",
        )
    print_table(table)


# --- monitor -----------------------------------------------------------------------------


@monitor_app.command("status")
def monitor_status(
    url: UrlOpt = None, timeout: TimeoutOpt = DEFAULT_TIMEOUT, json_out: JsonOpt = False
) -> None:
    """The monitor's jobs (runs, failures, last result), which node runs each zone's jobs
    (zone leases) and how busy the build workers are."""
    with session(url, timeout) as client:
        body = client.get(f"{BROKER}/monitor")
    if json_out:
        emit_json(body)
        return
    table = new_table(
        "Job",
        "Runs",
        "Skipped",
        "Failures",
        "Last Started",
        "Duration (ms)",
        "Last Result",
        "Last Error",
    )
    for job in body.get("jobs") or []:
        duration = job.get("last_duration_ms")
        add_row(
            table,
            job.get("name"),
            job.get("runs"),
            job.get("skipped"),
            job.get("failures"),
            job.get("last_started"),
            None if duration is None else number(duration),
            text(job.get("last_result")),
            job.get("last_error"),
        )
    print_table(table)
    leases = new_table("Zone", "Owner", "Since", "Until", "State")
    for lease in body.get("leases") or []:
        state = "expired" if lease.get("expired") else "held" if lease.get("owner") else "free"
        add_row(
            leases,
            lease.get("zone"),
            lease.get("owner"),
            lease.get("acquired_at"),
            lease.get("expires_at"),
            f"{state} (this node)" if lease.get("held_here") else state,
        )
    heading(f"zone leases (this node: {body.get('node')})")
    print_table(leases)
    workers = body.get("workers") or {}
    say(f"build workers: {workers.get('busy', 0)} busy of {workers.get('count', 0)}")


@monitor_app.command("events")
def monitor_events(
    zone: Annotated[str | None, typer.Option("--zone", help="Only this zone.")] = None,
    kind: Annotated[
        str | None,
        typer.Option(
            "--kind",
            help="Only this kind: orphan, vanished, zone_down, zone_up, drift, volume or vcluster.",
        ),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="Most events.")] = 100,
    url: UrlOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    json_out: JsonOpt = False,
) -> None:
    """What the monitor found in the zones, newest first: orphans and what was done about
    them, vanished instances, zones going down or coming back, usage drift."""
    params: dict[str, str | int] = {"limit": limit}
    if zone:
        params["zone"] = zone
    if kind:
        params["kind"] = kind
    with session(url, timeout) as client:
        body = client.get(f"{BROKER}/monitor/events", params=params)
    if json_out:
        emit_json(body)
        return
    table = new_table("Time", "Zone", "Kind", "Instance", "Action", "Detail")
    for e in body.get("events") or []:
        add_row(
            table,
            e.get("created_at"),
            e.get("zone"),
            e.get("kind"),
            e.get("instance_uuid"),
            e.get("action"),
            text(e.get("detail")),
        )
    print_table(table)
