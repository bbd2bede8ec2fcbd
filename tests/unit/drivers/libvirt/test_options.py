"""Options: validated once, through the broker's loader; mistakes stop it with a message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from drivers.libvirt.driver import LibvirtDriver
from drivers.libvirt.options import DEFAULT_NAMESPACE, LibvirtOptions
from federator.config import ZoneConfig
from federator.exception import ConfigError
from federator.plugins import load_driver
from tests.unit.drivers.libvirt.conftest import BROKER

SECRET = "s3cr3t-pw"


def load(tmp_path: Path, options: dict[str, Any]) -> LibvirtDriver:
    zone = ZoneConfig(name="lv", driver="libvirt", kind="local", options=options)
    driver = load_driver(zone, BROKER, tmp_path)
    assert isinstance(driver, LibvirtDriver)
    return driver


def test_the_entry_point_loads_the_driver(tmp_path: Path, host_uris: dict[str, str]) -> None:
    driver = load(tmp_path, {"hosts": host_uris})
    try:
        assert driver.options.domain_type == "kvm"
        assert driver.options.stop_timeout == 60
        assert driver.options.metadata_namespace == DEFAULT_NAMESPACE
        assert driver.capabilities().host_scheduling
    finally:
        driver.close()


def test_unknown_keys_stop_the_broker(tmp_path: Path, host_uris: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, {"hosts": host_uris, "stop_timout": 5})
    assert "zones.lv.options.stop_timout" in caught.value.message


def test_at_least_one_host(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"options\.hosts"):
        load(tmp_path, {"hosts": {}})


@pytest.mark.parametrize(
    "uri",
    [f"root:{SECRET}@hv1/system", "test:///relative/path.txt", f"//root:{SECRET}@hv1/system"],
)
def test_bad_uris_stop_the_broker_without_echoing_them(tmp_path: Path, uri: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, {"hosts": {"hv1": uri}})
    assert "host 'hv1'" in caught.value.message
    assert SECRET not in caught.value.message


def test_two_hosts_cannot_share_a_connection_uri() -> None:
    with pytest.raises(ValidationError, match="share one URI"):
        LibvirtOptions(hosts={"a": "qemu+ssh://hv1/system", "b": "qemu+ssh://hv1/system"})
    with pytest.raises(ValidationError, match="share one URI"):
        # test:///default is one shared in-process host, whoever opens it.
        LibvirtOptions(hosts={"a": "test:///default", "b": "test:///default"})
    # Every open of a test host file is a fresh private host: the same file may repeat.
    opts = LibvirtOptions(hosts={"a": "test:///tmp/h.xml", "b": "test:///tmp/h.xml"})
    assert len(opts.hosts) == 2


def test_host_names_are_plain() -> None:
    with pytest.raises(ValidationError):
        LibvirtOptions(hosts={"bad name/1": "qemu:///system"})


def test_disk_overrides_name_known_hosts() -> None:
    opts = LibvirtOptions(hosts={"a": "qemu:///system"}, disk_gb=50, host_disk_gb={"a": 900})
    assert opts.disk_of("a") == 900
    with pytest.raises(ValidationError, match="not in hosts"):
        LibvirtOptions(hosts={"a": "qemu:///system"}, host_disk_gb={"b": 1})


def test_test_uris_always_get_test_domains() -> None:
    opts = LibvirtOptions(hosts={"a": "qemu:///system"}, domain_type="qemu")
    assert opts.domain_type_for("qemu:///system") == "qemu"
    assert opts.domain_type_for("test:///tmp/h.xml") == "test"
    assert opts.domain_type_for("test+unix:///default?socket=/s") == "test"


def test_image_volumes_need_a_pool() -> None:
    with pytest.raises(ValidationError, match="needs storage_pool"):
        LibvirtOptions(hosts={"a": "qemu:///system"}, image_volumes={"cirros": "cirros.qcow2"})


def test_metadata_namespace_is_an_absolute_uri() -> None:
    with pytest.raises(ValidationError, match="absolute URI"):
        LibvirtOptions(hosts={"a": "qemu:///system"}, metadata_namespace="federator")
