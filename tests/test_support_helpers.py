"""The shared helpers of tests/support.py can fail: a sentinel reports what came before it.

A helper that proves absence is only worth something if it notices presence; these tests
leave a frame pending on purpose and check that the sentinel finds it, on every framing.
"""

from __future__ import annotations

import pytest
import trio

from tests.support import (
    SENTINEL_EVENT,
    Relay,
    SioRaw,
    StartRelay,
    classroom,
    classroom_joined,
    nothing_before_sentinel,
    open_classroom,
    wait_until,
)


async def test_sentinel_reports_a_pending_frame(relay: Relay) -> None:
    host, _, (ann,) = await classroom(relay, "Ann")
    await host.ok("message/to_client", {"user_id": 2, "content": "pending"})
    before = await ann.sentinel()
    assert [(f["event"], f["data"]["content"]) for f in before] == [
        ("message/to_client", "pending")]
    await ann.nothing_before_sentinel()  # the pending frame was consumed by the first one
    await host.ok("message/to_client", {"user_id": 2, "content": "again"})
    with pytest.raises(AssertionError, match="unexpected frames before the sentinel"):
        await ann.nothing_before_sentinel()


async def test_sentinel_order_covers_unacknowledged_events_of_earlier_clients(
        relay: Relay) -> None:
    """``nothing_before_sentinel(ann, host)``: ann's sentinel is answered after ann's
    earlier event was handled, so the host's sentinel comes after what that caused."""
    host, _, (ann,) = await classroom(relay, "Ann")
    await ann.send("message/to_mentor", {"content": "no ack asked"})
    with pytest.raises(AssertionError, match="message/to_mentor"):
        await nothing_before_sentinel(ann, host)


async def test_sentinel_is_answered_on_unbound_and_ws_connections(relay: Relay) -> None:
    unbound = await relay.client()
    await unbound.nothing_before_sentinel()
    host = await relay.client("/ws")
    await host.send_json({"type": "CREATE_ROOM", "username": "t"})
    room = (await host.recv())["roomid"]
    user = await relay.client("/ws/")
    await user.send_json({"type": "JOIN_ROOM", "roomid": room, "username": "u"})
    assert (await user.recv())["type"] == "ROOM_JOINED"
    assert await host.sentinel() == [{"type": "USER_JOINED", "username": "u"}]
    await nothing_before_sentinel(user, host, unbound)


async def test_socketio_sentinel_reports_a_pending_packet(relay: Relay) -> None:
    host, _ = await SioRaw.open(relay)
    frames = await host.call("room/create", {"name": "T"})
    room_id = frames[0][1]["room_id"]
    await host.nothing_before_sentinel()
    student, _ = await SioRaw.open(relay)
    await student.call("room/join", {"room_id": room_id, "name": "Ann"})
    before = await host.sentinel()
    assert [p[:16] for p in before] == ['42["room/update"']
    await host.send(f'42["{SENTINEL_EVENT}",{{}}]')  # no ack id: just the error
    assert (await host.event())[1]["event"] == SENTINEL_EVENT
    await nothing_before_sentinel(host, student)


async def test_classroom_helpers_agree(relay: Relay) -> None:
    host, room, students = await classroom_joined(relay, "Ann", "Bob")
    assert [joined["user_id"] for _, joined in students] == [2, 3]
    assert all(joined["room_id"] == room["room_id"] for _, joined in students)
    host2, room2, (ann,) = await open_classroom(relay, "Ann")
    assert set(room2) == {"room_id", "user_id", "token", "stats_key"}
    host3, room_id, (bob,) = await classroom(relay, "Bob")
    assert isinstance(room_id, int)
    await nothing_before_sentinel(host, *(s for s, _ in students), host2, ann, host3, bob)


async def test_wait_until(autojump_clock: trio.abc.Clock) -> None:
    start = trio.current_time()
    flags: list[int] = []

    async def later() -> None:
        await trio.sleep(3.0)
        flags.append(1)

    async def async_check() -> bool:
        return bool(flags)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(later)
        await wait_until(async_check)
    assert trio.current_time() - start >= 3.0
    await wait_until(lambda: True)
    with pytest.raises(trio.TooSlowError):
        await wait_until(lambda: False, timeout=1.0)


async def test_autojump_clock_drives_the_relay_timers(start_relay: StartRelay,
                                                      autojump_clock: trio.abc.Clock) -> None:
    """The in-process relay runs on Trio's clock: with ``autojump_clock`` a quarter of an
    hour of idle expiry passes in no real time, and its connections keep answering."""
    relay = await start_relay(room_idle_expiry=900.0)
    host, room = await relay.host()
    watcher = await relay.client()
    await host.aclose()
    await trio.sleep(901.0)  # heartbeats every 20 s: trio-websocket answers them
    await watcher.fail("room/rehost", {"room_id": room["room_id"], "user_id": 1,
                                       "token": room["token"]}, "room_not_found")
