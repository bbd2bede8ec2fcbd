"""Remote look-ups by the broker's id are answered by the remote side's filters.

The ``openstack`` driver finds a server by its broker uuid with one server list filtered
by name (the uuid is part of the remote name), not by reading every server of the remote
project; the ``aws`` driver does so with a DescribeInstances filter on the uuid tag. The
requests are counted at the HTTP session (openstack) and at botocore's event hooks (aws):
both observe what is sent and change nothing.
"""

from __future__ import annotations

import uuid as uuidlib
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from drivers.openstack.driver import OpenStackDriver
from federator.blockstorage import VolumeSpec
from federator.driver import Driver, InstanceNotFound, InstanceSpec, PermanentError
from tests.contract.conftest import _aws_moto, _openstack_broker
from tests.contract.test_driver_contract import FLAVOR, make_spec

NOISE = 30  # servers of the remote project that are not the one looked up


@dataclass
class Call:
    method: str
    path: str
    query: dict[str, list[str]]
    servers: int | None  # servers in a list answer


@dataclass
class Recorder:
    """Every compute request a driver's openstacksdk session sends, with how many
    servers a list answer held."""

    calls: list[Call] = field(default_factory=list)

    def compute(self) -> list[Call]:
        return [c for c in self.calls if "/servers" in c.path]

    def clear(self) -> None:
        self.calls.clear()


def record(driver: OpenStackDriver) -> Recorder:
    rec = Recorder()
    session = driver.conn.session
    send = session.request

    def counting(url: str, method: str, *args: Any, **kwargs: Any) -> Any:
        resp = send(url, method, *args, **kwargs)
        parts = urlsplit(str(resp.url) if getattr(resp, "url", None) else url)
        servers = None
        if method.upper() == "GET" and parts.path.rstrip("/").endswith("/servers/detail"):
            servers = len(resp.json().get("servers", []))
        rec.calls.append(Call(method.upper(), parts.path, parse_qs(parts.query), servers))
        return resp

    session.request = counting
    return rec


@pytest.fixture
def openstack(tmp_path: Path) -> Iterator[OpenStackDriver]:
    driver = _openstack_broker(tmp_path)
    assert isinstance(driver, OpenStackDriver)
    try:
        yield driver
    finally:
        for uuid in [i.uuid for batch in driver.list_instances() for i in batch]:
            driver.delete(uuid)
        conn = driver.conn
        for server in list(conn.compute.servers(details=False)):
            conn.compute.delete_server(server.id, ignore_missing=True)
        driver.close()


def fresh(driver: OpenStackDriver) -> OpenStackDriver:
    """Another driver object for the same zone: nothing learnt yet."""
    again = OpenStackDriver(driver.context)
    again.sleep = driver.sleep  # type: ignore[method-assign]
    again.clock = driver.clock  # type: ignore[method-assign]
    return again


def add_servers(driver: OpenStackDriver, count: int, **metadata: str) -> list[str]:
    """``count`` servers made straight in the remote project (not through the driver)."""
    conn = driver.conn
    flavor = conn.compute.find_flavor("contract.tiny", ignore_missing=False)
    ids = []
    for n in range(count):
        made = conn.compute.create_server(
            name=f"noise-{n}",
            flavor_id=flavor.id,
            image_id="cirros",
            networks="auto",
            metadata=metadata,
        )
        ids.append(str(made.id))
    return ids


