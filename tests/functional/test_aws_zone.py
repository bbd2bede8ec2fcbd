"""The AWS zone end to end: the broker's HTTP API in front of EC2 served by moto over HTTP.

A local zone of 4 sim hosts x 8 GiB (RAM high water 75%, low 50%) overflows to
``aws-east`` (the ``aws`` driver, pointed at a ThreadedMotoServer on 127.0.0.1) and then
to ``cloud-b`` (a sim zone). The driver does not wait for EC2 (``wait_timeout = 0``), so
a burst instance is recorded BUILD while EC2 still says ``pending`` and reaches ACTIVE
through the monitor's sync job, which the tests call directly. What EC2 holds is read
back with the tests' own boto3 client.

What moto cannot do (capacity, throttling) is injected server side; rejected
credentials are moto's own IAM check (``enable_iam_authentication``), so the request
really is refused with AuthFailure over HTTP.
"""

from __future__ import annotations

import json
import logging
import uuid as uuidlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from moto.core.authorization import enable_iam_authentication
from moto.ec2.models.instances import InstanceBackend
from typer.testing import CliRunner

from drivers.aws.driver import AwsDriver
from federator.broker import Broker
from federator.cli.main import app as cli
from federator.config import Settings, load_settings
from federator.exception import ConfigError
from federator.monitor import jobs
from federator.monitor.orphans import find_orphans
from federator.monitor.sync import SyncReport, sync_zone
from tests.conftest import LiveBroker, make_settings, sim_zone
from tests.functional.support import GIB, all_servers, az, fault_reason, zones
from tests.support_moto import (
    FAKE_ENV,
    REGION,
    Network,
    fail_run_instances,
    make_network,
    moto_endpoint,
    no_backoff,
    reset_moto_server,
    strict_moto,
    zone_options,
)
from tests.support_moto import (
    test_client as moto_client,
)

Factory = Callable[..., LiveBroker]

AWS = "aws-east"
SIM = "cloud-b"
BROKER_ID = "e2e-broker"
PROJECT = "proj-burst"
BROKER = "/federator/v1"
# Instance types for the catalog's flavors; a flavor added to the defaults later gets
# the fallback, so the catalog check at start-up keeps passing.
INSTANCE_TYPES = {"m1.tiny": "t3.nano", "m1.small": "t3.micro", "m1.medium": "t3.medium"}
FALLBACK_TYPE = "m5.large"
TAGS = ("federator:instance-uuid", "federator:broker-id", "federator:zone", "federator:project")


# --- EC2 on moto -------------------------------------------------------------------------


@dataclass
class Ec2:
    """The moto server, the tests' own client to it, and what the zone launches into."""

    endpoint: str
    client: Any
    network: Network
    amis: dict[str, str]  # catalog image name -> AMI id
    flavor_map: dict[str, str]

    def all_instances(self) -> list[dict[str, Any]]:
        """Every instance EC2 knows, terminated ones included."""
        pages = self.client.get_paginator("describe_instances").paginate()
        return [i for p in pages for r in p["Reservations"] for i in r["Instances"]]

    def instance(self, uuid: str) -> dict[str, Any]:
        """The one instance tagged with broker uuid ``uuid``, whatever its state."""
        found = [i for i in self.all_instances() if tags(i).get(TAGS[0]) == uuid]
        assert len(found) == 1, f"{len(found)} EC2 instances carry uuid {uuid}"
        return found[0]

    def state(self, uuid: str) -> str:
        name: str = self.instance(uuid)["State"]["Name"]
        return name

    def snapshot(self, *, leave_out: str = "") -> dict[str, tuple[Any, ...]]:
        """What the tests compare before and after: state, type, AMI, subnet, groups, tags."""
        return {
            i["InstanceId"]: (
                i["State"]["Name"],
                i["InstanceType"],
                i["ImageId"],
                i.get("SubnetId"),
                sorted(g["GroupId"] for g in i.get("SecurityGroups", [])),
                sorted(tags(i).items()),
            )
            for i in self.all_instances()
            if i["InstanceId"] != leave_out
        }


