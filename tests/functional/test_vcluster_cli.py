"""``federator vcluster``, end to end against a live broker with one local sim zone of four
hosts: the real command in a subprocess for the create-and-wait run (on a pipe and on a
terminal), in process for the rest; outputs and errors, not just exit codes."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from federator.cli.main import app
from tests.conftest import LiveBroker
from tests.functional import vcluster_support as vc
from tests.functional.support import FEDERATOR, federator
from tests.functional.test_cli import cli, field, ok, refused, row, runner
from tests.functional.test_vclusters import local_only

Factory = Callable[..., LiveBroker]
# ``explain``'s exit status when the cluster cannot be placed.
UNPLACEABLE = 3
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture
def live(tmp_path: Path, live_broker_factory: Factory) -> LiveBroker:
    return live_broker_factory(local_only(tmp_path))


def write(tmp_path: Path, name: str, body: Any) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(body, indent=2), encoding="utf-8")
    return path


def five_apart() -> dict[str, Any]:
    """Five servers that must each have a host of their own: four hosts cannot take them."""
    names = [f"s{i}" for i in range(1, 6)]
    return {"vcluster": {
        "name": "five",
        "instances": [vc.server(n) for n in names],
        "groupings": [vc.grouping("spread", "anti-affinity", *names)],
    }}  # fmt: skip


def with_third_server() -> dict[str, Any]:
    """Use case 2 plus db-server-3, kept off the other servers' hosts by group-3."""
    body = vc.use_case_2()
    inner = body["vcluster"]
    inner["instances"].append(vc.server("db-server-3"))
    group_3 = next(g for g in inner["groupings"] if g["name"] == "group-3")
    group_3["membersRef"].append("db-server-3")
    return body


def member_line(m: dict[str, Any]) -> str:
    """The progress line ``--wait`` prints for a member in the state ``m``."""
    line = f"  {m['name']} ({m['type']}): {m['status']}, availability_zone=local, host={m['host']}"
    return line + (f", pool={m['pool']}" if m["type"] == "volume" else "")


def api_clusters(live: LiveBroker) -> list[dict[str, Any]]:
    r = live.client.get(f"{live.compute}/vclusters")
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()["vclusters"]
    return found


