"""How ``federator vcluster`` shows clusters and plans: tables of members and groupings,
fault lines, the plan ``explain`` prints."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from federator.cli.output import add_row, new_table, print_fields, print_table, say


def label(cluster: Mapping[str, Any]) -> str:
    """``name (id)``."""
    return f"{cluster.get('name')} ({cluster.get('id')})"


def fault_line(cluster: Mapping[str, Any]) -> str:
    """``code: message (detail; detail)`` of the cluster's fault, or "" when it has none."""
    fault = cluster.get("fault") or {}
    if not fault:
        return ""
    line = str(fault.get("message") or "")
    if fault.get("code"):
        line = f"{fault['code']}: {line}"
    details = fault.get("details")
    if isinstance(details, list) and details:
        line += f" ({'; '.join(map(str, details))})"
    return line


def attached_name(member: Mapping[str, Any], by_id: Mapping[str, str]) -> str | None:
    """The member a volume is attached to, by name when it is one of the cluster's."""
    sid = member.get("attached_to")
    return None if sid is None else by_id.get(str(sid), str(sid))


def counts(cluster: Mapping[str, Any]) -> tuple[int, int]:
    kinds = [m.get("type") for m in cluster.get("instances") or []]
    return kinds.count("server"), kinds.count("volume")


def instances_table(cluster: Mapping[str, Any]) -> Any:
    members = cluster.get("instances") or []
    by_id = {str(m["id"]): str(m["name"]) for m in members if m.get("id")}
    table = new_table(
        "Name", "Type", "ID", "Status", "AZ", "Host", "Pool", "Attached To", title="Instances"
    )
    for m in members:
        add_row(
            table,
            m.get("name"),
            m.get("type"),
            m.get("id"),
            m.get("status"),
            m.get("availability_zone"),
            m.get("host"),
            m.get("pool"),
            attached_name(m, by_id),
        )
    return table


def groupings_table(cluster: Mapping[str, Any]) -> Any:
    table = new_table("Name", "Rule", "Scope", "Members", title="Groupings")
    for g in cluster.get("groupings") or []:
        spec = g.get("spec") or {}
        add_row(
            table,
            g.get("name"),
            spec.get("rule"),
            spec.get("scope") or "host",
            ", ".join(map(str, g.get("membersRef") or [])),
        )
    return table


def print_cluster(cluster: Mapping[str, Any]) -> None:
    """A cluster's fields, its fault (when it has one), its instances and groupings."""
    servers, volumes = counts(cluster)
    print_fields(
        [
            ("id", cluster.get("id")),
            ("name", cluster.get("name")),
            ("status", cluster.get("status")),
            ("servers", servers),
            ("volumes", volumes),
            ("project", cluster.get("project_id")),
            ("user", cluster.get("user_id")),
            ("created", cluster.get("created")),
            ("updated", cluster.get("updated")),
        ],
        title=f"Virtual cluster {cluster.get('name')}",
    )
    fault = cluster.get("fault")
    if fault:
        details = fault.get("details")
        print_fields(
            [
                ("code", fault.get("code")),
                ("message", fault.get("message")),
                ("details", "\n".join(details) if isinstance(details, list) else details),
                ("created", fault.get("created")),
            ],
            title="Fault",
        )
    print_table(instances_table(cluster))
    if cluster.get("groupings"):
        print_table(groupings_table(cluster))


def print_plan(plan: Mapping[str, Any]) -> None:
    verdict = "placeable" if plan.get("placeable") else "cannot be placed now"
    say(f"vcluster {plan.get('name')}: {verdict}")
    say(
        f"zones considered: {', '.join(plan.get('zones') or []) or '-'}; "
        f"candidates tried: {plan.get('candidates_tried', 0)}"
    )
    for note in plan.get("notes") or []:
        say(f"note: {note}")
    instances = plan.get("instances") or []
    if instances:
        table = new_table("Name", "Type", "Zone", "AZ", "Host", "Pool", title="Placement")
        for i in instances:
            add_row(
                table,
                i.get("name"),
                i.get("type"),
                i.get("zone"),
                i.get("availability_zone"),
                i.get("host"),
                i.get("pool"),
            )
        print_table(table)
    fault = plan.get("fault")
    if fault:
        print_fields(
            [
                ("code", fault.get("code")),
                ("blocked by", fault.get("blocked_by")),
                ("message", fault.get("message")),
            ],
            title="Fault",
        )
