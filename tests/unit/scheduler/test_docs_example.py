"""The plugin example of docs/scheduler.md is real code: it runs, and its rules work."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from federator.config import SchedulerConfig
from federator.scheduler import HostRequest, HostScheduler, default_filters, default_weighers
from federator.scheduler.filters import HostFilter
from federator.scheduler.loader import scheduler_from_config
from federator.scheduler.weighers import HostWeigher
from tests.unit.scheduler.factory import row, table

GUIDE = Path(__file__).resolve().parents[3] / "docs" / "scheduler.md"
_TITLED = re.compile(r'^```\w+ +title="(?P<title>[^"]+)"\n(?P<body>.*?)^```$', re.M | re.S)


def blocks() -> dict[str, str]:
    return {m["title"]: m["body"] for m in _TITLED.finditer(GUIDE.read_text("utf-8"))}


def example() -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "tiny_scheduler_rules"}
    exec(compile(blocks()["tiny_scheduler_rules.py"], "tiny_scheduler_rules.py", "exec"), namespace)
    return namespace


def test_the_entry_points_name_the_example_classes() -> None:
    project = tomllib.loads(blocks()["pyproject.toml"])["project"]
    points = project["entry-points"]
    assert points["federator.scheduler.filters"] == {
        "exclude_rack": "tiny_scheduler_rules:ExcludeRackFilter"
    }
    assert points["federator.scheduler.weighers"] == {"disk": "tiny_scheduler_rules:DiskWeigher"}
    rules = example()
    assert issubclass(rules["ExcludeRackFilter"], HostFilter)
    assert issubclass(rules["DiskWeigher"], HostWeigher)


def test_the_example_rules_work() -> None:
    rules = example()
    t = table(
        row("r12a", metadata={"rack": frozenset({"r12"})}, disk_used_gb=900),
        row("r7", metadata={"rack": frozenset({"r7,r8"})}, disk_used_gb=500),
        row("loose", disk_used_gb=100),
    )
    flt = rules["ExcludeRackFilter"].from_config(SchedulerConfig(), {"racks": ["r12"]})
    req = HostRequest(zone="z1", vcpus=1, ram_mb=512, disk_gb=1)
    assert flt.mask(t, t.zone_slice("z1"), req).tolist() == [False, True, True]
    assert flt.explain(t, 0, req) == "aggregate metadata rack=r12 is an excluded rack"
    assert flt.explain(t, 1, req) == "host is in no excluded rack"
    sched = HostScheduler(
        filters=[*default_filters(), flt],
        weighers=[*default_weighers(), rules["DiskWeigher"](5.0)],
    )
    assert sched.select(t, req, limit=3) == ["loose", "r7"]
    pack = HostRequest(zone="z1", vcpus=1, ram_mb=512, disk_gb=1, weighing="pack")
    assert sched.select(t, pack, limit=3) == ["r7", "loose"]


def test_the_configuration_examples_are_valid() -> None:
    text = GUIDE.read_text("utf-8")
    sections = [
        tomllib.loads(m["body"])["scheduler"]
        for m in re.finditer(r"^```toml\n(?P<body>.*?)^```$", text, re.M | re.S)
        if "[scheduler]" in m["body"]
    ]
    assert len(sections) == 2
    documented, with_plugin = (SchedulerConfig.model_validate(s) for s in sections)
    assert documented.filters == SchedulerConfig().filters
    assert scheduler_from_config(documented).filters  # every name is installed
    assert "exclude_rack" in with_plugin.filters
    assert with_plugin.filter_options == {"exclude_rack": {"racks": ["r12"]}}
