"""Unit tests for the pure WebRTC signaling rules: ``rtc/config`` (§6.8) and ``route_rtc``."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import pytest

from signaling.rules import (
    MAX_CANDIDATE_BYTES,
    MAX_SDP_BYTES,
    RTC_EVENTS,
    RtcError,
    compact_json_size,
    is_integer,
    route_rtc,
    validate_config_request,
)
from signaling.turn import rtc_config, turn_credentials

# --------------------------------------------------------------------------- rtc/config

NOW = 1_700_000_000.987
SECRET = "s3cr3t-ключ"


def _expected_credential(username: str, secret: str = SECRET) -> str:
    mac = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return base64.b64encode(mac).decode()


def test_config_without_servers() -> None:
    cfg = rtc_config(1, True, stun_urls=[], turn_urls=[], turn_secret="", turn_ttl=86400, now=NOW)
    assert cfg == {"ice_servers": [], "ttl": 0, "polite": False}


def test_config_stun_only_student_is_polite() -> None:
    stun = ["stun:stun.example.org:3478", "stun:stun2.example.org"]
    cfg = rtc_config(
        7, False, stun_urls=stun, turn_urls=[], turn_secret="x", turn_ttl=3600, now=NOW
    )
    assert cfg == {"ice_servers": [{"urls": stun}], "ttl": 0, "polite": True}
    assert cfg["ice_servers"][0]["urls"] is not stun  # a copy, never the config's own list


def test_config_stun_and_turn() -> None:
    stun = ["stun:stun.example.org"]
    turn = ["turn:turn.example.org:3478?transport=udp", "turns:turn.example.org:5349"]
    cfg = rtc_config(
        5, False, stun_urls=stun, turn_urls=turn, turn_secret=SECRET, turn_ttl=3600, now=NOW
    )
    username = f"{1_700_000_000 + 3600}:5"
    assert cfg == {
        "ice_servers": [
            {"urls": stun},
            {"urls": turn, "username": username, "credential": _expected_credential(username)},
        ],
        "ttl": 3600,
        "polite": True,
    }
    assert list(cfg) == ["ice_servers", "ttl", "polite"]
    assert list(cfg["ice_servers"][1]) == ["urls", "username", "credential"]


def test_config_turn_only_host() -> None:
    turn = ["turn:t.example.org"]
    cfg = rtc_config(1, True, stun_urls=[], turn_urls=turn, turn_secret="k", turn_ttl=60, now=100)
    assert cfg["polite"] is False
    assert cfg["ttl"] == 60
    assert cfg["ice_servers"] == [
        {"urls": turn, "username": "160:1", "credential": _expected_credential("160:1", "k")}
    ]


def test_turn_credential_is_padded_standard_base64() -> None:
    username, credential = turn_credentials(42, turn_secret="secret", turn_ttl=86400, now=0.5)
    assert username == "86400:42"
    assert credential == _expected_credential(username, "secret")
    assert len(credential) == 28 and credential.endswith("=")  # 20-byte digest, padded
    assert base64.b64decode(credential, validate=True) == hmac.digest(
        b"secret", b"86400:42", "sha1"
    )


def test_turn_expiry_truncates_fractional_time() -> None:
    username, _ = turn_credentials(3, turn_secret="k", turn_ttl=10, now=99.999)
    assert username == "109:3"


def test_turn_urls_without_secret_is_rejected() -> None:
    with pytest.raises(ValueError):
        rtc_config(1, True, stun_urls=[], turn_urls=["turn:x"], turn_secret="", turn_ttl=1, now=0)


# --------------------------------------------------------------------------- route_rtc

HOST = 1
STUDENTS = {2, 3, 5}
ONLINE = {1, 2, 5}  # student 3 is offline; 4 was removed


def route(event: str, data: object, sender: int, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    students = kwargs.pop("students", STUDENTS)
    online = kwargs.pop("online", ONLINE)
    return route_rtc(
        event,
        data,
        sender_id=sender,
        host_id=HOST,
        is_student=lambda uid: uid in students,
        is_online=lambda uid: uid in online,
        **kwargs,
    )


def error_code(event: str, data: object, sender: int, **kwargs: Any) -> str:
    with pytest.raises(RtcError) as info:
        route(event, data, sender, **kwargs)
    return info.value.code


def payload_for(event: str) -> dict[str, Any]:
    """A valid payload body (without ``user_id``) for each event."""
    bodies: dict[str, dict[str, Any]] = {
        "rtc/offer": {"sdp": "v=0\r\n"},
        "rtc/answer": {"sdp": "v=0\r\n"},
        "rtc/ice": {"candidate": {"candidate": "candidate:1 1 udp 1 1.2.3.4 5 typ host"}},
    }
    return dict(bodies.get(event, {}))


def test_rtc_events() -> None:
    assert set(RTC_EVENTS) == {
        "rtc/request",
        "rtc/allow",
        "rtc/offer",
        "rtc/answer",
        "rtc/ice",
        "rtc/stop",
    }
    assert len(RTC_EVENTS) == 6


def test_rtc_error_attributes() -> None:
    err = RtcError("peer_offline", "the peer is offline")
    assert err.code == "peer_offline"
    assert err.message == "the peer is offline"
    assert isinstance(err, Exception)


def test_unknown_event_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        route("rtc/config", {}, 2)


def test_is_integer() -> None:
    assert is_integer(0) and is_integer(-5) and is_integer(10**30)
    assert not is_integer(True) and not is_integer(False)
    assert not is_integer(1.0) and not is_integer("1") and not is_integer(None)


# Role -----------------------------------------------------------------------


def test_request_from_host_is_not_student() -> None:
    assert error_code("rtc/request", {"user_id": 2}, HOST) == "not_student"


def test_allow_from_student_is_not_host() -> None:
    assert error_code("rtc/allow", {"user_id": 1}, 2) == "not_host"


def test_role_checked_before_payload() -> None:
    assert error_code("rtc/request", "not an object", HOST) == "not_student"
    assert error_code("rtc/allow", ["bad"], 2) == "not_host"
    assert error_code("rtc/allow", {"user_id": "x", "room_id": "y"}, 3) == "not_host"


# Payload --------------------------------------------------------------------


@pytest.mark.parametrize("event", RTC_EVENTS)
@pytest.mark.parametrize("data", [None, [], "x", 1, True])
def test_non_object_payload(event: str, data: object) -> None:
    sender = HOST if event != "rtc/request" else 2
    assert error_code(event, data, sender) == "invalid_payload"


@pytest.mark.parametrize("event", RTC_EVENTS)
@pytest.mark.parametrize("bad", [True, False, "2", 2.0, None, [2], {"id": 2}])
def test_user_id_must_be_an_integer(event: str, bad: object) -> None:
    if event != "rtc/allow":
        assert error_code(event, {**payload_for(event), "user_id": bad}, 2) == "invalid_payload"
    if event != "rtc/request":
        assert error_code(event, {**payload_for(event), "user_id": bad}, HOST) == "invalid_payload"


@pytest.mark.parametrize("event", [e for e in RTC_EVENTS if e != "rtc/request"])
def test_host_must_name_a_user(event: str) -> None:
    assert error_code(event, payload_for(event), HOST) == "invalid_payload"


@pytest.mark.parametrize("event", RTC_EVENTS)
@pytest.mark.parametrize("bad", ["5", 5.0, True, None, [5]])
def test_room_id_must_be_an_integer(event: str, bad: object) -> None:
    sender = 2 if event == "rtc/request" else HOST
    data = {**payload_for(event), "user_id": 2, "room_id": bad}
    if event == "rtc/request":
        del data["user_id"]
    assert error_code(event, data, sender) == "invalid_payload"


@pytest.mark.parametrize("event", ["rtc/offer", "rtc/answer"])
@pytest.mark.parametrize("sdp", [None, "", 5, ["v=0"], {"sdp": "v=0"}, "MISSING"])
def test_bad_sdp(event: str, sdp: object) -> None:
    data: dict[str, Any] = {} if sdp == "MISSING" else {"sdp": sdp}
    assert error_code(event, data, 2) == "invalid_payload"
    assert error_code(event, {**data, "user_id": 2}, HOST) == "invalid_payload"


@pytest.mark.parametrize("event", ["rtc/offer", "rtc/answer"])
def test_sdp_size_boundary(event: str) -> None:
    assert MAX_SDP_BYTES == 65536
    exact = "v" * 65536
    assert route(event, {"sdp": exact}, 2) == (HOST, {"sdp": exact, "user_id": 2})
    assert route(event, {"sdp": exact, "user_id": 2}, HOST) == (2, {"sdp": exact})
    assert error_code(event, {"sdp": exact + "v"}, 2) == "too_large"
    assert error_code(event, {"sdp": exact + "v", "user_id": 2}, HOST) == "too_large"


def test_sdp_size_counts_utf8_bytes() -> None:
    exact = "é" * 32768  # 32768 code points, 65536 bytes
    assert route("rtc/offer", {"sdp": exact}, 2)[1]["sdp"] == exact
    assert error_code("rtc/offer", {"sdp": exact + "a"}, 2) == "too_large"
    # 32769 characters would pass a character count but not the byte limit.
    assert error_code("rtc/answer", {"sdp": "é" * 32769, "user_id": 2}, HOST) == "too_large"


def test_sdp_with_lone_surrogate_is_invalid() -> None:
    assert error_code("rtc/offer", {"sdp": "v=0\ud800"}, 2) == "invalid_payload"


@pytest.mark.parametrize("candidate", [None, 5, 1.5, True, ["a"], "MISSING"])
def test_bad_candidate(candidate: object) -> None:
    data: dict[str, Any] = {} if candidate == "MISSING" else {"candidate": candidate}
    assert error_code("rtc/ice", data, 2) == "invalid_payload"
    assert error_code("rtc/ice", {**data, "user_id": 2}, HOST) == "invalid_payload"


def test_candidate_string_size_boundary() -> None:
    assert MAX_CANDIDATE_BYTES == 4096
    exact = "c" * 4094  # plus two quotes: 4096 bytes
    assert compact_json_size(exact) == 4096
    assert route("rtc/ice", {"candidate": exact}, 2) == (HOST, {"candidate": exact, "user_id": 2})
    assert error_code("rtc/ice", {"candidate": exact + "c"}, 2) == "too_large"
    assert error_code("rtc/ice", {"candidate": exact + "c", "user_id": 2}, HOST) == "too_large"


def test_candidate_object_size_boundary() -> None:
    # Compact encoding: {"candidate":"<N chars>","sdpMid":null} is N + 30 bytes.
    exact = {"candidate": "c" * 4066, "sdpMid": None}
    assert compact_json_size(exact) == 4096
    assert route("rtc/ice", {"candidate": exact, "user_id": 2}, HOST) == (2, {"candidate": exact})
    over = {"candidate": "c" * 4067, "sdpMid": None}
    assert compact_json_size(over) == 4097
    assert len(json.dumps(over)) > 4097  # default separators would add spaces
    assert error_code("rtc/ice", {"candidate": over}, 2) == "too_large"


def test_candidate_size_keeps_non_ascii_and_counts_escapes() -> None:
    exact = "é" * 2047  # 4094 bytes plus quotes; \u00e9 escapes would be 12 282 bytes
    assert compact_json_size(exact) == 4096
    assert route("rtc/ice", {"candidate": exact}, 2)[1]["candidate"] == exact
    assert error_code("rtc/ice", {"candidate": exact + "x"}, 2) == "too_large"
    quoted = '"' * 2047  # each escaped as \" → 4094 bytes plus quotes
    assert compact_json_size(quoted) == 4096
    assert route("rtc/ice", {"candidate": quoted}, 2)[0] == HOST
    assert error_code("rtc/ice", {"candidate": quoted + '"'}, 2) == "too_large"


def test_empty_candidates_are_valid() -> None:
    assert route("rtc/ice", {"candidate": ""}, 2) == (HOST, {"candidate": "", "user_id": 2})
    assert route("rtc/ice", {"candidate": {}, "user_id": 5}, HOST) == (5, {"candidate": {}})


def test_unencodable_candidate_is_invalid() -> None:
    assert error_code("rtc/ice", {"candidate": {"x": float("nan")}}, 2) == "invalid_payload"
    assert error_code("rtc/ice", {"candidate": "\udc00"}, 2) == "invalid_payload"


def test_payload_checked_before_state() -> None:
    # Student-to-student (forbidden) with an oversized sdp: the payload rule wins.
    assert error_code("rtc/offer", {"sdp": "v" * 65537, "user_id": 3}, 2) == "too_large"
    # Host to a non-student with a bad candidate.
    assert error_code("rtc/ice", {"candidate": 5, "user_id": 99}, HOST) == "invalid_payload"
    # Offline peer with a bad sdp.
    assert error_code("rtc/answer", {"sdp": "", "user_id": 3}, HOST) == "invalid_payload"
    # room_id mismatch (state) with a bad user_id (payload).
    assert error_code("rtc/stop", {"user_id": "1", "room_id": 9}, 2, room_id=8) == (
        "invalid_payload"
    )


# State ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "data", "forwarded"),
    [
        ("rtc/request", {}, {"user_id": 2}),
        ("rtc/offer", {"sdp": "offer-sdp"}, {"sdp": "offer-sdp", "user_id": 2}),
        ("rtc/answer", {"sdp": "answer-sdp"}, {"sdp": "answer-sdp", "user_id": 2}),
        ("rtc/ice", {"candidate": "cand"}, {"candidate": "cand", "user_id": 2}),
        ("rtc/stop", {}, {"user_id": 2}),
    ],
)
def test_student_to_host(event: str, data: dict[str, Any], forwarded: dict[str, Any]) -> None:
    assert route(event, data, 2) == (HOST, forwarded)
    assert route(event, {**data, "user_id": HOST}, 2) == (HOST, forwarded)
    target, payload = route(event, {**data, "room_id": 12345678, "extra": 1}, 2)
    assert (target, payload) == (HOST, forwarded)
    assert list(payload) == [*data, "user_id"]  # base keys first, then user_id


@pytest.mark.parametrize(
    ("event", "data"),
    [
        ("rtc/allow", {}),
        ("rtc/offer", {"sdp": "offer-sdp"}),
        ("rtc/answer", {"sdp": "answer-sdp"}),
        ("rtc/ice", {"candidate": {"candidate": "c", "sdpMLineIndex": 0}}),
        ("rtc/stop", {}),
    ],
)
def test_host_to_student(event: str, data: dict[str, Any]) -> None:
    target, payload = route(event, {**data, "user_id": 5, "room_id": 1, "junk": [1]}, HOST)
    assert target == 5
    assert payload == data
    assert "user_id" not in payload
    assert list(payload) == list(data)


def test_candidate_relayed_unchanged() -> None:
    candidate = {"candidate": "candidate:0 1 UDP 2122 10.0.0.1 9 typ host", "sdpMid": "0", "x": [1]}
    _, payload = route("rtc/ice", {"candidate": candidate}, 2)
    assert payload["candidate"] == candidate


@pytest.mark.parametrize("event", [e for e in RTC_EVENTS if e != "rtc/allow"])
@pytest.mark.parametrize("target", [3, 5, 4, 99, 0, -1])
def test_student_to_student_is_forbidden(event: str, target: int) -> None:
    assert error_code(event, {**payload_for(event), "user_id": target}, 2) == "forbidden"


def test_student_to_itself_is_forbidden() -> None:
    assert error_code("rtc/stop", {"user_id": 2}, 2) == "forbidden"


@pytest.mark.parametrize("event", [e for e in RTC_EVENTS if e != "rtc/request"])
@pytest.mark.parametrize("target", [HOST, 4, 99, 0])
def test_host_target_must_be_a_student(event: str, target: int) -> None:
    assert error_code(event, {**payload_for(event), "user_id": target}, HOST) == "user_not_found"


@pytest.mark.parametrize("event", [e for e in RTC_EVENTS if e != "rtc/request"])
def test_offline_student_is_peer_offline(event: str) -> None:
    assert error_code(event, {**payload_for(event), "user_id": 3}, HOST) == "peer_offline"


@pytest.mark.parametrize("event", [e for e in RTC_EVENTS if e != "rtc/allow"])
def test_offline_host_is_peer_offline(event: str) -> None:
    data = payload_for(event)
    assert error_code(event, data, 2, online={2}) == "peer_offline"
    # A student-to-student attempt is forbidden before the host's presence matters.
    assert error_code(event, {**data, "user_id": 5}, 2, online={2}) == "forbidden"


def test_offline_sender_is_irrelevant() -> None:
    # A student that is offline cannot normally send, but presence is only checked for targets.
    assert route("rtc/stop", {}, 3) == (HOST, {"user_id": 3})


def test_room_id_equality_when_given() -> None:
    assert route("rtc/stop", {"room_id": 8}, 2, room_id=8) == (HOST, {"user_id": 2})
    assert error_code("rtc/stop", {"room_id": 9}, 2, room_id=8) == "forbidden"
    assert error_code("rtc/allow", {"room_id": 9, "user_id": 2}, HOST, room_id=8) == "forbidden"
    # Without room_id the comparison is the caller's job.
    assert route("rtc/stop", {"room_id": 9}, 2) == (HOST, {"user_id": 2})


def test_input_payload_not_mutated() -> None:
    data = {"sdp": "x", "user_id": HOST, "other": 1}
    route("rtc/offer", data, 2)
    assert data == {"sdp": "x", "user_id": HOST, "other": 1}


# rtc/config requests --------------------------------------------------------


def test_validate_config_request() -> None:
    validate_config_request({})
    validate_config_request({"room_id": 7, "anything": "ignored"}, room_id=7)
    bad: object
    for bad in (None, [], "x"):
        with pytest.raises(RtcError) as info:
            validate_config_request(bad)
        assert info.value.code == "invalid_payload"
    with pytest.raises(RtcError) as info:
        validate_config_request({"room_id": "7"}, room_id=7)
    assert info.value.code == "invalid_payload"
    with pytest.raises(RtcError) as info:
        validate_config_request({"room_id": 8}, room_id=7)
    assert info.value.code == "forbidden"
