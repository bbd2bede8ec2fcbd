"""Validation problems and the JSON paths that locate them.

A problem is reported as ``{"path": "$.zones.local.overflow[1]", "message": "..."}``
(plus ``line`` and ``column`` for JSON syntax errors), the shape carried by
:class:`federator.exception.PolicyInvalid`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")

PathPart = str | int


def json_path(parts: Iterable[PathPart]) -> str:
    """Render a location as a JSON path.

    Keys made of letters, digits, ``_`` and ``-`` use dot notation (``$.zones.aws-standin``);
    any other key is quoted in brackets (``$.rules[0].match.flavors``, ``$["$schema"]``,
    ``$.zones["eu.west"]``).
    """
    out = ["$"]
    for part in parts:
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif _PLAIN_KEY.match(part):
            out.append(f".{part}")
        else:
            out.append(f"[{json.dumps(part)}]")
    return "".join(out)


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a policy document."""

    path: str
    message: str
    line: int | None = None
    column: int | None = None

    @classmethod
    def at(cls, parts: Iterable[PathPart], message: str) -> Problem:
        return cls(json_path(parts), message)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "message": self.message}
        if self.line is not None:
            out["line"] = self.line
            out["column"] = self.column
        return out
