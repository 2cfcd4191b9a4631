"""The seed systems' weaknesses (seed-systems §5.1) tried as attacks over real sockets.

Every attack must be refused with the documented error code, change nothing, and be
visible to nobody but the attacker (§3.4: errors go only to the offending connection).
"""

from __future__ import annotations

import base64
import itertools
import re
from typing import Any

import trio
import trio.testing

from tests.support import (
    Client,
    Relay,
    StartRelay,
    classroom_joined,
    nothing_before_sentinel,
    publish,
)

TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{22}$")
STEP = {"name": "1", "content": "Write a loop", "language": "python", "type": "exercise"}


# -- 1. authentication on reconnect -------------------------------------------------------
async def test_rehost_without_token_is_bad_token(relay: Relay) -> None:
    host, room, [(student, _)] = await classroom_joined(relay, "Ann")
    thief = await relay.client()
    await thief.fail("room/rehost", {"room_id": room["room_id"], "user_id": 1}, "bad_token")
    await thief.fail("room/rehost", {"room_id": room["room_id"], "user_id": 1, "token": None},
                     "bad_token")
    # The real host was not replaced and nobody heard about the attempt.
    await nothing_before_sentinel(host, student)
    await host.ok("steps/table", {})


async def test_rehost_with_wrong_token_is_bad_token(relay: Relay) -> None:
    host, room, [(student, joined)] = await classroom_joined(relay, "Ann")
    thief = await relay.client()
    token = room["token"]
    wrong_tokens: list[Any] = [
        "A" * 22, token[:-1], token + "x", " " + token, token.swapcase(), room["stats_key"],
        joined["token"], "", 12345, [token],
    ]
    for token in wrong_tokens:
        code = "bad_token" if isinstance(token, str) else "invalid_payload"
        await thief.fail("room/rehost", {"room_id": room["room_id"], "user_id": 1,
                                         "token": token}, code)
    await nothing_before_sentinel(host, student)
    # The right token still works afterwards (it replaces the old connection with 4003).
    thief.last_seq = host.last_seq
    frames = await thief.ok("room/rehost", {"room_id": room["room_id"], "user_id": 1,
                                            "token": room["token"]})
    assert frames[0]["event"] == "rtc/config"
    assert await host.closed() == 4003


async def test_rejoin_without_or_with_wrong_token(relay: Relay) -> None:
    host, room, [(student, joined)] = await classroom_joined(relay, "Ann")
    thief = await relay.client()
    base = {"room_id": room["room_id"], "user_id": joined["user_id"]}
    await thief.fail("room/rejoin", base, "bad_token")
    await thief.fail("room/rejoin", {**base, "token": room["token"]}, "bad_token")
    await thief.fail("room/rejoin", {**base, "token": "x" * 22}, "bad_token")
    await nothing_before_sentinel(host, student)
    await student.ok("signal", {"value": "HELP"})
    assert (await host.expect("signal"))["data"] == {"user_id": joined["user_id"],
                                                     "value": "HELP"}


async def test_rejoin_as_the_host_is_forbidden(relay: Relay) -> None:
    host, room, [(student, _)] = await classroom_joined(relay, "Ann")
    thief = await relay.client()
    await thief.fail("room/rejoin", {"room_id": room["room_id"], "user_id": 1,
                                     "token": room["token"]}, "forbidden")
    await nothing_before_sentinel(host, student)
    await host.ok("steps/table", {})


async def test_rehost_naming_a_student_is_forbidden(relay: Relay) -> None:
    host, room, [(student, joined)] = await classroom_joined(relay, "Ann")
    thief = await relay.client()
    await thief.fail("room/rehost", {"room_id": room["room_id"], "user_id": joined["user_id"],
                                     "token": joined["token"]}, "forbidden")
    await nothing_before_sentinel(host, student)
    # The thief is still unbound: host-only events are not_in_room, not accepted.
    await thief.fail("steps/table", {}, "not_in_room")


