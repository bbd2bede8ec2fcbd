"""The AWS zone's volumes end to end: Cinder and Nova's attachment API in front of EBS
served by moto over HTTP.

The zones and the moto server are those of :mod:`tests.functional.test_aws_zone`: a local
sim zone that overflows to ``aws-east`` (the ``aws`` driver on a ThreadedMotoServer) and
then to ``cloud-b``. Here the local zone's storage high water is 0%, so every volume that
names no availability zone overflows to ``aws-east`` too, and ``subnet_strategy = "first"``
keeps the zone's instances in the EC2 availability zone its volumes are made in. The
monitor's volume sync is called directly; what EBS holds is read back with the tests' own
boto3 client.

The crash test runs ``federator serve`` and moto as two processes of their own, kills the
broker in the middle of a burst of creates and checks that the restarted broker and EBS
agree on every volume.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid as uuidlib
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from federator.broker import Databases
from federator.config import Settings, load_settings
from federator.storage.models import Zone
from federator.volumes.sync import VolumeSyncReport, sync_volumes
from tests.conftest import ADMIN, ADMIN_CONTEXT, LiveBroker, write_config
from tests.daemon import Daemon, tail
from tests.functional.support import boot_as
from tests.functional.test_aws_zone import (
    AWS,
    BROKER,
    BROKER_ID,
    FALLBACK_TYPE,
    INSTANCE_TYPES,
    PROJECT,
    Ec2,
    Factory,
    always_burst,
    ec2,  # noqa: F401 - the fixture
    events,
    in_zone,
    settings,
    sync,
    tags,
)
from tests.functional.test_crash import _unfinished, daemons  # noqa: F401 - the fixture
from tests.support_moto import FAKE_ENV, make_network
from tests.support_moto import test_client as moto_client

# The tag keys of drivers/aws/blockstorage.py under the zone's default prefix.
VOLUME_UUID = "federator:volume-uuid"
VOLUME_TAGS = (VOLUME_UUID, "federator:broker-id", "federator:zone", "federator:project")
LIVE_EBS = ("creating", "available", "in-use")


# --- EBS on moto ---------------------------------------------------------------------------


def ebs_volumes(client: Any, broker_id: str = BROKER_ID) -> list[dict[str, Any]]:
    """Every live EBS volume carrying a broker volume uuid and ``broker_id``."""
    pages = client.get_paginator("describe_volumes").paginate(
        Filters=[
            {"Name": "tag-key", "Values": [VOLUME_UUID]},
            {"Name": "tag:federator:broker-id", "Values": [broker_id]},
        ]
    )
    return [v for p in pages for v in p["Volumes"] if v["State"] in LIVE_EBS]


def ebs_volume(cloud: Ec2, uuid: str) -> dict[str, Any]:
    """The one EBS volume tagged with broker volume uuid ``uuid``."""
    found = [v for v in ebs_volumes(cloud.client) if tags(v).get(VOLUME_UUID) == uuid]
    assert len(found) == 1, f"{len(found)} EBS volumes carry uuid {uuid}"
    return found[0]


def ebs_snapshot(cloud: Ec2) -> dict[str, tuple[Any, ...]]:
    """What the tests compare before and after: every volume's state, size and attachments."""
    pages = cloud.client.get_paginator("describe_volumes").paginate()
    return {
        v["VolumeId"]: (
            v["State"],
            v["Size"],
            v["AvailabilityZone"],
            sorted((a["InstanceId"], a["Device"], a["State"]) for a in v.get("Attachments", [])),
            sorted(tags(v).items()),
        )
        for p in pages
        for v in p["Volumes"]
    }


def volume_az(cloud: Ec2) -> str:
    """The EC2 availability zone of the zone's first subnet, where its volumes are made."""
    first = cloud.network.subnet_ids[0]
    [subnet] = cloud.client.describe_subnets(SubnetIds=[first])["Subnets"]
    az: str = subnet["AvailabilityZone"]
    return az


