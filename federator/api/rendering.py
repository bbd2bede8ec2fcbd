"""JSON answers rendered where the handler runs, not on the event loop.

A synchronous route runs in a worker thread, but what it returns is validated against its
return annotation and rendered by FastAPI on the event loop, which serves every connection:
a list of a thousand servers rendered there stalls every other request for as long. A route
that returns :func:`json_response` has its body serialised once, in its own thread, and
FastAPI passes the response through untouched (headers the middleware adds, such as the
microversion, still apply).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import Response

__all__ = ["JsonResponse", "json_response"]


class JsonResponse(Response):
    """``application/json``; the body is given already rendered."""

    media_type = "application/json"


def json_response(content: Any, status_code: int = 200) -> JsonResponse:
    """``content`` (JSON types only) as compact UTF-8 JSON.

    :raises TypeError: ``content`` holds a value JSON cannot represent (a bug in a view).
    """
    body = json.dumps(content, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return JsonResponse(body.encode("utf-8"), status_code=status_code)
