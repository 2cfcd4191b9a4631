"""Test helpers: real WebSocket clients of a real relay server."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, connect_websocket_url

from relay.config import Config
from relay.server import RelayServer

RECV_TIMEOUT = 3.0


class Client:
    """A plain-framing test client over a real WebSocket."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        #: Highest seq seen; None until the first sequenced frame (a fresh attach may start
        #: anywhere), after which every seq must follow the previous one.
        self.last_seq: int | None = None
        self._ref = 0

    async def send(self, event: str, data: Any = None, ref: Any = None) -> None:
        frame: dict[str, Any] = {"event": event}
        if data is not None:
            frame["data"] = data
        if ref is not None:
            frame["ref"] = ref
        await self.ws.send_message(json.dumps(frame))

    async def send_raw(self, text: str | bytes) -> None:
        await self.ws.send_message(text)

    async def recv(self, timeout: float = RECV_TIMEOUT) -> dict[str, Any]:
        with trio.fail_after(timeout):
            frame = json.loads(await self.ws.get_message())
        if "seq" in frame:
            if self.last_seq is not None:
                assert frame["seq"] == self.last_seq + 1, f"seq gap: {frame} after {self.last_seq}"
            self.last_seq = frame["seq"]
        return frame

    async def expect(self, event: str, timeout: float = RECV_TIMEOUT) -> dict[str, Any]:
        frame = await self.recv(timeout)
        assert frame["event"] == event, f"expected {event}, got {frame}"
        return frame

    async def call(self, event: str, data: Any = None, timeout: float = RECV_TIMEOUT
                   ) -> list[dict[str, Any]]:
        """Send with a ref; return every frame up to and including its ack."""
        self._ref += 1
        ref = self._ref
        await self.send(event, data, ref)
        frames = []
        while True:
            frame = await self.recv(timeout)
            frames.append(frame)
            if frame["event"] == "ack" and frame.get("ref") == ref:
                return frames

    async def ok(self, event: str, data: Any = None) -> list[dict[str, Any]]:
        """``call`` that must succeed; returns the frames before the ack."""
        frames = await self.call(event, data)
        assert frames[-1]["data"] == {"ok": True}, frames
        return frames[:-1]

    async def fail(self, event: str, data: Any, code: str) -> dict[str, Any]:
        """``call`` that must fail with ``code``; returns the error payload."""
        frames = await self.call(event, data)
        errors = [f for f in frames if f["event"] == "error"]
        assert frames[-1]["data"]["ok"] is False, frames
        assert frames[-1]["data"]["error"]["code"] == code, frames
        assert errors and errors[-1]["data"]["code"] == code, frames
        assert errors[-1]["data"]["event"] == event
        return errors[-1]["data"]

    async def silent(self, timeout: float = 0.2) -> None:
        """Assert that nothing arrives for ``timeout`` seconds."""
        with trio.move_on_after(timeout):
            frame = await self.ws.get_message()
            raise AssertionError(f"unexpected frame {frame}")

    async def closed(self, timeout: float = RECV_TIMEOUT) -> int | None:
        """Wait for the server to close; returns the close code."""
        with trio.fail_after(timeout):
            try:
                while True:
                    await self.ws.get_message()
            except ConnectionClosed as exc:
                return exc.reason.code
        return None

    async def aclose(self) -> None:
        await self.ws.aclose()


class Relay:
    """A running server plus client factories."""

    def __init__(self, server: RelayServer, nursery: trio.Nursery) -> None:
        self.server = server
        self.nursery = nursery
        self.url = f"ws://127.0.0.1:{server.relay_port}"
        self.web = f"http://127.0.0.1:{server.web_port}"

    async def client(self, path: str = "/observer", **kw: Any) -> Client:
        ws = await self._open(path, **kw)
        return Client(ws)

    async def _open(self, path: str, **kw: Any) -> WebSocketConnection:
        return await connect_websocket_url(self.nursery, self.url + path, **kw)

    async def host(self, name: str = "Teacher") -> tuple[Client, dict[str, Any]]:
        """A connected host of a new room; returns (client, room/created payload)."""
        c = await self.client()
        frames = await c.ok("room/create", {"name": name})
        return c, frames[0]["data"]

    async def student(self, room_id: int, name: str, **extra: Any) -> tuple[Client, dict[str, Any]]:
        c = await self.client()
        frames = await c.ok("room/join", {"room_id": room_id, "name": name, **extra})
        return c, frames[0]["data"]


