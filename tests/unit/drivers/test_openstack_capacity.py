"""Reading a child broker's capacity report in the openstack driver."""

from __future__ import annotations

from typing import Any

import pytest

from drivers.openstack.capacity import capacity_from

DOC: dict[str, Any] = {
    "availability_zones": [
        {
            "name": "local",
            "available": True,
            "free": {"ram_mb": 2048, "vcpus": 4, "instances": None},
        },
        {"name": "gpu", "available": False, "free": {"ram_mb": 0, "vcpus": 0, "instances": 0}},
    ],
    "free": {"ram_mb": 2048, "vcpus": 4, "instances": None},
}


def test_total_when_the_zone_targets_no_remote_az() -> None:
    cap = capacity_from(DOC, None)
    assert (cap.free_ram_mb, cap.free_vcpus, cap.free_instances) == (2048, 4, None)
    assert [a.name for a in cap.availability_zones] == ["local", "gpu"]


def test_the_targeted_az_or_nothing_when_it_is_gone_or_unavailable() -> None:
    assert capacity_from(DOC, "local").free_ram_mb == 2048
    gone = capacity_from(DOC, "elsewhere")
    assert (gone.free_ram_mb, gone.free_vcpus, gone.free_instances) == (0, 0, 0)
    assert "not offered" in gone.detail
    assert "unavailable" in capacity_from(DOC, "gpu").detail


@pytest.mark.parametrize("bad", [-1, "lots", True, 1.5])
def test_figures_that_are_not_counts_are_refused(bad: object) -> None:
    doc = {**DOC, "free": {"ram_mb": bad, "vcpus": 1, "instances": 1}}
    with pytest.raises(ValueError, match=r"free\.ram_mb"):
        capacity_from(doc, None)
