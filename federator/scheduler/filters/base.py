"""The host filter contract.

A filter is one predicate over hosts. It answers for a whole zone at once with a
boolean mask (vectorised; no loop over hosts) and, for one host, explains the
figures behind its answer so operators can see why a host was rejected.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Self

import numpy as np
from numpy.typing import NDArray

from federator.scheduler.hoststate import HostTable
from federator.scheduler.request import HostRequest

if TYPE_CHECKING:
    from federator.config import SchedulerConfig

__all__ = [
    "HostFilter",
    "all_pass",
    "az_mask",
    "holds_name",
    "positions_in_slice",
    "ratio_note",
    "resource_text",
    "values_text",
]

LOG = logging.getLogger(__name__)


class HostFilter(abc.ABC):
    """One placement rule: which hosts of a zone may take the request.

    Subclasses set ``name`` (shown in logs and in explain output, e.g.
    ``"RamFilter"``) and implement :meth:`mask` and :meth:`explain`, which must
    agree: ``explain`` describes the figures ``mask`` decided on. The broker
    finds filters by their short entry-point name in the
    ``federator.scheduler.filters`` namespace and builds each with
    :meth:`from_config`.
    """

    name: ClassVar[str]

    @classmethod
    def from_config(cls, config: SchedulerConfig, options: Mapping[str, Any]) -> Self:
        """Build the filter from the ``[scheduler]`` section; ``options`` is its table
        under ``[scheduler.filter_options.<name>]``, given as keyword arguments.

        :raises TypeError: the constructor does not take these options.
        """
        return cls(**options)

    @abc.abstractmethod
    def mask(self, table: HostTable, sl: slice, req: HostRequest) -> NDArray[np.bool_]:
        """Return one bool per host in ``table[sl]``; True means the host passes.

        Must not loop over hosts in Python. The result may be a view of a table
        column; callers must not modify it.
        """

    @abc.abstractmethod
    def explain(self, table: HostTable, i: int, req: HostRequest) -> str:
        """Describe, with figures, this filter's answer for the host at position ``i``."""

    def apply(
        self, table: HostTable, sl: slice, req: HostRequest, passed: NDArray[np.bool_]
    ) -> None:
        """AND this filter's mask into ``passed`` in place, logging removals at DEBUG.

        The count of removed hosts is only computed when DEBUG logging is on.
        """
        if LOG.isEnabledFor(logging.DEBUG):
            before = int(np.count_nonzero(passed))
            np.logical_and(passed, self.mask(table, sl, req), out=passed)
            after = int(np.count_nonzero(passed))
            LOG.debug(
                "%s removed %d hosts (%d of %d left in zone %s)",
                self.name,
                before - after,
                after,
                passed.size,
                req.zone,
            )
        else:
            np.logical_and(passed, self.mask(table, sl, req), out=passed)


def positions_in_slice(
    table: HostTable, sl: slice, zone: str, hosts: Iterable[str]
) -> NDArray[np.intp]:
    """Positions of ``hosts`` relative to ``sl``, skipping names not in it.

    One dictionary lookup per name (:meth:`HostTable.positions_of`, no Python call per
    name): the cost follows the size of ``hosts``, not the size of the zone.
    """
    start = sl.start or 0
    stop = len(table) if sl.stop is None else sl.stop
    idx = table.positions_of(zone, hosts)
    return idx[(idx >= start) & (idx < stop)] - start


def az_mask(table: HostTable, sl: slice, azs: Iterable[str]) -> NDArray[np.bool_]:
    """True for the hosts of ``table[sl]`` whose availability zone is one of ``azs``."""
    codes = [table.az_codes[az] for az in azs if az in table.az_codes]
    if not codes:
        return np.zeros(table.enabled[sl].shape, dtype=np.bool_)
    return np.isin(table.az_code[sl], np.array(codes, dtype=np.int32))


def all_pass(table: HostTable, sl: slice) -> NDArray[np.bool_]:
    """A fresh all-True mask for ``table[sl]``."""
    return np.ones(table.enabled[sl].shape, dtype=np.bool_)


def holds_name(table: HostTable, i: int, zone: str, hosts: frozenset[str]) -> bool:
    """Whether the host at ``i`` is one of ``hosts`` in ``zone`` (as masks see it)."""
    return table.zone_at(i) == zone and table.name_at(i) in hosts


def resource_text(what: str, unit: str, cap: int, used: int, requested: int) -> str:
    """Explain text for a free-capacity check, e.g. ``free ram 512 MB < requested 1024 MB``."""
    free = cap - used
    op = ">=" if free >= requested else "<"
    return (
        f"free {what} {free}{unit} {op} requested {requested}{unit} "
        f"(schedulable {cap}{unit}, used {used}{unit})"
    )


def ratio_note(table: HostTable, kind: str, i: int) -> str:
    """``; allocation ratio 1.0 from aggregate metadata cpu_allocation_ratio`` when an
    aggregate lowered the host's ratio (``kind`` one of cpu, ram, disk), else ""."""
    ratio = table.aggregate_ratio(kind, i)
    if ratio is None:
        return ""
    return f"; allocation ratio {ratio:g} from aggregate metadata {kind}_allocation_ratio"


def values_text(values: Iterable[str], limit: int = 5) -> str:
    """Metadata values for explain text: ``a,b,c``, cut after ``limit`` values."""
    ordered = sorted(values)
    if len(ordered) <= limit:
        return ",".join(ordered)
    return ",".join(ordered[:limit]) + f",... ({len(ordered)} values)"
