"""Cap the number of instances per host by aggregate."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self

import numpy as np
from numpy.typing import NDArray

from federator.scheduler.filters.base import HostFilter, all_pass
from federator.scheduler.hoststate import HostTable
from federator.scheduler.request import HostRequest

if TYPE_CHECKING:
    from federator.config import SchedulerConfig

__all__ = ["LIMIT_KEY", "AggregateNumInstancesFilter"]

LIMIT_KEY = "max_instances_per_host"


class AggregateNumInstancesFilter(HostFilter):
    """Rejects hosts running as many instances as their aggregates'
    ``max_instances_per_host`` metadata allows, or more (Nova's filter of the same
    name).

    A host in several aggregates takes the lowest value; a value that is not a
    number is ignored. A host whose aggregates set none falls back to
    ``default`` (``[scheduler] max_instances_per_host``), and passes when that is
    unset too. Unlike ``NumInstancesFilter``, an aggregate may raise the default.
    """

    name = "AggregateNumInstancesFilter"

    def __init__(self, default: int | None = None) -> None:
        self.default = default

    @classmethod
    def from_config(cls, config: SchedulerConfig, options: Mapping[str, Any]) -> Self:
        return cls(**{"default": config.max_instances_per_host, **options})

    def _limits(self, table: HostTable, sl: slice) -> NDArray[np.float64]:
        default = math.inf if self.default is None else float(self.default)
        return table.metadata.limit(LIMIT_KEY, default)[sl]

    def mask(self, table: HostTable, sl: slice, req: HostRequest) -> NDArray[np.bool_]:
        if self.default is None and LIMIT_KEY not in table.metadata.keys:
            return all_pass(table, sl)
        below: NDArray[np.bool_] = table.instances[sl] < self._limits(table, sl)
        return below

    def explain(self, table: HostTable, i: int, req: HostRequest) -> str:
        limit = float(self._limits(table, slice(i, i + 1))[0])
        if math.isinf(limit):
            return f"no instance limit (no aggregate metadata {LIMIT_KEY}, no default)"
        source = (
            f"aggregate metadata {LIMIT_KEY}"
            if math.isfinite(float(table.metadata.number(LIMIT_KEY)[i]))
            else "scheduler.max_instances_per_host"
        )
        n = int(table.instances[i])
        op = "<" if n < limit else ">="
        return f"instances {n} {op} limit {int(limit)} ({source})"
