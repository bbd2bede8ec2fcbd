"""Behaviour of the aws driver beyond the portable contract, against moto in-process."""

from __future__ import annotations

import logging
import uuid as uuidlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
    ReadTimeoutError,
)
from moto import mock_aws
from moto.ec2.models.instances import InstanceBackend, StateReason
from pydantic import ValidationError

from drivers.aws.client import SENSITIVE_LOGGERS, CredentialLogFilter
from drivers.aws.driver import AwsDriver, client_token
from drivers.aws.errors import scrub, translate
from drivers.aws.options import AwsOptions
from drivers.aws.states import STATE_TABLE, power_state
from federator.config import ZoneConfig
from federator.driver import (
    AuthError,
    CapacityError,
    DriverError,
    FlavorSpec,
    InstanceNotFound,
    InstanceSpec,
    PermanentError,
    PowerState,
    TransientError,
    ZoneContext,
)
from federator.exception import ConfigError
from federator.plugins import load_driver
from tests import support_moto
from tests.support_moto import (
    INSTANCE_TYPES,
    Network,
    fail_run_instances,
    make_network,
    no_backoff,
    strict_moto,
    zone_options,
)

BROKER = "unit-broker"
ZONE = "aws1"
SMALL = FlavorSpec(name="m1.small", vcpus=1, ram_mb=1024, disk_gb=10)
LARGE = FlavorSpec(name="m1.large", vcpus=2, ram_mb=8192, disk_gb=40)

fast_moto_tags = support_moto.fast_moto_tags


@dataclass
class Ec2:
    client: Any  # the test's own EC2 client, to read back what the driver did
    network: Network

    def instances(self, **filters: list[str]) -> list[dict[str, Any]]:
        """Live instances matching tag filters (``{"tag:key": [values]}``)."""
        wanted = [{"Name": k, "Values": v} for k, v in filters.items()]
        wanted.append({"Name": "instance-state-name", "Values": ["pending", "running"]})
        pages = self.client.get_paginator("describe_instances").paginate(Filters=wanted)
        return [i for p in pages for r in p["Reservations"] for i in r["Instances"]]


@pytest.fixture
def ec2() -> Iterator[Ec2]:
    with strict_moto(), mock_aws():
        client = support_moto.test_client()
        yield Ec2(client, make_network(client))


@pytest.fixture
def make(ec2: Ec2, tmp_path: Path) -> Iterator[Callable[..., AwsDriver]]:
    made: list[AwsDriver] = []

    def build(zone: str = ZONE, broker_id: str = BROKER, **overrides: Any) -> AwsDriver:
        options = AwsOptions(**zone_options(ec2.network, **overrides))
        context = ZoneContext(zone=zone, broker_id=broker_id, options=options, data_dir=tmp_path)
        driver = AwsDriver(context)
        made.append(driver)
        return driver

    yield build
    for driver in made:
        driver.close()


def spec(
    n: int = 0,
    flavor: FlavorSpec = SMALL,
    image: str = "cirros",
    broker_id: str = BROKER,
    uuid: str | None = None,
) -> InstanceSpec:
    return InstanceSpec(
        uuid=uuid or str(uuidlib.UUID(int=n + 1)),
        name=f"vm-{n}",
        flavor=flavor,
        image=image,
        project_id="p1",
        broker_id=broker_id,
    )


def client_error(code: str, operation: str = "RunInstances", status: int = 400) -> ClientError:
    response = {
        "Error": {"Code": code, "Message": f"{code} happened"},
        "ResponseMetadata": {"HTTPStatusCode": status, "RequestId": "req-1"},
    }
    return ClientError(response, operation)


# --- create ------------------------------------------------------------------------------


