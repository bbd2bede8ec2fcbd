"""Volumes of a libvirt zone, through the API, checked against what libvirt holds.

Two hosts on libvirt's in-process test driver, their volumes in each host's own storage
pool (``federator-volumes``, host-local). A volume made through the Cinder API is a pool
volume on the host the broker placed it on and on no other; attaching it to a server on
that host puts a ``<disk>`` naming it into the server's domain, as the device the API
reported; a server on the other host is refused, naming both hosts; detaching takes the
disk out again and deleting the volume deletes the pool volume.

Each host's state lives in the driver's one connection to it, so the tests read libvirt
through that connection (:meth:`drivers.libvirt.driver.LibvirtDriver.ex_connection`).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import select

from federator.config import Settings
from federator.storage.models import StoragePool, Volume
from tests.conftest import ADMIN, LiveBroker, make_settings
from tests.support_libvirt import HostSize, libvirt, libvirt_zone, require_libvirt

if TYPE_CHECKING:
    from drivers.libvirt.blockstorage import LibvirtBlockStorage
    from drivers.libvirt.driver import LibvirtDriver

pytestmark = pytest.mark.slow

ZONE = "local"
BROKER_ID = "libvirt-volumes"
POOL = "federator-volumes"  # the driver's default volume_pool
POOL_GB = 40
SIZE_GB = 3
GIB = 1024**3
MV = {"OpenStack-API-Version": "compute 2.64"}


@pytest.fixture
def libvirt_broker(
    tmp_path: Path, live_broker_factory: Callable[[Settings], LiveBroker]
) -> Iterator[LiveBroker]:
    """Two libvirt test-driver hosts, each with a pool of :data:`POOL_GB` GiB."""
    require_libvirt()
    zone = libvirt_zone(
        ZONE,
        tmp_path / "hosts",
        sizes=(HostSize(4, 16), HostSize(4, 16)),
        disk_gb=1000,
        volume_pool_gb=POOL_GB,
        stop_timeout=2,
        stop_poll_interval=0.01,
    )
    settings = make_settings(
        tmp_path,
        zones=[zone],
        policy={"version": "libvirt.volumes", "zones": {}},
        broker_id=BROKER_ID,
        workers={"count": 4, "poll_interval": 0.05},
    )
    yield live_broker_factory(settings)


def _driver(live: LiveBroker) -> LibvirtDriver:
    from drivers.libvirt.driver import LibvirtDriver

    driver = live.broker.drivers[ZONE]
    assert isinstance(driver, LibvirtDriver)
    return driver


def _storage(live: LiveBroker) -> LibvirtBlockStorage:
    storage = _driver(live).block_storage()
    assert storage is not None
    return storage


def _volumes_url(live: LiveBroker) -> str:
    return f"{live.url}/volume/v3/{ADMIN}/volumes"


def _show(live: LiveBroker, vid: str) -> dict[str, Any]:
    r = live.client.get(f"{_volumes_url(live)}/{vid}")
    assert r.status_code == 200, r.text
    volume: dict[str, Any] = r.json()["volume"]
    return volume


def _record(live: LiveBroker, vid: str) -> Volume:
    with live.broker.dbs.api.read() as s:
        v = s.get(Volume, vid)
        assert v is not None
        s.expunge(v)
        return v


def _pool_volume_names(live: LiveBroker, host: str) -> set[str]:
    """The names of every volume in ``host``'s volume pool, as libvirt lists them."""
    pool = _driver(live).ex_connection(host).storagePoolLookupByName(POOL)
    return {str(v.name()) for v in pool.listAllVolumes(0)}


def _pool_volume(live: LiveBroker, host: str, name: str) -> Any:
    pool = _driver(live).ex_connection(host).storagePoolLookupByName(POOL)
    return pool.storageVolLookupByName(name)


def _disks(live: LiveBroker, host: str, sid: str, flags: int = 0) -> list[dict[str, str]]:
    """The ``<disk>`` elements of the server's domain XML (``flags`` as for
    ``virDomainGetXMLDesc``: 0 is the live definition of a running domain)."""
    dom = _driver(live).ex_connection(host).lookupByUUIDString(sid)
    root = ET.fromstring(dom.XMLDesc(flags))
    found = []
    for disk in root.iterfind("devices/disk"):
        source, target = disk.find("source"), disk.find("target")
        found.append(
            {
                "type": disk.get("type", ""),
                "pool": "" if source is None else source.get("pool", ""),
                "volume": "" if source is None else source.get("volume", ""),
                "dev": "" if target is None else target.get("dev", ""),
                "serial": disk.findtext("serial") or "",
            }
        )
    return found


