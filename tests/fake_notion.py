"""A tiny Notion stand-in (HTTP/1.1 on trio + h11, 127.0.0.1 only) for the import tests.

It records every request and answers through ``respond(index, json_body)``, which returns a
``Reply`` (or an awaitable of one, to hold an answer back).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import h11
import trio


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    chunked: bool = False  # no Content-Length; body sent in several pieces
    stall: bool = False  # never answer


def json_reply(data: Any, **kwargs: Any) -> Reply:
    return Reply(body=json.dumps(data).encode(), **kwargs)


@dataclass
class Recorded:
    method: str
    target: str
    headers: dict[str, str]
    body: Any


Responder = Callable[[int, Any], Reply | Awaitable[Reply]]


def _empty(index: int, body: Any) -> Reply:
    return json_reply({"recordMap": {"block": {}}, "cursor": {"stack": []}})


class FakeNotion:
    """A tiny HTTP/1.1 server; ``respond(index, json_body)`` decides every answer."""

    def __init__(self, respond: Responder | None = None, *,
                 page_hex: str = "0123456789abcdef0123456789abcdef",
                 page_suffix: str = "?pvs=4") -> None:
        self.respond = respond or _empty
        self.requests: list[Recorded] = []
        self.port = 0
        self.page_hex = page_hex
        self.page_suffix = page_suffix

    async def start(self, nursery: trio.Nursery) -> FakeNotion:
        listeners = await nursery.start(partial(trio.serve_tcp, self._serve, 0, host="127.0.0.1"))
        self.port = listeners[0].socket.getsockname()[1]
        return self

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def page_url(self, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}/workspace/My-Tasks-{self.page_hex}{self.page_suffix}"

    async def _serve(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request = await self._read_request(conn, stream)
                if request is None:
                    return
                self.requests.append(request)
                reply = self.respond(len(self.requests) - 1, request.body)
                if inspect.isawaitable(reply):
                    reply = await reply
                assert isinstance(reply, Reply)
                if reply.stall:
                    await trio.sleep_forever()
                await self._send_reply(conn, stream, reply)
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            pass  # the client hung up, e.g. after reaching its byte cap
        finally:
            await stream.aclose()

    @staticmethod
    async def _read_request(conn: h11.Connection, stream: trio.SocketStream) -> Recorded | None:
        head: h11.Request | None = None
        body = b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                headers = {k.decode().lower(): v.decode() for k, v in head.headers}
                return Recorded(head.method.decode(), head.target.decode(), headers,
                                json.loads(body) if body else None)
            elif isinstance(event, h11.ConnectionClosed):
                return None

    @staticmethod
    async def _send_reply(conn: h11.Connection, stream: trio.SocketStream, reply: Reply) -> None:
        headers = [("Content-Type", "application/json"), *reply.headers]
        if not reply.chunked:
            headers.append(("Content-Length", str(len(reply.body))))
        await stream.send_all(conn.send(h11.Response(status_code=reply.status, headers=headers)))
        step = 256 * 1024 if reply.chunked else max(len(reply.body), 1)
        for start in range(0, len(reply.body), step):
            data = conn.send(h11.Data(data=reply.body[start : start + step]))
            assert data is not None
            await stream.send_all(data)
        end = conn.send(h11.EndOfMessage())
        assert end is not None
        await stream.send_all(end)