async def test_token_is_checked_before_role(relay: Relay) -> None:
    """§4.3: user → token → role, so a wrong token never reveals the role."""
    host, room, [(ann, joined)] = await classroom_joined(relay, "Ann")
    thief = await relay.client()
    rid = room["room_id"]
    await thief.fail("room/rehost", {"room_id": rid, "user_id": joined["user_id"],
                                     "token": "x" * 22}, "bad_token")
    await thief.fail("room/rehost", {"room_id": rid, "user_id": joined["user_id"]}, "bad_token")
    await thief.fail("room/rejoin", {"room_id": rid, "user_id": 1, "token": "x" * 22},
                     "bad_token")
    await thief.fail("room/rejoin", {"room_id": rid, "user_id": 1}, "bad_token")
    await nothing_before_sentinel(host, ann)


async def test_join_checks_room_before_name_rules(relay: Relay) -> None:
    _, room, _ = await classroom_joined(relay)
    missing = 10_000_000 if room["room_id"] != 10_000_000 else 10_000_001
    c = await relay.client()
    await c.fail("room/join", {"room_id": missing, "name": ""}, "room_not_found")
    await c.fail("room/join", {"room_id": missing, "name": "n" * 40}, "room_not_found")
    await c.fail("room/join", {"room_id": room["room_id"], "name": "  "}, "invalid_payload")
    await c.fail("room/join", {"room_id": room["room_id"], "name": "a\tb"}, "invalid_payload")
    await c.fail("room/join", {"room_id": room["room_id"], "name": "n" * 33}, "too_large")
    # Types are checked before the room exists.
    await c.fail("room/join", {"room_id": missing, "name": 5}, "invalid_payload")


async def test_reattach_to_unknown_user_or_room(relay: Relay) -> None:
    _, room, _ = await classroom_joined(relay, "Ann")
    thief = await relay.client()
    await thief.fail("room/rejoin", {"room_id": room["room_id"], "user_id": 99,
                                     "token": room["token"]}, "user_not_found")
    other = room["room_id"] + 1 if room["room_id"] < 99_999_999 else room["room_id"] - 1
    await thief.fail("room/rehost", {"room_id": other, "user_id": 1, "token": room["token"]},
                     "room_not_found")
    await thief.fail("room/rehost", {"room_id": str(room["room_id"]), "user_id": 1,
                                     "token": room["token"]}, "invalid_payload")
    await thief.fail("room/rejoin", {"room_id": room["room_id"], "user_id": "2",
                                     "token": room["token"]}, "invalid_payload")


# -- 3. cross-room injection through room_id ------------------------------------------------
async def test_room_id_of_another_room_is_forbidden(relay: Relay) -> None:
    host_a, room_a, [(ann, ann_j)] = await classroom_joined(relay, "Ann")
    host_b, room_b, [(bob, bob_j)] = await classroom_joined(relay, "Bob")
    a, b = room_a["room_id"], room_b["room_id"]
    await host_a.ok("sharing/start", {"user_id": ann_j["user_id"]})
    await ann.expect("sharing/start")
    files = [{"filename": "x.py", "status": "CREATED", "content": "evil()"}]
    attacks: list[tuple[Client, str, dict[str, Any]]] = [
        (ann, "message/to_mentor", {"content": "hi", "room_id": b}),
        (ann, "sharing/code_send", {"files": files, "room_id": b}),
        (ann, "sharing/code_update", {"files": files, "room_id": b}),
        (ann, "error/from_client", {"content": "trace", "room_id": b}),
        (ann, "signal", {"value": "HELP", "room_id": b}),
        (ann, "rtc/request", {"room_id": b}),
        (ann, "room/leave", {"room_id": b}),
        (host_a, "message/to_client", {"user_id": bob_j["user_id"], "content": "x",
                                       "room_id": b}),
        (host_a, "sharing/start", {"user_id": bob_j["user_id"], "room_id": b}),
        (host_a, "sharing/end", {"user_id": bob_j["user_id"], "room_id": b}),
        (host_a, "exercise/feedback", {"user_id": bob_j["user_id"], "accepted": True,
                                       "room_id": b}),
        (host_a, "message/to_all", {"content": "x", "room_id": b}),
        (host_a, "room/close", {"room_id": b}),
        (host_b, "room/close", {"room_id": a}),
        (host_b, "steps/table", {"room_id": a}),
        (bob, "message/to_mentor", {"content": "hi", "room_id": a}),
    ]
    for sender, event, data in attacks:
        await sender.fail(event, data, "forbidden")
    await nothing_before_sentinel(host_a, host_b, ann, bob)
    # Nothing changed: both rooms still work, and the own room id is accepted.
    await ann.ok("message/to_mentor", {"content": "mine", "room_id": a})
    msg = await host_a.expect("message/to_mentor")
    assert msg["data"]["content"] == "mine" and msg["data"]["sender"] == ann_j["user_id"]
    await bob.ok("message/to_mentor", {"content": "b"})
    assert (await host_b.expect("message/to_mentor"))["data"]["content"] == "b"
    await nothing_before_sentinel(host_b, host_a)


