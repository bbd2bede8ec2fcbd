"""Configuration: defaults, TOML, FEDERATOR_* overrides, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from federator.config import load_settings
from federator.exception import ConfigError


def test_embedded_default_needs_no_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FEDERATOR_CONFIG", raising=False)
    s = load_settings(None)
    assert s.api.host == "127.0.0.1"
    assert [z.kind for z in s.zones].count("local") == 1
    assert s.api_db_url().startswith("sqlite:///") and s.api_db_url().endswith("api.sqlite")
    assert s.cell_db_url("cell0").endswith("cell0.sqlite")
    assert s.resolved_policy_file().name == "default.json"


def test_toml_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "broker.toml"
    cfg.write_text(
        '[api]\nport = 9001\n[database]\napi_url = "sqlite:////tmp/x.sqlite"\n'
        '[[zones]]\nname = "rack-a"\ndriver = "sim"\nkind = "local"\n',
        encoding="utf-8",
    )
    monkeypatch.setenv("FEDERATOR_API__PORT", "9002")
    s = load_settings(cfg)
    assert s.api.port == 9002  # the environment beats the file
    assert s.api_db_url() == "sqlite:////tmp/x.sqlite"
    assert [z.name for z in s.zones] == ["rack-a"]


def test_unknown_key_is_named(tmp_path: Path) -> None:
    cfg = tmp_path / "broker.toml"
    cfg.write_text("[api]\nprot = 1\n", encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        load_settings(cfg)
    assert "api.prot" in exc.value.message


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    cfg = tmp_path / "broker.toml"
    cfg.write_text("[api\n", encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        load_settings(cfg)
    assert str(cfg) in exc.value.message and "TOML" in exc.value.message


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(tmp_path / "absent.toml")
    assert "cannot read configuration" in exc.value.message


@pytest.mark.parametrize(
    ("zones", "needle"),
    [
        ([{"name": "a", "driver": "sim", "kind": "virtual"}], "local"),
        (
            [
                {"name": "a", "driver": "sim", "kind": "local"},
                {"name": "a", "driver": "sim", "kind": "virtual"},
            ],
            "duplicate zone name 'a'",
        ),
        ([{"name": "a", "driver": "sim", "kind": "local", "cell": "cell9"}], "cell9"),
        ([{"name": "a", "driver": "sim", "kind": "local", "cell": "cell0"}], "cell0"),
    ],
)
def test_zone_errors(zones: list[dict[str, str]], needle: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(None, zones=zones)
    assert needle in exc.value.message


def test_the_embedded_local_zone_declares_an_aggregate_of_all_its_hosts() -> None:
    local = next(z for z in load_settings(None).zones if z.kind == "local")
    assert [(a.name, a.hosts, a.availability_zone) for a in local.aggregates] == [
        ("local", ["*"], None)
    ]


def _zones_with(aggregates: list[dict[str, object]], **local: object) -> list[dict[str, object]]:
    return [
        {"name": "a", "driver": "sim", "kind": "local", "aggregates": aggregates, **local},
        {"name": "b", "driver": "sim", "kind": "local"},
        {"name": "cloud", "driver": "sim", "kind": "virtual"},
    ]


@pytest.mark.parametrize(
    ("zones", "needle"),
    [
        (
            _zones_with([{"name": "x", "availability_zone": "cloud"}]),
            "availability zone 'cloud' is the name of virtual zone 'cloud'",
        ),
        (
            _zones_with([{"name": "x", "availability_zone": "b"}]),
            "is the name of local zone 'b'",
        ),
        (_zones_with([{"name": "x"}, {"name": "X"}]), "aggregate 'X' of zone 'a'"),
        (
            _zones_with([{"name": "x", "availability_zone": "a:1"}]),
            "aggregates.0.availability_zone",
        ),
        (
            _zones_with([{"name": "x", "metadata": {"availability_zone": "z"}}]),
            "give the availability zone as availability_zone",
        ),
        (
            [{"name": "cloud", "driver": "sim", "kind": "virtual", "aggregates": [{"name": "x"}]},
             {"name": "a", "driver": "sim", "kind": "local"}],
            "a virtual zone has none",
        ),
        (
            [
                *_zones_with([{"name": "x", "availability_zone": "az"}]),
                {"name": "c", "driver": "sim", "kind": "local",
                 "aggregates": [{"name": "y", "availability_zone": "az"}]},
            ],
            "already in zone 'a'",
        ),
    ],
)  # fmt: skip
def test_aggregate_declaration_errors(zones: list[dict[str, object]], needle: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(None, zones=zones)
    assert needle in exc.value.message


def test_an_aggregate_may_take_its_own_zone_name_as_availability_zone() -> None:
    s = load_settings(None, zones=_zones_with([{"name": "x", "availability_zone": "a"}]))
    assert s.zones[0].aggregates[0].availability_zone == "a"


def test_keep_alive_outlasts_the_openstack_clients_polls(tmp_path: Path) -> None:
    # openstack --wait polls every 5 s; a server closing idle connections at 5 s races it.
    assert load_settings(None, data_dir=tmp_path).api.keep_alive_seconds > 5
    with pytest.raises(ConfigError, match="keep_alive_seconds"):
        load_settings(None, data_dir=tmp_path, api={"keep_alive_seconds": 0})