def test_create_launches_what_the_maps_say_with_the_broker_tags(
    ec2: Ec2, make: Callable[..., AwsDriver]
) -> None:
    driver = make(flavor_map={"m1.small": INSTANCE_TYPES[1]})
    made = driver.create(spec())

    (instance,) = ec2.client.describe_instances(InstanceIds=[made.remote_id])["Reservations"][0][
        "Instances"
    ]
    assert instance["InstanceType"] == INSTANCE_TYPES[1]
    assert instance["ImageId"] == ec2.network.image_id
    assert instance["SubnetId"] in ec2.network.subnet_ids
    assert [g["GroupId"] for g in instance["SecurityGroups"]] == list(
        ec2.network.security_group_ids
    )
    tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
    assert tags == {
        "federator:instance-uuid": made.uuid,
        "federator:broker-id": BROKER,
        "federator:zone": ZONE,
        "federator:project": "p1",
        "Name": "vm-0",
    }
    volumes = ec2.client.describe_volumes(
        Filters=[{"Name": "attachment.instance-id", "Values": [made.remote_id]}]
    )["Volumes"]
    assert volumes
    assert {t["Key"]: t["Value"] for t in volumes[0]["Tags"]} == tags


def test_create_returns_the_instance_as_ec2_describes_it(
    ec2: Ec2, make: Callable[..., AwsDriver]
) -> None:
    made = make().create(spec())
    assert made.state is PowerState.ACTIVE
    assert made.remote_id.startswith("i-")
    assert made.host is None
    assert made.addresses["private"][0].startswith("10.42.")
    assert made.launched_at is not None and made.launched_at.tzinfo is not None
    assert made.extra["instance_type"] == INSTANCE_TYPES[0]
    assert made.extra["image_id"] == ec2.network.image_id
    assert made.extra["availability_zone"].startswith("us-east-1")
    assert made.extra["security_groups"] == list(ec2.network.security_group_ids)
    assert made.extra["ec2_state"] == "running"


def test_create_sends_a_deterministic_client_token(make: Callable[..., AwsDriver]) -> None:
    driver = make()
    sent: list[dict[str, Any]] = []
    driver.ex_client.meta.events.register(
        "provide-client-params.ec2.RunInstances", lambda params, **_: sent.append(dict(params))
    )
    driver.create(spec(1))
    assert sent[0]["ClientToken"] == client_token(ZONE, spec(1).uuid)
    assert len(sent[0]["ClientToken"]) <= 64
    assert client_token(ZONE, "u") == client_token(ZONE, "u") != client_token("aws2", "u")
    assert (sent[0]["MinCount"], sent[0]["MaxCount"]) == (1, 1)


def test_create_without_waiting_returns_build(make: Callable[..., AwsDriver]) -> None:
    assert make(wait_timeout=0).create(spec()).state is PowerState.BUILD


def test_subnets_spread_by_uuid_or_always_first(ec2: Ec2, make: Callable[..., AwsDriver]) -> None:
    spread = make()
    used = {spread.create(spec(n)).extra["subnet_id"] for n in range(8)}
    assert used == set(ec2.network.subnet_ids)
    assert spread.create(spec(3)).extra["subnet_id"] == spread.get(spec(3).uuid).extra["subnet_id"]

    first = make(zone="aws2", subnet_strategy="first")
    assert {first.create(spec(n)).extra["subnet_id"] for n in range(4)} == {
        ec2.network.subnet_ids[0]
    }


def test_unmapped_flavor_or_image_fails_before_launching(
    ec2: Ec2, make: Callable[..., AwsDriver]
) -> None:
    driver = make()
    with pytest.raises(PermanentError, match=r"'m1\.large' has no instance type"):
        driver.create(spec(flavor=LARGE))
    with pytest.raises(PermanentError, match=r"'ubuntu' has no AMI"):
        driver.create(spec(image="ubuntu"))
    assert ec2.instances() == []


