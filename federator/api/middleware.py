"""ASGI middleware: request ids and the request body size limit."""

from __future__ import annotations

import json
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from federator import errors
from federator.api.microversion import response_headers
from federator.api.volume_microversion import response_headers as volume_headers


class RequestIdAndLimit:
    """Tag every request with an id (``x-openstack-request-id``) and refuse oversized bodies.

    Bodies are counted as they stream, so a client that lies about (or omits)
    Content-Length is stopped too; the answer is 413 with the usual JSON error body.
    """

    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = f"req-{uuid.uuid4()}"
        rid_bytes = rid.encode()
        scope.setdefault("state", {})["request_id"] = rid
        if "\x00" in scope.get("path", "") or b"%00" in scope.get("query_string", b""):
            # No identifier or filter holds NUL, and PostgreSQL refuses it in any text
            # parameter: refuse it here rather than fail deep in a query.
            await _refuse(
                send, rid, 400, errors.BAD_REQUEST, "Bad request", "the URL contains a NUL byte"
            )
            return
        for name, declared in scope.get("headers") or ():
            if name == b"content-length":
                if declared.isdigit() and int(declared) > self.max_body:
                    await _too_large(send, rid, self.max_body)
                    return
                break

        # Buffer the body (bounded) before the app sees it: an oversized body is refused
        # whole, and the app never has to cope with a half-read request.
        chunks: list[bytes] = []
        seen = 0
        more = scope["method"] not in ("GET", "HEAD", "DELETE", "OPTIONS")
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.max_body:
                await _too_large(send, rid, self.max_body)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        async def tagged_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                hdrs = list(message.get("headers", ()))
                hdrs.append((b"x-openstack-request-id", rid_bytes))
                state = scope["state"]
                version = state.get("microversion")
                if version:
                    hdrs.extend(response_headers(version))
                volume_version = state.get("volume_microversion")
                if volume_version:
                    hdrs.extend(volume_headers(volume_version))
                message = {**message, "headers": hdrs}
            await send(message)

        await self.app(scope, replay, tagged_send)


async def _too_large(send: Send, rid: str, limit: int) -> None:
    message = f"request body exceeds the limit of {limit} bytes"
    await _refuse(send, rid, 413, errors.PAYLOAD_TOO_LARGE, "Request too large", message)


_NOVA_KEYS = {400: "badRequest", 413: "overLimit"}


async def _refuse(send: Send, rid: str, status: int, code: str, title: str, message: str) -> None:
    """Answer with the usual JSON error body before the application sees the request."""
    body: dict[str, Any] = {
        "status": status,
        "code": code,
        "title": title,
        "message": message,
        "request_id": rid,
        _NOVA_KEYS[status]: {"code": status, "message": message},
    }
    raw = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(raw)).encode()),
                (b"x-openstack-request-id", rid.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": raw})