async def test_non_integer_room_id_is_invalid_payload(relay: Relay) -> None:
    host, room, [(ann, _)] = await classroom_joined(relay, "Ann")
    rid = room["room_id"]
    for bad in [str(rid), True, False, float(rid), 1.5, [rid], {"id": rid}]:
        await ann.fail("message/to_mentor", {"content": "x", "room_id": bad}, "invalid_payload")
        await host.fail("message/to_all", {"content": "x", "room_id": bad}, "invalid_payload")
        await host.fail("steps/table", {"room_id": bad}, "invalid_payload")
    await nothing_before_sentinel(host, ann)


async def test_non_integer_room_id_on_join(relay: Relay) -> None:
    _, room, _ = await classroom_joined(relay)
    c = await relay.client()
    for bad in (str(room["room_id"]), True, float(room["room_id"]), None):
        await c.fail("room/join", {"room_id": bad, "name": "Ann"}, "invalid_payload")
    await c.fail("room/join", {"name": "Ann"}, "invalid_payload")


# -- 4. self-grading -----------------------------------------------------------------------
async def test_student_cannot_self_accept(relay: Relay) -> None:
    host, _, [(ann, ann_j), (bob, _)] = await classroom_joined(relay, "Ann", "Bob")
    steps = [STEP, {**STEP, "name": "2"}]
    assert await publish(host, steps, ann, bob) == steps
    await ann.fail("steps/status/to_mentor", {"1": "ACCEPTED"}, "forbidden")
    # All or nothing: a valid entry next to the forbidden one is not stored either.
    await ann.fail("steps/status/to_mentor", {"2": "DONE", "1": "ACCEPTED"}, "forbidden")
    await nothing_before_sentinel(host, bob)
    frames = await host.ok("steps/table", {})
    assert frames[0]["data"][0]["steps"] == {}
    # After the teacher accepts, ACCEPTED may be repeated and cannot be downgraded.
    await host.ok("steps/status/to_client", {"user_id": ann_j["user_id"],
                                             "steps": {"1": "ACCEPTED"}})
    assert (await ann.expect("alerts"))["data"]["type"] == "SUCCESS"
    await ann.expect("steps/status/to_client")
    await ann.ok("steps/status/to_mentor", {"1": "ACCEPTED"})
    await ann.ok("steps/status/to_mentor", {"1": "NONE"})
    await host.nothing_before_sentinel()
    await ann.fail("steps/status/to_mentor", {"2": "ACCEPTED"}, "forbidden")
    await ann.ok("steps/status/to_mentor", {"2": "DONE"})
    fwd = await host.expect("steps/status/to_mentor")
    assert fwd["data"] == {"user_id": ann_j["user_id"], "steps": {"1": "ACCEPTED", "2": "DONE"}}


async def test_status_map_room_id_is_a_step_name(relay: Relay) -> None:
    """steps/status/to_mentor is a pure map: room_id is just an unpublished step name,
    ignored like any other (v2, §6.5): no room check, nothing stored or forwarded."""
    host, room, [(ann, _)] = await classroom_joined(relay, "Ann")
    assert await publish(host, [STEP], ann) == [STEP]
    assert await ann.ok("steps/status/to_mentor", {"room_id": room["room_id"] + 1}) == []
    assert await ann.ok("steps/status/to_mentor", {"room_id": "x"}) == []
    await host.nothing_before_sentinel()
    frames = await host.ok("steps/table", {})
    assert frames[0]["data"][0]["steps"] == {}