def test_create_after_a_lost_response_finds_the_first_launch(
    ec2: Ec2, make: Callable[..., AwsDriver]
) -> None:
    """RunInstances succeeds in EC2 but the answer never arrives; the retry finds it."""
    driver = make()
    lost: list[int] = []

    def lose_response(**_: Any) -> None:
        if not lost:
            lost.append(1)
            raise ReadTimeoutError(endpoint_url="https://ec2.us-east-1.amazonaws.com/")

    driver.ex_client.meta.events.register("after-call.ec2.RunInstances", lose_response)
    wanted = spec()
    with pytest.raises(TransientError, match="ReadTimeoutError"):
        driver.create(wanted)
    assert len(ec2.instances(**{"tag:federator:instance-uuid": [wanted.uuid]})) == 1

    again = driver.create(wanted)
    (only,) = ec2.instances(**{"tag:federator:instance-uuid": [wanted.uuid]})
    assert again.remote_id == only["InstanceId"]
    assert again.state is PowerState.ACTIVE


def test_instances_of_other_brokers_and_zones_are_invisible(
    ec2: Ec2, make: Callable[..., AwsDriver]
) -> None:
    mine, other_zone = make(), make(zone="aws2")
    other_broker = make(broker_id="other-broker")
    kept = mine.create(spec(1))
    other_zone.create(spec(2))
    other_broker.create(spec(3, broker_id="other-broker"))
    assert [i.uuid for b in mine.list_instances() for i in b] == [kept.uuid]
    with pytest.raises(InstanceNotFound):
        mine.get(spec(2).uuid)
    mine.delete(spec(2).uuid)
    assert len(ec2.instances()) == 3


def test_duplicates_resolve_to_the_oldest_and_delete_removes_all(
    ec2: Ec2, make: Callable[..., AwsDriver], caplog: pytest.LogCaptureFixture
) -> None:
    driver = make()
    first = driver.create(spec())
    tags = [
        {"Key": "federator:instance-uuid", "Value": first.uuid},
        {"Key": "federator:broker-id", "Value": BROKER},
        {"Key": "federator:zone", "Value": ZONE},
    ]
    ec2.client.run_instances(
        ImageId=ec2.network.image_id,
        InstanceType=INSTANCE_TYPES[0],
        MinCount=1,
        MaxCount=1,
        SubnetId=ec2.network.subnet_ids[0],
        TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
    )
    both = ec2.instances(**{"tag:federator:instance-uuid": [first.uuid]})
    oldest = min(both, key=lambda i: (i["LaunchTime"], i["InstanceId"]))  # ids break ties
    with caplog.at_level(logging.WARNING, logger="drivers.aws.driver"):
        assert driver.get(first.uuid).remote_id == oldest["InstanceId"]
    assert "2 instances carry uuid" in caplog.text
    driver.delete(first.uuid)
    assert ec2.instances() == []


# --- power actions -------------------------------------------------------------------------


def test_power_actions_wait_for_the_end_state(make: Callable[..., AwsDriver]) -> None:
    driver = make()
    uuid = driver.create(spec()).uuid
    stopped = driver.stop(uuid)
    assert (stopped.state, stopped.extra["ec2_state"]) == (PowerState.SHUTOFF, "stopped")
    rebooted = driver.reboot(uuid, hard=True)  # a stopped instance is started instead
    assert (rebooted.state, rebooted.extra["ec2_state"]) == (PowerState.ACTIVE, "running")
    assert driver.reboot(uuid).state is PowerState.ACTIVE


def test_waiting_gives_up_after_wait_timeout(make: Callable[..., AwsDriver]) -> None:
    driver = make(wait_timeout=30, poll_interval=10)
    now = [0.0]
    driver.monotonic = lambda: now[0]  # type: ignore[method-assign]
    driver.sleep = lambda s: now.__setitem__(0, now[0] + s)  # type: ignore[method-assign]
    uuid = driver.create(spec()).uuid
    assert now[0] == 10  # one poll: moto reports running on the first describe
    driver.ex_client.meta.events.register(
        "after-call.ec2.DescribeInstances",
        lambda parsed, **_: [
            i["State"].update(Name="stopping")
            for r in parsed.get("Reservations", [])
            for i in r["Instances"]
        ],
    )
    assert driver.stop(uuid).extra["ec2_state"] == "stopping"
    assert now[0] == 40


