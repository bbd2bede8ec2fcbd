"""Sync benchmark: one monitor sync cycle of an AWS zone against merely listing the zone.

Usage::

    python benchmarks/sync.py [--instances 2000] [--repeat 3]

Setup (not timed):

* a moto ``ThreadedMotoServer`` on 127.0.0.1 in this process, with moto's tag lookup
  patched (the ``patch_moto_tags`` patch of ``tests/support_moto.py``): stock moto scans
  every tag of the region once per instance it renders or filters, which makes one
  listing of 2,000 instances O(n^2) and dominated by moto itself. moto's 1,300 default
  AMIs are not loaded;
* ``--instances`` instances launched by RunInstances with the parameters and tags the
  ``aws`` driver uses (one instance per call, so one reservation each, as the driver
  launches them; the five tags on the instance and its volume; subnet, security group,
  ClientToken);
* a real ``Broker`` (SQLite in a temporary directory) with a simulated local zone and
  an ``aws`` zone on that server. Its cell gets one instance record per instance, built
  from the driver's own listing so that nothing differs, and the API database one
  allocation and one mapping each, with the zone's counters to match; all inserted
  through the storage models, in one transaction per database.

Measured, alternately ``--repeat`` times (medians reported, samples kept):

* ``page_s``: paging through DescribeInstances with the zone driver's own client,
  filters and page size, touching every instance and nothing else;
* ``sync_s``: one ``federator.monitor.sync.sync_zone`` cycle of the zone (the listing,
  reading the records, comparing, the vanished check and the remote usage);
* ``ratio``: ``sync_s / page_s``; target at most 1.5;
* ``writes_in_unchanged_cycle``: INSERT, UPDATE and DELETE statements any of the
  broker's databases received during the cycles after the first (nothing changed in
  between, so this must be 0), counted by a SQLAlchemy ``before_cursor_execute`` hook;
  the first cycle's writes are listed (it stores the zone's remote usage, unset before).

Prints one JSON document; the exit status is 0 whether or not the target is met.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

TARGET_RATIO = 1.5
ZONE = "aws-bench"
BROKER_ID = "bench"
PROJECT = "bench-project"
FLAVOR = {"id": "2", "name": "m1.small", "vcpus": 1, "ram_mb": 1024, "disk_gb": 10}
IMAGE = {"id": "5a2b4a3c-8c1e-4c39-9e0b-6a1f0c1d2e01", "name": "cirros"}
INSTANCE_TYPE = "t3.micro"
LIVE_STATES = ["pending", "running", "stopping", "stopped"]
WRITES = ("INSERT", "UPDATE", "DELETE")


def patch_moto_tags() -> str:
    """moto's ``TaggedEC2Resource.get_tags`` reads the resource's own tags (the patch of
    ``tests/support_moto.py``); returns what was patched, for the report."""
    from moto.ec2.models.core import TaggedEC2Resource
    from moto.ec2.models.tags import EC2_PREFIX_TO_RESOURCE
    from moto.ec2.utils import get_prefix

    def fast_get_tags(self: Any, *args: Any, **kwargs: Any) -> list[dict[str, str]]:
        if not self.id:
            return []
        kind = EC2_PREFIX_TO_RESOURCE.get(get_prefix(self.id), "")
        return [
            {"resource_id": self.id, "key": k, "value": v, "resource_type": kind}
            for k, v in self.ec2_backend.tags.get(self.id, {}).items()
        ]

    TaggedEC2Resource.get_tags = fast_get_tags
    return "moto.ec2.models.core.TaggedEC2Resource.get_tags"


@contextmanager
def moto_server() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def ec2_client(endpoint: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.session.Session(
        aws_access_key_id="bench", aws_secret_access_key="bench", region_name="us-east-1"
    ).client("ec2", endpoint_url=endpoint, config=Config(read_timeout=900))


def launch(ec2: Any, count: int) -> dict[str, str]:
    """A network, an AMI and ``count`` instances launched as the aws driver launches them;
    returns the zone's network options."""
    vpc = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.42.0.0/18", AvailabilityZone="us-east-1a")
    subnet_id = subnet["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName="bench", Description="bench", VpcId=vpc)
    image = ec2.register_image(Name="bench-cirros", RootDeviceName="/dev/xvda")["ImageId"]
    for n in range(count):
        uuid = f"00000000-0000-4000-8000-{n:012d}"
        tags = [
            {"Key": "federator:instance-uuid", "Value": uuid},
            {"Key": "federator:broker-id", "Value": BROKER_ID},
            {"Key": "federator:zone", "Value": ZONE},
            {"Key": "federator:project", "Value": PROJECT},
            {"Key": "Name", "Value": f"vm-{n}"},
        ]
        ec2.run_instances(
            ImageId=image,
            InstanceType=INSTANCE_TYPE,
            MinCount=1,
            MaxCount=1,
            SubnetId=subnet_id,
            SecurityGroupIds=[group["GroupId"]],
            ClientToken=hashlib.sha256(f"{ZONE}/{uuid}".encode()).hexdigest(),
            TagSpecifications=[
                {"ResourceType": "instance", "Tags": tags},
                {"ResourceType": "volume", "Tags": tags},
            ],
        )
    return {"subnet": subnet_id, "group": group["GroupId"], "image": image}


def open_broker(root: Path, endpoint: str, network: dict[str, str], page_size: int) -> Any:
    from federator.broker import Broker
    from federator.config import load_settings

    policy = root / "policy.json"
    policy.write_text(json.dumps({"version": "bench-sync.1", "zones": {}}), encoding="utf-8")
    settings = load_settings(
        None,
        data_dir=root / "data",
        node_id="bench",
        broker_id=BROKER_ID,
        log_level="WARNING",
        policy_file=policy,
        flavors=[FLAVOR],
        images=[IMAGE],
        monitor={"list_batch_size": page_size},
        zones=[
            {
                "name": "local",
                "driver": "sim",
                "kind": "local",
                "options": {"persist": False},
                "aggregates": [{"name": "local", "hosts": ["*"]}],
            },
            {
                "name": ZONE,
                "driver": "aws",
                "kind": "virtual",
                "options": {
                    "stand_in": True,  # a local EC2 imitation: dummy credentials
                    "endpoint_url": endpoint,
                    "region": "us-east-1",
                    "subnet_ids": [network["subnet"]],
                    "security_group_ids": [network["group"]],
                    "flavor_map": {FLAVOR["name"]: INSTANCE_TYPE},
                    "image_map": {IMAGE["name"]: network["image"]},
                    "batch_size": page_size,
                    "read_timeout": 900,
                },
            },
        ],
    )
    return Broker.open(settings)


def record_instances(broker: Any) -> int:
    """One cell record, allocation and mapping per listed instance, matching the listing."""
    from sqlalchemy import update

    from federator.compute.context import flavor_dict
    from federator.storage.models import Allocation, Instance, InstanceMapping, Zone, utcnow

    settings = broker.settings
    flavor = settings.flavor(FLAVOR["id"])
    cell = settings.zone(ZONE).cell
    created = utcnow() - timedelta(hours=1)
    instances, allocations, mappings = [], [], []
    for batch in broker.drivers[ZONE].list_instances(settings.monitor.list_batch_size):
        for remote in batch:
            instances.append(
                Instance(
                    uuid=remote.uuid,
                    name=f"vm-{remote.uuid[-6:]}",
                    project_id=PROJECT,
                    user_id="bench",
                    flavor_id=flavor.id,
                    flavor=flavor_dict(flavor),
                    image_id=IMAGE["id"],
                    availability_zone=ZONE,
                    host=remote.host,
                    remote_id=remote.remote_id,
                    status=remote.state.value,
                    task_state=None,
                    addresses={k: list(v) for k, v in remote.addresses.items()},
                    launched_at=remote.launched_at,
                    placement={"zone": ZONE},
                    created_at=created,
                    updated_at=created,
                )
            )
            allocations.append(
                Allocation(
                    instance_uuid=remote.uuid,
                    zone=ZONE,
                    host_id=None,
                    vcpus=flavor.vcpus,
                    ram_mb=flavor.ram_mb,
                    disk_gb=flavor.disk_gb,
                )
            )
            mappings.append(
                InstanceMapping(instance_uuid=remote.uuid, cell=cell, project_id=PROJECT)
            )
    with broker.ctx.cells[cell].write() as s:
        s.add_all(instances)
    n = len(instances)
    with broker.ctx.api.write() as s:
        s.add_all(allocations)
        s.add_all(mappings)
        s.execute(
            update(Zone)
            .where(Zone.name == ZONE)
            .values(
                instances=n,
                vcpus_used=n * flavor.vcpus,
                ram_used_mb=n * flavor.ram_mb,
                disk_used_gb=n * flavor.disk_gb,
            )
        )
    return n


def page_through(driver: Any, page_size: int) -> int:
    """Every instance of the zone through the driver's client, filters and page size."""
    filters = [
        {"Name": "tag:federator:broker-id", "Values": [BROKER_ID]},
        {"Name": "tag:federator:zone", "Values": [ZONE]},
        {"Name": "instance-state-name", "Values": LIVE_STATES},
    ]
    pages = driver.ex_client.get_paginator("describe_instances").paginate(
        Filters=filters, PaginationConfig={"PageSize": page_size}
    )
    seen = 0
    for page in pages:
        for reservation in page.get("Reservations", []):
            seen += len(reservation.get("Instances", []))
    return seen


@contextmanager
def counting_writes(broker: Any) -> Iterator[list[str]]:
    """Collect the INSERT/UPDATE/DELETE statements sent to any of the broker's databases."""
    from sqlalchemy import event

    seen: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith(WRITES):
            seen.append(statement.split("\n", 1)[0][:120])

    engines = [db.engine for db, _ in broker.dbs.all()]
    for engine in engines:
        event.listen(engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", note)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--instances", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--page-size", type=int, default=500)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ["MOTO_EC2_LOAD_DEFAULT_AMIS"] = "false"  # this process only

    from federator.monitor.sync import ZoneMemory, sync_zone

    patched = patch_moto_tags()
    with tempfile.TemporaryDirectory(prefix="federator-sync-") as tmp, moto_server() as url:
        t0 = time.perf_counter()
        ec2 = ec2_client(url)
        network = launch(ec2, args.instances)
        ec2.close()
        launch_s = time.perf_counter() - t0
        broker = open_broker(Path(tmp), url, network, args.page_size)
        try:
            recorded = record_instances(broker)
            setup_s = time.perf_counter() - t0
            driver = broker.drivers[ZONE]
            memory = ZoneMemory()
            page_samples: list[float] = []
            sync_samples: list[float] = []
            writes: list[list[str]] = []
            reports = []
            for _ in range(args.repeat):
                page_s, paged = timed(lambda: page_through(driver, args.page_size))
                assert paged == recorded, (paged, recorded)
                page_samples.append(page_s)
                with counting_writes(broker) as statements:
                    sync_s, report = timed(lambda: sync_zone(broker.ctx, ZONE, memory))
                sync_samples.append(sync_s)
                writes.append(statements)
                reports.append(report)
        finally:
            broker.stop()

    page = statistics.median(page_samples)
    sync = statistics.median(sync_samples)
    ratio = sync / page
    unchanged_writes = sum(len(w) for w in writes[1:])
    result: dict[str, Any] = {
        "benchmark": "sync",
        "instances": recorded,
        "page_size": args.page_size,
        "page_s": round(page, 3),
        "sync_s": round(sync, 3),
        "ratio": round(ratio, 3),
        "target_ratio": TARGET_RATIO,
        "writes_in_unchanged_cycle": unchanged_writes,
        # The first cycle may store the zone's remote usage, unset until then.
        "writes_in_first_cycle": [s.split(" WHERE ")[0] for s in writes[0]],
        "meets_target": ratio <= TARGET_RATIO and unchanged_writes == 0,
        "samples": {
            "page_s": [round(s, 3) for s in page_samples],
            "sync_s": [round(s, 3) for s in sync_samples],
        },
        "last_cycle": reports[-1].counts(),
        "moto": {
            "version": metadata.version("moto"),
            "mode": "ThreadedMotoServer in the benchmark process, 127.0.0.1",
            "patched": f"{patched}: reads the resource's own tags instead of scanning "
            "every tag of the region (stock moto is O(n^2) in tags)",
            "default_amis_loaded": False,
        },
        "setup": {
            "launch": "RunInstances, one instance per call, with the aws driver's parameters "
            "and tags",
            "records": "cell records from the driver's listing plus allocations, mappings and "
            "zone counters, inserted through the storage models",
            "launch_s": round(launch_s, 1),
            "total_s": round(setup_s, 1),
        },
        "database": "SQLite",
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }
    if unchanged_writes:
        result["unexpected_writes"] = sorted({s for w in writes[1:] for s in w})
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
