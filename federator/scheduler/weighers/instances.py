"""Prefer hosts running fewer instances."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from federator.scheduler.hoststate import HostTable
from federator.scheduler.request import HostRequest
from federator.scheduler.weighers.base import HostWeigher


class InstancesWeigher(HostWeigher):
    """Scores the negated instance count, so fewer instances score higher.

    Not a free-capacity weigher: it keeps favouring quiet hosts under
    ``"pack"`` too. Its default multiplier is half that of the capacity
    weighers, so it separates hosts of similar free capacity without
    overruling them; a negative multiplier prefers busy hosts instead.
    """

    name = "InstancesWeigher"
    default_multiplier = 0.5

    def weigh(
        self, table: HostTable, idx: NDArray[np.intp], req: HostRequest
    ) -> NDArray[np.float64]:
        return -table.instances[idx].astype(np.float64)
