"""§9.2: frames, the two shapes, frame errors, error echoes; hello and client ids (§9.1)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.spaces import Counted, Deliver, SeededEntropy, Space
from relay.spaces.frames import ServerFrame
from relay.spaces.testing import Harness

ERROR_KEYS = {"code", "message", "message_type"}


def seed(frame: dict[str, Any], type: str) -> dict[str, Any]:
    """The args of a seed-shape frame, after checking the envelope's exact keys."""
    assert set(frame) == {"type", "args"}, frame
    assert frame["type"] == type, frame
    return frame["args"]  # type: ignore[no-any-return]


def full(frame: dict[str, Any], type: str) -> dict[str, Any]:
    assert set(frame) == {"type", "content"}, frame
    assert frame["type"] == type, frame
    return frame["content"]  # type: ignore[no-any-return]


def test_hello_in_both_shapes_is_the_first_frame() -> None:
    h = Harness("demo")
    a = h.connect("seed")
    b = h.connect("full")
    assert seed(h.inbox[a][0], "hello") == {"id": 1}
    assert full(h.inbox[b][0], "hello") == {"id": 2, "space": "demo"}
    assert len(h.inbox[a]) == 1 and len(h.inbox[b]) == 1


def test_client_ids_count_from_one_and_are_never_reused() -> None:
    h = Harness()
    assert h.connect() == 1
    assert h.connect() == 2
    h.disconnect(2)
    h.disconnect(1)
    assert h.space.is_empty
    assert h.connect() == 3


def test_render_encodes_once_per_shape() -> None:
    frame = ServerFrame("update", {"a": 1, "b": 2.0}, {"a": 1})
    first = frame.render("seed")
    assert frame.render("seed") is first
    assert frame.render("full") is frame.render("full")
    assert first == b'{"type":"update","args":{"a":1}}'
    assert frame.render("full") == b'{"type":"update","content":{"a":1,"b":2.0}}'


def test_non_ascii_is_kept_in_compact_json() -> None:
    h = Harness()
    a = h.connect("full")
    h.send(a, "subscribe", {"topic_name": "t", "type": "string"})
    h.send(a, "update", {"topic_name": "t", "change": {"type": "set", "value": "é😀", "id": "x"}})
    assert "é😀".encode() in h.raw[a][-1]
    assert b": " not in h.raw[a][-1] and b", " not in h.raw[a][-1]


def errors_of(got: dict[int, list[dict[str, Any]]], cid: int) -> list[dict[str, Any]]:
    return [seed(f, "error") for f in got.get(cid, [])]


@pytest.mark.parametrize("text", [
    "not json", "{", "", "[1,]", "NaN", "1e400", '{"type":"subscribe","args":{"x":1e400}}',
    "9" * 5000, '"\\ud800"', "[" * 5000 + "]" * 5000,
    '{"type":"update","args":' + "[" * 200 + "]" * 200 + "}",
])
def test_bad_json(text: str) -> None:
    h = Harness()
    a = h.connect()
    got = h.send_text(a, text)
    (err,) = errors_of(got, a)
    assert set(err) == ERROR_KEYS
    assert err["code"] == "bad_json" and err["message_type"] is None
    assert h.counts[("observer_errors_total", "bad_json")] == 1


def test_nesting_up_to_the_limit_is_accepted() -> None:
    h = Harness()
    a = h.connect("full")
    h.send(a, "subscribe", {"topic_name": "g", "type": "generic"})
    deep: Any = 1
    for _ in range(125):  # frame, content, change objects: 3 levels, + 125 lists = 128
        deep = [deep]
    got = h.send(a, "update", {"topic_name": "g", "change": {"type": "set", "value": deep}},
                 envelope="content")
    assert full(got[a][0], "update")["change"]["value"] == deep
    got = h.send(a, "update", {"topic_name": "g", "change": {"type": "set", "value": [deep]}})
    assert full(got[a][0], "error")["code"] == "bad_json"


@pytest.mark.parametrize(("frame", "message_type"), [
    ([], None), ("x", None), (1, None), (None, None),
    ({}, None), ({"type": 5}, None), ({"type": ""}, ""), ({"type": None}, None),
    ({"type": "x" * 65}, "x" * 65), ({"type": ["subscribe"]}, None),
    ({"type": "subscribe", "args": 5}, "subscribe"),
    ({"type": "subscribe", "args": []}, "subscribe"),
    ({"type": "subscribe", "content": "x"}, "subscribe"),
    ({"type": "nope", "args": 1}, "nope"),
])
def test_bad_frame(frame: Any, message_type: str | None) -> None:
    h = Harness()
    a = h.connect()
    (err,) = errors_of(h.send_text(a, json.dumps(frame)), a)
    assert set(err) == ERROR_KEYS
    assert err["code"] == "bad_frame"
    assert err["message_type"] == message_type


def test_binary_is_bad_frame() -> None:
    h = Harness()
    a = h.connect("full")
    h.run(h.space.binary(a))
    err = full(h.last(a), "error")
    assert err == {"code": "bad_frame", "message": err["message"], "message_type": None}


@pytest.mark.parametrize("type_", ["action", "hello", "Subscribe", "reject_update", "init"])
def test_unknown_event(type_: str) -> None:
    h = Harness()
    a = h.connect()
    (err,) = errors_of(h.send(a, type_, {"topic_name": "t", "service_name": 3,
                                         "request_id": 7}), a)
    assert err == {"code": "unknown_event", "message": err["message"], "message_type": type_,
                   "topic_name": "t", "request_id": 7}


