"""Response shapes: broker objects rendered as OpenStack Compute v2.1 JSON, and the
Keystone v3 and Glance v2 documents the OpenStack clients need.

Broker-specific fields use the ``federator:`` prefix, as Nova extensions use ``OS-EXT-...``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from federator.api.microversion import (
    MIN,
    V2_3,
    V2_9,
    V2_16,
    V2_19,
    V2_26,
    V2_47,
    V2_55,
    V2_61,
    V2_63,
    Version,
)
from federator.compute.records import ServerView
from federator.config import FlavorConfig, ImageConfig
from federator.identity.model import DOMAIN_ID, DOMAIN_NAME, TokenInfo

_VM_STATE = {
    "BUILD": "building",
    "ACTIVE": "active",
    "SHUTOFF": "stopped",
    "PAUSED": "paused",
    "SUSPENDED": "suspended",
    "REBOOT": "active",
    "ERROR": "error",
    "DELETED": "deleted",
}
# Nova's power states: 1 running, 3 paused, 4 shutdown, 7 suspended.
_POWER_STATE = {"ACTIVE": 1, "REBOOT": 1, "PAUSED": 3, "SHUTOFF": 4, "SUSPENDED": 7}


def iso(ts: datetime | None) -> str | None:
    return None if ts is None else ts.strftime("%Y-%m-%dT%H:%M:%SZ")


def link(base: str, kind: str, ident: str) -> list[dict[str, str]]:
    return [
        {"rel": "self", "href": f"{base}/{kind}/{ident}"},
        {"rel": "bookmark", "href": f"{base}/{kind}/{ident}"},
    ]


def server_brief(v: ServerView, base: str) -> dict[str, Any]:
    return {"id": v.uuid, "name": v.name, "links": link(base, "servers", v.uuid)}


FlavorLookup = Callable[[str], FlavorConfig | None]
"""A flavor of the configuration by id (``Settings.flavor``), or None once it is gone."""


def server_detail(
    v: ServerView,
    base: str,
    mv: Version = MIN,
    *,
    admin: bool = False,
    flavors: FlavorLookup | None = None,
    volumes: Sequence[tuple[str, bool]] = (),
) -> dict[str, Any]:
    """A server as GET /servers/detail and /servers/{id} show it at microversion ``mv``
    to an admin or not; ``flavors`` gives the extra specs of the embedded flavor (2.47);
    ``volumes`` the attached volumes with their delete_on_termination."""
    host_id = ""
    if v.host:
        host_id = hashlib.sha224(f"{v.project_id}{v.host}".encode()).hexdigest()
    body: dict[str, Any] = {
        "id": v.uuid,
        "name": v.name,
        "status": v.status,
        "tenant_id": v.project_id,
        "user_id": v.user_id,
        "metadata": dict(v.metadata),
        "hostId": host_id,
        "image": {"id": v.image_id, "links": link(base, "images", v.image_id)},
        "flavor": _server_flavor(v, base, mv, flavors),
        "created": iso(v.created_at),
        "updated": iso(v.updated_at),
        "addresses": {
            net: [{"version": 6 if ":" in a else 4, "addr": a} for a in addrs]
            for net, addrs in v.addresses.items()
        },
        "accessIPv4": "",
        "accessIPv6": "",
        "links": link(base, "servers", v.uuid),
        "progress": 0,
        "config_drive": "",
        "key_name": None,
        "security_groups": [{"name": "default"}] if v.cell and not v.in_cell0 else [],
        "OS-DCF:diskConfig": "MANUAL",
        "OS-EXT-AZ:availability_zone": v.shown_az or "",
        "OS-EXT-SRV-ATTR:host": v.host,
        "OS-EXT-SRV-ATTR:hypervisor_hostname": v.host,
        "OS-EXT-STS:vm_state": _VM_STATE.get(v.status, v.status.lower()),
        "OS-EXT-STS:task_state": v.task_state,
        "OS-EXT-STS:power_state": _POWER_STATE.get(v.status, 0),
        "OS-SRV-USG:launched_at": iso(v.launched_at),
        "OS-SRV-USG:terminated_at": None,
        "os-extended-volumes:volumes_attached": [
            {"id": vid, **({"delete_on_termination": dot} if mv >= V2_3 else {})}
            for vid, dot in volumes
        ],
        "federator:cell": v.cell,
        "federator:flavor": dict(v.flavor),
        "federator:policy_version": v.policy_version,
        "federator:placement": dict(v.placement) if v.placement else None,
    }
    if v.fault:
        body["fault"] = {
            "code": 500,
            "created": v.fault.get("created"),
            "message": v.fault.get("message", ""),
            "details": "\n".join(v.fault.get("details", [])),
        }
        body["federator:fault"] = {
            "code": v.fault.get("code"),
            "reason": v.fault.get("reason"),
            "message": v.fault.get("message"),
            "details": list(v.fault.get("details", [])),
        }
    body.update(_server_since_2_1(v, mv, admin))
    return body


def _server_flavor(
    v: ServerView, base: str, mv: Version, flavors: FlavorLookup | None
) -> dict[str, Any]:
    """A link to the flavor, or from 2.47 the flavor the server was built with. Sizes come
    from the record's snapshot; extra specs, which it does not keep, from the
    configuration (none once the flavor is gone)."""
    if mv < V2_47:
        return {"id": v.flavor_id, "links": link(base, "flavors", v.flavor_id)}
    snap = v.flavor
    current = flavors(v.flavor_id) if flavors is not None else None
    return {
        "original_name": str(snap.get("name", v.flavor_id)),
        "vcpus": int(snap.get("vcpus", 0)),
        "ram": int(snap.get("ram", 0)),
        "disk": int(snap.get("disk", 0)),
        "ephemeral": 0,
        "swap": 0,
        "extra_specs": dict(current.extra_specs) if current is not None else {},
    }


def _server_since_2_1(v: ServerView, mv: Version, admin: bool) -> dict[str, Any]:
    """The server fields microversions after 2.1 add, each from the version that added it
    and, where Nova's default policy says so, for admins only."""
    extra: dict[str, Any] = {}
    if admin and mv >= V2_3:
        extra.update(_extended_server_attributes(v))
    if mv >= V2_9:
        extra["locked"] = False
    if admin and mv >= V2_16:
        # Nova: UP for a live compute service, "" for a server on no host (yet).
        extra["host_status"] = "UP" if v.host else ""
    if mv >= V2_19:
        extra["description"] = None
    if mv >= V2_26:
        extra["tags"] = []
    if mv >= V2_63:
        extra["trusted_image_certificates"] = None
    return extra


