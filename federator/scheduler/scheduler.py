"""The host scheduler: filter -> weigh -> normalise -> multiply -> sum -> choose.

Every step works on whole numpy columns of a :class:`HostTable` zone slice, so
the cost of a decision stays close to flat as the zone grows: there is no
Python loop over hosts on the decision path. Only :meth:`HostScheduler.explain`
walks hosts one by one, to produce a line of text per host.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from federator.scheduler.filters import (
    AffinityFilter,
    AggregateImagePropertiesIsolation,
    AggregateInstanceExtraSpecsFilter,
    AggregateMultiTenancyIsolation,
    AggregateNumInstancesFilter,
    AntiAffinityFilter,
    AvailabilityZoneFilter,
    DiskFilter,
    EnabledFilter,
    HostFilter,
    IgnoreHostsFilter,
    NumInstancesFilter,
    RamFilter,
    VcpuFilter,
)
from federator.scheduler.hoststate import HostTable
from federator.scheduler.request import HostRequest
from federator.scheduler.weighers import (
    HostWeigher,
    InstancesWeigher,
    RamWeigher,
    SoftAffinityWeigher,
    SoftAntiAffinityWeigher,
    VcpuWeigher,
)

__all__ = ["HostScheduler", "HostVerdict", "default_filters", "default_weighers"]

LOG = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class HostVerdict:
    """What the scheduler made of one host for one request.

    ``rejected_by`` names the first filter that rejected the host and ``detail``
    carries that filter's explanation; for a passing host ``rejected_by`` is
    None and ``weight`` is its summed, normalised weight.
    """

    host: str
    passed: bool
    rejected_by: str | None
    detail: str
    weight: float | None
    free_ram_mb: int
    free_vcpus: int
    free_disk_gb: int


def default_filters() -> list[HostFilter]:
    """The standard filters in their standard order, with no instance limit.

    Cheap and selective rules come first, and rules that set hosts aside for some
    requests (aggregate isolation) before capacity, so explain names the lasting
    reason a host was turned down rather than how full it happens to be. The
    broker builds the same list from ``[scheduler] filters`` (see
    :mod:`federator.scheduler.loader`).
    """
    return [
        EnabledFilter(),
        AvailabilityZoneFilter(),
        IgnoreHostsFilter(),
        AggregateMultiTenancyIsolation(),
        AggregateInstanceExtraSpecsFilter(),
        AggregateImagePropertiesIsolation(),
        RamFilter(),
        VcpuFilter(),
        DiskFilter(),
        NumInstancesFilter(),
        AggregateNumInstancesFilter(),
        AntiAffinityFilter(),
        AffinityFilter(),
    ]


def default_weighers() -> list[HostWeigher]:
    """The standard weighers with their default multipliers."""
    return [
        RamWeigher(),
        VcpuWeigher(),
        InstancesWeigher(),
        SoftAffinityWeigher(),
        SoftAntiAffinityWeigher(),
    ]


def _top_k(weights: NDArray[np.float64], k: int) -> NDArray[np.intp]:
    """Positions of the ``k`` largest weights, best first, ties by lower position.

    ``np.argpartition`` finds the k-th best weight in linear time; only hosts at
    least that good are then ordered, so no full sort of the zone happens.
    """
    neg = -weights
    if neg.size <= k:
        return np.argsort(neg, kind="stable")
    part = np.argpartition(neg, k - 1)
    cut = neg[part[k - 1]]
    better = np.flatnonzero(neg < cut)
    # argpartition picks arbitrary hosts among those tied at the cut; take the
    # earliest ones instead so the answer does not depend on its internals.
    tied = np.flatnonzero(neg == cut)[: k - better.size]
    chosen = np.sort(np.concatenate((better, tied)))
    return chosen[np.argsort(neg[chosen], kind="stable")]


class HostScheduler:
    """Chooses hosts of one zone for a :class:`HostRequest`.

    Filters run in the given order; each removes hosts. Each weigher scores the
    survivors; scores are normalised to [0, 1] per weigher as Nova does (min-max
    over the survivors, with the weigher's ``minval``/``maxval`` bound in place of
    the survivors' own), multiplied by the weigher's multiplier (negated for
    free-capacity weighers under ``"pack"``) and summed. The highest sum wins;
    equal sums go to the host that comes first in the table (Nova's stable sort
    with ``host_subset_size = 1``, without its optional random choice).

    The scheduler holds no state of its own; it is safe to share between
    threads. Each call holds ``table.lock`` for its whole pass, so it sees one
    consistent snapshot of the table.
    """

    def __init__(
        self,
        filters: Sequence[HostFilter] | None = None,
        weighers: Sequence[HostWeigher] | None = None,
    ) -> None:
        self.filters: tuple[HostFilter, ...] = tuple(
            default_filters() if filters is None else filters
        )
        self.weighers: tuple[HostWeigher, ...] = tuple(
            default_weighers() if weighers is None else weighers
        )

    def select(self, table: HostTable, req: HostRequest, limit: int = 5) -> list[str]:
        """Host names for ``req``, best first: the chosen host plus alternates.

        Returns at most ``limit`` names, and ``[]`` when no host passes every
        filter (use :meth:`filter_counts` or :meth:`explain` to say why).
        Reserves nothing; the caller claims the chosen host.

        :raises ValueError: ``limit`` is less than 1.
        """
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        with table.lock:
            sl = table.zone_slice(req.zone)
            passed = np.ones(sl.stop - sl.start, dtype=np.bool_)
            for f in self.filters:
                f.apply(table, sl, req, passed)
            idx = np.flatnonzero(passed) + sl.start
            if idx.size == 0:
                LOG.debug("no host of zone %s passed the filters", req.zone)
                return []
            order = _top_k(self._weights(table, idx, req), limit)
            return [table.name_at(i) for i in idx[order].tolist()]

    def explain(self, table: HostTable, req: HostRequest) -> list[HostVerdict]:
        """A verdict for every host of ``req.zone``, in table order.

        A rejected host names the first filter, in filter order, that rejected
        it, with that filter's figures; a passing host carries the weight
        :meth:`select` would give it. Reserves nothing.
        """
        with table.lock:
            sl = table.zone_slice(req.zone)
            start, n = sl.start, sl.stop - sl.start
            masks = self._masks(table, sl, req)
            passed: NDArray[np.bool_] = np.logical_and.reduce(masks, axis=0)
            # argmin over bools is the first False, i.e. the first rejecting filter.
            first_failed = np.argmin(masks, axis=0) if self.filters else np.zeros(n, dtype=np.intp)
            idx = np.flatnonzero(passed) + start
            weights = self._weights(table, idx, req) if idx.size else np.zeros(0)
            weight_of = dict(zip(idx.tolist(), weights.tolist(), strict=True))
            free_ram = table.free_ram_mb(sl).tolist()
            free_vcpus = table.free_vcpus(sl).tolist()
            free_disk = table.free_disk_gb(sl).tolist()
            verdicts = []
            for rel in range(n):
                i = start + rel
                if passed[rel]:
                    weight = weight_of[i]
                    rejected_by = None
                    detail = f"passed all {len(self.filters)} filters; weight {weight:.4f}"
                else:
                    f = self.filters[int(first_failed[rel])]
                    weight = None
                    rejected_by = f.name
                    detail = f.explain(table, i, req)
                verdicts.append(
                    HostVerdict(
                        host=table.name_at(i),
                        passed=bool(passed[rel]),
                        rejected_by=rejected_by,
                        detail=detail,
                        weight=weight,
                        free_ram_mb=free_ram[rel],
                        free_vcpus=free_vcpus[rel],
                        free_disk_gb=free_disk[rel],
                    )
                )
            return verdicts

    def filter_counts(self, table: HostTable, req: HostRequest) -> dict[str, int]:
        """Hosts each filter removed, in filter order, for log lines and faults.

        A host is counted against the first filter that rejected it only, so
        the counts add up to the number of rejected hosts
        (``{"RamFilter": 812, ...}`` reads "RamFilter removed 812 hosts").
        """
        with table.lock:
            masks = self._masks(table, table.zone_slice(req.zone), req)
        survivors = np.logical_and.accumulate(masks, axis=0)
        counts: dict[str, int] = {}
        before = masks.shape[1]
        for f, row in zip(self.filters, survivors, strict=True):
            after = int(np.count_nonzero(row))
            counts[f.name] = before - after
            before = after
        return counts

    def _masks(self, table: HostTable, sl: slice, req: HostRequest) -> NDArray[np.bool_]:
        """Every filter's mask over ``sl`` as rows of one (filters x hosts) array."""
        masks = np.ones((len(self.filters), sl.stop - sl.start), dtype=np.bool_)
        for row, f in enumerate(self.filters):
            masks[row] = f.mask(table, sl, req)
        return masks

    def _weights(
        self, table: HostTable, idx: NDArray[np.intp], req: HostRequest
    ) -> NDArray[np.float64]:
        """Summed, normalised, multiplied weights for the hosts at ``idx``.

        One host or none weighs 0, as in Nova's ``get_weighed_objects``, which
        does not run the weighers for fewer than two hosts.
        """
        total = np.zeros(idx.size, dtype=np.float64)
        if idx.size <= 1:
            return total
        for w in self.weighers:
            multiplier = w.signed_multiplier(req)
            if multiplier:
                total += multiplier * w.scores(table, idx, req)
        return total
