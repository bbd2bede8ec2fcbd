"""Domain XML for a broker instance, and the broker's metadata read back from a domain.

Everything is built with :mod:`xml.etree.ElementTree`, so names and metadata values are
escaped by the library, never by string formatting. Characters that XML 1.0 cannot carry
at all (most control characters) are replaced with U+FFFD first; libvirt would refuse
the whole document otherwise.

The broker's facts about an instance live in the domain's ``<metadata>``, in one element
of the zone's namespace (``https://federator.dev/xmlns/instance/1`` by default)::

    <federator:instance xmlns:federator="https://federator.dev/xmlns/instance/1">
      <federator:broker-id>federator</federator:broker-id>
      <federator:zone>local</federator:zone>
      <federator:name>web-1</federator:name>
      <federator:project-id>p1</federator:project-id>
      <federator:flavor name="m1.small" vcpus="1" ram-mb="1024" disk-gb="10"/>
      <federator:image>5a2b4a3c-...</federator:image>
      <federator:created-at>2025-01-01T12:00:00+00:00</federator:created-at>
      <federator:metadata><federator:item key="role">web</federator:item></federator:metadata>
    </federator:instance>

A domain is the broker's when that element names its broker id and zone.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from xml.dom import minidom

from federator.driver import InstanceSpec

__all__ = [
    "METADATA_PREFIX",
    "BrokerMetadata",
    "DiskRef",
    "RootDisk",
    "data_disk_xml",
    "data_volume_xml",
    "domain_disks",
    "domain_name",
    "domain_xml",
    "parse_metadata",
    "pool_xml",
    "volume_created_at",
    "volume_format",
    "volume_xml",
    "with_device",
    "without_disk",
    "xml_safe",
]

METADATA_PREFIX = "federator"
METADATA_ROOT = "instance"
_X86 = frozenset({"x86_64", "i686"})
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_MAX_TITLE = 200


def xml_safe(text: str) -> str:
    """``text`` with every character XML 1.0 cannot represent replaced by U+FFFD."""
    return _NOT_XML.sub("\ufffd", text)


def domain_name(uuid: str) -> str:
    """The libvirt domain name of broker instance ``uuid``: unique, and stable on retries."""
    return f"instance-{uuid}"


@dataclass(frozen=True, slots=True)
class RootDisk:
    """A root disk: volume ``volume`` of storage pool ``pool``, in qcow2 format."""

    pool: str
    volume: str


@dataclass(frozen=True, slots=True)
class BrokerMetadata:
    """What the broker wrote into a domain's metadata."""

    broker_id: str
    zone: str
    name: str = ""
    project_id: str = ""
    flavor: str = ""
    vcpus: int = 0
    ram_mb: int = 0
    disk_gb: int = 0
    image: str = ""
    created_at: datetime | None = None
    metadata: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


def domain_xml(
    spec: InstanceSpec,
    *,
    zone: str,
    domain_type: str,
    namespace: str,
    created_at: datetime,
    arch: str | None = None,
    machine: str | None = None,
    network: str | None = None,
    disk: RootDisk | None = None,
) -> str:
    """The ``<domain>`` document that defines broker instance ``spec`` in ``zone``."""
    root = ET.Element("domain", type=domain_type)
    ET.SubElement(root, "name").text = domain_name(spec.uuid)
    ET.SubElement(root, "uuid").text = spec.uuid
    title = " ".join(xml_safe(spec.name).split())[:_MAX_TITLE]
    if title:
        ET.SubElement(root, "title").text = title
    metadata = ET.SubElement(root, "metadata")
    metadata.append(_metadata_element(spec, zone, namespace, created_at))
    ET.SubElement(root, "memory", unit="MiB").text = str(spec.flavor.ram_mb)
    ET.SubElement(root, "currentMemory", unit="MiB").text = str(spec.flavor.ram_mb)
    ET.SubElement(root, "vcpu", placement="static").text = str(spec.flavor.vcpus)
    os_ = ET.SubElement(root, "os")
    os_type = ET.SubElement(os_, "type")
    os_type.text = "hvm"
    if arch is not None:
        os_type.set("arch", arch)
    if machine is not None:
        os_type.set("machine", machine)
    ET.SubElement(os_, "boot", dev="hd")
    if arch is None or arch in _X86:
        # ACPI is what lets a guest hear a graceful shutdown request.
        features = ET.SubElement(root, "features")
        ET.SubElement(features, "acpi")
        ET.SubElement(features, "apic")
    devices = ET.SubElement(root, "devices")
    if disk is not None:
        elem = ET.SubElement(devices, "disk", type="volume", device="disk")
        ET.SubElement(elem, "driver", name="qemu", type="qcow2")
        ET.SubElement(elem, "source", pool=disk.pool, volume=disk.volume)
        ET.SubElement(elem, "target", dev="vda", bus="virtio")
    if network is not None:
        elem = ET.SubElement(devices, "interface", type="network")
        ET.SubElement(elem, "source", network=network)
        ET.SubElement(elem, "model", type="virtio")
    serial = ET.SubElement(devices, "serial", type="pty")
    ET.SubElement(serial, "target", port="0")
    ET.SubElement(devices, "console", type="pty")
    return ET.tostring(root, encoding="unicode")


