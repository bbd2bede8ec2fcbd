"""Explain shows every candidate zone and host with the rule that decided it, and reserves
nothing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from federator.config import Settings
from federator.storage.models import Allocation, Zone
from tests.conftest import LiveBroker, make_settings, sim_zone

POLICY = {
    "version": "explain-1",
    "zones": {
        "local": {
            "thresholds": {"ram_percent": {"high": 75, "low": 50}},
            "overflow": ["cloud-a"],
        },
        "cloud-a": {"quota": {"instances": 2}},
    },
}


def _usage(live: LiveBroker) -> tuple[Any, ...]:
    with live.broker.dbs.api.read() as s:
        zones = tuple(
            s.execute(
                select(Zone.name, Zone.ram_used_mb, Zone.instances, Zone.bursting).order_by(
                    Zone.name
                )
            ).all()
        )
        allocations = s.scalar(select(func.count()).select_from(Allocation))
    return zones, allocations


def test_explain_names_every_verdict_and_reserves_nothing(
    tmp_path: Path, live_broker_factory: Callable[[Settings], LiveBroker]
) -> None:
    settings = make_settings(
        tmp_path,
        zones=[
            sim_zone("local", "local", hosts=2, host_ram_mb=4096, host_vcpus=4),
            sim_zone("cloud-a", "virtual", expose_hosts=False),
        ],
        policy=POLICY,
    )
    live = live_broker_factory(settings)
    for n in range(3):  # 3 GiB of 8: 37.5 %, under high water
        live.boot(f"w{n}", flavor="m1.small")
    live.wait_settled()
    before = _usage(live)

    def explain(flavor: str, **extra: Any) -> dict[str, Any]:
        r = live.client.post(
            f"{live.url}/federator/v1/policy/explain",
            json={"flavor": flavor, "image": "cirros", **extra},
        )
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()["explain"]
        return body

    small = explain("m1.small")
    assert small["policy_version"] == "explain-1"
    assert small["decision"]["zone"] == "local" and small["decision"]["host"]
    local = next(z for z in small["zones"] if z["zone"] == "local")
    assert local["rank"] == 1 and local["hosts_total"] == 2 and local["hosts_passed"] == 2
    assert local["limits"]["ram_mb"] == 6144  # floor(75 % of 8192)
    # The chosen host is the best-weighted one: spread picks the emptier host.
    assert local["hosts"][0]["host"] == small["decision"]["host"]
    assert local["hosts"][0]["free_ram_mb"] >= local["hosts"][1]["free_ram_mb"]

    # m1.medium (4 GiB) would cross high water locally: local rejected with its figures,
    # cloud-a accepted within quota.
    medium = explain("m1.medium")
    assert medium["decision"] == {"zone": "cloud-a", "host": None}
    verdicts = {
        v["check"]: v for z in medium["zones"] for v in z["verdicts"] if z["zone"] == "local"
    }
    ram = verdicts["threshold.ram_percent"]
    assert ram["accepted"] is False and ram["figures"]["ram_percent_high"] == 75
    assert medium["would_start_bursting"] == ["local"]

    # m1.large (8 GiB) fits no local host: each host names the filter that refused it.
    large = explain("m1.large", availability_zone="local")
    hosts = next(z for z in large["zones"] if z["zone"] == "local")["hosts"]
    assert large["decision"] is None and large["fault"]
    assert all(h["passed"] is False and h["rejected_by"] == "RamFilter" for h in hosts)
    assert all("MB" in h["detail"] for h in hosts)

    # max_hosts cuts the list after ordering best first.
    cut = explain("m1.small", max_hosts=1)
    assert [h["host"] for h in next(z for z in cut["zones"] if z["zone"] == "local")["hosts"]] == [
        small["decision"]["host"]
    ]

    assert _usage(live) == before  # nothing claimed, no flag flipped
