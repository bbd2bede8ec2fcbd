"""The one place where boto3 and botocore errors become the broker's error taxonomy.

:func:`translate` maps an exception to a :class:`~federator.driver.DriverError`;
:func:`translated` wraps a block of EC2 calls with it. Messages keep AWS's error code
and message, pass through :func:`scrub`, and never interpolate options, client
arguments or environment values, so no credential reaches a message or a log.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    CredentialRetrievalError,
    HTTPClientError,
    NoAuthTokenError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
    TokenRetrievalError,
)
from botocore.parsers import ResponseParserError

from federator.blockstorage import VolumeNotFound
from federator.driver import (
    AuthError,
    CapacityError,
    DriverError,
    InstanceNotFound,
    PermanentError,
    TransientError,
)

__all__ = [
    "AUTH_CODES",
    "CAPACITY_CODES",
    "NOT_ATTACHED_CODES",
    "NOT_FOUND_CODES",
    "TRANSIENT_CODES",
    "VOLUME_CONFLICT_CODES",
    "VOLUME_NOT_FOUND_CODES",
    "About",
    "aws_code",
    "launch_failure",
    "scrub",
    "translate",
    "translated",
]

# The zone cannot take the instance now; the broker tries another zone.
CAPACITY_CODES: frozenset[str] = frozenset(
    {
        "InsufficientInstanceCapacity",
        "InsufficientHostCapacity",
        "InsufficientReservedInstanceCapacity",
        "InsufficientCapacityOnHost",
        "InsufficientFreeAddressesInSubnet",
        "InsufficientAddressCapacity",
        "InsufficientVolumeCapacity",
        "InstanceLimitExceeded",
        "VcpuLimitExceeded",
        "MaxSpotInstanceCountExceeded",
        "VolumeLimitExceeded",
        "VolumeTypeNotAvailableInZone",
        "MaxIOPSLimitExceeded",
        "AddressLimitExceeded",
        "NetworkInterfaceLimitExceeded",
    }
)

# A passing failure: botocore has already retried it; the broker retries with backoff.
TRANSIENT_CODES: frozenset[str] = frozenset(
    {
        "RequestLimitExceeded",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "EC2ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "BandwidthLimitExceeded",
        "ServiceUnavailable",
        "Unavailable",
        "InternalError",
        "InternalFailure",
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
        "IncorrectInstanceState",
        "IncorrectState",
    }
)

# The zone's credentials are rejected or lack a permission: the zone is unhealthy.
AUTH_CODES: frozenset[str] = frozenset(
    {
        "AuthFailure",
        "UnauthorizedOperation",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "MissingAuthenticationToken",
        "ExpiredToken",
        "ExpiredTokenException",
        "RequestExpired",
        "AccessDenied",
        "AccessDeniedException",
        "UnrecognizedClientException",
        "OptInRequired",
        "Blocked",
    }
)

NOT_FOUND_CODES: frozenset[str] = frozenset({"InvalidInstanceID.NotFound"})
VOLUME_NOT_FOUND_CODES: frozenset[str] = frozenset({"InvalidVolume.NotFound"})

# A volume call refused for the volume's state (attached, or not available): the broker
# must change something first, so retrying as it is cannot help. Instance calls keep
# IncorrectState transient (an instance between states settles by itself); the volume
# driver checks the one passing volume state, "creating", itself before it calls.
VOLUME_CONFLICT_CODES: frozenset[str] = frozenset(
    {"VolumeInUse", "IncorrectState", "InvalidVolume.ZoneMismatch", "AttachmentLimitExceeded"}
)

# DetachVolume's answer for an attachment that is not there: the detach is already done.
NOT_ATTACHED_CODES: frozenset[str] = frozenset({"InvalidAttachment.NotFound"})

About = Literal["instance", "volume"]

_CREDENTIAL_ERRORS = (
    NoCredentialsError,
    PartialCredentialsError,
    CredentialRetrievalError,
    NoAuthTokenError,
    TokenRetrievalError,
    ProfileNotFound,
)
_NETWORK_ERRORS = (ConnectionError, HTTPClientError, ResponseParserError)

_MAX_MESSAGE = 400
_SCRUBBERS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Access key ids (long-term AKIA..., temporary ASIA..., and the other IAM prefixes).
    (
        re.compile(
            r"\b(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|APKA|AROA)"
            r"[A-Z0-9]{12,}\b"
        ),
        "<redacted>",
    ),
    (re.compile(r"(Credential=)[^\s,'\"]+"), r"\1<redacted>"),
    (re.compile(r"(Signature=)[^\s,'\"]+"), r"\1<redacted>"),
    (
        re.compile(r"(x-amz-security-token['\"]?\s*[:=]\s*b?['\"]?)[^\s'\",}]+", re.IGNORECASE),
        r"\1<redacted>",
    ),
)


def scrub(text: str) -> str:
    """``text`` with anything shaped like a credential removed, cut to a sane length.

    AWS messages do not normally carry credentials; this is a second line of defence
    for the ones that quote a request (signature mismatches from EC2-compatible clouds).
    """
    for pattern, replacement in _SCRUBBERS:
        text = pattern.sub(replacement, text)
    text = " ".join(text.split())
    if len(text) > _MAX_MESSAGE:
        text = text[: _MAX_MESSAGE - 3] + "..."
    return text


def translate(
    zone: str, operation: str, exc: BaseException, *, about: About = "instance"
) -> DriverError:
    """The broker error for ``exc``, raised by EC2 operation ``operation`` in ``zone``.

    AWS error codes are matched first (not found, auth, capacity, transient); any
    other ``ClientError`` is permanent unless its HTTP status is 5xx. Network
    failures and timeouts are transient, credential failures are auth errors and
    every other botocore error is permanent. For calls ``about`` a volume, the state
    conflicts of :data:`VOLUME_CONFLICT_CODES` are permanent.
    """
    if isinstance(exc, DriverError):
        return exc
    if isinstance(exc, ClientError):
        return _client_error(zone, operation, exc, about)
    if isinstance(exc, _CREDENTIAL_ERRORS):
        return AuthError(
            zone, f"{operation}: credentials were rejected or are missing ({type(exc).__name__})"
        )
    if isinstance(exc, _NETWORK_ERRORS):
        return TransientError(zone, f"{operation}: {type(exc).__name__}: {scrub(str(exc))}")
    if isinstance(exc, BotoCoreError):
        return PermanentError(zone, f"{operation}: {type(exc).__name__}: {scrub(str(exc))}")
    return PermanentError(zone, f"{operation}: unexpected {type(exc).__name__}")


@contextmanager
def translated(zone: str, operation: str, *, about: About = "instance") -> Iterator[None]:
    """Translate every boto3/botocore error raised in the block (``raise ... from exc``)."""
    try:
        yield
    except (ClientError, BotoCoreError, ResponseParserError) as exc:
        raise translate(zone, operation, exc, about=about) from exc


def aws_code(exc: DriverError) -> str | None:
    """The AWS error code a translated error came from, if it came from one."""
    code = exc.detail.get("aws_code")
    return code if isinstance(code, str) else None


def launch_failure(zone: str, uuid: str, reason_code: str, reason_message: str) -> DriverError:
    """The error for an instance EC2 accepted but terminated while launching it.

    EC2 reports why in the instance's ``StateReason``, with codes such as
    ``Server.InsufficientInstanceCapacity`` or ``Client.VolumeLimitExceeded``.
    """
    code = reason_code.rpartition(".")[2]
    reason = f"instance for {uuid} terminated while launching: {scrub(reason_message)}"
    if code in CAPACITY_CODES:
        return CapacityError(zone, reason, aws_code=reason_code)
    if reason_code.startswith("Server.") or code in TRANSIENT_CODES:
        return TransientError(zone, reason, aws_code=reason_code)
    return PermanentError(zone, reason, aws_code=reason_code)


def _client_error(zone: str, operation: str, exc: ClientError, about: About) -> DriverError:
    response: dict[str, Any] = getattr(exc, "response", None) or {}
    error: dict[str, Any] = response.get("Error") or {}
    meta: dict[str, Any] = response.get("ResponseMetadata") or {}
    code = str(error.get("Code") or "Unknown")
    message = scrub(str(error.get("Message") or ""))
    status = meta.get("HTTPStatusCode")
    detail = {"aws_code": code, "request_id": str(meta.get("RequestId") or ""), "status": status}
    if code in NOT_FOUND_CODES:
        return InstanceNotFound(zone, f"{operation}: {code}: {message}", **detail)
    if code in VOLUME_NOT_FOUND_CODES:
        return VolumeNotFound(zone, f"{operation}: {code}: {message}", **detail)
    if code in AUTH_CODES:
        # AWS's own message is left out: for signature errors it can quote the request.
        return AuthError(zone, f"{operation}: credentials were rejected ({code})", **detail)
    if code in CAPACITY_CODES:
        return CapacityError(zone, f"{operation}: {code}: {message}", **detail)
    if about == "volume" and code in VOLUME_CONFLICT_CODES:
        return PermanentError(zone, f"{operation}: {code}: {message}", **detail)
    if code in TRANSIENT_CODES or (isinstance(status, int) and status >= 500):
        return TransientError(zone, f"{operation}: {code}: {message}", **detail)
    return PermanentError(zone, f"{operation}: {code}: {message}", **detail)
