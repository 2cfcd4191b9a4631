"""§6.5 steps over real sockets: publishing, statuses both ways with alerts, the table."""

from __future__ import annotations

from typing import Any

from tests.support import (
    Client,
    Relay,
    classroom,
    fails,
    nothing_before_sentinel,
    publish,
    step,
)

KIB = 1024


# -- helpers ----------------------------------------------------------------------------
async def table(host: Client) -> list[dict[str, Any]]:
    frames = await host.ok("steps/table", {})
    assert [f["event"] for f in frames] == ["steps/table"]
    return frames[0]["data"]


async def late_snapshot(relay: Relay, host: Client, room_id: int, name: str) -> list[dict]:
    late = await relay.client()
    frames = await late.ok("room/join", {"room_id": room_id, "name": name})
    await host.expect("room/update")
    return [(f["event"], f["data"]) for f in frames[2:]]


# -- steps/all --------------------------------------------------------------------------
async def test_steps_all_publish_exact(relay: Relay) -> None:
    host, room_id, (ann, bob) = await classroom(relay, "Ann", "Bob")
    sent = [
        {"name": "  1  ", "content": "<p>Task</p>", "language": "python", "type": "exercise",
         "id": 77, "extra": {"x": 1}},
        step("theory", "Read", "html", "theory"),
    ]
    assert await host.ok("steps/all", sent) == []
    expected = [step("1", "<p>Task</p>"), step("theory", "Read", "html", "theory")]
    for s in (ann, bob):
        assert await s.expect("steps/all") == {"event": "steps/all", "data": expected,
                                               "seq": 1}
    await nothing_before_sentinel(host, ann, bob)
    assert await late_snapshot(relay, host, room_id, "Cid") == [("steps/all", expected)]


async def test_steps_all_drops_empty_slots(relay: Relay) -> None:
    host, _, (ann,) = await classroom(relay, "Ann")
    sent: list[Any] = [
        {"name": "no content"},
        {"name": "null", "content": None, "language": "x", "type": "exercise"},
        step("empty", ""),
        step("blank", "  \n\t "),
        # An empty slot is dropped even when its other fields are invalid.
        {"content": "   ", "name": 5, "type": "quiz"},
        {},
        step("kept", " x "),
        step("empty", "dup names of dropped slots do not count"),
    ]
    published = await publish(host, sent, ann)
    assert published == [step("kept", " x "),
                         step("empty", "dup names of dropped slots do not count")]


async def test_steps_all_invalid_items(relay: Relay) -> None:
    host, room_id, (ann,) = await classroom(relay, "Ann")
    await publish(host, [step("orig")], ann)
    invalid: list[Any] = [
        ["not an object"],
        [None],
        [step("ok"), 5],
        [step("ok"), {"name": "x", "content": 5, "language": "py", "type": "exercise"}],
        [step("ok"), {"name": "x", "content": ["a"], "language": "py", "type": "exercise"}],
        [{"content": "c", "language": "py", "type": "exercise"}],
        [step("   ")],
        [step("")],
        [{"name": 1, "content": "c", "language": "py", "type": "exercise"}],
        [step("x", language="")],
        [{"name": "x", "content": "c", "type": "exercise"}],
        [step("x", type="quiz")],
        [{"name": "x", "content": "c", "language": "py"}],
        [step("dup"), step("dup")],
        [step("dup"), step(" dup ")],  # names are compared after trimming
        {"steps": [step("x")]},
        "steps",
    ]
    for data in invalid:
        await fails(host, "steps/all", data, "invalid_payload")
    too_large: list[Any] = [
        [step("n" * 33)],
        [step("x", language="l" * 33)],
        [step("x", content="a" * (256 * KIB + 1))],
        [step("x", content="é" * (128 * KIB) + "a")],
    ]
    for data in too_large:
        await fails(host, "steps/all", data, "too_large")
    unbound = await relay.client()
    await fails(unbound, "steps/all", [], "not_in_room")
    await fails(ann, "steps/all", [], "not_host")
    await fails(ann, "steps/all", "junk", "not_host")
    await nothing_before_sentinel(host, ann)
    # The published steps are unchanged.
    assert await late_snapshot(relay, host, room_id, "Bob") == [("steps/all", [step("orig")])]


