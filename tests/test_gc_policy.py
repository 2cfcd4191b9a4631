"""The GC policy (relay/gc_policy.py) freezes survivors; that is safe only if the relay
leaves no reference cycles behind when connections, participants and rooms go away.

The test freezes after every step — the worst case for the policy — drives churn through
a real server (joins, chats, refused events, leaves, aborted sockets, 4003 replacements,
resumes, a room closed with people in it), then unfreezes and collects with
``DEBUG_SAVEALL``: no object of the relay's own classes may turn up as cyclic garbage.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
import trio
import trio.testing

from relay.gc_policy import sweep
from tests.conftest import StartRelay
from tests.support import RawClient, wait_until


@pytest.fixture
def frozen() -> Iterator[None]:
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_debug(0)
        gc.garbage.clear()


def relay_garbage() -> list[str]:
    """Unfreeze, collect everything, and name the relay objects found in cycles."""
    gc.unfreeze()
    gc.set_debug(gc.DEBUG_SAVEALL)
    gc.collect()
    names = sorted({type(o).__qualname__ for o in gc.garbage
                    if type(o).__module__.split(".")[0] in ("relay", "signaling", "stats_web")})
    gc.set_debug(0)
    gc.garbage.clear()
    return names


async def test_churn_leaves_no_cycles_among_frozen_objects(
        start_relay: StartRelay, frozen: None) -> None:
    relay = await start_relay()
    host, room = await relay.host()
    gc.freeze()
    for round_ in range(20):
        student, creds = await relay.student(room["room_id"], f"s{round_}")
        gc.freeze()
        await student.ok("message/to_mentor", {"content": "hi"})
        await host.ok("message/to_client", {"user_id": creds["user_id"], "content": "yo"})
        # Refused input: errors are values, nothing may hold on to the handlers' frames.
        await student.fail("message/to_mentor", {"content": 5}, "invalid_payload")
        await student.fail("room/kill", {"user_id": 1}, "not_host")
        await student.send_raw("{not json")
        assert (await student.expect("error"))["data"]["code"] == "bad_json"
        gc.freeze()
        if round_ % 4 == 0:
            await student.ok("room/leave", {})
            await student.aclose()
        elif round_ % 4 == 1:
            # Replaced (4003) by a resume on a new connection, which then drops.
            again = await relay.client()
            await again.ok("room/rejoin", {**creds, "last_seq": 0})
            assert await student.closed() == 4003
            await again.aclose()
        elif round_ % 4 == 2:
            # A socket that just vanishes (no close frame).
            raw = await RawClient.connect(relay.server.relay_port)
            frames = await raw.call("room/rejoin", {**creds, "last_seq": 0})
            assert frames[-1]["data"] == {"ok": True}, frames
            gc.freeze()
            await raw.aclose()
            await student.closed()
        else:
            await student.aclose()
        gc.freeze()
        # The round's connections are gone (the host's is left) and their tasks done.
        await wait_until(lambda: len(relay.server.connections) == 1)
        await trio.testing.wait_all_tasks_blocked()
    await host.ok("room/close", {})
    await host.aclose()  # v2 (§6.1): room/close leaves the host's connection open
    await wait_until(lambda: not relay.server.connections)
    await trio.testing.wait_all_tasks_blocked()
    assert relay_garbage() == []


def test_sweep_collects_frozen_cycles(frozen: None) -> None:
    class Node:
        pass

    a, b = Node(), Node()
    a.other, b.other = b, a  # type: ignore[attr-defined]
    gc.freeze()
    del a, b
    assert sweep() >= 2
    assert gc.get_freeze_count() > 0  # frozen again afterwards