def test_create_of_an_existing_stopped_instance_returns_it_at_once(
    make: Callable[..., AwsDriver],
) -> None:
    driver = make()
    uuid = driver.create(spec()).uuid
    driver.stop(uuid)
    slept: list[float] = []
    driver.sleep = slept.append  # type: ignore[method-assign]
    assert driver.create(spec()).state is PowerState.SHUTOFF
    assert driver.stop(uuid).state is PowerState.SHUTOFF
    assert slept == []


def test_delete_of_a_vanished_instance_succeeds(ec2: Ec2, make: Callable[..., AwsDriver]) -> None:
    driver = make()
    made = driver.create(spec())
    ec2.client.terminate_instances(InstanceIds=[made.remote_id])
    driver.delete(made.uuid)
    with pytest.raises(InstanceNotFound, match=made.uuid):
        driver.get(made.uuid)


# --- list ------------------------------------------------------------------------------------


@pytest.mark.usefixtures("fast_moto_tags")
def test_list_follows_every_page(ec2: Ec2, make: Callable[..., AwsDriver]) -> None:
    """moto pages by reservation (100 without MaxResults): 130 must all come back."""
    driver = make(batch_size=40)
    uuids = sorted(driver.create(spec(n)).uuid for n in range(130))
    pages: list[int] = []
    driver.ex_client.meta.events.register(
        "after-call.ec2.DescribeInstances",
        lambda parsed, **_: pages.append(len(parsed.get("Reservations", []))),
    )
    batches = [list(b) for b in driver.list_instances(batch_size=50)]
    assert [len(b) for b in batches] == [50, 50, 30]
    assert sorted(i.uuid for b in batches for i in b) == uuids
    assert pages == [40, 40, 40, 10]


def test_list_rejects_a_batch_size_below_one(make: Callable[..., AwsDriver]) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        next(make().list_instances(batch_size=0))


# --- faults ------------------------------------------------------------------------------------


def test_insufficient_capacity_is_a_capacity_error_and_leaves_nothing(
    ec2: Ec2, make: Callable[..., AwsDriver], monkeypatch: pytest.MonkeyPatch
) -> None:
    fail_run_instances(monkeypatch, "InsufficientInstanceCapacity")
    with pytest.raises(CapacityError, match="InsufficientInstanceCapacity") as caught:
        make().create(spec())
    assert caught.value.zone == ZONE
    assert caught.value.detail["aws_code"] == "InsufficientInstanceCapacity"
    assert ec2.instances() == []


def test_an_instance_terminated_while_launching_raises_its_state_reason(
    ec2: Ec2, make: Callable[..., AwsDriver], monkeypatch: pytest.MonkeyPatch
) -> None:
    original = InstanceBackend.run_instances

    def launch_then_lose(self: Any, *args: Any, **kwargs: Any) -> Any:
        reservation = original(self, *args, **kwargs)
        for instance in reservation.instances:
            instance.terminate()
            instance.state_reason = StateReason(
                "Server.InsufficientInstanceCapacity: Insufficient capacity.",
                "Server.InsufficientInstanceCapacity",
            )
        return reservation

    monkeypatch.setattr(InstanceBackend, "run_instances", launch_then_lose)
    with pytest.raises(CapacityError, match="terminated while launching"):
        make().create(spec())
    assert ec2.instances() == []


def test_throttling_once_is_retried_by_botocore(
    make: Callable[..., AwsDriver], monkeypatch: pytest.MonkeyPatch
) -> None:
    no_backoff(monkeypatch)
    calls = fail_run_instances(monkeypatch, "RequestLimitExceeded", times=1)
    assert make(max_attempts=3).create(spec()).state is PowerState.ACTIVE
    assert len(calls) == 2


