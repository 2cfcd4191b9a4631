"""§9.5/§9.6: services, requests, responses, timeouts, disconnections, client_message notes."""

from __future__ import annotations

import re
from typing import Any

import pytest

from relay.spaces import SpaceSettings
from relay.spaces.testing import Harness

UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def body(frame: dict[str, Any], type: str) -> dict[str, Any]:
    key = "args" if "args" in frame else "content"
    assert set(frame) == {"type", key}, frame
    assert frame["type"] == type, frame
    return frame[key]  # type: ignore[no-any-return]


class Setup:
    """A provider of ``sum`` and two requesters, one per shape; all watch the status."""

    def __init__(self, provider_shape: str = "seed", settings: SpaceSettings | None = None):
        self.h = Harness(settings=settings)
        self.p = self.h.connect(provider_shape)  # type: ignore[arg-type]
        self.s = self.h.connect("seed")
        self.f = self.h.connect("full")
        self.h.send(self.p, "register_service", {"service_name": "sum"})
        self.h.send(self.p, "subscribe", {"topic_name": f"_chatroom/client_message/{self.p}"})
        self.h.clear()

    def request(self, client: int, **fields: Any) -> dict[int, list[dict[str, Any]]]:
        payload = {"service_name": "sum", "request_id": "q1", **fields}
        return self.h.send(client, "request", payload)

    def forwarded(self, got: dict[int, list[dict[str, Any]]]) -> str:
        (frame,) = got[self.p]
        return body(frame, "request")["request_id"]  # type: ignore[no-any-return]

    def respond(self, rid: Any, **fields: Any) -> dict[int, list[dict[str, Any]]]:
        return self.h.send(self.p, "response", {"request_id": rid, **fields})


def assert_seed_failure(frames: list[dict[str, Any]], request_id: Any, code: str,
                        service: str | None = "sum") -> None:
    error, response = frames
    err = body(error, "error")
    expected = {"code", "message", "message_type", "request_id"}
    if service is not None:
        expected.add("service_name")
        assert err["service_name"] == service
    assert set(err) == expected and error.keys() == {"type", "args"}
    assert err["code"] == code and err["message_type"] == "request"
    assert err["request_id"] == request_id
    assert response == {"type": "response", "args": {"request_id": request_id,
                                                     "response": None}}


def assert_full_failure(frames: list[dict[str, Any]], request_id: Any, code: str) -> None:
    (response,) = frames
    content = body(response, "response")
    assert set(response) == {"type", "content"}
    assert set(content) == {"request_id", "response", "error"}
    assert content["request_id"] == request_id and content["response"] is None
    assert set(content["error"]) == {"code", "message"} and content["error"]["code"] == code


# -- register / unregister ------------------------------------------------------------------

def test_register_and_status() -> None:
    h = Harness()
    w, a, b = h.connect("full"), h.connect("seed"), h.connect("seed")
    h.send(w, "subscribe", {"topic_name": "_chatroom/server_status"})
    got = h.send(a, "register_service", {"service_name": "svc"})
    assert body(got[w][0], "update")["change"]["value"] == f"service svc registered by client {a}"
    assert list(got) == [w]
    assert h.send(a, "register_service", {"service_name": "svc"}) == {}  # again: no change
    err = body(h.send(b, "register_service", {"service_name": "svc"})[b][0], "error")
    assert err["code"] == "service_taken" and err["service_name"] == "svc"
    err = body(h.send(b, "unregister_service", {"service_name": "svc"})[b][0], "error")
    assert err["code"] == "forbidden"
    got = h.send(a, "unregister_service", {"service_name": "svc"})
    assert body(got[w][0], "update")["change"]["value"] == "service svc unregistered"
    err = body(h.send(a, "unregister_service", {"service_name": "svc"})[a][0], "error")
    assert err["code"] == "service_not_found"
    h.send(b, "register_service", {"service_name": "svc"})
    assert h.space.services["svc"] == b


@pytest.mark.parametrize(("name", "code"), [
    (None, "invalid_payload"), (3, "invalid_payload"), ("", "invalid_payload"),
    ("a\nb", "invalid_payload"), ("x" * 257, "too_large"),
    ("_chatroom/server_status", "forbidden"), ("_chatroom/anything", "forbidden"),
    ("_chatroom/validate_change/_chatroom/server_status", "forbidden"),
    ("_chatroom/validate_change/", "invalid_payload"),
    ("_chatroom/validate_change/" + "x" * 257, "too_large"),
])
def test_register_errors(name: Any, code: str) -> None:
    h = Harness()
    a = h.connect("seed")
    err = body(h.send(a, "register_service", {"service_name": name})[a][0], "error")
    assert err["code"] == code and err["message_type"] == "register_service"
    assert h.space.services == {}


