"""§6.3 settings and §6.6 exercise, feedback, reset, signal and error/from_client."""

from __future__ import annotations

from typing import Any

from tests.support import Client, Relay, classroom, fails, nothing_before_sentinel

KIB = 1024
EMPTY_SETTINGS = {"names": [], "dirs": [], "extensions": []}


# -- helpers ----------------------------------------------------------------------------
async def join_frames(relay: Relay, host: Client, room_id: int, name: str) -> list[dict]:
    """A late joiner's frames up to its ack (its snapshot), and the host's update."""
    late = await relay.client()
    frames = await late.ok("room/join", {"room_id": room_id, "name": name})
    await host.expect("room/update")
    return frames[2:]  # after room/join and rtc/config


# -- settings (§6.3) --------------------------------------------------------------------
SPEC_EXAMPLE = "# output\nbuild/\n/dist\n/a/b/\n*.pyc\n.env\n*.pyc\nfoo bar\n~tmp"
SPEC_RESULT = {"names": [".env", "foo bar"], "dirs": ["build", "dist"], "extensions": ["pyc"]}


async def test_settings_broadcast_exact(relay: Relay) -> None:
    host, room_id, (ann, bob) = await classroom(relay, "Ann", "Bob")
    await bob.aclose()
    await host.expect("room/update")
    assert await host.ok("settings", {"files_to_ignore": SPEC_EXAMPLE}) == []
    got = await ann.expect("settings")
    assert got == {"event": "settings", "data": SPEC_RESULT, "seq": 1}
    await nothing_before_sentinel(host, ann)
    # Later snapshots carry the parsed settings.
    assert await join_frames(relay, host, room_id, "Cid") == [
        {"event": "settings", "data": SPEC_RESULT, "seq": 1}]


async def test_settings_parsing_details(relay: Relay) -> None:
    host, _, (ann,) = await classroom(relay, "Ann")
    cases = [
        ("", EMPTY_SETTINGS),
        # CR is trimmed, duplicates after trimming are dropped, '#' anywhere drops the line.
        ("node_modules/\r\n  node_modules/ \nsrc # keep\n*.log\nx*.tmp\n",
         {"names": [], "dirs": ["node_modules"], "extensions": ["log", "xtmp"]}),
        # '*$' and a bad first character skip a line; '/*/' empties to nothing.
        ("a*$b\n!x\n/*/\n*\n$VAR\n[abc]\n-dash\n_u\n",
         {"names": ["*", "$VAR", "[abc]", "-dash", "_u"], "dirs": [], "extensions": []}),
        # Same value twice via different lines is added once.
        ("/out\nout/\n*.py\n*.*.py\n", {"names": [], "dirs": ["out"], "extensions": ["py"]}),
    ]
    for text, expected in cases:
        await host.ok("settings", {"files_to_ignore": text})
        assert (await ann.expect("settings"))["data"] == expected, text


async def test_settings_limits_and_errors(relay: Relay) -> None:
    host, room_id, (ann,) = await classroom(relay, "Ann")
    await host.ok("settings", {"files_to_ignore": "keep.me"})
    assert (await ann.expect("settings"))["data"]["names"] == ["keep.me"]
    # 64 KiB counts UTF-8 bytes.
    await host.ok("settings", {"files_to_ignore": "a" * (64 * KIB)})
    assert (await ann.expect("settings"))["data"]["names"] == ["a" * (64 * KIB)]
    await host.ok("settings", {"files_to_ignore": "keep.me"})
    await ann.expect("settings")
    await fails(host, "settings", {"files_to_ignore": "a" * (64 * KIB + 1)}, "too_large")
    await fails(host, "settings", {"files_to_ignore": "é" * (32 * KIB + 1)}, "too_large")
    for bad in ({}, {"files_to_ignore": None}, {"files_to_ignore": ["a"]},
                {"files_to_ignore": 1}, [], "x",
                {"files_to_ignore": "a", "room_id": "x"}):
        await fails(host, "settings", bad, "invalid_payload")
    await fails(host, "settings", {"files_to_ignore": "a", "room_id": room_id + 1}, "forbidden")
    await fails(ann, "settings", {"files_to_ignore": "a"}, "not_host")
    unbound = await relay.client()
    await fails(unbound, "settings", {"files_to_ignore": "a"}, "not_in_room")
    await nothing_before_sentinel(host, ann)
    # The stored settings are unchanged.
    snap = await join_frames(relay, host, room_id, "Bob")
    assert snap == [{"event": "settings", "seq": 1,
                     "data": {"names": ["keep.me"], "dirs": [], "extensions": []}}]


