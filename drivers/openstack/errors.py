"""The one place openstacksdk and keystoneauth errors become the broker's taxonomy."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

from federator.blockstorage import VolumeNotFound
from federator.driver import (
    AuthError,
    CapacityError,
    DriverError,
    InstanceNotFound,
    PermanentError,
    TransientError,
)

_CAPACITY = re.compile(r"no valid host|quota|over ?limit|insufficient|capacity", re.I)
_VOLUME_WORD = re.compile(r"\bvolume\b", re.I)

About = Literal["instance", "server group", "volume", "attachment"]
"""What a call is about: a 404 about an instance is :class:`InstanceNotFound`; about a
server group it means the remote cloud serves no such API or group, a
:class:`PermanentError` (the group calls' contract raises no not-found). About a volume,
a 404 is :class:`VolumeNotFound`; about an attachment (Nova's os-volume_attachments, which
names a server and a volume) it is whichever of the two the remote cloud says is missing.

Block-storage calls (``volume``, ``attachment``) also read two statuses more strictly,
as Cinder uses them: every 413 is a quota (OverLimit), so capacity; a 403 that is no
quota means the broker's credentials may not do this, an :class:`AuthError`."""

_STORAGE: frozenset[About] = frozenset({"volume", "attachment"})


def _status(exc: BaseException) -> int | None:
    code = getattr(exc, "status_code", None) or getattr(exc, "http_status", None)
    return int(code) if isinstance(code, int) else None


def _message(exc: BaseException) -> str:
    text = getattr(exc, "details", None) or getattr(exc, "message", None) or str(exc)
    # Keep the provider's words but never a URL's query string (tokens can travel there).
    return re.sub(r"\?\S*", "", str(text))[:500]


def _not_found(zone: str, message: str, uuid: str | None, about: About) -> DriverError:
    if about == "server group":
        return PermanentError(zone, f"server groups: {message}")
    if about == "volume" or (about == "attachment" and _VOLUME_WORD.search(message)):
        return VolumeNotFound(zone, f"no volume {uuid}" if uuid else message)
    return InstanceNotFound(zone, f"no instance for {uuid}" if uuid else message)


def translate(
    zone: str, exc: BaseException, *, uuid: str | None = None, about: About = "instance"
) -> DriverError:
    """Map an SDK error onto capacity / transient / auth / not found / permanent.

    ``uuid`` is the broker uuid the call is about (named in a not-found message); for an
    ``attachment`` it is the volume's or the server's, whichever the caller knows.
    """
    from keystoneauth1 import exceptions as ks

    status = _status(exc)
    message = _message(exc)
    storage = about in _STORAGE
    if isinstance(exc, ks.Unauthorized) or status == 401:
        return AuthError(zone, "the remote cloud rejected the broker's credentials")
    if isinstance(exc, (ks.ConnectFailure, ks.ConnectTimeout, ks.DiscoveryFailure)):
        return TransientError(zone, f"cannot reach the remote cloud: {type(exc).__name__}")
    if isinstance(exc, (ks.RequestTimeout, ks.GatewayTimeout)) or (
        status is not None and status >= 500
    ):
        return TransientError(zone, f"remote cloud error {status or ''}: {message}".strip())
    if status == 404:
        return _not_found(zone, message, uuid if about != "attachment" else None, about)
    if status in (403, 413) and _CAPACITY.search(message):
        return CapacityError(zone, message)
    if storage and status == 413:
        return CapacityError(zone, f"over the remote cloud's limits: {message}")
    if storage and status == 403:
        # The remote text is left out: a policy refusal can quote the request.
        return AuthError(zone, "the remote cloud does not allow the broker's credentials this")
    if status == 429:
        return TransientError(zone, f"throttled: {message}")
    return PermanentError(zone, message)


@contextmanager
def translated(zone: str, *, uuid: str | None = None, about: About = "instance") -> Iterator[None]:
    from keystoneauth1.exceptions import ClientException
    from openstack.exceptions import SDKException

    try:
        yield
    except DriverError:
        raise
    except (SDKException, ClientException) as exc:
        raise translate(zone, exc, uuid=uuid, about=about) from exc
