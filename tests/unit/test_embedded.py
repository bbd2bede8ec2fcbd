"""The embedded default's EC2 stand-in: when it starts, what it seeds, the fallback."""

from __future__ import annotations

import logging
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from federator import embedded
from federator.config import STAND_IN_ZONE, FlavorConfig, Settings, builtin_zones, load_settings
from federator.embedded import StandIn, instance_type_for, prepare, uses_builtin_zones
from federator.exception import ConfigError
from tests.conftest import make_settings, sim_zone


@pytest.fixture
def builtin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.delenv("FEDERATOR_CONFIG", raising=False)
    return make_settings(tmp_path, embedded=True)


@pytest.fixture
def started(builtin: Settings) -> Iterator[tuple[Settings, StandIn]]:
    settings, stand_in = prepare(builtin)
    assert stand_in is not None
    yield settings, stand_in
    stand_in.stop()


def ec2(stand_in: StandIn) -> Any:
    return boto3.session.Session(
        aws_access_key_id="any", aws_secret_access_key="any", region_name="us-east-1"
    ).client("ec2", endpoint_url=stand_in.endpoint)


def test_only_the_builtin_zone_list_starts_it(tmp_path: Path, builtin: Settings) -> None:
    assert uses_builtin_zones(builtin)
    assert builtin.zone(STAND_IN_ZONE).options == {"stand_in": True}  # completed by prepare
    listed = make_settings(tmp_path, zones=[sim_zone("local", "local")])
    assert not uses_builtin_zones(listed)
    assert prepare(listed) == (listed, None)
    # The tests' default: the same names, the stand-in simulated, nothing started.
    simulated = make_settings(tmp_path)
    assert [z.name for z in simulated.zones] == [z.name for z in builtin_zones()]
    assert prepare(simulated) == (simulated, None)


def test_a_zone_list_from_the_environment_counts_as_configured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("FEDERATOR_CONFIG", raising=False)
    monkeypatch.setenv("FEDERATOR_ZONES", '[{"name": "rack", "driver": "sim", "kind": "local"}]')
    assert not uses_builtin_zones(load_settings(None))


def test_it_completes_the_zone_from_what_it_seeded(started: tuple[Settings, StandIn]) -> None:
    settings, stand_in = started
    zone = settings.zone(STAND_IN_ZONE)
    assert (zone.driver, zone.kind) == ("aws", "virtual")
    assert zone.label == "AWS EC2 (in-process moto stand-in, no account needed)"
    options = zone.options
    assert options["stand_in"] is True
    assert options["endpoint_url"] == stand_in.endpoint
    assert stand_in.endpoint.startswith("http://127.0.0.1:")
    assert options["region"] == "us-east-1"
    assert set(options["flavor_map"]) == {f.name for f in settings.flavors}
    assert set(options["image_map"]) == {i.id for i in settings.images}
    assert not uses_builtin_zones(settings)  # completed once: a second prepare is a no-op

    client = ec2(stand_in)
    try:
        subnet = client.describe_subnets(SubnetIds=options["subnet_ids"])["Subnets"][0]
        groups = client.describe_security_groups(GroupIds=options["security_group_ids"])
        images = client.describe_images(ImageIds=list(options["image_map"].values()))["Images"]
    finally:
        client.close()
    assert groups["SecurityGroups"][0]["VpcId"] == subnet["VpcId"]
    assert sorted(i["Name"] for i in images) == sorted(
        f"federator-{i.name}" for i in settings.images
    )
    assert stand_in.public()["endpoint"] == stand_in.endpoint


def test_a_broker_reopened_in_the_process_finds_the_same_network(
    started: tuple[Settings, StandIn], builtin: Settings
) -> None:
    first, _ = started
    again, stand_in = prepare(builtin)
    assert stand_in is not None
    try:
        for key in ("subnet_ids", "security_group_ids", "image_map"):
            assert again.zone(STAND_IN_ZONE).options[key] == first.zone(STAND_IN_ZONE).options[key]
    finally:
        stand_in.stop()


def test_stop_releases_the_port(builtin: Settings) -> None:
    _, stand_in = prepare(builtin)
    assert stand_in is not None
    host, port = stand_in.endpoint.removeprefix("http://").split(":")
    socket.create_connection((host, int(port)), timeout=2).close()
    stand_in.stop()
    stand_in.stop()  # idempotent
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, int(port)), timeout=2)


def test_without_moto_the_zone_is_simulated_and_a_warning_says_so(
    builtin: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "moto.server", None)  # import fails: ImportError
    with caplog.at_level(logging.WARNING, logger="federator.embedded"):
        settings, stand_in = prepare(builtin)
    assert stand_in is None
    zone = settings.zone(STAND_IN_ZONE)
    assert (zone.driver, zone.kind) == ("sim", "virtual")
    assert [z.name for z in settings.zones] == [z.name for z in builtin.zones]
    assert (
        "zone aws-standin: moto is not installed" in caplog.text
        and "install federator[embedded]" in caplog.text
    )


def test_a_seeding_failure_stops_the_server(
    builtin: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    stopped: list[StandIn] = []
    original = StandIn.stop

    def seed(*_args: Any) -> dict[str, Any]:
        raise RuntimeError("no network")

    def stop(self: StandIn) -> None:
        stopped.append(self)
        original(self)

    monkeypatch.setattr(embedded, "_seed", seed)
    monkeypatch.setattr(StandIn, "stop", stop)
    with pytest.raises(ConfigError, match=r"could not be seeded \(RuntimeError: no network\)"):
        prepare(builtin)
    assert len(stopped) == 1


@pytest.mark.parametrize(
    ("vcpus", "ram_mb", "expected"),
    [
        (1, 512, "t3.nano"),
        (1, 1024, "t3.micro"),
        (2, 4096, "t3.medium"),
        (4, 8192, "c5.xlarge"),
        (3, 9000, "t3.xlarge"),
        (96, 393216, "m5.24xlarge"),
        (128, 1024, None),
    ],
)
def test_flavors_map_to_the_smallest_type_that_holds_them(
    vcpus: int, ram_mb: int, expected: str | None
) -> None:
    flavor = FlavorConfig(id="x", name="x", vcpus=vcpus, ram_mb=ram_mb, disk_gb=1)
    assert instance_type_for(flavor) == expected