# -- 3. code injection from a non-sharer -------------------------------------------------
async def test_code_from_non_sharer_is_not_sharing(relay: Relay) -> None:
    host, _, [(ann, ann_j), (bob, _)] = await classroom_joined(relay, "Ann", "Bob")
    files = [{"filename": "a.py", "status": "CREATED", "content": "x"}]
    await ann.fail("sharing/code_send", {"files": files}, "not_sharing")
    await ann.fail("sharing/code_update", {"files": files}, "not_sharing")
    await host.ok("sharing/start", {"user_id": ann_j["user_id"]})
    await ann.expect("sharing/start")
    await bob.fail("sharing/code_send", {"files": files}, "not_sharing")
    await bob.fail("sharing/code_update", {"files": files}, "not_sharing")
    await nothing_before_sentinel(host, ann)
    await ann.ok("sharing/code_send", {"files": files})
    assert (await host.expect("sharing/code_send"))["data"]["user_id"] == ann_j["user_id"]
    await host.ok("sharing/end", {"user_id": ann_j["user_id"]})
    await ann.expect("sharing/end")
    await ann.fail("sharing/code_update", {"files": files}, "not_sharing")
    await host.nothing_before_sentinel()


# -- 3. role checks (and their place in the check order) ------------------------------------
HOST_ONLY = [
    ("steps/all", [STEP]), ("settings", {"files_to_ignore": ""}), ("sharing/start", {"user_id": 2}),
    ("sharing/end", {"user_id": 2}), ("sharing/snapshot", {"user_id": 3}),
    ("message/user", {"user_id": 3}), ("message/to_client", {"user_id": 3, "content": "x"}),
    ("message/to_all", {"content": "x"}), ("steps/status/to_client",
                                           {"user_id": 2, "steps": {}}),
    ("steps/table", {}), ("steps/import", {"markdown": "# A"}), ("room/close", {}),
    ("room/kill", {"user_id": 3}), ("exercise", {"content": "x"}),
    ("exercise/feedback", {"user_id": 2, "accepted": True}), ("exercise/reset", {}),
    ("rtc/allow", {"user_id": 3}),
]
STUDENT_ONLY = [
    ("message/to_mentor", {"content": "x"}), ("steps/status/to_mentor", {}),
    ("sharing/code_send", {"files": []}), ("sharing/code_update", {"files": []}),
    ("signal", {"value": "HELP"}), ("error/from_client", {"content": "x"}),
    ("rtc/request", {}), ("room/leave", {}),
]


async def test_host_only_events_from_a_student(relay: Relay) -> None:
    host, _room, [(ann, _), (bob, _)] = await classroom_joined(relay, "Ann", "Bob")
    for event, data in HOST_ONLY:
        await ann.fail(event, data, "not_host")
        # Role comes before payload and room_id checks (§0.1).
        await ann.fail(event, "garbage", "not_host")
        await ann.fail(event, {"room_id": "x"}, "not_host")
    await nothing_before_sentinel(host, bob)
    frames = await host.ok("steps/table", {})
    assert [s["name"] for s in frames[0]["data"]] == ["Ann", "Bob"]


async def test_student_only_events_from_the_host(relay: Relay) -> None:
    host, _room, [(ann, _)] = await classroom_joined(relay, "Ann")
    for event, data in STUDENT_ONLY:
        await host.fail(event, data, "not_student")
        await host.fail(event, 17, "not_student")
    await nothing_before_sentinel(ann, host)


async def test_student_to_student_webrtc_is_forbidden(relay: Relay) -> None:
    host, _, [(ann, _), (bob, bob_j)] = await classroom_joined(relay, "Ann", "Bob")
    await ann.fail("rtc/offer", {"sdp": "v=0", "user_id": bob_j["user_id"]}, "forbidden")
    await ann.fail("rtc/ice", {"candidate": "c", "user_id": bob_j["user_id"]}, "forbidden")
    await ann.fail("rtc/request", {"user_id": bob_j["user_id"]}, "forbidden")
    await nothing_before_sentinel(bob, host)


