"""The aws driver's EBS block storage beyond the portable contract, on moto in-process.

Faults are injected server side, into moto's EBS backend (as ``fail_run_instances`` does
for instances), so the driver's own client and translation run unchanged. No botocore
Stubber is used: the codes moto cannot produce are checked on :func:`translate` itself.
"""

from __future__ import annotations

import threading
import uuid as uuidlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore.exceptions import ClientError, ReadTimeoutError
from moto import mock_aws
from moto.ec2.exceptions import EC2ClientError
from moto.ec2.models.elastic_block_store import EBSBackend, Volume
from pydantic import ValidationError

from drivers.aws.blockstorage import EbsBlockStorage, ec2_device, volume_token
from drivers.aws.driver import AwsDriver
from drivers.aws.errors import aws_code, translate
from drivers.aws.options import EBS_VOLUME_TYPES, AwsOptions
from drivers.aws.states import LIVE_ATTACHMENTS, VOLUME_STATE_TABLE, volume_state
from federator.blockstorage import (
    PoolInfo,
    RemoteAttachment,
    StorageCapabilities,
    VolumeNotFound,
    VolumeSpec,
    VolumeState,
)
from federator.driver import (
    AuthError,
    CapacityError,
    DriverError,
    FlavorSpec,
    InstanceNotFound,
    InstanceSpec,
    PermanentError,
    TransientError,
    ZoneContext,
)
from tests import support_moto
from tests.support_moto import Network, make_network, no_backoff, strict_moto, zone_options

BROKER = "unit-broker"
ZONE = "aws1"
SMALL = FlavorSpec(name="m1.small", vcpus=1, ram_mb=1024, disk_gb=10)
VOLUME_UUID_TAG = "federator:volume-uuid"


@dataclass
class Ec2:
    client: Any  # the test's own EC2 client, to read back what the driver did
    network: Network

    def volumes(self, **filters: list[str]) -> list[dict[str, Any]]:
        wanted = [{"Name": k, "Values": v} for k, v in filters.items()]
        return list(self.client.describe_volumes(Filters=wanted)["Volumes"])

    def broker_volumes(self) -> list[dict[str, Any]]:
        return self.volumes(**{"tag-key": [VOLUME_UUID_TAG]})


@pytest.fixture
def ec2() -> Iterator[Ec2]:
    with strict_moto(), mock_aws():
        client = support_moto.test_client()
        yield Ec2(client, make_network(client))


@pytest.fixture
def make(ec2: Ec2, tmp_path: Path) -> Iterator[Callable[..., AwsDriver]]:
    made: list[AwsDriver] = []

    def build(zone: str = ZONE, broker_id: str = BROKER, **overrides: Any) -> AwsDriver:
        # "first": every server in the first subnet's AZ, where the volumes are.
        overrides.setdefault("subnet_strategy", "first")
        options = AwsOptions(**zone_options(ec2.network, **overrides))
        context = ZoneContext(zone=zone, broker_id=broker_id, options=options, data_dir=tmp_path)
        driver = AwsDriver(context)
        made.append(driver)
        return driver

    yield build
    for driver in made:
        driver.close()


def vspec(n: int = 0, size_gb: int = 1, backend: str | None = None, **kw: Any) -> VolumeSpec:
    return VolumeSpec(
        uuid=kw.pop("uuid", str(uuidlib.UUID(int=1000 + n))),
        name=f"vol-{n}",
        size_gb=size_gb,
        project_id="p1",
        broker_id=kw.pop("broker_id", BROKER),
        backend=backend,
        **kw,
    )


def server(driver: AwsDriver, n: int = 0) -> str:
    spec = InstanceSpec(
        uuid=str(uuidlib.UUID(int=n + 1)),
        name=f"vm-{n}",
        flavor=SMALL,
        image="cirros",
        project_id="p1",
        broker_id=driver.context.broker_id,
    )
    return driver.create(spec).uuid