def test_validator_names_may_exceed_256_characters() -> None:
    h = Harness()
    a = h.connect("seed")
    name = "_chatroom/validate_change/" + "x" * 256
    h.send(a, "register_service", {"service_name": name})
    assert h.space.services == {name: a}


def test_service_limits() -> None:
    h = Harness(settings=SpaceSettings(max_services_per_client=2, max_services=3))
    a, b = h.connect(), h.connect()
    h.send(a, "register_service", {"service_name": "a1"})
    h.send(a, "register_service", {"service_name": "a2"})
    err = body(h.send(a, "register_service", {"service_name": "a3"})[a][0], "error")
    assert err["code"] == "too_large"
    h.send(b, "register_service", {"service_name": "b1"})
    err = body(h.send(b, "register_service", {"service_name": "b2"})[b][0], "error")
    assert err["code"] == "too_large"
    assert set(h.space.services) == {"a1", "a2", "b1"}


# -- requests -------------------------------------------------------------------------------

def test_request_round_trip_both_shapes() -> None:
    t = Setup("seed")
    got = t.request(t.s, args={"a": 1, "b": 2})
    (fwd,) = got[t.p]
    assert set(fwd) == {"type", "args"}
    assert set(fwd["args"]) == {"service_name", "args", "request_id"}
    rid = fwd["args"]["request_id"]
    assert UUID4.fullmatch(rid) and fwd["args"]["args"] == {"a": 1, "b": 2}
    got = t.respond(rid, response=3)
    assert got == {t.s: [{"type": "response", "args": {"request_id": "q1", "response": 3}}]}
    got = t.request(t.f, request_id=7)  # same service, integer id, args default {}
    rid = t.forwarded(got)
    assert body(got[t.p][0], "request")["args"] == {}
    got = t.respond(rid)  # absent response = null
    assert got == {t.f: [{"type": "response", "content": {"request_id": 7, "response": None}}]}
    assert t.h.counts[("observer_service_requests_total", "ok")] == 2


def test_full_shape_provider_sees_client_id() -> None:
    t = Setup("full")
    got = t.request(t.s)
    fwd = body(got[t.p][0], "request")
    assert set(fwd) == {"service_name", "args", "request_id", "client_id"}
    assert fwd["client_id"] == t.s and fwd["request_id"] != "q1"


def test_request_ids_are_per_requester() -> None:
    t = Setup()
    r1 = t.forwarded(t.request(t.s))
    r2 = t.forwarded(t.request(t.f))
    assert r1 != r2
    assert t.respond(r2, response="f")[t.f][0]["content"]["response"] == "f"
    assert t.respond(r1, response="s")[t.s][0]["args"]["response"] == "s"


@pytest.mark.parametrize("rid", [None, "", "x" * 65, 1.5, True, 2**53, [1], {"a": 1}])
def test_bad_request_id_is_only_an_error(rid: Any) -> None:
    t = Setup()
    got = t.h.send(t.s, "request", {"service_name": "sum", "request_id": rid})
    (frame,) = got[t.s]
    err = body(frame, "error")
    assert err["code"] == "invalid_payload" and err["message_type"] == "request"
    assert list(got) == [t.s]


def test_duplicate_pending_request_id() -> None:
    t = Setup()
    rid = t.forwarded(t.request(t.s, request_id="dup"))
    got = t.request(t.s, request_id="dup")
    assert body(got[t.s][0], "error")["code"] == "invalid_payload" and t.p not in got
    t.request(t.s, request_id=5)
    t.respond(rid, response=1)
    t.forwarded(t.request(t.s, request_id="dup"))  # no longer pending: fine


