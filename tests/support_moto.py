"""moto helpers shared by the AWS driver's unit and contract tests (never product code).

* :func:`patch_moto_tags` replaces moto's O(n^2) tag lookup with a direct one, and
  :func:`fast_moto_tags` is the fixture that applies it for one test;
* :func:`strict_moto` makes moto reject unknown AMIs and instance types, as EC2 does;
* :func:`make_network` builds a VPC, subnets and a security group to launch into;
* :func:`fail_run_instances` makes RunInstances answer an AWS error (server side, so it
  works in-process and through the server alike); :func:`no_backoff` drops botocore's
  retry sleeps;
* :func:`moto_endpoint` starts one ThreadedMotoServer on 127.0.0.1 for the session.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from unittest import mock

import httpx
import pytest

REGION = "us-east-1"
# Used by the test's own clients and by the server mode; the driver reads the
# environment, never its options.
FAKE_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": "/nonexistent/aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
}
INSTANCE_TYPES = ("t3.micro", "m5.large")
_server_lock = threading.Lock()


def patch_moto_tags() -> Callable[[], None]:
    """Make moto's ``TaggedEC2Resource.get_tags`` read the resource's own tags.

    Stock moto scans every tag in the region once per instance rendered or filtered,
    which makes listing n instances O(n^2). Returns the function that undoes it.
    """
    from moto.ec2.models.core import TaggedEC2Resource
    from moto.ec2.models.tags import EC2_PREFIX_TO_RESOURCE
    from moto.ec2.utils import get_prefix

    original = TaggedEC2Resource.get_tags

    def fast_get_tags(self: Any, *args: Any, **kwargs: Any) -> list[dict[str, str]]:
        if not self.id:
            return []
        kind = EC2_PREFIX_TO_RESOURCE.get(get_prefix(self.id), "")
        return [
            {"resource_id": self.id, "key": k, "value": v, "resource_type": kind}
            for k, v in self.ec2_backend.tags.get(self.id, {}).items()
        ]

    TaggedEC2Resource.get_tags = fast_get_tags

    def undo() -> None:
        TaggedEC2Resource.get_tags = original

    return undo


@pytest.fixture
def fast_moto_tags() -> Iterator[None]:
    undo = patch_moto_tags()
    try:
        yield
    finally:
        undo()


@contextmanager
def strict_moto() -> Iterator[None]:
    """moto validates AMI ids and instance types, like EC2 (both are off by default).

    It also skips loading moto's 1,300 default AMIs into every fresh backend (half a
    second each time); :func:`make_network` registers the one image the tests use.
    """
    import moto.settings

    with (
        mock.patch.multiple(
            moto.settings, ENABLE_AMI_VALIDATION=True, EC2_ENABLE_INSTANCE_TYPE_VALIDATION=True
        ),
        mock.patch.dict(os.environ, {"MOTO_EC2_LOAD_DEFAULT_AMIS": "false"}),
    ):
        yield


@dataclass(frozen=True)
class Network:
    """What a zone launches into."""

    vpc_id: str
    subnet_ids: tuple[str, ...]
    security_group_ids: tuple[str, ...]
    image_id: str


def make_network(ec2: Any, subnets: int = 2) -> Network:
    """A VPC with ``subnets`` subnets in distinct AZs, one security group and one AMI."""
    vpc = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
    subnet_ids = tuple(
        ec2.create_subnet(
            VpcId=vpc, CidrBlock=f"10.42.{n}.0/24", AvailabilityZone=f"{REGION}{'abcdef'[n]}"
        )["Subnet"]["SubnetId"]
        for n in range(subnets)
    )
    group = ec2.create_security_group(
        GroupName="federator-test", Description="federator tests", VpcId=vpc
    )["GroupId"]
    image = ec2.register_image(Name="federator-test-image", RootDeviceName="/dev/xvda")
    return Network(vpc, subnet_ids, (group,), image["ImageId"])


_clients: dict[str | None, Any] = {}


def test_client(endpoint_url: str | None = None) -> Any:
    """The tests' own EC2 client (with explicit fake keys), built once per endpoint.

    Building a client costs a few hundred milliseconds; moto intercepts a cached
    in-process client as well as a new one.
    """
    import boto3

    with _server_lock:
        if endpoint_url not in _clients:
            _clients[endpoint_url] = boto3.session.Session().client(
                "ec2",
                region_name=REGION,
                endpoint_url=endpoint_url,
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
            )
        return _clients[endpoint_url]


def zone_options(network: Network, **overrides: Any) -> dict[str, Any]:
    """Options of a zone launching into ``network``; the test flavors and images mapped."""
    options: dict[str, Any] = {
        "region": REGION,
        "subnet_ids": list(network.subnet_ids),
        "security_group_ids": list(network.security_group_ids),
        "flavor_map": {"m1.small": INSTANCE_TYPES[0], "contract.tiny": INSTANCE_TYPES[0]},
        "image_map": {"cirros": network.image_id},
        "poll_interval": 0.01,
        "wait_timeout": 5,
        "max_attempts": 2,
        "connect_timeout": 5,
        "read_timeout": 30,
    }
    options.update(overrides)
    return options


def fail_run_instances(
    monkeypatch: pytest.MonkeyPatch, code: str, times: int | None = None
) -> list[int]:
    """Make moto's RunInstances answer AWS error ``code`` (``times`` times, or always).

    Returns the list that gets one element per RunInstances call moto received.
    """
    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.models.instances import InstanceBackend

    original = InstanceBackend.run_instances
    calls: list[int] = []

    def failing(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if times is None or len(calls) <= times:
            raise EC2ClientError(code, f"{code} (injected)")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(InstanceBackend, "run_instances", failing)
    return calls


def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore's standard retry mode without its (random, up to 20 s) sleeps."""
    monkeypatch.setattr(
        "botocore.retries.standard.ExponentialBackoff.delay_amount", lambda self, ctx: 0
    )


# --- one ThreadedMotoServer per test session -------------------------------------------

_server: list[str] = []


def moto_endpoint() -> str:
    """The URL of a ThreadedMotoServer on 127.0.0.1 (a free port), started on first use."""
    from moto.server import ThreadedMotoServer

    with _server_lock:
        if not _server:
            server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
            server.start()
            atexit.register(server.stop)
            host, port = server.get_host_and_port()
            _server.append(f"http://{host}:{port}")
        return _server[0]


def reset_moto_server(endpoint: str) -> None:
    """Wipe every resource of the server (POST /moto-api/reset)."""
    httpx.post(f"{endpoint}/moto-api/reset", timeout=10).raise_for_status()
