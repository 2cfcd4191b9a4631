"""§9.4: the validation hook (``_chatroom/validate_change/<topic>``)."""

from __future__ import annotations

from typing import Any

import pytest

from relay.spaces import SpaceSettings
from relay.spaces.testing import Harness

VALIDATOR = "_chatroom/validate_change/t"


def body(frame: dict[str, Any], type: str) -> dict[str, Any]:
    key = "args" if "args" in frame else "content"
    assert set(frame) == {"type", key}, frame
    assert frame["type"] == type, frame
    return frame[key]  # type: ignore[no-any-return]


class Setup:
    def __init__(self, type: str = "int", validator_shape: str = "seed",
                 settings: SpaceSettings | None = None) -> None:
        self.h = Harness(settings=settings)
        self.v = self.h.connect(validator_shape)  # type: ignore[arg-type]
        self.s = self.h.connect("seed")
        self.f = self.h.connect("full")
        self.h.send(self.v, "register_service", {"service_name": VALIDATOR})
        self.h.send(self.v, "subscribe", {"topic_name": f"_chatroom/client_message/{self.v}"})
        self.h.send(self.s, "subscribe", {"topic_name": "t", "type": type})
        self.h.send(self.f, "subscribe", {"topic_name": "t"})
        self.h.clear()

    def update(self, change: dict[str, Any], sender: int | None = None,
               topic: str = "t") -> dict[int, list[dict[str, Any]]]:
        return self.h.send(self.s if sender is None else sender, "update",
                           {"topic_name": topic, "change": change})

    def asked(self, got: dict[int, list[dict[str, Any]]]) -> tuple[str, dict[str, Any]]:
        (frame,) = got[self.v]
        req = body(frame, "request")
        return req["request_id"], req

    def answer(self, rid: str, **fields: Any) -> dict[int, list[dict[str, Any]]]:
        return self.h.send(self.v, "response", {"request_id": rid, **fields})

    @property
    def topic(self) -> Any:
        return self.h.space.topics["t"]


def test_seed_validator_gets_the_change_as_broadcast() -> None:
    t = Setup()
    got = t.update({"type": "set", "value": 5, "id": "c1", "old_value": 99})
    assert list(got) == [t.v]
    rid, req = t.asked(got)
    assert set(req) == {"service_name", "args", "request_id"}
    assert req["service_name"] == VALIDATOR and set(req["args"]) == {"change"}
    assert req["args"]["change"] == {"type": "set", "value": 5, "old_value": 0, "id": "c1"}
    assert t.topic.value == 0
    got = t.answer(rid, response={"valid": True})
    assert set(got) == {t.s, t.f}
    assert body(got[t.s][0], "update") == {"topic_name": "t", "change": req["args"]["change"]}
    assert body(got[t.f][0], "update")["version"] == 1 and t.topic.value == 5


def test_full_validator_sees_topic_and_client() -> None:
    t = Setup(validator_shape="full")
    _rid, req = t.asked(t.update({"type": "add", "value": 2, "id": "c"}, sender=t.f))
    assert set(req) == {"service_name", "args", "request_id", "client_id"}
    assert req["client_id"] == t.f
    assert req["args"] == {"change": {"type": "add", "value": 2, "id": "c", "topic_name": "t",
                                      "topic_type": "int"},
                           "topic_name": "t", "client_id": t.f}


@pytest.mark.parametrize(("response", "reason"), [
    ({"valid": False, "reason": "too high"}, "too high"),
    ({"valid": False}, "unknown"),
    ({"valid": False, "reason": None}, "unknown"),
    ({"valid": False, "reason": "r" * 1500}, "r" * 1000),
])
def test_rejected(response: Any, reason: str) -> None:
    t = Setup()
    change = {"type": "add", "value": 1, "id": "c1"}
    rid, _ = t.asked(t.update(change))
    got = t.answer(rid, response=response)
    assert got == {t.s: [{"type": "reject_update",
                          "args": {"topic_name": "t", "change": change, "reason": reason}}]}
    assert t.topic.version == 0 and t.h.counts[("observer_errors_total", "rejected")] == 1
    rid, _ = t.asked(t.update(change, sender=t.f))
    got = t.answer(rid, response=response)
    assert body(got[t.f][0], "reject_update")["code"] == "rejected"


@pytest.mark.parametrize("fields", [
    {"response": {"valid": 1}}, {"response": True}, {}, {"response": None},
    {"response": {"valid": "true"}}, {"response": {"valid": False, "reason": 5}},
    {"response": [{"valid": True}]}, {"error": "crashed"},
])
def test_validator_failed_answers(fields: dict[str, Any]) -> None:
    t = Setup()
    rid, _ = t.asked(t.update({"type": "add", "value": 1, "id": "c1"}, sender=t.f))
    got = t.answer(rid, **fields)
    assert list(got) == [t.f]
    assert body(got[t.f][0], "reject_update")["code"] == "validator_failed"
    assert t.topic.version == 0


