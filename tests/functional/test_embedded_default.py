"""The embedded default as a new user meets it: bursting into an EC2 API with no account.

``aws-standin`` is the aws driver against the in-process moto server that
``federator.embedded`` starts; without moto it is a simulated zone of the same name.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from typer.testing import CliRunner

from federator.cli.main import app
from federator.config import Settings
from tests.conftest import LiveBroker, admin_headers, make_settings, read_openrc
from tests.functional.support import FEDERATOR, az, boot_settled, delete_settled

pytestmark = pytest.mark.slow
BLOCK_MOTO = "import sys; sys.modules['moto.server'] = None; "


def ec2_instances(endpoint: str, uuid: str) -> list[dict[str, Any]]:
    """The stand-in's instances tagged with broker uuid ``uuid``, through its EC2 API."""
    client = boto3.session.Session(
        aws_access_key_id="any", aws_secret_access_key="any", region_name="us-east-1"
    ).client("ec2", endpoint_url=endpoint)
    try:
        pages = client.get_paginator("describe_instances").paginate(
            Filters=[{"Name": "tag:federator:instance-uuid", "Values": [uuid]}]
        )
        return [i for p in pages for r in p["Reservations"] for i in r["Instances"]]
    finally:
        client.close()


@pytest.fixture
def embedded_broker(
    tmp_path: Path,
    live_broker_factory: Callable[[Settings], LiveBroker],
    monkeypatch: pytest.MonkeyPatch,
) -> LiveBroker:
    monkeypatch.delenv("FEDERATOR_CONFIG", raising=False)
    return live_broker_factory(make_settings(tmp_path, embedded=True))


def test_bursts_land_in_the_ec2_stand_in(embedded_broker: LiveBroker) -> None:
    live = embedded_broker
    shown = live.client.get(f"{live.url}/federator/v1/zones/aws-standin").json()["zone"]
    assert shown["driver"] == "aws"
    assert shown["label"] == "AWS EC2 (in-process moto stand-in, no account needed)"
    endpoint = shown["stand_in"]["endpoint"]
    assert endpoint.startswith("http://127.0.0.1:")
    local = live.client.get(f"{live.url}/federator/v1/zones/local").json()["zone"]
    assert local["stand_in"] is None
    printed = CliRunner().invoke(
        app, ["zone", "show", "aws-standin", "--url", live.url], env=live.os_env()
    )
    assert printed.exit_code == 0, printed.output
    assert f"stand-in endpoint │ {endpoint}" in printed.stdout

    # Three m1.large fill local to its 75% mark; the next boot bursts to aws-standin.
    for n in range(3):
        assert az(boot_settled(live, f"large-{n}", flavor="m1.large")) == "local"
    burst = boot_settled(live, "burst")
    assert (az(burst), burst["status"]) == ("aws-standin", "ACTIVE")

    (instance,) = ec2_instances(endpoint, burst["id"])
    tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
    assert instance["State"]["Name"] == "running"
    assert instance["InstanceType"] == "t3.micro"
    assert (tags["Name"], tags["federator:zone"]) == ("burst", "aws-standin")

    delete_settled(live, burst["id"])
    assert [i["State"]["Name"] for i in ec2_instances(endpoint, burst["id"])] == ["terminated"]


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path
    headers: dict[str, str] = field(default_factory=dict)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(40)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """``federator serve`` with no configuration, in an empty directory, on a free port."""
    started: list[Served] = []

    def start(*prefix: str) -> Served:
        ready, log = tmp_path / "ready", tmp_path / "serve.log"
        command = [*prefix, "serve", "--port", "0", "--ready-file", str(ready)]
        env = {k: v for k, v in os.environ.items() if k != "FEDERATOR_CONFIG"}
        with log.open("wb") as out:
            proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=out, stderr=out)
        started.append(Served(proc, "", log))
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        root = f"http://127.0.0.1:{int(ready.read_text())}"
        started[-1].url = f"{root}/federator/v1"
        started[-1].headers = admin_headers(root, tmp_path / "federator-data")
        return started[-1]

    yield start
    for served in started:
        if served.proc.poll() is None:
            served.proc.kill()
            served.proc.wait(10)


def test_serve_starts_the_stand_in_and_stops_it_on_sigterm(
    serve: Callable[..., Served], tmp_path: Path
) -> None:
    served = serve(str(FEDERATOR))
    zone = httpx.get(f"{served.url}/zones/aws-standin", headers=served.headers, timeout=10)
    endpoint = zone.json()["zone"]["stand_in"]["endpoint"]
    port = int(endpoint.rsplit(":", 1)[1])
    socket.create_connection(("127.0.0.1", port), timeout=2).close()
    data = tmp_path / "federator-data"
    assert (data / "api.sqlite").exists()

    # The admin created on first start: its openrc names the bound port, both files are
    # private, and the password appears in neither the log nor identity.json.
    openrc = read_openrc(data / "admin-openrc")
    root = served.url.removesuffix("/federator/v1")
    assert openrc["OS_AUTH_URL"] == f"{root}/identity"
    assert openrc["FEDERATOR_URL"] == root
    assert (openrc["OS_USERNAME"], openrc["OS_PROJECT_NAME"]) == ("admin", "admin")
    assert openrc["OS_IDENTITY_API_VERSION"] == "3"
    for name in ("admin-openrc", "identity.json"):
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o600
    assert openrc["OS_PASSWORD"] not in (data / "identity.json").read_text()
    listed = subprocess.run(
        [FEDERATOR, "server", "list", "--json"],
        env={**os.environ, **openrc},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []
    assert httpx.get(f"{served.url}/zones", timeout=10).status_code == 401

    assert served.stop() == 0
    log = served.log.read_text()
    assert f"its credentials are in {Path('federator-data') / 'admin-openrc'}" in log
    assert openrc["OS_PASSWORD"] not in log
    assert "zone aws-standin: EC2 stand-in (moto " in log
    assert f"zone aws-standin: EC2 stand-in at {endpoint} stopped" in log
    assert "Traceback" not in log
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2)


def test_serve_without_moto_falls_back_to_a_simulated_zone(
    serve: Callable[..., Served],
) -> None:
    served = serve(sys.executable, "-c", BLOCK_MOTO + "from federator.cli.main import main; main()")
    zone = httpx.get(f"{served.url}/zones/aws-standin", headers=served.headers, timeout=10)
    zone = zone.json()["zone"]
    assert (zone["driver"], zone["kind"], zone["stand_in"]) == ("sim", "virtual", None)
    assert served.stop() == 0
    log = served.log.read_text()
    assert "zone aws-standin: moto is not installed" in log
    assert "install federator[embedded]" in log
