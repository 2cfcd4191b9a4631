"""§2 limits: message size, rate limit, slow consumers and heartbeats, over real sockets.

Rate limits and heartbeats run on the autojump clock: no token comes back and no ping is
due while the test is busy, and waiting for a timer takes no real time.
"""

from __future__ import annotations

import json

import trio
from trio_websocket import ConnectionClosed

from tests.support import RawClient, StartRelay


async def test_oversize_message_closes_1009(start_relay: StartRelay) -> None:
    relay = await start_relay(max_message_size=1000)
    client = await relay.client()
    await client.send_raw(json.dumps({"event": "room/create", "data": {"name": "x" * 900}})
                          .ljust(1000))
    assert (await client.recv())["event"] in ("error", "room/created")
    other = await relay.client()
    await other.send_raw("x" * 1001)
    assert await other.closed() == 1009


async def test_flood_rate_limited_then_4008(start_relay: StartRelay,
                                           autojump_clock: trio.abc.Clock) -> None:
    relay = await start_relay(rate_limit_rate=5, rate_limit_burst=5, rate_limit_close_after=1)
    client = await relay.client()
    flood_start = trio.current_time()
    for ref in range(1, 11):
        await client.send("rtc/config", {}, ref)
    frames = [await client.recv() for _ in range(5 * 2 + 1 + 5)]
    # Five accepted (each: not_in_room error + failed ack), then one rate_limited error
    # and a failed rate_limited ack for each of the five dropped frames.
    codes = [f["data"]["code"] for f in frames if f["event"] == "error"]
    assert codes.count("not_in_room") == 5 and codes.count("rate_limited") == 1
    acks = [f for f in frames if f["event"] == "ack"]
    assert [a["ref"] for a in acks] == list(range(1, 11))
    assert [a["data"]["error"]["code"] for a in acks[5:]] == ["rate_limited"] * 5
    # Keep flooding (while reading): after close_after seconds of drops, close 4008.
    async def flood() -> None:
        try:
            while True:
                await client.send("rtc/config", {})
                await trio.sleep(0.01)
        except ConnectionClosed:
            pass

    async with trio.open_nursery() as nursery:
        nursery.start_soon(flood)
        assert await client.closed(timeout=5) == 4008
    # Not before: the flood period began with the first drop, at the start.
    assert trio.current_time() - flood_start >= 1.0


async def test_rate_limit_error_at_most_once_per_second(
        start_relay: StartRelay, autojump_clock: trio.abc.Clock) -> None:
    relay = await start_relay(rate_limit_rate=1, rate_limit_burst=1, rate_limit_close_after=60)
    client = await relay.client()
    for _ in range(20):
        await client.send("rtc/config", {})
    codes = [(await client.recv())["data"]["code"] for _ in range(2)]
    assert codes == ["not_in_room", "rate_limited"]
    await trio.sleep(1.0)  # one token for the sentinel
    await client.nothing_before_sentinel()  # the other 18 drops: no error
    # A second after the last error, a drop gets one again (and again only one).
    for _ in range(5):
        await client.send("rtc/config", {})
    error = await client.expect("error")
    assert error["data"]["code"] == "rate_limited"
    await trio.sleep(1.0)
    await client.nothing_before_sentinel()


async def test_slow_consumer_4002_then_resume_loses_nothing(start_relay: StartRelay) -> None:
    relay = await start_relay(send_queue_frames=50, send_queue_bytes=200_000,
                              replay_events=5000, replay_bytes=64 * 1024 * 1024,
                              rate_limit_rate=100_000, rate_limit_burst=100_000)
    host, room = await relay.host()
    student = await RawClient.connect(relay.server.relay_port, rcvbuf=4096)
    await student.send("room/join", {"room_id": room["room_id"], "name": "Slow"}, ref=1)
    joined = await student.frames(count=3)
    assert joined[-1] == {"event": "ack", "ref": 1, "data": {"ok": True}}
    creds = joined[0]["data"]
    await host.expect("room/update")

    # The student stops reading; the host floods it with ~8 KB messages.
    content = "x" * 8000
    sent = 0

    def closing_codes() -> list[int | None]:
        return [c.close_code for c in relay.server.connections]

    with trio.fail_after(20):
        while 4002 not in closing_codes():
            await host.send("message/to_client", {"user_id": 2, "content": f"{sent}:{content}"})
            sent += 1
            if sent % 50 == 0:
                await host.ok("steps/table", {})
    # The server gave up on the student instead of buffering without bound.
    conn = next(c for c in relay.server.connections if c.close_code == 4002)
    assert conn._queue_bytes <= 200_000
    # While it is offline, the host goes on: more than the outgoing queue could hold.
    for extra in range(200):
        await host.send("message/to_client", {"user_id": 2, "content": f"{sent + extra}:late"})
    await host.ok("steps/table", {})
    total = sent + 200

    # The student now reads what reached it before the close...
    got = [f for f in await student.frames(timeout=10, until_closed=True)
           if f["event"] == "message/to_client"]
    assert student.close_code == 4002
    update = await host.expect("room/update")
    assert update["data"]["users"][1]["status"] == "offline"
    seqs = [f["seq"] for f in got]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    last_seq = seqs[-1]
    # ...and resumes with last_seq: everything else arrives, in order, exactly once.
    again = await relay.client()
    again.last_seq = last_seq
    frames = await again.call("room/rejoin", {**creds, "last_seq": last_seq})
    assert frames[-1]["data"] == {"ok": True}
    got += [f for f in frames if f["event"] == "message/to_client"]
    numbers = [int(f["data"]["content"].split(":")[0]) for f in got]
    assert numbers == list(range(total))
    assert total - len(seqs) > 50  # the replay was longer than the outgoing queue bound


async def test_heartbeat_timeout_4004(start_relay: StartRelay,
                                     autojump_clock: trio.abc.Clock) -> None:
    relay = await start_relay(heartbeat_interval=20.0, heartbeat_timeout=10.0)
    # A RawClient never answers pings (wsproto leaves that to its user).
    silent = await RawClient.connect(relay.server.relay_port)
    opened = trio.current_time()
    await silent.frames(timeout=60.0, until_closed=True)
    assert silent.close_code == 4004
    # The first ping comes in the second half of the interval, then the timeout runs.
    assert 10.0 + 10.0 <= trio.current_time() - opened <= 20.0 + 10.0 + 0.1
    # A client that answers pings (trio-websocket does) stays connected.
    alive = await relay.client()
    await trio.sleep(200.0)  # ten intervals
    await alive.ok("room/create", {})