def test_persistent_throttling_is_transient(
    ec2: Ec2, make: Callable[..., AwsDriver], monkeypatch: pytest.MonkeyPatch
) -> None:
    no_backoff(monkeypatch)
    calls = fail_run_instances(monkeypatch, "RequestLimitExceeded")
    with pytest.raises(TransientError, match="RequestLimitExceeded"):
        make(max_attempts=3).create(spec())
    assert len(calls) == 3
    assert ec2.instances() == []


def test_rejected_credentials_are_auth_errors_and_unhealthy(
    make: Callable[..., AwsDriver], monkeypatch: pytest.MonkeyPatch
) -> None:
    fail_run_instances(monkeypatch, "AuthFailure")
    driver = make()
    with pytest.raises(AuthError, match=r"credentials were rejected \(AuthFailure\)"):
        driver.create(spec())

    def reject(**_: Any) -> None:
        raise client_error("AuthFailure", "DescribeInstances")

    driver.ex_client.meta.events.register("before-call.ec2.DescribeInstances", reject)
    health = driver.health()
    assert not health.ok
    assert "credentials were rejected" in health.detail


def test_missing_credentials_are_auth_errors(
    make: Callable[..., AwsDriver], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in support_moto.FAKE_ENV.items():
        if not name.endswith(("KEY_ID", "ACCESS_KEY", "TOKEN")):
            monkeypatch.setenv(name, value)
    driver = make()
    with pytest.raises(AuthError, match="NoCredentialsError"):
        driver.create(spec())
    health = driver.health()
    assert not health.ok and "credentials were rejected" in health.detail


def test_an_unreachable_endpoint_is_unhealthy_not_an_exception(
    make: Callable[..., AwsDriver],
) -> None:
    driver = make(endpoint_url="http://127.0.0.1:9", max_attempts=1, connect_timeout=1)
    health = driver.health()
    assert not health.ok
    assert "EndpointConnectionError" in health.detail
    with pytest.raises(TransientError):
        driver.get(str(uuidlib.uuid4()))


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (client_error("InsufficientInstanceCapacity"), CapacityError),
        (client_error("InstanceLimitExceeded"), CapacityError),
        (client_error("VcpuLimitExceeded"), CapacityError),
        (client_error("MaxSpotInstanceCountExceeded"), CapacityError),
        (client_error("InsufficientHostCapacity"), CapacityError),
        (client_error("RequestLimitExceeded"), TransientError),
        (client_error("Throttling"), TransientError),
        (client_error("ThrottlingException"), TransientError),
        (client_error("ServiceUnavailable", status=503), TransientError),
        (client_error("InternalError", status=500), TransientError),
        (client_error("SomethingNew", status=502), TransientError),
        (EndpointConnectionError(endpoint_url="https://ec2.example"), TransientError),
        (ConnectTimeoutError(endpoint_url="https://ec2.example"), TransientError),
        (ReadTimeoutError(endpoint_url="https://ec2.example"), TransientError),
        (client_error("AuthFailure"), AuthError),
        (client_error("UnauthorizedOperation"), AuthError),
        (client_error("InvalidClientTokenId"), AuthError),
        (client_error("SignatureDoesNotMatch"), AuthError),
        (client_error("ExpiredToken"), AuthError),
        (NoCredentialsError(), AuthError),
        (PartialCredentialsError(provider="env", cred_var="AWS_SECRET_ACCESS_KEY"), AuthError),
        (client_error("InvalidInstanceID.NotFound"), InstanceNotFound),
        (client_error("InvalidAMIID.NotFound"), PermanentError),
        (ParamValidationError(report="bad"), PermanentError),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else "",
)
def test_translation_table(exc: Exception, kind: type[DriverError]) -> None:
    translated = translate(ZONE, "RunInstances", exc)
    assert type(translated) is kind
    assert translated.zone == ZONE
    assert "RunInstances" in translated.reason