async def test_own_user_id_only(relay: Relay) -> None:
    host, _, [(ann, _), (bob, bob_j)] = await classroom_joined(relay, "Ann", "Bob")
    await ann.fail("signal", {"value": "HELP", "user_id": bob_j["user_id"]}, "forbidden")
    await ann.fail("error/from_client", {"content": "x", "user_id": bob_j["user_id"]},
                   "forbidden")
    await ann.fail("signal", {"value": "HELP", "user_id": 1}, "forbidden")
    await nothing_before_sentinel(host, bob)


# -- 5. information leaks --------------------------------------------------------------
async def test_errors_reach_only_the_offender(relay: Relay) -> None:
    host, _room, [(ann, _), (bob, _)] = await classroom_joined(relay, "Ann", "Bob")
    outsider = await relay.client()
    await ann.send_raw("{not json")
    assert (await ann.expect("error"))["data"]["code"] == "bad_json"
    await ann.send("no/such/event")
    assert (await ann.expect("error"))["data"]["code"] == "unknown_event"
    await ann.send("room/close", {})
    assert (await ann.expect("error"))["data"]["code"] == "not_host"
    await ann.send("message/to_mentor", {"content": ""})
    assert (await ann.expect("error"))["data"]["code"] == "invalid_payload"
    await host.send("sharing/start", {"user_id": 42})
    assert (await host.expect("error"))["data"]["code"] == "user_not_found"
    await outsider.send("message/to_mentor", {"content": "x"})
    assert (await outsider.expect("error"))["data"]["code"] == "not_in_room"
    await nothing_before_sentinel(host, ann, bob, outsider)


async def test_client_error_report_goes_to_host_only(relay: Relay) -> None:
    host, _, [(ann, ann_j), (bob, _)] = await classroom_joined(relay, "Ann", "Bob")
    await ann.ok("error/from_client", {"content": "Traceback: secret", "path": "a.py"})
    log = await host.expect("log")
    assert log["data"] == {"message": f"Error from Ann (user {ann_j['user_id']})\n"
                                      "Traceback: secret\nPath: a.py"}
    await nothing_before_sentinel(bob, ann)


async def test_removed_seed_events_are_unknown(relay: Relay) -> None:
    host, _, [(ann, _)] = await classroom_joined(relay, "Ann")
    for c in (host, ann):
        for event in ("room/log", "solution/ai", "ping"):
            await c.fail(event, {}, "unknown_event")
    outsider = await relay.client()
    await outsider.fail("room/log", {}, "unknown_event")


async def test_room_update_has_no_socket_ids(relay: Relay) -> None:
    host, room = await relay.host()
    await relay.student(room["room_id"], "Ann")
    update = await host.expect("room/update")
    for user in update["data"]["users"]:
        assert set(user) == {"id", "name", "role", "status", "steps", "signal"}


# -- names ------------------------------------------------------------------------------
CASEFOLD_PAIRS = [("Straße", "STRASSE"), ("Σίσυφος", "ΣΊΣΥΦΟΣ"), ("Ann", " ann  "),
                  ("ǅemal", "ǆEMAL"), ("ﬁsh", "FISH")]


async def test_casefolded_duplicate_names(relay: Relay) -> None:
    host, room = await relay.host()
    for first, _ in CASEFOLD_PAIRS:
        await relay.student(room["room_id"], first)
        await host.expect("room/update")
    c = await relay.client()
    for first, second in [*CASEFOLD_PAIRS, ("STRASSE", "strasse"), ("ANN", "ann")]:
        frames = await c.call("room/join", {"room_id": room["room_id"], "name": second})
        assert [f["event"] for f in frames] == ["alerts", "error", "ack"], (first, second)
        assert frames[1]["data"]["code"] == "name_taken"
    await host.nothing_before_sentinel()


async def test_host_name_counts(relay: Relay) -> None:
    c = await relay.client()
    for host_name, student in [("Straße", "STRASSE"), ("Teacher", "TEACHER"), (None, "host")]:
        if host_name is None:
            # The default host name is taken too.
            host = await relay.client()
            room = (await host.ok("room/create", {}))[0]["data"]
        else:
            host, room = await relay.host(host_name)
        await c.fail("room/join", {"room_id": room["room_id"], "name": student}, "name_taken")
    await host.nothing_before_sentinel()