@pytest.mark.parametrize(("fields", "code", "service"), [
    ({"service_name": None}, "invalid_payload", None),
    ({"service_name": "x" * 257}, "too_large", "x" * 257),
    ({"args": [1]}, "invalid_payload", "sum"),
    ({"args": "x"}, "invalid_payload", "sum"),
    ({"args": {"x": "y" * 65536}}, "too_large", "sum"),
    ({"timeout": 0.5}, "invalid_payload", "sum"),
    ({"timeout": 61}, "invalid_payload", "sum"),
    ({"timeout": "5"}, "invalid_payload", "sum"),
    ({"timeout": True}, "invalid_payload", "sum"),
    ({"service_name": "_chatroom/validate_change/t"}, "forbidden", "_chatroom/validate_change/t"),
    ({"service_name": "_chatroom/x"}, "forbidden", "_chatroom/x"),
    ({"service_name": "nope"}, "service_not_found", "nope"),
    ({"service_name": "nope", "args": 1}, "invalid_payload", "nope"),
])
def test_immediate_failures(fields: dict[str, Any], code: str, service: str | None) -> None:
    t = Setup()
    got = t.request(t.s, **fields)
    assert list(got) == [t.s]
    assert_seed_failure(got[t.s], "q1", code, service)
    got = t.request(t.f, request_id=9, **fields)
    assert list(got) == [t.f]
    assert_full_failure(got[t.f], 9, code)
    assert t.h.counts[("observer_service_requests_total", code)] == 2
    assert t.h.space.pending == {}


def test_args_exactly_64_kib_and_timeout_bounds_pass() -> None:
    t = Setup()
    args = {"x": "y" * (65536 - 8)}  # {"x":"…"} is 8 bytes of overhead
    t.forwarded(t.request(t.s, args=args, request_id="a"))
    t.forwarded(t.request(t.s, timeout=1, request_id="b"))
    t.forwarded(t.request(t.s, timeout=60.0, request_id="c"))


def test_pending_requests_per_requester() -> None:
    t = Setup()
    for i in range(100):
        t.forwarded(t.request(t.s, request_id=i))
    got = t.request(t.s, request_id="one-more")
    assert_seed_failure(got[t.s], "one-more", "rate_limited")
    t.forwarded(t.request(t.f))  # another requester is not limited


def test_application_error() -> None:
    t = Setup()
    rid = t.forwarded(t.request(t.s))
    got = t.respond(rid, error="boom " + "x" * 2000)
    assert_seed_failure(got[t.s], "q1", "application_error")
    assert got[t.s][0]["args"]["message"] == ("boom " + "x" * 2000)[:1000]
    rid = t.forwarded(t.request(t.f))
    got = t.respond(rid, error="bad", response=5)  # error wins
    assert_full_failure(got[t.f], "q1", "application_error")
    assert got[t.f][0]["content"]["error"]["message"] == "bad"
    rid = t.forwarded(t.request(t.f, request_id="n"))
    got = t.respond(rid, error=None, response=5)  # null error = absent
    assert got[t.f][0]["content"] == {"request_id": "n", "response": 5}


def test_response_errors_to_the_provider() -> None:
    t = Setup()
    rid = t.forwarded(t.request(t.s))
    for fields, code in [({"request_id": None}, "invalid_payload"),
                         ({"request_id": 1.5}, "invalid_payload"),
                         ({"error": 5}, "invalid_payload"),
                         ({"error": ["x"]}, "invalid_payload"),
                         ({"response": "x" * 2**20}, "too_large"),
                         ({"error": "x" * 2**20}, "too_large"),
                         ({"request_id": "nope"}, "unknown_request"),
                         ({"request_id": 5}, "unknown_request")]:
        got = t.h.send(t.p, "response", {"request_id": rid, **fields})
        assert list(got) == [t.p]
        err = body(got[t.p][0], "error")
        assert err["code"] == code and err["message_type"] == "response"
    assert rid in t.h.space.pending  # still pending: it may still be answered
    got = t.respond(rid, response="x" * (2**20 - 2))  # exactly 1 MiB
    assert got[t.s][0]["args"]["response"] == "x" * (2**20 - 2)
    err = body(t.respond(rid, response=1)[t.p][0], "error")  # answered already
    assert err["code"] == "unknown_request" and err["request_id"] == rid
    rid = t.forwarded(t.request(t.s))
    err = body(t.h.send(t.s, "response", {"request_id": rid, "response": 1})[t.s][0], "error")
    assert err["code"] == "unknown_request"  # only its provider may answer


