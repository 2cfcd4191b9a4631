"""Fuzz harness (b): the observer codecs' ``decode``/``peek``/``costs_token``.

The input bytes become one text message (see ``common.fuzzed_text``) given to a
``PlainCodec``, a Socket.IO codec before its ``40`` and one after it.

Invariants: nothing raises; every item is a documented ``Inbound`` type with documented
contents (``BadFrame`` codes ``bad_json``/``bad_frame``, refs and ack ids of the documented
types and range, nothing but Engine.IO answers before ``40``); ``peek`` reads the same ref
(and, for events, the same name) as ``decode``; the answers the core would send back for an
item (``error``, ``ack``) are well-formed WebSocket text frames that parse back to what was
given; "JSON nested too deeply" is said of deeply nested text only; and whatever the plain
codec accepts as JSON, Python's strict ``json`` module reads to the same value (the codec
accepts nothing that is not JSON).
"""

from __future__ import annotations

import json
import re
from typing import Any

from relay.codecs.base import (
    FRAME_ERROR_CODES,
    MAX_SAFE_INTEGER,
    TOO_DEEP,
    BadFrame,
    CloseRequest,
    Incoming,
    Pong,
    Raw,
)
from relay.codecs.plain import PlainCodec
from relay.codecs.socketio import SocketIOCodec
from relay.core.errors import EventError

from .common import fuzz_main, fuzzed_text, server_text, server_texts

#: Fewer open brackets than this never exhaust the decoder's recursion budget.
SHALLOW = 100
_FAILURE = EventError("invalid_payload", "r\u00e9sum\u00e9 \u2713")


def nesting_depth(text: str) -> int:
    """Deepest bracket nesting of ``text``, outside JSON strings (a rough, total scan)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth = max(depth - 1, 0)
    return deepest


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


def strict_json(text: str) -> tuple[bool, Any]:
    """(ok, value) by the standard library, without ``NaN``/``Infinity`` (RFC 8259)."""
    try:
        return True, json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return False, None


def check_ref(ref: object, *, socketio: bool) -> None:
    if ref is None:
        return
    assert type(ref) is int or (not socketio and isinstance(ref, str)), ref
    if isinstance(ref, int):
        assert (0 if socketio else -MAX_SAFE_INTEGER) <= ref <= MAX_SAFE_INTEGER, ref
    else:
        assert 1 <= len(ref) <= 64, ref


def check_bad_frame(item: BadFrame, text: str, *, socketio: bool) -> None:
    assert item.code in FRAME_ERROR_CODES, item
    assert isinstance(item.message, str) and item.message
    assert item.event is None or isinstance(item.event, str)
    check_ref(item.ref, socketio=socketio)
    if item.message == TOO_DEEP:
        assert item.code == "bad_json"
        assert nesting_depth(text) >= SHALLOW, "too deep said of shallow JSON"


def check_answers(codec: PlainCodec | SocketIOCodec, item: Incoming | BadFrame) -> None:
    """The error and ack frames for ``item`` are well formed and parse back."""
    is_sio = isinstance(codec, SocketIOCodec)
    if isinstance(item, BadFrame):
        body = server_text(codec.error_frame(item.code, item.message, item.event, item.ref))
        data = {"code": item.code, "message": item.message, "event": item.event}
        if is_sio:
            assert body.startswith("42")
            assert json.loads(body[2:]) == ["error", data]
        else:
            expected: dict[str, Any] = {"event": "error", "data": data}
            if item.ref is not None:
                expected["ref"] = item.ref
            assert json.loads(body) == expected
    if item.ref is None:
        return
    for error in (None, _FAILURE):
        body = server_text(codec.ack_frame(item.ref, error))
        result: dict[str, Any] = {"ok": True} if error is None else {
            "ok": False, "error": {"code": error.code, "message": error.message}}
        if is_sio:
            prefix = f"43{item.ref}"
            assert body.startswith(prefix + "[")
            assert json.loads(body[len(prefix):]) == [result]
        else:
            assert json.loads(body) == {"event": "ack", "ref": item.ref, "data": result}


def check_plain(text: str) -> None:
    codec = PlainCodec()
    assert codec.costs_token(text) is True
    items = codec.decode(text)
    peeked = codec.peek(text)
    assert isinstance(items, list) and len(items) == 1, items
    [item] = items
    if isinstance(item, Incoming):
        assert isinstance(item.event, str) and 1 <= len(item.event) <= 64
        check_ref(item.ref, socketio=False)
    else:
        assert isinstance(item, BadFrame), item
        check_bad_frame(item, text, socketio=False)
    assert peeked == (item.event, item.ref), (peeked, item)
    check_answers(codec, item)
    # Whatever msgspec read as JSON, the standard library reads the same way.
    if not (isinstance(item, BadFrame) and item.code == "bad_json"):
        ok, value = strict_json(text)
        assert ok, "the codec accepted text that is not JSON"
        if isinstance(item, Incoming):
            assert isinstance(value, dict) and value.get("data", {}) == item.data


_SID_OPEN = re.compile(r'40\{"sid":"[A-Za-z0-9_-]{20}"\}')


def check_socketio(text: str, connected: bool) -> None:
    codec = SocketIOCodec(25000, 20000, 1 << 20)
    if connected:
        codec.decode("40")
        assert codec.connected
    assert isinstance(codec.costs_token(text), bool)
    peeked = codec.peek(text)
    items = codec.decode(text)
    assert isinstance(items, list) and len(items) <= 1, items
    refs: list[Any] = []
    for item in items:
        if isinstance(item, Raw):
            for body in server_texts(item.payload):
                assert body[:1] in ("3", "4"), body  # pong or a connect answer
                if body.startswith("40"):
                    assert _SID_OPEN.fullmatch(body) and codec.connected, body
        elif isinstance(item, CloseRequest):
            assert item.code == 1000
        elif isinstance(item, Incoming | BadFrame):
            assert connected, "events or errors before the 40"
            if isinstance(item, Incoming):
                assert isinstance(item.event, str)
                check_ref(item.ref, socketio=True)
                assert peeked[0] == item.event, (peeked, item)
            else:
                check_bad_frame(item, text, socketio=True)
            refs.append(item.ref)
            check_answers(codec, item)
        else:
            assert isinstance(item, Pong), item
    if not connected:
        assert peeked == (None, None), peeked
    assert peeked[1] == (refs[0] if refs else None), (peeked, items)


def check_text(text: str) -> None:
    """Every invariant of every codec for one text message."""
    check_plain(text)
    check_socketio(text, connected=False)
    check_socketio(text, connected=True)


def check(data: bytes) -> None:
    check_text(fuzzed_text(data))


def main() -> None:
    fuzz_main(check)


if __name__ == "__main__":
    main()
