"""The aggregate filters as plain functions: mask over a zone slice, explain for one host."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from federator.scheduler import HostRequest, HostScheduler
from federator.scheduler.filters import (
    AggregateImagePropertiesIsolation,
    AggregateInstanceExtraSpecsFilter,
    AggregateMultiTenancyIsolation,
    AggregateNumInstancesFilter,
    DiskFilter,
    HostFilter,
    NumInstancesFilter,
    RamFilter,
    VcpuFilter,
)
from federator.scheduler.filters.aggregate_extra_specs import aggregate_specs
from tests.unit.scheduler.factory import row, table


def req(**kw: Any) -> HostRequest:
    fields: dict[str, Any] = {"zone": "z1", "vcpus": 1, "ram_mb": 1024, "disk_gb": 10}
    fields.update(kw)
    return HostRequest(**fields)


def meta(**values: str | set[str]) -> dict[str, frozenset[str]]:
    """Merged aggregate metadata: each key's values (one string, or one per aggregate)."""
    return {k: frozenset({v} if isinstance(v, str) else v) for k, v in values.items()}


def verdicts(flt: HostFilter, t: Any, r: HostRequest) -> list[bool]:
    out: list[bool] = flt.mask(t, t.zone_slice("z1"), r).tolist()
    return out


# --- aggregate_extra_specs -------------------------------------------------------------


SSD_TABLE = (
    row("ssd", metadata=meta(ssd="true")),
    row("hdd", metadata=meta(ssd="false")),
    row("plain"),  # its aggregates say nothing about ssd
    row("either", metadata=meta(ssd="true,false")),  # comma-separated: any of them
    row("two-aggs", metadata=meta(ssd={"false", "true"})),  # two aggregates disagree
)


def test_extra_specs_match_scoped_and_unscoped_keys() -> None:
    t = table(*SSD_TABLE)
    f = AggregateInstanceExtraSpecsFilter()
    scoped = req(extra_specs={"aggregate_instance_extra_specs:ssd": "true"})
    unscoped = req(extra_specs={"ssd": "true"})
    assert verdicts(f, t, scoped) == [True, False, False, True, True]
    assert verdicts(f, t, unscoped) == [True, False, False, True, True]
    assert verdicts(f, t, req(extra_specs={"ssd": "false"})) == [False, True, False, True, True]


def test_extra_specs_detail_text() -> None:
    t = table(*SSD_TABLE)
    f = AggregateInstanceExtraSpecsFilter()
    r = req(extra_specs={"ssd": "true"})
    assert f.explain(t, 1, r) == (
        "aggregate metadata ssd=false does not match flavor extra spec ssd=true"
    )
    assert f.explain(t, 2, r) == (
        "aggregate metadata has no key ssd (flavor extra spec ssd=true requires it)"
    )
    assert f.explain(t, 0, r) == "aggregate metadata matches the flavor's 1 extra spec(s)"
    scoped = req(extra_specs={"aggregate_instance_extra_specs:ssd": "true"})
    assert f.explain(t, 1, scoped) == (
        "aggregate metadata ssd=false does not match flavor extra spec "
        "aggregate_instance_extra_specs:ssd=true"
    )
    assert f.explain(t, 0, req()) == "the flavor has no extra specs for aggregates"


def test_extra_specs_of_other_scopes_are_not_this_filters() -> None:
    t = table(*SSD_TABLE)
    f = AggregateInstanceExtraSpecsFilter()
    r = req(extra_specs={"hw:cpu_policy": "dedicated", "quota:disk_read_iops_sec": "100"})
    assert aggregate_specs(r.extra_specs) == []
    assert verdicts(f, t, r) == [True] * 5
    assert f.explain(t, 2, r) == "the flavor has no extra specs for aggregates"


def test_every_extra_spec_must_match() -> None:
    t = table(
        row("both", metadata=meta(ssd="true", gpu="a100")),
        row("ssd-only", metadata=meta(ssd="true")),
        row("gpu-only", metadata=meta(gpu="a100")),
    )
    f = AggregateInstanceExtraSpecsFilter()
    r = req(extra_specs={"ssd": "true", "aggregate_instance_extra_specs:gpu": "a100"})
    assert verdicts(f, t, r) == [True, False, False]
    assert "has no key gpu" in f.explain(t, 1, r)
    assert "has no key ssd" in f.explain(t, 2, r)