def tags(instance: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in instance.get("Tags", [])}


@pytest.fixture
def ec2(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Ec2]:
    """A wiped moto server with a VPC, two subnets, a security group and one AMI per
    catalog image; fake credentials in the environment; botocore retries without sleeps."""
    for name, value in FAKE_ENV.items():
        monkeypatch.setenv(name, value)
    no_backoff(monkeypatch)
    endpoint = moto_endpoint()
    catalog = load_settings(None, data_dir=tmp_path / "catalog")
    with strict_moto():
        reset_moto_server(endpoint)
        client = moto_client(endpoint)
        network = make_network(client)
        amis = {
            image.name: client.register_image(Name=image.name, RootDeviceName="/dev/xvda")[
                "ImageId"
            ]
            for image in catalog.images
        }
        flavor_map = {f.name: INSTANCE_TYPES.get(f.name, FALLBACK_TYPE) for f in catalog.flavors}
        yield Ec2(endpoint, client, network, amis, flavor_map)


# --- the broker ----------------------------------------------------------------------------


def policy(
    version: str = "aws-1",
    *,
    quota: int = 3,
    sim_quota: int = 2,
    high: float = 75,
    low: float = 50,
    **top: Any,
) -> dict[str, Any]:
    """Local RAM water marks; overflow to aws-east, then cloud-b; instance quotas."""
    return {
        "version": version,
        "zones": {
            "local": {
                "thresholds": {"ram_percent": {"high": high, "low": low}},
                "overflow": [AWS, SIM],
            },
            AWS: {"quota": {"instances": quota}},
            SIM: {"quota": {"instances": sim_quota}},
        },
        **top,
    }


def always_burst(version: str = "burst", **kw: Any) -> dict[str, Any]:
    """High water at 0%: every request overflows, to aws-east first."""
    return policy(version, high=0, low=0, **kw)


def settings(
    tmp_path: Path, ec2: Ec2, doc: dict[str, Any], *, aws: dict[str, Any] | None = None, **top: Any
) -> Settings:
    given: dict[str, Any] = {
        "endpoint_url": ec2.endpoint,
        "flavor_map": ec2.flavor_map,
        "image_map": ec2.amis,
        "wait_timeout": 0,  # create/start return while EC2 still says pending
    }
    options = zone_options(ec2.network, **{**given, **(aws or {})})
    zone_list = [
        sim_zone("local", "local", hosts=4, host_ram_mb=8192, host_vcpus=8),
        {"name": AWS, "driver": "aws", "kind": "virtual", "options": options},
        sim_zone(SIM, "virtual", expose_hosts=False),
    ]
    top.setdefault("monitor", {"vanish_grace_seconds": 0})
    return make_settings(
        tmp_path,
        zones=zone_list,
        policy=doc,
        tenants=[PROJECT],
        broker_id=BROKER_ID,
        workers={"count": 4, "poll_interval": 0.05, "transient_backoff": 0.01},
        **top,
    )


def boot(
    live: LiveBroker, name: str, flavor: str = "m1.small", image: str = "cirros"
) -> dict[str, Any]:
    """Boot one server for PROJECT, wait until every task has ended, return its detail."""
    body = {"server": {"name": name, "flavorRef": flavor, "imageRef": image}}
    r = live.member(PROJECT).post(f"{live.compute}/servers", json=body)
    assert r.status_code == 202, r.text
    live.wait_settled()
    return live.server(r.json()["server"]["id"])


def act(live: LiveBroker, sid: str, action: dict[str, Any]) -> dict[str, Any]:
    r = live.client.post(f"{live.compute}/servers/{sid}/action", json=action)
    assert r.status_code == 202, r.text
    live.wait_settled()
    return live.server(sid)


