"""Operations on one domain of the broker's zone, with libvirt errors translated.

An :class:`OwnedDomain` is a domain found on a host whose metadata names this broker
and zone. Its methods are the steps the driver composes into the contract's actions:
read the state, destroy, reset, boot, shut down gracefully, undefine, describe.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TypeVar

import libvirt

from drivers.libvirt.connection import HostHandle
from drivers.libvirt.domainxml import BrokerMetadata
from drivers.libvirt.errors import error_code, translate, translated
from drivers.libvirt.states import RUNNING_STATES, domain_state
from federator.driver import PermanentError, RemoteInstance

__all__ = ["UNDEFINE_BASIC", "UNDEFINE_FULL", "UNSUPPORTED", "OwnedDomain", "discard"]

LOG = logging.getLogger(__name__)
T = TypeVar("T")

# Undefine with what the broker may have left: a managed save image, snapshot and
# checkpoint metadata, UEFI variables. Some drivers (the test driver) take fewer flags.
UNDEFINE_FULL = (
    libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
    | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
    | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
    | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
)
UNDEFINE_BASIC = (
    libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
)
# The hypervisor cannot do this (the call may still work elsewhere or another way).
UNSUPPORTED: frozenset[int] = frozenset(
    {
        libvirt.VIR_ERR_NO_SUPPORT,
        libvirt.VIR_ERR_OPERATION_UNSUPPORTED,
        libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED,
    }
)


@dataclass(frozen=True, slots=True)
class OwnedDomain:
    """A domain of ``zone`` on ``handle``'s host, with the broker metadata it carries."""

    zone: str
    handle: HostHandle
    dom: libvirt.virDomain
    meta: BrokerMetadata

    @property
    def host(self) -> str:
        return self.handle.name

    @property
    def uuid(self) -> str:
        return str(self.dom.UUIDString())

    # --- calls -----------------------------------------------------------------------

    def call(self, op: str, fn: Callable[[], T]) -> T:
        """``fn()`` with its libvirt errors translated for operation ``op``."""
        with translated(self.zone, self.host, op):
            return fn()

    def attempt(self, op: str, fn: Callable[[], object]) -> bool:
        """``fn()``; False (instead of an error) when the hypervisor does not support it."""
        try:
            fn()
        except libvirt.libvirtError as exc:
            if error_code(exc) in UNSUPPORTED:
                return False
            raise translate(self.zone, self.host, op, exc) from exc
        return True

    def state(self) -> int:
        """libvirt's ``virDomainState`` of the domain now."""
        return int(self.call("read domain state", self.dom.state)[0])

    def has_saved_state(self) -> bool:
        """Whether a managed save image (a suspended domain's memory) exists."""
        return bool(self.call("read domain state", lambda: self.dom.hasManagedSaveImage(0)))

    def require_state(self, state: int, allowed: Collection[int], action: str) -> None:
        """:raises PermanentError: ``state`` is not one that ``action`` applies to."""
        if state not in allowed:
            shown = domain_state(state).power_state
            raise PermanentError(self.zone, f"cannot {action} {self.uuid} while it is {shown}")

    # --- power -----------------------------------------------------------------------

    def start(self) -> None:
        """Start a shut-off domain (restoring its managed save image, if any)."""
        self.call("start domain", self.dom.create)

    def destroy(self) -> None:
        """Power off at once; no-op when not running."""
        try:
            self.dom.destroy()
        except libvirt.libvirtError as exc:
            if error_code(exc) == libvirt.VIR_ERR_OPERATION_INVALID:
                return  # not running
            raise translate(self.zone, self.host, "destroy domain", exc) from exc

    def reset(self) -> None:
        """Hard reset a running domain; destroy and start where reset is unsupported."""
        if not self.attempt("reset domain", lambda: self.dom.reset(0)):
            self.destroy()
            self.start()

    def boot_fresh(self) -> None:
        """Start a shut-off domain from power-on, discarding any managed save image."""
        if self.has_saved_state():
            self.call("discard saved state", lambda: self.dom.managedSaveRemove(0))
        self.start()

    def power_off(
        self,
        *,
        timeout: float,
        interval: float,
        sleep: Callable[[float], None],
        monotonic: Callable[[], float],
    ) -> None:
        """Ask the guest to shut down, poll up to ``timeout`` seconds, then destroy.

        A guest that cannot act on the request (paused, crashed, PM-suspended) is
        destroyed at once; a shut-off domain is left alone.
        """
        state = self.state()
        if state == libvirt.VIR_DOMAIN_SHUTOFF:
            return
        if state in RUNNING_STATES and timeout > 0:
            if state != libvirt.VIR_DOMAIN_SHUTDOWN and not self._request_shutdown():
                return
            if self._wait_for_shutoff(timeout, interval, sleep, monotonic):
                return
            LOG.info(
                "zone %s: %s on host %s ignored the shutdown request for %ss; destroying it",
                self.zone,
                self.uuid,
                self.host,
                timeout,
            )
        self.destroy()

    def _request_shutdown(self) -> bool:
        """Send the guest a shutdown request; False if it is already off."""
        try:
            self.dom.shutdown()
        except libvirt.libvirtError as exc:
            if self.state() == libvirt.VIR_DOMAIN_SHUTOFF:
                return False  # it went down by itself meanwhile
            if error_code(exc) not in UNSUPPORTED:
                raise translate(self.zone, self.host, "shut down domain", exc) from exc
        return True

    def _wait_for_shutoff(
        self,
        timeout: float,
        interval: float,
        sleep: Callable[[float], None],
        monotonic: Callable[[], float],
    ) -> bool:
        deadline = monotonic() + timeout
        while True:
            if self.state() == libvirt.VIR_DOMAIN_SHUTOFF:
                return True
            left = deadline - monotonic()
            if left <= 0:
                return False
            sleep(min(interval, left))

    # --- removal ---------------------------------------------------------------------

    def undefine(self) -> None:
        """Remove the definition and what libvirt keeps with it; gone already is fine."""
        for flags in (UNDEFINE_FULL, UNDEFINE_BASIC):
            try:
                self.dom.undefineFlags(flags)
                return
            except libvirt.libvirtError as exc:
                code = error_code(exc)
                if code == libvirt.VIR_ERR_NO_DOMAIN:
                    return
                retry = flags == UNDEFINE_FULL and code in {
                    libvirt.VIR_ERR_INVALID_ARG,
                    *UNSUPPORTED,
                }
                if not retry:
                    raise translate(self.zone, self.host, "undefine domain", exc) from exc

    # --- description -----------------------------------------------------------------

    def describe(self, network: str | None) -> RemoteInstance:
        """The domain as the broker sees it; addresses from ``network``'s DHCP leases."""
        with translated(self.zone, self.host, "read domain"):
            state, max_kib, _mem_kib, vcpus, _cpu_time = self.dom.info()
            state = int(state)
            saved = state == libvirt.VIR_DOMAIN_SHUTOFF and bool(self.dom.hasManagedSaveImage(0))
            name = str(self.dom.name())
        shown = domain_state(state, managed_save=saved)
        meta = self.meta
        return RemoteInstance(
            uuid=self.uuid,
            remote_id=name,
            state=shown.state,
            host=self.host,
            addresses=self._addresses(network) if state in RUNNING_STATES else {},
            launched_at=meta.created_at,
            extra={
                "libvirt_state": shown.libvirt_state,
                "power_state": shown.power_state,
                "domain": name,
                "vcpus": int(vcpus),
                "ram_mb": int(max_kib) // 1024,
                "flavor": meta.flavor,
                "image": meta.image,
                "name": meta.name,
                "project_id": meta.project_id,
                "metadata": dict(meta.metadata),
            },
        )

    def _addresses(self, network: str | None) -> dict[str, list[str]]:
        if network is None:
            return {}
        try:
            interfaces = self.dom.interfaceAddresses(
                libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE
            )
        except libvirt.libvirtError:
            return {}  # no lease (yet), or a hypervisor that cannot tell
        found = [
            str(a["addr"]) for i in (interfaces or {}).values() for a in (i.get("addrs") or [])
        ]
        return {network: found} if found else {}


def discard(zone: str, host: str, dom: libvirt.virDomain) -> None:
    """Destroy and undefine a domain whose start failed; logs instead of raising."""
    with contextlib.suppress(libvirt.libvirtError):  # not running, after a failed start
        dom.destroy()
    try:
        dom.undefineFlags(UNDEFINE_BASIC)
    except libvirt.libvirtError as exc:
        LOG.error(
            "zone %s: host %s: could not undefine %s after a failed start (libvirt code %s)",
            zone,
            host,
            dom.UUIDString(),
            error_code(exc),
        )