# -- exercise ---------------------------------------------------------------------------
async def test_exercise_broadcast_and_snapshot(relay: Relay) -> None:
    host, room_id, (ann, bob) = await classroom(relay, "Ann", "Bob")
    assert await host.ok("exercise", {"content": "Write fizzbuzz"}) == []
    for s in (ann, bob):
        assert await s.expect("exercise") == {
            "event": "exercise", "data": {"content": "Write fizzbuzz"}, "seq": 1}
    await nothing_before_sentinel(host, ann, bob)
    assert await join_frames(relay, host, room_id, "Cid") == [
        {"event": "exercise", "data": {"content": "Write fizzbuzz"}, "seq": 1}]


async def test_exercise_default_and_null_content(relay: Relay) -> None:
    host, room_id, (ann,) = await classroom(relay, "Ann")
    await host.ok("exercise", {"content": "x"})
    await ann.expect("exercise")
    await host.ok("exercise", {})
    assert (await ann.expect("exercise"))["data"] == {"content": ""}
    await host.ok("exercise", {"content": None, "room_id": room_id})
    assert (await ann.expect("exercise"))["data"] == {"content": ""}
    # An empty stored exercise is not part of the snapshot.
    assert await join_frames(relay, host, room_id, "Bob") == []


async def test_exercise_limits_and_errors(relay: Relay) -> None:
    host, room_id, (ann,) = await classroom(relay, "Ann")
    exact = "é" * (128 * KIB)  # exactly 256 KiB of UTF-8
    await host.ok("exercise", {"content": exact})
    assert (await ann.expect("exercise"))["data"]["content"] == exact
    await host.ok("exercise", {"content": "kept"})
    await ann.expect("exercise")
    await fails(host, "exercise", {"content": exact + "a"}, "too_large")
    await fails(host, "exercise", {"content": "a" * (256 * KIB + 1)}, "too_large")
    for bad in ({"content": 1}, {"content": ["a"]}, {"content": True}, [], "text"):
        await fails(host, "exercise", bad, "invalid_payload")
    await fails(host, "exercise", {"content": "x", "room_id": room_id + 1}, "forbidden")
    await fails(ann, "exercise", {"content": "x"}, "not_host")
    await nothing_before_sentinel(host, ann)
    assert await join_frames(relay, host, room_id, "Bob") == [
        {"event": "exercise", "data": {"content": "kept"}, "seq": 1}]


# -- exercise/feedback ------------------------------------------------------------------
async def test_feedback_only_target(relay: Relay) -> None:
    host, room_id, (ann, bob) = await classroom(relay, "Ann", "Bob")
    assert await host.ok("exercise/feedback", {"user_id": 3, "accepted": True}) == []
    assert await bob.expect("exercise/feedback") == {
        "event": "exercise/feedback", "data": {"accepted": True}, "seq": 1}
    await host.ok("exercise/feedback", {"user_id": 2, "accepted": False, "room_id": room_id})
    assert (await ann.expect("exercise/feedback"))["data"] == {"accepted": False}
    await nothing_before_sentinel(host, ann, bob)


async def test_feedback_offline_target_buffered(relay: Relay) -> None:
    host, room = await relay.host()
    ann = await relay.client()
    reply = (await ann.ok("room/join", {"room_id": room["room_id"], "name": "Ann"}))[0]["data"]
    await host.expect("room/update")
    await ann.aclose()
    await host.expect("room/update")
    await host.ok("exercise/feedback", {"user_id": 2, "accepted": True})
    again = await relay.client()
    frames = await again.ok("room/rejoin", {**reply, "last_seq": 0})
    assert [f["event"] for f in frames] == ["room/join", "rtc/config", "exercise/feedback"]
    assert frames[2]["data"] == {"accepted": True}