def sync(live: LiveBroker) -> SyncReport:
    return sync_zone(live.broker.ctx, AWS)


def aws_driver(live: LiveBroker) -> AwsDriver:
    driver = live.broker.drivers[AWS]
    assert isinstance(driver, AwsDriver)
    return driver


def az_available(live: LiveBroker) -> dict[str, bool]:
    r = live.client.get(f"{live.compute}/os-availability-zone")
    assert r.status_code == 200, r.text
    return {z["zoneName"]: z["zoneState"]["available"] for z in r.json()["availabilityZoneInfo"]}


def events(live: LiveBroker, kind: str) -> list[dict[str, Any]]:
    r = live.client.get(f"{live.url}{BROKER}/monitor/events", params={"kind": kind})
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()["events"]
    return found


def in_zone(server: dict[str, Any], zone: str, status: str = "ACTIVE") -> None:
    assert (server["status"], az(server)) == (status, zone), server.get("federator:fault")
    assert server["federator:cell"] == "cell1"
    assert not server["OS-EXT-STS:task_state"]


# --- 1. overflow -----------------------------------------------------------------------------


def test_local_overflows_to_ec2_then_the_sim_zone_then_cell0(
    tmp_path: Path, ec2: Ec2, live_broker_factory: Factory
) -> None:
    live = live_broker_factory(settings(tmp_path, ec2, policy("aws-acc")))
    # Three m1.large fill 24 of 32 GiB: exactly the 75% mark.
    for n in range(3):
        in_zone(boot(live, f"local-{n}", flavor="m1.large"), "local")
    assert zones(live)["local"]["usage"]["ram_mb"] == 24 * GIB
    assert ec2.all_instances() == []

    wanted = [("m1.small", "cirros"), ("m1.tiny", "ubuntu-24.04"), ("m1.medium", "debian-12")]
    burst = {}
    for n, (flavor, image) in enumerate(wanted):
        server = boot(live, f"burst-{n}", flavor=flavor, image=image)
        in_zone(server, AWS, status="BUILD")  # EC2 says pending; the driver did not wait
        assert server["federator:placement"]["zone"] == AWS
        assert server["federator:placement"]["load"]["local"]["ram_used_mb"] == 24 * GIB
        burst[server["id"]] = (f"burst-{n}", flavor, image)
    assert zones(live)["local"]["bursting"] is True

    launched = {}
    for sid, (name, flavor, image) in burst.items():
        instance = ec2.instance(sid)
        launched[sid] = instance
        assert instance["State"]["Name"] in ("pending", "running")
        assert instance["InstanceType"] == ec2.flavor_map[flavor]
        assert instance["ImageId"] == ec2.amis[image]
        assert instance["SubnetId"] in ec2.network.subnet_ids
        assert [g["GroupId"] for g in instance["SecurityGroups"]] == list(
            ec2.network.security_group_ids
        )
        assert tags(instance) == {
            "federator:instance-uuid": sid,
            "federator:broker-id": BROKER_ID,
            "federator:zone": AWS,
            "federator:project": PROJECT,
            "Name": name,
        }
    assert len({i["InstanceType"] for i in launched.values()}) == 3
    assert len({i["ImageId"] for i in launched.values()}) == 3

    # aws-east is at its quota: the next two go to the sim zone, then nothing is left.
    for n in range(2):
        in_zone(boot(live, f"sim-{n}"), SIM)
    buried = boot(live, "one-too-many")
    assert (buried["status"], buried["federator:cell"]) == ("ERROR", "cell0")
    assert fault_reason(buried) == "no_valid_host"
    message = buried["federator:fault"]["message"]
    assert f"{AWS}: over quota" in message and f"{SIM}: over quota" in message
    assert len(ec2.all_instances()) == 3

    # The monitor brings the records up to date from EC2.
    report = sync(live)
    assert (report.seen, report.changed, report.vanished, report.unrecorded) == (3, 3, 0, 0)
    for sid, instance in launched.items():
        server = live.server(sid)
        in_zone(server, AWS)
        assert server["addresses"]["private"] == [
            {"version": 4, "addr": instance["PrivateIpAddress"]}
        ]
        assert ec2.state(sid) == "running"
    assert (sync(live).changed, sync(live).vanished) == (0, 0)

    flavors = {f.name: f for f in live.broker.settings.flavors}
    used = [flavors[flavor] for _, flavor, _ in burst.values()]
    zone = zones(live)[AWS]
    assert (zone["driver"], zone["kind"], zone["state"]) == ("aws", "virtual", "available")
    assert zone["quota"]["instances"] == 3
    assert zone["usage"]["instances"] == 3
    assert zone["usage"]["vcpus"] == sum(f.vcpus for f in used)
    assert zone["usage"]["ram_mb"] == sum(f.ram_mb for f in used)
    assert zone["remote_usage"] == {
        "instances": 3,
        "vcpus": sum(f.vcpus for f in used),
        "ram_mb": sum(f.ram_mb for f in used),
    }
    assert zones(live)[SIM]["usage"]["instances"] == 2


