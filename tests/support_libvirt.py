"""Simulated libvirt hosts for the tests: libvirt's built-in test driver, one XML file per
host, opened in-process through ``test:///<dir>/<host>.xml``.

Each open of such a file is a fresh, private host whose state lives in that connection
(which is why the driver keeps one connection per host and never reopens it). A host file
describes the node's CPUs and memory, a network ``default`` and a storage pool ``images``
(whose capacity the test driver always reports as 100 GiB).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require

try:
    import libvirt
except ImportError:  # pragma: no cover - CI installs it; require() fails strict runs
    libvirt = None

POOL = "images"
NETWORK = "default"


@dataclass(frozen=True)
class HostSize:
    """A simulated host: physical CPUs and memory."""

    cpus: int
    ram_gib: int


# Eight hosts of different shapes: some run out of vCPUs first, some of RAM.
EIGHT_HOSTS: tuple[HostSize, ...] = (
    HostSize(2, 24),
    HostSize(4, 16),
    HostSize(4, 32),
    HostSize(8, 8),
    HostSize(8, 24),
    HostSize(16, 16),
    HostSize(2, 8),
    HostSize(4, 32),
)


def require_libvirt() -> None:
    """Skip without libvirt-python; under FEDERATOR_TEST_STRICT=1, fail instead."""
    require(libvirt is not None, "libvirt-python (pip install '.[libvirt]', needs libvirt-dev)")


def host_name(index: int) -> str:
    return f"host{index}"


def host_xml(size: HostSize) -> str:
    """A test-driver node document: CPUs, memory, network ``default``, pool ``images``."""
    node = ET.Element("node")
    cpu = ET.SubElement(node, "cpu")
    for tag, value in (
        ("mhz", "2400"),
        ("model", "x86_64"),
        ("active", str(size.cpus)),
        ("nodes", "1"),
        ("sockets", "1"),
        ("cores", str(size.cpus)),
        ("threads", "1"),
    ):
        ET.SubElement(cpu, tag).text = value
    ET.SubElement(node, "memory").text = str(size.ram_gib * 1024 * 1024)  # KiB
    network = ET.SubElement(node, "network")
    ET.SubElement(network, "name").text = NETWORK
    ET.SubElement(network, "bridge", name="virbr0")
    ip = ET.SubElement(network, "ip", address="192.168.122.1", netmask="255.255.255.0")
    ET.SubElement(ET.SubElement(ip, "dhcp"), "range", start="192.168.122.2", end="192.168.122.254")
    pool = ET.SubElement(node, "pool", type="dir")
    ET.SubElement(pool, "name").text = POOL
    ET.SubElement(ET.SubElement(pool, "target"), "path").text = f"/{POOL}"
    return ET.tostring(node, encoding="unicode")


def write_hosts(directory: Path, sizes: tuple[HostSize, ...] = EIGHT_HOSTS) -> dict[str, str]:
    """Write one host file per size into ``directory``; returns host name -> test URI."""
    directory.mkdir(parents=True, exist_ok=True)
    hosts: dict[str, str] = {}
    for n, size in enumerate(sizes, start=1):
        path = directory / f"{host_name(n)}.xml"
        path.write_text(host_xml(size), encoding="utf-8")
        hosts[host_name(n)] = f"test://{path.resolve()}"
    return hosts


def zone_options(directory: Path, **extra: Any) -> dict[str, Any]:
    """Options of a libvirt zone on simulated hosts written into ``directory``."""
    return {"hosts": write_hosts(directory), "stop_timeout": 2, "stop_poll_interval": 0.01, **extra}


def libvirt_zone(
    name: str, directory: Path, *, sizes: tuple[HostSize, ...] = EIGHT_HOSTS, **options: Any
) -> dict[str, Any]:
    """A local zone of the ``libvirt`` driver on simulated hosts written into ``directory``.

    Like :func:`tests.conftest.sim_zone`, it declares an aggregate of its name holding all
    its hosts, so they take instances from the start.
    """
    return {
        "name": name,
        "driver": "libvirt",
        "kind": "local",
        "options": {"hosts": write_hosts(directory, sizes), **options},
        "aggregates": [{"name": name, "hosts": ["*"]}],
    }


@pytest.fixture
def libvirt_hosts(tmp_path: Path) -> dict[str, str]:
    """Eight simulated hosts (see :data:`EIGHT_HOSTS`); skips without libvirt."""
    require_libvirt()
    return write_hosts(tmp_path / "libvirt-hosts")