def _with_noise(driver: OpenStackDriver) -> InstanceSpec:
    spec = make_spec(driver)
    driver.create(spec)
    add_servers(driver, NOISE // 2)
    # Servers of another broker: the same keys, another id.
    add_servers(
        driver,
        NOISE - NOISE // 2,
        **{"federator:broker-id": "someone-else", "federator:instance-uuid": spec.uuid},
    )
    return spec


def test_a_server_is_found_with_one_remote_filtered_list(openstack: OpenStackDriver) -> None:
    spec = _with_noise(openstack)
    reader = fresh(openstack)
    rec = record(reader)

    found = reader.get(spec.uuid)

    assert found.uuid == spec.uuid
    assert spec.uuid in str(found.extra["remote_name"])
    calls = rec.compute()
    assert [(c.method, c.query.get("name"), c.servers) for c in calls] == [("GET", [spec.uuid], 1)]
    # Known from then on: one GET of that server.
    rec.clear()
    assert reader.stop(spec.uuid).uuid == spec.uuid
    assert all("name" not in c.query for c in rec.compute())
    assert rec.compute()[0].path.endswith(f"/servers/{found.remote_id}")


def test_a_miss_scans_at_most_once_and_never_after_a_listing(
    openstack: OpenStackDriver,
) -> None:
    _with_noise(openstack)
    reader = fresh(openstack)
    rec = record(reader)

    first, second = str(uuidlib.uuid4()), str(uuidlib.uuid4())
    for uuid in (first, second):
        with pytest.raises(InstanceNotFound):
            reader.get(uuid)
    scans = [c for c in rec.compute() if c.servers is not None and "name" not in c.query]
    filtered = [c.query["name"] for c in rec.compute() if "name" in c.query]
    assert filtered == [[first], [second]]
    assert len(scans) == 1 and scans[0].servers is not None and scans[0].servers > NOISE

    listed = fresh(openstack)
    assert len([i for batch in listed.list_instances() for i in batch]) == 1
    rec = record(listed)
    with pytest.raises(InstanceNotFound):
        listed.get(first)
    assert [(c.query.get("name"), c.servers) for c in rec.compute()] == [([first], 0)]


def test_a_server_named_without_its_uuid_is_still_found(openstack: OpenStackDriver) -> None:
    """A server made before remote names carried the uuid (its name is only the broker's
    name for it) is found by the one scan, and by its id after that."""
    _with_noise(openstack)
    old = str(uuidlib.uuid4())
    (remote_id,) = add_servers(
        openstack,
        1,
        **{
            "federator:broker-id": openstack.context.broker_id,
            "federator:instance-uuid": old,
            "federator:project": "contract-project",
        },
    )
    reader = fresh(openstack)
    rec = record(reader)

    assert reader.get(old).remote_id == remote_id
    rec.clear()
    assert reader.get(old).remote_id == remote_id
    assert [c.path for c in rec.compute()] == [rec.compute()[0].path]
    assert rec.compute()[0].path.endswith(f"/servers/{remote_id}")

    reader.delete(old)
    with pytest.raises(InstanceNotFound):
        fresh(openstack).get(old)


def test_a_long_name_keeps_the_whole_uuid_within_nova_limits(
    openstack: OpenStackDriver,
) -> None:
    spec = make_spec(openstack)
    long = replace(spec, name="x" * 300)
    made = openstack.create(long)
    name = str(made.extra["remote_name"])
    assert len(name) == 255 and name.endswith(f"-{spec.uuid}")
    assert fresh(openstack).get(spec.uuid).remote_id == made.remote_id


# --- aws: DescribeInstances with the uuid tag, on moto ----------------------------------


@pytest.fixture
def aws(tmp_path: Path) -> Iterator[Driver]:
    driver = _aws_moto(tmp_path)
    try:
        yield driver
    finally:
        for uuid in [i.uuid for batch in driver.list_instances() for i in batch]:
            driver.delete(uuid)
        driver.close()


def describe_calls(client: Any, operation: str) -> list[dict[str, Any]]:
    """The parameters of every ``operation`` call ``client`` makes from now on."""
    seen: list[dict[str, Any]] = []

    def note(params: dict[str, Any], **_: Any) -> None:
        seen.append(params)

    hook: Callable[..., None] = note
    client.meta.events.register(f"provide-client-params.ec2.{operation}", hook)
    return seen


def test_an_aws_instance_is_found_with_a_tag_filter(aws: Driver) -> None:
    spec = make_spec(aws)
    aws.create(spec)
    for n in range(5):
        aws.create(make_spec(aws, n + 1))
    client = aws.ex_client  # type: ignore[attr-defined]
    seen = describe_calls(client, "DescribeInstances")

    assert aws.get(spec.uuid).uuid == spec.uuid

    assert len(seen) == 1
    filters = {f["Name"]: f["Values"] for f in seen[0]["Filters"]}
    assert filters["tag:federator:instance-uuid"] == [spec.uuid]
    assert filters["tag:federator:broker-id"] == [aws.context.broker_id]
    assert "InstanceIds" not in seen[0]


def test_an_aws_volume_is_found_with_a_tag_filter(aws: Driver) -> None:
    storage = aws.block_storage()
    assert storage is not None
    pool = storage.pools()[0].name
    specs = [
        VolumeSpec(
            uuid=str(uuidlib.uuid4()),
            name=f"v{n}",
            size_gb=1,
            project_id="contract-project",
            broker_id=aws.context.broker_id,
            pool=pool,
        )
        for n in range(4)
    ]
    for spec in specs:
        storage.create_volume(spec)
    seen = describe_calls(aws.ex_client, "DescribeVolumes")  # type: ignore[attr-defined]

    assert storage.get_volume(specs[0].uuid).uuid == specs[0].uuid

    assert len(seen) == 1
    filters = {f["Name"]: f["Values"] for f in seen[0]["Filters"]}
    assert filters["tag:federator:volume-uuid"] == [specs[0].uuid]


def test_flavors_are_found_without_the_deprecated_ignore_missing(
    openstack: OpenStackDriver,
) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        made = openstack.create(make_spec(openstack))
        with pytest.raises(PermanentError, match="no flavor 'no-such-flavor'"):
            openstack.create(
                replace(make_spec(openstack), flavor=replace(FLAVOR, name="no-such-flavor"))
            )
    assert made.uuid
    assert not [w for w in caught if "ignore_missing" in str(w.message)]


def test_attached_servers_of_listed_volumes_are_read_one_by_one(
    openstack: OpenStackDriver,
) -> None:
    first = _with_noise(openstack)
    second = make_spec(openstack, 1)
    openstack.create(second)
    storage = openstack.block_storage()
    assert storage is not None
    pool = storage.pools()[0].name
    attached = {}
    for server in (first, second):
        volume = VolumeSpec(
            uuid=str(uuidlib.uuid4()),
            name="data",
            size_gb=1,
            project_id="contract-project",
            broker_id=openstack.context.broker_id,
            pool=pool,
        )
        storage.create_volume(volume)
        storage.attach_volume(volume.uuid, server.uuid, None)
        attached[volume.uuid] = server.uuid
    reader = fresh(openstack)
    rec = record(reader)
    fresh_storage = reader.block_storage()
    assert fresh_storage is not None

    listed = [v for batch in fresh_storage.list_volumes() for v in batch]

    assert {v.uuid: [a.server_uuid for a in v.attachments] for v in listed} == {
        v: [s] for v, s in attached.items()
    }
    assert [c.servers for c in rec.compute() if c.servers is not None] == []
    for volume_uuid, server_uuid in attached.items():
        storage.detach_volume(volume_uuid, server_uuid)
