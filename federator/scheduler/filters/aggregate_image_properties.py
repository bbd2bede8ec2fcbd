"""Keep images away from aggregates set aside for other images."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from federator.scheduler.filters.base import HostFilter, all_pass, values_text
from federator.scheduler.hoststate import HostTable
from federator.scheduler.metadata import split_values
from federator.scheduler.request import HostRequest

__all__ = ["AggregateImagePropertiesIsolation"]


class AggregateImagePropertiesIsolation(HostFilter):
    """For each image property whose key appears in a host's aggregate metadata, the
    metadata must give the property's value; keys the host's aggregates do not
    mention impose nothing (Nova's filter of the same name).

    So an aggregate with ``os_distro = "windows"`` takes only images whose
    ``os_distro`` is ``windows`` (or that have no ``os_distro``), while hosts in no
    such aggregate take every image. With ``namespace`` set (option
    ``namespace = "isolation"``), only property keys starting with
    ``namespace + separator`` are checked.
    """

    name = "AggregateImagePropertiesIsolation"

    def __init__(self, namespace: str | None = None, separator: str = ".") -> None:
        self.prefix = f"{namespace}{separator}" if namespace else ""

    def _properties(self, req: HostRequest) -> list[tuple[str, str]]:
        return [(k, v) for k, v in req.image_properties.items() if k.startswith(self.prefix)]

    def mask(self, table: HostTable, sl: slice, req: HostRequest) -> NDArray[np.bool_]:
        passed = all_pass(table, sl)
        keys = table.metadata.keys
        for key, value in self._properties(req):
            if key not in keys:
                continue
            ok = ~table.metadata.has(key)[sl] | table.metadata.value_is(key, value)[sl]
            np.logical_and(passed, ok, out=passed)
        return passed

    def explain(self, table: HostTable, i: int, req: HostRequest) -> str:
        props = self._properties(req)
        if not props:
            return "the image has no properties to isolate"
        meta = table.metadata_at(i)
        checked = 0
        for key, value in props:
            have = split_values(meta.get(key, ()))
            if not have:
                continue
            checked += 1
            if value not in have:
                return (
                    f"aggregate metadata {key}={values_text(have)} does not match image "
                    f"property {key}={value}"
                )
        if not checked:
            return f"aggregate metadata names none of the image's {len(props)} property key(s)"
        return f"aggregate metadata agrees with the image on {checked} property key(s)"
