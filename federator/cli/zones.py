"""``federator zone`` (the broker's zones and their load) and ``federator az`` (availability
zones as OpenStack clients see them)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from federator.cli.client import BROKER, COMPUTE, DEFAULT_TIMEOUT, TimeoutOpt, UrlOpt, session
from federator.cli.output import (
    NONE,
    JsonOpt,
    add_row,
    emit_json,
    key_values,
    new_table,
    number,
    percent,
    print_fields,
    print_table,
)

zone_app = typer.Typer(
    help="The broker's zones: load against the policy's thresholds.", no_args_is_help=True
)
az_app = typer.Typer(help="Availability zones (os-availability-zone).", no_args_is_help=True)

# metric -> (label, unit shown after the used figure)
_METRICS = {"ram_percent": "RAM", "vcpu_percent": "vCPU", "instances": "instances"}


def _figure(metric: str, value: float | int | None) -> str:
    if value is None:
        return NONE
    return percent(value) if metric != "instances" else number(value)


def _position(used: float | int | None, high: float | None, low: float | None) -> str:
    """Where usage sits against the marks: above high, below low, or between."""
    if used is None or high is None:
        return NONE
    if used > high:
        return "above high"
    if low is not None and used < low:
        return "below low"
    return "between low and high"


def load_summary(thresholds: dict[str, Any], metric: str) -> str:
    """``3.1% (high 75%, low 50%)``: usage of one metric and its marks, if any."""
    used = thresholds.get(metric)
    if used is None:
        return NONE
    high = thresholds.get(f"{metric}_high")
    low = thresholds.get(f"{metric}_low")
    if high is None:
        return _figure(metric, used)
    return f"{_figure(metric, used)} (high {_figure(metric, high)}, low {_figure(metric, low)})"


def _state(zone: dict[str, Any]) -> str:
    detail = zone.get("state_detail")
    return f"{zone.get('state')} ({detail})" if detail else str(zone.get("state"))


def _remote_usage(remote: dict[str, Any] | None) -> str:
    """What the monitor counted in the zone's listing (virtual zones)."""
    if not remote:
        return NONE
    return (
        f"{remote.get('instances', 0)} instance(s), {remote.get('vcpus', 0)} vCPUs, "
        f"{remote.get('ram_mb', 0)} MB"
    )


def _stand_in(stand_in: dict[str, Any] | None) -> list[tuple[str, Any]]:
    """The rows of an embedded EC2 stand-in: where its EC2 API answers."""
    if not stand_in:
        return []
    return [
        ("stand-in endpoint", stand_in.get("endpoint")),
        (
            "stand-in",
            f"{stand_in.get('provider')}, EC2 API, region {stand_in.get('region')}, "
            f"credentials {stand_in.get('credentials')}",
        ),
    ]


def _quota(zone: dict[str, Any]) -> str:
    return key_values(zone.get("quota") or {})


@zone_app.command("list")
def zone_list(
    url: UrlOpt = None, timeout: TimeoutOpt = DEFAULT_TIMEOUT, json_out: JsonOpt = False
) -> None:
    """Every zone: state, bursting, and used % against the high/low marks."""
    with session(url, timeout) as client:
        zones: list[dict[str, Any]] = client.get(f"{BROKER}/zones")["zones"]
    if json_out:
        emit_json(zones)
        return
    table = new_table(
        "Name", "Kind", "State", "Bursting", "Hosts", "RAM", "vCPU", "Instances", "Quota"
    )
    for z in zones:
        th = z.get("thresholds") or {}
        hosts = z.get("hosts") or {}
        add_row(
            table,
            z["name"],
            z.get("kind"),
            _state(z),
            bool(z.get("bursting")),
            f"{hosts.get('enabled', 0)}/{hosts.get('total', 0)}",
            load_summary(th, "ram_percent"),
            load_summary(th, "vcpu_percent"),
            load_summary(th, "instances"),
            _quota(z),
        )
    print_table(table)


@zone_app.command("show")
def zone_show(
    name: Annotated[str, typer.Argument(help="Zone name.")],
    url: UrlOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    json_out: JsonOpt = False,
) -> None:
    """One zone: state, bursting, quota, usage and each metric against its thresholds."""
    with session(url, timeout) as client:
        body = client.get(f"{BROKER}/zones/{name}")
    if json_out:
        emit_json(body)
        return
    z = body["zone"]
    usage = z.get("usage") or {}
    capacity = z.get("capacity") or {}
    hosts = z.get("hosts") or {}
    print_fields(
        [
            ("name", z["name"]),
            ("kind", z.get("kind")),
            ("driver", z.get("driver")),
            ("label", z.get("label")),
            *_stand_in(z.get("stand_in")),
            ("cell", z.get("cell")),
            ("state", _state(z)),
            ("bursting", bool(z.get("bursting"))),
            ("hosts", f"{hosts.get('enabled', 0)} enabled of {hosts.get('total', 0)}"),
            ("instances", usage.get("instances")),
            ("vcpus", f"{usage.get('vcpus', 0)} of {capacity.get('vcpus', 0)}"),
            ("ram", f"{usage.get('ram_mb', 0)} of {capacity.get('ram_mb', 0)} MB"),
            ("disk", f"{usage.get('disk_gb', 0)} of {capacity.get('disk_gb', 0)} GB"),
            ("remote usage", _remote_usage(z.get("remote_usage"))),
            ("quota", _quota(z)),
            ("overflow", ", ".join(z.get("overflow") or []) or NONE),
            ("updated", z.get("updated_at")),
        ],
        title=f"Zone {z['name']}",
    )
    th = z.get("thresholds") or {}
    table = new_table("Metric", "Used", "High", "Low", "Position", title="Load vs thresholds")
    for metric, label in _METRICS.items():
        if metric not in th:
            continue
        used, high, low = th.get(metric), th.get(f"{metric}_high"), th.get(f"{metric}_low")
        add_row(
            table,
            label,
            _figure(metric, used),
            _figure(metric, high),
            _figure(metric, low),
            _position(used, high, low),
        )
    print_table(table)


@az_app.command("list")
def az_list(
    long: Annotated[
        bool, typer.Option("--long", help="One row per host, with service state.")
    ] = False,
    url: UrlOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    json_out: JsonOpt = False,
) -> None:
    """Availability zones and whether each is available."""
    path = f"{COMPUTE}/os-availability-zone" + ("/detail" if long else "")
    with session(url, timeout) as client:
        info: list[dict[str, Any]] = client.get(path)["availabilityZoneInfo"]
    if json_out:
        emit_json(info)
        return
    if not long:
        table = new_table("Name", "Available")
        for az in info:
            add_row(table, az["zoneName"], bool((az.get("zoneState") or {}).get("available")))
        print_table(table)
        return
    table = new_table("Name", "Available", "Host", "Service", "Service Up", "Updated")
    for az in info:
        available = bool((az.get("zoneState") or {}).get("available"))
        hosts: dict[str, dict[str, Any]] = az.get("hosts") or {}
        if not hosts:
            add_row(table, az["zoneName"], available, None, None, None, None)
        for host, services in hosts.items():
            for service, state in services.items():
                add_row(
                    table,
                    az["zoneName"],
                    available,
                    host,
                    service,
                    bool(state.get("available") and state.get("active")),
                    state.get("updated_at"),
                )
    print_table(table)