def fail_create_volume(monkeypatch: pytest.MonkeyPatch, code: str) -> list[int]:
    """Make moto's CreateVolume answer AWS error ``code``; one element per call received."""
    calls: list[int] = []

    def failing(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        raise EC2ClientError(code, f"{code} (injected)")

    monkeypatch.setattr(EBSBackend, "create_volume", failing)
    return calls


def client_error(code: str, operation: str = "AttachVolume", status: int = 400) -> ClientError:
    response = {
        "Error": {"Code": code, "Message": f"{code} happened"},
        "ResponseMetadata": {"HTTPStatusCode": status, "RequestId": "req-1"},
    }
    return ClientError(response, operation)


# --- where volumes are made ---------------------------------------------------------------


def test_a_volume_is_made_in_the_zones_az_with_the_broker_tags(
    ec2: Ec2, make: Callable[..., AwsDriver]
) -> None:
    driver = make()
    storage = driver.block_storage()
    assert storage is driver.block_storage()
    assert storage.storage_capabilities() == StorageCapabilities(shared=True, multiattach=False)
    (pool,) = storage.pools()
    assert (pool.name, pool.host, pool.capacity_gb) == ("us-east-1a", None, None)

    made = storage.create_volume(vspec(size_gb=3, pool="us-east-1a"))
    (volume,) = ec2.volumes(**{"volume-id": [made.remote_id]})
    assert volume["AvailabilityZone"] == "us-east-1a"
    assert (volume["Size"], volume["VolumeType"]) == (3, "gp3")
    assert {t["Key"]: t["Value"] for t in volume["Tags"]} == {
        VOLUME_UUID_TAG: vspec().uuid,
        "federator:broker-id": BROKER,
        "federator:zone": ZONE,
        "federator:project": "p1",
        "Name": "vol-0",
    }
    assert (made.uuid, made.size_gb, made.pool) == (vspec().uuid, 3, "us-east-1a")
    assert made.state in (VolumeState.CREATING, VolumeState.AVAILABLE)
    assert made.extra["volume_type"] == "gp3"


def test_the_az_follows_the_first_subnet(ec2: Ec2, make: Callable[..., AwsDriver]) -> None:
    driver = make(subnet_ids=list(reversed(ec2.network.subnet_ids)))
    storage = driver.block_storage()
    assert [p.name for p in storage.pools()] == ["us-east-1b"]
    made = storage.create_volume(vspec())
    assert ec2.volumes(**{"volume-id": [made.remote_id]})[0]["AvailabilityZone"] == "us-east-1b"


def test_spreading_servers_over_azs_the_volumes_cannot_follow_is_warned(
    make: Callable[..., AwsDriver], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", logger="drivers.aws.blockstorage"):
        make(subnet_strategy="first").block_storage().pools()
        assert caplog.records == []
        make(subnet_strategy="spread").block_storage().pools()
    (record,) = caplog.records
    assert "us-east-1a" in record.getMessage()
    assert "us-east-1b" in record.getMessage()


def test_the_quota_bounds_the_pool_and_refuses_what_does_not_fit(
    ec2: Ec2, make: Callable[..., AwsDriver]
) -> None:
    storage = make(volume_quota_gb=5).block_storage()
    assert storage.pools() == [
        PoolInfo("us-east-1a", None, 5, {"availability_zone": "us-east-1a", "volume_type": "gp3"})
    ]
    storage.create_volume(vspec(1, size_gb=3))
    with pytest.raises(CapacityError, match=r"3 of 5 GB in use"):
        storage.create_volume(vspec(2, size_gb=3))
    assert [v["Size"] for v in ec2.broker_volumes()] == [3]
    storage.create_volume(vspec(3, size_gb=2))  # exactly fills it


def test_backend_names_the_ebs_volume_type_and_unknown_ones_are_refused(
    ec2: Ec2, make: Callable[..., AwsDriver]
) -> None:
    storage = make(volume_type="gp2").block_storage()
    made = storage.create_volume(vspec(1, backend="st1"))
    default = storage.create_volume(vspec(2))
    assert (made.extra["volume_type"], default.extra["volume_type"]) == ("st1", "gp2")
    with pytest.raises(PermanentError, match=r"'gp9' is no EBS volume type"):
        storage.create_volume(vspec(3, backend="gp9"))
    with pytest.raises(PermanentError, match=r"no pool 'us-west-2a'"):
        storage.create_volume(vspec(4, pool="us-west-2a"))
    assert len(ec2.broker_volumes()) == 2
    with pytest.raises(ValidationError, match="must be one of"):
        AwsOptions(**zone_options(ec2.network, volume_type="fast"))
    assert {"standard", "io1", "io2", "gp2", "gp3", "sc1", "st1"} == EBS_VOLUME_TYPES


# --- idempotent create ---------------------------------------------------------------------


def test_concurrent_creates_of_one_uuid_reach_ec2_once(
    ec2: Ec2, make: Callable[..., AwsDriver], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first CreateVolume is held (server side) until another thread's lookup arrives
    or a second passes: without the per-uuid lock every thread looks, finds nothing and
    creates; with it no other lookup can arrive, and the rest find the first volume."""
    lookups: list[int] = []
    creates: list[int] = []
    another_lookup = threading.Event()
    describe, create = EBSBackend.describe_volumes, EBSBackend.create_volume

    def counted_describe(self: Any, *args: Any, **kwargs: Any) -> Any:
        lookups.append(1)
        if len(lookups) > 1:
            another_lookup.set()
        return describe(self, *args, **kwargs)

    def held_create(self: Any, *args: Any, **kwargs: Any) -> Any:
        creates.append(1)
        another_lookup.wait(timeout=1.0)
        return create(self, *args, **kwargs)

    storage = make().block_storage()
    storage.pools()  # the AZ lookup out of the way, so the threads race on the create
    monkeypatch.setattr(EBSBackend, "describe_volumes", counted_describe)
    monkeypatch.setattr(EBSBackend, "create_volume", held_create)
    start = threading.Barrier(6)

    def create_one(_: int) -> str:
        start.wait()
        return storage.create_volume(vspec()).remote_id

    with ThreadPoolExecutor(6) as pool:
        ids = set(pool.map(create_one, range(6)))
    monkeypatch.undo()
    assert len(ids) == 1
    assert len(creates) == 1
    assert [v["VolumeId"] for v in ec2.broker_volumes()] == list(ids)


def test_create_sends_a_deterministic_client_token(make: Callable[..., AwsDriver]) -> None:
    driver = make()
    sent: list[dict[str, Any]] = []
    driver.ex_client.meta.events.register(
        "provide-client-params.ec2.CreateVolume", lambda params, **_: sent.append(dict(params))
    )
    driver.block_storage().create_volume(vspec())
    assert sent[0]["ClientToken"] == volume_token(ZONE, vspec().uuid)
    assert len(sent[0]["ClientToken"]) <= 64
    assert volume_token(ZONE, "u") == volume_token(ZONE, "u") != volume_token("aws2", "u")


def test_create_after_a_lost_response_finds_the_first_volume(
    ec2: Ec2, make: Callable[..., AwsDriver]
) -> None:
    driver = make()
    lost: list[int] = []

    def lose_response(**_: Any) -> None:
        if not lost:
            lost.append(1)
            raise ReadTimeoutError(endpoint_url="https://ec2.us-east-1.amazonaws.com/")

    driver.ex_client.meta.events.register("after-call.ec2.CreateVolume", lose_response)
    with pytest.raises(TransientError, match="ReadTimeoutError"):
        driver.block_storage().create_volume(vspec())
    (first,) = ec2.broker_volumes()
    # A fresh driver, as after a broker restart: only the tags remember the volume.
    again = make().block_storage().create_volume(vspec())
    assert again.remote_id == first["VolumeId"]
    assert len(ec2.broker_volumes()) == 1


def test_root_volumes_and_other_owners_volumes_are_invisible(
    ec2: Ec2, make: Callable[..., AwsDriver]
) -> None:
    driver = make()
    server(driver)  # its root volume carries the instance's broker tags
    assert len(ec2.volumes(**{"tag:federator:broker-id": [BROKER]})) == 1
    make(zone="aws2").block_storage().create_volume(vspec(1))
    make(broker_id="other").block_storage().create_volume(vspec(2, broker_id="other"))
    storage = driver.block_storage()
    assert list(storage.list_volumes()) == []
    with pytest.raises(VolumeNotFound):
        storage.get_volume(vspec(1).uuid)
    storage.delete_volume(vspec(2).uuid)
    assert len(ec2.broker_volumes()) == 2


# --- attach and detach ---------------------------------------------------------------------


def test_attach_across_azs_is_refused_naming_both_and_attaches_nothing(
    ec2: Ec2, make: Callable[..., AwsDriver]
) -> None:
    driver = make()
    storage = driver.block_storage()
    made = storage.create_volume(vspec())
    # The same zone and broker launching into the second subnet only: a server in 1b.
    elsewhere = make(subnet_ids=[ec2.network.subnet_ids[1]])
    far = server(elsewhere)
    assert elsewhere.get(far).extra["availability_zone"] == "us-east-1b"

    with pytest.raises(PermanentError) as caught:
        storage.attach_volume(made.uuid, far, None)
    assert "us-east-1a" in caught.value.reason
    assert "us-east-1b" in caught.value.reason
    assert (caught.value.detail["volume_az"], caught.value.detail["server_az"]) == (
        "us-east-1a",
        "us-east-1b",
    )
    (volume,) = ec2.volumes(**{"volume-id": [made.remote_id]})
    assert (volume["State"], volume["Attachments"]) == ("available", [])
    assert storage.get_volume(made.uuid).attachments == ()


def test_devices_are_named_as_asked_in_ec2_form_or_the_next_free(
    ec2: Ec2, make: Callable[..., AwsDriver]
) -> None:
    driver = make()
    storage = driver.block_storage()
    vm = server(driver)
    for n in range(5):
        storage.create_volume(vspec(n))
    asked = [None, "/dev/vdc", None, "/dev/xvdh"]
    got = [storage.attach_volume(vspec(n).uuid, vm, d).device for n, d in enumerate(asked)]
    assert got == ["/dev/sdf", "/dev/sdc", "/dev/sdg", "/dev/xvdh"]
    devices = {a["VolumeId"]: a["Device"] for v in ec2.broker_volumes() for a in v["Attachments"]}
    assert sorted(devices.values()) == ["/dev/sdc", "/dev/sdf", "/dev/sdg", "/dev/xvdh"]

    last = vspec(4).uuid
    for taken in ("sdg", "/dev/xvdf", "/dev/xvda"):  # sdX and xvdX are one disk
        with pytest.raises(PermanentError, match="already in use"):
            storage.attach_volume(last, vm, taken)
    with pytest.raises(PermanentError, match="is no block device name"):
        storage.attach_volume(last, vm, "/dev/nvme1n1")
    assert storage.get_volume(last).attachments == ()
    assert storage.attach_volume(last, vm, None).device == "/dev/sdi"


def test_ec2_device_names() -> None:
    assert ec2_device("/dev/vdc") == "/dev/sdc"
    assert ec2_device("/dev/hdd") == "/dev/sdd"
    assert ec2_device("vdf") == "/dev/sdf"
    assert ec2_device("/dev/xvdc") == "/dev/xvdc"
    assert ec2_device("/dev/sdc") == "/dev/sdc"
    assert ec2_device("/dev/nvme1n1") is None
    assert ec2_device("/dev/sdc; rm -rf /") is None


def test_attachments_name_the_broker_server_and_repeat_as_they_are(
    ec2: Ec2, make: Callable[..., AwsDriver]
) -> None:
    driver = make()
    storage = driver.block_storage()
    vm = server(driver)
    made = storage.create_volume(vspec())
    first = storage.attach_volume(made.uuid, vm, "/dev/vdd")
    assert first == RemoteAttachment(server_uuid=vm, device="/dev/sdd")
    assert storage.attach_volume(made.uuid, vm, None) == first  # not a second device
    got = storage.get_volume(made.uuid)
    assert (got.state, got.attachments) == (VolumeState.IN_USE, (first,))
    (volume,) = ec2.volumes(**{"volume-id": [made.remote_id]})
    assert [a["InstanceId"] for a in volume["Attachments"]] == [driver.get(vm).remote_id]

    with pytest.raises(PermanentError, match="attached to"):
        storage.delete_volume(made.uuid)
    storage.detach_volume(made.uuid, str(uuidlib.uuid4()))  # not attached there: nothing
    assert storage.get_volume(made.uuid).attachments == (first,)
    storage.detach_volume(made.uuid, vm)
    storage.detach_volume(made.uuid, vm)
    assert ec2.volumes(**{"volume-id": [made.remote_id]})[0]["State"] == "available"
    storage.delete_volume(made.uuid)
    assert ec2.broker_volumes() == []


def test_a_detach_ec2_has_not_finished_is_transient_until_it_has(
    ec2: Ec2, make: Callable[..., AwsDriver], monkeypatch: pytest.MonkeyPatch
) -> None:
    # moto detaches at once; a real EC2 lists the attachment ("detaching") for a while.
    # Holding back moto's DetachVolume stands in for that delay.
    driver = make(wait_timeout=0)
    storage = driver.block_storage()
    vm = server(driver)
    made = storage.create_volume(vspec())
    storage.attach_volume(made.uuid, vm, None)
    real = storage._client.detach_volume
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(storage._client, "detach_volume", lambda **kw: sent.append(kw))
    with pytest.raises(TransientError, match="still attached"):
        storage.detach_volume(made.uuid, vm)
    assert len(sent) == 1 and storage.get_volume(made.uuid).state == VolumeState.IN_USE
    monkeypatch.setattr(storage._client, "detach_volume", real)
    storage.detach_volume(made.uuid, vm)  # the retry: now EC2 has let go
    assert storage.get_volume(made.uuid).attachments == ()


def test_attach_to_a_terminated_server_is_instance_not_found(
    ec2: Ec2, make: Callable[..., AwsDriver]
) -> None:
    driver = make()
    storage = driver.block_storage()
    vm = server(driver)
    made = storage.create_volume(vspec())
    driver.delete(vm)
    with pytest.raises(InstanceNotFound):
        storage.attach_volume(made.uuid, vm, None)
    with pytest.raises(VolumeNotFound):
        storage.attach_volume(str(uuidlib.uuid4()), vm, None)


def test_an_instance_the_broker_does_not_own_is_named_by_its_id(
    ec2: Ec2, make: Callable[..., AwsDriver]
) -> None:
    storage = make().block_storage()
    made = storage.create_volume(vspec())
    foreign = ec2.client.run_instances(
        ImageId=ec2.network.image_id,
        InstanceType=support_moto.INSTANCE_TYPES[0],
        MinCount=1,
        MaxCount=1,
        SubnetId=ec2.network.subnet_ids[0],
    )["Instances"][0]["InstanceId"]
    ec2.client.attach_volume(VolumeId=made.remote_id, InstanceId=foreign, Device="/dev/sdk")
    assert storage.get_volume(made.uuid).attachments == (RemoteAttachment(foreign, "/dev/sdk"),)
    storage.detach_volume(made.uuid, foreign)
    assert storage.get_volume(made.uuid).attachments == ()


def test_listing_reads_each_batchs_servers_in_one_call(
    ec2: Ec2, make: Callable[..., AwsDriver]
) -> None:
    driver = make()
    storage = driver.block_storage()
    vms = [server(driver, n) for n in range(3)]
    for n, vm in enumerate(vms):
        storage.create_volume(vspec(n))
        storage.attach_volume(vspec(n).uuid, vm, None)
    storage.create_volume(vspec(9))  # not attached
    calls: list[str] = []
    driver.ex_client.meta.events.register(
        "before-call.ec2.DescribeInstances", lambda **_: calls.append("DescribeInstances")
    )
    batches = list(storage.list_volumes(2))
    assert [len(b) for b in batches] == [2, 2]
    assert len(calls) == len(batches)
    seen = {v.uuid: v for b in batches for v in b}
    assert {u: [a.server_uuid for a in v.attachments] for u, v in seen.items()} == {
        **{vspec(n).uuid: [vm] for n, vm in enumerate(vms)},
        vspec(9).uuid: [],
    }
    assert all(v.created_at is not None and v.created_at.tzinfo for v in seen.values())
    with pytest.raises(ValueError, match="at least 1"):
        next(storage.list_volumes(0))


def test_a_volume_still_creating_is_reported_so_and_not_yet_attached_or_deleted(
    ec2: Ec2, make: Callable[..., AwsDriver], monkeypatch: pytest.MonkeyPatch
) -> None:
    """EC2 reports a new volume ``creating`` for a while (moto never does, so moto is
    told to)."""
    driver = make()
    storage = driver.block_storage()
    vm = server(driver)
    monkeypatch.setattr(Volume, "status", property(lambda self: "creating"))
    made = storage.create_volume(vspec())
    assert storage.get_volume(made.uuid).state is VolumeState.CREATING
    with pytest.raises(TransientError, match="still creating"):
        storage.attach_volume(made.uuid, vm, None)
    with pytest.raises(TransientError, match="still creating"):
        storage.delete_volume(made.uuid)
    monkeypatch.undo()
    assert storage.get_volume(made.uuid).state is VolumeState.AVAILABLE
    assert ec2.volumes(**{"volume-id": [made.remote_id]})[0]["Attachments"] == []


# --- errors ----------------------------------------------------------------------------------


def test_volume_limits_are_capacity_errors_and_leave_nothing(
    ec2: Ec2, make: Callable[..., AwsDriver], monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = make().block_storage()
    for code in ("VolumeLimitExceeded", "InsufficientVolumeCapacity"):
        fail_create_volume(monkeypatch, code)
        with pytest.raises(CapacityError, match=code) as caught:
            storage.create_volume(vspec())
        assert aws_code(caught.value) == code
    assert ec2.broker_volumes() == []


def test_persistent_throttling_of_create_is_transient(
    ec2: Ec2, make: Callable[..., AwsDriver], monkeypatch: pytest.MonkeyPatch
) -> None:
    no_backoff(monkeypatch)
    calls = fail_create_volume(monkeypatch, "RequestLimitExceeded")
    with pytest.raises(TransientError, match="RequestLimitExceeded"):
        make(max_attempts=3).block_storage().create_volume(vspec())
    assert len(calls) == 3
    assert ec2.broker_volumes() == []


def test_a_volume_deleted_behind_the_drivers_back_is_not_found_then_gone(
    ec2: Ec2, make: Callable[..., AwsDriver], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Moto answers InvalidVolume.NotFound for a volume deleted between the lookup and
    the call; delete treats it as done, get as not found."""
    storage = make().block_storage()
    made = storage.create_volume(vspec())
    original = EBSBackend.delete_volume

    def vanish_first(self: Any, volume_id: str) -> Any:
        original(self, volume_id)
        return original(self, volume_id)  # the second delete: InvalidVolume.NotFound

    monkeypatch.setattr(EBSBackend, "delete_volume", vanish_first)
    storage.delete_volume(made.uuid)
    assert ec2.broker_volumes() == []
    with pytest.raises(VolumeNotFound) as caught:
        storage.get_volume(made.uuid)
    assert caught.value.zone == ZONE


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("VolumeLimitExceeded", CapacityError),
        ("InsufficientVolumeCapacity", CapacityError),
        ("VolumeTypeNotAvailableInZone", CapacityError),
        ("InvalidVolume.NotFound", VolumeNotFound),
        ("InvalidInstanceID.NotFound", InstanceNotFound),
        ("VolumeInUse", PermanentError),
        ("IncorrectState", PermanentError),
        ("InvalidVolume.ZoneMismatch", PermanentError),
        ("InvalidAttachment.NotFound", PermanentError),
        ("RequestLimitExceeded", TransientError),
        ("Throttling", TransientError),
        ("AuthFailure", AuthError),
        ("UnauthorizedOperation", AuthError),
    ],
)
def test_volume_translation_table(code: str, kind: type[DriverError]) -> None:
    err = translate(ZONE, "AttachVolume", client_error(code), about="volume")
    assert type(err) is kind
    assert (err.zone, aws_code(err)) == (ZONE, code)
    assert "AttachVolume" in err.reason


def test_incorrect_state_stays_transient_for_instances() -> None:
    err = translate(ZONE, "StopInstances", client_error("IncorrectState", "StopInstances"))
    assert type(err) is TransientError


def test_volume_state_tables_cover_every_ebs_state() -> None:
    model = botocore.session.get_session().get_service_model("ec2")
    names = model.shape_for("VolumeState").enum
    assert set(names) == set(VOLUME_STATE_TABLE)
    assert {n: volume_state(n) for n in names} == {
        "creating": VolumeState.CREATING,
        "available": VolumeState.AVAILABLE,
        "in-use": VolumeState.IN_USE,
        "deleting": VolumeState.DELETED,
        "deleted": VolumeState.DELETED,
        "error": VolumeState.ERROR,
    }
    assert volume_state("something-new") is VolumeState.ERROR
    attachment_states = set(model.shape_for("VolumeAttachmentState").enum)
    assert attachment_states - LIVE_ATTACHMENTS == {"detached"}


def test_block_storage_is_one_object_built_without_calling_ec2(
    make: Callable[..., AwsDriver],
) -> None:
    driver = make()
    calls: list[str] = []
    driver.ex_client.meta.events.register("before-call.ec2.*", lambda **kw: calls.append("x"))
    storage = driver.block_storage()
    assert isinstance(storage, EbsBlockStorage)
    assert driver.block_storage() is storage
    assert calls == []