async def test_freed_name_after_leave(relay: Relay) -> None:
    host, room, [(ann, _)] = await classroom_joined(relay, "Straße")
    await ann.ok("room/leave", {})
    await host.expect("room/update")
    await relay.student(room["room_id"], "STRASSE")


# -- guessing room ids: per-IP join failure limit (§4.3) ------------------------------------
async def test_guessing_room_ids_is_rate_limited(start_relay: StartRelay) -> None:
    relay = await start_relay(join_failure_limit=3)
    host, room = await relay.host()
    rid = room["room_id"]
    wrong = [r for r in (10_000_000, 10_000_001, 10_000_002, 10_000_003) if r != rid]
    guesser = await relay.client()
    await guesser.fail("room/join", {"room_id": wrong[0], "name": "G"}, "room_not_found")
    await guesser.fail("room/rejoin", {"room_id": rid, "user_id": 7, "token": "x"},
                       "user_not_found")
    # Payload errors and name_taken are not counted.
    await guesser.fail("room/join", {"room_id": "x"}, "invalid_payload")
    await guesser.fail("room/join", {"room_id": rid, "name": "teacher"}, "name_taken")
    await guesser.fail("room/rehost", {"room_id": rid, "user_id": 1, "token": "y" * 22},
                       "bad_token")
    # Now at the limit: even correct requests from this IP are refused, without lookup.
    other = await relay.client()
    await other.fail("room/join", {"room_id": rid, "name": "Ann"}, "rate_limited")
    await other.fail("room/join", {"room_id": wrong[1], "name": "Ann"}, "rate_limited")
    await other.fail("room/rehost", {"room_id": rid, "user_id": 1, "token": room["token"]},
                     "rate_limited")
    await other.fail("room/rejoin", {"room_id": rid, "user_id": 2, "token": "z"},
                     "rate_limited")
    # Payload types are checked before the limit; name rules only after it.
    await other.fail("room/join", {"room_id": None}, "invalid_payload")
    await other.fail("room/join", {"room_id": rid, "name": 5}, "invalid_payload")
    await other.fail("room/join", {"room_id": rid, "name": ""}, "rate_limited")
    # room/create is not limited, and the host was not disturbed.
    await (await relay.client()).ok("room/create", {})
    await host.nothing_before_sentinel()


async def test_rate_limited_join_failures_are_not_counted(
    start_relay: StartRelay, mock_clock: trio.testing.MockClock
) -> None:
    mock_clock.rate = 1.0
    relay = await start_relay(join_failure_limit=3, heartbeat_interval=1000.0,
                              heartbeat_timeout=1000.0, room_idle_expiry=100_000.0)
    host, room = await relay.host()
    rid = room["room_id"]
    missing = 10_000_000 if rid != 10_000_000 else 10_000_001
    guesser = await relay.client()
    for _ in range(2):
        await guesser.fail("room/join", {"room_id": missing, "name": "G"}, "room_not_found")
    mock_clock.jump(30)
    await guesser.fail("room/join", {"room_id": missing, "name": "G"}, "room_not_found")
    for _ in range(5):
        await guesser.fail("room/join", {"room_id": rid, "name": "G"}, "rate_limited")
    # The first two failures leave the 60 s window; the rate_limited ones never entered it.
    mock_clock.jump(31)
    await relay.student(rid, "Ann")
    await host.expect("room/update")
    await guesser.fail("room/join", {"room_id": missing, "name": "G"}, "room_not_found")
    await guesser.fail("room/join", {"room_id": missing, "name": "G"}, "room_not_found")
    # Three counted failures in the window again (t=30, t=61, t=61).
    await (await relay.client()).fail("room/join", {"room_id": rid, "name": "Bo"},
                                      "rate_limited")
    mock_clock.jump(61)
    await relay.student(rid, "Bo")


# -- legacy tokenless mode (§4.4) ------------------------------------------------------------
async def test_tokens_required_by_default(relay: Relay) -> None:
    host, room, [(ann, joined)] = await classroom_joined(relay, "Ann")
    await ann.aclose()
    await host.expect("room/update")
    c = await relay.client()
    await c.fail("room/rejoin", {"room_id": room["room_id"], "user_id": joined["user_id"]},
                 "bad_token")
    await c.fail("room/rehost", {"room_id": room["room_id"], "user_id": 1}, "bad_token")
    # Without the legacy mode a join with an offline student's name is name_taken.
    await c.fail("room/join", {"room_id": room["room_id"], "name": "ANN"}, "name_taken")
    await host.nothing_before_sentinel()