def test_timeout_default_and_note() -> None:
    t = Setup()
    rid = t.forwarded(t.request(t.s))
    assert t.h.space.next_deadline() == pytest.approx(t.h.now + 15)
    assert t.h.advance(14.9) == {}
    got = t.h.advance(0.1)
    assert_seed_failure(got[t.s], "q1", "timeout")
    note = body(got[t.p][0], "update")["change"]
    assert note["value"] == f"request {rid} to sum timed out"
    assert set(note) == {"type", "value", "old_value", "id"}
    err = body(t.respond(rid, response=1)[t.p][0], "error")
    assert err["code"] == "unknown_request"
    assert t.h.space.next_deadline() is None


def test_custom_timeout_and_late_answers_without_tick() -> None:
    t = Setup()
    rid = t.forwarded(t.request(t.f, timeout=1.5))
    t.h.now += 2  # the shell has not ticked yet
    got = t.respond(rid, response=1)
    assert_full_failure(got[t.f], "q1", "timeout")
    assert body(got[t.p][-1], "error")["code"] == "unknown_request"


def test_provider_disconnect_fails_pending_and_unregisters() -> None:
    t = Setup()
    w = t.h.connect("full")
    t.h.send(w, "subscribe", {"topic_name": "_chatroom/server_status"})
    t.forwarded(t.request(t.s))
    t.forwarded(t.request(t.f))
    t.h.send(t.p, "unregister_service", {"service_name": "sum"})
    t.h.send(t.p, "register_service", {"service_name": "other"})
    t.h.clear()
    got = t.h.disconnect(t.p)
    assert_seed_failure(got[t.s], "q1", "provider_disconnected")
    assert_full_failure(got[t.f], "q1", "provider_disconnected")
    statuses = [body(f, "update")["change"]["value"] for f in got[w]]
    assert statuses == ["service other unregistered", f"client {t.p} disconnected"]
    assert t.h.space.services == {}
    assert_seed_failure(t.request(t.s, request_id="z")[t.s], "z", "service_not_found")


def test_requester_disconnect_cancels_with_a_note() -> None:
    t = Setup()
    rid = t.forwarded(t.request(t.s))
    got = t.h.disconnect(t.s)
    note = body(got[t.p][0], "update")["change"]["value"]
    assert note == f"request {rid} to sum cancelled"
    assert t.h.counts[("observer_service_requests_total", "cancelled")] == 1
    assert body(t.respond(rid, response=1)[t.p][0], "error")["code"] == "unknown_request"
    assert t.h.space.next_deadline() is None


def test_a_client_may_call_its_own_service() -> None:
    t = Setup()
    got = t.request(t.p, request_id="self")
    rid = t.forwarded(got)
    got = t.respond(rid, response="me")
    assert got == {t.p: [{"type": "response", "args": {"request_id": "self", "response": "me"}}]}
    t.forwarded(t.request(t.p, request_id="again"))
    got = t.h.disconnect(t.p)  # both sides at once: nothing left behind
    assert t.h.space.pending == {}


def test_unregistered_service_requests_stay_answerable() -> None:
    t = Setup()
    rid = t.forwarded(t.request(t.s))
    t.h.send(t.p, "unregister_service", {"service_name": "sum"})
    assert t.respond(rid, response=2)[t.s][0]["args"]["response"] == 2


def test_null_optional_fields_count_as_absent() -> None:
    t = Setup()
    got = t.request(t.f, args=None, timeout=None)
    assert body(got[t.p][0], "request")["args"] == {}
    assert t.h.space.next_deadline() == pytest.approx(t.h.now + 15)


def test_answered_requests_do_not_pile_up_deadlines() -> None:
    t = Setup()
    for i in range(500):
        rid = t.forwarded(t.request(t.s, request_id=i))
        t.respond(rid, response=i)
    assert len(t.h.space._deadlines) <= 2 * len(t.h.space.pending) + 65
    assert t.h.space.next_deadline() is None


def test_overdue_requests_time_out_before_a_disconnect() -> None:
    t = Setup()
    t.forwarded(t.request(t.s))
    t.forwarded(t.request(t.p, request_id="own"))  # the provider calls itself
    t.h.send(t.s, "register_service", {"service_name": "back"})
    t.h.send(t.p, "request", {"service_name": "back", "request_id": "b"})
    t.h.now += 20  # no tick: the disconnect must expire what is due first
    got = t.h.disconnect(t.p)
    assert_seed_failure(got[t.s], "q1", "timeout")
    assert t.h.counts[("observer_service_requests_total", "timeout")] == 3
    assert t.h.space.pending == {}
