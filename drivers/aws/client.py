"""Building the EC2 client, and keeping credentials out of botocore's debug log.

boto3 ships no type information, so the client is typed ``Any`` here and nowhere
else is boto3 imported.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from typing import Any

import boto3
import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ProfileNotFound

from drivers.aws.options import AwsOptions
from federator.exception import ConfigError

__all__ = ["STAND_IN_CREDENTIALS", "CredentialLogFilter", "guard_credential_logs", "make_client"]

# What a stand_in zone signs with. Obviously not a key: no secret to protect, and
# nothing that could be mistaken for one in a log or an error.
STAND_IN_CREDENTIALS = ("STAND-IN-NOT-A-KEY", "stand-in-not-a-secret")

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

    A ``stand_in`` zone's session gets :data:`STAND_IN_CREDENTIALS` as explicit static
    credentials instead. botocore then never runs the chain for it, so no key from the
    environment, the shared files or an instance role is read or used to sign a request
    to the stand-in; and since they live on this session only, nothing is written to
    ``os.environ`` where other zones' chains would find it. The options guarantee the
    endpoint is a loopback address, so even the dummy signatures never leave the host.
    Its session reads no shared AWS config either (``AWS_PROFILE`` naming a profile
    that does not exist cannot stop it).

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
        if options.stand_in:
            key, secret = STAND_IN_CREDENTIALS
            session = boto3.session.Session(
                aws_access_key_id=key,
                aws_secret_access_key=secret,
                region_name=options.region,
                botocore_session=_unconfigured_session(),
            )
        else:
            session = boto3.session.Session(
                profile_name=options.profile, region_name=options.region
            )
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


def _unconfigured_session() -> Any:
    """A botocore session that reads no shared config or credentials file and no
    ``AWS_PROFILE``: (config key, environment variable, default, conversion) of each
    setting, with neither a key nor a variable."""
    return botocore.session.Session(
        session_vars={
            "profile": (None, None, None, None),
            "config_file": (None, None, os.devnull, None),
            "credentials_file": (None, None, os.devnull, None),
        }
    )
