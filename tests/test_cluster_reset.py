"""§1.1 across nodes: a TCP reset while the same-host handoff moves a socket.

A student that reaches the node which does not own its room is handed to the owner at its
``room/join``: the accepting node reads the joining frame, passes the descriptor
(``SCM_RIGHTS``) with the decoded event and lets go. A flaky network can reset the
connection at any moment of that: before the join is read, while the handoff is under way,
or just after the owner adopted the socket. Whatever the moment, only that connection ends:
both nodes keep serving, and the next student through the same node is handed over and
talks to the teacher (the proof that the handoff path itself is intact).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio

from tests.attack_support import read_head, reset, send_all, tcp, text, upgrade_head
from tests.cluster_support import client, start_node
from tests.redis_server import redis_server, redis_url  # noqa: F401  (fixtures)
from tests.support import Client


async def next_event(host: Client, event: str) -> dict[str, Any]:
    """The host's next ``event`` frame, skipping presence updates (the reset student may
    appear and leave in any order relative to the later one)."""
    with trio.fail_after(10):
        while True:
            frame = await host.recv()
            if frame["event"] == event:
                return frame


@pytest.mark.parametrize("delay", [0.0, 0.001, 0.01, 0.05],
                         ids=["with-the-join", "1ms-after", "10ms-after", "50ms-after"])
async def test_reset_mid_handoff(nursery: trio.Nursery, redis_url: str,  # noqa: F811
                                 delay: float) -> None:
    a = await start_node(nursery, redis_url)
    b = await start_node(nursery, redis_url)
    host = await client(nursery, a)
    room = (await host.ok("room/create", {"name": "Teacher"}))[0]["data"]

    sock = await tcp(b.port)
    await send_all(sock, upgrade_head("/observer"))
    head, _ = await read_head(sock)
    assert head.startswith(b"HTTP/1.1 101 "), head
    join = {"event": "room/join", "ref": 1,
            "data": {"room_id": room["room_id"], "name": "Gone"}}
    await send_all(sock, text(json.dumps(join)))
    if delay:
        await trio.sleep(delay)
    reset(sock)

    student = await client(nursery, b)
    joined = await student.ok("room/join", {"room_id": room["room_id"], "name": "Ann"})
    assert joined[0]["data"]["user_id"] > 1
    await student.ok("message/to_mentor", {"content": "after the reset"})
    frame = await next_event(host, "message/to_mentor")
    assert frame["data"]["content"] == "after the reset"
    await host.send("message/to_all", {"content": "hello"})
    assert (await next_event(student, "message/to_client"))["data"]["content"] == "hello"
    assert a.process.returncode is None and b.process.returncode is None
