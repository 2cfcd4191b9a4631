"""Property tests of the observer codecs (§3.1, §3.2, §3.4; Appendix D decisions).

Both codecs must be *total*: every ``str`` a client can send maps to a documented answer and
nothing raises (a ``RecursionError`` from msgspec on deep nesting once killed the process).
The invariants every input must keep are the fuzz harness's (``fuzz.observer_codecs``); the
tests here feed them generated text that is hard for a fuzzer to reach (JSON nested up to
10,000 deep, integers with hundreds of digits, duplicate keys, escaped lone surrogates,
Socket.IO prefixes with ack-id digit runs) and add the exact answers: deep nesting is
``bad_json`` "JSON nested too deeply", valid frames round-trip, in-range integer refs come
back exactly, and outgoing frames parse back to what was given.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fuzz.common import server_text, server_texts
from fuzz.observer_codecs import check_plain, check_socketio, check_text
from relay.codecs.base import MAX_SAFE_INTEGER, TOO_DEEP, BadFrame, Incoming, Raw
from relay.codecs.plain import PlainCodec
from relay.codecs.socketio import SocketIOCodec
from relay.core.errors import EventError
from relay.core.outgoing import Outgoing

# Deadlines would make a slow machine fail a correct codec: no timing decides a test here.
PROPS = settings(deadline=None, max_examples=150,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
BAD_CONNECT = '44{"message":"Invalid connect payload"}'


def sio(connected: bool) -> SocketIOCodec:
    codec = SocketIOCodec(25000, 20000, 1 << 20)
    if connected:
        codec.decode("40")
    return codec


def surely_too_deep(depth: int) -> bool:
    """Deeper than the whole recursion budget: msgspec must give up, wherever it is called.

    Shallower nesting may or may not fit (the budget left depends on the caller's stack),
    so only the totality invariants are asserted for it.
    """
    return depth > sys.getrecursionlimit()


# -- JSON text builders ---------------------------------------------------------------------
big_ints = st.integers(min_value=-(10**400), max_value=10**400)
number_texts = st.one_of(
    st.integers().map(str),
    big_ints.map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.from_regex(r"-?(0|[1-9][0-9]{0,300})(\.[0-9]{1,30})?([eE][+-]?[0-9]{1,4})?",
                  fullmatch=True),
)
bad_literals = st.sampled_from(["NaN", "Infinity", "-Infinity", "nan", "inf", "+1", "01",
                                "1.", ".5", "0x10", "1e", "--1"])
string_texts = st.one_of(
    st.builds(json.dumps, st.text(), ensure_ascii=st.booleans()),
    st.sampled_from(['"\\ud800"', '"\\udfff"', '"a\\ud800b"', '"\\ud83d\\ude00"',
                     '"\\ud800\\ud800"', '"\\u00e9"', '"\\x41"', '"\t"']),
)
scalar_texts = st.one_of(number_texts, string_texts,
                         st.sampled_from(["true", "false", "null"]))
keys = st.one_of(st.sampled_from(['"event"', '"data"', '"ref"', '"k"']), string_texts)


def _array(items: list[str]) -> str:
    return "[" + ",".join(items) + "]"


def _object(pairs: list[tuple[str, str]]) -> str:
    return "{" + ",".join(f"{k}:{v}" for k, v in pairs) + "}"


json_texts = st.recursive(
    scalar_texts,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(_array),
        st.lists(st.tuples(keys, inner), max_size=4).map(_object),  # duplicates likely
    ),
    max_leaves=12,
)


@st.composite
def nested(draw: st.DrawFn, min_depth: int = 0, max_depth: int = 10_000) -> tuple[str, int]:
    """(text, depth): a JSON value wrapped ``depth`` times in arrays and ``{"k":`` objects.

    The opener pattern repeats cyclically, so 10,000 levels cost one draw; sometimes the
    closers are missing (truncated deep text must be ``bad_json`` too).
    """
    depth = draw(st.one_of(st.integers(min_depth, max_depth),
                           st.integers(max(min_depth, 990), max(min_depth, 1010)),
                           st.just(max_depth)))
    pattern = draw(st.lists(st.sampled_from(["[", '{"k":']), min_size=1, max_size=3))
    inner = draw(json_texts)
    openers = [pattern[i % len(pattern)] for i in range(depth)]
    closers = "".join("]" if o == "[" else "}" for o in reversed(openers))
    if draw(st.integers(0, 9)) == 0:
        closers = closers[: len(closers) // 2]
    return "".join(openers) + inner + closers, depth


deep_texts = nested().map(lambda pair: pair[0])
any_json = st.one_of(json_texts, deep_texts, bad_literals)

sio_prefixes = st.sampled_from(
    ["", "0", "1", "2", "3", "4", "5", "6", "7", "x", "40", "41", "42", "43", "44", "45",
     "46", "47", "4x", "451-", "4612-", "45x-", "42/", "42/chat,", "40/admin,", "42/,",
     "40/,", "2probe", "42/nsp"])
ack_digits = st.one_of(st.just(""), st.text("0123456789", min_size=1, max_size=40),
                       st.integers(0, MAX_SAFE_INTEGER + 10).map(str))
sio_packets = st.builds(lambda p, d, b: p + d + b, sio_prefixes, ack_digits,
                        st.one_of(any_json, st.text(max_size=20)))


@st.composite
def plain_frames(draw: st.DrawFn) -> str:
    """Objects with the frame's keys (maybe repeated, maybe of wrong types) and others."""
    values = st.one_of(json_texts, deep_texts, bad_literals,
                       st.builds(json.dumps, st.text(min_size=1, max_size=70)))
    pairs = draw(st.lists(st.tuples(keys, values), max_size=6))
    return _object(pairs)


surrogate_texts = st.text(st.characters(categories=["Cs"]) | st.sampled_from('[]{}"42'),
                          max_size=12)
any_text = st.one_of(st.text(), any_json, plain_frames(), sio_packets, surrogate_texts)


# -- totality ---------------------------------------------------------------------------------
@PROPS
@given(any_text)
def test_codecs_total_on_any_text(text: str) -> None:
    """decode/peek/costs_token never raise and answer only documented items (harness rules)."""
    check_text(text)


@PROPS
@given(nested(min_depth=1))
def test_plain_deep_nesting_is_bad_json(pair: tuple[str, int]) -> None:
    text, depth = pair
    codec = PlainCodec()
    for frame in (text, '{"event":"x","data":' + text + "}", '{"event":"x","ref":' + text + "}"):
        check_plain(frame)
        if surely_too_deep(depth):
            assert codec.decode(frame) == [BadFrame("bad_json", TOO_DEEP)]
            assert codec.peek(frame) == (None, None)


@PROPS
@given(nested(min_depth=1), st.integers(0, 10**6))
def test_socketio_deep_nesting(pair: tuple[str, int], ack: int) -> None:
    text, depth = pair
    packets = [f"42{ack}[{text}]", f'42{ack}["x",{text}]', f"42{ack}{text}"]
    for packet in packets:
        check_socketio(packet, connected=True)
        check_socketio(packet, connected=False)
        assert sio(False).decode(packet) == []  # anything before the 40 is ignored
        if surely_too_deep(depth):
            assert sio(True).decode(packet) == [BadFrame("bad_json", TOO_DEEP, None, ack)]
            assert sio(True).peek(packet) == (None, ack)
    if surely_too_deep(depth) and text.startswith("{"):
        codec = sio(False)
        [answer] = codec.decode("40" + text)
        assert isinstance(answer, Raw) and server_text(answer.payload) == BAD_CONNECT
        assert not codec.connected  # the session may retry


# -- round trips ------------------------------------------------------------------------------
# Values the core could be given: msgspec-encodable (no lone surrogates), finite floats.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | big_ints
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=15,
)
event_names = st.text(min_size=1, max_size=64)
plain_refs = st.one_of(st.none(), st.text(min_size=1, max_size=64),
                       st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER),
                       st.sampled_from([MAX_SAFE_INTEGER, -MAX_SAFE_INTEGER, 0]))


