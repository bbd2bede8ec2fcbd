"""Resolve a request's flavor, image and availability zone against the configuration
and the availability zones host aggregates give."""

from __future__ import annotations

from dataclasses import dataclass

from federator.config import FlavorConfig, ImageConfig, Settings
from federator.exception import BadRequest
from federator.hosts import membership
from federator.storage.db import Database


@dataclass(frozen=True, slots=True)
class Resolved:
    flavor: FlavorConfig
    image: ImageConfig
    availability_zone: str | None


def resolve(
    settings: Settings,
    flavor_ref: str,
    image_ref: str,
    availability_zone: str | None,
    *,
    field_prefix: str = "",
    flavor_field: str = "flavor",
    image_field: str = "image",
    db: Database | None = None,
) -> Resolved:
    """Look up flavor and image (by id, then name) and check the AZ exists: a zone's name,
    or (given the API database ``db``) an availability zone of a host aggregate.

    :raises BadRequest: naming the field whose reference is unknown.
    """
    flavor = settings.flavor(flavor_ref)
    if flavor is None:
        raise BadRequest(
            f"flavor {flavor_ref!r} does not exist",
            problems=[{"field": field_prefix + flavor_field, "message": "unknown flavor"}],
        )
    image = settings.image(image_ref)
    if image is None:
        raise BadRequest(
            f"image {image_ref!r} does not exist",
            problems=[{"field": field_prefix + image_field, "message": "unknown image"}],
        )
    az = availability_zone or None
    if az is not None and placement_zone(settings, db, az) is None:
        raise BadRequest(
            f"availability zone {az!r} does not exist",
            problems=[{"field": field_prefix + "availability_zone", "message": "unknown zone"}],
        )
    return Resolved(flavor, image, az)


def placement_zone(settings: Settings, db: Database | None, az: str | None) -> str | None:
    """The zone a request naming availability zone ``az`` goes to: the zone of that name,
    else the local zone holding the hosts of the aggregate availability zone ``az``; None
    when ``az`` is None or unknown."""
    if az is None:
        return None
    if any(z.name == az for z in settings.zones):
        return az
    return membership.zone_of_az(db, az) if db is not None else None
