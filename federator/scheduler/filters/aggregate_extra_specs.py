"""Send a flavor's extra specs only to hosts whose aggregates offer them."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numpy.typing import NDArray

from federator.scheduler.filters.base import HostFilter, all_pass, values_text
from federator.scheduler.hoststate import HostTable
from federator.scheduler.metadata import split_values
from federator.scheduler.request import HostRequest

__all__ = ["SCOPE", "AggregateInstanceExtraSpecsFilter", "aggregate_specs"]

SCOPE = "aggregate_instance_extra_specs"


def _accepted(value: str) -> frozenset[str]:
    # Nova's "<or> a <or> b": any of the listed values; any other value is literal.
    words = value.split()
    if len(words) > 1 and words[0] == "<or>":
        return frozenset(words[1::2])
    return frozenset({value})


def aggregate_specs(extra_specs: Mapping[str, str]) -> list[tuple[str, str, frozenset[str]]]:
    """The extra specs this filter checks: ``(spec key, metadata key, accepted values)``.

    Unscoped keys (``ssd``) and keys in the ``aggregate_instance_extra_specs:`` scope
    count; keys of any other scope (``hw:cpu_policy``) belong to other rules.
    """
    specs = []
    for key, value in extra_specs.items():
        scope, colon, rest = key.partition(":")
        if colon and scope != SCOPE:
            continue
        specs.append((key, rest if colon else key, _accepted(value)))
    return specs


class AggregateInstanceExtraSpecsFilter(HostFilter):
    """Passes a host when, for every extra spec of the flavor that it checks, the
    host's aggregate metadata has the key with the spec's value (Nova's filter of
    the same name).

    A host whose aggregates lack the key fails. A metadata value listing several
    values (``ssd = "true,yes"``) matches any of them, as does a spec written
    ``<or> true <or> yes``. A flavor with no such extra specs passes every host.
    """

    name = "AggregateInstanceExtraSpecsFilter"

    def mask(self, table: HostTable, sl: slice, req: HostRequest) -> NDArray[np.bool_]:
        passed = all_pass(table, sl)
        for _, key, accepted in aggregate_specs(req.extra_specs):
            np.logical_and(passed, table.metadata.any_value(key, accepted)[sl], out=passed)
        return passed

    def explain(self, table: HostTable, i: int, req: HostRequest) -> str:
        specs = aggregate_specs(req.extra_specs)
        if not specs:
            return "the flavor has no extra specs for aggregates"
        meta = table.metadata_at(i)
        for spec_key, key, accepted in specs:
            wanted = f"flavor extra spec {spec_key}={req.extra_specs[spec_key]}"
            have = split_values(meta.get(key, ()))
            if not have:
                return f"aggregate metadata has no key {key} ({wanted} requires it)"
            if not have & accepted:
                return f"aggregate metadata {key}={values_text(have)} does not match {wanted}"
        return f"aggregate metadata matches the flavor's {len(specs)} extra spec(s)"