async def test_steps_all_limits_ok(relay: Relay) -> None:
    host, _, (ann,) = await classroom(relay, "Ann")
    big = [step(" " + "n" * 32 + " ", "é" * (128 * KIB), "l" * 32),
           step("A"), step("a")]  # names are unique by exact match
    published = await publish(host, big, ann)
    assert [s["name"] for s in published] == ["n" * 32, "A", "a"]


async def test_steps_all_cap_of_100(relay: Relay) -> None:
    host, _, (ann,) = await classroom(relay, "Ann")
    hundred = [step(str(i)) for i in range(100)]
    assert len(await publish(host, hundred, ann)) == 100
    # 101 items are too many even when some of them are empty slots (counted as sent).
    await fails(host, "steps/all", [*hundred[:99], {"content": ""}, {"content": None}],
                "too_large")
    await fails(host, "steps/all", [step(str(i)) for i in range(101)], "too_large")
    await nothing_before_sentinel(host, ann)


async def test_steps_all_unpublish_and_status_cleanup(relay: Relay) -> None:
    host, room_id, (ann,) = await classroom(relay, "Ann")
    await publish(host, [step("1"), step("2"), step("3")], ann)
    await ann.ok("steps/status/to_mentor", {"1": "DONE", "2": "HELP", "3": "IN_PROGRESS"})
    await host.expect("steps/status/to_mentor")
    # Republishing without "2" removes that status.
    await publish(host, [step("1"), step("3", "changed"), step("4")], ann)
    assert (await table(host))[0]["steps"] == {"1": "DONE", "3": "IN_PROGRESS"}
    # An empty array unpublishes everything and clears the statuses.
    assert await publish(host, [], ann) == []
    assert (await table(host))[0]["steps"] == {}
    assert await late_snapshot(relay, host, room_id, "Bob") == []


# -- steps/status/to_mentor -------------------------------------------------------------
async def test_to_mentor_merge_and_forward(relay: Relay) -> None:
    host, _room_id, (ann, bob) = await classroom(relay, "Ann", "Bob")
    await publish(host, [step("1"), step("2"), step("3")], ann, bob)
    assert await ann.ok("steps/status/to_mentor", {"1": "IN_PROGRESS"}) == []
    assert await host.expect("steps/status/to_mentor") == {
        "event": "steps/status/to_mentor", "seq": host.last_seq,
        "data": {"user_id": 2, "steps": {"1": "IN_PROGRESS"}}}
    # The forwarded map is the complete status map after the merge.
    await ann.ok("steps/status/to_mentor", {"2": "HELP", "1": "DONE"})
    assert (await host.expect("steps/status/to_mentor"))["data"] == {
        "user_id": 2, "steps": {"1": "DONE", "2": "HELP"}}
    # NONE is stored as a value too.
    await ann.ok("steps/status/to_mentor", {"3": "NONE"})
    assert (await host.expect("steps/status/to_mentor"))["data"]["steps"] == {
        "1": "DONE", "2": "HELP", "3": "NONE"}
    await nothing_before_sentinel(host, ann, bob)


async def test_to_mentor_unchanged_forwards_nothing(relay: Relay) -> None:
    host, _, (ann,) = await classroom(relay, "Ann")
    await publish(host, [step("1"), step("2")], ann)
    await ann.ok("steps/status/to_mentor", {"1": "DONE"})
    await host.expect("steps/status/to_mentor")
    assert await ann.ok("steps/status/to_mentor", {"1": "DONE"}) == []
    assert await ann.ok("steps/status/to_mentor", {}) == []
    await nothing_before_sentinel(host, ann)
    # Partially unchanged: forwarded once with the whole map.
    await ann.ok("steps/status/to_mentor", {"1": "DONE", "2": "HELP"})
    assert (await host.expect("steps/status/to_mentor"))["data"]["steps"] == {
        "1": "DONE", "2": "HELP"}