def test_extra_spec_or_operator() -> None:
    t = table(
        row("a", metadata=meta(gpu="a100")),
        row("h", metadata=meta(gpu="h100")),
        row("t", metadata=meta(gpu="t4")),
    )
    f = AggregateInstanceExtraSpecsFilter()
    r = req(extra_specs={"gpu": "<or> a100 <or> h100"})
    assert verdicts(f, t, r) == [True, True, False]
    assert f.explain(t, 2, r) == (
        "aggregate metadata gpu=t4 does not match flavor extra spec gpu=<or> a100 <or> h100"
    )


# --- aggregate_image_properties --------------------------------------------------------


def test_image_properties_isolation() -> None:
    t = table(
        row("win", metadata=meta(os_distro="windows")),
        row("linux", metadata=meta(os_distro="ubuntu,debian")),
        row("any"),
        row("other-key", metadata=meta(ssd="true")),
    )
    f = AggregateImagePropertiesIsolation()
    ubuntu = req(image_properties={"os_distro": "ubuntu"})
    windows = req(image_properties={"os_distro": "windows", "hw_disk_bus": "scsi"})
    assert verdicts(f, t, ubuntu) == [False, True, True, True]
    assert verdicts(f, t, windows) == [True, False, True, True]
    assert verdicts(f, t, req()) == [True] * 4  # an image without properties goes anywhere
    assert f.explain(t, 0, ubuntu) == (
        "aggregate metadata os_distro=windows does not match image property os_distro=ubuntu"
    )
    assert f.explain(t, 1, windows) == (
        "aggregate metadata os_distro=debian,ubuntu does not match image property os_distro=windows"
    )
    assert (
        f.explain(t, 1, ubuntu) == "aggregate metadata agrees with the image on 1 property key(s)"
    )
    assert f.explain(t, 2, windows) == (
        "aggregate metadata names none of the image's 2 property key(s)"
    )
    assert f.explain(t, 2, req()) == "the image has no properties to isolate"


def test_image_properties_namespace_option() -> None:
    t = table(
        row("iso", metadata=meta(**{"iso.os": "windows", "os_distro": "windows"})),
        row("plain"),
    )
    f = AggregateImagePropertiesIsolation(namespace="iso")
    r = req(image_properties={"os_distro": "ubuntu", "iso.os": "linux"})
    assert verdicts(f, t, r) == [False, True]
    assert "iso.os=windows does not match image property iso.os=linux" in f.explain(t, 0, r)
    # os_distro lies outside the namespace: not checked
    assert verdicts(f, t, req(image_properties={"os_distro": "ubuntu"})) == [True, True]


# --- aggregate_tenant_isolation ---------------------------------------------------------


def test_tenant_isolation() -> None:
    t = table(
        row("a-only", metadata=meta(filter_tenant_id="project-a")),
        row("a-or-b", metadata=meta(filter_tenant_id="project-a, project-b")),
        row("shared"),
        row("split-keys", metadata=meta(filter_tenant_id="p1", filter_tenant_id2="project-b")),
    )
    f = AggregateMultiTenancyIsolation()
    assert verdicts(f, t, req(project_id="project-a")) == [True, True, True, False]
    assert verdicts(f, t, req(project_id="project-b")) == [False, True, True, True]
    assert verdicts(f, t, req(project_id="project-c")) == [False, False, True, False]
    assert verdicts(f, t, req()) == [False, False, True, False]  # no project: shared only
    b = req(project_id="project-b")
    assert f.explain(t, 0, b) == (
        "aggregate metadata filter_tenant_id=project-a does not include project project-b"
    )
    assert (
        f.explain(t, 1, b) == "project project-b is admitted by aggregate metadata filter_tenant_id"
    )
    assert f.explain(t, 2, b) == "host is in no tenant-isolated aggregate"
    assert f.explain(t, 3, req(project_id="x")) == (
        "aggregate metadata filter_tenant_id=p1,project-b does not include project x"
    )


