"""Volumes through the broker's Cinder and Nova APIs, on sim zones: the rules a client sees.

Statuses and their transitions, bad input (each answer names the field, and nothing is
created), tenancy, the availability-zone rule for attachments (Nova's
``cross_az_attach = False``), multiattach, a failed create left in ERROR with its fault
and explained, and the monitor's view of volumes that vanish or appear behind its back.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from federator.config import Settings
from federator.storage.events import list_events
from federator.volumes.sync import sync_volumes
from tests.conftest import ADMIN, LiveBroker, make_settings, sim_zone
from tests.functional.support import boot_as, boot_settled

Factory = Callable[..., LiveBroker]
A, B = "proj-a", "proj-b"


def policy(**top: Any) -> dict[str, Any]:
    return {
        "version": "vol-1",
        "allow_explicit_virtual_az": True,
        "zones": {
            "local": {"overflow": ["cloud"]},
            "cloud": {"quota": {"volumes": 10, "gigabytes": 100}},
        },
        **top,
    }


def settings(
    tmp_path: Path,
    doc: dict[str, Any] | None = None,
    volumes_types: list[dict[str, Any]] | None = None,
    **top: Any,
) -> Settings:
    volumes: dict[str, Any] = {"max_size_gb": 200}
    if volumes_types is not None:
        volumes["types"] = volumes_types
    return make_settings(
        tmp_path,
        zones=[
            sim_zone("local", "local", hosts=2, volume_pool_gb=50, volume_shared=True),
            sim_zone("cloud", "virtual", expose_hosts=False, volume_pool_gb=500),
        ],
        policy=doc or policy(),
        tenants=[A, B],
        volumes=volumes,
        monitor={"vanish_grace_seconds": 0},
        **top,
    )


@pytest.fixture
def live(tmp_path: Path, live_broker_factory: Factory) -> LiveBroker:
    return live_broker_factory(settings(tmp_path))


def cinder(live: LiveBroker, project: str = ADMIN) -> str:
    return f"{live.url}/volume/v3/{project}"


def create(
    live: LiveBroker, client: httpx.Client | None = None, project: str = ADMIN, **volume: Any
) -> dict[str, Any]:
    r = (client or live.client).post(
        f"{cinder(live, project)}/volumes", json={"volume": {"size": 1, **volume}}
    )
    assert r.status_code == 202, r.text
    body: dict[str, Any] = r.json()["volume"]
    return body


def show(
    live: LiveBroker, vid: str, client: httpx.Client | None = None, project: str = ADMIN
) -> Any:
    r = (client or live.client).get(f"{cinder(live, project)}/volumes/{vid}")
    assert r.status_code == 200, r.text
    return r.json()["volume"]


def settled(live: LiveBroker, **volume: Any) -> dict[str, Any]:
    vid = create(live, **volume)["id"]
    live.wait_settled()
    return dict(show(live, vid))


def attach(live: LiveBroker, server: str, volume: str, **extra: Any) -> httpx.Response:
    return live.client.post(
        f"{live.compute}/servers/{server}/os-volume_attachments",
        json={"volumeAttachment": {"volumeId": volume, **extra}},
        headers={"X-OpenStack-Nova-API-Version": "2.60"},
    )


def listed(live: LiveBroker) -> list[dict[str, Any]]:
    r = live.client.get(f"{cinder(live)}/volumes/detail", params={"all_tenants": "1"})
    assert r.status_code == 200, r.text
    volumes: list[dict[str, Any]] = r.json()["volumes"]
    return volumes


# --- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("volume", "field"),
    [
        ({"size": 0}, "volume.size"),
        ({"size": -1}, "volume.size"),
        ({"size": 201}, "volume.size"),
        ({"size": "ten"}, "volume.size"),
        ({"size": 1, "volume_type": "gold"}, "volume.volume_type"),
        ({"size": 1, "availability_zone": "nowhere"}, "volume.availability_zone"),
        ({"size": 1, "name": "x" * 256}, "volume.name"),
        ({"size": 1, "snapshot_id": "1f0e9f2c-2222-4444-8888-000000000000"}, "snapshot_id"),
        ({"size": 1, "shape": "round"}, "volume.shape"),
    ],
)
def test_bad_creates_answer_400_naming_the_field_and_create_nothing(
    live: LiveBroker, volume: dict[str, Any], field: str
) -> None:
    r = live.client.post(f"{cinder(live)}/volumes", json={"volume": volume})
    assert r.status_code == 400, r.text
    assert field in r.text
    live.wait_settled()
    assert listed(live) == []


def test_a_body_without_volume_and_unknown_ids_are_refused(live: LiveBroker) -> None:
    r = live.client.post(f"{cinder(live)}/volumes", json={"size": 1})
    assert r.status_code == 400 and "volume" in r.text
    missing = "1f0e9f2c-2222-4444-8888-000000000000"
    assert live.client.get(f"{cinder(live)}/volumes/{missing}").status_code == 404
    assert live.client.delete(f"{cinder(live)}/volumes/{missing}").status_code == 404
    server = boot_settled(live, "vm")["id"]
    r = attach(live, server, missing)
    assert r.status_code == 404 and missing in r.text
    assert listed(live) == []


# --- lifecycle rules ----------------------------------------------------------------------


def test_statuses_follow_cinder_rules(live: LiveBroker) -> None:
    vol = create(live, name="data", metadata={"tier": "db"})
    assert vol["status"] == "creating"
    live.wait_settled()
    vol = show(live, vol["id"])
    assert (vol["status"], vol["availability_zone"], vol["metadata"]) == (
        "available",
        "local",
        {"tier": "db"},
    )
    server = boot_settled(live, "vm", availability_zone="local")
    r = attach(live, server["id"], vol["id"])
    assert r.status_code == 200, r.text
    assert r.json()["volumeAttachment"]["device"] == "/dev/vdb"
    assert show(live, vol["id"])["status"] in ("attaching", "in-use")
    live.wait_settled()
    attached = show(live, vol["id"])
    assert attached["status"] == "in-use"
    assert [(a["server_id"], a["device"]) for a in attached["attachments"]] == [
        (server["id"], "/dev/vdb")
    ]
    shown = live.client.get(
        f"{live.compute}/servers/{server['id']}", headers={"X-OpenStack-Nova-API-Version": "2.3"}
    ).json()["server"]
    assert shown["os-extended-volumes:volumes_attached"] == [
        {"id": vol["id"], "delete_on_termination": False}
    ]
    # Deleting an in-use volume: 400, and it stays attached.
    r = live.client.delete(f"{cinder(live)}/volumes/{vol['id']}")
    assert r.status_code == 400 and "in-use" in r.text
    assert show(live, vol["id"])["status"] == "in-use"
    # Attaching it again to the same server: 409; to a second server: 400.
    assert attach(live, server["id"], vol["id"]).status_code == 409
    other = boot_settled(live, "vm2", availability_zone="local")
    r = attach(live, other["id"], vol["id"])
    assert r.status_code == 400 and "attached to server" in r.text, r.text
    live.wait_settled()
    assert [a["server_id"] for a in show(live, vol["id"])["attachments"]] == [server["id"]]

    r = live.client.delete(
        f"{live.compute}/servers/{server['id']}/os-volume_attachments/{vol['id']}"
    )
    assert r.status_code == 202, r.text
    live.wait_settled()
    assert show(live, vol["id"])["status"] == "available"
    r = live.client.delete(f"{cinder(live)}/volumes/{vol['id']}")
    assert r.status_code == 202
    live.wait_settled()
    assert live.client.get(f"{cinder(live)}/volumes/{vol['id']}").status_code == 404


def test_a_device_taken_or_malformed_is_refused(live: LiveBroker) -> None:
    server = boot_settled(live, "vm", availability_zone="local")["id"]
    first, second = settled(live)["id"], settled(live)["id"]
    assert attach(live, server, first, device="/dev/vdc").status_code == 200
    live.wait_settled()
    r = attach(live, server, second, device="/dev/vdc")
    assert r.status_code == 409 and "/dev/vdc" in r.text, r.text
    r = attach(live, server, second, device="vdc; rm -rf /")
    assert r.status_code == 400 and "volumeAttachment.device" in r.text
    live.wait_settled()
    assert show(live, second)["status"] == "available"


def test_deleting_the_server_detaches_its_volumes(live: LiveBroker) -> None:
    server = boot_settled(live, "vm", availability_zone="local")["id"]
    vol = settled(live)["id"]
    assert attach(live, server, vol).status_code == 200
    live.wait_settled()
    assert live.client.delete(f"{live.compute}/servers/{server}").status_code == 204
    live.wait_settled()
    after = show(live, vol)
    assert (after["status"], after["attachments"]) == ("available", [])
    storage = live.broker.drivers["local"].block_storage()
    assert storage is not None and storage.get_volume(vol).attachments == ()


def test_multiattach_needs_a_zone_that_can_and_microversion_2_60(live: LiveBroker) -> None:
    vol = settled(live, multiattach=True)
    assert vol["multiattach"] is True and vol["status"] == "available"
    one = boot_settled(live, "one", availability_zone=vol["availability_zone"])["id"]
    two = boot_settled(live, "two", availability_zone=vol["availability_zone"])["id"]
    old = live.client.post(
        f"{live.compute}/servers/{one}/os-volume_attachments",
        json={"volumeAttachment": {"volumeId": vol["id"]}},
        headers={"X-OpenStack-Nova-API-Version": "2.59"},
    )
    assert old.status_code == 400 and "2.60" in old.text
    assert attach(live, one, vol["id"]).status_code == 200
    live.wait_settled()
    assert attach(live, two, vol["id"]).status_code == 200
    live.wait_settled()
    shown = show(live, vol["id"])
    assert shown["status"] == "in-use"
    assert sorted(a["server_id"] for a in shown["attachments"]) == sorted([one, two])


# --- availability zones -------------------------------------------------------------------


def test_cross_az_attach_answers_400_naming_both_zones_and_changes_nothing(
    live: LiveBroker,
) -> None:
    local_vol = settled(live, availability_zone="local")
    cloud_vol = settled(live, availability_zone="cloud")
    assert (local_vol["availability_zone"], cloud_vol["availability_zone"]) == ("local", "cloud")
    local_vm = boot_settled(live, "here", availability_zone="local")["id"]
    cloud_vm = boot_settled(live, "there", availability_zone="cloud")["id"]
    for server, vol in ((local_vm, cloud_vol["id"]), (cloud_vm, local_vol["id"])):
        r = attach(live, server, vol)
        assert r.status_code == 400, r.text
        assert "'local'" in r.text and "'cloud'" in r.text
    live.wait_settled()
    for vol in (local_vol, cloud_vol):
        shown = show(live, vol["id"])
        assert (shown["status"], shown["attachments"]) == ("available", [])
    for server in (local_vm, cloud_vm):
        r = live.client.get(f"{live.compute}/servers/{server}/os-volume_attachments")
        assert r.json()["volumeAttachments"] == []


def test_availability_zones_and_types_are_listed(live: LiveBroker) -> None:
    r = live.client.get(f"{cinder(live)}/os-availability-zone")
    assert r.status_code == 200
    zones = {z["zoneName"]: z["zoneState"]["available"] for z in r.json()["availabilityZoneInfo"]}
    assert zones == {"local": True, "cloud": True}
    types = live.client.get(f"{cinder(live)}/types").json()["volume_types"]
    assert [t["name"] for t in types] == ["__DEFAULT__"]
    # GET /types/default came with 3.62.
    assert live.client.get(f"{cinder(live)}/types/default").status_code == 404
    r = live.client.get(
        f"{cinder(live)}/types/default", headers={"OpenStack-API-Version": "volume 3.62"}
    )
    assert r.status_code == 200 and r.headers["OpenStack-API-Version"] == "volume 3.62"
    assert r.json()["volume_type"]["id"] == types[0]["id"]


# --- placement ----------------------------------------------------------------------------


def test_a_volume_no_pool_can_take_is_error_with_the_fault_and_explained(
    tmp_path: Path, live_broker_factory: Factory
) -> None:
    doc = policy(zones={"local": {}})  # no overflow
    live = live_broker_factory(settings(tmp_path, doc))
    vol = settled(live, size=60)  # the pools hold 50 GB each
    assert vol["status"] == "error"
    fault = vol["fault"]
    assert fault["code"] == "federator.placement.no_valid_host"
    assert "60 GB" in " ".join(fault["details"])
    r = live.client.post(f"{live.url}/federator/v1/policy/explain", json={"volume": {"size": 60}})
    assert r.status_code == 200, r.text
    ex = r.json()["explain"]
    assert ex["decision"] is None and ex["fault"] == "federator.placement.no_valid_host"
    (local,) = [z for z in ex["zones"] if z["zone"] == "local"]
    assert local["pools"] == [] and "no pool has 60 GB free" in local["detail"]
    # Nothing was claimed, and the failed volume can be deleted.
    assert sum(p["used_gb"] for p in pools(live)) == 0
    assert live.client.delete(f"{cinder(live)}/volumes/{vol['id']}").status_code == 202
    live.wait_settled()
    assert listed(live) == []


def test_storage_thresholds_overflow_to_the_cloud_and_back(
    tmp_path: Path, live_broker_factory: Factory
) -> None:
    doc = policy()
    doc["zones"]["local"]["thresholds"] = {"gb_percent": {"high": 50, "low": 25}}
    live = live_broker_factory(settings(tmp_path, doc))
    first = settled(live, size=30)
    second = settled(live, size=30)  # 60/100 GB would cross 50%: to the cloud
    assert (first["availability_zone"], second["availability_zone"]) == ("local", "cloud")
    small = settled(live, size=1)  # bursting until local falls below 25%
    assert small["availability_zone"] == "cloud"
    live.client.delete(f"{cinder(live)}/volumes/{first['id']}")
    live.wait_settled()
    assert settled(live, size=1)["availability_zone"] == "local"


def pools(live: LiveBroker) -> list[dict[str, Any]]:
    from sqlalchemy import select

    from federator.storage.models import StoragePool

    with live.broker.dbs.api.read() as s:
        return [
            {"name": p.name, "used_gb": p.used_gb, "volumes": p.volumes}
            for p in s.scalars(select(StoragePool))
        ]


# --- tenancy ------------------------------------------------------------------------------


def test_projects_see_only_their_own_volumes(live: LiveBroker) -> None:
    a, b = live.member(A), live.member(B)
    mine = create(live, a, A, name="a-vol")
    create(live, b, B, name="b-vol")
    live.wait_settled()
    names = [v["name"] for v in a.get(f"{cinder(live, A)}/volumes").json()["volumes"]]
    assert names == ["a-vol"]
    assert b.get(f"{cinder(live, B)}/volumes/{mine['id']}").status_code == 404
    assert b.delete(f"{cinder(live, B)}/volumes/{mine['id']}").status_code == 404
    # Another project's path: refused, whatever the token.
    assert a.get(f"{cinder(live, B)}/volumes").status_code in (401, 403)
    server_b = boot_as(live, B, "b-vm")["id"]
    r = b.post(
        f"{live.compute}/servers/{server_b}/os-volume_attachments",
        json={"volumeAttachment": {"volumeId": mine["id"]}},
    )
    assert r.status_code == 404
    assert show(live, mine["id"], a, A)["status"] == "available"


def test_list_filters_and_pages(live: LiveBroker) -> None:
    ids = [create(live, name=f"v{n}")["id"] for n in range(5)]
    live.wait_settled()
    r = live.client.get(f"{cinder(live)}/volumes", params={"name": "v3"})
    assert [v["id"] for v in r.json()["volumes"]] == [ids[3]]
    r = live.client.get(f"{cinder(live)}/volumes/detail", params={"status": "available"})
    assert len(r.json()["volumes"]) == 5
    first = live.client.get(f"{cinder(live)}/volumes", params={"limit": 2}).json()
    assert len(first["volumes"]) == 2 and first["volumes_links"][0]["rel"] == "next"
    rest = live.client.get(
        f"{cinder(live)}/volumes", params={"marker": first["volumes"][-1]["id"]}
    ).json()["volumes"]
    assert {v["id"] for v in first["volumes"]} | {v["id"] for v in rest} == set(ids)
    assert not {v["id"] for v in first["volumes"]} & {v["id"] for v in rest}
    # with_count (3.45) counts every match, not the page.
    counted = live.client.get(
        f"{cinder(live)}/volumes",
        params={"limit": 2, "with_count": "true"},
        headers={"OpenStack-API-Version": "volume 3.45"},
    ).json()
    assert (len(counted["volumes"]), counted["count"]) == (2, 5)


# --- the monitor ----------------------------------------------------------------------------


def test_a_volume_deleted_behind_the_brokers_back_is_error_vanished(live: LiveBroker) -> None:
    vol = settled(live, availability_zone="cloud")
    storage = live.broker.drivers["cloud"].block_storage()
    assert storage is not None
    assert storage.ex_vanish(vol["id"]) is True  # type: ignore[attr-defined]
    report = sync_volumes(live.broker.ctx, "cloud")
    assert report.vanished == 1, report.summary()
    shown = show(live, vol["id"])
    assert shown["status"] == "error"
    assert shown["fault"]["code"] == "federator.monitor.vanished"
    assert sync_volumes(live.broker.ctx, "cloud").vanished == 0  # once
    assert sum(p["used_gb"] for p in pools(live)) == 0


def test_a_tagged_untracked_volume_is_an_orphan(
    tmp_path: Path, live_broker_factory: Factory
) -> None:
    doc = policy(orphans={"action": "delete", "min_age_seconds": 0})
    live = live_broker_factory(settings(tmp_path, doc))
    storage = live.broker.drivers["cloud"].block_storage()
    assert storage is not None
    orphan = storage.ex_add_untracked(3)  # type: ignore[attr-defined]
    kept = settled(live, availability_zone="cloud")
    report = sync_volumes(live.broker.ctx, "cloud")
    assert report.orphans == 1, report.summary()
    remaining = [v.uuid for b in storage.list_volumes() for v in b]
    assert remaining == [kept["id"]]
    events = [e for e in list_events(live.broker.dbs.api) if e.kind == "orphan"]
    assert any(orphan in (e.detail or "") or orphan == e.instance_uuid for e in events)


# --- volume types -----------------------------------------------------------------------------


def test_a_type_offered_in_one_zone_places_there_and_is_refused_elsewhere(
    tmp_path: Path, live_broker_factory: Factory
) -> None:
    types = [
        {"name": "__DEFAULT__"},
        {"name": "burst", "description": "cloud only", "backends": {"cloud": "ssd"}},
    ]
    live = live_broker_factory(settings(tmp_path, None, volumes_types=types))
    listed_types = live.client.get(f"{cinder(live)}/types").json()["volume_types"]
    by_name = {t["name"]: t for t in listed_types}
    assert set(by_name) == {"__DEFAULT__", "burst"}
    assert by_name["burst"]["description"] == "cloud only"
    shown = live.client.get(f"{cinder(live)}/types/{by_name['burst']['id']}")
    assert shown.status_code == 200 and shown.json()["volume_type"]["name"] == "burst"

    vol = settled(live, volume_type="burst")  # no zone asked: the type decides
    assert (vol["volume_type"], vol["availability_zone"]) == ("burst", "cloud")
    by_id = settled(live, volume_type=by_name["burst"]["id"])
    assert by_id["volume_type"] == "burst"
    r = live.client.post(
        f"{cinder(live)}/volumes",
        json={"volume": {"size": 1, "volume_type": "burst", "availability_zone": "local"}},
    )
    assert r.status_code == 400 and "volume.volume_type" in r.text and "'local'" in r.text
    assert len(listed(live)) == 2