async def test_to_mentor_accepted_rules(relay: Relay) -> None:
    host, _, (ann,) = await classroom(relay, "Ann")
    await publish(host, [step("1"), step("2")], ann)
    await ann.ok("steps/status/to_mentor", {"2": "DONE"})
    await host.expect("steps/status/to_mentor")
    # A student may not set ACCEPTED; the whole event fails, "2" stays DONE.
    await fails(ann, "steps/status/to_mentor", {"1": "ACCEPTED"}, "forbidden")
    await fails(ann, "steps/status/to_mentor", {"2": "NONE", "1": "ACCEPTED"}, "forbidden")
    await nothing_before_sentinel(host, ann)
    assert (await table(host))[0]["steps"] == {"2": "DONE"}
    # The teacher accepts "1".
    await host.ok("steps/status/to_client", {"user_id": 2, "steps": {"1": "ACCEPTED"}})
    assert [(await ann.recv())["event"] for _ in range(2)] == ["alerts",
                                                                "steps/status/to_client"]
    # ACCEPTED may now be re-sent, and whatever the student sends, "1" stays ACCEPTED.
    for value in ("ACCEPTED", "NONE", "IN_PROGRESS", "DONE", "HELP"):
        assert await ann.ok("steps/status/to_mentor", {"1": value}) == []
    await nothing_before_sentinel(host)
    await ann.ok("steps/status/to_mentor", {"1": "NONE", "2": "IN_PROGRESS"})
    assert (await host.expect("steps/status/to_mentor"))["data"]["steps"] == {
        "1": "ACCEPTED", "2": "IN_PROGRESS"}


async def test_to_mentor_errors(relay: Relay) -> None:
    host, _room_id, (ann,) = await classroom(relay, "Ann")
    await publish(host, [step("1"), step("room_id")], ann)
    for bad in ({"1": "bogus"}, {"1": "done"}, {"1": None}, {"1": 1}, {"1": ["DONE"]},
                {"1": "bogus", "nope": "DONE"}, [], "DONE", 3):
        await fails(ann, "steps/status/to_mentor", bad, "invalid_payload")
    # Payload rules are reported before the ACCEPTED rule.
    await fails(ann, "steps/status/to_mentor", {"1": "ACCEPTED", "room_id": "x"},
                "invalid_payload")
    # v2: names that are not published are ignored whatever their value (§6.5), so only
    # the published entry's rules remain.
    await fails(ann, "steps/status/to_mentor", {"1": "ACCEPTED", "nope": "DONE"}, "forbidden")
    for ignored in ({"9": "DONE"}, {"T": "T"}, {"nope": None, "x": ["DONE"]}, {}):
        assert await ann.ok("steps/status/to_mentor", ignored) == []
    await fails(host, "steps/status/to_mentor", {"1": "DONE"}, "not_student")
    unbound = await relay.client()
    await fails(unbound, "steps/status/to_mentor", {"1": "DONE"}, "not_in_room")
    await nothing_before_sentinel(host, ann)
    assert (await table(host))[0]["steps"] == {}
    # The payload is a pure map: "room_id" is a step name here, not a room check.
    await ann.ok("steps/status/to_mentor", {"room_id": "DONE"})
    assert (await host.expect("steps/status/to_mentor"))["data"]["steps"] == {
        "room_id": "DONE"}


async def test_to_mentor_room_id_key_is_a_step_name(relay: Relay) -> None:
    host, room_id, (ann,) = await classroom(relay, "Ann")
    await publish(host, [step("1")], ann)
    # A room_id key is no room check here: it is an unpublished step name, ignored (v2).
    assert await ann.ok("steps/status/to_mentor", {"1": "DONE", "room_id": room_id + 1}) == []
    assert (await host.expect("steps/status/to_mentor"))["data"] == {
        "user_id": 2, "steps": {"1": "DONE"}}
    await nothing_before_sentinel(host)


# -- steps/status/to_client -------------------------------------------------------------
async def test_to_client_alerts_in_payload_order(relay: Relay) -> None:
    host, _room_id, (ann, bob) = await classroom(relay, "Ann", "Bob")
    names = ["1", "2", "3", "4", "5", "6"]
    await publish(host, [step(n) for n in names], ann, bob)
    await ann.ok("steps/status/to_mentor", {"1": "DONE", "2": "DONE", "3": "IN_PROGRESS",
                                            "5": "HELP"})
    await host.expect("steps/status/to_mentor")
    sent = {"3": "ACCEPTED", "1": "NONE", "2": "ACCEPTED", "4": "NONE", "5": "NONE",
            "6": "DONE"}
    assert await host.ok("steps/status/to_client", {"user_id": 2, "steps": sent}) == []
    frames = [await ann.recv() for _ in range(4)]
    assert [(f["event"], f["data"]) for f in frames] == [
        ("alerts", {"type": "SUCCESS", "message": "Task 3 solution accepted!"}),
        ("alerts", {"type": "WARNING", "message": "Task 1 solution declined!"}),
        ("alerts", {"type": "SUCCESS", "message": "Task 2 solution accepted!"}),
        ("steps/status/to_client", sent),
    ]
    assert [f["seq"] for f in frames] == [2, 3, 4, 5]
    assert list(frames[3]["data"]) == list(sent)  # the map as sent, in order
    await nothing_before_sentinel(host, ann, bob)
    assert (await table(host))[0]["steps"] == {
        "1": "NONE", "2": "ACCEPTED", "3": "ACCEPTED", "4": "NONE", "5": "NONE", "6": "DONE"}