def _metadata_element(
    spec: InstanceSpec, zone: str, namespace: str, created_at: datetime
) -> ET.Element:
    # The prefix is written literally with its xmlns attribute rather than through
    # ET.register_namespace, whose registry is global to the process and would be shared
    # (and fought over) by zones configured with different namespaces.
    def tag(local: str) -> str:
        return f"{METADATA_PREFIX}:{local}"

    root = ET.Element(tag(METADATA_ROOT), {f"xmlns:{METADATA_PREFIX}": namespace})
    for local, value in (
        ("broker-id", spec.broker_id),
        ("zone", zone),
        ("name", spec.name),
        ("project-id", spec.project_id),
    ):
        ET.SubElement(root, tag(local)).text = xml_safe(value)
    flavor = spec.flavor
    ET.SubElement(
        root,
        tag("flavor"),
        {
            "name": xml_safe(flavor.name),
            "vcpus": str(flavor.vcpus),
            "ram-mb": str(flavor.ram_mb),
            "disk-gb": str(flavor.disk_gb),
        },
    )
    ET.SubElement(root, tag("image")).text = xml_safe(spec.image)
    ET.SubElement(root, tag("created-at")).text = created_at.isoformat()
    items = ET.SubElement(root, tag("metadata"))
    for key, value in sorted(spec.metadata.items()):
        ET.SubElement(items, tag("item"), key=xml_safe(key)).text = xml_safe(value)
    return root


def _local(tag: str) -> str:
    """An element's name without its namespace, however it was written."""
    return tag.rpartition("}")[2].rpartition(":")[2]


