"""Aggregate metadata as columns, built once per host table.

A host's aggregate metadata is a mapping of key -> the values its aggregates give
it. As in Nova, a stored value may list several values separated by commas
(``filter_tenant_id = "p1,p2"``); each counts on its own. Filters never walk
hosts to read it: when the table is built, :class:`MetadataColumns` turns it into
one boolean mask per key (the host has the key) and one per key and value (the
host has that value for the key), so a decision is a few vector operations per
key the request names, whatever the number of hosts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np
from numpy.typing import NDArray

__all__ = ["MetadataColumns", "split_values"]


def split_values(values: Iterable[str]) -> frozenset[str]:
    """Every value of ``values``, comma-separated lists split and stripped, empty ones dropped."""
    return frozenset(
        part for value in values for part in (p.strip() for p in value.split(",")) if part
    )


def _number(value: str) -> float | None:
    try:
        n = float(value)
    except ValueError:
        return None
    return n if math.isfinite(n) else None


class MetadataColumns:
    """Masks over every host of a table, indexed by metadata key and value.

    Arrays span the whole table (index by the zone slice); they are shared, so
    callers must not modify them. The table is rebuilt whenever aggregates
    change, so the columns never go stale.
    """

    def __init__(self, metadata: list[Mapping[str, frozenset[str]]]) -> None:
        self._n = len(metadata)
        positions: dict[str, dict[str, list[int]]] = {}
        holders: dict[str, list[int]] = {}
        for i, meta in enumerate(metadata):
            for key, raw in meta.items():
                values = split_values(raw)
                if not values:
                    continue
                holders.setdefault(key, []).append(i)
                by_value = positions.setdefault(key, {})
                for v in values:
                    by_value.setdefault(v, []).append(i)
        self._none: NDArray[np.bool_] = np.zeros(self._n, dtype=np.bool_)
        self._none.flags.writeable = False
        self._has = {key: self._mask(pos) for key, pos in holders.items()}
        self._values = {
            key: {v: self._mask(pos) for v, pos in by_value.items()}
            for key, by_value in positions.items()
        }
        self._numbers: dict[str, NDArray[np.float64]] = {}
        self._prefixed: dict[str, tuple[str, ...]] = {}
        self._limits: dict[tuple[str, float], NDArray[np.float64]] = {}
        self.keys: frozenset[str] = frozenset(self._has)
        """Every metadata key some host has."""

    def _mask(self, positions: list[int]) -> NDArray[np.bool_]:
        mask = np.zeros(self._n, dtype=np.bool_)
        mask[positions] = True
        mask.flags.writeable = False
        return mask

    def keys_with_prefix(self, prefix: str) -> tuple[str, ...]:
        """The keys some host has that start with ``prefix``, sorted; cached per table."""
        found = self._prefixed.get(prefix)
        if found is None:
            found = self._prefixed[prefix] = tuple(
                sorted(k for k in self._has if k.startswith(prefix))
            )
        return found

    def has(self, key: str) -> NDArray[np.bool_]:
        """True where the host's aggregates give ``key`` a (non-empty) value."""
        return self._has.get(key, self._none)

    def value_is(self, key: str, value: str) -> NDArray[np.bool_]:
        """True where ``value`` is one of the values the host's aggregates give ``key``."""
        return self._values.get(key, {}).get(value, self._none)

    def any_value(self, key: str, values: Iterable[str]) -> NDArray[np.bool_]:
        """True where any of ``values`` is among the host's values for ``key``."""
        masks = [m for v in values if (m := self.value_is(key, v)) is not self._none]
        if not masks:
            return self._none
        if len(masks) == 1:
            return masks[0]
        out: NDArray[np.bool_] = np.logical_or.reduce(masks)
        return out

    def number(self, key: str) -> NDArray[np.float64]:
        """The smallest numeric value the host's aggregates give ``key``; ``inf`` where
        the host has none (or none that parses as a finite number).

        Nova's rule for ``*_allocation_ratio`` and ``max_instances_per_host``: a host in
        several aggregates takes the lowest value. Computed once per key and table.
        """
        found = self._numbers.get(key)
        if found is None:
            found = np.full(self._n, np.inf, dtype=np.float64)
            for value, mask in self._values.get(key, {}).items():
                n = _number(value)
                if n is not None:
                    found[mask] = np.minimum(found[mask], n)
            found.flags.writeable = False
            self._numbers[key] = found
        return found

    def limit(self, key: str, default: float = np.inf) -> NDArray[np.float64]:
        """A whole-number limit per host: :meth:`number` rounded down, ``default`` where the
        host has no value (``inf``: no limit). Computed once per key, default and table."""
        found = self._limits.get((key, default))
        if found is None:
            found = np.floor(self.number(key))
            found[np.isinf(found)] = default
            found.flags.writeable = False
            self._limits[(key, default)] = found
        return found
