"""The policy file's life: refused at start-up when invalid, checked offline by
``federator policy validate``, reloaded by the API and by SIGHUP, and an invalid reload
changes nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from federator.config import Settings
from tests.conftest import LiveBroker, admin_headers, make_settings, write_policy
from tests.functional.support import (
    FEDERATOR,
    az,
    boot_settled,
    federator,
    overflow_policy,
    three_zones,
    write_broker_toml,
)

GOOD = overflow_policy("good-1")


def _with(doc: dict[str, Any], path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    """A copy of ``doc`` with the value at ``path`` replaced."""
    out: dict[str, Any] = json.loads(json.dumps(doc))
    node: Any = out
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return out


RAM = ("zones", "local", "thresholds", "ram_percent")
# case -> (policy file text, what stderr must name)
BAD: dict[str, tuple[str, list[str]]] = {
    "invalid-json": ('{"version": "v",\n  "zones": {"local" {}}}', ["$ (line 2, column 21)"]),
    "unknown-key": (
        json.dumps(_with(GOOD, ("zones", "local", "treshold"), {})),
        ["$.zones.local.treshold", "unknown key"],
    ),
    "wrong-type": (
        json.dumps(_with(GOOD, ("allow_explicit_virtual_az",), "yes")),
        ["$.allow_explicit_virtual_az"],
    ),
    "threshold-101": (
        json.dumps(_with(GOOD, (*RAM, "high"), 101)),
        ["$.zones.local.thresholds.ram_percent.high"],
    ),
    "low-above-high": (
        json.dumps(_with(GOOD, (*RAM, "low"), 80)),
        ["$.zones.local.thresholds.ram_percent", "low water 80 is above high water 75"],
    ),
    "unknown-overflow-target": (
        json.dumps(_with(GOOD, ("zones", "local", "overflow"), ["cloud-a", "cloud-z"])),
        ["$.zones.local.overflow[1]", "'cloud-z'"],
    ),
    # Keys are echoed in messages: text that looks like console markup stays as written.
    "markup-like-key": (
        json.dumps(_with(GOOD, ("zones", "local", "[/x]"), 1)),
        ['$.zones.local["[/x]"]', "unknown key '[/x]'"],
    ),
    "unknown-flavor-in-rule": (
        json.dumps(
            _with(
                GOOD,
                ("rules",),
                [{"name": "r", "action": "deny", "match": {"flavors": ["m1.small", "m9.huge"]}}],
            )
        ),
        ["$.rules[0].match.flavors[1]", "'m9.huge'"],
    ),
}


def _config(root: Path, policy_text: str) -> Path:
    """A broker configuration in ``root`` whose policy file holds ``policy_text``."""
    root.mkdir(parents=True, exist_ok=True)
    policy = root / "policy.json"
    policy.write_text(policy_text, encoding="utf-8")
    return write_broker_toml(
        root / "federator.toml", data_dir=root / "data", policy_file=policy, zones=three_zones()
    )


@pytest.fixture(scope="module")
def refused(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Every bad case run through ``federator serve`` and ``federator policy validate``,
    in parallel (each is a fresh process)."""
    root = tmp_path_factory.mktemp("bad-policies")

    def run(case: str) -> dict[str, Any]:
        config = _config(root / case, BAD[case][0])
        serve = federator("serve", "--config", config, "--port", "0", timeout=60)
        validate = federator(
            "policy", "validate", "--config", config, config.parent / "policy.json"
        )
        return {"serve": serve, "validate": validate, "data": config.parent / "data"}

    with ThreadPoolExecutor(max_workers=len(BAD)) as pool:
        return dict(zip(BAD, pool.map(run, BAD), strict=True))


@pytest.mark.parametrize("case", list(BAD))
def test_serve_refuses_a_bad_policy(refused: dict[str, dict[str, Any]], case: str) -> None:
    serve: subprocess.CompletedProcess[str] = refused[case]["serve"]
    assert serve.returncode != 0, serve.stderr
    assert "refusing to start" in serve.stderr
    for needle in BAD[case][1]:
        assert needle in serve.stderr, serve.stderr
    assert "Traceback" not in serve.stderr


@pytest.mark.parametrize("case", list(BAD))
def test_validate_lists_the_problem(refused: dict[str, dict[str, Any]], case: str) -> None:
    validate: subprocess.CompletedProcess[str] = refused[case]["validate"]
    assert validate.returncode == 1, validate.stdout + validate.stderr
    for needle in BAD[case][1]:
        assert needle in validate.stderr, validate.stderr
    assert "1 of 1 file(s) invalid" in validate.stderr


