"""Prefer hosts running fewer instances."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from federator.scheduler.hoststate import HostTable
from federator.scheduler.request import HostRequest
from federator.scheduler.weighers.base import HostWeigher, normalize


class InstancesWeigher(HostWeigher):
    """Scores the negated instance count, so fewer instances score higher.

    It counts as free capacity (room left in instance terms): ``"pack"`` negates
    its multiplier with the RAM and vCPU weighers', so a pack zone prefers the
    busier of two hosts on every score. Were it to keep favouring quiet hosts
    under pack, its normalised score (quiet host 0, busiest -1) would outweigh
    the few hundredths by which RAM separates nearly full hosts once RAM is
    normalised against 0 as Nova does, and sequential boots would spread.

    Its default multiplier is half that of the capacity weighers, so it
    separates hosts of similar free capacity without overruling them; a
    negative multiplier reverses its preference under either weighing.
    """

    name = "InstancesWeigher"
    free_capacity = True
    default_multiplier = 0.5

    def weigh(
        self, table: HostTable, idx: NDArray[np.intp], req: HostRequest
    ) -> NDArray[np.float64]:
        return -table.instances[idx].astype(np.float64)

    def scores(
        self, table: HostTable, idx: NDArray[np.intp], req: HostRequest
    ) -> NDArray[np.float64]:
        """Minus the min-max normalised instance count, in [-1, 0]."""
        negated: NDArray[np.float64] = -normalize(table.instances[idx].astype(np.float64))
        return negated
