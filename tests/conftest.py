"""Shared fixtures: a real relay server in the test nursery."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from relay.app import run_node
from tests.support import Relay, StartRelay, make_config


@pytest.fixture
async def start_relay(nursery: trio.Nursery) -> StartRelay:
    async def start(**overrides: Any) -> Relay:
        server = await nursery.start(run_node, make_config(**overrides))
        return Relay(server, nursery)

    return start


@pytest.fixture
async def relay(start_relay: StartRelay) -> Relay:
    return await start_relay()
