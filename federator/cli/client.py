"""A small client of the broker's HTTP API, for the command line.

Every failure becomes a :class:`ClientError` whose ``str()`` is one readable line (plus one
line per problem the broker listed); commands print it and exit non-zero, never a traceback.

The client authenticates like the OpenStack clients: ``OS_AUTH_URL``, ``OS_USERNAME``,
``OS_PASSWORD``, ``OS_PROJECT_NAME`` (or ``OS_PROJECT_ID``), ``OS_USER_DOMAIN_NAME`` and
``OS_PROJECT_DOMAIN_NAME``, or the matching ``--os-*`` options of ``federator``. It asks for
a token on its first call and keeps it for the rest of the process.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any, Self
from urllib.parse import urlsplit

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
IDENTITY = "/identity"
BLOCK_STORAGE = "block-storage"
AUTH_HINT = (
    "give credentials: source the broker's admin-openrc (in its data directory), or set "
    "OS_USERNAME, OS_PASSWORD and OS_PROJECT_NAME (or pass --os-username, --os-password and "
    "--os-project-name to federator)"
)
# Tokens this process obtained, by (auth URL, user, password digest, project, domains).
_TOKENS: dict[tuple[str, ...], str] = {}
# The service catalog that came with each of those tokens, by the same key.
_CATALOGS: dict[tuple[str, ...], list[dict[str, Any]]] = {}


@dataclass(frozen=True, slots=True)
class Credentials:
    """What the client authenticates with; ``auth_url`` defaults to the broker's /identity."""

    auth_url: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    project_name: str | None = None
    project_id: str | None = None
    user_domain_name: str = "Default"
    project_domain_name: str = "Default"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Credentials:
        env = os.environ if env is None else env
        return cls(
            auth_url=env.get("OS_AUTH_URL") or None,
            username=env.get("OS_USERNAME") or None,
            password=env.get("OS_PASSWORD") or None,
            project_name=env.get("OS_PROJECT_NAME") or None,
            project_id=env.get("OS_PROJECT_ID") or None,
            user_domain_name=env.get("OS_USER_DOMAIN_NAME") or "Default",
            project_domain_name=env.get("OS_PROJECT_DOMAIN_NAME") or "Default",
        )

    @property
    def usable(self) -> bool:
        return bool(self.username and self.password)

    def auth_body(self) -> dict[str, Any]:
        user = {
            "name": self.username,
            "domain": {"name": self.user_domain_name},
            "password": self.password,
        }
        auth: dict[str, Any] = {"identity": {"methods": ["password"], "password": {"user": user}}}
        if self.project_id:
            auth["scope"] = {"project": {"id": self.project_id}}
        elif self.project_name:
            auth["scope"] = {
                "project": {"name": self.project_name, "domain": {"name": self.project_domain_name}}
            }
        return {"auth": auth}


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
        hint: str = "",
    ) -> None:
        self.status = status
        self.code = code
        self.problems = problems or []
        self.request_id = request_id
        head = f"HTTP {status} {code}: {message}" if code else f"HTTP {status}: {message}"
        lines = [head, *(f"  {_problem_line(p)}" for p in self.problems)]
        if hint:
            lines.append(hint)
        super().__init__("\n".join(lines))

    @classmethod
    def from_response(cls, response: httpx.Response, hint: str = "") -> ApiError:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            text = " ".join(response.text.split())[:200]
            return cls(
                response.status_code, "", text or response.reason_phrase or "error", hint=hint
            )
        problems = body.get("problems")
        return cls(
            response.status_code,
            str(body.get("code") or ""),
            str(body.get("message") or body.get("title") or response.reason_phrase or "error"),
            problems=[p for p in problems if isinstance(p, dict)]
            if isinstance(problems, list)
            else None,
            request_id=str(body.get("request_id") or ""),
            hint=hint,
        )


def _problem_line(problem: Mapping[str, Any]) -> str:
    where = str(problem.get("path") or problem.get("field") or "$")
    if "line" in problem:
        where += f" (line {problem['line']}, column {problem.get('column')})"
    return f"{where}: {problem.get('message', 'invalid')}"


def resolve_url(url: str | None) -> str:
    """``url``, else ``$FEDERATOR_URL``, else the root of ``$OS_AUTH_URL`` when that is a
    broker's /identity, else the default; without a trailing slash."""
    chosen = url or os.environ.get(URL_ENV)
    if not chosen:
        auth = (os.environ.get("OS_AUTH_URL") or "").rstrip("/").removesuffix("/v3")
        if auth.endswith(IDENTITY):
            chosen = auth.removesuffix(IDENTITY)
    return (chosen or DEFAULT_URL).rstrip("/")


