"""cell0: instances that could not be placed are listed, shown, filtered, paged and deleted
like any other, and refuse every action but delete."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import LiveBroker
from tests.functional.support import boot_settled, fault_reason

# The embedded default refuses requests that name a virtual zone: a quick way to cell0.
TO_CELL0 = {"availability_zone": "aws-standin"}


def _list(live: LiveBroker, path: str = "", **params: Any) -> list[dict[str, Any]]:
    r = live.client.get(f"{live.compute}/servers{path}", params=params)
    assert r.status_code == 200, r.text
    servers: list[dict[str, Any]] = r.json()["servers"]
    return servers


def test_buried_instances_list_and_show_like_the_others(live_broker: LiveBroker) -> None:
    active = boot_settled(live_broker, "placed")
    buried = boot_settled(live_broker, "buried", **TO_CELL0)
    assert active["status"] == "ACTIVE"
    assert buried["status"] == "ERROR"
    assert buried["federator:cell"] == "cell0"
    assert fault_reason(buried) == "policy_denied"
    assert set(buried) == set(active) | {"fault", "federator:fault"}
    assert buried["fault"]["message"]
    assert buried["fault"]["created"]
    assert buried["OS-EXT-STS:vm_state"] == "error"

    brief = _list(live_broker)
    assert {s["id"] for s in brief} == {active["id"], buried["id"]}
    assert all(set(s) == {"id", "name", "links"} for s in brief)
    detail = {s["id"]: s for s in _list(live_broker, "/detail")}
    assert detail[buried["id"]] == buried
    assert set(detail[active["id"]]) == set(active)

    errors = _list(live_broker, "/detail", status="ERROR")
    assert [s["id"] for s in errors] == [buried["id"]]
    assert [s["id"] for s in _list(live_broker, status="error")] == [buried["id"]]
    assert [s["id"] for s in _list(live_broker, status="ACTIVE")] == [active["id"]]
    assert [s["id"] for s in _list(live_broker, name="buried")] == [buried["id"]]


def test_pagination_spans_build_requests_cells_and_cell0(live_broker: LiveBroker) -> None:
    booted: list[str] = []
    for n in range(7):
        extra = TO_CELL0 if n % 2 else {}
        booted.append(boot_settled(live_broker, f"settled-{n}", **extra)["id"])
    # With the workers stopped, further requests stay build requests.
    live_broker.broker.workers.stop()
    for n in range(3):
        booted.append(live_broker.boot(f"waiting-{n}"))
    statuses = [s["status"] for s in _list(live_broker, "/detail")]
    assert sorted(statuses) == ["ACTIVE"] * 4 + ["BUILD"] * 3 + ["ERROR"] * 3
    newest_first = booted[::-1]

    for limit in (1, 2, 3, 4, 10):
        seen: list[str] = []
        marker: str | None = None
        while True:
            params: dict[str, Any] = {"limit": limit}
            if marker:
                params["marker"] = marker
            page = [s["id"] for s in _list(live_broker, **params)]
            assert len(page) <= limit
            if not page:
                break
            seen.extend(page)
            marker = page[-1]
        assert seen == newest_first, f"limit={limit}"
    detail_page = _list(live_broker, "/detail", limit=4, marker=booted[7])
    assert [s["id"] for s in detail_page] == newest_first[3:7]
    assert [s["status"] for s in detail_page] == ["ACTIVE", "ERROR", "ACTIVE", "ERROR"]


@pytest.mark.parametrize(
    "action", [{"os-start": None}, {"os-stop": None}, {"reboot": {"type": "SOFT"}}]
)
def test_actions_on_cell0_conflict_and_delete_works(
    live_broker: LiveBroker, action: dict[str, Any]
) -> None:
    buried = boot_settled(live_broker, "buried", **TO_CELL0)
    sid = buried["id"]
    url = f"{live_broker.compute}/servers/{sid}"
    r = live_broker.client.post(f"{url}/action", json=action)
    assert r.status_code == 409, r.text
    body = r.json()
    assert body["code"] == "federator.instance.invalid_state"
    assert body["conflictingRequest"]["code"] == 409
    live_broker.wait_settled()
    assert live_broker.server(sid) == buried

    assert live_broker.client.delete(url).status_code == 204
    assert live_broker.client.get(url).status_code == 404
    assert live_broker.client.delete(url).status_code == 404
    assert _list(live_broker) == []