def test_validator_timeout_and_note() -> None:
    t = Setup()
    rid, _ = t.asked(t.update({"type": "add", "value": 1, "id": "c1"}, sender=t.f))
    assert t.h.space.next_deadline() == pytest.approx(t.h.now + 15)
    got = t.h.advance(15)
    assert body(got[t.f][0], "reject_update")["code"] == "validator_failed"
    note = body(got[t.v][0], "update")["change"]["value"]
    assert note == f"request {rid} to {VALIDATOR} timed out"
    assert body(t.answer(rid, response={"valid": True})[t.v][0], "error")["code"] == \
        "unknown_request"


def test_validator_timeout_follows_the_setting() -> None:
    t = Setup(settings=SpaceSettings(service_timeout=2.5))
    t.asked(t.update({"type": "add", "value": 1, "id": "c1"}))
    assert t.h.advance(2.4) == {}
    assert body(t.h.advance(0.1)[t.s][0], "reject_update")["reason"]


def test_validator_disconnect_fails_the_change_and_frees_the_topic() -> None:
    t = Setup()
    t.asked(t.update({"type": "add", "value": 1, "id": "c1"}, sender=t.f))
    t.update({"type": "add", "value": 2, "id": "c2"})  # queued
    got = t.h.disconnect(t.v)
    assert body(got[t.f][0], "reject_update")["code"] == "validator_failed"
    # the queued change is now applied without a validator
    assert body(got[t.s][0], "update")["change"]["id"] == "c2" and t.topic.value == 2


def test_changes_to_one_topic_wait_in_order_other_topics_do_not() -> None:
    t = Setup(type="list")
    t.h.send(t.s, "subscribe", {"topic_name": "other", "type": "int"})
    rid1, _req1 = t.asked(t.update({"type": "insert", "item": "a", "position": 0, "id": "c1"}))
    assert t.update({"type": "pop", "position": 0, "id": "c2"}) == {}  # queued
    assert t.update({"type": "insert", "item": "b", "position": -1, "id": "c3"}) == {}
    got = t.update({"type": "add", "value": 1, "id": "o"}, topic="other")
    assert body(got[t.s][0], "update")["change"]["id"] == "o"
    got = t.answer(rid1, response={"valid": True})
    # c1 applied; c2 checked at its turn against ["a"], sent to the validator
    assert body(got[t.s][0], "update")["change"]["id"] == "c1"
    rid2, req2 = t.asked(got)
    assert req2["args"]["change"] == {"type": "pop", "position": 0, "id": "c2"}
    got = t.answer(rid2, response={"valid": False, "reason": "keep it"})
    assert body(got[t.s][0], "reject_update")["change"]["id"] == "c2"
    rid3, req3 = t.asked(got)
    assert req3["args"]["change"]["position"] == 1  # normalized against ["a"]
    t.answer(rid3, response={"valid": True})
    assert t.topic.value == ["a", "b"] and t.topic.version == 2


def test_queued_change_refused_at_its_turn_skips_the_validator() -> None:
    t = Setup(type="list")
    rid, _ = t.asked(t.update({"type": "set", "value": [1], "id": "c1"}))
    t.update({"type": "pop", "position": 0, "id": "c2"})
    t.update({"type": "pop", "position": 0, "id": "c3"})
    got = t.answer(rid, response={"valid": False})
    assert [(f["type"], f["args"]["change"]["id"]) for f in got[t.s]] == [
        ("reject_update", "c1"), ("reject_update", "c2"), ("reject_update", "c3")]
    assert t.v not in got


def test_waiting_limit() -> None:
    t = Setup()
    t.asked(t.update({"type": "add", "value": 1, "id": "first"}))
    for i in range(99):  # 100 waiting, the one at the validator included
        assert t.update({"type": "add", "value": 1, "id": f"q{i}"}) == {}
    got = t.update({"type": "add", "value": 1, "id": "over"}, sender=t.f)
    assert body(got[t.f][0], "reject_update")["code"] == "rate_limited"
    assert len(t.topic.queue) == 99


def test_string_change_is_transformed_before_validation() -> None:
    t = Setup(type="string")
    t.h.send(t.v, "unregister_service", {"service_name": VALIDATOR})
    t.update({"type": "set", "value": "abc", "id": "s"})
    t.update({"type": "insert", "topic_version": 1, "position": 0, "insertion": "xx"})
    t.h.send(t.v, "register_service", {"service_name": VALIDATOR})
    t.h.clear()
    _, req = t.asked(t.update({"type": "insert", "topic_version": 1, "position": 3,
                               "insertion": "!", "id": "e"}))
    assert req["args"]["change"] == {"type": "insert", "topic_version": 2, "position": 5,
                                     "insertion": "!", "id": "e"}


