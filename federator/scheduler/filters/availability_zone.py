"""Restrict a request to the hosts of the availability zone it names."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from federator.scheduler.filters.base import HostFilter, all_pass
from federator.scheduler.hoststate import HostTable
from federator.scheduler.request import HostRequest


class AvailabilityZoneFilter(HostFilter):
    """Passes every host when ``req.az`` is None, else hosts whose AZ equals it."""

    name = "AvailabilityZoneFilter"

    def mask(self, table: HostTable, sl: slice, req: HostRequest) -> NDArray[np.bool_]:
        if req.az is None:
            return all_pass(table, sl)
        code = table.az_codes.get(req.az)
        if code is None:
            return ~all_pass(table, sl)
        in_az: NDArray[np.bool_] = table.az_code[sl] == code
        return in_az

    def explain(self, table: HostTable, i: int, req: HostRequest) -> str:
        if req.az is None:
            return "no availability zone requested"
        az = table.az_at(i)
        if az == req.az:
            return f"host az {az!r} matches requested {req.az!r}"
        return f"host az {az!r} differs from requested {req.az!r}"
