"""A small client of the broker's HTTP API, for the command line.

Every failure becomes a :class:`ClientError` whose ``str()`` is one readable line (plus one
line per problem the broker listed); commands print it and exit non-zero, never a traceback.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Annotated, Any, Self

import httpx
import typer
from rich.markup import escape

from federator import __version__, errors
from federator.cli.common import fail

DEFAULT_URL = "http://127.0.0.1:8774"
URL_ENV = "FEDERATOR_URL"
DEFAULT_TIMEOUT = 30.0
CONNECT_TIMEOUT = 5.0
COMPUTE = "/compute/v2.1"
BROKER = "/federator/v1"


class ClientError(Exception):
    """A request could not be made or the broker refused it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BrokerUnreachable(ClientError):
    """No HTTP answer at all: refused, reset, timed out or an unusable URL."""


class ApiError(ClientError):
    """The broker answered with an error status.

    ``code`` is the broker's stable dotted error code when the body carried one; ``problems``
    lists the individual problems of a validation error (``field`` or ``path`` and ``message``).
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        problems: list[dict[str, Any]] | None = None,
        request_id: str = "",
    ) -> None:
        self.status = status
        self.code = code
        self.problems = problems or []
        self.request_id = request_id
        head = f"HTTP {status} {code}: {message}" if code else f"HTTP {status}: {message}"
        lines = [head, *(f"  {_problem_line(p)}" for p in self.problems)]
        super().__init__("\n".join(lines))

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiError:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            text = " ".join(response.text.split())[:200]
            return cls(response.status_code, "", text or response.reason_phrase or "error")
        problems = body.get("problems")
        return cls(
            response.status_code,
            str(body.get("code") or ""),
            str(body.get("message") or body.get("title") or response.reason_phrase or "error"),
            problems=[p for p in problems if isinstance(p, dict)]
            if isinstance(problems, list)
            else None,
            request_id=str(body.get("request_id") or ""),
        )


def _problem_line(problem: Mapping[str, Any]) -> str:
    where = str(problem.get("path") or problem.get("field") or "$")
    if "line" in problem:
        where += f" (line {problem['line']}, column {problem.get('column')})"
    return f"{where}: {problem.get('message', 'invalid')}"


def resolve_url(url: str | None) -> str:
    """``url``, else ``$FEDERATOR_URL``, else the default, without a trailing slash."""
    chosen = url or os.environ.get(URL_ENV) or DEFAULT_URL
    return chosen.rstrip("/")


class Client:
    """Synchronous JSON calls against one broker.

    :param url: the broker's root URL (``http://host:port``); see :func:`resolve_url`.
    :param timeout: seconds to wait for any single answer.
    :param transport: an httpx transport, for tests.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = resolve_url(url)
        self.timeout = timeout
        try:
            self._http = httpx.Client(
                base_url=self.url,
                timeout=httpx.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT)),
                headers={
                    "Accept": "application/json",
                    "User-Agent": f"federator-cli/{__version__}",
                },
                transport=transport,
            )
        except httpx.InvalidURL as exc:
            raise ClientError(f"invalid broker URL {self.url!r}: {exc}") from None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        body: Any = None,
    ) -> Any:
        """Send one request and return the decoded JSON body (None when there is none).

        :raises BrokerUnreachable: no HTTP answer arrived.
        :raises ApiError: the answer had a 4xx or 5xx status.
        """
        try:
            response = self._http.request(method, path, params=params, json=body)
        except httpx.TimeoutException:
            raise BrokerUnreachable(
                f"cannot reach the broker at {self.url}: no answer within {self.timeout:g}s"
            ) from None
        except httpx.InvalidURL as exc:
            raise ClientError(f"invalid broker URL {self.url!r}: {exc}") from None
        except httpx.TransportError as exc:
            raise BrokerUnreachable(
                f"cannot reach the broker at {self.url}: {_reason(exc)}"
            ) from None
        if response.is_error:
            raise ApiError.from_response(response)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ClientError(
                f"the broker at {self.url} answered {method} {path} with a body that is not JSON"
            ) from None

    def get(self, path: str, params: Mapping[str, str | int] | None = None) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, body=body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    # --- the calls the commands make -------------------------------------------------

    def server(self, server_id: str) -> dict[str, Any]:
        body: dict[str, Any] = self.get(f"{COMPUTE}/servers/{server_id}")["server"]
        return body

    def servers(
        self, params: Mapping[str, str | int], *, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Servers in detail. With ``limit`` one page; without, every page (marker by marker)."""
        query = dict(params)
        if limit is not None:
            query["limit"] = limit
            page: list[dict[str, Any]] = self.get(f"{COMPUTE}/servers/detail", query)["servers"]
            return page
        found: list[dict[str, Any]] = []
        seen: set[str] = set()
        while True:
            page = self.get(f"{COMPUTE}/servers/detail", query)["servers"]
            fresh = [s for s in page if s["id"] not in seen]
            if not fresh:
                return found
            found.extend(fresh)
            seen.update(s["id"] for s in fresh)
            query["marker"] = fresh[-1]["id"]

    def server_action(self, server_id: str, action: dict[str, Any]) -> None:
        self.post(f"{COMPUTE}/servers/{server_id}/action", action)

    def find_server(self, ref: str) -> dict[str, Any]:
        """A server by id, else by exact name.

        :raises ApiError: no server has that id or name (the broker's 404), or several
            share the name (reported as a 409 with ``federator.resource.conflict``).
        """
        try:
            return self.server(ref)
        except ApiError as exc:
            if exc.status != 404:
                raise
            # A name with regex syntax is a regular expression to the broker.
            pattern = f"^{re.escape(ref)}$"
            named = [s for s in self.servers({"name": pattern}) if s["name"] == ref]
            if len(named) == 1:
                return named[0]
            if len(named) > 1:
                raise ApiError(
                    409, errors.CONFLICT, f"{len(named)} servers are named {ref!r}; give an id"
                ) from None
            raise


def _reason(exc: httpx.TransportError) -> str:
    """The innermost OS-level reason (``[Errno 111] Connection refused``), not the chain."""
    cause: BaseException | None = exc
    last = str(exc) or type(exc).__name__
    while cause is not None:
        text = str(cause)
        if text:
            last = text
        cause = cause.__cause__ or cause.__context__
    return last


# --- what every client command shares -------------------------------------------------

UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar=URL_ENV,
        show_envvar=True,
        help=f"The broker's API root. Default: {DEFAULT_URL}.",
    ),
]
TimeoutOpt = Annotated[
    float,
    typer.Option("--timeout", min=0.1, help="Seconds to wait for each answer from the broker."),
]


@contextmanager
def session(url: str | None, timeout: float = DEFAULT_TIMEOUT) -> Iterator[Client]:
    """A :class:`Client` for one command: closed on exit, and any :class:`ClientError`
    raised inside turned into an error message and exit status 1."""
    try:
        with Client(url, timeout=timeout) as client:
            yield client
    except ClientError as exc:
        fail(escape(exc.message))