def test_unregistered_validator_may_still_answer() -> None:
    t = Setup()
    rid, _ = t.asked(t.update({"type": "add", "value": 3, "id": "c1"}))
    t.update({"type": "add", "value": 4, "id": "c2"})
    t.h.send(t.v, "unregister_service", {"service_name": VALIDATOR})
    got = t.answer(rid, response={"valid": True})
    assert [body(f, "update")["change"]["id"] for f in got[t.s]] == ["c1", "c2"]
    assert t.topic.value == 7


def test_validator_may_validate_its_own_changes() -> None:
    t = Setup()
    t.h.send(t.v, "subscribe", {"topic_name": "t"})
    t.h.clear()
    rid, _ = t.asked(t.update({"type": "add", "value": 1, "id": "own"}, sender=t.v))
    got = t.answer(rid, response={"valid": True})
    assert set(got) == {t.v, t.s, t.f}


def test_change_of_a_departed_sender_is_still_applied() -> None:
    t = Setup()
    rid, _ = t.asked(t.update({"type": "add", "value": 1, "id": "c1"}, sender=t.f))
    t.h.disconnect(t.f)
    got = t.answer(rid, response={"valid": True})
    assert list(got) == [t.s] and t.topic.value == 1


def test_space_total_is_checked_again_after_validation() -> None:
    t = Setup(type="string", settings=SpaceSettings(max_space_bytes=40))
    t.h.send(t.s, "subscribe", {"topic_name": "u", "type": "string"})
    rid, _ = t.asked(t.update({"type": "set", "value": "x" * 20, "id": "c1"}))
    t.update({"type": "set", "value": "y" * 17, "id": "big"}, topic="u")
    got = t.answer(rid, response={"valid": True})
    assert body(got[t.s][0], "reject_update")["reason"]
    assert t.h.counts[("observer_errors_total", "too_large")] == 1 and t.topic.value == ""


def test_nobody_else_takes_over_a_validator_and_nobody_requests_it() -> None:
    t = Setup()
    got = t.h.send(t.s, "register_service", {"service_name": VALIDATOR})
    assert body(got[t.s][0], "error")["code"] == "service_taken"
    got = t.h.send(t.s, "request", {"service_name": VALIDATOR, "request_id": 1})
    assert body(got[t.s][0], "error")["code"] == "forbidden"
    assert got[t.s][1] == {"type": "response", "args": {"request_id": 1, "response": None}}


def test_validator_for_a_topic_that_does_not_exist_yet() -> None:
    h = Harness()
    v, a = h.connect(), h.connect()
    h.send(v, "register_service", {"service_name": "_chatroom/validate_change/later"})
    h.send(a, "subscribe", {"topic_name": "later", "type": "generic"})
    got = h.send(a, "update", {"topic_name": "later", "change": {"type": "set", "value": 1}})
    assert list(got) == [v] and got[v][0]["type"] == "request"


def test_validator_answer_over_the_limit_keeps_the_validation_pending() -> None:
    t = Setup(settings=SpaceSettings(max_response_bytes=50))
    rid, _ = t.asked(t.update({"type": "add", "value": 1, "id": "c1"}))
    got = t.answer(rid, response={"valid": True, "pad": "x" * 60})
    assert body(got[t.v][0], "error")["code"] == "too_large" and list(got) == [t.v]
    got = t.answer(rid, response={"valid": True})
    assert t.topic.value == 1 and set(got) == {t.s, t.f}


def test_queued_bytes_are_bounded_per_space() -> None:
    t = Setup(type="generic", settings=SpaceSettings(max_waiting_bytes=200))
    t.asked(t.update({"type": "set", "value": "first", "id": "c1"}))
    t.update({"type": "set", "value": "x" * 100, "id": "c2"})  # ~140 bytes, queued
    got = t.update({"type": "set", "value": "y" * 100, "id": "c3"})
    assert body(got[t.s][0], "reject_update")["change"]["id"] == "c3"
    assert t.h.counts[("observer_errors_total", "rate_limited")] == 1
    assert t.h.space.waiting_bytes == len('{"type":"set","value":"","id":"c2"}') + 100
    t.h.advance(15)  # c1 fails; c2 reaches the validator and leaves the queue
    assert t.h.space.waiting_bytes == 0


def test_overdue_validation_then_validator_disconnects() -> None:
    t = Setup()
    t.asked(t.update({"type": "add", "value": 1, "id": "c1"}))
    t.update({"type": "add", "value": 2, "id": "c2"})
    t.h.now += 20  # no tick before the disconnect
    got = t.h.disconnect(t.v)
    assert [f["type"] for f in got[t.s]] == ["reject_update", "update"]
    assert t.topic.value == 2 and t.h.space.pending == {}
