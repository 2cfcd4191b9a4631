"""The relay port's HTTP side: parse one request, then upgrade it or answer it.

Only the WebSocket endpoints, ``/healthz`` and the fixed error answers live here; the web
pages are on the other port. Parsing uses ``h11`` so malformed requests are refused the
way an HTTP server should.

Everything here faces unauthenticated peers before any other check, so it is total:
``read_request`` answers every byte sequence, every split of it into reads and every way the
peer can go away with a ``Request``, ``None`` (peer gone, timed out) or a 400 answer, and never
raises (``tests/test_http_props.py`` and ``fuzz/http_head.py`` check it). ``upgrade_refusal``
is the strict WebSocket handshake of §2.1 as a pure function of the parsed request.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import h11
import msgspec
import trio

__all__ = [
    "HANDSHAKE_TIMEOUT",
    "MAX_REQUEST_HEAD",
    "Request",
    "origin_allowed",
    "read_request",
    "send_answer",
    "send_body",
    "send_json",
    "send_switching",
    "upgrade_refusal",
]

#: Largest request head (request line and headers, with their line ends) accepted (§2.1).
MAX_REQUEST_HEAD = 16 * 1024
#: Seconds a peer has to complete its request head (§2.1).
HANDSHAKE_TIMEOUT = 10.0
READ_SIZE = 65536
_BAD_REQUEST = b'{"error":"bad request"}'
_BAD_HANDSHAKE = b'{"error":"bad_websocket_handshake"}'
_BAD_VERSION = b'{"error":"unsupported_websocket_version"}'
#: The canonical base64 of exactly 16 bytes: 22 symbols, the last carrying two data bits and
#: four zero bits (so only A, Q, g or w), then ``==``. ASCII only: the str pattern's classes
#: are explicit ranges.
_WS_KEY = re.compile(r"[A-Za-z0-9+/]{21}[AQgw]==")

Answer = tuple[int, list[tuple[str, str]], bytes]


def _tokens(value: str) -> list[str]:
    """The comma-separated tokens of a header value, trimmed and lower-cased."""
    return [token.strip().lower() for token in value.split(",")]


@dataclass(slots=True)
class Request:
    """One parsed request head.

    ``headers`` has lower-case names, repeated fields joined by ", " (the form routing and the
    Origin check read). ``header_counts`` keeps how many field lines each name had, which
    the strict handshake needs (a ``Sec-WebSocket-Key`` sent twice is refused even when the
    joined value looks harmless). ``body_announced`` is True when the head promises a body
    (``Content-Length`` other than 0, or any ``Transfer-Encoding``): such bytes would
    otherwise be read as WebSocket frames after an upgrade.
    """

    method: str
    path: str
    query: str
    headers: dict[str, str]
    trailing: bytes
    http_version: str = "1.1"
    header_counts: dict[str, int] = field(default_factory=dict)
    body_announced: bool = False
    #: The client spoke HTTPS to a trusted proxy (``X-Forwarded-Proto``), set by routing.
    https: bool = False
    #: The head as received (set by ``HttpConnection``): what a node passes on with the
    #: socket when another node of this host must answer the request (an upgrade).
    raw: bytes = b""

    @property
    def is_upgrade(self) -> bool:
        """``Upgrade`` names ``websocket`` and ``Connection`` names ``upgrade`` (any case)."""
        return ("websocket" in _tokens(self.headers.get("upgrade", ""))
                and "upgrade" in _tokens(self.headers.get("connection", "")))

    @property
    def asks_upgrade(self) -> bool:
        """The client attempts a WebSocket handshake, well-formed or not.

        True when ``Upgrade`` names ``websocket`` or a ``Sec-WebSocket-Key`` or
        ``Sec-WebSocket-Version`` field is present. Such a request is judged by
        :func:`upgrade_refusal` (400/426) instead of being served as plain HTTP; an
        ``Upgrade: h2c`` alone is not one (HTTP/1.1 servers ignore upgrades they do not speak).
        """
        headers = self.headers
        return ("websocket" in _tokens(headers.get("upgrade", ""))
                or "sec-websocket-key" in headers or "sec-websocket-version" in headers)


def upgrade_refusal(request: Request) -> Answer | None:
    """The answer refusing a WebSocket handshake, or ``None`` when it may upgrade (§2.1).

    Checked in this order, the first failure answering: ``GET`` only; HTTP/1.1 only (1.0 has
    no upgrade, h11 also parses 1.2 or 2.0 request lines); no body announced; ``Upgrade``
    naming ``websocket`` and ``Connection`` naming ``upgrade`` (comma-separated tokens, any
    case) — each of these is 400. Then ``Sec-WebSocket-Version`` exactly ``13``, else 426
    with ``Sec-WebSocket-Version: 13`` (RFC 6455 §4.4: a client of another version learns
    which one to speak even when its key would not suit us). Then ``Sec-WebSocket-Key``:
    one field line whose value is the canonical base64 of exactly 16 bytes (24 ASCII
    characters, padded), else 400. Only such keys ever reach ``accept_key``. Origin, path and
    per-IP caps are the caller's checks.
    """
    headers = request.headers
    if (request.method != "GET" or request.http_version != "1.1" or request.body_announced
            or not request.is_upgrade):
        return 400, [], _BAD_HANDSHAKE
    if headers.get("sec-websocket-version") != "13":
        return 426, [("Sec-WebSocket-Version", "13")], _BAD_VERSION
    key = headers.get("sec-websocket-key")
    if (key is None or request.header_counts.get("sec-websocket-key") != 1
            or _WS_KEY.fullmatch(key) is None):
        return 400, [], _BAD_HANDSHAKE
    return None


async def read_request(stream: trio.abc.Stream) -> Request | None:
    """Read one request head; None when the client went away, was too slow or sent garbage.

    Garbage (anything h11 refuses, a target that cannot be read, a head over
    ``MAX_REQUEST_HEAD``) is answered 400 before the None. A head not complete within
    ``HANDSHAKE_TIMEOUT`` seconds is dropped without an answer.
    """
    with trio.move_on_after(HANDSHAKE_TIMEOUT):
        try:
            return await _read_head(stream)
        except Refused:
            await _send_raw(stream, 400, _BAD_REQUEST)
    return None


class Refused(Exception):
    """The head is not one this server accepts: answered 400."""


async def _read_head(stream: trio.abc.Stream) -> Request | None:
    """The request, or None when the peer went away first; raises ``Refused`` for garbage.

    h11's ``max_incomplete_event_size`` only bounds a head still incomplete, so one read that
    brings a whole 60 KiB head would pass it: the complete head's size is checked here as
    everything received minus what h11 has not consumed (``trailing_data``: the bytes after
    the head, e.g. WebSocket frames pipelined with the handshake, which the connection
    parses first).
    """
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_HEAD)
    received = 0
    while True:
        try:
            event = conn.next_event()
        except (h11.ProtocolError, ValueError):
            # ProtocolError is everything h11 refuses; ValueError guards the conversions
            # inside h11 (older releases let int() of a huge Content-Length escape).
            raise Refused from None
        if event is h11.NEED_DATA:
            try:
                data = await stream.receive_some(READ_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                return None
            if not data:
                return None
            received += len(data)
            conn.receive_data(bytes(data))
            continue
        if not isinstance(event, h11.Request):
            return None  # (a server connection yields nothing else before data runs out)
        trailing = bytes(conn.trailing_data[0])
        if received - len(trailing) > MAX_REQUEST_HEAD:
            raise Refused
        return request_of(event, trailing)


def request_of(event: h11.Request, trailing: bytes) -> Request:
    """The ``Request`` of a parsed head; ``Refused`` when its target cannot be read."""
    headers: dict[str, str] = {}
    counts: dict[str, int] = {}
    for name, value in event.headers:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        if key in headers:
            headers[key] = f"{headers[key]}, {text}"
            counts[key] += 1
        else:
            headers[key] = text
            counts[key] = 1
    path, query = _split_target(event.target.decode("latin-1"))
    length = headers.get("content-length")
    body = "transfer-encoding" in headers or (
        length is not None and length.strip("0") != "")  # h11 checked it is digits only
    return Request(event.method.decode("latin-1"), path, query, headers, trailing,
                   event.http_version.decode("latin-1"), counts, body)


def _split_target(target: str) -> tuple[str, str]:
    """(path, query) of a request target; ``Refused`` for one that cannot be read.

    The origin form (``/path?query``, what clients send) is split by hand: ``urlsplit``
    would take ``//observer`` for a host named "observer" with an empty path, and raises
    ValueError for ``//[`` (an unterminated IPv6 literal), which once escaped this module
    and the accept loop. Other forms (absolute ``http://host/path``, ``*``) go through
    ``urlsplit``; one it cannot read (``http://[``) is refused.
    """
    if target.startswith("/"):
        path, _, query = target.partition("#")[0].partition("?")
        return path, query
    try:
        parts = urlsplit(target)
    except ValueError:
        raise Refused from None
    return parts.path, parts.query


REASONS = {101: "Switching Protocols", 200: "OK", 204: "No Content", 400: "Bad Request",
           403: "Forbidden", 404: "Not Found", 413: "Payload Too Large",
           426: "Upgrade Required", 429: "Too Many Requests", 503: "Service Unavailable"}


async def _send_raw(stream: trio.abc.Stream, status: int, body: bytes,
                    content_type: str = "application/json", head: bool = False,
                    headers: Sequence[tuple[str, str]] = ()) -> None:
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers)
    start = (
        f"HTTP/1.1 {status} {REASONS.get(status, '')}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n{extra}"
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


async def send_answer(stream: trio.abc.Stream, status: int, headers: list[tuple[str, str]],
                      body: bytes) -> None:
    """A JSON answer with extra header fields, e.g. ``send_answer(stream, *refusal)``."""
    await _send_raw(stream, status, body, headers=headers)


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