@PROPS
@given(event_names, st.one_of(st.just(...), json_values), plain_refs, st.booleans(),
       st.booleans())
def test_plain_valid_frame_round_trips(event: str, data: Any, ref: Any, ascii_only: bool,
                                       decoy: bool) -> None:
    frame: dict[str, Any] = {"event": event}
    if data is not ...:
        frame["data"] = data
    if ref is not None:
        frame["ref"] = ref
    text = json.dumps(frame, ensure_ascii=ascii_only)
    if decoy:  # an earlier, wrongly typed duplicate of every key: the last one wins (§0)
        text = "{" + "".join(f'"{key}":[],' for key in frame) + text[1:]
    expected = Incoming(event, {} if data is ... else data, ref)
    assert PlainCodec().decode(text) == [expected]
    assert PlainCodec().peek(text) == (event, ref)
    if isinstance(ref, int):
        [item] = PlainCodec().decode(text)
        assert isinstance(item, Incoming) and type(item.ref) is int and item.ref == ref


@PROPS
@given(st.one_of(big_ints, st.integers()), event_names)
def test_plain_integer_ref_range(ref: int, event: str) -> None:
    text = json.dumps({"event": event, "ref": ref})
    [item] = PlainCodec().decode(text)
    if -MAX_SAFE_INTEGER <= ref <= MAX_SAFE_INTEGER:
        assert item == Incoming(event, {}, ref)
    else:
        assert isinstance(item, BadFrame) and item.code == "bad_frame"
        assert (item.event, item.ref) == (event, None)
        assert PlainCodec().peek(text) == (event, None)


@PROPS
@given(st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.booleans(),
                 st.just(""), st.text(min_size=65), st.lists(st.integers(), max_size=2)))
def test_plain_refs_of_other_types_are_bad_frame(ref: Any) -> None:
    [item] = PlainCodec().decode(json.dumps({"event": "x", "ref": ref}))
    assert isinstance(item, BadFrame) and (item.code, item.event, item.ref) == (
        "bad_frame", "x", None)


