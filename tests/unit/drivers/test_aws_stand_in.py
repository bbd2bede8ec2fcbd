"""The aws driver's ``stand_in`` option: dummy credentials, loopback endpoints only."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from drivers.aws.client import STAND_IN_CREDENTIALS
from drivers.aws.driver import AwsDriver
from drivers.aws.options import AwsOptions
from federator.driver import ZoneContext
from tests import support_moto
from tests.support_moto import FAKE_ENV, make_network, moto_endpoint, zone_options

ENV_KEY = "AKIAIOSFODNN7EXAMPLE"  # AWS's documented example key, standing in for a real one


@pytest.fixture
def endpoint(monkeypatch: pytest.MonkeyPatch) -> str:
    for name, value in FAKE_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ENV_KEY)
    monkeypatch.delenv("AWS_SESSION_TOKEN")
    return moto_endpoint()


@pytest.fixture
def network_options(endpoint: str) -> dict[str, Any]:
    return zone_options(make_network(support_moto.test_client(endpoint)), endpoint_url=endpoint)


@pytest.fixture
def build(tmp_path: Path) -> Iterator[Any]:
    made: list[AwsDriver] = []

    def make(zone: str, **options: Any) -> AwsDriver:
        context = ZoneContext(
            zone=zone, broker_id="b", options=AwsOptions(**options), data_dir=tmp_path
        )
        made.append(AwsDriver(context))
        return made[-1]

    yield make
    for driver in made:
        driver.close()


def signed_with(driver: AwsDriver) -> str:
    """The access key id of the Authorization header of one real request."""
    seen: list[str] = []

    def capture(request: Any, **_kwargs: Any) -> None:
        seen.append(request.headers["Authorization"].decode())

    driver.ex_client.meta.events.register("before-send.ec2.DescribeInstances", capture)
    assert driver.health().ok
    credential = seen[0].split("Credential=", 1)[1]
    return credential.split("/", 1)[0]


def test_a_stand_in_signs_with_dummy_keys_and_leaves_the_environment_alone(
    network_options: dict[str, Any], build: Any
) -> None:
    before = dict(os.environ)
    stand_in = build("standin", **network_options, stand_in=True)
    assert signed_with(stand_in) == STAND_IN_CREDENTIALS[0]
    assert dict(os.environ) == before
    # Another zone in the same process still uses the credential chain.
    assert signed_with(build("real", **network_options)) == ENV_KEY


def test_a_stand_in_reads_no_shared_aws_configuration(
    network_options: dict[str, Any], build: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")  # stops any chain-based session
    assert signed_with(build("standin", **network_options, stand_in=True)) == "STAND-IN-NOT-A-KEY"


@pytest.mark.parametrize(
    "endpoint_url",
    [None, "http://10.0.0.8:5000", "https://ec2.us-east-1.amazonaws.com", "http://localhost:5000"],
)
def test_a_stand_in_refuses_endpoints_that_are_not_loopback(endpoint_url: str | None) -> None:
    with pytest.raises(ValidationError, match="loopback address"):
        AwsOptions(
            region="us-east-1", subnet_ids=["subnet-1"], stand_in=True, endpoint_url=endpoint_url
        )


@pytest.mark.parametrize(
    "endpoint_url", ["http://127.0.0.1:5000", "http://127.8.0.1", "http://[::1]:80"]
)
def test_a_stand_in_accepts_loopback_endpoints(endpoint_url: str) -> None:
    options = AwsOptions(
        region="us-east-1", subnet_ids=["subnet-1"], stand_in=True, endpoint_url=endpoint_url
    )
    assert options.stand_in


def test_a_stand_in_takes_no_profile() -> None:
    with pytest.raises(ValidationError, match="remove profile"):
        AwsOptions(
            region="us-east-1",
            subnet_ids=["subnet-1"],
            stand_in=True,
            endpoint_url="http://127.0.0.1:5000",
            profile="prod",
        )