class Client:
    """Synchronous JSON calls against one broker.

    :param url: the broker's root URL (``http://host:port``); see :func:`resolve_url`.
    :param credentials: who to authenticate as; without a user and password no token is
        sent (and the broker answers 401).
    :param timeout: seconds to wait for any single answer.
    :param transport: an httpx transport, for tests.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        credentials: Credentials | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = resolve_url(url)
        self.credentials = credentials or Credentials()
        self.auth_url = (self.credentials.auth_url or self.url + IDENTITY).rstrip("/")
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
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """Send one request and return the decoded JSON body (None when there is none).
        ``headers`` are sent besides the token (a microversion, say).

        :raises BrokerUnreachable: no HTTP answer arrived.
        :raises ApiError: the answer had a 4xx or 5xx status.
        """
        token = self._token()
        response = self._send(method, path, params=params, body=body, token=token, headers=headers)
        if response.status_code == 401 and token is not None:
            # A token kept from earlier in the process may have expired: ask once more.
            token = self._token(fresh=True)
            response = self._send(
                method, path, params=params, body=body, token=token, headers=headers
            )
        if response.is_error:
            hint = AUTH_HINT if response.status_code == 401 and token is None else ""
            raise ApiError.from_response(response, hint)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ClientError(
                f"the broker at {self.url} answered {method} {path} with a body that is not JSON"
            ) from None

    def token(self) -> str:
        """A token for the client's credentials.

        :raises ClientError: there are no credentials, or they were refused.
        """
        token = self._token()
        if token is None:
            raise ClientError(f"no credentials: {AUTH_HINT}")
        return token

    def endpoint(self, service_type: str) -> str:
        """The path, under the broker's URL, of the public endpoint of ``service_type`` in
        the token's catalog (``/volume/v3/<project id>`` for ``block-storage``). Requests go
        to the broker the client was pointed at, as the compute calls do, whatever host the
        catalog names.

        :raises ClientError: there are no credentials, or the catalog has no such service.
        """
        self.token()
        for service in _CATALOGS.get(self._token_key(), []):
            if service.get("type") != service_type:
                continue
            endpoints = [e for e in service.get("endpoints") or [] if e.get("url")]
            public = [e for e in endpoints if e.get("interface") == "public"]
            if public or endpoints:
                return self._path_under_root(str((public or endpoints)[0]["url"]))
        raise ClientError(
            f"the token's catalog lists no {service_type} service: the broker at "
            f"{self.url} (or the identity service at {self.auth_url}) does not offer it"
        )

    def _path_under_root(self, url: str) -> str:
        """``url``'s path, less the path the broker's URL already carries."""
        path = urlsplit(url).path.rstrip("/")
        root = urlsplit(self.url).path.rstrip("/")
        if root and path.startswith(root + "/"):
            path = path.removeprefix(root)
        return path

    def _token_key(self) -> tuple[str, ...]:
        c = self.credentials
        return (
            self.auth_url,
            c.username or "",
            hashlib.sha256((c.password or "").encode()).hexdigest(),
            c.user_domain_name,
            c.project_id or c.project_name or "",
            c.project_domain_name,
        )

    def _token(self, *, fresh: bool = False) -> str | None:
        """A token for the credentials, kept for the process with its catalog; None
        without credentials.

        :raises ApiError: the identity service refused the credentials.
        """
        c = self.credentials
        if not c.usable:
            return None
        key = self._token_key()
        if not fresh and key in _TOKENS:
            return _TOKENS[key]
        path = "/auth/tokens" if self.auth_url.endswith("/v3") else "/v3/auth/tokens"
        response = self._send("POST", self.auth_url + path, body=c.auth_body(), token=None)
        if response.is_error:
            raise ApiError.from_response(response, f"(authenticating at {self.auth_url})")
        token: str = response.headers.get("X-Subject-Token", "")
        if not token:
            raise ClientError(f"{self.auth_url} answered without a token (X-Subject-Token)")
        _TOKENS[key] = token
        _CATALOGS[key] = _catalog_of(response)
        return token

    def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        body: Any = None,
        token: str | None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        sent = dict(headers or {})
        if token:
            sent["X-Auth-Token"] = token
        try:
            return self._http.request(method, path, params=params, json=body, headers=sent)
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

    def get(
        self,
        path: str,
        params: Mapping[str, str | int] | None = None,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        return self.request("GET", path, params=params, headers=headers)

    def post(self, path: str, body: Any = None, *, headers: Mapping[str, str] | None = None) -> Any:
        return self.request("POST", path, body=body, headers=headers)

    def delete(self, path: str, *, headers: Mapping[str, str] | None = None) -> Any:
        return self.request("DELETE", path, headers=headers)

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


def _catalog_of(response: httpx.Response) -> list[dict[str, Any]]:
    """The ``token.catalog`` of an answer to POST /auth/tokens; empty when it has none."""
    try:
        body = response.json()
    except ValueError:
        return []
    token = body.get("token") if isinstance(body, dict) else None
    catalog = token.get("catalog") if isinstance(token, dict) else None
    if not isinstance(catalog, list):
        return []
    return [s for s in catalog if isinstance(s, dict)]


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


_given: list[Credentials] = []


def use_credentials(credentials: Credentials) -> None:
    """Set the credentials of this ``federator`` run (its ``--os-*`` options, which default
    to the ``OS_*`` variables); the command line does it before every command."""
    _given[:] = [credentials]


def current_credentials() -> Credentials:
    """The credentials set by :func:`use_credentials`, else the ``OS_*`` variables."""
    return _given[0] if _given else Credentials.from_env()


@contextmanager
def session(url: str | None, timeout: float = DEFAULT_TIMEOUT) -> Iterator[Client]:
    """A :class:`Client` for one command: closed on exit, and any :class:`ClientError`
    raised inside turned into an error message and exit status 1."""
    try:
        with Client(url, credentials=current_credentials(), timeout=timeout) as client:
            yield client
    except ClientError as exc:
        fail(escape(exc.message))
