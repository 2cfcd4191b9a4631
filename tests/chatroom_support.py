"""Helpers for the ChatRoom end-to-end tests (§9) over real sockets.

``SeedClient`` behaves the way the seed's ``chatroom`` client (9512c29) does (seed-systems.md
§6): its receive loop reads ``message["args"]`` (a ``content`` envelope raises ``KeyError``)
and calls ``handler(**args)`` with handlers of fixed parameters (one extra key raises
``TypeError``); set changes are rebuilt as ``ChangeSet(**change_without_type)``. In the seed
such an exception ends the receive thread silently; here the loop stops and records it, and
``check()`` (called by every test at the end) fails the test.

``ChatClient`` is a plain client for either shape that keeps every frame it received.
``RawChat`` reads only when asked and never answers pings (slow readers, heartbeats).
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, connect_websocket_url

from tests.support import Relay

RECV_TIMEOUT = 3.0


async def eventually(probe: Callable[[], Any], timeout: float = 3.0,
                     interval: float = 0.01) -> Any:
    """Poll ``probe`` (sync or async) until it returns something truthy; return it."""
    with trio.fail_after(timeout):
        while True:
            value = probe()
            if hasattr(value, "__await__"):
                value = await value
            if value:
                return value
            await trio.sleep(interval)


# -- the seed's client ---------------------------------------------------------------------

class ChangeSet:
    """The seed's ``ChangeSet``: exactly ``value``, ``old_value`` and ``id``."""

    def __init__(self, value: Any, old_value: Any, id: str) -> None:
        self.value = value
        self.old_value = old_value
        self.id = id

    def serialize(self) -> dict[str, Any]:
        return {"type": "set", "value": self.value, "old_value": self.old_value, "id": self.id}


class SeedTopic:
    """``topic.Set(v)`` applies locally at once; the echo (same id) confirms it, any other
    update first reverts the pending local changes (the seed's StringTopic)."""

    def __init__(self, client: SeedClient, name: str) -> None:
        self.client = client
        self.name = name
        self.value: Any = ""
        self.pending: list[ChangeSet] = []
        self.rejected: list[str] = []
        self.updates = 0  # updates received

    def set(self, value: Any) -> str:
        change = ChangeSet(value, self.value, str(uuid.uuid4()))
        self.value = value
        self.pending.append(change)
        self.client.send("update", topic_name=self.name, change=change.serialize())
        return change.id

    def on_update(self, change: ChangeSet) -> None:
        self.updates += 1
        if self.pending and self.pending[0].id == change.id:
            self.pending.pop(0)
            return
        if self.pending:
            self.value = self.pending[0].old_value
            self.pending.clear()
        self.value = change.value

    def on_reject(self, change: dict[str, Any], reason: str) -> None:
        ids = [c.id for c in self.pending]
        if change["id"] not in ids:  # the seed's thread dies here
            raise AssertionError(f"reject_update without a pending change: {change}")
        self.value = self.pending[ids.index(change["id"])].old_value
        self.pending.clear()
        self.rejected.append(reason)