async def test_legacy_rehost_and_rejoin_without_token(start_relay: StartRelay) -> None:
    relay = await start_relay(legacy_tokenless=True)
    host, room, [(ann, joined)] = await classroom_joined(relay, "Ann")
    rid = room["room_id"]
    await ann.aclose()
    await host.expect("room/update")
    s = await relay.client()
    await s.fail("room/rejoin", {"room_id": rid, "user_id": joined["user_id"],
                                 "token": "wrong"}, "bad_token")
    frames = await s.ok("room/rejoin", {"room_id": rid, "user_id": joined["user_id"]})
    assert frames[0] == {"event": "room/join", "data": {
        "room_id": rid, "user_id": joined["user_id"], "token": joined["token"]}}
    update = await host.expect("room/update")
    assert update["data"]["users"][1]["status"] == "online"
    h = await relay.client()
    await h.fail("room/rehost", {"room_id": rid, "user_id": 1, "token": joined["token"]},
                 "bad_token")
    # Roles are still enforced without tokens.
    await h.fail("room/rehost", {"room_id": rid, "user_id": joined["user_id"]}, "forbidden")
    await h.fail("room/rejoin", {"room_id": rid, "user_id": 1}, "forbidden")
    h.last_seq = host.last_seq
    frames = await h.ok("room/rehost", {"room_id": rid, "user_id": 1})
    assert frames[0]["event"] == "rtc/config"
    assert await host.closed() == 4003


async def test_legacy_join_reattaches_offline_student(start_relay: StartRelay) -> None:
    relay = await start_relay(legacy_tokenless=True)
    host, room, [(ann, joined), (bob, _)] = await classroom_joined(relay, "Ann", "Bob")
    rid = room["room_id"]
    await host.ok("message/to_client", {"user_id": joined["user_id"], "content": "kept"})
    await ann.expect("message/to_client")
    await ann.aclose()
    offline = await host.expect("room/update")
    assert offline["data"]["users"][1]["status"] == "offline"
    again = await relay.client()
    again.last_seq = ann.last_seq  # the participant's counter survives reconnects
    # Exactly what a fresh rejoin sends: no outdated-plugin alert (Appendix C).
    frames = await again.ok("room/join", {"room_id": rid, "name": " aNN ", "version": "1.0"})
    assert frames[0] == {"event": "room/join", "data": {
        "room_id": rid, "user_id": joined["user_id"], "token": joined["token"]}}
    assert frames[1]["event"] == "rtc/config"
    # The student snapshot: the stored message comes back.
    assert [f["event"] for f in frames[2:]] == ["message/to_client"]
    assert frames[2]["data"]["content"] == "kept"
    update = await host.expect("room/update")
    assert [u["status"] for u in update["data"]["users"]] == ["online", "online", "online"]
    assert len(update["data"]["users"]) == 3
    # An online student's name stays taken, as does the host's (even when offline).
    thief = await relay.client()
    await thief.fail("room/join", {"room_id": rid, "name": "bob"}, "name_taken")
    await host.aclose()
    await bob.expect("message")
    await thief.fail("room/join", {"room_id": rid, "name": "Teacher"}, "name_taken")
    await bob.nothing_before_sentinel()


async def test_legacy_join_reattach_name_taken_when_online(start_relay: StartRelay) -> None:
    relay = await start_relay(legacy_tokenless=True)
    host, room, [(ann, _)] = await classroom_joined(relay, "Ann")
    c = await relay.client()
    await c.fail("room/join", {"room_id": room["room_id"], "name": "ANN"}, "name_taken")
    await nothing_before_sentinel(ann, host)


