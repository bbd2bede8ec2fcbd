"""Fixtures shared by the functional tests."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon import Daemon

REPO = Path(__file__).resolve().parents[2]
PLUGIN_GUIDE = REPO / "docs" / "plugins.md"

# A fenced block with a title names the file it is: ```python title="tiny.py"
_TITLED_BLOCK = re.compile(
    r'^```[\w-]+ +title="(?P<title>[^"]+)"\n(?P<body>.*?)^```$', re.MULTILINE | re.DOTALL
)
PACKAGE_FILES = ("pyproject.toml", "tiny_federator_driver.py")


def guide_files(path: Path = PLUGIN_GUIDE) -> dict[str, str]:
    """Every titled code block of the plugin guide, by title."""
    return {m["title"]: m["body"] for m in _TITLED_BLOCK.finditer(path.read_text("utf-8"))}


@pytest.fixture(scope="session")
def plugin_guide_files() -> dict[str, str]:
    """The titled code blocks of ``docs/plugins.md``: the example plugin and its config."""
    files = guide_files()
    missing = [name for name in (*PACKAGE_FILES, "federator.toml") if name not in files]
    assert not missing, f"docs/plugins.md lost its example blocks: {missing}"
    return files


@pytest.fixture(scope="session")
def tiny_plugin_site(
    tmp_path_factory: pytest.TempPathFactory, plugin_guide_files: dict[str, str]
) -> Path:
    """A directory holding the guide's example plugin, installed by pip.

    Put it on ``PYTHONPATH`` (see ``tiny_plugin_env``) and the ``tiny`` driver is
    installed for that process. Built offline: no index, no build isolation.
    """
    root = tmp_path_factory.mktemp("tiny-plugin")
    package = root / "tiny-federator-driver"
    package.mkdir()
    for name in PACKAGE_FILES:
        (package / name).write_text(plugin_guide_files[name], encoding="utf-8")
    site = root / "site"
    installed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-index",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(package),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert installed.returncode == 0, f"pip could not install the example:\n{installed.stderr}"
    return site


@pytest.fixture(scope="session")
def tiny_plugin_env(tiny_plugin_site: Path) -> dict[str, str]:
    """The environment of a child process that has the ``tiny`` driver installed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(tiny_plugin_site), env.get("PYTHONPATH", "")) if p
    )
    return env


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    """Every ``federator serve`` process a test starts (append them); any still running at
    the end is killed."""
    started: list[Daemon] = []
    yield started
    for d in started:
        d.kill()