class SeedClient:
    """A seed-like client over a real socket; ``await SeedClient.open(relay, path)``."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self.id: int | None = None
        self.topics: dict[str, SeedTopic] = {}
        self.services: dict[str, Callable[..., Any]] = {}
        self.callbacks: dict[str, Callable[[Any], None]] = {}
        self.warnings: list[dict[str, Any]] = []  # frames of unknown types (logged by the seed)
        self.frames: list[dict[str, Any]] = []  # everything received, decoded
        self.failure: BaseException | None = None  # what would have killed the seed's thread
        self.ended = trio.Event()
        self._out_send, self._out_recv = trio.open_memory_channel[str](10_000)

    @classmethod
    async def open(cls, relay: Relay, path: str = "/") -> SeedClient:
        ws = await connect_websocket_url(relay.nursery, relay.url + path)
        client = cls(ws)
        relay.nursery.start_soon(client._receive_loop)
        relay.nursery.start_soon(client._send_loop)
        return client

    # -- sending, as the seed does: json.dumps({"type": T, "args": {...}}) ---------------
    def send(self, frame_type: str, /, **args: Any) -> None:
        self._out_send.send_nowait(json.dumps({"type": frame_type, "args": args}))

    async def _send_loop(self) -> None:
        async for text in self._out_recv:
            try:
                await self.ws.send_message(text)
            except ConnectionClosed:
                return

    def subscribe(self, name: str, type: str = "string") -> SeedTopic:
        topic = self.topics[name] = SeedTopic(self, name)
        self.send("subscribe", topic_name=name, type=type)
        return topic

    def unsubscribe(self, name: str) -> None:
        del self.topics[name]
        self.send("unsubscribe", topic_name=name)

    def register_service(self, name: str, fn: Callable[..., Any]) -> None:
        self.services[name] = fn
        self.send("register_service", service_name=name)

    def request(self, service: str, callback: Callable[[Any], None], **args: Any) -> str:
        request_id = str(uuid.uuid4())
        self.callbacks[request_id] = callback
        self.send("request", service_name=service, args=args, request_id=request_id)
        return request_id

    # -- the receive loop: handler(**message["args"]) ----------------------------------
    async def _receive_loop(self) -> None:
        try:
            while True:
                text = await self.ws.get_message()
                message = json.loads(text)
                self.frames.append(message)
                handler = getattr(self, "on_" + message["type"], None)
                if handler is None:
                    self.warnings.append(message)  # the seed logs a warning and carries on
                    continue
                handler(**message["args"])
        except ConnectionClosed:
            pass
        except Exception as exc:  # the seed's thread would end here, silently
            self.failure = exc
        finally:
            self.ended.set()

    def on_hello(self, id: int) -> None:
        self.id = id

    def on_update(self, topic_name: str, change: dict[str, Any]) -> None:
        topic = self.topics[topic_name]  # an update for an unknown topic kills the thread
        kind = change["type"]
        if kind != "set":
            raise AssertionError(f"the seed's StringTopic knows only set: {change}")
        topic.on_update(ChangeSet(**{k: v for k, v in change.items() if k != "type"}))

    def on_reject_update(self, topic_name: str, change: dict[str, Any], reason: str) -> None:
        self.topics[topic_name].on_reject(change, reason)

    def on_request(self, service_name: str, args: dict[str, Any], request_id: str) -> None:
        result = self.services[service_name](**args)  # unknown service: the thread dies
        self.send("response", response=result, request_id=request_id)

    def on_response(self, request_id: str, response: Any) -> None:
        self.callbacks.pop(request_id)(response)

    # -- test helpers ----------------------------------------------------------------------
    def check(self) -> None:
        """Fail if anything would have killed the seed's receive thread."""
        if self.failure is not None:
            raise AssertionError(f"the seed's client would have died: {self.failure!r}"
                                 ) from self.failure

    async def until(self, probe: Callable[[], Any], timeout: float = 3.0) -> Any:
        def checked() -> Any:
            self.check()
            return probe()
        return await eventually(checked, timeout)

    async def aclose(self) -> None:
        self._out_send.close()
        await self.ws.aclose()


# -- a plain client of either shape --------------------------------------------------------

