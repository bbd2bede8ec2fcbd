"""Block-storage (Cinder v3) API microversions: the one list of what each version changes.

A client asks with ``OpenStack-API-Version: volume 3.X``; no header means 3.0, ``latest``
means :data:`MAX`, a version out of range answers 406 and one that is not a version 400,
as for compute (:mod:`federator.api.microversion`). Only the changes to what the broker
serves are listed with a note; the versions between are accepted and change nothing here.
"""

from __future__ import annotations

import functools
from typing import Annotated

from fastapi import Depends, Request

from federator.api.microversion import HEADER, Version, negotiate

__all__ = ["MAX", "MIN", "VERSIONS", "VolumeVersionDep", "requested_volume_version"]

SERVICE = "volume"

VERSIONS: tuple[tuple[str, str], ...] = (
    ("3.0", "the v3 API: volumes, types, availability zones, limits, quota sets"),
    ("3.13", "volume: group_id"),
    ("3.21", "volume: provider_id (admin)"),
    ("3.45", "volume lists: with_count adds 'count'"),
    ("3.48", "volume: shared_targets and service_uuid"),
    ("3.61", "volume: cluster_name (admin)"),
    ("3.62", "GET /types/default"),
    ("3.63", "volume: volume_type_id"),
    ("3.65", "volume: consumes_quota"),
    ("3.70", "the highest version served (3.66-3.70 change nothing the broker serves)"),
)

MIN = Version.parse(VERSIONS[0][0])
MAX = Version.parse(VERSIONS[-1][0])

V3_13 = Version(3, 13)
V3_21 = Version(3, 21)
V3_45 = Version(3, 45)
V3_48 = Version(3, 48)
V3_61 = Version(3, 61)
V3_62 = Version(3, 62)
V3_63 = Version(3, 63)
V3_65 = Version(3, 65)


def _asked(request: Request) -> str | None:
    for part in request.headers.get(HEADER, "").split(","):
        service, _, value = part.strip().partition(" ")
        if service.lower() == SERVICE and value.strip():
            return value.strip()
    return None


async def requested_volume_version(request: Request) -> Version:
    """The block-storage microversion this request is served at (echoed in the answer).

    :raises BadRequest: the header is not a version.
    :raises NotAcceptable: outside the range served (406).
    """
    version = negotiate(_asked(request), MIN, MAX, "volume")
    request.state.volume_microversion = str(version)
    return version


@functools.lru_cache(maxsize=256)
def response_headers(version: str) -> tuple[tuple[bytes, bytes], ...]:
    """The headers that name the block-storage version an answer was made for (built once
    per version)."""
    return (
        (HEADER.encode(), f"{SERVICE} {version}".encode()),
        (b"vary", HEADER.encode()),
    )


VolumeVersionDep = Annotated[Version, Depends(requested_volume_version)]
