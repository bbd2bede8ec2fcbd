"""What the gang planner reads and answers: members, groupings, zones with their room
(host and pool slots, or the same as columns of arrays), assignments and plans.

Plain values, so the planner stays a pure function and its callers (the inputs, the
claims, the build) share one vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, overload

import numpy as np
from numpy.typing import NDArray

from federator.groups.rules import Rule, ZoneMode

__all__ = [
    "GROUP_POLICY",
    "NO_VALID_HOST",
    "SERVER",
    "VOLUME",
    "Assignment",
    "Grouping",
    "HostColumns",
    "HostSlot",
    "Member",
    "Plan",
    "PoolColumns",
    "PoolSlot",
    "ZoneOption",
]

SERVER = "server"
VOLUME = "volume"
NO_VALID_HOST = "no_valid_host"
GROUP_POLICY = "group_policy"


@dataclass(frozen=True, slots=True)
class Member:
    """One instance of the cluster: a server (``vcpus``, ``ram_mb``, ``disk_gb``) or a
    volume (``size_gb``)."""

    name: str
    kind: str
    vcpus: int = 0
    ram_mb: int = 0
    disk_gb: int = 0
    size_gb: int = 0


@dataclass(frozen=True, slots=True)
class Grouping:
    name: str
    members: tuple[str, ...]
    rule: Rule


@dataclass(frozen=True, slots=True)
class HostSlot:
    name: str
    az: str
    free_vcpus: int
    free_ram_mb: int
    free_disk_gb: int


@dataclass(frozen=True, slots=True)
class PoolSlot:
    """A storage pool; ``host`` None for a pool of the whole zone, ``free_gb`` None when
    unbounded."""

    name: str
    host: str | None
    az: str
    free_gb: int | None


class HostColumns(Sequence[HostSlot]):
    """A zone's hosts as columns, position by position: ``names``, each host's
    availability zone as a code into ``az_names`` (``az_codes``), and its free vCPUs, RAM
    and disk. This is how :func:`federator.vclusters.inputs.gather` hands the scheduler's
    host table to the planner without an object per host; it still reads as a sequence of
    :class:`HostSlot`, each made when it is read. The arrays are shared, not copied: treat
    them as read-only.

    :raises ValueError: the columns are not all of one length.
    """

    __slots__ = ("az_codes", "az_names", "free_disk_gb", "free_ram_mb", "free_vcpus", "names")

    def __init__(
        self,
        names: Sequence[str],
        az_codes: NDArray[np.integer[Any]],
        az_names: Sequence[str],
        free_vcpus: NDArray[np.int64],
        free_ram_mb: NDArray[np.int64],
        free_disk_gb: NDArray[np.int64],
    ) -> None:
        n = len(names)
        if not all(len(c) == n for c in (az_codes, free_vcpus, free_ram_mb, free_disk_gb)):
            raise ValueError("every host column must have one entry per host")
        self.names = names
        self.az_codes = az_codes
        self.az_names = az_names
        self.free_vcpus = free_vcpus
        self.free_ram_mb = free_ram_mb
        self.free_disk_gb = free_disk_gb

    @classmethod
    def of(cls, hosts: Sequence[HostSlot]) -> HostColumns:
        """``hosts`` as columns (themselves when they are columns already)."""
        if isinstance(hosts, HostColumns):
            return hosts
        codes: dict[str, int] = {}
        az_codes = np.fromiter((codes.setdefault(h.az, len(codes)) for h in hosts), np.int32)
        return cls(
            [h.name for h in hosts],
            az_codes,
            list(codes),
            np.fromiter((h.free_vcpus for h in hosts), np.int64, len(hosts)),
            np.fromiter((h.free_ram_mb for h in hosts), np.int64, len(hosts)),
            np.fromiter((h.free_disk_gb for h in hosts), np.int64, len(hosts)),
        )

    def az_at(self, i: int) -> str:
        """The availability zone of the host at position ``i``."""
        return self.az_names[int(self.az_codes[i])]

    def fits(self, vcpus: int, ram_mb: int, disk_gb: int) -> NDArray[np.bool_]:
        """Where a server of that size fits in what is free."""
        fit: NDArray[np.bool_] = (
            (self.free_vcpus >= vcpus)
            & (self.free_ram_mb >= ram_mb)
            & (self.free_disk_gb >= disk_gb)
        )
        return fit

    def __len__(self) -> int:
        return len(self.names)

    @overload
    def __getitem__(self, i: int) -> HostSlot: ...

    @overload
    def __getitem__(self, i: slice) -> Sequence[HostSlot]: ...

    def __getitem__(self, i: int | slice) -> HostSlot | Sequence[HostSlot]:
        if isinstance(i, slice):
            return [self[j] for j in range(len(self))[i]]
        name = self.names[i]  # IndexError for a position out of range
        return HostSlot(name, self.az_at(i), int(self.free_vcpus[i]),
                        int(self.free_ram_mb[i]), int(self.free_disk_gb[i]))  # fmt: skip

    def __repr__(self) -> str:
        return f"HostColumns({len(self)} hosts)"


class PoolColumns(Sequence[PoolSlot]):
    """A zone's storage pools as columns: ``names``, ``hosts`` (None: a pool of the whole
    zone), ``azs``, and ``free_gb`` where ``unbounded`` is False (an unbounded pool's
    ``free_gb`` entry means nothing). Reads as a sequence of :class:`PoolSlot`, as
    :class:`HostColumns` reads as hosts; the arrays are shared, not copied.

    :raises ValueError: the columns are not all of one length.
    """

    __slots__ = ("azs", "free_gb", "hosts", "names", "unbounded")

    def __init__(
        self,
        names: Sequence[str],
        hosts: Sequence[str | None],
        azs: Sequence[str],
        free_gb: NDArray[np.int64],
        unbounded: NDArray[np.bool_],
    ) -> None:
        n = len(names)
        if not all(len(c) == n for c in (hosts, azs, free_gb, unbounded)):
            raise ValueError("every pool column must have one entry per pool")
        self.names = names
        self.hosts = hosts
        self.azs = azs
        self.free_gb = free_gb
        self.unbounded = unbounded

    @classmethod
    def of(cls, pools: Sequence[PoolSlot]) -> PoolColumns:
        """``pools`` as columns (themselves when they are columns already)."""
        if isinstance(pools, PoolColumns):
            return pools
        return cls(
            [p.name for p in pools],
            [p.host for p in pools],
            [p.az for p in pools],
            np.fromiter((p.free_gb or 0 for p in pools), np.int64, len(pools)),
            np.fromiter((p.free_gb is None for p in pools), np.bool_, len(pools)),
        )

    def __len__(self) -> int:
        return len(self.names)

    @overload
    def __getitem__(self, i: int) -> PoolSlot: ...

    @overload
    def __getitem__(self, i: slice) -> Sequence[PoolSlot]: ...

    def __getitem__(self, i: int | slice) -> PoolSlot | Sequence[PoolSlot]:
        if isinstance(i, slice):
            return [self[j] for j in range(len(self))[i]]
        name = self.names[i]
        free = None if self.unbounded[i] else int(self.free_gb[i])
        return PoolSlot(name, self.hosts[i], self.azs[i], free)

    def __repr__(self) -> str:
        return f"PoolColumns({len(self)} pools)"


@dataclass(frozen=True, slots=True)
class ZoneOption:
    """A zone the policy lets the cluster use, with what is left in it.

    ``hosts`` are listed for a ``hosts`` zone (the broker schedules them); any other zone
    is judged as a whole against its ``*_left`` ceilings (None: no ceiling). Hosts and
    pools may be given one by one or as columns (:class:`HostColumns`,
    :class:`PoolColumns`); the planner reads either.
    ``shared_storage`` False means host-local pools: a volume attaches only to servers on
    its pool's host.
    """

    name: str
    mode: ZoneMode
    az: str
    hosts: Sequence[HostSlot] = ()
    pools: Sequence[PoolSlot] = ()
    shared_storage: bool = True
    instances_left: int | None = None
    vcpus_left: int | None = None
    ram_mb_left: int | None = None
    volumes_left: int | None = None
    gb_left: int | None = None


@dataclass(frozen=True, slots=True)
class Assignment:
    """Where one member goes: ``host`` for a server on a scheduled host, ``pool`` (and its
    host, for a host pool) for a volume."""

    member: str
    zone: str
    host: str | None = None
    pool: str | None = None
    az: str = ""


@dataclass(frozen=True, slots=True)
class Plan:
    """Every member's place (in the order members were given), or, with ``assignments``
    empty, why there is none: ``fault`` is ``no_valid_host`` or ``group_policy``,
    ``blocked_by`` the grouping or resource most often in the way."""

    assignments: tuple[Assignment, ...] = ()
    fault: str | None = None
    blocked_by: str | None = None
    message: str | None = None
    tried: int = 0

    @property
    def ok(self) -> bool:
        return self.fault is None
