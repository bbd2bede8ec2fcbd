"""Cap the number of instances on any one host."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self

import numpy as np
from numpy.typing import NDArray

from federator.scheduler.filters.base import HostFilter, all_pass
from federator.scheduler.hoststate import HostTable
from federator.scheduler.request import HostRequest

if TYPE_CHECKING:
    from federator.config import SchedulerConfig

__all__ = ["NumInstancesFilter"]


class NumInstancesFilter(HostFilter):
    """Rejects hosts already running ``max_instances`` instances or more (Nova's
    filter of the same name); passes every host when there is no limit, the default.

    The limit is ``[scheduler] max_instances_per_host``.
    """

    name = "NumInstancesFilter"

    def __init__(self, max_instances: int | None = None) -> None:
        self.max_instances = max_instances

    @classmethod
    def from_config(cls, config: SchedulerConfig, options: Mapping[str, Any]) -> Self:
        return cls(**{"max_instances": config.max_instances_per_host, **options})

    def mask(self, table: HostTable, sl: slice, req: HostRequest) -> NDArray[np.bool_]:
        if self.max_instances is None:
            return all_pass(table, sl)
        below: NDArray[np.bool_] = table.instances[sl] < self.max_instances
        return below

    def explain(self, table: HostTable, i: int, req: HostRequest) -> str:
        if self.max_instances is None:
            return "no instance limit (scheduler.max_instances_per_host is not set)"
        n = int(table.instances[i])
        op = "<" if n < self.max_instances else ">="
        return f"instances {n} {op} limit {self.max_instances} (scheduler.max_instances_per_host)"
