"""Helpers for the functional tests: the acceptance zones and policy, and the real
``federator`` command run in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import LiveBroker, sim_zone

FEDERATOR = Path(sys.executable).parent / "federator"
GIB = 1024


def three_zones(
    *, local_hosts: int = 4, cloud_a: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """A local zone of sim hosts (8 GiB, 8 vCPUs each) and two opaque virtual zones."""
    return [
        sim_zone("local", "local", hosts=local_hosts, host_ram_mb=8192, host_vcpus=8),
        sim_zone("cloud-a", "virtual", expose_hosts=False, **(cloud_a or {})),
        sim_zone("cloud-b", "virtual", expose_hosts=False),
    ]


def overflow_policy(
    version: str = "v1",
    *,
    quota_a: int | None = 3,
    quota_b: int | None = 2,
    high: float = 75,
    low: float = 50,
    **top: Any,
) -> dict[str, Any]:
    """Local RAM high/low water marks, overflow to cloud-a then cloud-b, instance quotas."""
    zones: dict[str, Any] = {
        "local": {
            "thresholds": {"ram_percent": {"high": high, "low": low}},
            "overflow": ["cloud-a", "cloud-b"],
        }
    }
    if quota_a is not None:
        zones["cloud-a"] = {"quota": {"instances": quota_a}}
    if quota_b is not None:
        zones["cloud-b"] = {"quota": {"instances": quota_b}}
    return {"version": version, "zones": zones, **top}


def boot_settled(live: LiveBroker, name: str = "vm", **extra: Any) -> dict[str, Any]:
    """Boot one server, wait until every task has ended, and return its detail."""
    sid = live.boot(name, **extra)
    live.wait_settled()
    return live.server(sid)


def boot_as(live: LiveBroker, project: str, name: str = "vm", **extra: Any) -> dict[str, Any]:
    """Boot one server as the member of ``project`` and return its settled detail (the
    broker needs ``project`` among its test tenants: ``make_settings(tenants=...)``)."""
    body = {"server": {"name": name, "flavorRef": "m1.small", "imageRef": "cirros", **extra}}
    member = live.member(project)
    r = member.post(f"{live.compute}/servers", json=body)
    assert r.status_code == 202, r.text
    sid = r.json()["server"]["id"]
    live.wait_settled()
    shown = member.get(f"{live.compute}/servers/{sid}")
    assert shown.status_code == 200, shown.text
    server: dict[str, Any] = shown.json()["server"]
    return server


def delete_settled(live: LiveBroker, *sids: str) -> None:
    for sid in sids:
        r = live.client.delete(f"{live.compute}/servers/{sid}")
        assert r.status_code == 204, r.text
    live.wait_settled()


def zones(live: LiveBroker) -> dict[str, dict[str, Any]]:
    r = live.client.get(f"{live.url}/federator/v1/zones")
    assert r.status_code == 200, r.text
    return {z["name"]: z for z in r.json()["zones"]}


def az(server: dict[str, Any]) -> str:
    zone: str = server["OS-EXT-AZ:availability_zone"]
    return zone


def fault_reason(server: dict[str, Any]) -> str | None:
    fault = server.get("federator:fault") or {}
    reason: str | None = fault.get("reason")
    return reason


def all_servers(live: LiveBroker) -> list[dict[str, Any]]:
    r = live.client.get(f"{live.compute}/servers/detail", params={"all_tenants": "1"})
    assert r.status_code == 200, r.text
    servers: list[dict[str, Any]] = r.json()["servers"]
    return servers


# --- the real command -------------------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, (Path, str)):
        return json.dumps(str(value))
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
        )
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    raise TypeError(f"no TOML rendering for {value!r}")


def write_broker_toml(
    path: Path,
    *,
    data_dir: Path,
    policy_file: Path | None = None,
    zones: list[dict[str, Any]] | None = None,
    cells: dict[str, str] | None = None,
) -> Path:
    """A broker configuration file; zones as ``[[zones]]`` tables with their options."""
    lines = [f"data_dir = {_toml_value(data_dir)}", 'node_id = "test-node"']
    if policy_file is not None:
        lines.append(f"policy_file = {_toml_value(policy_file)}")
    lines += ["", "[workers]", "count = 2", "poll_interval = 0.1"]
    if cells:
        lines += ["", "[database.cells]"]
        lines += [f"{name} = {_toml_value(url)}" for name, url in cells.items()]
    for zone in zones or []:
        lines += ["", "[[zones]]"]
        lines += [
            f"{k} = {_toml_value(v)}" for k, v in zone.items() if k not in ("options", "aggregates")
        ]
        if zone.get("options"):
            lines += ["[zones.options]"]
            lines += [f"{k} = {_toml_value(v)}" for k, v in zone["options"].items()]
        for aggregate in zone.get("aggregates") or []:
            lines += ["[[zones.aggregates]]"]
            lines += [f"{k} = {_toml_value(v)}" for k, v in aggregate.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def federator(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the ``federator`` command to completion."""
    return subprocess.run(
        [str(FEDERATOR), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
