"""Fixtures of the monitor job tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.unit.monitor.rig import Rig, open_broker

RigFactory = Callable[..., Rig]


@pytest.fixture
def make_rig(tmp_path: Path) -> Iterator[RigFactory]:
    """Opens a broker (see ``open_broker``); stopped at the end of the test."""
    opened: list[Rig] = []

    def make(**options: Any) -> Rig:
        rig = Rig(open_broker(tmp_path, **options))
        opened.append(rig)
        return rig

    yield make
    for rig in opened:
        rig.broker.stop()


@pytest.fixture
def rig(make_rig: RigFactory) -> Rig:
    return make_rig()
