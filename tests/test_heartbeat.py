"""§2.4 heartbeats: the timing wheel, and pings of connections opened together spread out."""

from __future__ import annotations

import math

import trio
from wsproto.events import Ping

from relay.transport.heartbeat import HeartbeatWheel, first_ping_delay
from tests.conftest import StartRelay
from tests.support import RawClient


class Beat:
    """A connection stand-in that records when it was called and asks for ``every`` next."""

    def __init__(self, every: float = math.inf) -> None:
        self.hb_slot = 0
        self.every = every
        self.calls: list[float] = []

    def heartbeat(self, now: float) -> float:
        self.calls.append(now)
        return now + self.every


# Times are binary fractions of the tick so that float rounding plays no part.
def test_wheel_calls_only_due_connections_once_per_due_time() -> None:
    wheel = HeartbeatWheel(tick=0.25, slots=8)
    early, late = Beat(every=1.25), Beat()
    wheel.add(early, 0.625)
    wheel.add(late, 1.375)
    wheel.advance(0.5)
    assert early.calls == [] and late.calls == []
    wheel.advance(0.75)
    assert early.calls == [0.75] and late.calls == []
    wheel.advance(1.5)
    assert early.calls == [0.75] and late.calls == [1.5]
    assert len(wheel) == 1  # ``late`` asked for no further call
    wheel.advance(2.0)
    assert early.calls == [0.75, 2.0]


def test_wheel_keeps_far_connections_for_a_later_revolution() -> None:
    wheel = HeartbeatWheel(tick=0.25, slots=4)  # one revolution = 1 s
    far = Beat()
    wheel.add(far, 2.625)
    for step in range(1, 11):
        wheel.advance(step * 0.25)
    assert far.calls == []
    wheel.advance(2.75)
    assert far.calls == [2.75]


def test_wheel_catches_up_after_a_stall_and_forgets_discarded() -> None:
    wheel = HeartbeatWheel(tick=0.25, slots=4)
    beats = [Beat() for _ in range(10)]
    gone = Beat()
    for i, beat in enumerate(beats):
        wheel.add(beat, 0.25 + i * 0.125)
    wheel.add(gone, 0.5)
    wheel.discard(gone)
    wheel.discard(gone)  # twice is harmless
    wheel.advance(0.125)
    wheel.advance(12.5)  # the timer was late by many revolutions
    assert all(beat.calls == [12.5] for beat in beats)
    assert gone.calls == [] and len(wheel) == 0


def test_wheel_refiles_a_connection_due_again_within_the_same_tick() -> None:
    wheel = HeartbeatWheel(tick=0.25, slots=8)
    quick = Beat(every=0.0625)  # asks again before the tick is over
    wheel.add(quick, 0.25)
    wheel.advance(0.25)
    assert quick.calls == [0.25]
    wheel.advance(0.5)  # not lost for a revolution: called on the next advance
    assert quick.calls == [0.25, 0.5]


def test_first_ping_delay_is_in_the_second_half_of_the_interval() -> None:
    delays = [first_ping_delay(20.0) for _ in range(1000)]
    assert all(10.0 <= d <= 20.0 for d in delays)
    assert max(delays) - min(delays) > 5.0


async def first_ping(client: RawClient, start: float) -> float:
    while True:
        for event in client.ws.events():
            if isinstance(event, Ping):
                return trio.current_time() - start
        data = await client.stream.receive_some(65536)
        assert data, "closed before the first ping"
        client.ws.receive_data(data)


async def test_connections_opened_together_ping_at_spread_out_times(
        start_relay: StartRelay, autojump_clock: trio.abc.Clock) -> None:
    """Virtual time (autojump): the delays measured are the server's own, whatever the load."""
    relay = await start_relay(heartbeat_interval=1.0, heartbeat_timeout=5.0)
    tick = relay.server.heartbeat_wheel.tick
    clients: list[tuple[RawClient, float]] = []
    for _ in range(30):
        client = await RawClient.connect(relay.server.relay_port)
        clients.append((client, trio.current_time()))
    delays: list[float] = []

    async def watch(client: RawClient, start: float) -> None:
        delays.append(await first_ping(client, start))

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            for client, start in clients:
                nursery.start_soon(watch, client, start)
    # Every first ping in the second half of the interval (up to a wheel tick late),
    # and not all in the same instant.
    assert all(0.5 <= d <= 1.0 + tick + 1e-9 for d in delays), delays
    assert max(delays) - min(delays) > 0.15, delays
    for client, _ in clients:
        await client.aclose()
