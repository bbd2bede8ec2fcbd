"""Domain XML: what a broker instance becomes, parsed back; and the metadata round trip."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import pytest

from drivers.libvirt.domainxml import (
    RootDisk,
    domain_name,
    domain_xml,
    parse_metadata,
    volume_format,
    volume_xml,
    xml_safe,
)
from drivers.libvirt.options import DEFAULT_NAMESPACE
from federator.driver import FlavorSpec
from tests.unit.drivers.libvirt.conftest import BROKER, ZONE, make_spec

NS = {"f": DEFAULT_NAMESPACE}
WHEN = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
HOSTILE = "</name><evil attr='x'/>&amp; \"quoted\" ]]> <!-- -->"


def build(**kwargs: object) -> ET.Element:
    spec = kwargs.pop("spec", None) or make_spec()
    options = {
        "zone": ZONE,
        "domain_type": "kvm",
        "namespace": DEFAULT_NAMESPACE,
        "created_at": WHEN,
        "network": "default",
        **kwargs,
    }
    return ET.fromstring(domain_xml(spec, **options))  # type: ignore[arg-type]


def test_domain_carries_uuid_size_and_name() -> None:
    spec = make_spec(flavor=FlavorSpec("m1.medium", vcpus=2, ram_mb=4096, disk_gb=40))
    root = build(spec=spec)
    assert root.tag == "domain"
    assert root.get("type") == "kvm"
    assert root.findtext("uuid") == spec.uuid
    assert root.findtext("name") == domain_name(spec.uuid) == f"instance-{spec.uuid}"
    memory = root.find("memory")
    assert memory is not None
    assert (memory.get("unit"), memory.text) == ("MiB", "4096")
    assert root.findtext("currentMemory") == "4096"
    assert root.findtext("vcpu") == "2"
    assert root.findtext("os/type") == "hvm"
    assert root.find("features/acpi") is not None  # lets the guest hear a shutdown request


def test_network_interface_only_when_a_network_is_given() -> None:
    with_net = build(network="default")
    source = with_net.find("devices/interface/source")
    assert source is not None
    assert source.get("network") == "default"
    assert build(network=None).find("devices/interface") is None


def test_disk_only_with_a_root_volume() -> None:
    assert build().find("devices/disk") is None
    root = build(disk=RootDisk("images", "instance-x.qcow2"))
    source = root.find("devices/disk/source")
    assert source is not None
    assert (source.get("pool"), source.get("volume")) == ("images", "instance-x.qcow2")


def test_arch_and_machine_are_set_when_configured() -> None:
    os_type = build(arch="aarch64", machine="virt").find("os/type")
    assert os_type is not None
    assert (os_type.get("arch"), os_type.get("machine")) == ("aarch64", "virt")


def test_metadata_holds_the_broker_facts_in_its_namespace() -> None:
    spec = make_spec(
        name="web-1", project_id="p9", image="img-1", metadata={"role": "web", "tier": "1"}
    )
    root = build(spec=spec)
    info = root.find("metadata/f:instance", NS)
    assert info is not None
    assert info.findtext("f:broker-id", namespaces=NS) == BROKER
    assert info.findtext("f:zone", namespaces=NS) == ZONE
    assert info.findtext("f:name", namespaces=NS) == "web-1"
    assert info.findtext("f:project-id", namespaces=NS) == "p9"
    assert info.findtext("f:image", namespaces=NS) == "img-1"
    assert info.findtext("f:created-at", namespaces=NS) == WHEN.isoformat()
    flavor = info.find("f:flavor", NS)
    assert flavor is not None
    assert flavor.attrib == {"name": "m1.small", "vcpus": "1", "ram-mb": "1024", "disk-gb": "10"}
    items = {i.get("key"): i.text for i in info.findall("f:metadata/f:item", NS)}
    assert items == {"role": "web", "tier": "1"}


def test_hostile_names_and_metadata_are_escaped_by_the_library() -> None:
    spec = make_spec(name=HOSTILE, metadata={HOSTILE: HOSTILE, "k": "a\x00b\x1fc"})
    text = domain_xml(
        spec, zone=ZONE, domain_type="kvm", namespace=DEFAULT_NAMESPACE, created_at=WHEN
    )
    root = ET.fromstring(text)  # still one well-formed document
    assert root.find(".//evil") is None
    assert [c.tag for c in root].count("name") == 1
    info = root.find("metadata/f:instance", NS)
    assert info is not None
    assert info.findtext("f:name", namespaces=NS) == HOSTILE
    items = {i.get("key"): i.text for i in info.findall("f:metadata/f:item", NS)}
    # Characters XML cannot carry at all become U+FFFD instead of breaking the document.
    assert items == {HOSTILE: HOSTILE, "k": "a\ufffdb\ufffdc"}
    assert root.findtext("title") == " ".join(HOSTILE.split())


def test_xml_safe_keeps_what_xml_can_carry() -> None:
    assert xml_safe("tab\there\nnewline é 😀") == "tab\there\nnewline é 😀"
    assert xml_safe("\x00\x08\x0b\ufffe") == "\ufffd" * 4


def test_parse_metadata_reads_what_libvirt_returns() -> None:
    # virDomainGetMetadata returns the element without its namespace prefix.
    text = (
        "<instance><broker-id>b</broker-id><zone>z</zone><name>n</name>"
        "<project-id>p</project-id><flavor name='f' vcpus='2' ram-mb='512' disk-gb='3'/>"
        "<image>i</image><created-at>2025-03-04T05:06:07+00:00</created-at>"
        "<metadata><item key='a'>1</item></metadata></instance>"
    )
    meta = parse_metadata(text)
    assert meta is not None
    assert (meta.broker_id, meta.zone, meta.name, meta.project_id) == ("b", "z", "n", "p")
    assert (meta.flavor, meta.vcpus, meta.ram_mb, meta.disk_gb) == ("f", 2, 512, 3)
    assert meta.created_at == WHEN
    assert dict(meta.metadata) == {"a": "1"}


@pytest.mark.parametrize(
    "text",
    [
        "not xml",
        "<other><broker-id>b</broker-id><zone>z</zone></other>",
        "<instance><zone>z</zone></instance>",
        "<instance><broker-id>b</broker-id></instance>",
    ],
)
def test_parse_metadata_rejects_what_is_not_broker_metadata(text: str) -> None:
    assert parse_metadata(text) is None


def test_parse_metadata_survives_bad_numbers_and_dates() -> None:
    meta = parse_metadata(
        "<instance><broker-id>b</broker-id><zone>z</zone><flavor vcpus='x'/>"
        "<created-at>yesterday</created-at></instance>"
    )
    assert meta is not None
    assert (meta.vcpus, meta.created_at) == (0, None)


def test_volume_xml_is_a_thin_overlay() -> None:
    root = ET.fromstring(volume_xml("v.qcow2", 10 * 1024**3, "/images/base.img", "raw"))
    assert root.findtext("name") == "v.qcow2"
    assert root.findtext("capacity") == str(10 * 1024**3)
    assert root.findtext("allocation") == "0"
    assert root.findtext("backingStore/path") == "/images/base.img"
    fmt = root.find("backingStore/format")
    assert fmt is not None
    assert fmt.get("type") == "raw"
    assert volume_format("<volume><target><format type='raw'/></target></volume>") == "raw"
    assert volume_format("garbage") == "qcow2"