class ChatClient:
    """Sends ``{"type", envelope: {...}}`` and keeps every decoded frame it received."""

    def __init__(self, ws: WebSocketConnection, envelope: str = "args") -> None:
        self.ws = ws
        self.envelope = envelope
        self.inbox: list[dict[str, Any]] = []
        self.id: int | None = None  # from ``hello``, when the test read it

    @classmethod
    async def open(cls, relay: Relay, path: str = "/chatroom", envelope: str = "args"
                   ) -> ChatClient:
        ws = await connect_websocket_url(relay.nursery, relay.url + path)
        return cls(ws, envelope)

    async def send(self, frame_type: str, /, **body: Any) -> None:
        await self.ws.send_message(json.dumps({"type": frame_type, self.envelope: body}))

    async def send_raw(self, text: str | bytes) -> None:
        await self.ws.send_message(text)

    async def recv(self, timeout: float = RECV_TIMEOUT) -> dict[str, Any]:
        with trio.fail_after(timeout):
            frame: dict[str, Any] = json.loads(await self.ws.get_message())
        self.inbox.append(frame)
        return frame

    async def expect(self, frame_type: str, timeout: float = RECV_TIMEOUT) -> dict[str, Any]:
        frame = await self.recv(timeout)
        assert frame["type"] == frame_type, f"expected {frame_type}, got {frame}"
        return frame

    async def silent(self, timeout: float = 0.3) -> None:
        with trio.move_on_after(timeout):
            text = await self.ws.get_message()
            raise AssertionError(f"unexpected frame {text!r}")

    async def closed(self, timeout: float = RECV_TIMEOUT) -> int | None:
        with trio.fail_after(timeout):
            try:
                while True:
                    self.inbox.append(json.loads(await self.ws.get_message()))
            except ConnectionClosed as exc:
                return exc.reason.code if exc.reason is not None else None

    async def aclose(self) -> None:
        await self.ws.aclose()


def body(frame: dict[str, Any]) -> dict[str, Any]:
    """A server frame's content, whichever envelope it came in."""
    if "args" in frame:
        return frame["args"]  # type: ignore[no-any-return]
    return frame["content"]  # type: ignore[no-any-return]


# -- raw sockets: exact HTTP answers, clients that do not read -----------------------------

@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def upgrade(port: int, path: str, headers: dict[str, str] | None = None) -> Answer:
    """One WebSocket upgrade request; the status, headers and (for a refusal) the body."""
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket",
             "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        try:
            await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                data += chunk
            head, _, rest = data.partition(b"\r\n\r\n")
            status_line, *header_lines = head.decode("latin-1").split("\r\n")
            hdrs: dict[str, str] = {}
            for line in header_lines:
                name, _, value = line.partition(":")
                hdrs[name.strip().lower()] = value.strip()
            status = int(status_line.split(" ")[1])
            if status != 101:
                length = int(hdrs.get("content-length", "0"))
                while len(rest) < length:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        break
                    rest += chunk
            return Answer(status, hdrs, rest if status != 101 else b"")
        finally:
            await stream.aclose()


class RawChat:
    """A bare WebSocket client that reads only when asked and never answers pings."""

    def __init__(self, stream: trio.SocketStream) -> None:
        from wsproto.connection import Connection, ConnectionType

        self.stream = stream
        self.ws = Connection(ConnectionType.CLIENT)
        self.close_code: int | None = None
        self._text: list[str] = []

    @classmethod
    async def connect(cls, port: int, path: str = "/chatroom", rcvbuf: int | None = None
                      ) -> RawChat:
        import socket as pysocket

        sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(pysocket.SOL_SOCKET, pysocket.SO_RCVBUF, rcvbuf)
        await sock.connect(("127.0.0.1", port))
        stream = trio.SocketStream(sock)
        key = base64.b64encode(os.urandom(16)).decode()
        await stream.send_all(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = await stream.receive_some(1)
            assert chunk, "closed during handshake"
            head += chunk
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(stream)

    async def send(self, frame_type: str, /, **body: Any) -> None:
        from wsproto.events import TextMessage

        data = self.ws.send(TextMessage(json.dumps({"type": frame_type, "args": body})))
        await self.stream.send_all(data)

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
                try:
                    data = await self.stream.receive_some(65536)
                except trio.BrokenResourceError:
                    return out
                if not data:
                    return out
                self.ws.receive_data(data)
        if until_closed:
            raise AssertionError("the server did not close the connection")
        return out

    async def aclose(self) -> None:
        await self.stream.aclose()