def make_config(**overrides: Any) -> Config:
    return dataclasses.replace(Config(port=0, http_port=0), **overrides)


StartRelay = Callable[..., Awaitable[Relay]]


class RawClient:
    """A bare WebSocket client on a trio socket, for tests that must control reading.

    trio-websocket reads in the background and answers pings by itself; this one reads
    only when asked, so a test can stop reading (slow consumer) or ignore pings.
    """

    def __init__(self, stream: trio.SocketStream) -> None:
        from wsproto.connection import Connection, ConnectionType

        self.stream = stream
        self.ws = Connection(ConnectionType.CLIENT)
        self.close_code: int | None = None
        self._text: list[str] = []

    @classmethod
    async def connect(cls, port: int, path: str = "/observer", rcvbuf: int | None = None
                      ) -> RawClient:
        import socket as pysocket

        sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(pysocket.SOL_SOCKET, pysocket.SO_RCVBUF, rcvbuf)
        await sock.connect(("127.0.0.1", port))
        stream = trio.SocketStream(sock)
        await stream.send_all(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = await stream.receive_some(1)
            assert chunk, "closed during handshake"
            head += chunk
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(stream)

    async def send(self, event: str, data: Any = None, ref: Any = None) -> None:
        from wsproto.events import TextMessage

        frame: dict[str, Any] = {"event": event, "data": {} if data is None else data}
        if ref is not None:
            frame["ref"] = ref
        await self.stream.send_all(self.ws.send(TextMessage(json.dumps(frame))))

    async def frames(self, timeout: float = RECV_TIMEOUT, until_closed: bool = False,
                     count: int | None = None) -> list[dict[str, Any]]:
        """Read frames: all available within ``timeout``, or until the close/``count``."""
        from wsproto.events import CloseConnection, TextMessage

        out: list[dict[str, Any]] = []
        with trio.move_on_after(timeout):
            while True:
                for event in self.ws.events():
                    if isinstance(event, TextMessage):
                        self._text.append(event.data)
                        if event.message_finished:
                            out.append(json.loads("".join(self._text)))
                            self._text = []
                            if count is not None and len(out) >= count:
                                return out
                    elif isinstance(event, CloseConnection):
                        self.close_code = event.code
                        return out
                data = await self.stream.receive_some(65536)
                if not data:
                    return out
                self.ws.receive_data(data)
        if until_closed:
            raise AssertionError("the server did not close the connection")
        return out

    async def aclose(self) -> None:
        await self.stream.aclose()


# -- helpers shared by the event tests ----------------------------------------------

async def open_classroom(relay: Relay, *names: str
                         ) -> tuple[Client, dict[str, Any], list[Client]]:
    """A host and joined students; the host's ``room/created`` data (id, token, key)."""
    host, room = await relay.host()
    students = []
    for name in names:
        student, _ = await relay.student(room["room_id"], name)
        await host.expect("room/update")
        students.append(student)
    return host, room, students


async def classroom(relay: Relay, *names: str) -> tuple[Client, int, list[Client]]:
    host, room, students = await open_classroom(relay, *names)
    return host, room["room_id"], students


async def quiet(*clients: Client, timeout: float = 0.1) -> None:
    async with trio.open_nursery() as nursery:
        for client in clients:
            nursery.start_soon(client.silent, timeout)


async def fails(client: Client, event: str, data: Any, code: str) -> dict[str, Any]:
    frames = await client.call(event, data)
    assert [f["event"] for f in frames] == ["error", "ack"], frames
    error, ack = frames
    assert error["data"]["code"] == code, frames
    assert error["data"]["event"] == event
    assert "seq" not in error
    assert ack["data"] == {"ok": False,
                           "error": {"code": code, "message": error["data"]["message"]}}
    return error["data"]