# --- 2. faults -------------------------------------------------------------------------------


def test_insufficient_capacity_falls_through_and_ends_in_cell0(
    tmp_path: Path, ec2: Ec2, live_broker_factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = live_broker_factory(settings(tmp_path, ec2, always_burst()))
    calls = fail_run_instances(monkeypatch, "InsufficientInstanceCapacity")
    for n in range(2):
        in_zone(boot(live, f"fall-{n}"), SIM)
    assert len(calls) == 2  # each boot asked EC2 first
    buried = boot(live, "nowhere")
    assert len(calls) == 3
    assert (buried["status"], buried["federator:cell"]) == ("ERROR", "cell0")
    assert fault_reason(buried) == "no_valid_host"
    assert buried["federator:fault"]["code"] == "federator.placement.no_valid_host"
    message = buried["federator:fault"]["message"]
    assert f"{AWS}: RunInstances: InsufficientInstanceCapacity" in message
    assert f"{SIM}: over quota" in message

    assert ec2.all_instances() == []
    z = zones(live)
    assert z[AWS]["usage"] == {"instances": 0, "vcpus": 0, "ram_mb": 0, "disk_gb": 0}
    assert z[AWS]["state"] == "available"  # capacity is not a health problem
    assert z[SIM]["usage"]["instances"] == 2


def test_throttling_is_retried_and_the_boot_stays_in_ec2(
    tmp_path: Path, ec2: Ec2, live_broker_factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = live_broker_factory(settings(tmp_path, ec2, always_burst()))
    with monkeypatch.context() as patch:
        calls = fail_run_instances(patch, "RequestLimitExceeded", times=1)
        server = boot(live, "throttled")
    in_zone(server, AWS, status="BUILD")
    assert len(calls) == 2  # refused once, retried once
    assert ec2.state(server["id"]) in ("pending", "running")
    assert len(ec2.all_instances()) == 1

    # Throttled past botocore's attempts (2 here): the broker retries the create itself,
    # and the uuid tag keeps it to one instance.
    with monkeypatch.context() as patch:
        calls = fail_run_instances(patch, "RequestLimitExceeded", times=2)
        again = boot(live, "throttled-twice")
    in_zone(again, AWS, status="BUILD")
    assert len(calls) == 3
    assert len(ec2.all_instances()) == 2
    assert zones(live)[AWS]["state"] == "available"
    assert zones(live)[SIM]["usage"]["instances"] == 0


def test_rejected_credentials_mark_the_zone_down_until_a_health_probe_passes(
    tmp_path: Path, ec2: Ec2, live_broker_factory: Factory
) -> None:
    live = live_broker_factory(settings(tmp_path, ec2, always_burst(sim_quota=5)))
    assert az_available(live)[AWS] is True
    sent: list[str] = []
    aws_driver(live).ex_client.meta.events.register(
        "before-call.ec2", lambda model, **_: sent.append(model.name)
    )
    with enable_iam_authentication():  # moto now checks the (unknown) access key
        first = boot(live, "rejected")
        in_zone(first, SIM)
        assert sent  # aws-east was asked first, and said AuthFailure
        assert az_available(live) == {"local": True, AWS: False, SIM: True}
        zone = zones(live)[AWS]
        assert zone["state"] == "down"
        assert "credentials were rejected (AuthFailure)" in zone["state_detail"]

        sent.clear()
        in_zone(boot(live, "skipping"), SIM)
        assert sent == []  # a zone that is down is not even asked
        assert jobs.refresh_zone(live.broker.ctx, AWS).startswith("unhealthy")
        assert az_available(live)[AWS] is False

    assert ec2.all_instances() == []
    assert jobs.refresh_zone(live.broker.ctx, AWS).startswith("ok")
    assert az_available(live)[AWS] is True
    back = boot(live, "back")
    in_zone(back, AWS, status="BUILD")
    assert ec2.state(back["id"]) in ("pending", "running")
    assert [e["zone"] for e in events(live, "zone_down")] == [AWS]
    assert [e["zone"] for e in events(live, "zone_up")] == [AWS]


# --- 3. drift --------------------------------------------------------------------------------


def test_an_instance_terminated_in_ec2_becomes_error_vanished(
    tmp_path: Path, ec2: Ec2, live_broker_factory: Factory
) -> None:
    live = live_broker_factory(settings(tmp_path, ec2, always_burst()))
    gone, kept = boot(live, "gone")["id"], boot(live, "kept")["id"]
    assert sync(live).changed == 2
    untouched = live.server(kept)
    ec2.client.terminate_instances(InstanceIds=[ec2.instance(gone)["InstanceId"]])

    runs = [sync(live)]
    if runs[0].vanished == 0:
        runs.append(sync(live))
    assert sum(r.vanished for r in runs) == 1
    server = live.server(gone)
    assert server["status"] == "ERROR"
    assert fault_reason(server) == "vanished"
    assert server["federator:fault"]["code"] == "federator.monitor.vanished"
    assert f"zone {AWS}" in server["fault"]["message"]
    assert live.server(kept) == untouched
    (event,) = events(live, "vanished")
    assert (event["zone"], event["instance_uuid"], event["action"]) == (AWS, gone, "error")
    assert event["remote_id"] == ec2.instance(gone)["InstanceId"]
    assert zones(live)[AWS]["usage"]["instances"] == 2  # ERROR keeps its claim until deleted


@pytest.mark.parametrize(
    ("action", "ec2_state", "acted"),
    [("log", "running", 0), ("quarantine", "stopped", 1), ("delete", "terminated", 1)],
)
def test_an_instance_started_in_ec2_with_our_tags_is_an_orphan(
    tmp_path: Path,
    ec2: Ec2,
    live_broker_factory: Factory,
    action: str,
    ec2_state: str,
    acted: int,
) -> None:
    doc = policy(
        f"orphans-{action}", high=25, low=0, orphans={"action": action, "min_age_seconds": 0}
    )
    live = live_broker_factory(settings(tmp_path, ec2, doc))
    in_zone(boot(live, "local", flavor="m1.large"), "local")
    for n in range(2):
        in_zone(boot(live, f"burst-{n}"), AWS, status="BUILD")
    assert sync(live).changed == 2

    driver = aws_driver(live)
    stray = str(uuidlib.uuid4())
    stray_tags = {
        driver.uuid_tag: stray,
        driver.broker_tag: BROKER_ID,
        driver.zone_tag: AWS,
        driver.project_tag: "elsewhere",
        "Name": "stray",
    }
    (launched,) = ec2.client.run_instances(
        ImageId=ec2.amis["cirros"],
        InstanceType=ec2.flavor_map["m1.small"],
        MinCount=1,
        MaxCount=1,
        SubnetId=ec2.network.subnet_ids[0],
        TagSpecifications=[
            {
                "ResourceType": "instance",
                "Tags": [{"Key": k, "Value": v} for k, v in stray_tags.items()],
            }
        ],
    )["Instances"]
    stray_id = launched["InstanceId"]
    assert ec2.state(stray) == "running"
    servers_before = {s["id"]: s for s in all_servers(live)}
    ec2_before = ec2.snapshot(leave_out=stray_id)
    zones_before = {n: (z["usage"], z["state"]) for n, z in zones(live).items()}

    report = find_orphans(live.broker.ctx, AWS)
    assert (report.seen, report.orphans, report.young, report.acted) == (3, 1, 0, acted)
    assert ec2.state(stray) == ec2_state
    (event,) = events(live, "orphan")
    assert (event["zone"], event["instance_uuid"], event["remote_id"]) == (AWS, stray, stray_id)
    assert event["action"] == action
    assert live.client.get(f"{live.compute}/servers/{stray}").status_code == 404

    assert {s["id"]: s for s in all_servers(live)} == servers_before
    assert ec2.snapshot(leave_out=stray_id) == ec2_before
    assert {n: (z["usage"], z["state"]) for n, z in zones(live).items()} == zones_before


# --- 4. lifecycle --------------------------------------------------------------------------------


def test_stop_start_reboot_and_delete_reach_ec2(
    tmp_path: Path, ec2: Ec2, live_broker_factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    rebooted: list[str] = []
    original = InstanceBackend.reboot_instances

    def recording(self: Any, instance_ids: list[str]) -> Any:
        rebooted.extend(instance_ids)
        return original(self, instance_ids)

    monkeypatch.setattr(InstanceBackend, "reboot_instances", recording)
    live = live_broker_factory(settings(tmp_path, ec2, always_burst()))
    sid = boot(live, "cycled")["id"]
    assert sync(live).changed == 1
    in_zone(live.server(sid), AWS)
    remote_id = ec2.instance(sid)["InstanceId"]

    in_zone(act(live, sid, {"os-stop": None}), AWS, status="SHUTOFF")
    assert ec2.state(sid) == "stopped"
    sync(live)
    in_zone(live.server(sid), AWS, status="SHUTOFF")

    in_zone(act(live, sid, {"os-start": None}), AWS, status="BUILD")  # pending in EC2
    assert sync(live).changed == 1
    in_zone(live.server(sid), AWS)
    assert ec2.state(sid) == "running"

    in_zone(act(live, sid, {"reboot": {"type": "SOFT"}}), AWS)
    assert rebooted == [remote_id]
    assert ec2.state(sid) == "running"
    assert sync(live).changed == 0

    r = live.client.delete(f"{live.compute}/servers/{sid}")
    assert r.status_code == 204, r.text
    live.wait_settled()
    assert live.client.get(f"{live.compute}/servers/{sid}").status_code == 404
    assert ec2.state(sid) == "terminated"
    assert ec2.instance(sid)["InstanceId"] == remote_id
    assert zones(live)[AWS]["usage"]["instances"] == 0
    report = sync(live)
    assert (report.seen, report.vanished, report.deleted) == (0, 0, 0)


# --- 5. secrets --------------------------------------------------------------------------------

ACCESS_KEY = "AKIAFEDE2ECANARY7Q4Z"
SECRET_KEY = "sEcReT-e2e/Canary+Kq93xZ81"
SESSION_TOKEN = "ToKeN-e2e-Canary-Session-5Hm2"
SECRETS = (ACCESS_KEY, SECRET_KEY, SESSION_TOKEN)
PROFILE = "federator-e2e"
# The fake EC2 endpoint's own logs (moto's IAM check prints the request it verifies);
# in production those would be AWS's logs, not the broker's.
FAKE_CLOUD_LOGGERS = ("moto", "werkzeug")


def _credentials_from(
    source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    """Put the canary credentials where ``source`` says; returns the zone's extra options."""
    if source == "environment":
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN)
        return {}
    config = tmp_path / "aws-config"
    config.write_text(f"[profile {PROFILE}]\nregion = {REGION}\n", encoding="utf-8")
    credentials = tmp_path / "aws-credentials"
    credentials.write_text(
        f"[{PROFILE}]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"
        f"aws_session_token = {SESSION_TOKEN}\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    # The environment holds other keys: a named profile must win over them.
    return {"profile": PROFILE}


def _get_every_endpoint(live: LiveBroker) -> list[str]:
    """The bodies of every read endpoint (and a few errors), as text."""
    compute, broker = live.compute, f"{live.url}{BROKER}"
    sids = [s["id"] for s in all_servers(live)]
    paths = [
        f"{live.url}/",
        compute,
        f"{compute}/servers",
        f"{compute}/servers/detail?all_tenants=1",
        *[f"{compute}/servers/{sid}" for sid in sids],
        f"{compute}/servers/00000000-0000-4000-8000-00000000dead",
        f"{compute}/flavors/detail",
        f"{compute}/os-availability-zone",
        f"{compute}/os-availability-zone/detail",
        f"{broker}/health",
        f"{broker}/zones",
        f"{broker}/zones/{AWS}",
        f"{broker}/monitor",
        f"{broker}/monitor/events?limit=1000",
        f"{broker}/policy",
    ]
    bodies = []
    for path in paths:
        r = live.client.get(path)
        assert r.status_code in (200, 300, 404), (path, r.text)
        bodies.append(r.text)
    for request in (
        {"flavor": "m1.small", "image": "cirros", "project_id": PROJECT},
        {"flavor": "m1.small", "image": "cirros", "availability_zone": AWS},
        {"flavor": "no-such-flavor", "image": "cirros"},
    ):
        bodies.append(live.client.post(f"{broker}/policy/explain", json=request).text)
    return bodies


def _cli_json(live: LiveBroker, sid: str) -> list[str]:
    runner = CliRunner()
    url = ["--url", live.url]
    outputs = []
    for args in (
        ["server", "list", "--all-tenants", "--long", "--json"],
        ["server", "show", sid, "--json"],
        ["zone", "list", "--json"],
        ["zone", "show", AWS, "--json"],
        ["az", "list", "--json"],
        ["flavor", "list", "--json"],
        ["monitor", "status", "--json"],
        ["monitor", "events", "--json"],
        ["policy", "show", "--json"],
        ["policy", "explain", "--flavor", "m1.small", "--image", "cirros", "--json"],
        ["server", "create", "cli-vm", "--flavor", "m1.small", "--image", "cirros", "--json"],
    ):
        result = runner.invoke(cli, [*args, *url], env=live.os_env())
        assert result.exit_code == 0, (args, result.output)
        json.loads(result.stdout)
        outputs.append(result.output)
    missing = runner.invoke(
        cli, ["server", "show", "no-such-server", *url, "--json"], env=live.os_env()
    )
    assert missing.exit_code != 0
    outputs.append(missing.output)
    drivers = runner.invoke(cli, ["drivers", "--json"])
    assert drivers.exit_code == 0, drivers.output
    outputs.append(drivers.output)
    live.wait_settled()
    return outputs


@pytest.mark.parametrize("source", ["environment", "profile"])
def test_credentials_never_reach_logs_answers_or_the_cli(
    tmp_path: Path,
    ec2: Ec2,
    live_broker_factory: Factory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    source: str,
) -> None:
    extra = _credentials_from(source, tmp_path, monkeypatch)
    caplog.set_level(logging.DEBUG)
    quiet = {"load_interval": 3600, "sync_interval": 3600, "orphan_interval": 3600}
    live = live_broker_factory(
        settings(
            tmp_path,
            ec2,
            always_burst("secrets", quota=5, sim_quota=1),
            aws=extra,
            log_level="DEBUG",
            monitor={"vanish_grace_seconds": 0, **quiet},
        ),
        monitor=True,
    )
    monitor = live.broker.monitor
    signed: list[str] = []
    aws_driver(live).ex_client.meta.events.register(
        "before-send.ec2",
        lambda request, **_: signed.append(
            f"{request.headers.get('Authorization', b'')!r} "
            f"{request.headers.get('X-Amz-Security-Token', b'')!r}"
        ),
    )

    # Boots, the monitor, and every lifecycle action.
    kept, cycled = boot(live, "kept")["id"], boot(live, "cycled")["id"]
    monitor.run_now(f"sync:{AWS}")
    monitor.run_now(f"orphans:{AWS}")
    in_zone(live.server(kept), AWS)
    act(live, cycled, {"os-stop": None})
    act(live, cycled, {"os-start": None})
    monitor.run_now(f"sync:{AWS}")
    act(live, cycled, {"reboot": {"type": "HARD"}})
    assert live.client.delete(f"{live.compute}/servers/{cycled}").status_code == 204
    live.wait_settled()
    assert ec2.state(cycled) == "terminated"

    # A capacity failure: cloud-b takes the first, the second is buried naming aws-east.
    with monkeypatch.context() as patch:
        fail_run_instances(patch, "InsufficientInstanceCapacity")
        in_zone(boot(live, "capacity-1"), SIM)
        refused = boot(live, "capacity-2")
    assert "InsufficientInstanceCapacity" in refused["federator:fault"]["message"]

    # Rejected credentials: a boot, a power action and every monitor job meet them.
    with enable_iam_authentication():
        rejected = boot(live, "rejected")
        assert "credentials rejected" in rejected["federator:fault"]["message"]
        stopped = act(live, kept, {"os-stop": None})
        assert "AuthFailure" in stopped["federator:fault"]["message"]
        for job in ("load", "sync", "orphans"):
            monitor.run_now(f"{job}:{AWS}")
        assert monitor.records[f"sync:{AWS}"].last_error
    assert az_available(live)[AWS] is False
    monitor.run_now(f"load:{AWS}")
    assert az_available(live)[AWS] is True

    texts = _get_every_endpoint(live) + _cli_json(live, kept)
    # The canaries were really in use: each request carried the key id and the token.
    assert signed and all(ACCESS_KEY in s and SESSION_TOKEN in s for s in signed)
    assert any(r.name.startswith("botocore") and r.levelno == logging.DEBUG for r in caplog.records)
    formatter = logging.Formatter("%(name)s %(message)s")
    logged = [
        formatter.format(r) for r in caplog.records if not r.name.startswith(FAKE_CLOUD_LOGGERS)
    ]
    assert len(logged) > 100
    for secret in SECRETS:
        assert [t for t in texts if secret in t] == [], secret
        assert [line for line in logged if secret in line] == [], secret


def test_an_unmapped_flavor_or_image_stops_the_broker_at_start_up(tmp_path: Path, ec2: Ec2) -> None:
    """Found when the daemon starts, naming each gap, not when a boot reaches the zone."""
    flavor_map = {k: v for k, v in ec2.flavor_map.items() if k != "m1.large"}
    image_map = dict(list(ec2.amis.items())[1:])
    bad = settings(
        tmp_path, ec2, always_burst(), aws={"flavor_map": flavor_map, "image_map": image_map}
    )
    with pytest.raises(ConfigError) as caught:
        Broker.open(bad)
    message = caught.value.message
    assert "'aws-east'" in message
    assert "flavors without an instance type in flavor_map: m1.large" in message
    assert "images without an AMI in image_map" in message
