"""/image: a minimal Glance v2 over the images in the configuration, enough for the
OpenStack clients to resolve ``--image NAME`` and to show image names."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse

from federator.api.deps import IMAGE_PREFIX, BrokerDep, RootUrlDep, get_token
from federator.api.views import GLANCE_VERSION, image_view
from federator.exception import NotFound

router = APIRouter(prefix=IMAGE_PREFIX, tags=["image"])
# Everything below the version document needs a token.
v2 = APIRouter(prefix="/v2", dependencies=[Depends(get_token)])


@router.get("", status_code=300)
@router.get("/", status_code=300, include_in_schema=False)
def versions(root: RootUrlDep) -> JSONResponse:
    body = {
        "versions": [
            {
                "id": GLANCE_VERSION,
                "status": "CURRENT",
                "links": [{"rel": "self", "href": f"{root}{IMAGE_PREFIX}/v2/"}],
            }
        ]
    }
    return JSONResponse(body, status_code=300)


@v2.get("/images")
def list_images(
    broker: BrokerDep,
    name: str | None = None,
    ids: Annotated[str | None, Query(alias="id")] = None,
) -> dict[str, Any]:
    """``?name=`` matches exactly; ``?id=in:A,B`` (or ``?id=A``) picks ids."""
    images = list(broker.settings.images)
    if name is not None:
        images = [i for i in images if i.name == name]
    if ids is not None:
        wanted = set(ids.removeprefix("in:").split(","))
        images = [i for i in images if i.id in wanted]
    return {
        "images": [image_view(i) for i in images],
        "first": "/v2/images",
        "schema": "/v2/schemas/images",
    }


@v2.get("/images/{image_id}")
def show_image(image_id: str, broker: BrokerDep) -> dict[str, Any]:
    # By id only: the clients look a name up by listing after a 404 here.
    for i in broker.settings.images:
        if i.id == image_id:
            return image_view(i)
    raise NotFound(kind="image", ident=image_id)


router.include_router(v2)