def test_tenant_isolation_lists_at_most_five_projects() -> None:
    ids = ",".join(f"p{n}" for n in range(8))
    t = table(row("h", metadata=meta(filter_tenant_id=ids)))
    detail = AggregateMultiTenancyIsolation().explain(t, 0, req(project_id="x"))
    assert detail == (
        "aggregate metadata filter_tenant_id=p0,p1,p2,p3,p4,... (8 values) does not include "
        "project x"
    )


# --- instance limits --------------------------------------------------------------------


def test_host_instance_limit() -> None:
    t = table(row("busy", instances=5), row("quiet", instances=4))
    unlimited = NumInstancesFilter()
    assert verdicts(unlimited, t, req()) == [True, True]
    assert unlimited.explain(t, 0, req()) == (
        "no instance limit (scheduler.max_instances_per_host is not set)"
    )
    f = NumInstancesFilter(max_instances=5)
    assert verdicts(f, t, req()) == [False, True]
    assert f.explain(t, 0, req()) == "instances 5 >= limit 5 (scheduler.max_instances_per_host)"
    assert f.explain(t, 1, req()) == "instances 4 < limit 5 (scheduler.max_instances_per_host)"


def test_aggregate_instance_limit() -> None:
    t = table(
        row("capped", instances=2, metadata=meta(max_instances_per_host="2")),
        row("two-aggs", instances=2, metadata=meta(max_instances_per_host={"10", "3"})),
        row("free", instances=40),
        row("junk", instances=7, metadata=meta(max_instances_per_host="lots")),
    )
    f = AggregateNumInstancesFilter()
    assert verdicts(f, t, req()) == [False, True, True, True]
    assert f.explain(t, 0, req()) == (
        "instances 2 >= limit 2 (aggregate metadata max_instances_per_host)"
    )
    assert f.explain(t, 1, req()) == (
        "instances 2 < limit 3 (aggregate metadata max_instances_per_host)"  # lowest wins
    )
    assert f.explain(t, 2, req()) == (
        "no instance limit (no aggregate metadata max_instances_per_host, no default)"
    )
    # With a default, hosts whose aggregates say nothing take it; aggregates may raise it.
    d = AggregateNumInstancesFilter(default=5)
    assert verdicts(d, t, req()) == [False, True, False, False]
    assert d.explain(t, 2, req()) == "instances 40 >= limit 5 (scheduler.max_instances_per_host)"
    assert verdicts(
        d, table(row("h", instances=8, metadata=meta(max_instances_per_host="9"))), req()
    ) == [True]


# --- allocation ratios from aggregates ----------------------------------------------------


def test_aggregate_ratios_lower_the_hosts_and_explain_says_so() -> None:
    t = table(
        row(
            "dedicated",
            vcpus=8,
            cpu_ratio=4.0,
            ram_mb=8192,
            ram_ratio=1.5,
            disk_gb=100,
            disk_ratio=2.0,
            metadata=meta(
                cpu_allocation_ratio={"1.0", "2.0"},  # two aggregates: the lowest counts
                ram_allocation_ratio="1.0",
                disk_allocation_ratio="1.0",
            ),
        ),
        row("shared", vcpus=8, cpu_ratio=4.0, ram_mb=8192, ram_ratio=1.5),
    )
    assert t.vcpus_cap.tolist() == [8, 32]
    assert t.ram_cap.tolist() == [8192, 12288]
    assert t.disk_cap.tolist() == [100, 1000]
    assert t.cpu_ratio.tolist() == [1.0, 4.0]
    r = req(vcpus=9, ram_mb=9000, disk_gb=101)
    assert verdicts(VcpuFilter(), t, r) == [False, True]
    assert verdicts(RamFilter(), t, r) == [False, True]
    assert verdicts(DiskFilter(), t, r) == [False, True]
    assert VcpuFilter().explain(t, 0, r) == (
        "free vcpus 8 < requested 9 (schedulable 8, used 0); allocation ratio 1 from "
        "aggregate metadata cpu_allocation_ratio"
    )
    assert (
        RamFilter()
        .explain(t, 0, r)
        .endswith("; allocation ratio 1 from aggregate metadata ram_allocation_ratio")
    )
    assert DiskFilter().explain(t, 0, r).endswith("from aggregate metadata disk_allocation_ratio")
    assert "aggregate" not in VcpuFilter().explain(t, 1, r)
    assert t.aggregate_ratio("cpu", 0) == 1.0
    assert t.aggregate_ratio("cpu", 1) is None
    # rows read back carry the effective ratio; building again changes nothing
    assert t.row_at(0).cpu_ratio == 1.0
    again = table(*(t.row_at(i) for i in range(len(t))))
    assert again.vcpus_cap.tolist() == t.vcpus_cap.tolist()