def test_validate_reports_every_problem_and_passes_good_files(tmp_path: Path) -> None:
    config = _config(tmp_path, json.dumps(GOOD))
    many = _with(_with(GOOD, (*RAM, "high"), 101), ("zones", "local", "treshold"), {})
    many["rules"] = [{"name": "r", "action": "deny", "match": {"flavors": ["m9.huge"]}}]
    bad = write_policy(tmp_path / "many.json", many)
    good = tmp_path / "policy.json"

    ok = federator("policy", "validate", "--config", config, good)
    assert ok.returncode == 0, ok.stderr
    assert "valid (version good-1)" in ok.stdout

    both = federator("policy", "validate", "--config", config, good, bad)
    assert both.returncode == 1
    lines = [line for line in both.stderr.splitlines() if line.startswith(str(bad))]
    paths = sorted(line.split(": ")[1] for line in lines)
    assert paths == [
        "$.rules[0].match.flavors[0]",
        "$.zones.local.thresholds.ram_percent.high",
        "$.zones.local.treshold",
    ]
    assert "1 of 2 file(s) invalid" in both.stderr


# --- reload through the API ---------------------------------------------------------------

Factory = Callable[[Settings], LiveBroker]
TINY_TO_B = {
    "name": "tiny-b",
    "action": "restrict",
    "azs": ["cloud-b"],
    "match": {"flavors": ["1"]},
}


def _version(client: httpx.Client, url: str) -> str:
    r = client.get(f"{url}/federator/v1/policy")
    assert r.status_code == 200, r.text
    version: str = r.json()["policy"]["version"]
    return version


def test_api_reload_keeps_the_old_policy_when_the_new_one_is_bad(
    tmp_path: Path, live_broker_factory: Factory
) -> None:
    old = overflow_policy("old", rules=[TINY_TO_B])
    live = live_broker_factory(make_settings(tmp_path, zones=three_zones(), policy=old))
    policy_file = tmp_path / "policy.json"
    reload_url = f"{live.url}/federator/v1/policy/reload"

    write_policy(policy_file, _with(overflow_policy("broken"), (*RAM, "high"), 101))
    r = live.client.post(reload_url)
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["code"] == "federator.policy.invalid"
    assert [p["path"] for p in body["problems"]] == ["$.zones.local.thresholds.ram_percent.high"]
    assert r.headers["x-openstack-request-id"] == body["request_id"]
    assert _version(live.client, live.url) == "old"
    tiny = boot_settled(live, "tiny", flavor="m1.tiny")
    assert az(tiny) == "cloud-b"
    assert tiny["federator:placement"]["policy_version"] == "old"

    write_policy(policy_file, overflow_policy("new"))
    r = live.client.post(reload_url)
    assert r.status_code == 200, r.text
    assert r.json()["reload"] == {**r.json()["reload"], "changed": True, "version": "new"}
    assert _version(live.client, live.url) == "new"
    tiny = boot_settled(live, "tiny-2", flavor="m1.tiny")
    assert az(tiny) == "local"
    assert tiny["federator:placement"]["policy_version"] == "new"

    again = live.client.post(reload_url)
    assert again.status_code == 200
    assert again.json()["reload"]["changed"] is False


# --- SIGHUP on the real daemon ----------------------------------------------------------


def _wait_for(what: str, check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    """``federator serve`` on a free port: (process, base URL, its log file)."""
    config = _config(tmp_path, json.dumps(overflow_policy("hup-1")))
    ready = tmp_path / "ready"
    log = tmp_path / "serve.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [FEDERATOR, "serve", "--config", config, "--port", "0", "--ready-file", ready],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        _wait_for("the ready file", lambda: ready.exists() or proc.poll() is not None)
        assert proc.poll() is None, log.read_text()
        yield proc, f"http://127.0.0.1:{int(ready.read_text())}", log
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_sighup_reloads_a_good_policy_and_ignores_a_bad_one(
    tmp_path: Path, daemon: tuple[subprocess.Popen[bytes], str, Path]
) -> None:
    proc, url, log = daemon
    policy_file = tmp_path / "policy.json"
    with httpx.Client(timeout=10, headers=admin_headers(url, tmp_path / "data")) as client:
        assert _version(client, url) == "hup-1"

        write_policy(policy_file, overflow_policy("hup-2"))
        os.kill(proc.pid, signal.SIGHUP)
        _wait_for("policy hup-2", lambda: _version(client, url) == "hup-2")

        write_policy(policy_file, _with(overflow_policy("hup-3"), ("zones", "local", "x"), 1))
        os.kill(proc.pid, signal.SIGHUP)
        _wait_for("the rejection in the log", lambda: "$.zones.local.x" in log.read_text())
        assert proc.poll() is None
        assert _version(client, url) == "hup-2"
        health = client.get(f"{url}/federator/v1/health").json()
        assert health["policy_version"] == "hup-2"

        body = {"server": {"name": "after-hup", "flavorRef": "m1.small", "imageRef": "cirros"}}
        r = client.post(f"{url}/compute/v2.1/servers", json=body)
        assert r.status_code == 202, r.text
        show = f"{url}/compute/v2.1/servers/{r.json()['server']['id']}"
        _wait_for("the boot", lambda: client.get(show).json()["server"]["status"] != "BUILD")
        server = client.get(show).json()["server"]
        assert server["status"] == "ACTIVE"
        assert server["federator:policy_version"] == "hup-2"

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, log.read_text()