async def test_to_client_no_alert_cases(relay: Relay) -> None:
    host, room_id, (ann,) = await classroom(relay, "Ann")
    await publish(host, [step("1"), step("2"), step("3")], ann)
    await host.ok("steps/status/to_client", {"user_id": 2, "steps": {"1": "ACCEPTED"}})
    assert (await ann.expect("alerts"))["data"]["type"] == "SUCCESS"
    await ann.expect("steps/status/to_client")
    # ACCEPTED over ACCEPTED, NONE over ACCEPTED/IN_PROGRESS/nothing: no alerts.
    await host.ok("steps/status/to_client", {"user_id": 2, "steps": {"1": "ACCEPTED"}})
    assert (await ann.expect("steps/status/to_client"))["data"] == {"1": "ACCEPTED"}
    await host.ok("steps/status/to_client",
                  {"user_id": 2, "steps": {"1": "NONE", "2": "IN_PROGRESS"},
                   "room_id": room_id})
    assert (await ann.expect("steps/status/to_client"))["data"] == {
        "1": "NONE", "2": "IN_PROGRESS"}
    await host.ok("steps/status/to_client", {"user_id": 2, "steps": {"2": "NONE", "3": "NONE"}})
    assert (await ann.expect("steps/status/to_client"))["data"] == {"2": "NONE", "3": "NONE"}
    # An empty map is stored as nothing, but still sent.
    await host.ok("steps/status/to_client", {"user_id": 2, "steps": {}})
    assert (await ann.expect("steps/status/to_client"))["data"] == {}
    await nothing_before_sentinel(host, ann)


async def test_to_client_statuses_in_student_snapshot(relay: Relay) -> None:
    host, room = await relay.host()
    room_id = room["room_id"]
    ann = await relay.client()
    reply = (await ann.ok("room/join", {"room_id": room_id, "name": "Ann"}))[0]["data"]
    await host.expect("room/update")
    await publish(host, [step("1"), step("2")], ann)
    await ann.ok("steps/status/to_mentor", {"1": "DONE"})
    await host.expect("steps/status/to_mentor")
    seen = ann.last_seq
    await ann.aclose()
    await host.expect("room/update")
    # Offline: the alert and the statuses wait in the buffer.
    await host.ok("steps/status/to_client", {"user_id": 2, "steps": {"1": "NONE",
                                                                     "2": "ACCEPTED"}})
    again = await relay.client()
    again.last_seq = seen
    frames = await again.ok("room/rejoin", {**reply, "last_seq": seen})
    assert [(f["event"], f["data"]) for f in frames[2:]] == [
        ("alerts", {"type": "WARNING", "message": "Task 1 solution declined!"}),
        ("alerts", {"type": "SUCCESS", "message": "Task 2 solution accepted!"}),
        ("steps/status/to_client", {"1": "NONE", "2": "ACCEPTED"}),
    ]
    await host.expect("room/update")
    await again.aclose()
    await host.expect("room/update")
    fresh = await relay.client()
    frames = await fresh.ok("room/rejoin", reply)
    assert [(f["event"], f["data"]) for f in frames[2:]] == [
        ("steps/all", [step("1"), step("2")]),
        ("steps/status/to_client", {"1": "NONE", "2": "ACCEPTED"}),
    ]


