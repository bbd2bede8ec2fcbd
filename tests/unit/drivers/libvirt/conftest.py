"""Fixtures of the libvirt driver's unit tests: drivers on simulated hosts (libvirt's
in-process test driver), instance specs, and a way to make a host misbehave."""

from __future__ import annotations

import uuid as uuidlib
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from federator.driver import FlavorSpec, InstanceSpec, ZoneContext
from tests.conftest import STRICT
from tests.support_libvirt import HostSize, libvirt, write_hosts

if libvirt is None and not STRICT:
    # Without libvirt-python these modules cannot even be imported; test_available.py
    # reports the skip (and under FEDERATOR_TEST_STRICT=1 everything fails instead).
    collect_ignore_glob = ["test_[!a]*.py"]

if TYPE_CHECKING:
    from drivers.libvirt.driver import LibvirtDriver

BROKER = "unit-broker"
ZONE = "lv1"
SMALL = FlavorSpec(name="m1.small", vcpus=1, ram_mb=1024, disk_gb=10)
THREE_HOSTS = (HostSize(4, 8), HostSize(8, 16), HostSize(16, 32))

MakeDriver = Callable[..., "LibvirtDriver"]


def make_spec(
    host: str | None = "host1",
    *,
    n: int = 0,
    uuid: str | None = None,
    flavor: FlavorSpec = SMALL,
    broker_id: str = BROKER,
    **extra: Any,
) -> InstanceSpec:
    return InstanceSpec(
        uuid=uuid or str(uuidlib.uuid4()),
        name=extra.pop("name", f"vm-{n}"),
        flavor=flavor,
        image=extra.pop("image", "cirros"),
        project_id=extra.pop("project_id", "p1"),
        broker_id=broker_id,
        host=host,
        **extra,
    )


def libvirt_error(code: int, message: str = "simulated failure") -> libvirt.libvirtError:
    """A ``libvirtError`` carrying ``code``, as libvirt raises them."""
    libvirt.virResetLastError()
    exc = libvirt.libvirtError(message)
    exc.err = (code, libvirt.VIR_FROM_NONE, message, libvirt.VIR_ERR_ERROR, None, None, None, 0, 0)
    return exc


def define_by_hand(
    driver: LibvirtDriver, host: str, uuid: str, metadata: str | None = None
) -> libvirt.virDomain:
    """A domain someone else defined on ``host``: no broker metadata unless given."""
    root = ET.Element("domain", type="test")
    ET.SubElement(root, "name").text = f"by-hand-{uuid}"
    ET.SubElement(root, "uuid").text = uuid
    ET.SubElement(root, "memory", unit="MiB").text = "256"
    ET.SubElement(root, "vcpu").text = "1"
    ET.SubElement(ET.SubElement(root, "os"), "type").text = "hvm"
    if metadata is not None:
        ET.SubElement(root, "metadata").append(ET.fromstring(metadata))
    dom = driver.ex_connection(host).defineXML(ET.tostring(root, encoding="unicode"))
    dom.create()
    return dom


class DomainProxy:
    """A real domain, except for the methods given in ``overrides``."""

    def __init__(self, dom: libvirt.virDomain, overrides: dict[str, Callable[..., Any]]) -> None:
        self._dom = dom
        self._overrides = overrides

    def __getattr__(self, name: str) -> Any:
        return self._overrides.get(name) or getattr(self._dom, name)


class ConnectionProxy:
    """A real connection whose domains come wrapped in :class:`DomainProxy`."""

    def __init__(self, conn: libvirt.virConnect, overrides: dict[str, Callable[..., Any]]) -> None:
        self._conn = conn
        self._overrides = overrides

    def _wrap(self, dom: libvirt.virDomain) -> DomainProxy:
        return DomainProxy(dom, self._overrides)

    def lookupByUUIDString(self, uuid: str) -> DomainProxy:
        return self._wrap(self._conn.lookupByUUIDString(uuid))

    def defineXML(self, xml: str) -> DomainProxy:
        return self._wrap(self._conn.defineXML(xml))

    def listAllDomains(self, flags: int = 0) -> list[DomainProxy]:
        return [self._wrap(d) for d in self._conn.listAllDomains(flags)]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


@pytest.fixture
def host_uris(tmp_path: Path) -> dict[str, str]:
    """Three simulated hosts, host1..host3, of growing size."""
    return write_hosts(tmp_path / "hosts", THREE_HOSTS)


@pytest.fixture
def make_driver(tmp_path: Path, host_uris: dict[str, str]) -> Iterator[MakeDriver]:
    """Build drivers on the three hosts (or ``hosts=``); closed after the test.

    ``domain_overrides`` replaces domain methods on every host, e.g. a ``shutdown`` the
    guest ignores.
    """
    from drivers.libvirt.driver import LibvirtDriver
    from drivers.libvirt.options import LibvirtOptions

    made: list[LibvirtDriver] = []

    def make(
        *,
        zone: str = ZONE,
        broker_id: str = BROKER,
        domain_overrides: dict[str, Callable[..., Any]] | None = None,
        **options: Any,
    ) -> LibvirtDriver:
        options.setdefault("hosts", host_uris)
        options.setdefault("stop_timeout", 1)
        options.setdefault("stop_poll_interval", 0.01)
        context = ZoneContext(
            zone=zone,
            broker_id=broker_id,
            options=LibvirtOptions(**options),
            data_dir=tmp_path / "data",
        )
        opener: Callable[[str], Any] = libvirt.open
        if domain_overrides is not None:
            overrides = domain_overrides

            def opener(uri: str) -> Any:
                return ConnectionProxy(libvirt.open(uri), overrides)

        driver = LibvirtDriver(context, opener=opener)
        made.append(driver)
        return driver

    yield make
    for driver in made:
        driver.close()
