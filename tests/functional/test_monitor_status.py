"""GET /federator/v1/monitor reports the node's write transactions per database."""

from __future__ import annotations

import time
from typing import Any

from tests.conftest import LiveBroker


def _databases(live: LiveBroker) -> dict[str, dict[str, Any]]:
    r = live.client.get(f"{live.url}/federator/v1/monitor")
    assert r.status_code == 200, r.text
    body: dict[str, dict[str, Any]] = r.json()["databases"]
    return body


def test_write_counters_grow_with_the_boots_they_count(live_broker: LiveBroker) -> None:
    before = _databases(live_broker)
    assert set(before) == {"api", "cell0", *live_broker.broker.settings.cell_names()}
    ids = [live_broker.boot(f"vm-{i}") for i in range(3)]
    deadline = time.monotonic() + 30
    while live_broker.broker.queue.pending():
        assert time.monotonic() < deadline, "the boots did not finish"
        time.sleep(0.02)
    after = _databases(live_broker)
    api0, api1 = before["api"], after["api"]
    # each boot is written at accept, claim and map (concurrent ones may share a
    # transaction: at least the accepts, which came one after the other, did not)
    assert api1["writes"] - api0["writes"] >= len(ids) + 1, (api0, api1)
    assert api1["write_held_s"] > api0["write_held_s"]
    assert api1["write_wait_s"] >= api0["write_wait_s"] >= 0
    cell = after[live_broker.broker.settings.cell_names()[0]]
    assert 1 <= cell["writes"] <= len(ids)  # the instance records, some perhaps together
    # what the API answers is what the broker's databases counted
    counted = live_broker.broker.dbs.api.write_gate_stats()
    assert api1["writes"] <= counted.count