async def test_to_client_errors_change_nothing(relay: Relay) -> None:
    host, room_id, (ann, bob) = await classroom(relay, "Ann", "Bob")
    await publish(host, [step("1"), step("2")], ann, bob)
    await ann.ok("steps/status/to_mentor", {"1": "DONE"})
    await host.expect("steps/status/to_mentor")
    event = "steps/status/to_client"
    await fails(host, event, {"user_id": 1, "steps": {"1": "DONE"}}, "user_not_found")
    await fails(host, event, {"user_id": 8, "steps": {"1": "DONE"}}, "user_not_found")
    for bad in (
        {"user_id": 2, "steps": {"1": "ACCEPTED", "9": "DONE"}},  # unpublished name
        {"user_id": 2, "steps": {"1": "ACCEPTED", "2": "bogus"}},
        {"user_id": 2, "steps": {"1": None}},
        {"user_id": 2, "steps": {"1": 3}},
        {"user_id": 2, "steps": ["1"]},
        {"user_id": 2, "steps": None},
        {"user_id": 2},
        {"steps": {"1": "DONE"}},
        {"user_id": "2", "steps": {"1": "DONE"}},
        {"user_id": 2, "steps": {"1": "DONE"}, "room_id": "r"},
        [],
    ):
        await fails(host, event, bad, "invalid_payload")
    await fails(host, event, {"user_id": 2, "steps": {"1": "NONE"}, "room_id": room_id + 1},
                "forbidden")
    await fails(ann, event, {"user_id": 2, "steps": {"1": "NONE"}}, "not_host")
    await nothing_before_sentinel(host, ann, bob)
    # No alert, nothing stored.
    assert [t["steps"] for t in await table(host)] == [{"1": "DONE"}, {}]


# -- steps/table ------------------------------------------------------------------------
async def test_table_exact(relay: Relay) -> None:
    host, room_id, (ann, bob, cid) = await classroom(relay, "Ann", "Bob", "Cid")
    assert await table(host) == [
        {"user_id": 2, "name": "Ann", "status": "online", "steps": {}},
        {"user_id": 3, "name": "Bob", "status": "online", "steps": {}},
        {"user_id": 4, "name": "Cid", "status": "online", "steps": {}},
    ]
    await publish(host, [step("1")], ann, bob, cid)
    await cid.ok("steps/status/to_mentor", {"1": "HELP"})
    await host.expect("steps/status/to_mentor")
    await cid.aclose()
    await host.expect("room/update")
    await ann.ok("room/leave", {})
    await host.expect("room/update")
    frames = await host.call("steps/table", {"room_id": room_id})
    assert [f["event"] for f in frames] == ["steps/table", "ack"]
    assert frames[0]["seq"] == host.last_seq
    assert frames[0]["data"] == [
        {"user_id": 3, "name": "Bob", "status": "online", "steps": {}},
        {"user_id": 4, "name": "Cid", "status": "offline", "steps": {"1": "HELP"}},
    ]
    await host.ok("steps/table")  # absent data means {}
    await nothing_before_sentinel(bob)


async def test_table_empty_and_errors(relay: Relay) -> None:
    host, room = await relay.host()
    assert await table(host) == []
    await fails(host, "steps/table", [], "invalid_payload")
    await fails(host, "steps/table", "x", "invalid_payload")
    await fails(host, "steps/table", {"room_id": "x"}, "invalid_payload")
    await fails(host, "steps/table", {"room_id": room["room_id"] + 1}, "forbidden")
    ann, _ = await relay.student(room["room_id"], "Ann")
    await host.expect("room/update")
    await fails(ann, "steps/table", {}, "not_host")
    unbound = await relay.client()
    await fails(unbound, "steps/table", {}, "not_in_room")
    await nothing_before_sentinel(host, ann)


async def test_binding_and_roles_for_every_steps_event(relay: Relay) -> None:
    host, _room_id, (ann, bob) = await classroom(relay, "Ann", "Bob")
    await publish(host, [step("1")], ann, bob)
    await bob.ok("room/leave", {})
    await host.expect("room/update")
    fresh = await relay.client()
    host_events: dict[str, Any] = {
        "steps/all": [step("1")], "steps/table": {},
        "steps/status/to_client": {"user_id": 2, "steps": {"1": "DONE"}},
        "steps/import": {"markdown": "x"}}
    student_events = {"steps/status/to_mentor": {"1": "DONE"}}
    for event, data in {**host_events, **student_events}.items():
        for unbound in (fresh, bob):
            await fails(unbound, event, data, "not_in_room")
        if event in host_events:
            await fails(ann, event, data, "not_host")
        else:
            await fails(host, event, data, "not_student")
    await nothing_before_sentinel(host, ann)
