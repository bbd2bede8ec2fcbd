"""Drivers the contract suite runs against.

Every test in ``tests/contract`` takes the ``driver`` fixture, which yields a ready
:class:`~federator.driver.Driver` once per entry of :data:`FACTORIES`. To put a new
driver under the suite, append one :class:`DriverFactory`::

    def _libvirt(tmp: Path) -> Driver:
        return load_zone("libvirt", {"uri": "test:///default"}, tmp)

    FACTORIES.append(DriverFactory("libvirt", _libvirt))

A factory receives an empty directory of its own (the zone's ``data_dir``) and
returns a driver for a fresh, empty zone; the fixture calls ``close()`` afterwards
and deletes anything a test left behind. Building drivers through
:func:`load_zone` goes through the real stevedore loader and options validation, as
the broker does.

Tests of server groups take ``make_group`` as well: it calls
``driver.create_server_group`` and deletes every group it made after the test, so a
real cloud under the suite keeps no leftovers. Those tests follow the driver's
``server_groups`` capability: without it they check that both group methods are refused
and change nothing. (The ``openstack-broker`` child serves ``os-server-groups`` and
keeps each group's rule on its two hosts.)

A driver installed from another package can be checked without editing this file:
``FEDERATOR_CONTRACT_DRIVERS=tiny,other pytest tests/contract`` adds one entry per
named entry point, loaded with its default options.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from federator.config import ZoneConfig
from federator.driver import Driver, ServerGroupSpec
from federator.plugins import load_driver
from tests.support_moto import (
    FAKE_ENV,
    make_network,
    moto_endpoint,
    reset_moto_server,
    strict_moto,
    test_client,
    zone_options,
)

CONTRACT_ENV = "FEDERATOR_CONTRACT_DRIVERS"
BROKER_ID = "contract-broker"


@dataclass(frozen=True)
class DriverFactory:
    """``make(data_dir)`` returns a driver for an empty zone; ``name`` is the test id."""

    name: str
    make: Callable[[Path], Driver]


def load_zone(driver: str, options: dict[str, Any], data_dir: Path) -> Driver:
    """A driver built the way the broker builds it, for a zone named ``contract``."""
    zone = ZoneConfig(name="contract", driver=driver, kind="virtual", options=options)
    return load_driver(zone, BROKER_ID, data_dir)


FACTORIES: list[DriverFactory] = [
    DriverFactory("sim-hosts", lambda tmp: load_zone("sim", {"expose_hosts": True}, tmp)),
    DriverFactory("sim-opaque", lambda tmp: load_zone("sim", {"expose_hosts": False}, tmp)),
]


# --- aws: EC2 on moto, in-process and as a server on 127.0.0.1 ----------------------------


def _closing_with(driver: Driver, stack: ExitStack) -> Driver:
    """``driver`` whose ``close()`` also unwinds ``stack`` (the mock, the environment)."""
    close = driver.close

    def close_all() -> None:
        try:
            close()
        finally:
            stack.close()

    driver.close = close_all  # type: ignore[method-assign]
    return driver


def _aws_moto(tmp: Path) -> Driver:
    from moto import mock_aws

    with ExitStack() as stack:
        stack.enter_context(strict_moto())
        stack.enter_context(mock_aws())
        network = make_network(test_client())
        driver = load_zone("aws", zone_options(network, subnet_strategy="first"), tmp)
        return _closing_with(driver, stack.pop_all())


def _aws_server(tmp: Path) -> Driver:
    endpoint = moto_endpoint()
    with ExitStack() as stack:
        stack.enter_context(mock.patch.dict(os.environ, FAKE_ENV))
        stack.enter_context(strict_moto())
        reset_moto_server(endpoint)
        network = make_network(test_client(endpoint))
        driver = load_zone(
            "aws", zone_options(network, endpoint_url=endpoint, subnet_strategy="first"), tmp
        )
        return _closing_with(driver, stack.pop_all())


FACTORIES.extend([DriverFactory("aws-moto", _aws_moto), DriverFactory("aws-server", _aws_server)])


# --- openstack: another broker as the remote cloud, through openstacksdk -----------------


def _openstack_broker(tmp: Path) -> Driver:
    """A child broker (sim hosts) on 127.0.0.1, reached through its Keystone and compute
    APIs exactly as a real OpenStack cloud would be."""
    from federator.config import _default_flavors
    from tests.conftest import make_settings, sim_zone, start_live_broker

    (tmp / "child").mkdir()
    child = make_settings(
        tmp / "child",
        # Shared pools, as a Cinder on network storage: the child, not the parent, picks
        # the hosts of a server and of a volume.
        zones=[
            sim_zone(
                "local", "local", hosts=2, host_ram_mb=16384, host_vcpus=16, volume_shared=True
            )
        ],
        policy={"version": "child-1", "zones": {}},
        flavors=[
            *(f.model_dump() for f in _default_flavors()),
            {"id": "contract", "name": "contract.tiny", "vcpus": 1, "ram_mb": 256, "disk_gb": 1},
        ],
        workers={"count": 4, "poll_interval": 0.05},
    )
    live, stop = start_live_broker(child)
    options = {
        "auth": {
            "auth_url": f"{live.url}/identity",
            "username": "admin",
            "password": live.admin_password,
            "project_name": "admin",
        },
        "wait_timeout": 30,
        "poll_interval": 0.02,
    }
    driver = load_zone("openstack", options, tmp / "zone")
    stack = ExitStack()
    stack.callback(stop)
    return _closing_with(driver, stack)


FACTORIES.append(DriverFactory("openstack-broker", _openstack_broker))


# --- libvirt: eight simulated hosts on libvirt's in-process test driver ------------------


def _libvirt_test(tmp: Path) -> Driver:
    from tests.support_libvirt import require_libvirt, zone_options

    require_libvirt()
    return load_zone("libvirt", zone_options(tmp / "hosts"), tmp)


FACTORIES.append(DriverFactory("libvirt-test", _libvirt_test))


def installed_with_defaults(name: str) -> DriverFactory:
    """The installed driver ``name`` with its default options."""
    return DriverFactory(name, lambda tmp: load_zone(name, {}, tmp))


FACTORIES.extend(
    installed_with_defaults(name)
    for name in filter(None, (n.strip() for n in os.environ.get(CONTRACT_ENV, "").split(",")))
)


@pytest.fixture(params=FACTORIES, ids=[f.name for f in FACTORIES])
def driver(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Driver]:
    made = request.param.make(tmp_path)
    try:
        yield made
    finally:
        storage = made.block_storage()
        if storage is not None:
            for volume in [v for batch in storage.list_volumes() for v in batch]:
                for attachment in volume.attachments:
                    storage.detach_volume(volume.uuid, attachment.server_uuid)
                storage.delete_volume(volume.uuid)
        leftovers = [i.uuid for batch in made.list_instances() for i in batch]
        for uuid in leftovers:
            made.delete(uuid)
        made.close()


@pytest.fixture
def make_group(driver: Driver) -> Iterator[Callable[[ServerGroupSpec], str]]:
    """``make_group(spec)`` is ``driver.create_server_group(spec)``; every group it made is
    deleted after the test (before the driver's leftover instances are)."""
    made: list[str] = []

    def make(spec: ServerGroupSpec) -> str:
        remote_id = driver.create_server_group(spec)
        made.append(remote_id)
        return remote_id

    yield make
    for remote_id in dict.fromkeys(made):
        driver.delete_server_group(remote_id)