def orphan_tags(uuid: str, broker_id: str = BROKER_ID) -> list[dict[str, str]]:
    values = (uuid, broker_id, AWS, "elsewhere")
    return [
        *({"Key": k, "Value": v} for k, v in zip(VOLUME_TAGS, values, strict=True)),
        {"Key": "Name", "Value": "stray"},
    ]


# --- the broker --------------------------------------------------------------------------


def volume_policy(version: str = "vol-1", **top: Any) -> dict[str, Any]:
    """Servers and volumes overflow to aws-east (RAM and storage high water at 0%);
    requests may also name aws-east as their availability zone."""
    doc = always_burst(version, allow_explicit_virtual_az=True, **top)
    doc["zones"]["local"]["thresholds"]["gb_percent"] = {"high": 0, "low": 0}
    return doc


def volume_settings(tmp_path: Path, cloud: Ec2, doc: dict[str, Any], **top: Any) -> Settings:
    """The zones of test_aws_zone, aws-east launching every instance into its first subnet."""
    return settings(tmp_path, cloud, doc, aws={"subnet_strategy": "first"}, **top)


def volumes_url(live: LiveBroker, project: str = PROJECT) -> str:
    return f"{live.url}/volume/v3/{project}/volumes"


def create_volume(live: LiveBroker, **fields: Any) -> dict[str, Any]:
    """Create a volume as the member of PROJECT; wait until every task has ended."""
    body = {"volume": {"size": 1, **fields}}
    r = live.member(PROJECT).post(volumes_url(live), json=body)
    assert r.status_code == 202, r.text
    assert r.json()["volume"]["status"] == "creating"
    live.wait_settled()
    return volume(live, r.json()["volume"]["id"])


