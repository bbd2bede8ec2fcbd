"""libvirt-python is installed; without it the other modules here are not collected."""

from __future__ import annotations

from tests.support_libvirt import require_libvirt


def test_libvirt_python_is_installed() -> None:
    require_libvirt()
