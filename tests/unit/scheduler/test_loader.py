"""[scheduler] in the configuration: which filters and weighers run, in which order, found
through entry points; unknown names stop the broker at start-up."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from federator.config import DEFAULT_SCHEDULER_FILTERS, SchedulerConfig, load_settings
from federator.exception import ConfigError
from federator.scheduler import HostRequest, HostScheduler, default_filters, default_weighers
from federator.scheduler.filters import HostFilter
from federator.scheduler.hoststate import HostTable
from federator.scheduler.loader import (
    FILTERS_NAMESPACE,
    WEIGHERS_NAMESPACE,
    filter_class,
    installed_filters,
    installed_weighers,
    load_filters,
    load_weighers,
    scheduler_from_config,
)
from tests.unit.scheduler.factory import row, table

ROOT = Path(__file__).resolve().parents[3]


def config(**data: Any) -> SchedulerConfig:
    return SchedulerConfig.model_validate(data)


def test_defaults_are_the_built_in_filters_in_order() -> None:
    sched = scheduler_from_config(SchedulerConfig())
    assert [type(f) for f in sched.filters] == [type(f) for f in default_filters()]
    assert [(type(w), w.multiplier) for w in sched.weighers] == [
        (type(w), w.multiplier) for w in default_weighers()
    ]
    assert tuple(SchedulerConfig().filters) == DEFAULT_SCHEDULER_FILTERS


def test_every_built_in_rule_is_an_entry_point_of_the_package() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]
    declared = project["entry-points"]
    assert set(declared[FILTERS_NAMESPACE]) == set(DEFAULT_SCHEDULER_FILTERS)
    assert set(declared[WEIGHERS_NAMESPACE]) == {
        "ram",
        "vcpu",
        "instances",
        "soft_affinity",
        "soft_anti_affinity",
    }
    # and the installed metadata agrees (a stale install would fail the broker's start)
    assert set(installed_filters()) >= set(declared[FILTERS_NAMESPACE])
    assert set(installed_weighers()) >= set(declared[WEIGHERS_NAMESPACE])
    for name, target in declared[FILTERS_NAMESPACE].items():
        cls = filter_class(name)
        assert f"{cls.__module__}:{cls.__qualname__}" == target


def test_configured_order_is_kept() -> None:
    names = ["ram", "enabled", "aggregate_extra_specs"]
    filters = load_filters(config(filters=names))
    assert [f.name for f in filters] == [
        "RamFilter",
        "EnabledFilter",
        "AggregateInstanceExtraSpecsFilter",
    ]
    # filter_counts follows that order too
    t = table(row("off", enabled=False, ram_mb=1), row("ok"))
    counts = HostScheduler(filters=filters).filter_counts(
        t, HostRequest(zone="z1", vcpus=1, ram_mb=1024, disk_gb=1)
    )
    assert list(counts.items()) == [
        ("RamFilter", 1),
        ("EnabledFilter", 0),
        ("AggregateInstanceExtraSpecsFilter", 0),
    ]


def test_an_empty_filter_list_is_allowed() -> None:
    assert load_filters(config(filters=[])) == []


def test_unknown_filter_is_named_with_the_installed_ones() -> None:
    with pytest.raises(ConfigError) as exc:
        scheduler_from_config(config(filters=["enabled", "ssd_only"]))
    message = exc.value.message
    assert "scheduler.filters names filter 'ssd_only', which is not installed" in message
    assert "installed: affinity, aggregate_extra_specs," in message
    assert "vcpu)" in message


def test_unknown_weigher_is_named_with_the_installed_ones() -> None:
    with pytest.raises(ConfigError) as exc:
        scheduler_from_config(config(weighers=[{"name": "disk"}]))
    assert exc.value.message == (
        "scheduler.weighers names weigher 'disk', which is not installed "
        "(installed: instances, ram, soft_affinity, soft_anti_affinity, vcpu)"
    )


def test_weigher_multipliers_from_configuration() -> None:
    weighers = load_weighers(
        config(weighers=[{"name": "instances", "multiplier": 2.0}, {"name": "ram"}])
    )
    assert [(w.name, w.multiplier) for w in weighers] == [
        ("InstancesWeigher", 2.0),
        ("RamWeigher", 1.0),  # unset: the weigher's default
    ]


def test_configured_weighers_honour_the_policys_pack_or_spread() -> None:
    # The policy chooses spread or pack per zone (HostRequest.weighing); the
    # configured multipliers only say how much each weigher counts.
    t = table(row("empty"), row("half", ram_used_mb=32768), row("full", ram_used_mb=60000))
    sched = scheduler_from_config(config(weighers=[{"name": "ram", "multiplier": 3.0}]))
    spread = HostRequest(zone="z1", vcpus=1, ram_mb=1024, disk_gb=1)
    pack = HostRequest(zone="z1", vcpus=1, ram_mb=1024, disk_gb=1, weighing="pack")
    assert sched.select(t, spread, limit=3) == ["empty", "half", "full"]
    assert sched.select(t, pack, limit=3) == ["full", "half", "empty"]
    assert [v.weight for v in sched.explain(t, spread)] == [
        3.0,
        pytest.approx(3 * 32768 / 65536),
        pytest.approx(3 * 5536 / 65536),
    ]


def test_instance_limit_default_reaches_both_limit_filters() -> None:
    filters = load_filters(
        config(
            filters=["host_instance_limit", "aggregate_instance_limit"], max_instances_per_host=7
        )
    )
    assert getattr(filters[0], "max_instances", None) == 7
    assert getattr(filters[1], "default", None) == 7


def test_filter_options_reach_the_constructor() -> None:
    (f,) = load_filters(
        config(
            filters=["aggregate_image_properties"],
            filter_options={"aggregate_image_properties": {"namespace": "iso"}},
        )
    )
    assert getattr(f, "prefix", None) == "iso."
    with pytest.raises(ConfigError, match="'ram' refused its options"):
        load_filters(config(filters=["ram"], filter_options={"ram": {"ratio": 2}}))
    with pytest.raises(ConfigError, match="'ram' refused its options"):
        load_weighers(config(weighers=[{"name": "ram", "options": {"x": 1}}]))


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="duplicate scheduler filter 'ram'"):
        config(filters=["ram", "ram"])
    with pytest.raises(ValueError, match="duplicate scheduler weigher 'ram'"):
        config(weighers=[{"name": "ram"}, {"name": "ram", "multiplier": 2}])
    with pytest.raises(ValueError, match=r"not in scheduler\.filters"):
        config(filters=["ram"], filter_options={"vcpu": {}})
    with pytest.raises(ValueError):
        config(weighers=[{"name": "ram", "multiplier": "inf"}])
    with pytest.raises(ValueError):
        config(max_instances_per_host=0)


def test_scheduler_section_from_toml_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "broker.toml"
    cfg.write_text(
        "[scheduler]\n"
        'filters = ["enabled", "ram", "aggregate_extra_specs"]\n'
        "max_instances_per_host = 40\n"
        'weighers = [{ name = "ram", multiplier = 2.0 }, { name = "instances" }]\n'
        "[[flavors]]\n"
        'id = "9"\nname = "ssd.small"\nvcpus = 1\nram_mb = 1024\ndisk_gb = 10\n'
        'extra_specs = { "aggregate_instance_extra_specs:ssd" = "true" }\n'
        "[[images]]\n"
        'id = "img-1"\nname = "win"\nproperties = { os_distro = "windows" }\n',
        encoding="utf-8",
    )
    monkeypatch.delenv("FEDERATOR_CONFIG", raising=False)
    s = load_settings(cfg)
    assert s.scheduler.filters == ["enabled", "ram", "aggregate_extra_specs"]
    assert [(w.name, w.multiplier) for w in s.scheduler.weighers] == [
        ("ram", 2.0),
        ("instances", None),
    ]
    assert s.flavors[0].extra_specs == {"aggregate_instance_extra_specs:ssd": "true"}
    assert s.images[0].properties == {"os_distro": "windows"}
    monkeypatch.setenv("FEDERATOR_SCHEDULER__FILTERS", '["ram"]')
    assert load_settings(cfg).scheduler.filters == ["ram"]


def test_unknown_scheduler_key_is_a_config_error(tmp_path: Path) -> None:
    cfg = tmp_path / "broker.toml"
    cfg.write_text('[scheduler]\nfiltres = ["ram"]\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"scheduler\.filtres"):
        load_settings(cfg)


class _Quiet(HostFilter):
    name = "Quiet"

    def mask(self, table: HostTable, sl: slice, req: HostRequest) -> NDArray[np.bool_]:
        return np.ones(sl.stop - sl.start, dtype=np.bool_)

    def explain(self, table: HostTable, i: int, req: HostRequest) -> str:
        return "quiet"


def test_default_from_config_passes_options_as_keywords() -> None:
    assert isinstance(_Quiet.from_config(SchedulerConfig(), {}), _Quiet)
    with pytest.raises(TypeError):
        _Quiet.from_config(SchedulerConfig(), {"limit": 3})
