"""Polling without sticky sessions (§3.2 "Across nodes"): two nodes on Redis behind an HTTP
proxy that sends every request to the other node than the one before; a polling-only
python-socketio client's whole lesson loses nothing and sees no error."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import AsyncIterator
from typing import Any

import h11
import pytest
import socketio
import trio

from tests.cluster_support import Node, start_node
from tests.redis_server import redis_server, redis_url  # noqa: F401  (fixtures)

pytestmark = pytest.mark.timeout(120)


class AlternatingProxy:
    """An HTTP/1.1 proxy on 127.0.0.1: every request goes to the next backend in turn
    (requests of one kept-alive client connection included); WebSocket upgrades are
    refused (this is the polling-only path)."""

    def __init__(self, backends: list[int]) -> None:
        self._next = itertools.cycle(backends)
        self.port = 0
        self.served: list[int] = []

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._client, listeners)

    async def _client(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        async with stream:
            while True:
                request, body = await _read(conn, stream)
                if request is None:
                    return
                backend = next(self._next)
                self.served.append(backend)
                status, headers, answer = await _ask(backend, request, body)
                await stream.send_all(conn.send(h11.Response(status_code=status,
                                                             headers=headers)))
                await stream.send_all(conn.send(h11.Data(data=answer)))
                await stream.send_all(conn.send(h11.EndOfMessage()))
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()


async def _read(conn: h11.Connection, stream: trio.SocketStream
                ) -> tuple[h11.Request | None, bytes]:
    request, body = None, b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(65536)
            if not data:
                return None, b""
            conn.receive_data(data)
        elif isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return request, body
        else:
            return None, b""


async def _ask(port: int, request: h11.Request, body: bytes
               ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        conn = h11.Connection(h11.CLIENT)
        headers = [(k, v) for k, v in request.headers
                   if k.lower() not in (b"connection", b"content-length", b"upgrade")]
        headers += [(b"connection", b"close"), (b"content-length", str(len(body)).encode())]
        await stream.send_all(conn.send(h11.Request(method=request.method,
                                                    target=request.target, headers=headers)))
        await stream.send_all(conn.send(h11.Data(data=body)) if body else b"")
        await stream.send_all(conn.send(h11.EndOfMessage()))
        status, fields, answer = 502, [], b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
                fields = [(k, v) for k, v in event.headers
                          if k.lower() not in (b"connection", b"content-length")]
            elif isinstance(event, h11.Data):
                answer += event.data
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                return status, fields, answer


@pytest.fixture
async def two_nodes(nursery: trio.Nursery, redis_url: str  # noqa: F811
                    ) -> AsyncIterator[list[Node]]:
    nodes = [await start_node(nursery, redis_url), await start_node(nursery, redis_url)]
    yield nodes
    for node in nodes:
        if node.process.returncode is None:
            node.process.terminate()


def _lesson(url: str, out: dict[str, Any]) -> None:
    """A host and two students, polling only, in their own asyncio loop (a thread)."""

    async def main() -> None:
        def client() -> tuple[socketio.AsyncClient, list[tuple[str, Any]]]:
            sio = socketio.AsyncClient(reconnection=False)
            seen: list[tuple[str, Any]] = []

            @sio.on("*")
            async def anything(event: str, data: Any = None) -> None:
                seen.append((event, data))

            @sio.on("disconnect")
            async def gone(*_: Any) -> None:
                seen.append(("disconnect", None))

            return sio, seen

        host, host_seen = client()
        await host.connect(url, transports=["polling"])
        assert await host.call("room/create", {"name": "T"}, timeout=10) == {"ok": True}
        room_id = next(d for e, d in host_seen if e == "room/created")["room_id"]
        students = []
        for name in ("Ann", "Bob"):
            sio, seen = client()
            await sio.connect(url, transports=["polling"])
            assert await sio.call("room/join", {"room_id": room_id, "name": name},
                                  timeout=10) == {"ok": True}
            students.append((sio, seen))
        acks = []
        for i in range(30):
            for n, (sio, _) in enumerate(students):
                acks.append(await sio.call("message/to_mentor", {"content": f"{n}:{i}"},
                                           timeout=10))
            acks.append(await host.call("message/to_all", {"content": f"all:{i}"},
                                        timeout=10))
        code = "x = 1\n" * 250_000  # 1.5 MB
        await host.call("sharing/start", {"user_id": 2}, timeout=10)
        acks.append(await students[0][0].call("sharing/code_send", {"files": [
            {"filename": "a.py", "status": "CREATED", "content": code}]}, timeout=20))
        await asyncio.sleep(1.0)
        out["acks"] = acks
        out["host"] = host_seen
        out["students"] = [seen for _, seen in students]
        out["transports"] = [host.transport()] + [s.transport() for s, _ in students]
        for sio, _ in students:
            await sio.disconnect()
        await host.disconnect()

    asyncio.run(main())


async def test_polling_lesson_through_an_alternating_balancer(
        nursery: trio.Nursery, two_nodes: list[Node]) -> None:
    a, b = two_nodes
    proxy = AlternatingProxy([a.port, b.port])
    await nursery.start(proxy.run)
    out: dict[str, Any] = {}
    thread = threading.Thread(target=_lesson, args=(f"http://127.0.0.1:{proxy.port}", out))
    thread.start()
    await trio.to_thread.run_sync(thread.join, abandon_on_cancel=True)
    assert "acks" in out, out
    assert all(ack == {"ok": True} for ack in out["acks"]), out["acks"]
    assert out["transports"] == ["polling"] * 3
    assert set(proxy.served) == {a.port, b.port}  # both nodes served the lesson's requests
    mentor = [d["content"] for e, d in out["host"] if e == "message/to_mentor"]
    for n in range(2):
        assert [c for c in mentor if c.startswith(f"{n}:")] == [f"{n}:{i}" for i in range(30)]
    for seen in out["students"]:
        got = [d["content"] for e, d in seen if e == "message/to_client"]
        assert got == [f"all:{i}" for i in range(30)]
        assert ("disconnect", None) not in seen[:-1]
    code = next(d for e, d in out["host"] if e == "sharing/code_send")
    assert code["files"][0]["content"] == "x = 1\n" * 250_000
    assert not any(e == "error" for e, _ in out["host"])
