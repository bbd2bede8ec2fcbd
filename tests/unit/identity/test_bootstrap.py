"""The embedded default's admin: created once, private files, the password only in the
openrc file; and the configuration checks of [identity]."""

from __future__ import annotations

import json
import logging
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from federator.cli.main import app
from federator.config import load_settings
from federator.exception import ConfigError
from federator.identity.bootstrap import identity_config, listen_url, point_openrc_at
from federator.identity.passwords import verify_password
from tests.conftest import identity_section, read_openrc


def test_first_start_creates_the_admin_and_later_starts_reuse_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = load_settings(None, data_dir=tmp_path / "data", api={"port": 9999})
    with caplog.at_level(logging.INFO):
        ident = identity_config(settings)
    data = tmp_path / "data"
    openrc = read_openrc(data / "admin-openrc")
    assert openrc == {
        "OS_AUTH_URL": "http://127.0.0.1:9999/identity",
        "OS_USERNAME": "admin",
        "OS_PASSWORD": openrc["OS_PASSWORD"],
        "OS_PROJECT_NAME": "admin",
        "OS_USER_DOMAIN_NAME": "Default",
        "OS_PROJECT_DOMAIN_NAME": "Default",
        "OS_REGION_NAME": "RegionOne",
        "OS_IDENTITY_API_VERSION": "3",
        "FEDERATOR_URL": "http://127.0.0.1:9999",
    }
    password = openrc["OS_PASSWORD"]
    assert len(password) >= 24
    for name in ("admin-openrc", "identity.json"):
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o600
    (user,) = ident.users
    assert (user.name, user.project, user.roles) == ("admin", "admin", ("admin",))
    assert verify_password(user.password_hash, password)
    assert password not in (data / "identity.json").read_text()
    assert password not in caplog.text
    assert str(data / "admin-openrc") in caplog.text

    again = identity_config(settings)
    assert again.users[0].password_hash == user.password_hash
    assert read_openrc(data / "admin-openrc")["OS_PASSWORD"] == password

    point_openrc_at(data, "http://127.0.0.1:4242")
    moved = read_openrc(data / "admin-openrc")
    assert moved == {**openrc, "OS_AUTH_URL": "http://127.0.0.1:4242/identity"} | {
        "FEDERATOR_URL": "http://127.0.0.1:4242"
    }
    assert stat.S_IMODE((data / "admin-openrc").stat().st_mode) == 0o600


def test_configured_users_need_no_files(tmp_path: Path) -> None:
    settings = load_settings(None, data_dir=tmp_path / "data", identity=identity_section())
    assert identity_config(settings) is settings.identity
    assert not (tmp_path / "data").exists()


def test_a_damaged_identity_file_stops_the_start(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "identity.json").write_text(json.dumps({"users": [{"name": "x"}]}))
    with pytest.raises(ConfigError, match=r"identity\.json is not a valid identity file"):
        identity_config(load_settings(None, data_dir=data))


def test_listen_url_is_reachable_from_this_machine() -> None:
    assert listen_url("0.0.0.0", 8774) == "http://127.0.0.1:8774"
    assert listen_url("::", 8774) == "http://127.0.0.1:8774"
    assert listen_url("::1", 8774) == "http://[::1]:8774"
    assert listen_url("10.0.0.5", 80) == "http://10.0.0.5:80"


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (lambda s: s["users"][1].update(project="nowhere"), "names project 'nowhere'"),
        (lambda s: s["users"].append(dict(s["users"][0])), "duplicate user name 'admin'"),
        (lambda s: s["projects"].append({"name": "x", "id": "admin"}), "duplicate project id"),
        (lambda s: s["users"][0].update(password_hash="plain"), "password_hash"),
        (lambda s: s["users"][0].update(roles=["root"]), "roles"),
        (lambda s: s["users"][0].update(roles=[]), "roles"),
        (lambda s: s["users"][0].update(domain="Other"), "domain"),
    ],
)
def test_identity_configuration_errors_name_the_problem(
    tmp_path: Path, change: object, needle: str
) -> None:
    section = identity_section()
    change(section)  # type: ignore[operator]
    with pytest.raises(ConfigError) as exc:
        load_settings(None, data_dir=tmp_path, identity=section)
    assert needle in exc.value.message
    assert "identity" in exc.value.message


def test_hash_password_reads_stdin_and_prints_only_the_hash() -> None:
    done = CliRunner().invoke(app, ["identity", "hash-password"], input="s3cret-enough\n")
    assert done.exit_code == 0, done.output
    printed = done.stdout.strip()
    assert printed.startswith("$argon2id$")
    assert "s3cret-enough" not in done.output
    assert verify_password(printed, "s3cret-enough")
    short = CliRunner().invoke(app, ["identity", "hash-password"], input="short\n")
    assert short.exit_code == 1
    assert "at least 8 characters" in short.stderr
