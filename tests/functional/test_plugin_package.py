"""A driver installed from its own package is found and used through entry points.

The package is the example in ``docs/plugins.md``, built and installed by pip, so the
guide cannot drift from what works.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from federator.config import ZoneConfig
from federator.exception import DriverNotFound
from federator.plugins import load_driver
from tests.conftest import admin_headers

REPO = Path(__file__).resolve().parents[2]

# Runs in a child process whose PYTHONPATH holds the installed plugin.
USE_PLUGIN = """
import json, sys
from pathlib import Path

from federator.config import ZoneConfig, load_settings
from federator.driver import FlavorSpec, InstanceSpec
from federator.exception import DriverNotFound
from federator.plugins import installed, load_driver

config, data_dir = Path(sys.argv[1]), Path(sys.argv[2])
plugins = {p.name: p for p in installed()}
driver = load_driver(load_settings(config).zone("edge"), "broker-1", data_dir)
spec = InstanceSpec(
    uuid="6f1c1f9e-7f41-4d0a-9a52-5c1d4f0b7a10",
    name="vm-1",
    flavor=FlavorSpec(name="m1.tiny", vcpus=1, ram_mb=512, disk_gb=1),
    image="cirros",
    project_id="p1",
    broker_id="broker-1",
)
made = driver.create(spec)
again = driver.create(spec)
try:
    load_driver(ZoneConfig(name="far", driver="missing", kind="virtual"), "broker-1", data_dir)
    missing = ""
except DriverNotFound as exc:
    missing = exc.message
print(json.dumps({
    "tiny": {
        "target": plugins["tiny"].target,
        "error": plugins["tiny"].error,
    },
    "driver": type(driver).__name__,
    "instance": [made.uuid, made.remote_id, made.state.value],
    "again": again.remote_id,
    "listed": [i.uuid for batch in driver.list_instances() for i in batch],
    "health": [driver.health().ok, driver.health().detail],
    "missing": missing,
}))
"""


def run_python(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        env=env,
        cwd=REPO,
        check=False,
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_installed_plugin_is_found_and_creates_an_instance(
    tiny_plugin_env: dict[str, str], plugin_guide_files: dict[str, str], tmp_path: Path
) -> None:
    config = tmp_path / "federator.toml"
    config.write_text(plugin_guide_files["federator.toml"], encoding="utf-8")
    result = run_python(["-c", USE_PLUGIN, str(config), str(tmp_path / "data")], tiny_plugin_env)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)

    assert out["tiny"]["target"] == "tiny_federator_driver:TinyDriver"
    assert out["tiny"]["error"] == ""
    assert out["driver"] == "TinyDriver"
    assert out["instance"] == ["6f1c1f9e-7f41-4d0a-9a52-5c1d4f0b7a10", "edge-1", "ACTIVE"]
    assert out["again"] == "edge-1"
    assert out["listed"] == ["6f1c1f9e-7f41-4d0a-9a52-5c1d4f0b7a10"]
    assert out["health"] == [True, "1 instances"]
    assert "'missing'" in out["missing"]
    installed = out["missing"].split("installed: ", 1)[1].rstrip(")").split(", ")
    assert {"sim", "tiny"} <= set(installed) and installed == sorted(installed)


def test_installed_names_the_distribution(tiny_plugin_env: dict[str, str]) -> None:
    code = (
        "from federator.plugins import installed\n"
        "tiny = next(p for p in installed() if p.name == 'tiny')\n"
        "print(tiny.distribution, tiny.version)"
    )
    result = run_python(["-c", code], tiny_plugin_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["tiny-federator-driver", "0.1.0"]


def test_example_plugin_passes_the_contract_suite(tiny_plugin_env: dict[str, str]) -> None:
    env = dict(tiny_plugin_env, FEDERATOR_CONTRACT_DRIVERS="tiny")
    contract = str(REPO / "tests" / "contract")
    result = run_python(
        ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "tiny", contract], env
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert " passed" in result.stdout
    assert "skipped" not in result.stdout


def test_zone_naming_an_uninstalled_driver_lists_the_installed_ones(tmp_path: Path) -> None:
    zone = ZoneConfig(name="far", driver="no-such-driver", kind="virtual")
    with pytest.raises(DriverNotFound) as caught:
        load_driver(zone, "broker-1", tmp_path)
    message = caught.value.message
    assert "zone 'far'" in message
    assert "'no-such-driver'" in message
    assert "installed: " in message
    assert "sim" in message.split("installed: ", 1)[1]


def test_broker_boots_a_vm_through_the_installed_plugin(
    tiny_plugin_env: dict[str, str], plugin_guide_files: dict[str, str], tmp_path: Path
) -> None:
    """`federator serve` with the guide's configuration places a VM in the plugin's zone."""
    import time

    import httpx

    policy = tmp_path / "policy.json"
    policy.write_text(
        json.dumps({"version": "plugin-test", "allow_explicit_virtual_az": True, "zones": {}}),
        encoding="utf-8",
    )
    config = tmp_path / "federator.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "data"}"\npolicy_file = "{policy}"\n'
        + plugin_guide_files["federator.toml"],
        encoding="utf-8",
    )
    ready = tmp_path / "port"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "federator.cli",
            "serve",
            "--config",
            str(config),
            "--port",
            "0",
            "--ready-file",
            str(ready),
        ],
        env=tiny_plugin_env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "broker did not start"
            time.sleep(0.05)
        root = f"http://127.0.0.1:{ready.read_text()}"
        base = f"{root}/compute/v2.1"
        headers = admin_headers(root, tmp_path / "data")
        with httpx.Client(timeout=10, headers=headers) as http:
            zones = http.get(f"{base}/os-availability-zone").json()["availabilityZoneInfo"]
            assert {z["zoneName"] for z in zones} == {"local", "edge"}
            r = http.post(
                f"{base}/servers",
                json={
                    "server": {
                        "name": "via-plugin",
                        "flavorRef": "m1.tiny",
                        "imageRef": "cirros",
                        "availability_zone": "edge",
                    }
                },
            )
            assert r.status_code == 202, r.text
            sid = r.json()["server"]["id"]
            while True:
                server = http.get(f"{base}/servers/{sid}").json()["server"]
                if server["status"] != "BUILD":
                    break
                assert time.monotonic() < deadline, "server never left BUILD"
                time.sleep(0.05)
        assert server["status"] == "ACTIVE", server.get("fault")
        assert server["OS-EXT-AZ:availability_zone"] == "edge"
        assert server["federator:cell"] == "cell1"
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