def parse_metadata(text: str) -> BrokerMetadata | None:
    """The broker metadata in ``text``, the element libvirt returns for the namespace
    (``virDomainGetMetadata``); ``None`` when it is not broker metadata."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        return None
    if _local(root.tag) != METADATA_ROOT:
        return None
    values: dict[str, str] = {}
    flavor: dict[str, str] = {}
    items: dict[str, str] = {}
    for child in root:
        local = _local(child.tag)
        if local == "flavor":
            flavor = dict(child.attrib)
        elif local == "metadata":
            items = {i.get("key", ""): i.text or "" for i in child if _local(i.tag) == "item"}
        else:
            values[local] = child.text or ""
    if not values.get("broker-id") or not values.get("zone"):
        return None
    return BrokerMetadata(
        broker_id=values["broker-id"],
        zone=values["zone"],
        name=values.get("name", ""),
        project_id=values.get("project-id", ""),
        flavor=flavor.get("name", ""),
        vcpus=_int(flavor.get("vcpus")),
        ram_mb=_int(flavor.get("ram-mb")),
        disk_gb=_int(flavor.get("disk-gb")),
        image=values.get("image", ""),
        created_at=_datetime(values.get("created-at")),
        metadata=MappingProxyType(items),
    )


def _int(text: str | None) -> int:
    try:
        return int(text or 0)
    except ValueError:
        return 0


def _datetime(text: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(text) if text else None
    except ValueError:
        return None


def volume_xml(name: str, capacity_bytes: int, backing_path: str, backing_format: str) -> str:
    """A thin qcow2 storage volume of ``capacity_bytes`` over backing file ``backing_path``."""
    root = ET.Element("volume")
    ET.SubElement(root, "name").text = name
    ET.SubElement(root, "capacity", unit="bytes").text = str(capacity_bytes)
    ET.SubElement(root, "allocation", unit="bytes").text = "0"
    target = ET.SubElement(root, "target")
    ET.SubElement(target, "format", type="qcow2")
    backing = ET.SubElement(root, "backingStore")
    ET.SubElement(backing, "path").text = backing_path
    ET.SubElement(backing, "format", type=backing_format)
    return ET.tostring(root, encoding="unicode")


def volume_format(volume_xml_text: str, default: str = "qcow2") -> str:
    """The format (``qcow2``, ``raw``...) of a volume from its XML description."""
    try:
        fmt = ET.fromstring(volume_xml_text).find("target/format")
    except ET.ParseError:
        return default
    return fmt.get("type", default) if fmt is not None else default


# --- data volumes (block storage) ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class DiskRef:
    """One ``<disk>`` of a domain: its target device (``vdb``), the pool volume or file
    behind it, and the element itself (what ``virDomainDetachDeviceFlags`` takes)."""

    target: str
    pool: str | None
    volume: str | None
    file: str | None
    element: str


def pool_xml(name: str, path: str) -> str:
    """A ``dir`` storage pool ``name`` at ``path`` (for a test host; see the block
    storage's docstring for why it states no capacity)."""
    root = ET.Element("pool", type="dir")
    ET.SubElement(root, "name").text = name
    ET.SubElement(ET.SubElement(root, "target"), "path").text = path
    return ET.tostring(root, encoding="unicode")


def data_volume_xml(name: str, capacity_bytes: int, fmt: str) -> str:
    """A sparse storage volume of ``capacity_bytes`` in format ``fmt`` (``raw``, ``qcow2``).

    Allocation 0: nothing is written up front, so a large volume is made at once; the
    block storage holds the pool's committed capacity within bounds itself."""
    root = ET.Element("volume")
    ET.SubElement(root, "name").text = name
    ET.SubElement(root, "capacity", unit="bytes").text = str(capacity_bytes)
    ET.SubElement(root, "allocation", unit="bytes").text = "0"
    ET.SubElement(ET.SubElement(root, "target"), "format", type=fmt)
    return ET.tostring(root, encoding="unicode")


def data_disk_xml(pool: str, volume: str, target: str, fmt: str, serial: str) -> str:
    """The ``<disk>`` that attaches pool volume ``volume`` as virtio disk ``target``; the
    guest sees ``serial`` under ``/dev/disk/by-id/virtio-<serial>``."""
    root = ET.Element("disk", type="volume", device="disk")
    ET.SubElement(root, "driver", name="qemu", type=fmt)
    ET.SubElement(root, "source", pool=pool, volume=volume)
    ET.SubElement(root, "target", dev=target, bus="virtio")
    ET.SubElement(root, "serial").text = xml_safe(serial)
    return ET.tostring(root, encoding="unicode")


def domain_disks(text: str) -> list[DiskRef]:
    """Every ``<disk>`` with a target in a domain's XML (``virDomainGetXMLDesc``)."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        return []
    found = []
    for disk in root.iterfind("devices/disk"):
        target = disk.find("target")
        dev = target.get("dev") if target is not None else None
        if not dev:
            continue
        source = disk.find("source")
        attrs = source.attrib if source is not None else {}
        found.append(
            DiskRef(
                target=dev,
                pool=attrs.get("pool"),
                volume=attrs.get("volume"),
                file=attrs.get("file") or attrs.get("dev"),
                element=ET.tostring(disk, encoding="unicode").strip(),
            )
        )
    return found


def volume_created_at(text: str) -> datetime | None:
    """When a storage volume was made, from its XML's timestamps: the birth time where the
    filesystem keeps one, else the last change (never earlier than the birth, so an age
    computed from it errs young); None when the pool reports neither (the test driver)."""
    try:
        stamps = ET.fromstring(text).find("target/timestamps")
    except ET.ParseError:
        return None
    if stamps is None:
        return None
    for tag in ("btime", "ctime"):
        value = stamps.findtext(tag)
        if value:
            try:
                return datetime.fromtimestamp(float(value), UTC)
            except (ValueError, OverflowError, OSError):
                continue
    return None


# The two edits below rewrite a whole domain definition. They use minidom rather than
# ElementTree because minidom writes the document back with its namespace prefixes as
# they were; ElementTree would rename the broker's metadata prefix to ns0.


def with_device(domain: str, device: str) -> str:
    """The domain definition ``domain`` with device element ``device`` added."""
    doc, root = _document(domain)
    devices = next(iter(_children(root, "devices")), None)
    if devices is None:
        devices = root.appendChild(doc.createElement("devices"))
    devices.appendChild(doc.importNode(_document(device)[1], True))
    return root.toxml()


def without_disk(domain: str, target: str) -> str:
    """The domain definition ``domain`` without the disk(s) whose target is ``target``."""
    _doc, root = _document(domain)
    for devices in _children(root, "devices"):
        for disk in _children(devices, "disk"):
            if any(t.getAttribute("dev") == target for t in _children(disk, "target")):
                devices.removeChild(disk).unlink()
    return root.toxml()


def _document(text: str) -> tuple[minidom.Document, minidom.Element]:
    doc = minidom.parseString(text)
    root = doc.documentElement
    if root is None:  # pragma: no cover - parseString raises on an empty document
        raise ValueError("an XML document without an element")
    return doc, root


def _children(node: minidom.Element, tag: str) -> list[minidom.Element]:
    return [
        child
        for child in node.childNodes
        if isinstance(child, minidom.Element) and child.tagName == tag
    ]
