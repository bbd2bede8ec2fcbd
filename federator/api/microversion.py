"""Compute API microversions: the one list of what each version changes.

A client asks for a version with ``OpenStack-API-Version: compute X.Y`` (or the older
``X-OpenStack-Nova-API-Version: X.Y``); ``latest`` means :data:`MAX`. No header means
:data:`MIN`, as Nova does. A version outside ``[MIN, MAX]`` answers 406; a header that is
not a version answers 400. Every compute answer names the version it was made for in both
headers, with ``Vary`` on them.

Handlers never read headers: they take :data:`MicroversionDep` and compare it with the
version that introduced a change (``if mv >= V2_64``), so each change is named once here.
"""

from __future__ import annotations

import functools
import re
from typing import Annotated, NamedTuple

from fastapi import Depends, Request

from federator.exception import BadRequest, NotAcceptable

__all__ = [
    "HEADER",
    "LEGACY_HEADER",
    "MAX",
    "MIN",
    "VERSIONS",
    "MicroversionDep",
    "Version",
    "requested_version",
]

HEADER = "openstack-api-version"
LEGACY_HEADER = "x-openstack-nova-api-version"
SERVICE = "compute"


class Version(NamedTuple):
    major: int
    minor: int

    @classmethod
    def parse(cls, text: str) -> Version:
        """``"2.64"`` as a version.

        :raises ValueError: not of the form ``X.Y``.
        """
        m = re.fullmatch(r"\s*(\d{1,4})\.(\d{1,4})\s*", text)
        if m is None:
            raise ValueError(f"{text!r} is not a version of the form X.Y")
        return cls(int(m[1]), int(m[2]))

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"


# Every version the compute API serves, oldest first, with what it changes. Only changes
# the broker implements are listed; a version that changes nothing the broker serves is
# still listed so that clients may ask for it.
VERSIONS: tuple[tuple[str, str], ...] = (
    ("2.1", "the base: Compute v2.1 request and response shapes"),
    ("2.2", "key pair type (no key pairs are served yet)"),
    (
        "2.3",
        "server detail: OS-EXT-SRV-ATTR reservation_id, launch_index, hostname, "
        "kernel_id, ramdisk_id, root_device_name, user_data",
    ),
    ("2.4", "reserved for fixed IPs (nothing the broker serves)"),
    ("2.5", "server list: the ip6 filter for non-admins (nothing the broker serves)"),
    ("2.6", "remote consoles (nothing the broker serves)"),
    ("2.7", "flavor access: is_public checked first (nothing the broker serves)"),
    ("2.8", "MKS consoles (nothing the broker serves)"),
    ("2.9", "server detail: locked"),
    ("2.10", "key pairs of other users (nothing the broker serves)"),
    ("2.11", "os-services force down (nothing the broker serves)"),
    ("2.12", "interface attachments show VIF net-id (nothing the broker serves)"),
    ("2.13", "server groups: project_id and user_id"),
    ("2.14", "evacuate without on_shared_storage (nothing the broker serves)"),
    ("2.15", "server groups: the soft-affinity and soft-anti-affinity policies"),
    ("2.16", "server detail: host_status (admins)"),
    ("2.17", "trigger crash dump (nothing the broker serves)"),
    ("2.18", "the project id becomes optional in URLs (nothing changes)"),
    ("2.19", "server detail: description"),
    ("2.20", "volume actions in more states (nothing the broker serves)"),
    ("2.21", "deleted instance actions (nothing the broker serves)"),
    ("2.22", "live-migration force complete (nothing the broker serves)"),
    ("2.23", "migrations list details (nothing the broker serves)"),
    ("2.24", "abort live migration (nothing the broker serves)"),
    ("2.25", "live migration block_migration auto (nothing the broker serves)"),
    ("2.26", "server detail: tags"),
    ("2.27", "the OpenStack-API-Version header"),
    ("2.28", "hypervisor cpu_info as an object (nothing the broker serves)"),
    ("2.29", "evacuate force (nothing the broker serves)"),
    ("2.30", "live migrate force (nothing the broker serves)"),
    ("2.31", "console auth tokens of every console type (nothing the broker serves)"),
    ("2.32", "device tags on boot (accepted, not acted on)"),
    ("2.33", "hypervisor paging (nothing the broker serves)"),
    ("2.34", "live migration checks (nothing the broker serves)"),
    ("2.35", "key pair paging (nothing the broker serves)"),
    ("2.36", "proxy APIs removed (nothing the broker serves)"),
    ("2.37", "server create: networks 'auto' and 'none'"),
    ("2.38", "server status filter validated (nothing changes)"),
    ("2.39", "image metadata quota removed (nothing the broker serves)"),
    ("2.40", "simple tenant usage paging (nothing the broker serves)"),
    ("2.41", "aggregates: uuid"),
    ("2.42", "device tags on boot again (accepted, not acted on)"),
    ("2.43", "os-hosts removed (nothing the broker serves)"),
    ("2.44", "network proxy actions removed (nothing the broker serves)"),
    ("2.45", "createImage returns image_id (nothing the broker serves)"),
    ("2.46", "X-OpenStack-Request-ID header (the broker sends it at every version)"),
    (
        "2.47",
        "server detail: the flavor embedded (original_name, vcpus, ram, disk, "
        "ephemeral, swap, extra_specs) instead of a link",
    ),
    ("2.48", "server diagnostics format (nothing the broker serves)"),
    ("2.49", "volume attachments: tag"),
    ("2.50", "quota classes (nothing the broker serves)"),
    ("2.51", "volume-extended events (nothing the broker serves)"),
    ("2.52", "server create: tags"),
    ("2.53", "service and hypervisor UUIDs (nothing the broker serves)"),
    ("2.54", "rebuild with a key pair (nothing the broker serves)"),
    ("2.55", "flavors: description"),
    ("2.56", "cold migration to a host (nothing the broker serves)"),
    ("2.57", "rebuild user_data; personality removed (nothing the broker serves)"),
    ("2.58", "instance action paging (nothing the broker serves)"),
    ("2.59", "migration paging (nothing the broker serves)"),
    ("2.60", "volume attachments: a multiattach volume may be attached"),
    ("2.61", "flavors: extra_specs"),
    ("2.62", "instance action event host (nothing the broker serves)"),
    ("2.63", "server detail: trusted_image_certificates"),
    (
        "2.64",
        "server groups: 'policy' and 'rules' replace 'policies'; metadata removed; "
        "max_server_per_host for anti-affinity",
    ),
)

