"""The FederatorError tree.

Every error the broker raises on purpose derives from :class:`FederatorError`.
Each class carries a stable dotted ``code`` (see :mod:`federator.errors`) and a
message template. Only the API's error mapper knows about HTTP; it maps classes
to statuses through :attr:`FederatorError.http_status`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from federator import errors


class FederatorError(Exception):
    """Base of every deliberate broker error.

    :param detail: keyword values substituted into ``template``.
    """

    code: ClassVar[str] = errors.INTERNAL
    title: ClassVar[str] = "Internal error"
    template: ClassVar[str] = "an internal error occurred"
    http_status: ClassVar[int] = 500

    def __init__(self, message: str | None = None, **detail: Any) -> None:
        self.detail: dict[str, Any] = dict(detail)
        if message is None:
            try:
                message = self.template.format(**detail)
            except (KeyError, IndexError):
                message = self.template
        self.message = message
        super().__init__(message)


# --- request and resource errors -------------------------------------------------


class BadRequest(FederatorError):
    code = errors.BAD_REQUEST
    title = "Bad request"
    template = "{reason}"
    http_status = 400

    def __init__(
        self, message: str | None = None, *, problems: Sequence[Mapping[str, Any]] = (), **kw: Any
    ) -> None:
        super().__init__(message, **kw)
        self.problems: list[dict[str, Any]] = [dict(p) for p in problems]


class NotFound(FederatorError):
    code = errors.NOT_FOUND
    title = "Not found"
    template = "{kind} {ident} could not be found"
    http_status = 404


class Conflict(FederatorError):
    code = errors.CONFLICT
    title = "Conflict"
    template = "{reason}"
    http_status = 409


class NotAcceptable(FederatorError):
    """The client asked for an API version the broker does not serve."""

    code = errors.VERSION_NOT_ACCEPTABLE
    title = "Not acceptable"
    template = "{reason}"
    http_status = 406


class InstanceInvalidState(Conflict):
    code = errors.INVALID_STATE
    template = "cannot {action} instance {uuid} while it is {status}"


class Unauthorized(FederatorError):
    """No valid credentials or token. Messages never say which part was wrong."""

    code = errors.UNAUTHORIZED
    title = "Unauthorized"
    template = "{reason}"
    http_status = 401


class Forbidden(FederatorError):
    code = errors.FORBIDDEN
    title = "Forbidden"
    template = "{reason}"
    http_status = 403


# --- configuration, policy, plugins -----------------------------------------------


class ConfigError(FederatorError):
    code = errors.CONFIG_INVALID
    title = "Invalid configuration"
    template = "{reason}"
    http_status = 500


class PolicyInvalid(FederatorError):
    """A policy document failed validation; ``problems`` lists every error found.

    Each problem is a mapping with ``path`` (a JSON path such as
    ``$.zones.local.thresholds.ram_percent.high``), ``message`` and, for JSON
    syntax errors, ``line`` and ``column``.
    """

    code = errors.POLICY_INVALID
    title = "Invalid policy"
    template = "policy {source} is invalid: {count} problem(s)"
    http_status = 422

    def __init__(self, source: str, problems: Sequence[Mapping[str, Any]]) -> None:
        self.problems: list[dict[str, Any]] = [dict(p) for p in problems]
        self.source = source
        super().__init__(source=source, count=len(self.problems))

    def render(self) -> str:
        """One line per problem, ``path: message`` (with line:column when known)."""
        lines = []
        for p in self.problems:
            where = p.get("path", "$")
            if "line" in p:
                where = f"{where} (line {p['line']}, column {p['column']})"
            lines.append(f"{self.source}: {where}: {p['message']}")
        return "\n".join(lines)


class DriverNotFound(FederatorError):
    code = errors.DRIVER_NOT_FOUND
    title = "Driver not installed"
    template = (
        "zone {zone!r} uses driver {driver!r}, which is not installed (installed: {installed})"
    )
    http_status = 500


class DatabaseOutdated(FederatorError):
    code = errors.DATABASE_OUTDATED
    title = "Database schema outdated"
    template = (
        "database {name} is at revision {current}, expected {head}; run `federator db upgrade`"
    )
    http_status = 503


# --- placement outcomes (recorded as cell0 faults) --------------------------------


class PlacementError(FederatorError):
    """No candidate could take the request. ``reasons`` names each candidate's verdict."""

    http_status = 409

    def __init__(
        self, message: str | None = None, *, reasons: Sequence[str] = (), **kw: Any
    ) -> None:
        super().__init__(message, **kw)
        self.reasons = list(reasons)


class NoValidHost(PlacementError):
    code = errors.NO_VALID_HOST
    title = "No valid host"
    template = "no valid host was found"


class QuotaExceeded(PlacementError):
    code = errors.QUOTA_EXCEEDED
    title = "Quota exceeded"
    template = "every candidate availability zone is at its quota"


class PolicyDenied(PlacementError):
    code = errors.POLICY_DENIED
    title = "Denied by policy"
    template = "the policy allows this request in no availability zone"
