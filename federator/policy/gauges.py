"""Gauges: one watched metric of one zone, read before and after a request.

A gauge turns a threshold (``ram_percent``, ``vcpu_percent`` or ``instances``) and a zone's
load into the questions :mod:`federator.policy.evaluate` asks: would the request cross the
high-water mark, is usage below the low-water mark, what absolute ceiling does the mark
imply, and how to say so in an explanation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from federator.policy.model import Thresholds

if TYPE_CHECKING:
    from federator.policy.evaluate import PlacementRequest, ZoneLoad


@dataclass(frozen=True, slots=True)
class Gauge:
    """One threshold of one zone: usage now and after the request, and the marks."""

    metric: str  # "ram_percent", "vcpu_percent" or "instances"
    label: str
    unit: str
    used: int
    projected: int
    total: int  # 0 for counts
    high: float
    low: float

    @property
    def is_percent(self) -> bool:
        return self.metric != "instances"

    @property
    def ceiling(self) -> int:
        """The most usage the high-water mark allows, as an absolute figure."""
        if self.is_percent:
            return math.floor(self.high * self.total / 100)
        return int(self.high)

    @property
    def crosses_high(self) -> bool:
        # For percents, projected * 100 / total > high <=> projected > floor(high * total / 100)
        # because projected is an integer; comparing integers avoids rounding surprises.
        return self.projected > self.ceiling

    @property
    def below_low(self) -> bool:
        return self.used * 100 < self.low * self.total if self.is_percent else self.used < self.low

    def now(self) -> str:
        return self._show(self.used)

    def after(self) -> str:
        if not self.is_percent:
            return f"{self.label} {self.projected}"
        share = self._share(self.projected)
        return f"{self.label} {self.projected}/{self.total}{self.unit} = {share}"

    def _show(self, value: int) -> str:
        return f"{self.label} {self._share(value) if self.is_percent else value}"

    def _share(self, value: int) -> str:
        return f"{value * 100 / self.total:.1f}%"

    def mark(self, value: float) -> str:
        return f"{value:g}%" if self.is_percent else f"{value:g}"

    def figures(self) -> dict[str, float | int]:
        if self.is_percent:
            return {
                self.metric: percent(self.used, self.total),
                f"{self.metric}_projected": percent(self.projected, self.total),
                f"{self.metric}_high": self.high,
                f"{self.metric}_low": self.low,
            }
        return {
            "instances_projected": self.projected,
            "instances_high": self.high,
            "instances_low": self.low,
        }


def gauges(thresholds: Thresholds | None, load: ZoneLoad, request: PlacementRequest) -> list[Gauge]:
    """The metrics that can be judged: thresholds set, and for percents a known total."""
    if thresholds is None:
        return []
    out: list[Gauge] = []
    ram, vcpu, count = thresholds.ram_percent, thresholds.vcpu_percent, thresholds.instances
    if ram is not None and load.ram_total_mb > 0:
        out.append(
            Gauge(
                metric="ram_percent",
                label="ram",
                unit=" MB",
                used=load.ram_used_mb,
                projected=load.ram_used_mb + request.ram_mb,
                total=load.ram_total_mb,
                high=ram.high,
                low=ram.low,
            )
        )
    if vcpu is not None and load.vcpus_total > 0:
        out.append(
            Gauge(
                metric="vcpu_percent",
                label="vcpu",
                unit=" vCPUs",
                used=load.vcpus_used,
                projected=load.vcpus_used + request.vcpus,
                total=load.vcpus_total,
                high=vcpu.high,
                low=vcpu.low,
            )
        )
    if count is not None:
        out.append(
            Gauge(
                metric="instances",
                label="instances",
                unit="",
                used=load.instances,
                projected=load.instances + 1,
                total=0,
                high=count.high,
                low=count.low,
            )
        )
    return out


def percent(used: int, total: int) -> float:
    """``used`` as a percentage of ``total``, rounded to one decimal for display."""
    return round(used * 100 / total, 1)