MIN = Version.parse(VERSIONS[0][0])
MAX = Version.parse(VERSIONS[-1][0])

V2_3 = Version(2, 3)
V2_9 = Version(2, 9)
V2_13 = Version(2, 13)
V2_15 = Version(2, 15)
V2_16 = Version(2, 16)
V2_19 = Version(2, 19)
V2_26 = Version(2, 26)
V2_41 = Version(2, 41)
V2_47 = Version(2, 47)
V2_55 = Version(2, 55)
V2_61 = Version(2, 61)
V2_63 = Version(2, 63)
V2_64 = Version(2, 64)


def _asked(request: Request) -> str | None:
    """The version text the client asked for, from either header, or None."""
    modern = request.headers.get(HEADER)
    if modern:
        # "compute 2.64", possibly among other services: "volume 3.0, compute 2.64".
        for part in modern.split(","):
            service, _, value = part.strip().partition(" ")
            if service.lower() == SERVICE and value.strip():
                return value.strip()
    legacy = request.headers.get(LEGACY_HEADER)
    return legacy.strip() if legacy and legacy.strip() else None


async def requested_version(request: Request) -> Version:
    """The microversion this request is served at; remembered for the response headers.

    ``async`` because it does no I/O: FastAPI then calls it on the event loop instead of
    handing it to a worker thread, which would cost every compute request a thread hop.

    :raises BadRequest: the header is not a version.
    :raises NotAcceptable: the version is outside the range the broker serves (406).
    """
    version = negotiate(_asked(request), MIN, MAX, "compute")
    request.state.microversion = str(version)
    return version


def negotiate(asked: str | None, minimum: Version, maximum: Version, service: str) -> Version:
    """The version a request asking for ``asked`` (None: no header) is served at, within
    ``[minimum, maximum]``; shared by the compute and block-storage APIs.

    :raises BadRequest: ``asked`` is not a version.
    :raises NotAcceptable: outside the range served (406).
    """
    if asked is None:
        return minimum
    if asked.lower() == "latest":
        return maximum
    try:
        version = Version.parse(asked)
    except ValueError as exc:
        raise BadRequest(
            f"invalid {service} API version {asked!r}: expected {minimum.major}.Y or 'latest'",
            problems=[{"field": "OpenStack-API-Version", "message": str(exc)}],
        ) from exc
    if not minimum <= version <= maximum:
        raise NotAcceptable(
            reason=f"Version {version} is not supported by the API. "
            f"Minimum is {minimum} and maximum is {maximum}."
        )
    return version


@functools.lru_cache(maxsize=256)
def response_headers(version: str) -> tuple[tuple[bytes, bytes], ...]:
    """The headers that name the version an answer was made for (built once per version:
    every compute answer carries them)."""
    return (
        (HEADER.encode(), f"{SERVICE} {version}".encode()),
        (LEGACY_HEADER.encode(), version.encode()),
        (b"vary", f"{HEADER}, {LEGACY_HEADER}".encode()),
    )


MicroversionDep = Annotated[Version, Depends(requested_version)]
