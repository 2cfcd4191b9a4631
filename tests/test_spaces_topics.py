"""§9.3/§9.4/§9.6/§9.7: subscriptions, the eight topic types, changes, sizes, special topics.

Every seed-shape frame and change is checked for its exact key set: one extra key kills
the seed client's receive thread.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from relay.spaces import SpaceSettings
from relay.spaces.testing import Harness

UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
SEED_ROW_KEYS = {
    "set": {"type", "value", "old_value", "id"},
    "insert_string": {"type", "topic_version", "position", "insertion", "id"},
    "delete": {"type", "topic_version", "position", "deletion", "id"},
    "add_number": {"type", "value", "id"},
    "append": {"type", "item", "id"}, "remove": {"type", "item", "id"},
    "insert_list": {"type", "item", "position", "id"}, "pop_list": {"type", "position", "id"},
    "add_dict": {"type", "key", "value", "id"}, "pop_dict": {"type", "key", "id"},
    "change_value": {"type", "key", "value", "old_value", "id"},
    "emit": {"type", "args", "forward_info", "id"},
}


def args(frame: dict[str, Any], type: str) -> dict[str, Any]:
    assert set(frame) == {"type", "args"}, frame
    assert frame["type"] == type, frame
    return frame["args"]  # type: ignore[no-any-return]


def content(frame: dict[str, Any], type: str) -> dict[str, Any]:
    assert set(frame) == {"type", "content"}, frame
    assert frame["type"] == type, frame
    return frame["content"]  # type: ignore[no-any-return]


def seed_update(frame: dict[str, Any]) -> dict[str, Any]:
    body = args(frame, "update")
    assert set(body) == {"topic_name", "change"}
    return body["change"]  # type: ignore[no-any-return]


def full_update(frame: dict[str, Any]) -> tuple[dict[str, Any], int]:
    body = content(frame, "update")
    assert set(body) == {"topic_name", "change", "version"}
    return body["change"], body["version"]


class Pair:
    """A seed and a full client subscribed to one topic."""

    def __init__(self, type: str, name: str = "t", settings: SpaceSettings | None = None):
        self.h = Harness(settings=settings)
        self.s = self.h.connect("seed")
        self.f = self.h.connect("full")
        self.name = name
        self.h.send(self.s, "subscribe", {"topic_name": name, "type": type})
        self.h.send(self.f, "subscribe", {"topic_name": name})
        self.h.clear()

    def update(self, change: dict[str, Any], sender: int | None = None) -> dict[int, Any]:
        return self.h.send(self.s if sender is None else sender, "update",
                           {"topic_name": self.name, "change": change})

    def applied(self, change: dict[str, Any], row: str) -> tuple[dict[str, Any], int]:
        """Send, expect the same update to both; return the full change and version."""
        got = self.update(change)
        (s_frame,) = got[self.s]
        (f_frame,) = got[self.f]
        s_change = seed_update(s_frame)
        assert set(s_change) == SEED_ROW_KEYS[row], s_change
        f_change, version = full_update(f_frame)
        assert set(f_change) == SEED_ROW_KEYS[row] | {"topic_name", "topic_type"}
        assert {k: f_change[k] for k in s_change} == s_change
        assert f_change["topic_name"] == self.name
        return f_change, version

    def rejected(self, change: dict[str, Any], code: str) -> None:
        topic = self.h.space.topics[self.name]
        before = (topic.value, topic.version, topic.size, self.h.space.space_bytes)
        got = self.update(change)
        assert list(got) == [self.s]
        (frame,) = got[self.s]
        body = args(frame, "reject_update")
        assert set(body) == {"topic_name", "change", "reason"}
        assert body["topic_name"] == self.name and body["change"] == change
        assert isinstance(body["reason"], str)
        got = self.update(change, sender=self.f) if self.f in topic.subscribers else {}
        if got:
            body = content(got[self.f][0], "reject_update")
            assert set(body) == {"topic_name", "change", "code", "reason"}
            assert body["code"] == code, body
        assert (topic.value, topic.version, topic.size, self.h.space.space_bytes) == before

    @property
    def value(self) -> Any:
        return self.h.space.topics[self.name].value


# -- subscribe / unsubscribe ----------------------------------------------------------------

def test_subscribe_creates_with_default_and_answers_a_set() -> None:
    h = Harness()
    s, f, watcher = h.connect("seed"), h.connect("full"), h.connect("full")
    h.send(watcher, "subscribe", {"topic_name": "_chatroom/server_status"})
    h.clear()
    got = h.send(s, "subscribe", {"topic_name": "score", "type": "int"})
    change = seed_update(got[s][0])
    assert set(change) == {"type", "value", "old_value", "id"}
    assert change["type"] == "set" and change["value"] == 0 and change["old_value"] is None
    assert UUID4.fullmatch(change["id"])
    status, _ = full_update(got[watcher][0])
    assert status["value"] == f"topic score created by client {s}"
    got = h.send(f, "subscribe", {"topic_name": "score"})
    change, version = full_update(got[f][0])
    assert change == {"type": "set", "value": 0, "old_value": None, "id": change["id"],
                      "topic_name": "score", "topic_type": "int"}
    assert version == 0 and list(got) == [f]


@pytest.mark.parametrize(("type", "default", "raw"), [
    ("generic", None, b"null"), ("string", "", b'""'), ("int", 0, b"0"),
    ("float", 0.0, b"0.0"), ("set", [], b"[]"), ("list", [], b"[]"), ("dict", {}, b"{}"),
    ("event", None, b"null"),
])
def test_defaults(type: str, default: Any, raw: bytes) -> None:
    h = Harness()
    a = h.connect("seed")
    h.send(a, "subscribe", {"topic_name": "x", "type": type})
    assert seed_update(h.last(a))["value"] == default
    assert b'"value":' + raw + b',"old_value":null' in h.raw[a][-1]


def test_resubscribe_gets_a_fresh_set_and_stays_one_subscriber() -> None:
    p = Pair("int")
    p.update({"type": "add", "value": 2, "id": "a"})
    got = p.h.send(p.f, "subscribe", {"topic_name": "t", "type": "int"})
    change, version = full_update(got[p.f][0])
    assert change["value"] == 2 and version == 1
    got = p.update({"type": "add", "value": 1, "id": "b"})
    assert len(got[p.f]) == 1
    assert p.h.space.inspect(0)["topics"][-1]["subscribers"] == 2


def test_subscribe_errors() -> None:
    h = Harness()
    a = h.connect("full")
    b = h.connect("full")
    h.send(a, "subscribe", {"topic_name": "t", "type": "int"})
    cases = [
        ({"topic_name": "t", "type": "string"}, "type_mismatch"),
        ({"topic_name": "new"}, "topic_not_found"),
        ({"topic_name": "new", "type": None}, "topic_not_found"),
        ({"topic_name": "new", "type": "integer"}, "invalid_payload"),
        ({"topic_name": "new", "type": 3}, "invalid_payload"),
        ({"topic_name": ""}, "invalid_payload"),
        ({"topic_name": "a\tb", "type": "int"}, "invalid_payload"),
        ({"topic_name": 7, "type": "int"}, "invalid_payload"),
        ({"type": "int"}, "invalid_payload"),
        ({"topic_name": "x" * 257, "type": "int"}, "too_large"),
        ({"topic_name": "_chatroom/server_status", "type": "int"}, "type_mismatch"),
        ({"topic_name": f"_chatroom/client_message/{a}"}, "forbidden"),
        ({"topic_name": "_chatroom/client_message/99", "type": "string"}, "forbidden"),
        ({"topic_name": "_chatroom/topic_list", "type": "dict"}, "forbidden"),
        ({"topic_name": "_chatroom/validate_change/t"}, "forbidden"),
        ({"topic_name": f"_chatroom/client_message/{b}", "type": "int"}, "type_mismatch"),
    ]
    for body, code in cases:
        version = h.space.version
        got = h.send(b, "subscribe", body)
        err = content(got[b][0], "error")
        assert err["code"] == code, (body, err)
        assert err["message_type"] == "subscribe"
        assert list(got) == [b] and len(got[b]) == 1
        assert h.space.version == version
        assert "new" not in h.space.topics


def test_special_topics_are_strings_anyone_can_watch_status() -> None:
    h = Harness()
    a = h.connect("seed")
    got = h.send(a, "subscribe", {"topic_name": "_chatroom/server_status", "type": "string"})
    assert seed_update(got[a][0])["value"] == f"client {a} connected"
    got = h.send(a, "subscribe", {"topic_name": f"_chatroom/client_message/{a}"})
    assert seed_update(got[a][0])["value"] == ""
    b = h.connect("seed")
    assert seed_update(h.last(a))["value"] == f"client {b} connected"
    h.disconnect(b)
    assert seed_update(h.last(a))["value"] == f"client {b} disconnected"
    got = h.send(a, "update", {"topic_name": "_chatroom/server_status",
                               "change": {"type": "set", "value": "hacked", "id": "x"}})
    assert args(got[a][0], "reject_update")["reason"]
    assert h.counts[("observer_errors_total", "forbidden")] == 1
    assert h.space.topics["_chatroom/server_status"].value == f"client {b} disconnected"


def test_unsubscribe() -> None:
    p = Pair("int")
    got = p.h.send(p.f, "unsubscribe", {"topic_name": "t"})
    assert got == {}
    got = p.update({"type": "add", "value": 1, "id": "a"})
    assert list(got) == [p.s]
    for body, code in [({"topic_name": "t"}, "not_subscribed"),
                       ({"topic_name": "nope"}, "not_subscribed"),
                       ({"topic_name": 1}, "invalid_payload"),
                       ({"topic_name": "x" * 300}, "too_large")]:
        err = content(p.h.send(p.f, "unsubscribe", body)[p.f][0], "error")
        assert err["code"] == code
    got = p.update({"type": "add", "value": 1, "id": "b"}, sender=p.f)
    assert content(got[p.f][0], "error")["code"] == "not_subscribed"


def test_update_payload_errors() -> None:
    p = Pair("int")
    for body, code in [({"topic_name": "t"}, "invalid_payload"),
                       ({"topic_name": "t", "change": []}, "invalid_payload"),
                       ({"topic_name": 1, "change": {}}, "invalid_payload"),
                       ({"change": {"type": "add", "value": 1}}, "invalid_payload"),
                       ({"topic_name": "u", "change": {"type": "add", "value": 1}},
                        "not_subscribed")]:
        got = p.h.send(p.s, "update", body)
        err = args(got[p.s][0], "error")
        assert err["code"] == code and err["message_type"] == "update"
        assert err.get("topic_name") == (body["topic_name"] if isinstance(
            body.get("topic_name"), str) else None)


def test_limits_topics_and_subscriptions() -> None:
    h = Harness(settings=SpaceSettings(max_topics=3, max_subscriptions=2))
    a, b = h.connect("full"), h.connect("full")
    h.send(a, "subscribe", {"topic_name": "t1", "type": "int"})
    h.send(a, "subscribe", {"topic_name": "t2", "type": "int"})
    h.send(a, "subscribe", {"topic_name": "_chatroom/server_status"})  # does not count
    h.send(a, "subscribe", {"topic_name": "t1", "type": "int"})  # again: does not count
    err = content(h.send(a, "subscribe", {"topic_name": "t3", "type": "int"})[a][0], "error")
    assert err["code"] == "too_large" and "t3" not in h.space.topics
    h.send(b, "subscribe", {"topic_name": "t3", "type": "int"})
    err = content(h.send(b, "subscribe", {"topic_name": "t4", "type": "int"})[b][0], "error")
    assert err["code"] == "too_large"
    h.send(a, "unsubscribe", {"topic_name": "t2"})
    full_update(h.send(a, "subscribe", {"topic_name": "t3"})[a][0])


def test_default_limits_are_the_documented_ones() -> None:
    s = SpaceSettings()
    assert (s.max_topics, s.max_subscriptions, s.max_name_chars) == (1000, 1000, 256)
    assert (s.max_change_bytes, s.max_value_bytes, s.max_space_bytes) == (
        2**20, 2**20, 16 * 2**20)
    assert (s.string_history, s.max_waiting_changes) == (100, 100)
    assert (s.max_services_per_client, s.max_services) == (100, 1000)
    assert (s.max_args_bytes, s.max_pending_requests) == (64 * 1024, 100)
    assert (s.min_timeout, s.max_timeout, s.service_timeout) == (1, 60, 15)
    assert (s.max_response_bytes, s.max_reason_chars, s.max_spaces) == (2**20, 1000, 100)


def test_thousand_topics_per_space() -> None:
    h = Harness()
    a, b = h.connect("full"), h.connect("full")
    for i in range(1000):
        h.send(a if i < 999 else b, "subscribe", {"topic_name": f"t{i}", "type": "int"})
    assert h.space.regular_topics == 1000
    err = content(h.send(b, "subscribe", {"topic_name": "more", "type": "int"})[b][0], "error")
    assert err["code"] == "too_large"
    full_update(h.send(a, "subscribe", {"topic_name": "t999"})[a][0])  # a's 1,000th
    assert h.space.clients[a].regular_subscriptions == 1000


# -- changes ----------------------------------------------------------------------------------

def test_generic_set_echo_and_old_value() -> None:
    p = Pair("generic")
    change, version = p.applied({"type": "set", "value": {"a": [1, 2.5]}, "id": "c1"}, "set")
    assert change["old_value"] is None and version == 1 and change["id"] == "c1"
    change, version = p.applied({"type": "set", "value": 3, "id": "c2", "old_value": "lie",
                                 "extra": True}, "set")
    assert change["old_value"] == {"a": [1, 2.5]} and version == 2
    p.rejected({"type": "set", "id": "c3"}, "invalid_change")
    p.rejected({"type": "add", "value": 1}, "type_mismatch")


def test_change_id_rules() -> None:
    p = Pair("generic")
    change, _ = p.applied({"type": "set", "value": 1}, "set")
    assert UUID4.fullmatch(change["id"])
    change, _ = p.applied({"type": "set", "value": 1, "id": None}, "set")
    assert UUID4.fullmatch(change["id"])
    change, _ = p.applied({"type": "set", "value": 1, "id": "x" * 64}, "set")
    assert change["id"] == "x" * 64
    for bad in ["", "x" * 65, 5, [], True]:
        p.rejected({"type": "set", "value": 1, "id": bad}, "invalid_change")


def test_change_type_and_topic_keys() -> None:
    p = Pair("int")
    p.rejected({"value": 1, "id": "a"}, "invalid_change")
    p.rejected({"type": 3, "value": 1, "id": "a"}, "invalid_change")
    p.rejected({"type": "emit", "id": "a"}, "type_mismatch")
    p.rejected({"type": "set", "value": 1, "topic_type": "float"}, "type_mismatch")
    p.rejected({"type": "set", "value": 1, "topic_type": 1}, "type_mismatch")
    p.rejected({"type": "set", "value": 1, "topic_name": "other"}, "invalid_change")
    p.applied({"type": "set", "value": 1, "topic_name": "t", "topic_type": "int"}, "set")
    p.applied({"type": "set", "value": 2, "topic_name": None, "topic_type": None}, "set")


def test_int_topic() -> None:
    p = Pair("int")
    big = 2**53 - 1
    change, _ = p.applied({"type": "set", "value": big - 5, "id": "a"}, "set")
    assert change["old_value"] == 0
    change, _ = p.applied({"type": "add", "value": 5, "id": "b"}, "add_number")
    assert change["value"] == 5 and p.value == big
    p.rejected({"type": "add", "value": 1}, "invalid_change")  # sum out of range
    p.rejected({"type": "set", "value": big + 1}, "invalid_change")
    p.rejected({"type": "set", "value": 2.0}, "invalid_change")
    p.rejected({"type": "set", "value": True}, "invalid_change")
    p.rejected({"type": "set", "value": "1"}, "invalid_change")
    p.rejected({"type": "add", "value": 1.5}, "invalid_change")
    p.rejected({"type": "add", "value": -(2**54)}, "invalid_change")
    p.applied({"type": "set", "value": -big}, "set")


def test_float_topic_sends_fractions() -> None:
    p = Pair("float")
    p.applied({"type": "set", "value": 2, "id": "a"}, "set")
    assert b'"value":2.0,"old_value":0.0' in p.h.raw[p.s][-1]
    p.applied({"type": "add", "value": 3, "id": "b"}, "add_number")
    assert b'"value":3.0' in p.h.raw[p.f][-1] and p.value == 5.0
    p.applied({"type": "add", "value": -0.5, "id": "c"}, "add_number")
    assert p.value == 4.5
    p.applied({"type": "set", "value": 1.7e308, "id": "d"}, "set")
    p.rejected({"type": "add", "value": 1e308}, "invalid_change")  # not finite
    p.rejected({"type": "set", "value": "1"}, "invalid_change")
    p.rejected({"type": "set", "value": True}, "invalid_change")
    p.rejected({"type": "set", "value": None}, "invalid_change")
    p.rejected({"type": "add"}, "invalid_change")


def test_float_topic_refuses_integers_beyond_float_range() -> None:
    p = Pair("float")
    # 10**309 decodes as a Python int (no exponent) but has no 64-bit float
    text = '{"type":"update","args":{"topic_name":"t","change":{"type":"set","value":1' \
        + "0" * 309 + "}}}"
    got = p.h.send_text(p.s, text)
    assert args(got[p.s][0], "reject_update")["reason"]
    assert p.value == 0.0


def test_set_topic() -> None:
    p = Pair("set")
    p.applied({"type": "set", "value": [1, "1", True, None, [1], {"a": 1}]}, "set")
    p.rejected({"type": "set", "value": [1, 1.0]}, "invalid_change")
    p.rejected({"type": "set", "value": [{"a": 1, "b": 2}, {"b": 2, "a": 1}]}, "invalid_change")
    p.rejected({"type": "set", "value": {"a": 1}}, "invalid_change")
    p.rejected({"type": "append", "item": 1.0}, "invalid_change")
    p.rejected({"type": "append", "item": [1.0]}, "invalid_change")
    p.rejected({"type": "append"}, "invalid_change")
    change, _ = p.applied({"type": "append", "item": False}, "append")
    assert change["item"] is False
    p.applied({"type": "append", "item": 0}, "append")  # false is not 0
    change, _ = p.applied({"type": "remove", "item": 1.0}, "remove")
    assert change["item"] == 1.0
    assert p.value == ["1", True, None, [1], {"a": 1}, False, 0]
    p.rejected({"type": "remove", "item": 1}, "invalid_change")
    p.applied({"type": "remove", "item": {"a": 1.0}}, "remove")
    assert p.value == ["1", True, None, [1], False, 0]


def test_list_topic_positions_are_normalized() -> None:
    p = Pair("list")
    p.applied({"type": "set", "value": ["a", "b"]}, "set")
    change, _ = p.applied({"type": "insert", "item": "z", "position": -1}, "insert_list")
    assert change["position"] == 2 and p.value == ["a", "b", "z"]
    change, _ = p.applied({"type": "insert", "item": "y", "position": -4}, "insert_list")
    assert change["position"] == 0 and p.value == ["y", "a", "b", "z"]
    change, _ = p.applied({"type": "insert", "item": None, "position": 4}, "insert_list")
    assert change["position"] == 4 and p.value == ["y", "a", "b", "z", None]
    p.rejected({"type": "insert", "item": 1, "position": 6}, "invalid_change")
    p.rejected({"type": "insert", "item": 1, "position": -7}, "invalid_change")
    p.rejected({"type": "insert", "item": 1, "position": 1.0}, "invalid_change")
    p.rejected({"type": "insert", "position": 1}, "invalid_change")
    change, _ = p.applied({"type": "pop", "position": -1}, "pop_list")
    assert change["position"] == 4 and p.value == ["y", "a", "b", "z"]
    change, _ = p.applied({"type": "pop", "position": 0}, "pop_list")
    assert p.value == ["a", "b", "z"]
    p.rejected({"type": "pop", "position": 3}, "invalid_change")
    p.rejected({"type": "pop", "position": -4}, "invalid_change")
    p.rejected({"type": "pop"}, "invalid_change")
    p.applied({"type": "set", "value": []}, "set")
    p.rejected({"type": "pop", "position": 0}, "invalid_change")
    p.rejected({"type": "pop", "position": -1}, "invalid_change")
    p.applied({"type": "insert", "item": 1, "position": -1}, "insert_list")
    assert p.value == [1]


def test_dict_topic() -> None:
    p = Pair("dict")
    change, _ = p.applied({"type": "add", "key": "a", "value": 1}, "add_dict")
    assert p.value == {"a": 1}
    p.rejected({"type": "add", "key": "a", "value": 2}, "invalid_change")
    p.rejected({"type": "add", "key": 1, "value": 2}, "invalid_change")
    p.rejected({"type": "add", "key": "b"}, "invalid_change")
    change, _ = p.applied({"type": "change_value", "key": "a", "value": [2]}, "change_value")
    assert change["old_value"] == 1 and p.value == {"a": [2]}
    p.rejected({"type": "change_value", "key": "zz", "value": 1}, "invalid_change")
    p.rejected({"type": "change_value", "key": "a"}, "invalid_change")
    p.applied({"type": "pop", "key": "a"}, "pop_dict")
    assert p.value == {}
    p.rejected({"type": "pop", "key": "a"}, "invalid_change")
    p.rejected({"type": "set", "value": [1]}, "invalid_change")
    change, _ = p.applied({"type": "set", "value": {"k": None}}, "set")
    assert change["old_value"] == {}


def test_event_topic() -> None:
    p = Pair("event")
    change, version = p.applied({"type": "emit", "id": "e1"}, "emit")
    assert change["args"] == {} and change["forward_info"] == {} and version == 1
    change, version = p.applied({"type": "emit", "args": {"x": 1}, "forward_info": None},
                                "emit")
    assert change["args"] == {"x": 1} and change["forward_info"] == {} and version == 2
    assert p.value is None
    p.rejected({"type": "emit", "args": [1]}, "invalid_change")
    p.rejected({"type": "emit", "forward_info": "x"}, "invalid_change")
    p.rejected({"type": "set", "value": None}, "type_mismatch")
    got = p.h.send(p.f, "subscribe", {"topic_name": "t"})
    change, version = full_update(got[p.f][0])
    assert change["value"] is None and change["type"] == "set" and version == 2


def test_string_topic_basic() -> None:
    p = Pair("string")
    p.applied({"type": "set", "value": "héllo"}, "set")
    change, version = p.applied({"type": "insert", "topic_version": 1, "position": 5,
                                 "insertion": "!"}, "insert_string")
    assert change["topic_version"] == 1 and version == 2 and p.value == "héllo!"
    change, _ = p.applied({"type": "delete", "topic_version": 2, "position": 1,
                           "deletion": "é"}, "delete")
    assert p.value == "hllo!"
    p.rejected({"type": "insert", "topic_version": 3, "position": 6, "insertion": "x"},
               "invalid_change")
    p.rejected({"type": "delete", "topic_version": 3, "position": 0, "deletion": "x"},
               "invalid_change")
    p.rejected({"type": "insert", "topic_version": 3, "position": -1, "insertion": "x"},
               "invalid_change")
    p.rejected({"type": "insert", "topic_version": 3, "position": 0, "insertion": 1},
               "invalid_change")
    p.rejected({"type": "insert", "topic_version": "3", "position": 0, "insertion": "x"},
               "invalid_change")
    p.rejected({"type": "insert", "topic_version": 4, "position": 0, "insertion": "x"},
               "bad_version")
    p.rejected({"type": "insert", "topic_version": -1, "position": 0, "insertion": "x"},
               "bad_version")
    p.rejected({"type": "set", "value": 5}, "invalid_change")
    p.rejected({"type": "append", "item": "x"}, "type_mismatch")


def test_refused_change_changes_nothing_and_later_ones_apply() -> None:
    p = Pair("list")
    p.rejected({"type": "pop", "position": 0}, "invalid_change")
    _, version = p.applied({"type": "insert", "item": 1, "position": 0}, "insert_list")
    assert version == 1


# -- sizes ------------------------------------------------------------------------------------

def test_change_and_value_sizes() -> None:
    p = Pair("string", settings=SpaceSettings(max_change_bytes=100, max_value_bytes=60,
                                              max_space_bytes=200))
    p.applied({"type": "set", "value": "x" * 58, "id": "a"}, "set")  # 60 bytes with quotes
    assert p.h.space.topics["t"].size == 60
    p.rejected({"type": "insert", "topic_version": 1, "position": 0, "insertion": "y"},
               "too_large")
    p.rejected({"type": "set", "value": "x" * 80, "id": "b"}, "too_large")  # value
    p.rejected({"type": "set", "value": "", "id": "b", "pad": "p" * 100}, "too_large")
    p.applied({"type": "set", "value": "é" * 29, "id": "c"}, "set")  # 58 UTF-8 bytes + 2


def test_space_total_size() -> None:
    h = Harness(settings=SpaceSettings(max_space_bytes=100))
    a = h.connect("full")
    h.send(a, "subscribe", {"topic_name": "a", "type": "string"})  # 2 bytes
    h.send(a, "subscribe", {"topic_name": "b", "type": "string"})  # 2 bytes
    assert h.space.space_bytes == 4
    h.send(a, "update", {"topic_name": "a", "change": {"type": "set", "value": "x" * 94}})
    assert h.space.space_bytes == 98
    got = h.send(a, "update", {"topic_name": "b", "change": {"type": "set", "value": "xxx"}})
    assert content(got[a][0], "reject_update")["code"] == "too_large"
    h.send(a, "update", {"topic_name": "b", "change": {"type": "set", "value": "xx"}})
    assert h.space.space_bytes == 100
    assert h.space.topics["_chatroom/server_status"].size > 2  # specials do not count


def test_incremental_sizes_match_the_encoding() -> None:
    from relay.spaces.values import json_size

    p = Pair("dict")
    for change in [{"type": "add", "key": "é\n", "value": [1, 2.5]},
                   {"type": "add", "key": "b", "value": "\"q\""},
                   {"type": "change_value", "key": "b", "value": None},
                   {"type": "pop", "key": "é\n"}, {"type": "pop", "key": "b"}]:
        p.update(change)
        assert p.h.space.topics["t"].size == json_size(p.value)
    q = Pair("set")
    for change in [{"type": "append", "item": "x\u0001"}, {"type": "append", "item": 1},
                   {"type": "remove", "item": 1.0}, {"type": "remove", "item": "x\u0001"}]:
        q.update(change)
        assert q.h.space.topics["t"].size == json_size(q.value)
    r = Pair("list")
    for change in [{"type": "insert", "item": {"a": "😀"}, "position": 0},
                   {"type": "insert", "item": 2, "position": -1}, {"type": "pop", "position": 0},
                   {"type": "pop", "position": 0}]:
        r.update(change)
        assert r.h.space.topics["t"].size == json_size(r.value)


def test_stored_values_are_never_mutated() -> None:
    """A subscriber's initial set, rendered late by the shell, shows the value it was."""
    h = Harness()
    a, b = h.connect("full"), h.connect("full")
    h.send(a, "subscribe", {"topic_name": "l", "type": "list"})
    actions = h.space.receive(b, json.dumps({"type": "subscribe", "args": {"topic_name": "l"}}),
                              now=h.now, entropy=h.entropy)
    h.send(a, "update", {"topic_name": "l", "change": {"type": "insert", "item": 1,
                                                       "position": 0}})
    got = h.run(actions)  # rendered after the insert
    assert full_update(got[b][0])[0]["value"] == []


def test_dict_key_order() -> None:
    p = Pair("dict")
    p.applied({"type": "set", "value": {"a": 1, "b": 2}}, "set")
    p.applied({"type": "change_value", "key": "a", "value": 3}, "change_value")
    p.applied({"type": "add", "key": "c", "value": 4}, "add_dict")
    p.applied({"type": "pop", "key": "b"}, "pop_dict")
    p.applied({"type": "add", "key": "b", "value": 5}, "add_dict")
    assert p.h.space.inspect(0)["topics"][-1]["preview"] == '{"a":3,"c":4,"b":5}'