def test_permanent_errors_keep_the_aws_code_and_message() -> None:
    err = translate(ZONE, "RunInstances", client_error("InvalidAMIID.NotFound"))
    assert err.reason == "RunInstances: InvalidAMIID.NotFound: InvalidAMIID.NotFound happened"
    assert err.detail["aws_code"] == "InvalidAMIID.NotFound"
    assert err.detail["request_id"] == "req-1"


def test_scrub_removes_credential_shapes() -> None:
    text = (
        "Credential=AKIAFEDERATORTESTKEY/20250101/us-east-1/ec2/aws4_request, "
        "Signature=abc123 x-amz-security-token:tok-123 ASIAABCDEFGHIJKLMNOP"
    )
    cleaned = scrub(text)
    for secret in ("AKIAFEDERATORTESTKEY", "abc123", "tok-123", "ASIAABCDEFGHIJKLMNOP"):
        assert secret not in cleaned
    assert len(scrub("x" * 5000)) <= 400


# --- secrets -----------------------------------------------------------------------------------

SECRETS = {
    "AWS_ACCESS_KEY_ID": "AKIAFEDERATORTESTKEY",
    "AWS_SECRET_ACCESS_KEY": "s3cr3t-federator-Zx81/Qw+unit",
    "AWS_SESSION_TOKEN": "t0ken-federator-session-Kq93",
}