def volume(live: LiveBroker, vid: str) -> dict[str, Any]:
    r = live.member(PROJECT).get(f"{volumes_url(live)}/{vid}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()["volume"]
    return body


def all_volumes(live: LiveBroker) -> list[dict[str, Any]]:
    r = live.client.get(
        f"{volumes_url(live, ADMIN)}/detail", params={"all_tenants": "1", "limit": 1000}
    )
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()["volumes"]
    return found


def boot_in(live: LiveBroker, name: str, zone: str) -> dict[str, Any]:
    """An ACTIVE server of PROJECT in ``zone`` (an aws-east one brought up by a sync)."""
    server = boot_as(live, PROJECT, name, availability_zone=zone)
    if zone == AWS:
        in_zone(server, AWS, status="BUILD")
        sync(live)
        server = live.server(server["id"])
    in_zone(server, zone)
    return server


def attachments_url(live: LiveBroker, sid: str) -> str:
    return f"{live.compute}/servers/{sid}/os-volume_attachments"


def attach(live: LiveBroker, sid: str, vid: str) -> httpx.Response:
    body = {"volumeAttachment": {"volumeId": vid}}
    return live.member(PROJECT).post(attachments_url(live, sid), json=body)


def sync_storage(live: LiveBroker) -> VolumeSyncReport:
    return sync_volumes(live.broker.ctx, AWS)


def storage_claimed(live: LiveBroker, zone: str = AWS) -> tuple[int, int]:
    """(GB, volumes) the broker has claimed in ``zone``."""
    with live.broker.dbs.api.read() as s:
        row = s.scalars(select(Zone).where(Zone.name == zone)).one()
        return row.volume_gb_used, row.volumes


# --- 1. the life of a volume -------------------------------------------------------------


def test_a_volume_overflows_to_ebs_attaches_detaches_and_is_deleted(
    tmp_path: Path,
    ec2: Ec2,  # noqa: F811
    live_broker_factory: Factory,
) -> None:
    live = live_broker_factory(volume_settings(tmp_path, ec2, volume_policy()))
    server = boot_in(live, "host-vm", AWS)
    sid = server["id"]
    instance_id = ec2.instance(sid)["InstanceId"]
    before = ebs_snapshot(ec2)

    made = create_volume(live, name="data", description="the database")
    vid = made["id"]
    assert (made["status"], made["size"], made["availability_zone"]) == ("available", 1, AWS)
    assert made["attachments"] == []
    assert storage_claimed(live) == (1, 1)
    placement = live.broker.volumes.get(ADMIN_CONTEXT, vid).placement
    assert placement["zone"] == AWS
    [local] = [v for v in placement["verdicts"] if v["zone"] == "local"]
    assert (local["accepted"], local["check"]) == (False, "threshold.gb_percent"), local

    [ebs] = ebs_volumes(ec2.client)  # the instance's root volume carries no volume uuid
    assert tags(ebs) == {
        "federator:volume-uuid": vid,
        "federator:broker-id": BROKER_ID,
        "federator:zone": AWS,
        "federator:project": PROJECT,
        "Name": "data",
    }
    assert (ebs["Size"], ebs["State"], ebs["VolumeType"]) == (1, "available", "gp3")
    assert ebs["AvailabilityZone"] == volume_az(ec2)
    assert ebs["Attachments"] == []
    assert set(ebs_snapshot(ec2)) - set(before) == {ebs["VolumeId"]}

    # Attach: the broker names the device as Nova does, EC2 as EC2 does.
    r = attach(live, sid, vid)
    assert r.status_code == 200, r.text
    shown = r.json()["volumeAttachment"]
    assert (shown["volumeId"], shown["serverId"], shown["device"]) == (vid, sid, "/dev/vdb")
    live.wait_settled()
    attached = volume(live, vid)
    assert attached["status"] == "in-use"
    assert [(a["server_id"], a["device"]) for a in attached["attachments"]] == [(sid, "/dev/vdb")]
    [on_ec2] = ebs_volume(ec2, vid)["Attachments"]
    assert (on_ec2["InstanceId"], on_ec2["Device"]) == (instance_id, "/dev/sdb")
    assert on_ec2["State"] in ("attaching", "attached")
    listed = live.member(PROJECT).get(attachments_url(live, sid))
    assert listed.status_code == 200, listed.text
    assert listed.json()["volumeAttachments"] == [
        {"id": vid, "volumeId": vid, "serverId": sid, "device": "/dev/vdb"}
    ]
    report = sync_storage(live)
    assert (report.seen, report.updated, report.vanished, report.orphans) == (1, 0, 0, 0)

    # An attached volume cannot be deleted, and asking changes nothing anywhere.
    still = ebs_snapshot(ec2)
    refused = live.member(PROJECT).delete(f"{volumes_url(live)}/{vid}")
    assert refused.status_code == 400, refused.text
    assert f"attached to server {sid}" in refused.json()["message"]
    live.wait_settled()
    assert volume(live, vid)["status"] == "in-use"
    assert ebs_snapshot(ec2) == still

    # Detach.
    r = live.member(PROJECT).delete(f"{attachments_url(live, sid)}/{vid}")
    assert r.status_code == 202, r.text
    live.wait_settled()
    detached = volume(live, vid)
    assert (detached["status"], detached["attachments"]) == ("available", [])
    on_ec2_now = ebs_volume(ec2, vid)
    assert (on_ec2_now["State"], on_ec2_now["Attachments"]) == ("available", [])
    assert live.member(PROJECT).get(attachments_url(live, sid)).json() == {"volumeAttachments": []}
    assert sync_storage(live).updated == 0

    # Delete.
    r = live.member(PROJECT).delete(f"{volumes_url(live)}/{vid}")
    assert r.status_code == 202, r.text
    live.wait_settled()
    assert live.member(PROJECT).get(f"{volumes_url(live)}/{vid}").status_code == 404
    assert ebs_volumes(ec2.client) == []
    assert ebs_snapshot(ec2) == before
    assert storage_claimed(live) == (0, 0)
    assert live.server(sid)["status"] == "ACTIVE"


# --- 2. availability zones ---------------------------------------------------------------


def test_an_attach_across_availability_zones_is_refused_naming_both(
    tmp_path: Path,
    ec2: Ec2,  # noqa: F811
    live_broker_factory: Factory,
) -> None:
    live = live_broker_factory(volume_settings(tmp_path, ec2, volume_policy()))
    in_aws = create_volume(live, name="in-aws")
    in_local = create_volume(live, name="in-local", availability_zone="local")
    assert (in_aws["status"], in_aws["availability_zone"]) == ("available", AWS)
    assert (in_local["status"], in_local["availability_zone"]) == ("available", "local")
    local_vm = boot_in(live, "local-vm", "local")
    aws_vm = boot_in(live, "aws-vm", AWS)
    before = ebs_snapshot(ec2)
    aws_instance = ec2.instance(aws_vm["id"])

    for vol, server in ((in_aws, local_vm), (in_local, aws_vm)):
        r = attach(live, server["id"], vol["id"])
        assert r.status_code == 400, r.text
        message = r.json()["message"]
        assert "different availability zones" in message, message
        assert "'local'" in message and f"'{AWS}'" in message, message
        assert live.broker.queue.pending() == 0
        assert volume(live, vol["id"]) == vol
        assert live.member(PROJECT).get(attachments_url(live, server["id"])).json() == {
            "volumeAttachments": []
        }

    assert ebs_snapshot(ec2) == before
    assert ebs_volume(ec2, in_aws["id"])["Attachments"] == []
    assert ec2.instance(aws_vm["id"])["BlockDeviceMappings"] == aws_instance["BlockDeviceMappings"]
    assert sync_storage(live).updated == 0


# --- 3. drift ----------------------------------------------------------------------------


def test_an_ebs_volume_deleted_behind_the_brokers_back_becomes_error_vanished(
    tmp_path: Path,
    ec2: Ec2,  # noqa: F811
    live_broker_factory: Factory,
) -> None:
    live = live_broker_factory(volume_settings(tmp_path, ec2, volume_policy()))
    gone = create_volume(live, name="gone", size=2)
    kept = create_volume(live, name="kept")
    assert storage_claimed(live) == (3, 2)
    remote_id = ebs_volume(ec2, gone["id"])["VolumeId"]
    ec2.client.delete_volume(VolumeId=remote_id)

    report = sync_storage(live)  # vanish_grace_seconds is 0: one pass is enough
    assert (report.seen, report.vanished, report.updated, report.orphans) == (1, 1, 0, 0)
    vanished = volume(live, gone["id"])
    assert vanished["status"] == "error"
    assert vanished["fault"]["code"] == "federator.monitor.vanished"
    assert vanished["fault"]["reason"] == "vanished"
    assert f"no longer in zone {AWS}" in vanished["fault"]["message"]
    assert volume(live, kept["id"]) == kept
    assert storage_claimed(live) == (1, 1)  # the vanished volume's claim is given back
    (event,) = events(live, "vanished")
    assert (event["zone"], event["instance_uuid"], event["action"]) == (
        AWS,
        gone["id"],
        "volume_error",
    )
    assert event["remote_id"] == remote_id

    again = sync_storage(live)
    assert (again.vanished, again.updated) == (0, 0)
    assert len(events(live, "vanished")) == 1

    # An error volume can still be deleted, with nothing left to delete in EBS.
    r = live.member(PROJECT).delete(f"{volumes_url(live)}/{gone['id']}")
    assert r.status_code == 202, r.text
    live.wait_settled()
    assert live.member(PROJECT).get(f"{volumes_url(live)}/{gone['id']}").status_code == 404
    assert [tags(v)[VOLUME_UUID] for v in ebs_volumes(ec2.client)] == [kept["id"]]


@pytest.mark.parametrize(
    ("action", "event_action", "acted"),
    [
        ("log", "volume_logged", 0),
        ("quarantine", "volume_detached", 1),
        ("delete", "volume_deleted", 1),
    ],
)
def test_an_ebs_volume_with_our_tags_and_no_record_is_an_orphan(
    tmp_path: Path,
    ec2: Ec2,  # noqa: F811
    live_broker_factory: Factory,
    action: str,
    event_action: str,
    acted: int,
) -> None:
    doc = volume_policy(f"orphans-{action}", orphans={"action": action, "min_age_seconds": 0})
    live = live_broker_factory(volume_settings(tmp_path, ec2, doc))
    tracked = create_volume(live, name="tracked")
    server = boot_in(live, "vm", AWS)
    instance_id = ec2.instance(server["id"])["InstanceId"]
    az = volume_az(ec2)

    stray = str(uuidlib.uuid4())
    made = ec2.client.create_volume(
        AvailabilityZone=az,
        Size=3,
        VolumeType="gp3",
        TagSpecifications=[{"ResourceType": "volume", "Tags": orphan_tags(stray)}],
    )
    ec2.client.attach_volume(VolumeId=made["VolumeId"], InstanceId=instance_id, Device="/dev/sdk")
    # Another broker's volume in the same zone is not this broker's to judge.
    other = ec2.client.create_volume(
        AvailabilityZone=az,
        Size=1,
        TagSpecifications=[
            {"ResourceType": "volume", "Tags": orphan_tags(str(uuidlib.uuid4()), "other-broker")}
        ],
    )["VolumeId"]

    report = sync_storage(live)
    assert (report.seen, report.orphans, report.acted) == (2, 1, acted)
    assert (report.vanished, report.updated) == (0, 0)
    (event,) = events(live, "orphan")
    assert (event["zone"], event["instance_uuid"], event["action"]) == (AWS, stray, event_action)
    assert event["remote_id"] == made["VolumeId"]
    assert f"orphans.action is {action}" in event["detail"]

    found = {v["VolumeId"]: v for v in ec2.client.describe_volumes()["Volumes"]}
    if action == "delete":
        assert made["VolumeId"] not in found
    else:
        attachments = [a["InstanceId"] for a in found[made["VolumeId"]]["Attachments"]]
        assert attachments == ([] if action == "quarantine" else [instance_id])
        assert found[made["VolumeId"]]["State"] == ("available" if acted else "in-use")
    assert other in found
    assert volume(live, tracked["id"]) == tracked
    assert [v["id"] for v in all_volumes(live)] == [tracked["id"]]

    # Found again on the next pass: recorded once, acted on once.
    again = sync_storage(live)
    assert again.acted == 0
    assert again.orphans == (0 if action == "delete" else 1)
    assert len(events(live, "orphan")) == 1


# --- 4. a crash in the middle of a burst -------------------------------------------------

CREATES = 50
SYNC_INTERVAL = 1.0
# A separate moto server: started on a free port, it prints the port, then serves until
# its stdin is closed.
MOTO_SERVER = """
import sys
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
sys.stdin.read()
server.stop()
"""


@pytest.fixture
def moto_process(tmp_path: Path) -> Iterator[str]:
    """The URL of moto running as a server process of its own (stopped at the end)."""
    log = open(tmp_path / "moto.log", "wb")  # noqa: SIM115 - the child owns it
    proc = subprocess.Popen(
        [sys.executable, "-c", MOTO_SERVER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log,
        env={**os.environ, **FAKE_ENV, "MOTO_EC2_LOAD_DEFAULT_AMIS": "false"},
    )
    log.close()
    try:
        assert proc.stdout is not None
        port = proc.stdout.readline().decode().strip()
        assert port.isdigit(), f"moto did not start: {tail(tmp_path / 'moto.log')}"
        yield f"http://127.0.0.1:{port}"
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def ec2_of(endpoint: str, tmp_path: Path) -> Ec2:
    """What the zone launches into on the moto server at ``endpoint``: a network and an
    AMI for every catalog image, as the ``ec2`` fixture makes on the shared one."""
    client = moto_client(endpoint)
    catalog = load_settings(None, data_dir=tmp_path / "catalog")
    amis = {
        image.name: client.register_image(Name=image.name, RootDeviceName="/dev/xvda")["ImageId"]
        for image in catalog.images
    }
    flavor_map = {f.name: INSTANCE_TYPES.get(f.name, FALLBACK_TYPE) for f in catalog.flavors}
    return Ec2(endpoint, client, make_network(client), amis, flavor_map)


@dataclass(frozen=True)
class Accepted:
    status: int  # 0: no answer (the broker died first)
    volume_id: str | None


def create_concurrently(daemon: Daemon, count: int, clients: int = 10) -> list[Accepted]:
    """POST ``count`` 1 GB volume creates from ``clients`` threads at once."""
    url = f"{daemon.url}/volume/v3/{ADMIN}/volumes"

    def run(first: int) -> list[Accepted]:
        out = []
        with httpx.Client(timeout=30, headers=daemon.headers) as client:
            for i in range(first, count, clients):
                try:
                    r = client.post(url, json={"volume": {"size": 1, "name": f"burst-{i}"}})
                except httpx.HTTPError:
                    out.append(Accepted(0, None))
                    continue
                vid = r.json()["volume"]["id"] if r.status_code == 202 else None
                out.append(Accepted(r.status_code, vid))
        return out

    with ThreadPoolExecutor(clients) as pool:
        return [a for part in pool.map(run, range(clients)) for a in part]


def daemon_volumes(client: httpx.Client, url: str) -> dict[str, dict[str, Any]]:
    r = client.get(
        f"{url}/volume/v3/{ADMIN}/volumes/detail", params={"all_tenants": "1", "limit": 1000}
    )
    assert r.status_code == 200, r.text
    return {v["id"]: v for v in r.json()["volumes"]}


def volume_sync_runs(client: httpx.Client, url: str) -> int:
    r = client.get(f"{url}{BROKER}/monitor")
    assert r.status_code == 200, r.text
    [job] = [j for j in r.json()["jobs"] if j["name"] == f"volumes:{AWS}"]
    assert job["last_error"] is None, job
    runs: int = job["runs"]
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("finished", [1, 20], ids=lambda n: f"after-{n}-available")
def test_sigkill_mid_burst_of_creates_then_restart_leaves_ebs_and_records_agreeing(
    tmp_path: Path,
    moto_process: str,
    daemons: list[Daemon],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    finished: int,
) -> None:
    for name, value in FAKE_ENV.items():  # the broker's credentials for moto
        monkeypatch.setenv(name, value)
    moto_ec2 = ec2_of(moto_process, tmp_path)
    monitor = {"vanish_grace_seconds": 0, "sync_interval": SYNC_INTERVAL}
    broker_settings = volume_settings(tmp_path, moto_ec2, volume_policy(), monitor=monitor)
    config = write_config(
        tmp_path / "federator.toml", broker_settings.model_dump(exclude_unset=True)
    )

    daemons.append(Daemon.start(config, tmp_path, 1))
    first = daemons[0]
    answers: list[Accepted] = []
    sender = threading.Thread(
        target=lambda: answers.extend(create_concurrently(first, CREATES)), daemon=True
    )
    sender.start()
    deadline = time.monotonic() + 30
    with httpx.Client(timeout=10, headers=first.headers) as client:
        while True:
            made = daemon_volumes(client, first.url).values()
            if sum(v["status"] == "available" for v in made) >= finished:
                break
            assert time.monotonic() < deadline, f"the burst did not progress: {tail(first.log)}"
            time.sleep(0.01)
    first.kill()
    assert first.proc.returncode == -signal.SIGKILL
    sender.join(60)
    assert not sender.is_alive()
    accepted = {a.volume_id for a in answers if a.status == 202 and a.volume_id}
    assert accepted, "no create was accepted before the kill"
    running, queued = _unfinished(broker_settings)
    assert running + queued > 0, "the kill landed after the burst had finished"

    daemons.append(Daemon.start(config, tmp_path, 2))
    second = daemons[1]
    deadline = time.monotonic() + 60
    with httpx.Client(timeout=10, headers=second.headers) as client:
        # Two passes of the volume sync, counted from when every create had ended.
        while creating := [
            vid
            for vid, v in daemon_volumes(client, second.url).items()
            if v["status"] == "creating"
        ]:
            assert time.monotonic() < deadline, (
                f"{len(creating)} volume(s) still creating: {tail(second.log)}"
            )
            time.sleep(0.05)
        settled_at = volume_sync_runs(client, second.url)
        while volume_sync_runs(client, second.url) < settled_at + 2:
            assert time.monotonic() < deadline, f"the volume sync did not run: {tail(second.log)}"
            time.sleep(0.05)
        records = daemon_volumes(client, second.url)
    assert second.stop(signal.SIGTERM) == 0, tail(second.log)
    assert _unfinished(broker_settings) == (0, 0)

    statuses = Counter(v["status"] for v in records.values())
    on_ebs = Counter(tags(v)[VOLUME_UUID] for v in ebs_volumes(moto_ec2.client))
    stuck = [vid for vid, v in records.items() if v["status"] == "creating"]
    orphans = sorted(set(on_ebs) - set(records))
    missing = sorted(
        vid
        for vid, v in records.items()
        if v["status"] in ("available", "in-use") and vid not in on_ebs
    )
    twice = sorted(vid for vid, n in on_ebs.items() if n > 1)
    lost = sorted(accepted - set(records))
    counts = (
        f"{len(accepted)} accepted, {len(records)} recorded {dict(statuses)}, "
        f"{sum(on_ebs.values())} EBS volumes; stuck {len(stuck)}, orphans {len(orphans)}, "
        f"missing {len(missing)}, duplicated {len(twice)}, lost {len(lost)}"
    )
    assert stuck == [], f"{counts}: still creating {stuck[:5]}"
    assert orphans == [], f"{counts}: EBS volumes without a record {orphans[:5]}"
    assert missing == [], f"{counts}: records without an EBS volume {missing[:5]}"
    assert twice == [], f"{counts}: more than one EBS volume for {twice[:5]}"
    assert lost == [], f"{counts}: accepted but not recorded {lost[:5]}"
    assert set(statuses) <= {"available", "error"}, counts
    errors = {vid: v.get("fault") for vid, v in records.items() if v["status"] == "error"}
    assert not set(errors) & set(on_ebs), f"{counts}: error volumes left in EBS: {errors}"
    assert {v["availability_zone"] for v in records.values()} == {AWS}, counts

    # The storage claimed in aws-east is exactly what the available volumes hold.
    dbs = Databases.from_settings(broker_settings)
    try:
        with dbs.api.read() as s:
            zone = s.scalars(select(Zone).where(Zone.name == AWS)).one()
            claimed = (zone.volume_gb_used, zone.volumes)
    finally:
        dbs.dispose()
    assert claimed == (statuses["available"], statuses["available"]), f"{counts}; {errors}"


# --- 5. bad input ------------------------------------------------------------------------


BAD_CREATES: list[tuple[dict[str, Any], str]] = [
    ({"size": 0}, "volume.size"),
    ({"size": -1}, "volume.size"),
    ({"size": 101}, "volume.size"),  # volumes.max_size_gb is 100
    ({"volume_type": "no-such-type"}, "volume.volume_type"),
    ({"availability_zone": "no-such-az"}, "volume.availability_zone"),
    ({"name": "n" * 256}, "volume.name"),
]


def test_a_bad_create_is_refused_naming_the_field_and_makes_nothing(
    tmp_path: Path,
    ec2: Ec2,  # noqa: F811
    live_broker_factory: Factory,
) -> None:
    live = live_broker_factory(
        volume_settings(tmp_path, ec2, volume_policy(), volumes={"max_size_gb": 100})
    )
    for fields, field in BAD_CREATES:
        body = {"volume": {"size": 1, "name": "bad", "availability_zone": AWS, **fields}}
        r = live.member(PROJECT).post(volumes_url(live), json=body)
        assert r.status_code == 400, (fields, r.text)
        answer = r.json()
        assert field in answer["message"], (fields, answer)
        assert field in [p["field"] for p in answer.get("problems", [])], (fields, answer)
        assert live.broker.queue.pending() == 0, fields
        assert all_volumes(live) == [], fields
        assert ebs_volumes(ec2.client) == [], fields
        assert storage_claimed(live) == (0, 0), fields

    # At the limits, the same request is accepted: the refusals were about the fields.
    good = create_volume(live, name="n" * 255, size=100, availability_zone=AWS)
    assert (good["status"], good["availability_zone"], good["size"]) == ("available", AWS, 100)
    [ebs] = ebs_volumes(ec2.client)
    assert (tags(ebs)[VOLUME_UUID], ebs["Size"], tags(ebs)["Name"]) == (good["id"], 100, "n" * 255)
