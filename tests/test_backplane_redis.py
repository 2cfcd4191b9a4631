"""The Redis backplane layer against a real redis-server (tests/redis_server.py).

Short TTLs/intervals keep the whole module to a few seconds; every server is private
(127.0.0.1, free port, no persistence).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import coredis
import pytest
import trio

from relay.backplane.redis import BackplaneUnavailable, RedisBackplane, open_redis_backplane
from tests import redis_server as redis_helper
from tests.redis_server import RedisServer

# The fixtures (a conftest may import them instead): a fresh server per test.
redis_server = redis_helper.redis_server
redis_url = redis_helper.redis_url

FAST: dict[str, Any] = {"op_timeout": 0.5, "node_ttl_ms": 600, "renew_interval": 0.15}


@asynccontextmanager
async def node(url: str, **overrides: Any) -> AsyncIterator[RedisBackplane]:
    async with open_redis_backplane(url, **{**FAST, **overrides}) as backplane:
        yield backplane


@asynccontextmanager
async def raw(url: str) -> AsyncIterator[coredis.Redis[bytes]]:
    async with coredis.Redis.from_url(url) as client:
        yield client


async def recv(channel: trio.MemoryReceiveChannel[Any], timeout: float = 2.0) -> Any:
    with trio.fail_after(timeout):
        return await channel.receive()


async def nothing_on(channel: trio.MemoryReceiveChannel[Any], wait: float = 0.2) -> None:
    with trio.move_on_after(wait):
        got = await channel.receive()
        pytest.fail(f"unexpected message {got!r}")


async def test_liveness_key(redis_url: str) -> None:
    async with node(redis_url) as a, node(redis_url) as b:
        assert a.node_id != b.node_id
        assert a.available and b.available
        assert await a.is_alive(b.node_id) and await b.is_alive(a.node_id)
        assert not await a.is_alive("nobody")
        await trio.sleep(1.0)  # > node TTL: kept alive by renewal
        assert await a.is_alive(b.node_id)
        gone = b.node_id
    async with node(redis_url) as c:
        assert not await c.is_alive(gone)  # graceful stop deletes the key


async def test_lease_claim_renew_expiry(redis_url: str) -> None:
    async with node(redis_url) as b:
        async with node(redis_url) as a:
            assert await a.claim_room("r1", 500)
            assert await a.claim_room("r1", 500)  # idempotent for the holder
            assert not await b.claim_room("r1", 500)
            assert await a.owner_of("r1") == a.node_id
            await trio.sleep(1.2)  # > TTL: renewed in the background
            assert await b.owner_of("r1") == a.node_id
            assert a.owned_rooms() == {"r1"}
            assert not await b.claim_room("r1", 500)
        # a stopped: its lease is no longer renewed and expires on its own
        assert await b.owner_of("r1") is not None
        await trio.sleep(0.6)
        assert await b.owner_of("r1") is None
        assert await b.claim_room("r1", 500)


async def test_lease_lost_callback(redis_url: str) -> None:
    lost: list[str] = []
    async with node(redis_url, on_lease_lost=lost.append) as a, raw(redis_url) as r:
        assert await a.claim_room("taken", 5000)
        assert await a.claim_room("vanished", 5000)
        assert await a.claim_room("kept", 5000)
        await r.set(a.lease_key("taken"), "someone-else")
        await r.delete([a.lease_key("vanished")])
        with trio.fail_after(2):
            while len(lost) < 2:
                await trio.sleep(0.05)
        assert sorted(lost) == ["taken", "vanished"]
        assert a.owned_rooms() == {"kept"}
        assert await a.owner_of("taken") == "someone-else"  # never overwritten
        assert await a.owner_of("vanished") is None  # never resurrected


async def test_release_is_compare_and_delete(redis_url: str) -> None:
    async with node(redis_url) as a, node(redis_url) as b:
        assert await a.claim_room("r", 5000)
        assert not await b.release_room("r")
        assert await a.owner_of("r") == a.node_id
        assert await a.release_room("r")
        assert await a.owner_of("r") is None
        assert a.owned_rooms() == frozenset()
        assert not await a.release_room("r")
        assert await b.claim_room("r", 5000)


async def test_steal_if_dead(redis_url: str) -> None:
    async with node(redis_url) as b, raw(redis_url) as r:
        # a "crashed" node: its lease is long, its liveness key about to expire
        await r.set(b.lease_key("room"), "ghost", px=10_000)
        await r.set(b.node_key("ghost"), "ghost", px=300)
        assert not await b.steal_if_dead("room", 5000)
        assert not await b.claim_room("room", 5000)
        await trio.sleep(0.4)
        assert not await b.is_alive("ghost")
        assert await b.steal_if_dead("room", 5000)
        assert await b.owner_of("room") == b.node_id
        assert b.owned_rooms() == {"room"}
        assert await b.steal_if_dead("room", 5000)  # already ours
        assert await b.steal_if_dead("free", 5000)  # nobody's

        async with node(redis_url) as a:
            assert await a.claim_room("a-room", 5000)
            assert not await b.steal_if_dead("a-room", 5000)  # a is alive
        # a stopped (its liveness key is gone); the lease has seconds left
        assert await b.owner_of("a-room") == a.node_id
        assert await b.steal_if_dead("a-room", 5000)
        assert await b.owner_of("a-room") == b.node_id


async def test_inbox_both_ways_and_room_fanout(redis_url: str) -> None:
    async with node(redis_url) as a, node(redis_url) as b:
        assert await a.publish(b.node_id, b"to b") == 1
        assert await b.publish(a.node_id, b"\x00to a\xff") == 1
        assert await recv(b.inbox) == b"to b"
        assert await recv(a.inbox) == b"\x00to a\xff"
        assert await a.publish("nobody", b"x") == 0

        await a.subscribe_room("r")
        await b.subscribe_room("r")
        await b.subscribe_room("r")  # idempotent
        await b.subscribe_room("other")
        assert await a.publish_room("r", b"hello") == 2  # one publish, every node
        assert await recv(a.room_messages) == ("r", b"hello")
        assert await recv(b.room_messages) == ("r", b"hello")
        assert await a.publish_room("other", b"only b") == 1
        assert await recv(b.room_messages) == ("other", b"only b")

        await b.unsubscribe_room("r")
        assert await b.publish_room("r", b"after") == 1
        assert await recv(a.room_messages) == ("r", b"after")
        await nothing_on(b.room_messages)
        await nothing_on(a.inbox, 0.05)


async def test_full_inbox_drops_and_reports_gap(redis_url: str) -> None:
    gaps: list[str | None] = []
    async with node(redis_url, inbox_size=2, on_gap=gaps.append) as a, node(redis_url) as b:
        for i in range(5):
            await b.publish(a.node_id, b"%d" % i)
        with trio.fail_after(2):
            while a.dropped_inbox < 3:
                await trio.sleep(0.02)
        assert [await recv(a.inbox), await recv(a.inbox)] == [b"0", b"1"]
        assert gaps == [None, None, None]


async def test_reserve_id_is_unique(redis_url: str) -> None:
    async with node(redis_url) as a, node(redis_url) as b:
        assert await a.reserve_id("room", "ABC123")
        assert not await b.reserve_id("room", "ABC123")
        assert not await a.reserve_id("room", "ABC123")  # taken, even for its holder
        assert await b.reserve_id("user", "ABC123")  # namespaces are separate
        await a.release_id("room", "ABC123")
        assert await b.reserve_id("room", "ABC123")

        wins: list[bool] = []

        async def race(backplane: RedisBackplane) -> None:
            wins.append(await backplane.reserve_id("room", "RACE"))

        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(race, a if i % 2 else b)
        assert wins.count(True) == 1


async def test_log_snapshot_and_kv(redis_url: str) -> None:
    async with node(redis_url, log_page_size=2) as a:
        entries = [b"e%d" % i for i in range(5)]
        ids = [await a.append("room", entry) for entry in entries]
        assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))
        assert len(set(ids)) == 5
        assert await a.read_log("room") == list(zip(ids, entries, strict=True))  # 3 pages
        assert await a.read_log("room", ids[1]) == list(zip(ids[2:], entries[2:], strict=True))
        assert await a.read_log("room", ids[1], limit=2) == list(
            zip(ids[2:4], entries[2:4], strict=True)
        )
        assert await a.read_log("room", ids[-1]) == []
        assert await a.read_log("empty") == []

        assert await a.load_snapshot("room") is None
        assert await a.save_snapshot("room", b"\x00state@2", ids[2])
        assert await a.load_snapshot("room") == (b"\x00state@2", ids[2])
        assert not await a.save_snapshot("room", b"older", ids[1])  # never goes back
        assert await a.load_snapshot("room") == (b"\x00state@2", ids[2])
        assert await a.trim_log("room", ids[2]) == 3  # everything the snapshot covers
        assert await a.read_log("room") == list(zip(ids[3:], entries[3:], strict=True))
        assert await a.save_snapshot("room", b"state@4", ids[4])

        for i in range(250):  # "~ MAXLEN" trims whole stream nodes (100 entries each)
            await a.append("capped", b"%d" % i, maxlen=10)
        assert 10 <= len(await a.read_log("capped")) <= 150

        await a.delete_room("room")
        assert await a.load_snapshot("room") is None
        assert await a.read_log("room") == []

        await a.kv_set("stats:x", b'{"rooms": 3}')
        assert await a.kv_get("stats:x") == b'{"rooms": 3}'
        await a.kv_set("short", b"1", ttl_ms=100)
        assert await a.kv_get("short") == b"1"
        await trio.sleep(0.2)
        assert await a.kv_get("short") is None
        await a.kv_delete("stats:x")
        assert await a.kv_get("missing") is None and await a.kv_get("stats:x") is None


async def test_unavailable_during_partition(redis_server: RedisServer) -> None:
    lost: list[str] = []
    lost_at: list[float] = []
    gaps: list[str | None] = []

    def on_lease_lost(room: str) -> None:
        lost.append(room)
        lost_at.append(trio.current_time())

    async with (
        node(redis_server.url, on_lease_lost=on_lease_lost, on_gap=gaps.append) as a,
        node(redis_server.url) as b,
    ):
        await a.subscribe_room("r")
        assert await a.claim_room("r", 600)
        assert a.holds("r") and not a.holds("other")
        redis_server.pause()
        paused_at = trio.current_time()
        try:
            with trio.fail_after(3):
                await a.wait_available(False)
            assert not a.available
            assert a.last_error
            started = trio.current_time()
            with pytest.raises(BackplaneUnavailable):
                await a.kv_get("x")
            assert trio.current_time() - started < FAST["op_timeout"] + 0.3  # fails fast
            with pytest.raises(BackplaneUnavailable):
                await b.publish(a.node_id, b"lost")
            # a can no longer prove it holds the lease once its TTL has passed locally
            # (at its local deadline, not one failed renewal later)
            with trio.fail_after(3):
                while not lost:
                    await trio.sleep(0.01)
            assert lost_at[0] - paused_at < 0.6 + 0.05
            assert lost == ["r"] and a.owned_rooms() == frozenset() and not a.holds("r")
        finally:
            redis_server.resume()
        with trio.fail_after(5):
            await a.wait_available(True)
            await b.wait_available(True)
        assert None in gaps and a.resubscribes >= 1  # resubscribed: report the gap
        assert await b.publish(a.node_id, b"back") == 1
        assert await recv(a.inbox) == b"back"
        assert await b.publish_room("r", b"room back") == 1  # room kept across reconnect
        assert await recv(a.room_messages) == ("r", b"room back")
        assert await a.claim_room("r2", 5000)


async def test_failed_subscribe_is_made_on_reconnect(redis_server: RedisServer) -> None:
    gaps: list[str | None] = []
    async with node(redis_server.url, on_gap=gaps.append) as a, node(redis_server.url) as b:
        redis_server.pause()
        try:
            with pytest.raises(BackplaneUnavailable):
                await a.subscribe_room("late")  # no confirmation within op_timeout
        finally:
            redis_server.resume()
        with trio.fail_after(5):
            while a.resubscribes < 1:
                await trio.sleep(0.02)
            await a.wait_available(True)
        assert gaps and gaps[-1] is None
        assert await b.publish_room("late", b"x") == 1
        assert await recv(a.room_messages) == ("late", b"x")


async def test_survives_redis_restart(redis_server: RedisServer) -> None:
    lost: list[str] = []
    async with (
        node(redis_server.url, on_lease_lost=lost.append) as a,
        node(redis_server.url) as b,
    ):
        await a.subscribe_room("r")
        await b.subscribe_room("r")
        assert await a.claim_room("lease", 5000)
        await a.kv_set("k", b"v")
        await redis_server.restart(crash=True)

        with trio.fail_after(5):
            while a.resubscribes < 1 or b.resubscribes < 1:
                await trio.sleep(0.05)
            await a.wait_available(True)
            await b.wait_available(True)
        assert await a.kv_get("k") is None  # no persistence: the data set is empty
        with trio.fail_after(2):
            while not lost:  # renewal finds the key gone
                await trio.sleep(0.05)
        assert lost == ["lease"]
        await trio.sleep(FAST["renew_interval"] * 2)
        assert await a.is_alive(b.node_id) and await b.is_alive(a.node_id)  # heartbeats
        assert await a.publish(b.node_id, b"to b") == 1
        assert await b.publish(a.node_id, b"to a") == 1
        assert await recv(b.inbox) == b"to b"
        assert await recv(a.inbox) == b"to a"
        assert await a.publish_room("r", b"fan") == 2
        assert await recv(a.room_messages) == ("r", b"fan")
        assert await recv(b.room_messages) == ("r", b"fan")
        assert await b.claim_room("lease", 5000)


async def test_starts_unavailable_when_redis_is_down(redis_server: RedisServer) -> None:
    url = redis_server.url
    await redis_server.stop()
    async with node(url) as a:
        assert not a.available
        with pytest.raises(BackplaneUnavailable):
            await a.kv_get("x")
        await redis_server.start()
        with trio.fail_after(5):
            await a.wait_available(True)
        await a.kv_set("x", b"1")
        assert await a.kv_get("x") == b"1"


async def test_not_running_raises() -> None:
    backplane = RedisBackplane("redis://127.0.0.1:1/0")
    with pytest.raises(BackplaneUnavailable):
        await backplane.kv_get("x")
    with pytest.raises(ValueError):
        RedisBackplane("redis://127.0.0.1:1/0", node_ttl_ms=500, renew_interval=1.0)
    with pytest.raises(ValueError):  # a lease must outlive the renewal period
        await backplane.claim_room("r", 1000)
