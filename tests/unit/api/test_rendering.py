"""Answers rendered in the handler's thread: compact UTF-8 JSON, never a value JSON
cannot carry."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import pytest

from federator.api.rendering import json_response


def test_compact_utf8_json_with_the_status_asked() -> None:
    r = json_response({"server": {"name": "vé-1", "n": [1, 2]}}, status_code=202)
    assert r.status_code == 202
    assert r.media_type == "application/json"
    assert r.body == '{"server":{"name":"vé-1","n":[1,2]}}'.encode()
    assert json.loads(r.body) == {"server": {"name": "vé-1", "n": [1, 2]}}


@pytest.mark.parametrize(
    "bad", [{"x": math.nan}, {"x": math.inf}, {"when": datetime.now(UTC)}, {"s": {1, 2}}]
)
def test_a_value_json_cannot_carry_is_an_error_not_a_silent_answer(bad: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        json_response(bad)
