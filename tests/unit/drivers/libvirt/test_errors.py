"""Error translation: libvirt codes to the broker's taxonomy, and no secret in a message."""

from __future__ import annotations

import libvirt
import pytest

from drivers.libvirt.connection import HostHandle
from drivers.libvirt.errors import redact_uri, scrub, translate, translated
from federator.driver import (
    AuthError,
    CapacityError,
    DriverError,
    InstanceNotFound,
    PermanentError,
    TransientError,
)
from tests.unit.drivers.libvirt.conftest import ZONE, libvirt_error

SECRET = "s3cr3t-pw"


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (libvirt.VIR_ERR_NO_DOMAIN, InstanceNotFound),
        (libvirt.VIR_ERR_NO_MEMORY, CapacityError),
        (libvirt.VIR_ERR_SYSTEM_ERROR, TransientError),
        (libvirt.VIR_ERR_RPC, TransientError),
        (libvirt.VIR_ERR_INVALID_CONN, TransientError),
        (libvirt.VIR_ERR_NO_CONNECT, TransientError),
        (libvirt.VIR_ERR_OPERATION_TIMEOUT, TransientError),
        (libvirt.VIR_ERR_AGENT_UNRESPONSIVE, TransientError),
        (libvirt.VIR_ERR_AUTH_FAILED, AuthError),
        (libvirt.VIR_ERR_AUTH_CANCELLED, AuthError),
        (libvirt.VIR_ERR_ACCESS_DENIED, AuthError),
        (libvirt.VIR_ERR_XML_ERROR, PermanentError),
        (libvirt.VIR_ERR_CONFIG_UNSUPPORTED, PermanentError),
        (libvirt.VIR_ERR_OPERATION_INVALID, PermanentError),
        (libvirt.VIR_ERR_INTERNAL_ERROR, PermanentError),
    ],
)
def test_codes_map_to_the_taxonomy(code: int, expected: type[DriverError]) -> None:
    err = translate(ZONE, "host1", "create", libvirt_error(code, "what libvirt said"))
    assert type(err) is expected
    assert err.zone == ZONE
    assert err.reason.startswith("host host1: create: ")
    assert err.detail["libvirt_code"] == code


@pytest.mark.parametrize(
    "message",
    [
        "internal error: Not enough free space in pool for volume 'x'",
        "internal error: process exited while connecting to monitor: Cannot allocate memory",
    ],
)
def test_generic_errors_that_say_the_host_is_full_are_capacity(message: str) -> None:
    err = translate(ZONE, "h", "create", libvirt_error(libvirt.VIR_ERR_INTERNAL_ERROR, message))
    assert isinstance(err, CapacityError)


def test_auth_errors_drop_the_daemons_message() -> None:
    exc = libvirt_error(libvirt.VIR_ERR_AUTH_FAILED, f"authentication failed for root:{SECRET}")
    err = translate(ZONE, "h", "connect", exc)
    assert isinstance(err, AuthError)
    assert SECRET not in err.message


def test_other_exceptions_are_permanent_and_driver_errors_pass_through() -> None:
    assert isinstance(translate(ZONE, "h", "x", RuntimeError("boom")), PermanentError)
    same = TransientError(ZONE, "already translated")
    assert translate(ZONE, "h", "x", same) is same


def test_translated_chains_the_cause() -> None:
    with pytest.raises(InstanceNotFound) as caught, translated(ZONE, "h", "get"):
        raise libvirt_error(libvirt.VIR_ERR_NO_DOMAIN)
    assert isinstance(caught.value.__cause__, libvirt.libvirtError)


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        (f"qemu+ssh://root:{SECRET}@hv1/system", "qemu+ssh://hv1/system"),
        (f"qemu+tls://admin@hv2:16514/system?pkipath=/{SECRET}", "qemu+tls://hv2:16514/system"),
        ("qemu:///system", "qemu:///system"),
        ("test:///tmp/h1.xml", "test:///tmp/h1.xml"),
    ],
)
def test_redact_uri_drops_user_information_and_query(uri: str, shown: str) -> None:
    assert redact_uri(uri) == shown


def test_scrub_removes_user_information_inside_messages() -> None:
    text = f"cannot connect to qemu+ssh://root:{SECRET}@hv1/system?keyfile=/k/{SECRET} now"
    assert SECRET not in scrub(text)
    assert "qemu+ssh://hv1/system" in scrub(text)
    assert len(scrub("x" * 5000)) <= 400


def test_a_refused_connection_is_transient_and_keeps_the_password_out() -> None:
    # Port 1 on loopback refuses at once: a real libvirt connection failure.
    uri = f"qemu+tcp://admin:{SECRET}@127.0.0.1:1/system"
    handle = HostHandle(ZONE, "hv1", uri)
    with pytest.raises(TransientError) as caught:
        handle.connection()
    assert "hv1" in caught.value.message
    assert SECRET not in caught.value.message
    assert SECRET not in repr(handle)
