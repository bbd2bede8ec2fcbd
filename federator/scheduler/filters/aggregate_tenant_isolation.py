"""Reserve the hosts of an aggregate for the projects its metadata names."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from federator.scheduler.filters.base import HostFilter, all_pass, values_text
from federator.scheduler.hoststate import HostTable
from federator.scheduler.metadata import split_values
from federator.scheduler.request import HostRequest

__all__ = ["TENANT_KEY", "AggregateMultiTenancyIsolation"]

TENANT_KEY = "filter_tenant_id"


class AggregateMultiTenancyIsolation(HostFilter):
    """A host whose aggregates carry ``filter_tenant_id`` metadata (comma-separated
    project ids) takes only those projects; every other host takes everyone (Nova's
    filter of the same name).

    As in Nova, every key starting with ``filter_tenant_id`` counts
    (``filter_tenant_id2`` holds more ids when one value is too long). A request
    without a project is admitted by no isolated host.
    """

    name = "AggregateMultiTenancyIsolation"

    def mask(self, table: HostTable, sl: slice, req: HostRequest) -> NDArray[np.bool_]:
        keys = table.metadata.keys_with_prefix(TENANT_KEY)
        passed = all_pass(table, sl)
        for key in keys:
            np.logical_and(passed, ~table.metadata.has(key)[sl], out=passed)
        if req.project_id is not None:
            for key in keys:
                np.logical_or(passed, table.metadata.value_is(key, req.project_id)[sl], out=passed)
        return passed

    def explain(self, table: HostTable, i: int, req: HostRequest) -> str:
        meta = table.metadata_at(i)
        keys = [k for k in sorted(meta) if k.startswith(TENANT_KEY)]
        tenants = split_values(v for k in keys for v in meta[k])
        if not tenants:
            return "host is in no tenant-isolated aggregate"
        project = req.project_id or "(none)"
        if req.project_id in tenants:
            return f"project {project} is admitted by aggregate metadata {TENANT_KEY}"
        return (
            f"aggregate metadata {TENANT_KEY}={values_text(tenants)} does not include "
            f"project {project}"
        )