# -- identifiers --------------------------------------------------------------------------
async def test_tokens_and_ids_format(relay: Relay) -> None:
    rooms = []
    secrets: list[str] = []
    for _ in range(6):
        _, room = await relay.host()
        rooms.append(room["room_id"])
        secrets += [room["token"], room["stats_key"]]
        _, joined = await relay.student(room["room_id"], "Ann")
        assert joined["room_id"] == room["room_id"] and joined["user_id"] == 2
        secrets.append(joined["token"])
    for rid in rooms:
        assert type(rid) is int and 10_000_000 <= rid <= 99_999_999
    assert len(set(rooms)) == len(rooms)
    diffs = {b - a for a, b in itertools.pairwise(rooms)}
    assert diffs != {1}, "room ids look sequential"
    for token in secrets:
        assert TOKEN_RE.match(token), token
        assert len(base64.urlsafe_b64decode(token + "==")) == 16
    assert len(set(secrets)) == len(secrets)


async def test_user_ids_never_reused(relay: Relay) -> None:
    host, room, [(_ann, a), (bob, b)] = await classroom_joined(relay, "Ann", "Bob")
    assert (a["user_id"], b["user_id"]) == (2, 3)
    await bob.ok("room/leave", {})
    await host.expect("room/update")
    _, c = await relay.student(room["room_id"], "Bob")
    assert c["user_id"] == 4
    assert c["token"] != b["token"]
    # The removed student's token is dead.
    thief = await relay.client()
    await thief.fail("room/rejoin", {"room_id": room["room_id"], "user_id": 3,
                                     "token": b["token"]}, "user_not_found")


# -- 3. acting on another room's users by id ------------------------------------------------
async def test_foreign_user_ids_are_user_not_found(relay: Relay) -> None:
    host_a, _, [(ann, _)] = await classroom_joined(relay, "Ann")
    host_b, _, [(bo, _), (cy, cy_j)] = await classroom_joined(relay, "Bo", "Cy")
    foreign = cy_j["user_id"]  # 3: exists in room B only
    assert foreign == 3
    for event, data in [
        ("sharing/start", {"user_id": foreign}), ("sharing/end", {"user_id": foreign}),
        ("sharing/snapshot", {"user_id": foreign}), ("message/user", {"user_id": foreign}),
        ("message/to_client", {"user_id": foreign, "content": "x"}),
        ("room/kill", {"user_id": foreign}), ("rtc/allow", {"user_id": foreign}),
        ("exercise/feedback", {"user_id": foreign, "accepted": True}),
        ("steps/status/to_client", {"user_id": foreign, "steps": {}}),
        # The host itself is not a student.
        ("sharing/start", {"user_id": 1}), ("message/user", {"user_id": 1}),
        ("room/kill", {"user_id": 1}),
    ]:
        await host_a.fail(event, data, "user_not_found")
    # A removed student is gone for good.
    await bo.ok("room/leave", {})
    await host_b.expect("room/update")
    for event, data in [("message/to_client", {"user_id": 2, "content": "x"}),
                        ("sharing/start", {"user_id": 2}), ("message/user", {"user_id": 2})]:
        await host_b.fail(event, data, "user_not_found")
    await nothing_before_sentinel(host_a, ann, host_b, bo, cy)


# -- 6. outbound requests on behalf of clients ----------------------------------------------
async def test_import_cannot_reach_arbitrary_hosts(relay: Relay) -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    hits: list[int] = []

    async def watch() -> None:
        stream = await listener.accept()
        hits.append(1)
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        host, _, [(ann, _)] = await classroom_joined(relay, "Ann")
        page = f"http://127.0.0.1:{port}/Task-0123456789abcdef0123456789abcdef"
        outsider = await relay.client()
        await outsider.fail("steps/import", {"url": page}, "not_in_room")
        await ann.fail("steps/import", {"url": page}, "not_host")
        frames = await host.call("steps/import", {"url": page})
        assert [f["event"] for f in frames] == ["alerts", "error", "ack"]
        assert frames[0]["data"]["type"] == "ERROR"
        assert frames[1]["data"]["code"] == "import_failed"
        # A connection the relay made would be readable on the listener: once every task
        # (``watch`` included) is blocked, it would have been accepted.
        await trio.testing.wait_all_tasks_blocked()
        assert hits == []
        await ann.nothing_before_sentinel()
        nursery.cancel_scope.cancel()
    await listener.aclose()