def _act(live: LiveBroker, sid: str, action: str, status: str) -> None:
    r = live.client.post(f"{live.compute}/servers/{sid}/action", json={action: None})
    assert r.status_code == 202, r.text
    live.wait_status(sid, status)


def _servers_on_two_hosts(live: LiveBroker) -> dict[str, str]:
    """Two ACTIVE servers kept on different hosts by an anti-affinity group: host -> id."""
    r = live.client.post(
        f"{live.compute}/os-server-groups",
        json={"server_group": {"name": "apart", "policy": "anti-affinity"}},
        headers=MV,
    )
    assert r.status_code == 200, r.text
    hint = {"os:scheduler_hints": {"group": r.json()["server_group"]["id"]}}
    sids = []
    for n in range(2):
        body = {"server": {"name": f"vm-{n}", "flavorRef": "m1.small", "imageRef": "cirros"}}
        r = live.client.post(f"{live.compute}/servers", json={**body, **hint})
        assert r.status_code == 202, r.text
        sids.append(r.json()["server"]["id"])
    hosts = {live.wait_status(sid, "ACTIVE")["OS-EXT-SRV-ATTR:host"]: sid for sid in sids}
    assert len(hosts) == 2, hosts
    return hosts


def test_a_volume_lives_attaches_and_goes_in_its_hosts_pool(libvirt_broker: LiveBroker) -> None:
    live = libvirt_broker
    servers = _servers_on_two_hosts(live)

    r = live.client.post(_volumes_url(live), json={"volume": {"name": "data", "size": SIZE_GB}})
    assert r.status_code == 202, r.text
    vid = r.json()["volume"]["id"]
    live.wait_settled()
    shown = _show(live, vid)
    assert (shown["status"], shown["size"]) == ("available", SIZE_GB), shown.get("fault")

    # The record names the host and its pool; the pool volume is there and nowhere else.
    record = _record(live, vid)
    host = record.host
    assert host in servers
    label = f"{host}/{POOL}"
    assert record.placement["pool"] == label
    assert shown["os-vol-host-attr:host"] == f"{host}@{ZONE}#{label}"
    with live.broker.dbs.api.read() as s:
        pool_row = s.get(StoragePool, record.pool_id)
        assert pool_row is not None
        assert (pool_row.name, pool_row.host, pool_row.capacity_gb, pool_row.used_gb) == (
            label, host, POOL_GB, SIZE_GB,
        )  # fmt: skip
    [name] = [n for n in _pool_volume_names(live, host) if n.endswith(vid)]
    vol = _pool_volume(live, host, name)
    _kind, capacity, _allocation = vol.info()
    assert capacity == SIZE_GB * GIB
    assert record.remote_id == f"{host}/{POOL}/{name}"
    [other] = [h for h in servers if h != host]
    assert not {n for n in _pool_volume_names(live, other) if vid in n}
    here, there = servers[host], servers[other]

    # A server on the other host cannot reach host-local storage: refused, naming both.
    r = live.client.post(
        f"{live.compute}/servers/{there}/os-volume_attachments",
        json={"volumeAttachment": {"volumeId": vid}},
    )
    assert r.status_code == 400, r.text
    assert r.json()["message"] == (
        f"Invalid volume: volume {vid} is on host {host}'s local storage and server is on "
        f"host {other}; zone {ZONE} cannot attach across hosts"
    )
    assert not [d for d in _disks(live, other, there) if d["volume"] == name]
    assert _show(live, vid)["status"] == "available"

    # Attach to the running server on the volume's host: its domain's definition gains a
    # disk naming the volume, as the device the API reported. (The test driver cannot
    # hot-plug, so the driver redefines the domain and the disk reaches the running
    # domain at its next boot, as it would after a stop on such a hypervisor.)
    r = live.client.post(
        f"{live.compute}/servers/{here}/os-volume_attachments",
        json={"volumeAttachment": {"volumeId": vid}},
    )
    assert r.status_code == 200, r.text
    device = r.json()["volumeAttachment"]["device"]
    assert device == "/dev/vdb"
    live.wait_settled()
    assert _show(live, vid)["status"] == "in-use"
    disk = {
        "type": "volume",
        "pool": POOL,
        "volume": name,
        "dev": device.removeprefix("/dev/"),
        "serial": vid[:20],
    }
    defined = _disks(live, host, here, libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert [d for d in defined if d["volume"] == name] == [disk]
    _act(live, here, "os-stop", "SHUTOFF")
    assert [d for d in _disks(live, host, here) if d["volume"] == name] == [disk]
    _act(live, here, "os-start", "ACTIVE")
    assert [d for d in _disks(live, host, here) if d["volume"] == name] == [disk]
    attachments = live.client.get(f"{live.compute}/servers/{here}/os-volume_attachments")
    assert attachments.json()["volumeAttachments"] == [
        {"id": vid, "volumeId": vid, "serverId": here, "device": device}
    ]
    [seen] = [v for b in _storage(live).list_volumes() for v in b]
    assert (seen.uuid, [(a.server_uuid, a.device) for a in seen.attachments]) == (
        vid, [(here, device)],
    )  # fmt: skip

    # Detach (from the stopped server, whose one definition the test driver can edit):
    # the disk leaves the domain; the volume is available again, still in the pool.
    _act(live, here, "os-stop", "SHUTOFF")
    r = live.client.delete(f"{live.compute}/servers/{here}/os-volume_attachments/{vid}")
    assert r.status_code == 202, r.text
    live.wait_settled()
    assert _show(live, vid)["status"] == "available"
    assert not [d for d in _disks(live, host, here) if d["volume"] == name]
    assert name in _pool_volume_names(live, host)
    [seen] = [v for b in _storage(live).list_volumes() for v in b]
    assert (seen.uuid, seen.attachments) == (vid, ())

    # Delete: the pool volume is gone, and so is the storage the broker claimed for it.
    r = live.client.delete(f"{_volumes_url(live)}/{vid}")
    assert r.status_code == 202, r.text
    live.wait_settled()
    assert live.client.get(f"{_volumes_url(live)}/{vid}").status_code == 404
    assert name not in _pool_volume_names(live, host)
    with pytest.raises(libvirt.libvirtError) as caught:
        _pool_volume(live, host, name)
    assert caught.value.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL
    with live.broker.dbs.api.read() as s:
        used = dict(s.execute(select(StoragePool.name, StoragePool.used_gb)).all())
    assert used == {f"{h}/{POOL}": 0 for h in servers}


@pytest.fixture
def libvirt_and_cloud(
    tmp_path: Path, live_broker_factory: Callable[[Settings], LiveBroker]
) -> Iterator[LiveBroker]:
    """The libvirt zone beside a virtual sim zone ``cloud`` that requests may name."""
    require_libvirt()
    zone = libvirt_zone(
        ZONE, tmp_path / "hosts", sizes=(HostSize(4, 16),), disk_gb=1000, volume_pool_gb=POOL_GB
    )
    cloud = {
        "name": "cloud",
        "driver": "sim",
        "kind": "virtual",
        "options": {"expose_hosts": False},
    }
    settings = make_settings(
        tmp_path,
        zones=[zone, cloud],
        policy={"version": "libvirt.az", "allow_explicit_virtual_az": True, "zones": {}},
        broker_id=BROKER_ID,
        workers={"count": 4, "poll_interval": 0.05},
    )
    yield live_broker_factory(settings)


def test_attaching_across_availability_zones_is_refused_naming_both(
    libvirt_and_cloud: LiveBroker,
) -> None:
    live = libvirt_and_cloud
    made: dict[str, dict[str, str]] = {}
    for az in (ZONE, "cloud"):
        r = live.client.post(
            _volumes_url(live), json={"volume": {"size": 1, "availability_zone": az}}
        )
        assert r.status_code == 202, r.text
        body = {
            "server": {
                "name": f"vm-{az}",
                "flavorRef": "m1.small",
                "imageRef": "cirros",
                "availability_zone": az,
            }
        }
        s = live.client.post(f"{live.compute}/servers", json=body)
        assert s.status_code == 202, s.text
        made[az] = {"volume": r.json()["volume"]["id"], "server": s.json()["server"]["id"]}
    live.wait_settled()
    for az, ids in made.items():
        live.wait_status(ids["server"], "ACTIVE")
        assert _show(live, ids["volume"])["availability_zone"] == az
    for server_az, volume_az in ((ZONE, "cloud"), ("cloud", ZONE)):
        server, volume = made[server_az]["server"], made[volume_az]["volume"]
        r = live.client.post(
            f"{live.compute}/servers/{server}/os-volume_attachments",
            json={"volumeAttachment": {"volumeId": volume}},
        )
        assert r.status_code == 400, r.text
        assert f"server in '{server_az}'" in r.text and f"in '{volume_az}'" in r.text
    live.wait_settled()
    for ids in made.values():
        assert _show(live, ids["volume"])["status"] == "available"
    host = _record(live, made[ZONE]["volume"]).host
    assert host is not None
    assert not [d for d in _disks(live, host, made[ZONE]["server"]) if d["type"] == "volume"]
    [seen] = [v for b in _storage(live).list_volumes() for v in b]
    assert seen.attachments == ()
