"""The relay port's HTTP side: parse one request, then upgrade it or answer it.

Only the WebSocket endpoints, ``/healthz`` and the fixed error answers live here; the web
pages are on the other port. Parsing uses ``h11`` so malformed requests are refused the
way an HTTP server should.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

import h11
import msgspec
import trio

MAX_REQUEST_HEAD = 16 * 1024
HANDSHAKE_TIMEOUT = 10.0


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    trailing: bytes

    @property
    def is_upgrade(self) -> bool:
        upgrade = self.headers.get("upgrade", "").lower()
        connection = self.headers.get("connection", "").lower()
        return upgrade == "websocket" and "upgrade" in [t.strip() for t in connection.split(",")]


async def read_request(stream: trio.abc.Stream) -> Request | None:
    """Read one request head; None when the client went away or sent garbage."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_HEAD)
    with trio.move_on_after(HANDSHAKE_TIMEOUT):
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError:
                await _send_raw(stream, 400, b'{"error":"bad request"}')
                return None
            if event is h11.NEED_DATA:
                try:
                    data = await stream.receive_some(65536)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    return None
                conn.receive_data(bytes(data))
                if not data:
                    return None
                continue
            if isinstance(event, h11.Request):
                headers: dict[str, str] = {}
                for name, value in event.headers:
                    key = name.decode("latin-1").lower()
                    text = value.decode("latin-1")
                    headers[key] = f"{headers[key]}, {text}" if key in headers else text
                target = urlsplit(event.target.decode("latin-1"))
                trailing = b""
                if isinstance(getattr(conn, "trailing_data", None), tuple):
                    trailing = conn.trailing_data[0]
                return Request(event.method.decode("ascii"), target.path, target.query,
                               headers, trailing)
            return None
    return None


_REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
            426: "Upgrade Required", 503: "Service Unavailable"}


async def _send_raw(stream: trio.abc.Stream, status: int, body: bytes,
                    content_type: str = "application/json", head: bool = False) -> None:
    start = (
        f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\nConnection: close\r\n\r\n"
    ).encode("latin-1")
    try:
        await stream.send_all(start if head else start + body)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass


async def send_json(stream: trio.abc.Stream, status: int, body: object,
                    head: bool = False) -> None:
    """A JSON answer; for HEAD only its head (with the body's length)."""
    await _send_raw(stream, status, msgspec.json.encode(body), head=head)


async def send_body(stream: trio.abc.Stream, status: int, body: bytes) -> None:
    await _send_raw(stream, status, body)


async def send_switching(stream: trio.abc.Stream, accept: str) -> None:
    await stream.send_all(
        (
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept}\r\n\r\n"
        ).encode("latin-1")
    )


def origin_allowed(origin: str | None, allowed: list[str]) -> bool:
    """§2.1: absent Origin is allowed; scheme and host case-insensitive, port exact."""
    if origin is None or not allowed or "*" in allowed:
        return True
    return _origin_key(origin) in {_origin_key(a) for a in allowed}


def _origin_key(origin: str) -> tuple[str, str, int | None]:
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return ("", origin, None)
    scheme = parts.scheme.lower()
    if port is None:
        port = {"http": 80, "https": 443}.get(scheme)
    return scheme, (parts.hostname or "").lower(), port