def test_aggregate_ratio_never_raises_the_hosts_and_bad_values_are_ignored() -> None:
    # Claims check the ratio stored on the host, so an aggregate cannot offer more.
    t = table(
        row("raise", vcpus=4, cpu_ratio=2.0, metadata=meta(cpu_allocation_ratio="16")),
        row("zero", vcpus=4, cpu_ratio=2.0, metadata=meta(cpu_allocation_ratio="0")),
        row("junk", vcpus=4, cpu_ratio=2.0, metadata=meta(cpu_allocation_ratio="fast")),
        row("nan", vcpus=4, cpu_ratio=2.0, metadata=meta(cpu_allocation_ratio="nan")),
    )
    assert t.vcpus_cap.tolist() == [8, 8, 8, 8]
    assert [t.aggregate_ratio("cpu", i) for i in range(4)] == [None] * 4


# --- shared -------------------------------------------------------------------------------


NEW_FILTERS: list[HostFilter] = [
    AggregateInstanceExtraSpecsFilter(),
    AggregateImagePropertiesIsolation(),
    AggregateMultiTenancyIsolation(),
    AggregateNumInstancesFilter(default=3),
    NumInstancesFilter(max_instances=3),
]


@pytest.mark.parametrize("flt", NEW_FILTERS, ids=lambda f: f.name)
def test_new_filters_handle_an_empty_zone_and_other_zones(flt: HostFilter) -> None:
    t = table(
        row("a", zone="other", metadata=meta(ssd="false", filter_tenant_id="p")),
        row("b", zone="z1", metadata=meta(ssd="true")),
    )
    r = req(
        extra_specs={"ssd": "true"},
        image_properties={"ssd": "true"},
        project_id="q",
    )
    empty = flt.mask(t, t.zone_slice("nowhere"), r)
    assert empty.dtype == np.bool_ and empty.shape == (0,)
    assert flt.mask(t, t.zone_slice("z1"), r).tolist() == [True]


@pytest.mark.parametrize("flt", NEW_FILTERS, ids=lambda f: f.name)
def test_masks_are_fresh_arrays_the_scheduler_may_and_into(flt: HostFilter) -> None:
    t = table(row("a", metadata=meta(ssd="true")), row("b"))
    r = req(extra_specs={"ssd": "true"}, project_id="p")
    out = flt.mask(t, t.zone_slice("z1"), r)
    before = t.metadata.has("ssd").tolist()
    passed = np.ones(2, dtype=np.bool_)
    np.logical_and(passed, out, out=passed)
    assert t.metadata.has("ssd").tolist() == before


def test_explain_names_the_aggregate_filter_first_in_default_order() -> None:
    # A non-ssd host that is also full is turned down for lacking ssd, the lasting reason.
    t = table(
        row("ssd", metadata=meta(ssd="true")),
        row("hdd-full", ram_mb=512, metadata=meta(ssd="false")),
        row("ssd-full", ram_mb=512, metadata=meta(ssd="true")),
    )
    by = {v.host: v for v in HostScheduler().explain(t, req(extra_specs={"ssd": "true"}))}
    assert by["ssd"].passed
    assert by["hdd-full"].rejected_by == "AggregateInstanceExtraSpecsFilter"
    assert by["hdd-full"].detail == (
        "aggregate metadata ssd=false does not match flavor extra spec ssd=true"
    )
    assert by["ssd-full"].rejected_by == "RamFilter"
    counts = HostScheduler().filter_counts(t, req(extra_specs={"ssd": "true"}))
    assert counts["AggregateInstanceExtraSpecsFilter"] == 1 and counts["RamFilter"] == 1
