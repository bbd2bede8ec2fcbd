"""Host placement: choose a hypervisor host of a zone for an instance.

Filter -> weigh -> normalise -> multiply -> sum -> choose, over columnar host
state. "Scheduler" here always means host placement; periodic jobs live in
:mod:`federator.monitor`.
"""

from __future__ import annotations

from federator.scheduler.hoststate import HostRow, HostTable
from federator.scheduler.request import HostRequest
from federator.scheduler.scheduler import (
    HostScheduler,
    HostVerdict,
    default_filters,
    default_weighers,
)

__all__ = [
    "HostRequest",
    "HostRow",
    "HostScheduler",
    "HostTable",
    "HostVerdict",
    "default_filters",
    "default_weighers",
]
