"""The one place that turns errors into HTTP answers.

Every error body is JSON: ``{status, code, title, message, request_id}`` plus ``problems``
for validation errors, and the Nova-style wrapper key (``badRequest``, ``itemNotFound``, ...)
so OpenStack clients print the same message; under /identity, and on every 401, Keystone's
``error`` key too. A 401 names the identity endpoint in ``WWW-Authenticate``, as Keystone's
middleware does. Never a stack trace.
"""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from federator import errors
from federator.api.deps import IDENTITY_PREFIX
from federator.exception import BadRequest, FederatorError, PolicyInvalid

LOG = logging.getLogger(__name__)

_NOVA_KEYS = {
    400: "badRequest",
    401: "unauthorized",
    403: "forbidden",
    404: "itemNotFound",
    405: "badMethod",
    406: "computeFault",
    409: "conflictingRequest",
    413: "overLimit",
    422: "unprocessableEntity",
    500: "computeFault",
    503: "serviceUnavailable",
}
_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    404: "Not found",
    405: "Method not allowed",
    406: "Not acceptable",
    413: "Request too large",
}
_CODES = {404: errors.NOT_FOUND, 405: errors.BAD_REQUEST, 413: errors.PAYLOAD_TOO_LARGE}


def request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", ""))


def error_response(
    request: Request,
    status: int,
    code: str,
    title: str,
    message: str,
    problems: list[dict[str, Any]] | None = None,
) -> JSONResponse:
    root = str(request.base_url).rstrip("/")
    body: dict[str, Any] = {
        "status": status,
        "code": code,
        "title": title,
        "message": message,
        "request_id": request_id(request),
    }
    if problems:
        body["problems"] = problems
    nova_key = _NOVA_KEYS.get(status)
    if nova_key:
        body[nova_key] = {"code": status, "message": message}
    headers: dict[str, str] = {}
    if status == 401:
        headers["WWW-Authenticate"] = f'Keystone uri="{root}{IDENTITY_PREFIX}"'
    if status == 401 or request.url.path.startswith(IDENTITY_PREFIX):
        body["error"] = {"code": status, "title": title, "message": message}
    return JSONResponse(body, status_code=status, headers=headers)


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p != "body"]
    out = ""
    for p in parts:
        out += f"[{p}]" if p.isdigit() else (f".{p}" if out else p)
    return out or "body"


def install(app: FastAPI) -> None:
    @app.exception_handler(FederatorError)
    async def _federator(request: Request, exc: FederatorError) -> JSONResponse:
        problems: list[dict[str, Any]] | None = None
        if isinstance(exc, (BadRequest, PolicyInvalid)):
            problems = exc.problems or None
        if exc.http_status >= 500:
            LOG.error("request %s failed: %s", request_id(request), exc.message)
        return error_response(request, exc.http_status, exc.code, exc.title, exc.message, problems)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            etype = str(err.get("type", ""))
            if etype == "json_invalid":
                ctx = err.get("ctx") or {}
                problems.append(
                    {"field": "body", "message": f"body is not valid JSON: {ctx.get('error', '')}"}
                )
                continue
            msg = str(err.get("msg", "invalid"))
            if etype == "missing":
                msg = "this field is required"
            elif etype == "extra_forbidden":
                msg = "unknown field"
            problems.append({"field": _field(tuple(err.get("loc", ()))), "message": msg})
        summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems[:5])
        return error_response(
            request, 400, errors.BAD_REQUEST, "Bad request", f"invalid request: {summary}", problems
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        status = exc.status_code
        message = str(exc.detail) if exc.detail else _TITLES.get(status, "error")
        if status == 404 and exc.detail == "Not Found":
            message = f"no resource at {request.url.path}"
        # FastAPI raises a bare 400 only when it cannot decode the body at all.
        problems = [{"field": "body", "message": message}] if status == 400 else None
        return error_response(
            request,
            status,
            _CODES.get(status, errors.BAD_REQUEST if status < 500 else errors.INTERNAL),
            _TITLES.get(status, "Error"),
            message,
            problems,
        )

    @app.exception_handler(sqlalchemy.exc.OperationalError)
    @app.exception_handler(sqlalchemy.exc.TimeoutError)
    async def _database(request: Request, exc: Exception) -> JSONResponse:
        # The driver's text can hold a DSN; log only the kind of failure, never echo it.
        LOG.error("request %s: database unavailable: %s", request_id(request), type(exc).__name__)
        response = error_response(
            request,
            503,
            errors.DATABASE_UNAVAILABLE,
            "Service unavailable",
            "the broker's database cannot be reached; retry later"
            f" (request id {request_id(request)})",
        )
        response.headers["Retry-After"] = "5"
        return response

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        LOG.exception("request %s: unexpected error", request_id(request))
        return error_response(
            request,
            500,
            errors.INTERNAL,
            "Internal error",
            f"an internal error occurred; quote request id {request_id(request)} when reporting it",
        )
