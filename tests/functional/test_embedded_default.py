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


def ebs_volumes(endpoint: str) -> list[dict[str, Any]]:
    """The stand-in's EBS volumes that carry a broker volume uuid."""
    client = boto3.session.Session(
        aws_access_key_id="any", aws_secret_access_key="any", region_name="us-east-1"
    ).client("ec2", endpoint_url=endpoint)
    try:
        found: list[dict[str, Any]] = client.describe_volumes(
            Filters=[{"Name": "tag-key", "Values": ["federator:volume-uuid"]}]
        )["Volumes"]
        return found
    finally:
        client.close()


def test_the_readme_volume_walk(embedded_broker: LiveBroker) -> None:
    """Local volumes until the pools pass 75%, then EBS in aws-standin; attachments only
    within an availability zone; no delete while attached."""
    live = embedded_broker
    endpoint = live.client.get(f"{live.url}/federator/v1/zones/aws-standin").json()["zone"][
        "stand_in"
    ]["endpoint"]

    def cli(*args: str) -> Any:
        return CliRunner().invoke(app, [*args, "--url", live.url], env=live.os_env())

    web = boot_settled(live, "web-1")
    for n in range(3):  # fill local to its 75% mark; the burst server goes to aws-standin
        boot_settled(live, f"large-{n}", flavor="m1.large")
    burst = boot_settled(live, "burst-1")
    assert (az(web), az(burst)) == ("local", "aws-standin")

    made = cli("volume", "create", "data", "--size", "1", "--wait")
    assert made.exit_code == 0, made.output
    assert "│ local " in made.stdout
    attached = cli("volume", "attach", "web-1", "data", "--wait")
    assert attached.exit_code == 0 and "as /dev/vdb" in attached.stdout, attached.output
    refused = cli("volume", "delete", "data")
    assert refused.exit_code == 1 and "HTTP 400" in refused.output
    assert cli("volume", "detach", "web-1", "data", "--wait").exit_code == 0
    assert cli("volume", "delete", "data", "--wait").exit_code == 0

    for n in range(3):
        assert cli("volume", "create", f"fill-{n}", "--size", "100", "--wait").exit_code == 0
    ebs = cli("volume", "create", "ebs", "--size", "1", "--wait", "--json")
    assert ebs.exit_code == 0, ebs.output
    volume = json.loads(ebs.stdout)["volume"]
    assert volume["availability_zone"] == "aws-standin"
    assert cli("volume", "attach", "burst-1", "ebs", "--wait").exit_code == 0
    (found,) = ebs_volumes(endpoint)
    (instance,) = ec2_instances(endpoint, burst["id"])
    assert found["VolumeId"] == volume["provider_id"]
    assert (found["Size"], found["AvailabilityZone"]) == (
        1,
        instance["Placement"]["AvailabilityZone"],
    )
    assert [(a["InstanceId"], a["Device"]) for a in found["Attachments"]] == [
        (instance["InstanceId"], "/dev/sdb")
    ]
    assert cli("volume", "detach", "burst-1", "ebs", "--wait").exit_code == 0
    across = cli("volume", "attach", "web-1", "ebs")
    assert across.exit_code == 1
    assert "'local'" in across.output and "'aws-standin'" in across.output
    assert ebs_volumes(endpoint)[0]["Attachments"] == []
    gone = cli("volume", "delete", "ebs", "fill-0", "fill-1", "fill-2", "--wait")
    assert gone.exit_code == 0, gone.output
    assert ebs_volumes(endpoint) == []
