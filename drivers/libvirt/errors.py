"""The one place where ``libvirt.libvirtError`` becomes the broker's error taxonomy.

:func:`translate` maps a libvirt error, raised by an operation on one host, to a
:class:`~federator.driver.DriverError`; :func:`translated` wraps a block of libvirt
calls with it. Messages name the zone, the configured host name and the operation and
keep libvirt's own message after :func:`scrub`, which removes the user information of
any URI in it. A connection URI is only ever shown through :func:`redact_uri`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from urllib.parse import urlsplit

import libvirt

from federator.driver import (
    AuthError,
    CapacityError,
    DriverError,
    InstanceNotFound,
    PermanentError,
    TransientError,
)

__all__ = [
    "CODE_TABLE",
    "error_code",
    "redact_uri",
    "scrub",
    "translate",
    "translated",
]

# libvirt error code -> the broker error it becomes. A code missing here is permanent.
CODE_TABLE: Mapping[int, type[DriverError]] = MappingProxyType(
    {
        libvirt.VIR_ERR_NO_DOMAIN: InstanceNotFound,
        # The host ran out of memory or some other resource: try another host.
        libvirt.VIR_ERR_NO_MEMORY: CapacityError,
        # The connection or the daemon behind it failed; a retry may work.
        libvirt.VIR_ERR_NO_CONNECT: TransientError,
        libvirt.VIR_ERR_INVALID_CONN: TransientError,
        libvirt.VIR_ERR_SYSTEM_ERROR: TransientError,
        libvirt.VIR_ERR_RPC: TransientError,
        libvirt.VIR_ERR_GNUTLS_ERROR: TransientError,
        libvirt.VIR_ERR_SSH: TransientError,
        libvirt.VIR_ERR_LIBSSH: TransientError,
        libvirt.VIR_ERR_UNKNOWN_HOST: TransientError,
        libvirt.VIR_ERR_OPERATION_TIMEOUT: TransientError,
        libvirt.VIR_ERR_OPERATION_ABORTED: TransientError,
        libvirt.VIR_ERR_AGENT_UNRESPONSIVE: TransientError,
        libvirt.VIR_ERR_AGENT_UNSYNCED: TransientError,
        libvirt.VIR_ERR_RESOURCE_BUSY: TransientError,
        libvirt.VIR_ERR_NO_SERVER: TransientError,
        libvirt.VIR_ERR_NO_CLIENT: TransientError,
        # The daemon refused who we are.
        libvirt.VIR_ERR_AUTH_FAILED: AuthError,
        libvirt.VIR_ERR_AUTH_CANCELLED: AuthError,
        libvirt.VIR_ERR_AUTH_UNAVAILABLE: AuthError,
        libvirt.VIR_ERR_ACCESS_DENIED: AuthError,
        libvirt.VIR_ERR_OPERATION_DENIED: AuthError,
    }
)

# Errors libvirt reports with a generic code whose message says the host is full.
_CAPACITY_MESSAGES = (
    "not enough free space",
    "cannot allocate memory",
    "out of memory",
    "no space left on device",
)

_MAX_MESSAGE = 400
# user[:password]@ after a scheme, e.g. qemu+ssh://root:secret@hv1/system
_USERINFO = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s'\"]*@")
# query parameters of a URI may name key files or carry secrets
_URI_QUERY = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^\s?'\"]*)\?[^\s'\"]*")


def redact_uri(uri: str) -> str:
    """``uri`` without user information or query, fit to appear in a message or a log."""
    parts = urlsplit(uri)
    # Built by hand: urlunsplit drops the "//" of an empty authority (qemu:///system).
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"


def scrub(text: str) -> str:
    """libvirt's message with URI user information and queries removed, on one line."""
    text = _USERINFO.sub(r"\1", text)
    text = _URI_QUERY.sub(r"\1", text)
    text = " ".join(text.split())
    if len(text) > _MAX_MESSAGE:
        text = text[: _MAX_MESSAGE - 3] + "..."
    return text


def error_code(exc: libvirt.libvirtError) -> int:
    """libvirt's error code of ``exc`` (``VIR_ERR_OK`` when it carries none)."""
    code = exc.get_error_code()
    return int(code) if code is not None else libvirt.VIR_ERR_OK


def translate(zone: str, host: str, operation: str, exc: BaseException) -> DriverError:
    """The broker error for ``exc``, raised by ``operation`` on ``host`` of ``zone``."""
    if isinstance(exc, DriverError):
        return exc
    if not isinstance(exc, libvirt.libvirtError):
        return PermanentError(zone, f"host {host}: {operation}: unexpected {type(exc).__name__}")
    code = error_code(exc)
    message = scrub(str(exc.get_error_message() or exc))
    detail = {"host": host, "libvirt_code": code}
    if code in (libvirt.VIR_ERR_AUTH_FAILED, libvirt.VIR_ERR_ACCESS_DENIED):
        # The daemon's message can quote the identity it refused; keep only the code.
        return AuthError(zone, f"host {host}: {operation}: access refused", **detail)
    cls = CODE_TABLE.get(code)
    if cls is None and any(m in message.lower() for m in _CAPACITY_MESSAGES):
        cls = CapacityError
    return (cls or PermanentError)(zone, f"host {host}: {operation}: {message}", **detail)


@contextmanager
def translated(zone: str, host: str, operation: str) -> Iterator[None]:
    """Translate every ``libvirtError`` raised in the block (``raise ... from exc``)."""
    try:
        yield
    except libvirt.libvirtError as exc:
        raise translate(zone, host, operation, exc) from exc
