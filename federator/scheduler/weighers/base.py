"""The host weigher contract and min-max normalisation.

A weigher is one score. The scheduler weighs only the hosts that passed every
filter, clamps each weigher's raw scores to its ``minval``/``maxval`` bounds,
normalises them to [0, 1], multiplies by the weigher's multiplier and sums: Nova's
``BaseWeightHandler.get_weighed_objects`` and ``normalize`` in ``nova/weights.py``.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Self

import numpy as np
from numpy.typing import NDArray

from federator.scheduler.hoststate import HostTable
from federator.scheduler.request import HostRequest

if TYPE_CHECKING:
    from federator.config import SchedulerConfig

__all__ = ["HostWeigher", "normalize"]


class HostWeigher(abc.ABC):
    """One preference among hosts that passed the filters.

    ``free_capacity`` marks weighers that score free capacity: a ``"pack"``
    request (the policy's ``weighing`` of the zone) negates their multiplier so
    the fullest host wins. Other weighers keep their sign under either weighing.

    ``minval`` and ``maxval`` are Nova's ``BaseWeigher`` bounds: when set, raw
    scores are clamped to them and the bound replaces the survivors' minimum (or
    maximum) in normalisation. Nova's free-capacity weighers set ``minval = 0``,
    so a host's score is its free capacity over the best host's, and an
    overcommitted host scores 0 rather than stretching the scale.
    """

    name: ClassVar[str]
    free_capacity: ClassVar[bool] = False
    minval: ClassVar[float | None] = None
    maxval: ClassVar[float | None] = None
    default_multiplier: ClassVar[float] = 1.0

    def __init__(self, multiplier: float | None = None) -> None:
        """:raises ValueError: ``multiplier`` is NaN or infinite."""
        value = self.default_multiplier if multiplier is None else float(multiplier)
        if not math.isfinite(value):
            raise ValueError(f"{self.name} multiplier must be finite, got {value!r}")
        self.multiplier: float = value

    @classmethod
    def from_config(
        cls, config: SchedulerConfig, multiplier: float | None, options: Mapping[str, Any]
    ) -> Self:
        """Build the weigher from its ``[[scheduler.weighers]]`` entry: its multiplier
        (None: :attr:`default_multiplier`) and its ``options`` as keyword arguments.

        :raises TypeError: the constructor does not take these options.
        :raises ValueError: the multiplier is not finite.
        """
        return cls(multiplier, **options)

    @abc.abstractmethod
    def weigh(
        self, table: HostTable, idx: NDArray[np.intp], req: HostRequest
    ) -> NDArray[np.float64]:
        """Raw scores for the hosts at positions ``idx``; higher is better for ``"spread"``.

        Must not loop over hosts in Python.
        """

    def scores(
        self, table: HostTable, idx: NDArray[np.intp], req: HostRequest
    ) -> NDArray[np.float64]:
        """Normalised scores in [0, 1] for the hosts at ``idx``: :meth:`weigh`,
        clamped to ``minval``/``maxval``, then :func:`normalize` against them."""
        raw = self.weigh(table, idx, req)
        if self.minval is not None:
            raw = np.maximum(raw, self.minval)
        if self.maxval is not None:
            raw = np.minimum(raw, self.maxval)
        return normalize(raw, self.minval, self.maxval)

    def signed_multiplier(self, req: HostRequest) -> float:
        """The multiplier to apply for ``req``: negated for ``"pack"`` on free capacity."""
        if self.free_capacity and req.weighing == "pack":
            return -self.multiplier
        return self.multiplier

    def __repr__(self) -> str:
        return f"{type(self).__name__}(multiplier={self.multiplier!r})"


def normalize(
    raw: NDArray[np.float64], minval: float | None = None, maxval: float | None = None
) -> NDArray[np.float64]:
    """Scale ``raw`` to [0, 1] as ``(x - lo) / (hi - lo)``: Nova's ``normalize``.

    ``lo`` is ``minval`` when given, else the smallest score; ``hi`` likewise with
    ``maxval`` and the largest. When ``lo == hi`` (all scores equal and no bound
    apart from them), or ``raw`` is empty, every score becomes 0. Values outside
    the bounds are not clamped here (:meth:`HostWeigher.scores` does that first).
    """
    if raw.size == 0:
        return raw.astype(np.float64)
    lo = float(raw.min()) if minval is None else float(minval)
    hi = float(raw.max()) if maxval is None else float(maxval)
    if hi == lo:
        return np.zeros(raw.shape, dtype=np.float64)
    scaled: NDArray[np.float64] = (raw - lo) / (hi - lo)
    return scaled