def test_credentials_never_reach_messages_or_logs(
    ec2: Ec2,
    make: Callable[..., AwsDriver],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    caplog.set_level(logging.DEBUG)
    driver = make(max_attempts=2)
    no_backoff(monkeypatch)
    seen: list[str] = []

    def expect_failure(kind: type[DriverError], call: Callable[[], object]) -> None:
        with pytest.raises(kind) as caught:
            call()
        err = caught.value
        seen.extend([str(err), repr(err), err.message, err.reason, repr(err.detail)])

    made = driver.create(spec(1))
    driver.get(made.uuid)
    list(driver.list_instances())
    seen.append(driver.health().detail)
    for code, kind in [
        ("InsufficientInstanceCapacity", CapacityError),
        ("RequestLimitExceeded", TransientError),
        ("AuthFailure", AuthError),
        ("SignatureDoesNotMatch", AuthError),
    ]:
        with monkeypatch.context() as patch:
            fail_run_instances(patch, code)
            expect_failure(kind, lambda: driver.create(spec(2)))

    def lose_response(**_: Any) -> None:
        raise ReadTimeoutError(endpoint_url="https://ec2.us-east-1.amazonaws.com/")

    driver.ex_client.meta.events.register("after-call.ec2.RunInstances", lose_response)
    expect_failure(TransientError, lambda: driver.create(spec(3)))
    driver.ex_client.meta.events.unregister("after-call.ec2.RunInstances", lose_response)
    driver.delete(made.uuid)

    assert any(r.name.startswith("botocore") for r in caplog.records)  # debug was on
    logged = [r.getMessage() for r in caplog.records] + [caplog.text]
    for secret in SECRETS.values():
        assert not [line for line in seen + logged if secret in line], secret


def test_the_log_filter_guards_the_loggers_that_print_requests() -> None:
    for name in SENSITIVE_LOGGERS:
        assert any(isinstance(f, CredentialLogFilter) for f in logging.getLogger(name).filters)
    keep = logging.LogRecord("botocore.endpoint", logging.DEBUG, "", 0, "Making request", (), None)
    drop = logging.LogRecord(
        "botocore.endpoint", logging.DEBUG, "", 0, "headers=%s", ({"Authorization": "x"},), None
    )
    signing = logging.LogRecord("botocore.auth", logging.DEBUG, "", 0, "StringToSign", (), None)
    guard = CredentialLogFilter()
    assert guard.filter(keep) and not guard.filter(drop) and not guard.filter(signing)


# --- options, loading and the catalog check ----------------------------------------------------


def test_options_refuse_credentials_and_odd_values(ec2: Ec2) -> None:
    base = zone_options(ec2.network)
    for key in ("aws_access_key_id", "aws_secret_access_key", "aws_session_token"):
        with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
            AwsOptions(**base, **{key: "value"})
    with pytest.raises(ValidationError, match="must not carry credentials"):
        AwsOptions(**{**base, "endpoint_url": "http://user:pw@127.0.0.1:5000"})
    with pytest.raises(ValidationError, match="reserved by AWS"):
        AwsOptions(**{**base, "tag_prefix": "aws:mine:"})
    with pytest.raises(ValidationError, match="at least 1 item"):
        AwsOptions(**{**base, "subnet_ids": []})
    with pytest.raises(ValidationError, match="region"):
        AwsOptions(subnet_ids=["subnet-1"])
    assert AwsOptions(region="eu-west-1", subnet_ids=["subnet-1"]).batch_size == 500


def test_the_broker_loads_it_by_entry_point(ec2: Ec2, tmp_path: Path) -> None:
    zone = ZoneConfig(name=ZONE, driver="aws", kind="virtual", options=zone_options(ec2.network))
    driver = load_driver(zone, BROKER, tmp_path)
    try:
        assert isinstance(driver, AwsDriver)
        assert not driver.capabilities().host_scheduling
        assert driver.list_hosts() == []
        assert driver.health().ok
    finally:
        driver.close()
    bad = ZoneConfig(name=ZONE, driver="aws", kind="virtual", options={"subnet_ids": []})
    with pytest.raises(ConfigError, match=r"zones\.aws1\.options\.region"):
        load_driver(bad, BROKER, tmp_path)


def test_an_unknown_profile_is_a_configuration_error(
    make: Callable[..., AwsDriver], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    with pytest.raises(ConfigError, match="profile 'nosuch' is not in the shared config"):
        make(profile="nosuch")


def test_validate_catalog_lists_every_unmapped_name(make: Callable[..., AwsDriver]) -> None:
    driver = make(image_map={"cirros": "ami-12345678", "Ubuntu 24.04": "ami-87654321"})
    with pytest.raises(ConfigError) as caught:
        driver.validate_catalog(
            ["m1.small", "m1.large", "m1.xlarge"],
            {
                "img-cirros": "CirrOS",
                "img-ubuntu": "Ubuntu 24.04",
                "img-debian": "Debian 12",
                "cirros": "cirros",
            },
        )
    message = caught.value.message
    assert "flavors without an instance type in flavor_map: m1.large, m1.xlarge" in message
    assert (
        "images without an AMI in image_map: img-cirros (CirrOS), img-debian (Debian 12)" in message
    )
    assert "m1.small" not in message and "img-ubuntu" not in message


def test_images_mapped_by_name_launch_by_id(ec2: Ec2, make: Callable[..., AwsDriver]) -> None:
    driver = make(image_map={"CirrOS 0.6": ec2.network.image_id})
    driver.validate_catalog(["m1.small"], {"img-1": "CirrOS 0.6"})
    made = driver.create(spec(image="img-1"))
    assert made.extra["image_id"] == ec2.network.image_id


# --- the state table ---------------------------------------------------------------------------


def test_state_table_covers_every_ec2_state() -> None:
    model = botocore.session.get_session().get_service_model("ec2")
    names = model.shape_for("InstanceStateName").enum
    assert set(names) <= set(STATE_TABLE)
    assert {n: power_state(n) for n in names} == {
        "pending": PowerState.BUILD,
        "running": PowerState.ACTIVE,
        "shutting-down": PowerState.DELETED,
        "terminated": PowerState.DELETED,
        "stopping": PowerState.SHUTOFF,
        "stopped": PowerState.SHUTOFF,
    }
    assert power_state("rebooting") is PowerState.REBOOT
    assert power_state("melting") is PowerState.ERROR