@PROPS
@given(number_texts)
def test_numbers_in_data_never_raise(number: str) -> None:
    """Any JSON number decodes (ints exactly) or is ``bad_json`` (out of range): no raise."""
    [item] = PlainCodec().decode('{"event":"x","data":' + number + "}")
    if isinstance(item, Incoming):
        value = item.data
        if type(value) is int:
            assert value == int(number)
        else:
            assert isinstance(value, float) and value == float(number)
    else:
        assert isinstance(item, BadFrame) and item.code == "bad_json"
        assert abs(float(number)) == float("inf") or len(number.lstrip("-")) > 4300


@PROPS
@given(json_texts, bad_literals.filter(lambda s: s.lstrip("-") in ("NaN", "Infinity")),
       st.integers(0, 10**4))
def test_nan_and_infinity_are_not_json(value: str, literal: str, ack: int) -> None:
    data = f"[{value},{literal}]"
    [item] = PlainCodec().decode('{"event":"x","data":' + data + "}")
    assert isinstance(item, BadFrame) and item.code == "bad_json"
    assert sio(True).decode(f'42{ack}["x",{data}]') == [
        BadFrame("bad_json", "the packet is not valid JSON", None, ack)]


@PROPS
@given(event_names, st.one_of(st.just(...), json_values), st.lists(json_values, max_size=2),
       st.one_of(st.none(), st.integers(0, MAX_SAFE_INTEGER)), st.integers(0, 3),
       st.sampled_from(["", "/,"]))
def test_socketio_valid_event_round_trips(event: str, data: Any, extra: list[Any],
                                          ack: int | None, zeros: int, nsp: str) -> None:
    args = [event] if data is ... else [event, data, *extra]
    digits = "" if ack is None else "0" * zeros + str(ack)
    packet = "42" + nsp + digits + json.dumps(args)
    expected = Incoming(event, {} if data is ... else data, ack)
    assert sio(True).decode(packet) == [expected]
    assert sio(True).peek(packet) == (event, ack)
    assert sio(False).decode(packet) == []


@PROPS
@given(st.text("0123456789", min_size=17, max_size=300))
def test_socketio_ack_id_digit_runs(digits: str) -> None:
    value = int(digits)
    packet = f'42{digits}["x",1]'
    [item] = sio(True).decode(packet)
    if value <= MAX_SAFE_INTEGER:
        assert item == Incoming("x", 1, value)
    else:
        assert item == BadFrame("bad_frame", "ack id out of range", "x", None)


def test_duplicate_keys_last_one_wins() -> None:
    assert PlainCodec().decode('{"event":"a","data":1,"event":"b","data":2,"ref":1,"ref":"r"}'
                               ) == [Incoming("b", 2, "r")]
    assert sio(True).decode('42["x",{"k":1,"k":2}]') == [Incoming("x", {"k": 2})]


# -- outgoing frames --------------------------------------------------------------------------
errors = st.one_of(st.none(), st.builds(EventError, st.sampled_from(["invalid_payload",
                                                                        "not_host"]), st.text()))


@PROPS
@given(event_names, json_values, st.one_of(st.none(), st.integers(1, 2**63)))
def test_event_frames_parse_back(event: str, data: Any, seq: int | None) -> None:
    plain = json.loads(server_text(PlainCodec().event_frame(Outgoing(event, data), seq)))
    expected: dict[str, Any] = {"event": event, "data": data}
    if seq is not None:
        expected["seq"] = seq
    assert plain == expected
    texts = server_texts(sio(True).event_frame(Outgoing(event, data), seq))
    assert [t[:2] for t in texts] == ["42"] * len(texts)
    assert [json.loads(t[2:]) for t in texts] == [[event, data]] + (
        [["alert", data]] if event == "alerts" else [])


@PROPS
@given(plain_refs.filter(lambda r: r is not None), st.integers(0, MAX_SAFE_INTEGER), errors)
def test_ack_frames_parse_back(ref: Any, ack: int, error: EventError | None) -> None:
    result: dict[str, Any] = {"ok": True} if error is None else {
        "ok": False, "error": {"code": error.code, "message": error.message}}
    assert json.loads(server_text(PlainCodec().ack_frame(ref, error))) == {
        "event": "ack", "ref": ref, "data": result}
    body = server_text(sio(True).ack_frame(ack, error))
    assert body.startswith(f"43{ack}[") and json.loads(body[len(f"43{ack}"):]) == [result]


@PROPS
@given(st.sampled_from(["bad_json", "bad_frame", "internal"]), st.text(),
       st.one_of(st.none(), event_names), plain_refs)
def test_error_frames_parse_back(code: str, message: str, event: str | None, ref: Any) -> None:
    data = {"code": code, "message": message, "event": event}
    expected: dict[str, Any] = {"event": "error", "data": data}
    if ref is not None:
        expected["ref"] = ref
    assert json.loads(server_text(PlainCodec().error_frame(code, message, event, ref))) == (
        expected)
    assume(not isinstance(ref, str))  # Socket.IO acks ids are integers
    body = server_text(sio(True).error_frame(code, message, event, ref))
    assert body.startswith("42") and json.loads(body[2:]) == ["error", data]