def test_create_wait_names_every_member_and_host_then_list_and_show(
    live: LiveBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in live.os_env().items():
        monkeypatch.setenv(key, value)
    body = write(tmp_path, "db.json", vc.use_case_2())
    made = federator("vcluster", "create", body, "--wait", "--wait-timeout", "60")
    assert made.returncode == 0, made.stdout + made.stderr
    assert made.stderr == ""
    [c] = api_clusters(live)
    cid = c["id"]
    assert c["status"] == "ACTIVE"
    lines = made.stdout.splitlines()
    assert lines[0] == f"vcluster db ({cid}): BUILD"
    # Each member first as the create's answer left it, in the body's order.
    firsts = [f"  {n} ({t}): " for n, t in (
        ("db-server-1", "server"), ("db-vol-1", "volume"), ("db-server-2", "server"),
        ("db-vol-2", "volume"),
    )]  # fmt: skip
    assert [line[: len(first)] for line, first in zip(lines[1:5], firsts, strict=True)] == firsts
    assert f"vcluster db ({cid}): ACTIVE" in lines
    m = vc.members(c)
    hosts = {m["db-server-1"]["host"], m["db-server-2"]["host"]}
    assert len(hosts) == 2 and all(h.startswith("local-host-") for h in hosts)
    for member in c["instances"]:
        # The final state of each member was reported, host and pool included.
        assert member_line(member) in lines, made.stdout
        assert row(made.stdout, member["id"])[:6] == [
            member["name"], member["type"], member["id"], member["status"], "local",
            member["host"],
        ]  # fmt: skip
    assert field(made.stdout, "status") == "ACTIVE"
    vol = row(made.stdout, m["db-vol-1"]["id"])
    assert vol[6:] == [m["db-vol-1"]["pool"], "db-server-1"]  # attached to, by name

    assert row(ok(live, "vcluster", "list"), cid) == [cid, "db", "ACTIVE", "2", "2", "admin", "-"]
    assert [x["id"] for x in json.loads(ok(live, "vcluster", "list", "--json"))] == [cid]

    shown = json.loads(ok(live, "vcluster", "show", "db", "--json"))["vcluster"]  # by name
    assert shown["id"] == cid
    assert shown["instances"] == c["instances"]
    table = ok(live, "vcluster", "show", cid)
    assert field(table, "name") == "db"
    assert row(table, m["db-vol-2"]["id"])[3:] == [
        "in-use", "local", m["db-vol-2"]["host"], m["db-vol-2"]["pool"], "db-server-2",
    ]  # fmt: skip
    assert row(table, "group-3")[1:] == ["anti-affinity", "host", "db-server-1, db-server-2"]
    assert "Fault" not in table


def test_create_wait_on_a_terminal_draws_it_live_and_ends_with_the_table(
    live: LiveBroker, tmp_path: Path
) -> None:
    body = write(tmp_path, "web.json", vc.use_case_1())
    leader, follower = pty.openpty()
    env = {**os.environ, **live.os_env(), "COLUMNS": "200", "TERM": "xterm"}
    proc = subprocess.Popen(
        [str(FEDERATOR), "vcluster", "create", str(body), "--wait"],
        stdin=subprocess.DEVNULL, stdout=follower, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    os.close(follower)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.5)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        status = proc.wait(timeout=max(deadline - time.monotonic(), 1))
    finally:
        os.close(leader)
        if proc.poll() is None:
            proc.kill()
    raw = b"".join(chunks).decode("utf-8", "replace")
    assert proc.stderr is not None
    assert status == 0, raw + proc.stderr.read().decode()
    [c] = api_clusters(live)
    assert c["status"] == "ACTIVE"
    screen = _ANSI.sub("", raw)
    assert "\x1b[2K" in raw  # lines erased: drawn in place, not printed one after another
    assert f"vcluster web ({c['id']}): BUILD" in screen  # the live view meanwhile
    assert "  web-server (server): " not in screen  # no plain progress lines
    # What stays once the live view is gone: the final cluster, as ``show`` prints it.
    final = screen.split("Virtual cluster web")[-1]
    assert field(final, "status") == "ACTIVE"
    for member in c["instances"]:
        assert member["host"]
        assert row(final, member["id"])[:6] == [
            member["name"], member["type"], member["id"], member["status"], "local",
            member["host"],
        ]  # fmt: skip


def test_update_adds_a_server_then_delete_wait_removes_everything(
    live: LiveBroker, tmp_path: Path
) -> None:
    cid = vc.create(live, vc.use_case_2())
    assert vc.wait(live, cid)["status"] == "ACTIVE"
    # Just the inner object: the command wraps it.
    bigger = write(tmp_path, "bigger.json", with_third_server()["vcluster"])
    out = ok(live, "vcluster", "update", "db", str(bigger), "--wait")
    after = vc.show(live, cid)
    assert after["status"] == "ACTIVE"
    m = vc.members(after)
    third = m["db-server-3"]
    assert third["status"] == "ACTIVE"
    assert third["host"] not in {m["db-server-1"]["host"], m["db-server-2"]["host"]}
    assert member_line(third) in out.splitlines()
    assert row(out, third["id"])[:6] == [
        "db-server-3", "server", third["id"], "ACTIVE", "local", third["host"],
    ]  # fmt: skip
    assert field(out, "servers") == "3"

    # A change that cannot be placed is refused and nothing changes.
    too_many = write(tmp_path, "five.json", five_apart())
    conflict = refused(live, "vcluster", "update", cid, str(too_many))
    assert conflict.startswith(
        f"error: HTTP 409 federator.resource.conflict: vcluster {cid}: the update cannot be "
        "placed: grouping 'spread'"
    )
    assert vc.members(vc.show(live, cid)).keys() == m.keys()

    ids = {x["id"] for x in after["instances"]}
    gone = ok(live, "vcluster", "delete", cid, "--wait")
    lines = gone.splitlines()
    assert lines[0] == f"vcluster db ({cid}): DELETING"
    assert lines[-2:] == [f"vcluster db ({cid}): deleted", f"vcluster db ({cid}) deleted"]
    assert live.client.get(f"{live.compute}/vclusters/{cid}").status_code == 404
    servers = live.client.get(f"{live.compute}/servers").json()["servers"]
    assert not ids & {s["id"] for s in servers}
    assert json.loads(ok(live, "vcluster", "list", "--json")) == []
    missing = refused(live, "vcluster", "delete", cid)
    assert missing.strip() == (
        f"error: HTTP 404 federator.resource.not_found: vcluster {cid} could not be found"
    )


def test_create_wait_ending_in_error_prints_the_fault_and_exits_1(
    live: LiveBroker, tmp_path: Path
) -> None:
    body = write(tmp_path, "five.json", five_apart())
    failed = cli(live, "vcluster", "create", str(body), "--wait")
    assert failed.exit_code == 1, failed.output
    [c] = api_clusters(live)
    assert c["status"] == "ERROR"
    fault = c["fault"]
    assert fault["code"] == "federator.placement.group_policy"
    assert field(failed.stdout, "status") == "ERROR"
    assert field(failed.stdout, "code") == fault["code"]
    assert " ".join(failed.stderr.split()) == (
        f"error: vcluster five ({c['id']}) is ERROR: {fault['code']}: {fault['message']} "
        f"({'; '.join(fault['details'])})"
    )
    assert "blocked by spread" in fault["details"]
    assert row(ok(live, "vcluster", "list"), c["id"])[2:] == [
        "ERROR", "5", "0", "admin", fault["code"],
    ]  # fmt: skip
    # Without --wait, create answers at once and exits 0 (the build has not failed yet).
    accepted = ok(live, "vcluster", "create", str(body))
    assert field(accepted, "status") == "BUILD"


def test_wait_gives_up_after_the_wait_timeout_naming_each_member(
    tmp_path: Path, live_broker_factory: Factory
) -> None:
    live = live_broker_factory(local_only(tmp_path, boot_delay_ms=2000))
    body = write(tmp_path, "web.json", vc.use_case_1())
    slow = cli(live, "vcluster", "create", str(body), "--wait", "--wait-timeout", "1")
    assert slow.exit_code == 1, slow.output
    [c] = api_clusters(live)
    # The server is still booting; the volume may be made meanwhile or not.
    said = " ".join(slow.stderr.split())
    head = (
        f"error: timed out after 1s waiting for vcluster web ({c['id']}) to settle; it is "
        "BUILD; members: web-server BUILD, web-vol "
    )
    assert said.startswith(head), said
    assert said.removeprefix(head) in {"BUILD", "creating", "available"}
    assert "Traceback" not in slow.output
    assert vc.wait(live, c["id"])["status"] == "ACTIVE"  # the build went on regardless


def test_explain_gives_each_place_or_the_blocking_grouping(
    live: LiveBroker, tmp_path: Path
) -> None:
    fits = cli(live, "vcluster", "explain", str(write(tmp_path, "db.json", vc.use_case_2())))
    assert fits.exit_code == 0, fits.output
    lines = fits.stdout.splitlines()
    assert lines[0] == "vcluster db: placeable"
    assert lines[1].startswith("zones considered: local; candidates tried: ")
    s1, v1 = row(fits.stdout, "db-server-1"), row(fits.stdout, "db-vol-1")
    s2, v2 = row(fits.stdout, "db-server-2"), row(fits.stdout, "db-vol-2")
    assert s1[:4] == ["db-server-1", "server", "local", "local"]
    assert s1[4].startswith("local-host-") and s1[5] == "-"
    assert v1[4] == s1[4] and v2[4] == s2[4] != s1[4]  # the groupings, kept
    assert v1[5] == f"{v1[4]}/volumes"

    unplaceable = write(tmp_path, "five.json", five_apart())
    blocked = cli(live, "vcluster", "explain", str(unplaceable))
    assert blocked.exit_code == UNPLACEABLE, blocked.output
    assert blocked.stdout.splitlines()[0] == "vcluster five: cannot be placed now"
    assert field(blocked.stdout, "code") == "federator.placement.group_policy"
    assert field(blocked.stdout, "blocked by") == "spread"
    assert field(blocked.stdout, "message").startswith("grouping 'spread' (anti-affinity")
    assert "needs 5 places" in blocked.stdout
    as_json = cli(live, "vcluster", "explain", str(unplaceable), "--json")
    assert as_json.exit_code == UNPLACEABLE
    plan = json.loads(as_json.stdout)["plan"]
    assert (plan["placeable"], plan["fault"]["blocked_by"]) == (False, "spread")
    assert api_clusters(live) == []  # nothing was made


def test_invalid_body_shows_the_api_400_naming_the_json_path(
    live: LiveBroker, tmp_path: Path
) -> None:
    bad = {"vcluster": {"name": "x",
                        "instances": [vc.server("a"), vc.volume("v", size=0)],
                        "groupings": [vc.grouping("g", "bogus", "a", "nobody")]}}  # fmt: skip
    err = refused(live, "vcluster", "create", str(write(tmp_path, "bad.json", bad)))
    lines = err.splitlines()
    assert lines[0].startswith("error: HTTP 400 federator.request.invalid: vcluster.")
    assert "  vcluster.groupings[0].membersRef[1]: no instance named 'nobody'" in lines
    assert any(
        line.startswith("  vcluster.groupings[0].spec.rule: must be one of ") for line in lines
    )
    assert any(line.startswith("  vcluster.instances[1].spec.size: ") for line in lines)
    assert "Traceback" not in err
    assert api_clusters(live) == []
    explained = refused(live, "vcluster", "explain", str(tmp_path / "bad.json"))
    assert explained.splitlines()[0] == lines[0]
    assert refused(live, "vcluster", "show", "nope").strip() == (
        "error: HTTP 404 federator.resource.not_found: vcluster nope could not be found"
    )


def test_unreadable_files_are_named_with_the_json_problem(tmp_path: Path) -> None:
    """The file is read before anything is sent: no broker is needed, exit status 2."""
    url = "http://127.0.0.1:9"  # nothing listens: a request would fail differently
    broken = tmp_path / "broken.json"
    broken.write_text('{"vcluster": {\n  "name": "db",\n  "instances": [,]\n}}\n')
    for args in (
        ("create", str(broken)),
        ("update", "some-id", str(broken)),
        ("explain", str(broken)),
    ):
        result = runner.invoke(app, ["vcluster", *args, "--url", url])
        assert result.exit_code == 2, result.output
        assert result.stderr.strip() == (
            f"error: {broken}: invalid JSON at line 3, column 17: Expecting value"
        )
    missing = runner.invoke(app, ["vcluster", "create", str(tmp_path / "nope.json"), "--url", url])
    assert (missing.exit_code, missing.stderr.strip()) == (
        2,
        f"error: {tmp_path / 'nope.json'}: no such file",
    )
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    array = runner.invoke(app, ["vcluster", "create", str(listed), "--url", url])
    assert array.exit_code == 2
    assert f"error: {listed}: expected a JSON object" in array.stderr
    assert "not an array" in array.stderr
    piped = runner.invoke(app, ["vcluster", "explain", "-", "--url", url], input="{oops")
    assert piped.exit_code == 2
    assert piped.stderr.strip() == (
        "error: standard input: invalid JSON at line 1, column 2: Expecting property name "
        "enclosed in double quotes"
    )
