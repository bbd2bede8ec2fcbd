"""Resolve a request's flavor, image and availability zone against the configuration."""

from __future__ import annotations

from dataclasses import dataclass

from federator.config import FlavorConfig, ImageConfig, Settings
from federator.exception import BadRequest


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
) -> Resolved:
    """Look up flavor and image (by id, then name) and check the AZ exists.

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
    if az is not None and az not in {z.name for z in settings.zones}:
        raise BadRequest(
            f"availability zone {az!r} does not exist",
            problems=[{"field": field_prefix + "availability_zone", "message": "unknown zone"}],
        )
    return Resolved(flavor, image, az)
