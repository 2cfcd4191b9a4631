"""Property tests of the relay port's request-head reader and strict handshake (§2.1, §1.2).

``read_request`` runs on a scripted peer (``fuzz.http_head.ScriptedStream``) under trio's
virtual clock: arbitrary bytes cut at arbitrary points, peers that reset, close or stop
sending. It must never raise and must answer as the fuzz harness's invariants say; heads
built from parts must come back as those parts; ``upgrade_refusal`` is compared with a
model that computes the status from the generated parts alone.
"""

from __future__ import annotations

import base64
import itertools
from dataclasses import dataclass

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz.http_head import ENDINGS, canonical_key, check_result, parse, same_request
from relay.transport.http import HANDSHAKE_TIMEOUT, MAX_REQUEST_HEAD, Request, read_request
from relay.transport.http import upgrade_refusal as refusal_of

PROPS = settings(deadline=None, max_examples=150,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def cut(data: bytes, points: list[int]) -> list[bytes]:
    """``data`` split at ``points`` (taken modulo its length, duplicates ignored)."""
    if not data:
        return []
    marks = sorted({p % len(data) for p in points} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(marks)]


# -- arbitrary bytes --------------------------------------------------------------------------
head_like = st.lists(st.sampled_from([
    b"GET ", b"POST ", b"/observer", b"//[", b"?EIO=4", b" HTTP/1.1", b" HTTP/1.0", b"\r\n",
    b"\n", b"Host: a", b"Upgrade: websocket", b"Connection: upgrade", b": ", b"\xe9", b"\x00",
    b"Sec-WebSocket-Key: " + KEY.encode(), b"Content-Length: 3", b"Transfer-Encoding: chunked",
    b"Sec-WebSocket-Version: 13", b" ", b"\t", b"http://[", b"http://relay", b"#", b"?",
]), max_size=30).map(b"".join)


@PROPS
@given(st.one_of(st.binary(max_size=2000), head_like), st.lists(st.integers(0, 10**6),
       max_size=8), st.sampled_from(sorted(set(ENDINGS))))
def test_any_bytes_any_split(data: bytes, points: list[int], ending: str) -> None:
    """Never raises; None (maybe after a 400) or a Request; the split changes nothing."""
    result, sent, _ = parse(cut(data, points), ending)
    check_result(data, result, sent)
    whole, whole_sent, _ = parse([data], ending)
    assert same_request(result, whole) and sent == whole_sent


VCHAR = "".join(chr(c) for c in range(0x21, 0x7F))
targets = st.builds(str.__add__, st.sampled_from(["/", "//", "http://", "http://[", "https://a:",
                                                  "*", "", "//[", "a:"]),
                    st.text(VCHAR, max_size=40))


@PROPS
@given(targets)
def test_any_request_target(target: str) -> None:
    """Whatever target h11 lets through is read (a Request) or refused with 400."""
    data = f"GET {target} HTTP/1.1\r\nHost: a\r\n\r\n".encode("latin-1")
    result, sent, _ = parse([data])
    check_result(data, result, sent)
    if target.startswith("/"):  # origin form: path and query as written, no fragment
        assert result is not None
        written = target.partition("#")[0]
        assert result.path + ("?" + result.query if "?" in written else "") == written
        assert "?" not in result.path


# -- valid heads from parts -------------------------------------------------------------------
TCHAR = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
PCHAR = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@%/"
tokens = st.text(TCHAR, min_size=1, max_size=12)
field_names = tokens.filter(lambda n: n.lower() not in (
    "host", "content-length", "transfer-encoding"))  # h11 gives these meaning: set by hand
#: Visible ASCII, obs-text (bytes 0x80-0xFF, read as Latin-1) and inner blanks; h11 strips
#: blanks at either end of a value, so the generated value is stripped the same way.
field_values = st.text(st.sampled_from([chr(c) for c in (*range(0x21, 0x7F), *range(0x80, 0x100))]
                                       + [" ", "\t"]), max_size=24).map(str.strip)


@dataclass
class Parts:
    method: str
    path: str
    query: str | None
    version: str
    fields: list[tuple[str, str]]
    trailing: bytes

    def head(self) -> bytes:
        target = self.path + ("" if self.query is None else "?" + self.query)
        lines = [f"{self.method} {target} HTTP/{self.version}", "Host: relay",
                 *(f"{n}: {v}" for n, v in self.fields)]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


parts = st.builds(
    Parts,
    method=st.one_of(st.sampled_from(["GET", "POST", "HEAD", "OPTIONS"]), tokens),
    # Any absolute path, "//x" included (origin-form has no authority, RFC 9112 §3.2.1).
    path=st.builds(str.__add__, st.sampled_from(["/", "//"]), st.text(PCHAR, max_size=30)),
    query=st.one_of(st.none(), st.text(PCHAR + "?", max_size=30)),
    version=st.sampled_from(["1.1", "1.0"]),
    fields=st.lists(st.tuples(field_names, field_values), max_size=8),
    trailing=st.binary(max_size=200),
)


@PROPS
@given(parts)
def test_valid_heads_round_trip(p: Parts) -> None:
    result, sent, _ = parse([p.head() + p.trailing])
    assert sent == b"" and isinstance(result, Request)
    headers: dict[str, str] = {"host": "relay"}
    counts: dict[str, int] = {"host": 1}
    for name, value in p.fields:
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
        counts[key] = counts.get(key, 0) + 1
    assert (result.method, result.path, result.query, result.http_version) == (
        p.method, p.path, p.query or "", p.version)
    assert result.headers == headers and result.header_counts == counts
    assert result.trailing == p.trailing and not result.body_announced


# -- the strict handshake, model-based ---------------------------------------------------------
def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


#: Key shapes and whether §2.1 accepts them (the model's own judgement, not http.py's).
KEYS: dict[str, tuple[st.SearchStrategy[str], bool]] = {
    "valid": (st.binary(min_size=16, max_size=16).map(_b64), True),
    "15 bytes": (st.binary(min_size=15, max_size=15).map(_b64), False),
    "17 bytes": (st.binary(min_size=17, max_size=17).map(_b64), False),
    "unpadded": (st.binary(min_size=16, max_size=16).map(lambda b: _b64(b).rstrip("=")), False),
    "url-safe": (st.binary(min_size=16, max_size=16).map(
        lambda b: base64.urlsafe_b64encode(b).decode()).filter(lambda k: "-" in k or "_" in k),
        False),
    "non-canonical": (st.binary(min_size=16, max_size=16).map(
        lambda b: _b64(b)[:21] + "BCDEFGHIJKLMNOPRSTUVWXYZ"[b[0] % 24] + "=="), False),
    "non-ASCII": (st.binary(min_size=16, max_size=16).map(
        lambda b: _b64(b)[:5] + "\u00e9" + _b64(b)[6:]), False),
    "empty": (st.just(""), False),
    "other text": (st.text(TCHAR + "=/", min_size=1, max_size=30).filter(
        lambda k: not canonical_key(k)), False),
}


@dataclass
class Handshake:
    method: str
    version: str
    body: str  # "none", "zero", "length", "chunked"
    upgrade: str | None
    connection: str | None
    keys: list[tuple[str, str]]  # (kind, value), one field line each
    ws_version: str | None

    def head(self) -> bytes:
        lines = [f"{self.method} /observer HTTP/{self.version}", "Host: relay"]
        if self.upgrade is not None:
            lines.append(f"Upgrade: {self.upgrade}")
        if self.connection is not None:
            lines.append(f"Connection: {self.connection}")
        lines += [f"Sec-WebSocket-Key: {value}" for _, value in self.keys]
        if self.ws_version is not None:
            lines.append(f"Sec-WebSocket-Version: {self.ws_version}")
        lines += {"none": [], "zero": ["Content-Length: 0"], "length": ["Content-Length: 5"],
                  "chunked": ["Transfer-Encoding: chunked"]}[self.body]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def expected(self) -> int | None:
        """§2.1 from the parts: 400 for the request itself, 426 for the version, 400 key."""
        upgrade = [t.strip().lower() for t in (self.upgrade or "").split(",")]
        connection = [t.strip().lower() for t in (self.connection or "").split(",")]
        if (self.method != "GET" or self.version != "1.1" or self.body in ("length", "chunked")
                or "websocket" not in upgrade or "upgrade" not in connection):
            return 400
        if self.ws_version != "13":
            return 426
        if len(self.keys) != 1 or not KEYS[self.keys[0][0]][1]:
            return 400
        return None


any_key = st.sampled_from(sorted(KEYS)).flatmap(
    lambda kind: KEYS[kind][0].map(lambda value: (kind, value)))
valid_key = KEYS["valid"][0].map(lambda value: ("valid", value))
key_fields = st.one_of(valid_key, any_key)
key_lists = st.one_of(st.lists(key_fields, min_size=1, max_size=1),
                      st.lists(key_fields, max_size=3))
#: A valid handshake's parts, and what each may be changed to (some changes keep it valid:
#: tokens are case-insensitive lists, ``Content-Length: 0`` is no body).
VALID = {"method": "GET", "version": "1.1", "body": "none", "upgrade": "websocket",
         "connection": "Upgrade", "ws_version": "13"}
CHANGES: dict[str, list[str | None]] = {
    "method": ["POST", "HEAD", "PUT", "get", "OPTIONS"],
    "version": ["1.0"],
    "body": ["zero", "length", "chunked"],
    "upgrade": [None, "WebSocket", "h2c", "websocket, h2c", "ws"],
    "connection": [None, "keep-alive, upgrade", "close", "UPGRADE", "upgraded"],
    "ws_version": [None, "8", "13, 13", "14", "013", ""],
}


@st.composite
def handshakes(draw: st.DrawFn, max_changes: int = 3,
               keys: st.SearchStrategy[list[tuple[str, str]]] = key_lists) -> Handshake:
    """A valid handshake with up to ``max_changes`` of its parts changed, and some keys."""
    parts: dict[str, str | None] = dict(VALID)
    for name in draw(st.lists(st.sampled_from(sorted(CHANGES)), max_size=max_changes,
                              unique=True)):
        parts[name] = draw(st.sampled_from(CHANGES[name]))
    return Handshake(keys=draw(keys), **parts)  # type: ignore[arg-type]


def assert_refusal_matches_model(h: Handshake, points: list[int]) -> None:
    result, sent, _ = parse(cut(h.head(), points))
    assert sent == b"" and isinstance(result, Request), sent
    refusal = refusal_of(result)
    want = h.expected()
    if want is None:
        assert refusal is None, h
        return
    assert refusal is not None, h
    status, headers, body = refusal
    assert status == want, (status, h)
    assert headers == ([("Sec-WebSocket-Version", "13")] if want == 426 else [])
    assert body.startswith(b'{"error":')


@PROPS
@given(handshakes(), st.lists(st.integers(0, 10**6), max_size=4))
def test_upgrade_refusal_follows_the_model(h: Handshake, points: list[int]) -> None:
    assert_refusal_matches_model(h, points)


@PROPS
@given(handshakes(max_changes=1, keys=valid_key.map(lambda k: [k])))
def test_upgrade_refusal_single_change(h: Handshake) -> None:
    """One part changed at a time, so that no other fault hides it."""
    assert_refusal_matches_model(h, [])


@PROPS
@given(handshakes(max_changes=0, keys=st.lists(key_fields, max_size=3)))
def test_upgrade_refusal_key_rules(h: Handshake) -> None:
    """Everything but the keys valid: one canonical 16-byte key passes, nothing else."""
    assert_refusal_matches_model(h, [])


def test_model_accepts_the_rfc_example() -> None:
    h = Handshake("GET", "1.1", "none", "websocket", "Upgrade", [("valid", KEY)], "13")
    assert h.expected() is None
    result, _, _ = parse([h.head()])
    assert result is not None and refusal_of(result) is None


# -- head size and time bounds ----------------------------------------------------------------
def head_of_size(size: int) -> bytes:
    """A GET head of exactly ``size`` bytes (request line, headers, final empty line)."""
    start = b"GET /observer HTTP/1.1\r\nHost: relay\r\nX-Pad: "
    end = b"\r\n\r\n"
    return start + b"a" * (size - len(start) - len(end)) + end


@PROPS
@given(st.one_of(st.integers(MAX_REQUEST_HEAD - 3, MAX_REQUEST_HEAD + 3),
                 st.integers(200, 70_000)), st.lists(st.integers(0, 10**6), max_size=6),
       st.binary(max_size=100))
def test_head_size_bound_however_it_arrives(size: int, points: list[int], after: bytes) -> None:
    data = head_of_size(size) + after
    result, sent, _ = parse(cut(data, points))
    if size <= MAX_REQUEST_HEAD:
        assert isinstance(result, Request) and sent == b""
        assert after.startswith(result.trailing)  # all of it, or what was read so far
    else:
        assert result is None and sent.startswith(b"HTTP/1.1 400 ")


def test_sixty_kilobyte_head_in_one_read_is_refused() -> None:
    result, sent, _ = parse([head_of_size(60_000)])
    assert result is None and sent.startswith(b"HTTP/1.1 400 ")


@PROPS
@given(st.integers(0, 200), st.sampled_from(["hang", "eof", "reset", "closed", "oserror"]))
def test_unfinished_head_never_hangs_or_raises(keep: int, ending: str) -> None:
    head = head_of_size(300)[:keep]
    result, sent, took = parse(cut(head, [7, 50]), ending)
    assert result is None and sent == b""
    if ending == "hang":
        assert took >= HANDSHAKE_TIMEOUT  # virtual seconds: dropped only at the timeout
    else:
        assert took < HANDSHAKE_TIMEOUT  # the peer's going away ends it at once


def test_complete_head_then_silence_is_a_request() -> None:
    result, sent, took = parse([head_of_size(300)], "hang")
    assert isinstance(result, Request) and sent == b"" and took == 0


# -- through trio's memory stream pair ---------------------------------------------------------
@pytest.mark.parametrize("pieces", [[b"GET /observer HTTP/1.1\r\nHost: a\r\n\r\nxyz"],
                                    [b"GET /obs", b"erver?a=b HTTP/1.1\r", b"\nHost: a\r\n\r\n"]])
async def test_memory_stream_pair(pieces: list[bytes]) -> None:
    client, server = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        async def send() -> None:
            for piece in pieces:
                await client.send_all(piece)
                await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(send)
        request = await read_request(server)
    assert request is not None and request.path == "/observer"
