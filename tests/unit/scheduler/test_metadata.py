"""Aggregate metadata as masks: built once per table, combined by the aggregate filters."""

from __future__ import annotations

import math

import numpy as np

from federator.scheduler.metadata import MetadataColumns, split_values
from tests.unit.scheduler.factory import row, table


def test_split_values_splits_commas_and_drops_blanks() -> None:
    assert split_values({"a, b", "c", " ", ""}) == {"a", "b", "c"}
    assert split_values(()) == frozenset()


def test_masks_per_key_and_value() -> None:
    cols = MetadataColumns(
        [
            {"ssd": frozenset({"true"})},
            {"ssd": frozenset({"false"}), "gpu": frozenset({"a100,h100"})},
            {},
            {"ssd": frozenset({""})},  # an empty value is no value
        ]
    )
    assert cols.keys == {"ssd", "gpu"}
    assert cols.has("ssd").tolist() == [True, True, False, False]
    assert cols.has("nope").tolist() == [False] * 4
    assert cols.value_is("ssd", "true").tolist() == [True, False, False, False]
    assert cols.value_is("gpu", "h100").tolist() == [False, True, False, False]
    assert cols.value_is("gpu", "a100,h100").tolist() == [False] * 4
    assert cols.any_value("ssd", ["true", "false"]).tolist() == [True, True, False, False]
    assert cols.any_value("ssd", ["maybe"]).tolist() == [False] * 4


def test_masks_are_read_only() -> None:
    cols = MetadataColumns([{"ssd": frozenset({"true"})}])
    for mask in (cols.has("ssd"), cols.value_is("ssd", "true"), cols.has("x"), cols.number("x")):
        assert not mask.flags.writeable


def test_number_takes_the_lowest_valid_value_per_host() -> None:
    cols = MetadataColumns(
        [
            {"r": frozenset({"2.5", "1.5"})},
            {"r": frozenset({"junk"})},
            {"r": frozenset({"inf"})},
            {},
            {"r": frozenset({"3,0.5"})},
        ]
    )
    got = cols.number("r")
    assert got.dtype == np.float64
    assert got[0] == 1.5 and got[4] == 0.5
    assert all(math.isinf(x) for x in got[1:4])
    assert cols.number("r") is got  # computed once per table


def test_keys_with_prefix() -> None:
    cols = MetadataColumns(
        [
            {"filter_tenant_id": frozenset({"a"})},
            {"filter_tenant_id2": frozenset({"b"}), "x": frozenset({"1"})},
        ]
    )
    assert cols.keys_with_prefix("filter_tenant_id") == ("filter_tenant_id", "filter_tenant_id2")
    assert cols.keys_with_prefix("zzz") == ()


def test_table_columns_follow_table_order() -> None:
    # Rows are regrouped by zone; the masks must index the table, not the input.
    t = table(
        row("b1", zone="zb", metadata={"ssd": frozenset({"true"})}),
        row("a1", zone="za"),
        row("b2", zone="zb"),
        row("a2", zone="za", metadata={"ssd": frozenset({"true"})}),
    )
    assert [t.name_at(i) for i in range(4)] == ["a1", "a2", "b1", "b2"]
    assert t.metadata.value_is("ssd", "true").tolist() == [False, True, True, False]
    assert t.metadata.has("ssd")[t.zone_slice("zb")].tolist() == [True, False]


def test_empty_table_has_empty_columns() -> None:
    t = table()
    assert t.metadata.has("ssd").shape == (0,)
    assert t.metadata.number("max_instances_per_host").shape == (0,)