def test_body_is_args_else_content_else_empty() -> None:
    h = Harness()
    a = h.connect()
    h.send_text(a, json.dumps({"type": "subscribe", "content": {"topic_name": "c",
                                                                "type": "int"}}))
    assert seed(h.last(a), "update")["topic_name"] == "c"
    # args wins over content
    h.send_text(a, json.dumps({"type": "subscribe", "args": {"topic_name": "d", "type": "int"},
                               "content": {"topic_name": "e", "type": "int"}}))
    assert seed(h.last(a), "update")["topic_name"] == "d"
    # null args counts as absent: content is read
    h.send_text(a, json.dumps({"type": "subscribe", "args": None,
                               "content": {"topic_name": "f", "type": "int"}}))
    assert seed(h.last(a), "update")["topic_name"] == "f"
    # no body at all: {} → the subscribe lacks its topic_name
    (err,) = errors_of(h.send_text(a, '{"type":"subscribe"}'), a)
    assert err["code"] == "invalid_payload" and err["message_type"] == "subscribe"


@pytest.mark.parametrize(("body", "expected"), [
    ({"topic_name": "t", "service_name": "s", "request_id": "r"},
     {"topic_name": "t", "service_name": "s", "request_id": "r"}),
    ({"topic_name": 1, "service_name": None, "request_id": True}, {}),
    ({"request_id": 5}, {"request_id": 5}),
    ({"request_id": -(2**53 - 1)}, {"request_id": -(2**53 - 1)}),
    ({"request_id": 2**53}, {}),
    ({"request_id": 1.5}, {}),
    ({"topic_name": ["t"]}, {}),
])
def test_error_echoes_strings_and_integer_request_ids(body: dict[str, Any],
                                                       expected: dict[str, Any]) -> None:
    h = Harness()
    a = h.connect()
    (err,) = errors_of(h.send(a, "whatever", body), a)
    assert {k: v for k, v in err.items() if k not in ERROR_KEYS} == expected


def test_errors_go_only_to_the_offender_and_change_nothing() -> None:
    h = Harness()
    a, b = h.connect(), h.connect()
    h.send(b, "subscribe", {"topic_name": "_chatroom/server_status"})
    h.clear()
    version = h.space.version
    got = h.send_text(a, "garbage")
    assert list(got) == [a]
    assert h.space.version == version


def test_rate_limited_error_reads_the_type_when_it_can() -> None:
    space = Space("s")
    e = SeededEntropy(0)
    a, _ = space.connect("seed", now=0, entropy=e)
    actions = space.rate_limited(a, '{"type":"update","args":{}}')
    assert isinstance(actions[0], Deliver) and actions[1] == Counted("observer_errors_total",
                                                                      "rate_limited")
    assert json.loads(actions[0].frame.render("seed")) == {
        "type": "error", "args": {"code": "rate_limited", "message": "rate limit exceeded",
                                  "message_type": "update"}}
    actions = space.rate_limited(a, "{{{")
    assert isinstance(actions[0], Deliver)
    assert actions[0].frame.full["message_type"] is None
    assert space.rate_limited(99, "{}") == []


def test_unknown_client_ids_are_ignored() -> None:
    space = Space("s")
    e = SeededEntropy(0)
    assert space.receive(5, "{}", now=0, entropy=e) == []
    assert space.disconnect(5, now=0, entropy=e) == []
    assert space.binary(5) == []


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False,
                                                          allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8)
CLIENT_TYPES = ["subscribe", "unsubscribe", "update", "register_service",
                "unregister_service", "request", "response", "nope"]
KEYS = ["topic_name", "type", "change", "service_name", "request_id", "args", "timeout",
        "response", "error"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.sampled_from(CLIENT_TYPES),
                          st.dictionaries(st.sampled_from(KEYS), json_values | st.sampled_from(
                              ["t", "s", "int", "string", {"type": "set", "value": 1}]),
                              max_size=5)), max_size=25))
def test_random_frames_never_raise(frames: list[tuple[int, str, dict[str, Any]]]) -> None:
    h = Harness()
    clients = [h.connect("seed"), h.connect("full"), h.connect("seed")]
    for i, type_, body in frames:
        got = h.send(clients[i], type_, body)
        for frame in got.get(clients[i], []):
            if frame["type"] == "error":
                err = frame.get("args") or frame["content"]
                assert {"code", "message", "message_type"} <= set(err)
                assert set(err) <= {"code", "message", "message_type", "topic_name",
                                    "service_name", "request_id"}
    h.advance(100)


def test_messages_in_are_counted_by_type() -> None:
    h = Harness()
    a = h.connect()
    h.send(a, "subscribe", {"topic_name": "t", "type": "int"})
    h.send(a, "nope", {})
    h.send_text(a, "junk")
    h.run(h.space.binary(a))
    assert h.counts[("observer_messages_in_total", "subscribe")] == 1
    assert h.counts[("observer_messages_in_total", "unknown")] == 3


def test_every_client_type_has_a_handler() -> None:
    from relay.spaces.parsing import CLIENT_TYPES
    from relay.spaces.space import _HANDLERS

    assert set(_HANDLERS) == CLIENT_TYPES
