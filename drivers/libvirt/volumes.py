"""Root volumes: a thin qcow2 overlay per instance over its image's base volume.

Only used when the zone names a ``storage_pool``; without one, domains are diskless
(libvirt's test driver, network-booted guests). A volume is named after its domain,
``instance-<uuid>.qcow2``, so a create retried after an interruption finds and reuses
the volume the first attempt made, and a delete finds it without any record.
"""

from __future__ import annotations

import logging

import libvirt

from drivers.libvirt.connection import HostHandle
from drivers.libvirt.domainxml import RootDisk, domain_name, volume_format, volume_xml
from drivers.libvirt.errors import error_code, translated
from federator.driver import DriverError, InstanceSpec

__all__ = ["create_root_volume", "delete_root_volume", "root_volume_name"]

LOG = logging.getLogger(__name__)
GIB = 1024**3


def root_volume_name(uuid: str) -> str:
    return f"{domain_name(uuid)}.qcow2"


def create_root_volume(
    zone: str, handle: HostHandle, pool_name: str, base_name: str, spec: InstanceSpec, uuid: str
) -> RootDisk:
    """The root volume of ``uuid`` in ``pool_name``: the flavor's size (at least the base
    volume's), backed by volume ``base_name``; reused when it exists.

    :raises CapacityError: the pool has no room.
    :raises PermanentError: no such pool or base volume.
    """
    name = root_volume_name(uuid)
    conn = handle.connection()
    with translated(zone, handle.name, f"create root volume in pool {pool_name}"):
        pool = conn.storagePoolLookupByName(pool_name)
        base = pool.storageVolLookupByName(base_name)
        try:
            pool.storageVolLookupByName(name)
            return RootDisk(pool_name, name)  # left by an interrupted create
        except libvirt.libvirtError as exc:
            if error_code(exc) != libvirt.VIR_ERR_NO_STORAGE_VOL:
                raise
        capacity = max(spec.flavor.disk_gb * GIB, int(base.info()[1]))
        xml = volume_xml(name, capacity, str(base.path()), volume_format(str(base.XMLDesc(0))))
        pool.createXML(xml, 0)
    return RootDisk(pool_name, name)


def delete_root_volume(
    zone: str, handle: HostHandle, pool_name: str, uuid: str, *, quietly: bool = False
) -> None:
    """Delete the root volume of ``uuid``; none is fine. ``quietly`` logs failures.

    :raises DriverError: the volume could not be deleted (unless ``quietly``).
    """
    name = root_volume_name(uuid)
    try:
        conn = handle.connection()
        with translated(zone, handle.name, "delete root volume"):
            try:
                conn.storagePoolLookupByName(pool_name).storageVolLookupByName(name).delete(0)
            except libvirt.libvirtError as exc:
                if error_code(exc) != libvirt.VIR_ERR_NO_STORAGE_VOL:
                    raise
    except DriverError as exc:
        if not quietly:
            raise
        LOG.error("zone %s: root volume %s left behind: %s", zone, name, exc.reason)
