"""Rendering for the client commands: rich tables for people, the API's JSON for scripts.

Everything goes through ``out_console`` (soft wrap on). Cell text is never read as rich
markup, so names and messages holding ``[brackets]`` print as they are. When output is not a
terminal, tables keep their natural width instead of folding cells, so each row stays on
one line for ``grep`` and friends.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Annotated, Any

import typer
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from federator.cli.common import out_console

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the API's JSON instead of a table.")]
NONE = "-"
_NATURAL_WIDTH = 10_000


def emit_json(data: Any) -> None:
    """Print ``data`` as indented JSON, exactly as decoded from the API."""
    out_console.print_json(json.dumps(data), highlight=False)


def say(text: str) -> None:
    """One plain line (no markup)."""
    out_console.print(text, markup=False, highlight=False)


def heading(text: str) -> None:
    out_console.print(Text(text, style="bold"))


def number(value: float | int) -> str:
    """``75.0`` as ``75``, ``3.14159`` as ``3.1``."""
    if isinstance(value, float):
        return f"{value:.1f}".removesuffix(".0")
    return str(value)


def percent(value: float | int | None) -> str:
    return NONE if value is None else f"{number(value)}%"


def text(value: Any) -> str:
    """A value as one cell: ``-`` for nothing, ids for linked references, compact JSON for
    other mappings and lists."""
    if value is None or value == "":
        return NONE
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return number(value)
    if isinstance(value, Mapping) and "id" in value and "links" in value:
        return str(value["id"])
    if isinstance(value, Mapping | list | tuple):
        if not value:
            return NONE
        return json.dumps(value, separators=(", ", ": "), default=str)
    return str(value)


def key_values(pairs: Mapping[str, Any]) -> str:
    """``a=1, b=2``, skipping empty values; ``-`` when nothing is left."""
    shown = [f"{k}={text(v)}" for k, v in pairs.items() if v is not None]
    return ", ".join(shown) or NONE


def new_table(*columns: str, title: str | None = None) -> Table:
    table = Table(title=title, title_justify="left", highlight=False)
    for name in columns:
        table.add_column(name, overflow="fold")
    return table


def add_row(table: Table, *cells: Any) -> None:
    table.add_row(*(c if isinstance(c, Text) else Text(text(c)) for c in cells))


def print_table(table: Table) -> None:
    if not out_console.is_terminal:
        natural = Measurement.get(
            out_console, out_console.options.update_width(_NATURAL_WIDTH), table
        ).maximum
        if natural > out_console.width:
            table.width = natural
    out_console.print(table)


def print_fields(rows: Iterable[tuple[str, Any]], title: str | None = None) -> None:
    """A two-column table: field, value."""
    table = new_table("Field", "Value", title=title)
    for name, value in rows:
        add_row(table, name, value)
    print_table(table)