async def test_feedback_errors(relay: Relay) -> None:
    host, room_id, (ann,) = await classroom(relay, "Ann")
    await fails(host, "exercise/feedback", {"user_id": 1, "accepted": True}, "user_not_found")
    await fails(host, "exercise/feedback", {"user_id": 9, "accepted": True}, "user_not_found")
    for bad in ({"user_id": 2}, {"user_id": 2, "accepted": 1}, {"user_id": 2, "accepted": "yes"},
                {"user_id": 2, "accepted": None}, {"accepted": True},
                {"user_id": "2", "accepted": True}, []):
        await fails(host, "exercise/feedback", bad, "invalid_payload")
    await fails(host, "exercise/feedback", {"user_id": 2, "accepted": True,
                                            "room_id": room_id - 1}, "forbidden")
    await fails(ann, "exercise/feedback", {"user_id": 2, "accepted": True}, "not_host")
    await nothing_before_sentinel(host, ann)


# -- exercise/reset ---------------------------------------------------------------------
async def test_reset_broadcast_keeps_exercise(relay: Relay) -> None:
    host, room_id, (ann, bob) = await classroom(relay, "Ann", "Bob")
    await host.ok("exercise", {"content": "task"})
    await ann.expect("exercise")
    await bob.expect("exercise")
    assert await host.ok("exercise/reset", {}) == []
    for s in (ann, bob):
        assert await s.expect("exercise/reset") == {
            "event": "exercise/reset", "data": {}, "seq": 2}
    await host.ok("exercise/reset")  # absent data means {}
    await ann.expect("exercise/reset")
    await bob.expect("exercise/reset")
    await nothing_before_sentinel(host, ann, bob)
    # The stored exercise is unchanged.
    assert await join_frames(relay, host, room_id, "Cid") == [
        {"event": "exercise", "data": {"content": "task"}, "seq": 1}]


async def test_reset_errors(relay: Relay) -> None:
    host, room_id, (ann,) = await classroom(relay, "Ann")
    await fails(host, "exercise/reset", [], "invalid_payload")
    await fails(host, "exercise/reset", "x", "invalid_payload")
    await fails(host, "exercise/reset", {"room_id": room_id + 1}, "forbidden")
    await fails(host, "exercise/reset", {"room_id": "1"}, "invalid_payload")
    await fails(ann, "exercise/reset", {}, "not_host")
    unbound = await relay.client()
    await fails(unbound, "exercise/reset", {}, "not_in_room")
    await nothing_before_sentinel(host, ann)


# -- signal -----------------------------------------------------------------------------
async def test_signal_to_host_and_stored(relay: Relay) -> None:
    host, room_id, (ann, bob) = await classroom(relay, "Ann", "Bob")
    assert await ann.ok("signal", {"value": "HELP"}) == []
    assert await host.expect("signal") == {
        "event": "signal", "data": {"user_id": 2, "value": "HELP"}, "seq": host.last_seq}
    # Own user_id (and room_id) are accepted; the same value is forwarded again.
    await ann.ok("signal", {"value": "HELP", "user_id": 2, "room_id": room_id})
    assert (await host.expect("signal"))["data"] == {"user_id": 2, "value": "HELP"}
    await bob.ok("signal", {"value": "DONE"})
    assert (await host.expect("signal"))["data"] == {"user_id": 3, "value": "DONE"}
    await nothing_before_sentinel(host, ann, bob)
    await join_frames(relay, host, room_id, "Cid")  # the host's room/update is consumed there
    # Check the stored signals through a fresh room/update.
    await bob.aclose()
    users = (await host.expect("room/update"))["data"]["users"]
    assert [(u["id"], u["signal"]) for u in users] == [(1, None), (2, "HELP"), (3, "DONE"),
                                                       (4, "NONE")]


async def test_signal_errors_change_nothing(relay: Relay) -> None:
    host, room_id, (ann, bob) = await classroom(relay, "Ann", "Bob")
    await ann.ok("signal", {"value": "IN_PROGRESS"})
    await host.expect("signal")
    await fails(ann, "signal", {"value": "HELP", "user_id": 3}, "forbidden")
    await fails(ann, "signal", {"value": "HELP", "user_id": 1}, "forbidden")
    await fails(ann, "signal", {"value": "HELP", "room_id": room_id + 1}, "forbidden")
    for bad in ({}, {"value": "ACCEPTED"}, {"value": "help"}, {"value": None}, {"value": 1},
                {"value": ["HELP"]}, {"value": "HELP", "user_id": "2"},
                {"value": "HELP", "user_id": 2.0}, ["HELP"]):
        await fails(ann, "signal", bad, "invalid_payload")
    # Payload errors come before the forbidden user_id.
    await fails(ann, "signal", {"value": "bad", "user_id": 3}, "invalid_payload")
    await fails(host, "signal", {"value": "HELP"}, "not_student")
    unbound = await relay.client()
    await fails(unbound, "signal", {"value": "HELP"}, "not_in_room")
    await nothing_before_sentinel(host, ann, bob)
    await bob.aclose()
    users = (await host.expect("room/update"))["data"]["users"]
    assert users[1]["signal"] == "IN_PROGRESS"