def _extended_server_attributes(v: ServerView) -> dict[str, Any]:
    """The OS-EXT-SRV-ATTR fields of 2.3. The broker keeps no reservation, launch index,
    root device or user data, so those are null (0 for the index); its images have no
    separate kernel or ramdisk, which Nova shows as ""."""
    return {
        "OS-EXT-SRV-ATTR:reservation_id": None,
        "OS-EXT-SRV-ATTR:launch_index": 0,
        "OS-EXT-SRV-ATTR:hostname": _hostname(v.name) or f"Server-{v.uuid}",
        "OS-EXT-SRV-ATTR:kernel_id": "",
        "OS-EXT-SRV-ATTR:ramdisk_id": "",
        "OS-EXT-SRV-ATTR:root_device_name": None,
        "OS-EXT-SRV-ATTR:user_data": None,
    }


def _hostname(name: str) -> str:
    """A server name as a host name, by Nova's rules (``utils.sanitize_hostname``): Latin-1
    only, at most 63 characters, spaces, underscores and dots as hyphens, lower case."""
    text = name.encode("latin-1", "ignore").decode("latin-1")[:63]
    text = re.sub(r"[ _.]", "-", text)
    text = re.sub(r"[^\w.-]+", "", text)
    return text.lower().strip(".-")


