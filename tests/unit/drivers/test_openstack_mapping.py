"""The openstack driver's data: state table, error translation, options."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from keystoneauth1 import exceptions as ks
from openstack import exceptions as sdk
from pydantic import ValidationError

from drivers.openstack.errors import translate
from drivers.openstack.options import OpenStackOptions
from drivers.openstack.states import NOVA_STATES, power_state
from federator.driver import (
    AuthError,
    CapacityError,
    InstanceNotFound,
    PermanentError,
    PowerState,
    TransientError,
)


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("ACTIVE", PowerState.ACTIVE),
        ("BUILD", PowerState.BUILD),
        ("SHUTOFF", PowerState.SHUTOFF),
        ("HARD_REBOOT", PowerState.REBOOT),
        ("ERROR", PowerState.ERROR),
        ("SOFT_DELETED", PowerState.DELETED),
        ("active", PowerState.ACTIVE),
        ("SOMETHING_NEW", PowerState.ERROR),
        (None, PowerState.ERROR),
    ],
)
def test_state_table(status: str | None, state: PowerState) -> None:
    assert power_state(status) is state


def test_every_nova_server_status_is_mapped() -> None:
    nova = {
        "ACTIVE",
        "BUILD",
        "DELETED",
        "ERROR",
        "HARD_REBOOT",
        "MIGRATING",
        "PASSWORD",
        "PAUSED",
        "REBOOT",
        "REBUILD",
        "RESCUE",
        "RESIZE",
        "REVERT_RESIZE",
        "SHELVED",
        "SHELVED_OFFLOADED",
        "SHUTOFF",
        "SOFT_DELETED",
        "SUSPENDED",
        "UNKNOWN",
        "VERIFY_RESIZE",
    }
    missing = nova - set(NOVA_STATES) - {"REVERT_RESIZE"}
    assert not missing


def _http(status: int, message: str) -> sdk.HttpException:
    return sdk.HttpException(message=message, details=message, http_status=status)


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (ks.Unauthorized("bad"), AuthError),
        (_http(401, "The request you have made requires authentication."), AuthError),
        (ks.ConnectFailure("refused"), TransientError),
        (_http(503, "service unavailable"), TransientError),
        (_http(429, "slow down"), TransientError),
        (_http(404, "Instance x could not be found."), InstanceNotFound),
        (_http(403, "Quota exceeded for instances"), CapacityError),
        (_http(413, "OverLimit: cores"), CapacityError),
        (_http(400, "Invalid flavorRef"), PermanentError),
    ],
)
def test_errors_translate_into_the_taxonomy(exc: Exception, kind: type) -> None:
    err = translate("child-1", exc, uuid="u-1")
    assert type(err) is kind
    assert err.zone == "child-1"


def test_auth_errors_do_not_echo_the_provider_text() -> None:
    err = translate("child-1", _http(401, "token gAAAAsecretvalue is invalid"))
    assert "gAAAA" not in err.message


def test_query_strings_are_dropped_from_messages() -> None:
    err = translate("child-1", _http(400, "bad request to /servers?token=abc123"))
    assert "abc123" not in err.message


def test_exactly_one_credential_source() -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        OpenStackOptions()
    with pytest.raises(ValidationError, match="exactly one"):
        OpenStackOptions.model_validate(
            {
                "cloud": "c",
                "auth": {
                    "auth_url": "http://x",
                    "username": "u",
                    "password": "p",
                    "project_name": "p",
                },
            }
        )
    opts = OpenStackOptions.model_validate(
        {
            "auth": {
                "auth_url": "http://x",
                "username": "u",
                "password": "hunter2-secret",
                "project_name": "p",
            }
        }
    )
    assert "hunter2-secret" not in repr(opts) and "hunter2-secret" not in str(opts.model_dump())


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2026-11-21T07:38:06.000000", datetime(2026, 11, 21, 7, 38, 6, tzinfo=UTC)),
        ("2026-11-21T07:38:06Z", datetime(2026, 11, 21, 7, 38, 6, tzinfo=UTC)),
        (None, None),
        ("", None),
        ("yesterday", None),
    ],
)
def test_launch_time_is_read_as_utc(raw: object, expected: datetime | None) -> None:
    from drivers.openstack.states import remote_time as _launched_at

    assert _launched_at(raw) == expected