# -- error/from_client ------------------------------------------------------------------
async def test_error_from_client_log_format(relay: Relay) -> None:
    host, room_id, (ann, bob) = await classroom(relay, "Ann", "Bob")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"content": "Boom", "path": "src/a.py", "function": "main"},
         "Error from Ann (user 2)\nBoom\nPath: src/a.py\nFunction: main"),
        ({"content": ["Traceback:", "  line 3", "ValueError"]},
         "Error from Ann (user 2)\nTraceback:\n  line 3\nValueError"),
        ({}, "Error from Ann (user 2)"),
        ({"path": "p.py"}, "Error from Ann (user 2)\nPath: p.py"),
        ({"function": "f", "content": "x", "user_id": 2, "room_id": room_id},
         "Error from Ann (user 2)\nx\nFunction: f"),
        ({"content": None, "path": None, "function": "g"}, "Error from Ann (user 2)\nFunction: g"),
    ]
    for data, message in cases:
        assert await ann.ok("error/from_client", data) == []
        assert await host.expect("log") == {
            "event": "log", "data": {"message": message}, "seq": host.last_seq}, data
    await bob.ok("error/from_client", {"content": "<b>&"})
    assert (await host.expect("log"))["data"]["message"] == "Error from Bob (user 3)\n<b>&"
    # log goes to the host only, never to students.
    await nothing_before_sentinel(host, ann, bob)


async def test_error_from_client_limits_and_errors(relay: Relay) -> None:
    host, room_id, (ann, bob) = await classroom(relay, "Ann", "Bob")
    # Together at most 64 KiB of UTF-8.
    content = "c" * (64 * KIB - 4)
    await ann.ok("error/from_client", {"content": content, "path": "ab", "function": "cd"})
    assert (await host.expect("log"))["data"]["message"].endswith("Function: cd")
    await fails(ann, "error/from_client", {"content": content, "path": "ab", "function": "cde"},
                "too_large")
    await fails(ann, "error/from_client", {"content": ["é" * (16 * KIB), "é" * (16 * KIB), "x"]},
                "too_large")
    for bad in ({"content": 5}, {"content": ["a", 1]}, {"content": {"a": 1}},
                {"path": 1}, {"function": ["f"]}, {"content": "x", "user_id": "2"}, "oops", []):
        await fails(ann, "error/from_client", bad, "invalid_payload")
    await fails(ann, "error/from_client", {"content": "x", "user_id": 3}, "forbidden")
    await fails(ann, "error/from_client", {"content": "x", "room_id": room_id + 1}, "forbidden")
    await fails(host, "error/from_client", {"content": "x"}, "not_student")
    unbound = await relay.client()
    await fails(unbound, "error/from_client", {"content": "x"}, "not_in_room")
    await nothing_before_sentinel(host, ann, bob)


async def test_binding_and_roles_for_every_classroom_event(relay: Relay) -> None:
    host, _room_id, (ann, bob) = await classroom(relay, "Ann", "Bob")
    await bob.ok("room/leave", {})
    await host.expect("room/update")
    fresh = await relay.client()
    host_events = {"settings": {"files_to_ignore": ""}, "exercise": {"content": "x"},
                   "exercise/feedback": {"user_id": 2, "accepted": True},
                   "exercise/reset": {}}
    student_events = {"signal": {"value": "HELP"}, "error/from_client": {"content": "x"}}
    for event, data in {**host_events, **student_events}.items():
        for unbound in (fresh, bob):
            await fails(unbound, event, data, "not_in_room")
        if event in host_events:
            await fails(ann, event, data, "not_host")
        else:
            await fails(host, event, data, "not_student")
    await nothing_before_sentinel(host, ann)