def flavor_view(f: FlavorConfig, base: str, detail: bool, mv: Version = MIN) -> dict[str, Any]:
    """A flavor in a listing (``detail=False``) or in full, at microversion ``mv``."""
    body: dict[str, Any] = {"id": f.id, "name": f.name, "links": link(base, "flavors", f.id)}
    if mv >= V2_55:
        body["description"] = None  # flavors in the configuration have none
    if detail and mv >= V2_61:
        body["extra_specs"] = dict(f.extra_specs)
    if detail:
        body.update(
            {
                "vcpus": f.vcpus,
                "ram": f.ram_mb,
                "disk": f.disk_gb,
                "OS-FLV-EXT-DATA:ephemeral": 0,
                "swap": "",
                "rxtx_factor": 1.0,
                "os-flavor-access:is_public": True,
                "OS-FLV-DISABLED:disabled": False,
            }
        )
    return body


# --- identity (Keystone v3) and image (Glance v2) ---------------------------------------

KEYSTONE_VERSION = "v3.14"
GLANCE_VERSION = "v2.9"
_INTERFACES = ("public", "internal", "admin")
# type, Keystone's usual service name, path under the broker's root
_CATALOG = (
    ("identity", "keystone", "/identity"),
    ("compute", "nova", "/compute/v2.1"),
    ("image", "glance", "/image"),
    # Cinder's service type, and the alias clients still look up; {project_id} is the
    # token's project, as Keystone substitutes $(project_id)s.
    ("block-storage", "cinderv3", "/volume/v3/{project_id}"),
    ("volumev3", "cinderv3", "/volume/v3/{project_id}"),
    # The broker's own extensions; a parent broker finds its child's capacity here.
    ("federation", "federator", "/federator/v1"),
)


def keystone_iso(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def identity_version(root: str) -> dict[str, Any]:
    return {
        "id": KEYSTONE_VERSION,
        "status": "stable",
        "updated": "2020-04-07T00:00:00Z",
        "links": [{"rel": "self", "href": f"{root}/identity/v3/"}],
        "media-types": [
            {"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}
        ],
    }


def catalog(root: str, region: str, project_id: str = "") -> list[dict[str, Any]]:
    """Every service under the broker's own root URL, one endpoint per interface."""
    return [
        {
            "type": kind,
            "name": name,
            "id": kind,
            "endpoints": [
                {
                    "id": f"{kind}-{interface}",
                    "interface": interface,
                    "region": region,
                    "region_id": region,
                    "url": root + path.format(project_id=project_id),
                }
                for interface in _INTERFACES
            ],
        }
        for kind, name, path in _CATALOG
    ]


def token_view(info: TokenInfo, root: str, region: str) -> dict[str, Any]:
    domain = {"id": DOMAIN_ID, "name": DOMAIN_NAME}
    return {
        "token": {
            "methods": ["password"],
            "audit_ids": [info.audit_id],
            "issued_at": keystone_iso(info.issued_at),
            "expires_at": keystone_iso(info.expires_at),
            "user": {
                "id": info.user.id,
                "name": info.user.name,
                "domain": domain,
                "password_expires_at": None,
            },
            "project": {"id": info.project.id, "name": info.project.name, "domain": domain},
            "is_domain": False,
            "roles": [{"id": r, "name": r} for r in info.roles],
            "catalog": catalog(root, region, info.project.id),
        }
    }


def image_view(image: ImageConfig) -> dict[str, Any]:
    return {
        "id": image.id,
        "name": image.name,
        "status": "active",
        "visibility": "public",
        "protected": False,
        "os_hidden": False,
        "container_format": "bare",
        "disk_format": "qcow2",
        "min_disk": 0,
        "min_ram": 0,
        "tags": [],
        "self": f"/v2/images/{image.id}",
        "file": f"/v2/images/{image.id}/file",
        "schema": "/v2/schemas/image",
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
    }
