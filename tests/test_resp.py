"""The hot-path RESP connection: parser edge cases and pipelining against a real Redis."""

from __future__ import annotations

import trio

from relay.backplane.resp import ReplyError, ReplyParser, RespPipe, encode_command
from tests.redis_server import RedisServer, redis_server  # noqa: F401 (fixture)


def test_encode_command() -> None:
    assert encode_command(["SET", "k", b"\x00v", 5]) == (
        b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n\x00v\r\n$1\r\n5\r\n")


def test_parser_takes_replies_split_anywhere() -> None:
    wire = (b"+OK\r\n-ERR bad\r\n:42\r\n$5\r\nhe\r\nl\r\n$-1\r\n*2\r\n$1\r\na\r\n*1\r\n:7\r\n"
            b"*-1\r\n$0\r\n\r\n")
    for cut in range(len(wire) + 1):
        parser = ReplyParser()
        parser.feed(wire[:cut])
        got = parser.replies()
        parser.feed(wire[cut:])
        got += parser.replies()
        assert got[0] == b"OK" and isinstance(got[1], ReplyError) and str(got[1]) == "ERR bad"
        assert got[2:] == [42, b"he\r\nl", None, [b"a", [7]], None, b""]


async def test_pipelined_calls_from_many_tasks_get_their_own_replies(
        redis_server: RedisServer) -> None:  # noqa: F811
    pipe = RespPipe(redis_server.url)
    async with trio.open_nursery() as nursery:
        await nursery.start(pipe.run)
        results: dict[int, bytes] = {}

        async def one(i: int) -> None:
            await pipe.call("SET", f"k{i}", f"v{i}")
            results[i] = await pipe.call("GET", f"k{i}")

        async with trio.open_nursery() as calls:
            for i in range(200):
                calls.start_soon(one, i)
        assert results == {i: f"v{i}".encode() for i in range(200)}
        replies = await pipe.call_many([["INCR", "n"], ["LPUSH", "n", "x"], ["INCR", "n"]])
        assert replies[0] == 1 and isinstance(replies[1], ReplyError) and replies[2] == 2
        nursery.cancel_scope.cancel()


async def test_calls_wait_for_the_reconnect_after_a_restart(
        redis_server: RedisServer) -> None:  # noqa: F811
    pipe = RespPipe(redis_server.url)
    async with trio.open_nursery() as nursery:
        await nursery.start(pipe.run)
        assert await pipe.call("PING") == b"PONG"
        await redis_server.restart(crash=True)
        with trio.fail_after(10):
            while True:
                try:
                    if await pipe.call("PING") == b"PONG":
                        break
                except ConnectionError:
                    await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
