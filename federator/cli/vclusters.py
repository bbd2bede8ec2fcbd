"""``federator vcluster``: virtual clusters of servers and volumes, placed all or nothing
under their groupings: create, list, show, update, delete and explain.

A thin client of ``/compute/v2.1/vclusters``. ``create``, ``update`` and ``explain`` read
the request body from a JSON file (``-`` for standard input) holding either the whole body,
``{"vcluster": {...}}``, or just the inner object, which is then wrapped. A cluster is named
by id or, failing that, by its exact name among the project's clusters.

With ``--wait`` a command polls the cluster until it settles and reports each member as it
changes (name, type, status, availability zone, host and pool): as a live table when the
output is a terminal, else one plain line per change, so logs stay readable.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.text import Text

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
from federator.cli.common import err_console, fail, out_console
from federator.cli.output import (
    JsonOpt,
    add_row,
    emit_json,
    key_values,
    new_table,
    print_table,
    say,
)
from federator.cli.servers import DEFAULT_WAIT, POLL_INTERVAL, WaitOpt
from federator.cli.vcluster_views import (
    counts,
    fault_line,
    instances_table,
    label,
    print_cluster,
    print_plan,
)

app = typer.Typer(
    help="Virtual clusters: servers and volumes placed all or nothing under their groupings.",
    no_args_is_help=True,
)

VCLUSTERS = f"{COMPUTE}/vclusters"
ACTIVE, ERROR, DEGRADED, DELETING = "ACTIVE", "ERROR", "DEGRADED", "DELETING"
# The statuses a build or an update ends in.
SETTLED = frozenset({ACTIVE, ERROR, DEGRADED})
# ``explain``'s exit status for a cluster that cannot be placed now: not 1 (the broker
# refused the request) nor 2 (a usage or file error), so scripts can tell them apart.
UNPLACEABLE = 3

ClusterArg = Annotated[str, typer.Argument(metavar="ID", help="Virtual cluster id or exact name.")]
FileArg = Annotated[
    str,
    typer.Argument(
        metavar="FILE.json",
        help='The request body, {"vcluster": {...}}, or just the inner object; - for stdin.',
    ),
]
WaitFlag = Annotated[
    bool,
    typer.Option(
        "--wait",
        help="Wait until the cluster is ACTIVE, ERROR or DEGRADED, reporting each member as "
        "it changes; exit 1 unless it ends ACTIVE.",
    ),
]


# --- the request body ------------------------------------------------------------------


def read_body(source: str) -> dict[str, Any]:
    """The request body in ``source`` (a path, or ``-`` for standard input), wrapped in
    ``{"vcluster": ...}`` unless it already is. The broker validates the rest.

    Exits with status 2 and a message naming the file (and, for bad JSON, the line and
    column) when the file cannot be read or is not a JSON object.
    """
    name = "standard input" if source == "-" else source
    try:
        if source == "-":
            raw = sys.stdin.read()
        else:
            with open(source, encoding="utf-8") as f:
                raw = f.read()
    except FileNotFoundError:
        fail(escape(f"{name}: no such file"), 2)
    except IsADirectoryError:
        fail(escape(f"{name}: is a directory, not a JSON file"), 2)
    except UnicodeDecodeError as exc:
        fail(escape(f"{name}: not UTF-8 text (byte {exc.start})"), 2)
    except OSError as exc:
        fail(escape(f"{name}: cannot read it: {exc.strerror or exc}"), 2)
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError as exc:
        fail(
            escape(f"{name}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"),
            2,
        )
    if not isinstance(doc, dict):
        fail(
            escape(
                f'{name}: expected a JSON object, {{"vcluster": {{...}}}} or the cluster '
                f"itself, not {_json_kind(doc)}"
            ),
            2,
        )
    return doc if "vcluster" in doc else {"vcluster": doc}


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "null"


# --- finding clusters ------------------------------------------------------------------


def get_cluster(client: Client, cluster_id: str) -> dict[str, Any]:
    """:raises ApiError: no such cluster (the broker's 404) or another refusal."""
    found: dict[str, Any] = client.get(f"{VCLUSTERS}/{cluster_id}")["vcluster"]
    return found


def list_clusters(client: Client, *, all_projects: bool = False) -> list[dict[str, Any]]:
    params: dict[str, str | int] = {"all_tenants": "1"} if all_projects else {}
    found: list[dict[str, Any]] = client.get(VCLUSTERS, params)["vclusters"]
    return found


def find_cluster(client: Client, ref: str) -> dict[str, Any]:
    """A cluster by id, else by exact name among the project's clusters.

    :raises ApiError: no cluster has that id or name (the broker's 404), or several share
        the name (reported as a 409 with ``federator.resource.conflict``).
    """
    try:
        return get_cluster(client, ref)
    except ApiError as exc:
        if exc.status != 404:
            raise
        named = [c for c in list_clusters(client) if c.get("name") == ref]
        if len(named) == 1:
            return named[0]
        if len(named) > 1:
            raise ApiError(
                409, errors.CONFLICT, f"{len(named)} virtual clusters are named {ref!r}; give an id"
            ) from None
        raise


# --- waiting ---------------------------------------------------------------------------


def _member_line(member: Mapping[str, Any]) -> str:
    """``db-vol-1 (volume): in-use, availability_zone=local, host=h1, pool=h1/volumes``."""
    where = key_values(
        {
            "availability_zone": member.get("availability_zone"),
            "host": member.get("host"),
            "pool": member.get("pool"),
        }
    )
    line = f"{member.get('name')} ({member.get('type')}): {member.get('status')}"
    return line if where == "-" else f"{line}, {where}"


def _member_state(member: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple(member.get(k) for k in ("status", "availability_zone", "host", "pool"))


class Progress:
    """Reports one cluster's progress between polls.

    On a terminal a live table is redrawn in place and removed at the end (the command
    prints the final state itself); anywhere else each change is one plain line: the
    cluster's status when it changes, and a member's line when its status, availability
    zone, host or pool changes.
    """

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live: Live | None = None
        self.status: str | None = None
        self.members: dict[str, tuple[Any, ...]] = {}

    def start(self) -> None:
        if self.console.is_terminal:
            self.live = Live(console=self.console, transient=True, auto_refresh=False)
            self.live.start()

    def stop(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None

    def _line(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False)

    def report(self, cluster: Mapping[str, Any]) -> None:
        """Show what changed in ``cluster`` since the last report."""
        if self.live is not None:
            self.live.update(self._view(cluster), refresh=True)
            return
        if cluster.get("status") != self.status:
            self.status = cluster.get("status")
            self._line(f"vcluster {label(cluster)}: {self.status}")
        for m in cluster.get("instances") or []:
            state = _member_state(m)
            if self.members.get(str(m.get("name"))) != state:
                self.members[str(m.get("name"))] = state
                self._line(f"  {_member_line(m)}")

    def gone(self, cluster: Mapping[str, Any]) -> None:
        if self.live is None:
            self._line(f"vcluster {label(cluster)}: deleted")

    @staticmethod
    def _view(cluster: Mapping[str, Any]) -> RenderableType:
        head = Text(f"vcluster {label(cluster)}: {cluster.get('status')}", style="bold")
        return Group(head, instances_table(cluster))


@contextmanager
def progress(json_out: bool) -> Iterator[Progress]:
    """A :class:`Progress` on standard output, or on standard error with ``--json`` so
    that standard output holds the JSON alone."""
    p = Progress(err_console if json_out else out_console)
    p.start()
    try:
        yield p
    finally:
        p.stop()


def _where_members_are(cluster: Mapping[str, Any]) -> str:
    """``it is BUILD; members: a BUILD, b ACTIVE``, for a timeout's message."""
    members = ", ".join(
        f"{m.get('name')} {m.get('status')}" for m in cluster.get("instances") or []
    )
    return f"it is {cluster.get('status')}; members: {members or 'none'}"


def wait_settled(
    client: Client, cluster_id: str, report: Progress, deadline: float, wait_timeout: float
) -> dict[str, Any]:
    """Poll the cluster until its status is ACTIVE, ERROR or DEGRADED and return it then;
    exit 1 naming where its members are once ``deadline`` (a monotonic time) has passed."""
    while True:
        cluster = get_cluster(client, cluster_id)
        report.report(cluster)
        if cluster.get("status") in SETTLED:
            return cluster
        if time.monotonic() > deadline:
            report.stop()
            fail(
                escape(
                    f"timed out after {wait_timeout:g}s waiting for vcluster {label(cluster)} "
                    f"to settle; {_where_members_are(cluster)}"
                )
            )
        time.sleep(POLL_INTERVAL)


def wait_gone(
    client: Client,
    cluster: Mapping[str, Any],
    report: Progress,
    deadline: float,
    wait_timeout: float,
) -> dict[str, Any] | None:
    """Poll the cluster until it is gone (None) or has stopped deleting without going
    (returned, with its fault); exit 1 once ``deadline`` (a monotonic time) has passed."""
    while True:
        try:
            now = get_cluster(client, str(cluster["id"]))
        except ApiError as exc:
            if exc.status != 404:
                raise
            report.gone(cluster)
            return None
        report.report(now)
        if now.get("status") != DELETING:
            return now
        if time.monotonic() > deadline:
            report.stop()
            fail(
                escape(
                    f"timed out after {wait_timeout:g}s waiting for vcluster {label(now)} "
                    f"to go; {_where_members_are(now)}"
                )
            )
        time.sleep(POLL_INTERVAL)


def _settle_and_show(
    client: Client, answer: dict[str, Any], wait: bool, wait_timeout: float, json_out: bool
) -> None:
    """Print the cluster ``answer`` (a create's or an update's 202), having waited for it
    to settle with ``wait``; exit 1 when it settled in ERROR or DEGRADED."""
    cluster = answer
    if wait:
        deadline = time.monotonic() + wait_timeout
        with progress(json_out) as report:
            # The answer is the state the request left: BUILD, with what is yet to change.
            report.report(answer)
            cluster = wait_settled(client, str(answer["id"]), report, deadline, wait_timeout)
    if json_out:
        emit_json({"vcluster": cluster})
    else:
        print_cluster(cluster)
    if wait and cluster.get("status") != ACTIVE:
        fail(
            escape(
                f"vcluster {label(cluster)} is {cluster.get('status')}: "
                f"{fault_line(cluster) or 'no fault'}"
            )
        )


# --- commands --------------------------------------------------------------------------


@app.command("create")
def create(
    body_file: FileArg,
    wait: WaitFlag = False,
    wait_timeout: WaitOpt = DEFAULT_WAIT,
    url: UrlOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    json_out: JsonOpt = False,
) -> None:
    """Create a virtual cluster from FILE.json. The broker answers at once (BUILD) and
    places every member, or none: an invalid body is refused naming its JSON path. With
    --wait, exit 0 once it is ACTIVE, else 1 with its fault's code and message."""
    body = read_body(body_file)
    with session(url, timeout) as client:
        answer = client.post(VCLUSTERS, body)["vcluster"]
        _settle_and_show(client, answer, wait, wait_timeout, json_out)


@app.command("list")
def list_cmd(
    all_projects: Annotated[
        bool, typer.Option("--all-projects", help="Every project's clusters (admins).")
    ] = False,
    url: UrlOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    json_out: JsonOpt = False,
) -> None:
    """List the project's virtual clusters, oldest first (with --all-projects, every
    project's)."""
    with session(url, timeout) as client:
        clusters = list_clusters(client, all_projects=all_projects)
    if json_out:
        emit_json(clusters)
        return
    table = new_table("ID", "Name", "Status", "Servers", "Volumes", "Project", "Fault")
    for c in clusters:
        servers, volumes = counts(c)
        add_row(
            table,
            c.get("id"),
            c.get("name"),
            c.get("status"),
            servers,
            volumes,
            c.get("project_id"),
            (c.get("fault") or {}).get("code"),
        )
    print_table(table)


@app.command("show")
def show(
    cluster_ref: ClusterArg,
    url: UrlOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    json_out: JsonOpt = False,
) -> None:
    """A virtual cluster: its status, its fault (when ERROR or DEGRADED), each instance
    (type, id, status, availability zone, host; a volume's pool and the server it is
    attached to) and its groupings."""
    with session(url, timeout) as client:
        cluster = find_cluster(client, cluster_ref)
    if json_out:
        emit_json({"vcluster": cluster})
        return
    print_cluster(cluster)


@app.command("update")
def update(
    cluster_ref: ClusterArg,
    body_file: FileArg,
    wait: WaitFlag = False,
    wait_timeout: WaitOpt = DEFAULT_WAIT,
    url: UrlOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    json_out: JsonOpt = False,
) -> None:
    """Make a virtual cluster what FILE.json describes (the whole desired cluster): new
    members are placed around the others, members no longer named are deleted. A change
    that cannot be placed is refused (409) and nothing changes. --wait as for create."""
    body = read_body(body_file)
    with session(url, timeout) as client:
        cid = str(find_cluster(client, cluster_ref)["id"])
        answer = client.request("PUT", f"{VCLUSTERS}/{cid}", body=body)["vcluster"]
        _settle_and_show(client, answer, wait, wait_timeout, json_out)


@app.command("delete")
def delete(
    cluster_refs: Annotated[
        list[str], typer.Argument(metavar="ID...", help="Virtual cluster ids or exact names.")
    ],
    wait: Annotated[
        bool,
        typer.Option("--wait", help="Wait until each one is gone, reporting its members."),
    ] = False,
    wait_timeout: WaitOpt = DEFAULT_WAIT,
    url: UrlOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    json_out: JsonOpt = False,
) -> None:
    """Delete virtual clusters and every member of them. Carries on past failures and
    exits 1 if any delete failed (with --wait: or any cluster stopped deleting without
    going, its fault printed)."""
    accepted: list[dict[str, Any]] = []
    problems: list[str] = []
    with session(url, timeout) as client:
        for ref in cluster_refs:
            try:
                found = find_cluster(client, ref)
                client.delete(f"{VCLUSTERS}/{found['id']}")
            except ApiError as exc:
                problems.append(exc.message)
                continue
            accepted.append(found)
        if wait:
            deadline = time.monotonic() + wait_timeout
            for c in list(accepted):
                with progress(json_out) as report:
                    stuck = wait_gone(client, c, report, deadline, wait_timeout)
                if stuck is not None:
                    accepted.remove(c)
                    problems.append(
                        f"vcluster {label(stuck)} is {stuck.get('status')}, not deleted: "
                        f"{fault_line(stuck) or 'no fault'}"
                    )
    if json_out:
        emit_json({"deleted": [c["id"] for c in accepted]})
    else:
        for c in accepted:
            say(f"vcluster {label(c)} {'deleted' if wait else 'delete accepted'}")
    if problems:
        fail(escape("\n".join(problems)))


@app.command("explain")
def explain(
    body_file: FileArg,
    url: UrlOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    json_out: JsonOpt = False,
) -> None:
    """Where the broker would place the cluster of FILE.json now: each member's zone,
    availability zone, host or pool; for a cluster that cannot be placed, the fault's
    code, the grouping (or resource) that blocks it and why. Nothing is claimed or made.
    Exit status: 0 when it can be placed, 3 when it cannot (the verdict is printed either
    way), 1 when the broker refused the request, 2 when FILE.json cannot be read."""
    body = read_body(body_file)
    with session(url, timeout) as client:
        plan = client.post(f"{VCLUSTERS}/explain", body)["plan"]
    if json_out:
        emit_json({"plan": plan})
    else:
        print_plan(plan)
    if not plan.get("placeable"):
        raise typer.Exit(UNPLACEABLE)
