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
