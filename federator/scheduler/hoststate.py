"""Columnar host state for the host scheduler.

The scheduler never walks hosts one by one on the decision path. Every figure a
filter or weigher needs lives in a numpy column indexed by host position, so a
rule over a whole zone is one vectorised expression whose cost grows far more
slowly than the number of hosts.

Hosts are stored grouped by zone (zones in name order, hosts of one zone in the
order they were given), so a zone is the contiguous slice ``zone_slice(zone)``
and "host order" -- the deterministic tie-break of the scheduler -- is simply
the position in the table.

Thread safety: ``HostTable.lock`` is a re-entrant lock. Every method that reads
or writes the columns takes it, and :meth:`HostScheduler.select` holds it for
the whole filter -> weigh -> choose pass, so a decision always sees one
consistent state. Because the lock is re-entrant, a caller can make
select-then-claim atomic with ``with table.lock: ...``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from itertools import repeat
from types import MappingProxyType

import numpy as np
from numpy.typing import NDArray

from federator.scheduler.metadata import MetadataColumns

__all__ = ["RATIO_KEYS", "HostRow", "HostTable"]

_NO_METADATA: Mapping[str, frozenset[str]] = MappingProxyType({})
# Aggregate metadata keys that lower a host's allocation ratio (Nova's Aggregate*Filter).
RATIO_KEYS = {
    "cpu": "cpu_allocation_ratio",
    "ram": "ram_allocation_ratio",
    "disk": "disk_allocation_ratio",
}


@dataclass(frozen=True, slots=True)
class HostRow:
    """One host as stored in the database.

    ``vcpus``, ``ram_mb`` and ``disk_gb`` are physical sizes; the ``*_ratio``
    fields are allocation (overcommit) ratios. Schedulable capacity is
    ``floor(physical * ratio)``, where an aggregate's ``*_allocation_ratio``
    metadata may lower the ratio (see :class:`HostTable`). ``disabled_reason``
    says why a host that is not enabled takes no instances (``disabled: not in
    any aggregate``, ``maintenance: kernel upgrade``). ``metadata`` merges the
    metadata of the host's aggregates: each key with the set of values its
    aggregates give it.
    """

    id: int
    zone: str
    name: str
    az: str
    enabled: bool
    vcpus: int
    ram_mb: int
    disk_gb: int
    vcpus_used: int
    ram_used_mb: int
    disk_used_gb: int
    instances: int
    cpu_ratio: float = 4.0
    ram_ratio: float = 1.0
    disk_ratio: float = 1.0
    disabled_reason: str = ""
    metadata: Mapping[str, frozenset[str]] = field(default_factory=lambda: _NO_METADATA)


def _ints(values: list[int]) -> NDArray[np.int64]:
    return np.array(values, dtype=np.int64)


def _floats(values: list[float]) -> NDArray[np.float64]:
    return np.array(values, dtype=np.float64)


def _with_aggregate_ratio(
    own: NDArray[np.float64], aggregate: NDArray[np.float64]
) -> NDArray[np.float64]:
    # An aggregate ratio only ever lowers a host's: claims check capacity against the
    # ratio stored on the host, so the scheduler must not offer more than that.
    lowered: NDArray[np.float64] = np.where(aggregate > 0, np.minimum(own, aggregate), own)
    return lowered


def _capacity(physical: NDArray[np.int64], ratio: NDArray[np.float64]) -> NDArray[np.int64]:
    # float64 product then floor: bit-for-bit what math.floor(physical * ratio) gives.
    return np.floor(physical.astype(np.float64) * ratio).astype(np.int64)


class HostTable:
    """Columnar, mutable in-memory host state.

    Hosts are stored grouped by zone so each zone is a contiguous slice. Public
    columns (numpy arrays indexed by host position):

    * ``enabled`` (bool)
    * ``vcpus_cap``, ``ram_cap``, ``disk_cap``: schedulable capacities (int64)
    * ``vcpus_used``, ``ram_used``, ``disk_used``, ``instances`` (int64)
    * ``az_code`` (int32), decoded through ``az_codes`` (AZ name -> code)
    * ``cpu_ratio``, ``ram_ratio``, ``disk_ratio``: effective allocation ratios, the
      host's own lowered by its aggregates' ``*_allocation_ratio`` metadata (the lowest
      value when several aggregates give one)

    Aggregate metadata is held twice: as the merged mapping of each host
    (:meth:`metadata_at`, for explain) and as :attr:`metadata`, boolean masks per
    key and value built once here, which the aggregate filters combine. Why a
    disabled host is disabled is per host too (:meth:`reason_at`).

    Treat the columns as read-only outside this class; change state through
    :meth:`set_usage` and :meth:`set_enabled`, which take :attr:`lock`.
    """

    def __init__(self, rows: list[HostRow]) -> None:
        """Build from rows already grouped by zone; use :meth:`from_rows`.

        :raises ValueError: a (zone, name) pair appears twice, rows of one zone
            are not contiguous, or a usage figure is negative.
        """
        self.lock = threading.RLock()
        self._names: list[str] = [r.name for r in rows]
        self._zones: list[str] = [r.zone for r in rows]
        self._reasons: list[str] = [r.disabled_reason for r in rows]
        self._metadata: list[Mapping[str, frozenset[str]]] = [r.metadata for r in rows]
        self._azs: list[str] = sorted({r.az for r in rows})
        self.az_codes: dict[str, int] = {az: code for code, az in enumerate(self._azs)}

        self._slices: dict[str, slice] = {}
        self._index: dict[str, dict[str, int]] = {}
        for i, r in enumerate(rows):
            names = self._index.get(r.zone)
            if names is None:
                if r.zone in self._slices:
                    raise ValueError(f"rows of zone {r.zone!r} are not contiguous")
                names = self._index[r.zone] = {}
                self._slices[r.zone] = slice(i, i)
            if r.name in names:
                raise ValueError(f"host {r.name!r} appears twice in zone {r.zone!r}")
            names[r.name] = i
            self._slices[r.zone] = slice(self._slices[r.zone].start, i + 1)
            if min(r.vcpus_used, r.ram_used_mb, r.disk_used_gb, r.instances) < 0:
                raise ValueError(f"host {r.name!r} has negative usage")

        self.ids = _ints([r.id for r in rows])
        self.enabled: NDArray[np.bool_] = np.array([r.enabled for r in rows], dtype=np.bool_)
        self.az_code: NDArray[np.int32] = np.array(
            [self.az_codes[r.az] for r in rows], dtype=np.int32
        )
        self.vcpus_phys = _ints([r.vcpus for r in rows])
        self.ram_phys = _ints([r.ram_mb for r in rows])
        self.disk_phys = _ints([r.disk_gb for r in rows])
        self.metadata = MetadataColumns(self._metadata)
        self._own_ratios = {
            "cpu": _floats([r.cpu_ratio for r in rows]),
            "ram": _floats([r.ram_ratio for r in rows]),
            "disk": _floats([r.disk_ratio for r in rows]),
        }
        self._ratios = {
            kind: _with_aggregate_ratio(own, self.metadata.number(RATIO_KEYS[kind]))
            for kind, own in self._own_ratios.items()
        }
        self.cpu_ratio = self._ratios["cpu"]
        self.ram_ratio = self._ratios["ram"]
        self.disk_ratio = self._ratios["disk"]
        self.vcpus_cap = _capacity(self.vcpus_phys, self.cpu_ratio)
        self.ram_cap = _capacity(self.ram_phys, self.ram_ratio)
        self.disk_cap = _capacity(self.disk_phys, self.disk_ratio)
        self.vcpus_used = _ints([r.vcpus_used for r in rows])
        self.ram_used = _ints([r.ram_used_mb for r in rows])
        self.disk_used = _ints([r.disk_used_gb for r in rows])
        self.instances = _ints([r.instances for r in rows])

    @classmethod
    def from_rows(cls, rows: Iterable[HostRow]) -> HostTable:
        """Build a table from database rows in any order.

        Zones are laid out in name order; within a zone the given row order is
        kept and becomes the scheduler's tie-break order.

        :raises ValueError: a (zone, name) pair appears twice, or a usage
            figure is negative.
        """
        ordered = sorted(rows, key=lambda r: r.zone)  # stable: keeps order within a zone
        return cls(ordered)

    def __len__(self) -> int:
        return len(self._names)

    @property
    def zones(self) -> list[str]:
        """Zone names, in table order."""
        return list(self._slices)

    def zone_slice(self, zone: str) -> slice:
        """Positions of ``zone``'s hosts; an empty slice for an unknown zone."""
        return self._slices.get(zone, slice(0, 0))

    def zone_azs(self, zone: str) -> frozenset[str]:
        """The availability zones of ``zone``'s hosts."""
        sl = self.zone_slice(zone)
        with self.lock:
            codes = np.unique(self.az_code[sl]).tolist()
        return frozenset(self._azs[c] for c in codes)

    def index_of(self, zone: str, host: str) -> int | None:
        """Position of ``host`` in ``zone``, or None; one dict lookup."""
        names = self._index.get(zone)
        return None if names is None else names.get(host)

    def positions_of(self, zone: str, hosts: Iterable[str]) -> NDArray[np.intp]:
        """Positions of ``hosts`` in ``zone``, in iteration order, -1 for a name not in it.

        One dict lookup per name, run by ``map`` in C: no Python call per name, so a
        large server group stays cheap.
        """
        names = self._index.get(zone, {})
        return np.fromiter(map(names.get, hosts, repeat(-1)), dtype=np.intp)

    def name_at(self, i: int) -> str:
        """Host name at position ``i``."""
        return self._names[i]

    def zone_at(self, i: int) -> str:
        """Zone of the host at position ``i``."""
        return self._zones[i]

    def az_at(self, i: int) -> str:
        """Availability zone of the host at position ``i``."""
        return self._azs[int(self.az_code[i])]

    def reason_at(self, i: int) -> str:
        """Why the host at position ``i`` takes no instances; "" if it is enabled."""
        return self._reasons[i]

    def metadata_at(self, i: int) -> Mapping[str, frozenset[str]]:
        """The merged aggregate metadata of the host at position ``i``."""
        return self._metadata[i]

    def aggregate_ratio(self, kind: str, i: int) -> float | None:
        """The allocation ratio (``kind`` one of cpu, ram, disk) an aggregate imposes on
        the host at position ``i``, or None when the host keeps its own."""
        effective = float(self._ratios[kind][i])
        return effective if effective != float(self._own_ratios[kind][i]) else None

    def row_at(self, i: int) -> HostRow:
        """The host at position ``i`` as a row, with its current usage (and the
        effective allocation ratios)."""
        with self.lock:
            return HostRow(
                id=int(self.ids[i]),
                zone=self._zones[i],
                name=self._names[i],
                az=self.az_at(i),
                enabled=bool(self.enabled[i]),
                vcpus=int(self.vcpus_phys[i]),
                ram_mb=int(self.ram_phys[i]),
                disk_gb=int(self.disk_phys[i]),
                vcpus_used=int(self.vcpus_used[i]),
                ram_used_mb=int(self.ram_used[i]),
                disk_used_gb=int(self.disk_used[i]),
                instances=int(self.instances[i]),
                cpu_ratio=float(self.cpu_ratio[i]),
                ram_ratio=float(self.ram_ratio[i]),
                disk_ratio=float(self.disk_ratio[i]),
                disabled_reason=self._reasons[i],
                metadata=self._metadata[i],
            )

    def set_usage(
        self, i: int, *, vcpus_used: int, ram_used_mb: int, disk_used_gb: int, instances: int
    ) -> None:
        """Replace the usage of the host at position ``i``.

        Values are absolute, not deltas; to add to the current usage without a
        race, read and write inside ``with table.lock``.

        :raises IndexError: ``i`` is not a position of this table.
        :raises ValueError: a figure is negative; nothing is changed.
        """
        if min(vcpus_used, ram_used_mb, disk_used_gb, instances) < 0:
            raise ValueError("usage figures must not be negative")
        if not 0 <= i < len(self._names):
            raise IndexError(f"host position {i} out of range")
        with self.lock:
            self.vcpus_used[i] = vcpus_used
            self.ram_used[i] = ram_used_mb
            self.disk_used[i] = disk_used_gb
            self.instances[i] = instances

    def set_enabled(self, i: int, enabled: bool, reason: str = "") -> None:
        """Enable or disable the host at position ``i``; ``reason`` says why it is
        disabled (ignored when enabling).

        :raises IndexError: ``i`` is not a position of this table.
        """
        if not 0 <= i < len(self._names):
            raise IndexError(f"host position {i} out of range")
        with self.lock:
            self.enabled[i] = enabled
            self._reasons[i] = "" if enabled else reason

    def free_ram_mb(self, sl: slice = slice(None)) -> NDArray[np.int64]:
        """Schedulable free RAM: ``floor(ram_mb * ram_ratio) - ram_used_mb``.

        Negative when a host is overcommitted beyond its ratio.
        """
        return self.ram_cap[sl] - self.ram_used[sl]

    def free_vcpus(self, sl: slice = slice(None)) -> NDArray[np.int64]:
        """Schedulable free vCPUs: ``floor(vcpus * cpu_ratio) - vcpus_used``."""
        return self.vcpus_cap[sl] - self.vcpus_used[sl]

    def free_disk_gb(self, sl: slice = slice(None)) -> NDArray[np.int64]:
        """Schedulable free disk: ``floor(disk_gb * disk_ratio) - disk_used_gb``."""
        return self.disk_cap[sl] - self.disk_used[sl]
