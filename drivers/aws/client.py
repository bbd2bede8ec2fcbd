"""Building the EC2 client, and keeping credentials out of botocore's debug log.

boto3 ships no type information, so the client is typed ``Any`` here and nowhere
else is boto3 imported.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ProfileNotFound

from drivers.aws.options import AwsOptions
from federator.exception import ConfigError

__all__ = ["CredentialLogFilter", "guard_credential_logs", "make_client"]

# botocore.endpoint logs each prepared request with its headers (the Authorization
# header names the access key id, X-Amz-Security-Token is the session token) and
# botocore.auth logs the canonical request being signed, token included.
SENSITIVE_LOGGERS = ("botocore.auth", "botocore.endpoint")
_SENSITIVE = re.compile(r"authorization|x-amz-security-token|credential=", re.IGNORECASE)
_guard_lock = threading.Lock()


class CredentialLogFilter(logging.Filter):
    """Drops botocore records that carry request headers or signing material.

    The filter sits on the loggers that create such records, so it holds even when
    an operator turns botocore's debug logging on.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "botocore.auth":
            return False
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is not worth the risk
            return False
        return _SENSITIVE.search(message) is None


def guard_credential_logs() -> None:
    """Install :class:`CredentialLogFilter` on botocore's sensitive loggers, once."""
    with _guard_lock:
        for name in SENSITIVE_LOGGERS:
            logger = logging.getLogger(name)
            if not any(isinstance(f, CredentialLogFilter) for f in logger.filters):
                logger.addFilter(CredentialLogFilter())


def make_client(options: AwsOptions, zone: str) -> Any:
    """One boto3 session and its EC2 client for ``zone``.

    Credentials come from boto3's standard chain, narrowed to ``options.profile``
    when set. Sessions are not thread-safe but clients are, so the driver builds
    both once and shares the client between threads.

    :raises ConfigError: the profile does not exist or the client cannot be built.
    """
    config = Config(
        region_name=options.region,
        connect_timeout=options.connect_timeout,
        read_timeout=options.read_timeout,
        retries={"mode": "standard", "total_max_attempts": options.max_attempts},
        max_pool_connections=options.max_connections,
        user_agent_extra="federator",
    )
    try:
        session = boto3.session.Session(profile_name=options.profile, region_name=options.region)
        return session.client("ec2", endpoint_url=options.endpoint_url, config=config)
    except ProfileNotFound as exc:
        raise ConfigError(
            reason=f"zone {zone!r}: AWS profile {options.profile!r} is not in the shared "
            "config files"
        ) from exc
    except (BotoCoreError, ValueError) as exc:
        raise ConfigError(
            reason=f"zone {zone!r}: cannot build the EC2 client ({type(exc).__name__})"
        ) from exc
