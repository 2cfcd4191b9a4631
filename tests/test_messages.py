"""§6.2 messages over real sockets: exact Message payloads, routing, storage and errors."""

from __future__ import annotations

from tests.support import (
    Relay,
    StartRelay,
    check_message,
    classroom,
    fails,
    nothing_before_sentinel,
)


# -- message/to_mentor ------------------------------------------------------------------
async def test_to_mentor_exact_and_no_echo(relay: Relay) -> None:
    host, _, (ann, bob) = await classroom(relay, "Ann", "Bob")
    frames = await ann.ok("message/to_mentor", {"content": "Stuck on task 1"})
    assert frames == []  # no echo to the sender
    got = await host.expect("message/to_mentor")
    assert got["seq"] == host.last_seq
    check_message(got["data"], id=1, sender=2, receiver=1, content="Stuck on task 1")
    # Content is not trimmed; Bob's message gets the next room-wide id.
    assert await bob.ok("message/to_mentor", {"content": "  spaced\n "}) == []
    got = await host.expect("message/to_mentor")
    check_message(got["data"], id=2, sender=3, receiver=1, content="  spaced\n ")
    await nothing_before_sentinel(ann, bob, host)


async def test_to_mentor_room_id(relay: Relay) -> None:
    host, room_id, (ann,) = await classroom(relay, "Ann")
    await ann.ok("message/to_mentor", {"content": "a", "room_id": room_id})
    assert (await host.expect("message/to_mentor"))["data"]["content"] == "a"
    await fails(ann, "message/to_mentor", {"content": "b", "room_id": room_id + 1}, "forbidden")
    await fails(ann, "message/to_mentor", {"content": "b", "room_id": str(room_id)},
                "invalid_payload")
    await fails(ann, "message/to_mentor", {"content": "b", "room_id": None}, "invalid_payload")
    await nothing_before_sentinel(host)
    # The failures consumed no message id.
    await ann.ok("message/to_mentor", {"content": "c"})
    assert (await host.expect("message/to_mentor"))["data"]["id"] == 2


async def test_to_mentor_content_limits(relay: Relay) -> None:
    host, _, (ann,) = await classroom(relay, "Ann")
    # 10,000 code points is fine even when that is 20,000 UTF-8 bytes.
    big = "é" * 10_000
    await ann.ok("message/to_mentor", {"content": big})
    assert (await host.expect("message/to_mentor"))["data"]["content"] == big
    await fails(ann, "message/to_mentor", {"content": "x" * 10_001}, "too_large")
    await fails(ann, "message/to_mentor", {"content": "é" * 10_001}, "too_large")
    for bad in ({"content": ""}, {}, {"content": None}, {"content": 5}, {"content": ["a"]}):
        await fails(ann, "message/to_mentor", bad, "invalid_payload")
    await fails(ann, "message/to_mentor", ["content"], "invalid_payload")
    await fails(ann, "message/to_mentor", "hello", "invalid_payload")
    await nothing_before_sentinel(host)


async def test_to_mentor_roles_and_binding(relay: Relay) -> None:
    host, _room_id, (ann,) = await classroom(relay, "Ann")
    # Role is checked before the payload.
    await fails(host, "message/to_mentor", {"content": "x"}, "not_student")
    await fails(host, "message/to_mentor", {"content": ""}, "not_student")
    unbound = await relay.client()
    await fails(unbound, "message/to_mentor", {"content": "x"}, "not_in_room")
    await fails(unbound, "message/to_mentor", 17, "not_in_room")
    await nothing_before_sentinel(host, ann)


# -- message/to_client ------------------------------------------------------------------
async def test_to_client_exact_and_only_target(relay: Relay) -> None:
    host, room_id, (ann, bob) = await classroom(relay, "Ann", "Bob")
    assert await host.ok("message/to_client", {"user_id": 3, "content": "Check line 3"}) == []
    got = await bob.expect("message/to_client")
    assert got["seq"] == 1
    check_message(got["data"], id=1, sender=1, receiver=3, content="Check line 3")
    await host.ok("message/to_client", {"user_id": 2, "content": "hi", "room_id": room_id})
    got = await ann.expect("message/to_client")
    check_message(got["data"], id=2, sender=1, receiver=2, content="hi")
    await nothing_before_sentinel(host, ann, bob)


async def test_to_client_errors(relay: Relay) -> None:
    host, _room_id, (ann, bob) = await classroom(relay, "Ann", "Bob")
    await fails(host, "message/to_client", {"user_id": 1, "content": "x"}, "user_not_found")
    await fails(host, "message/to_client", {"user_id": 99, "content": "x"}, "user_not_found")
    for bad in (
        {"content": "x"},
        {"user_id": "2", "content": "x"},
        {"user_id": 2.0, "content": "x"},
        {"user_id": True, "content": "x"},
        {"user_id": None, "content": "x"},
        {"user_id": 2},
        {"user_id": 2, "content": ""},
        {"user_id": 2, "content": 3},
        {"user_id": 2, "content": "x", "room_id": "1"},
    ):
        await fails(host, "message/to_client", bad, "invalid_payload")
    await fails(host, "message/to_client", {"user_id": 2, "content": "x" * 10_001}, "too_large")
    await fails(host, "message/to_client", {"user_id": 2, "content": "x", "room_id": 1},
                "forbidden")
    # A payload error is reported before the room_id mismatch.
    await fails(host, "message/to_client", {"user_id": 2, "content": "", "room_id": 1},
                "invalid_payload")
    await fails(ann, "message/to_client", {"user_id": 3, "content": "x"}, "not_host")
    await fails(ann, "message/to_client", {"content": ""}, "not_host")
    unbound = await relay.client()
    await fails(unbound, "message/to_client", {"user_id": 2, "content": "x"}, "not_in_room")
    await nothing_before_sentinel(host, ann, bob)
    # Nothing was stored and no id was consumed.
    frames = await host.ok("message/user", {"user_id": 2})
    assert frames[0]["data"] == {"user_id": 2, "messages": []}
    await host.ok("message/to_client", {"user_id": 2, "content": "first"})
    assert (await ann.expect("message/to_client"))["data"]["id"] == 1


async def test_to_client_removed_student(relay: Relay) -> None:
    host, _, (ann,) = await classroom(relay, "Ann")
    await ann.ok("room/leave", {})
    await host.expect("room/update")
    await fails(host, "message/to_client", {"user_id": 2, "content": "x"}, "user_not_found")
    await fails(host, "message/user", {"user_id": 2}, "user_not_found")
    await nothing_before_sentinel(ann)


async def test_offline_replay_and_snapshot(relay: Relay) -> None:
    host, room = await relay.host()
    ann = await relay.client()
    reply = (await ann.ok("room/join", {"room_id": room["room_id"], "name": "Ann"}))[0]["data"]
    await host.expect("room/update")
    await host.ok("message/to_client", {"user_id": 2, "content": "one"})
    await ann.expect("message/to_client")
    await ann.ok("message/to_mentor", {"content": "reply"})
    await host.expect("message/to_mentor")
    seen = ann.last_seq
    await ann.aclose()
    update = await host.expect("room/update")
    assert update["data"]["users"][1]["status"] == "offline"
    # Messages to an offline student are kept and numbered.
    assert await host.ok("message/to_client", {"user_id": 2, "content": "two"}) == []
    assert await host.ok("message/to_all", {"content": "three"}) == []

    # Resume with last_seq: exactly the two missed messages are replayed.
    again = await relay.client()
    again.last_seq = seen
    frames = await again.ok("room/rejoin", {"room_id": room["room_id"], "user_id": 2,
                                            "token": reply["token"], "last_seq": seen})
    assert [f["event"] for f in frames] == ["room/join", "rtc/config", "message/to_client",
                                            "message/to_client"]
    check_message(frames[2]["data"], id=3, sender=1, receiver=2, content="two")
    check_message(frames[3]["data"], id=4, sender=1, receiver=2, content="three")
    await host.expect("room/update")
    await again.aclose()
    await host.expect("room/update")

    # A fresh attach gets every stored host message in the snapshot, oldest first.
    fresh = await relay.client()
    frames = await fresh.ok("room/rejoin", {"room_id": room["room_id"], "user_id": 2,
                                            "token": reply["token"]})
    assert [f["event"] for f in frames][2:] == ["message/to_client"] * 3
    assert [f["data"]["content"] for f in frames[2:]] == ["one", "two", "three"]
    assert [f["data"]["id"] for f in frames[2:]] == [1, 3, 4]


# -- message/to_all ---------------------------------------------------------------------
async def test_to_all_each_student_own_message(relay: Relay) -> None:
    host, _room_id, (ann, bob, cid) = await classroom(relay, "Ann", "Bob", "Cid")
    await cid.aclose()
    await host.expect("room/update")
    assert await host.ok("message/to_all", {"content": "Break!"}) == []
    a = (await ann.expect("message/to_client"))["data"]
    b = (await bob.expect("message/to_client"))["data"]
    check_message(a, id=a["id"], sender=1, receiver=2, content="Break!")
    check_message(b, id=b["id"], sender=1, receiver=3, content="Break!")
    # The offline student got its own message too, visible in its conversation.
    frames = await host.ok("message/user", {"user_id": 4})
    (msg,) = frames[0]["data"]["messages"]
    check_message(msg, id=msg["id"], sender=1, receiver=4, content="Break!")
    # Three distinct messages (the order in which ids are given out is not specified).
    assert sorted([a["id"], b["id"], msg["id"]]) == [1, 2, 3]
    await nothing_before_sentinel(host, ann, bob)


async def test_to_all_errors_and_empty_room(relay: Relay) -> None:
    host, room_id, (ann,) = await classroom(relay, "Ann")
    for bad in ({}, {"content": ""}, {"content": 1}, [], "x"):
        await fails(host, "message/to_all", bad, "invalid_payload")
    await fails(host, "message/to_all", {"content": "y" * 10_001}, "too_large")
    await fails(host, "message/to_all", {"content": "x", "room_id": room_id + 1}, "forbidden")
    await fails(ann, "message/to_all", {"content": "x"}, "not_host")
    await nothing_before_sentinel(host, ann)
    await host.ok("message/to_all", {"content": "x", "room_id": room_id})
    assert (await ann.expect("message/to_client"))["data"]["id"] == 1

    lonely, _ = await relay.host("Solo")
    assert await lonely.ok("message/to_all", {"content": "anyone?"}) == []
    await nothing_before_sentinel(lonely)


# -- message/user -----------------------------------------------------------------------
async def test_message_user_conversation_oldest_first(relay: Relay) -> None:
    host, _room_id, (ann, bob) = await classroom(relay, "Ann", "Bob")
    await ann.ok("message/to_mentor", {"content": "q1"})
    await host.expect("message/to_mentor")
    await host.ok("message/to_client", {"user_id": 2, "content": "a1"})
    await ann.expect("message/to_client")
    await bob.ok("message/to_mentor", {"content": "bob"})
    await host.expect("message/to_mentor")
    await ann.ok("message/to_mentor", {"content": "q2"})
    await host.expect("message/to_mentor")

    frames = await host.call("message/user", {"user_id": 2})
    assert [f["event"] for f in frames] == ["message/user", "ack"]
    reply = frames[0]
    assert reply["seq"] == host.last_seq
    assert reply["data"]["user_id"] == 2
    messages = reply["data"]["messages"]
    assert [(m["id"], m["sender"], m["receiver"], m["content"]) for m in messages] == [
        (1, 2, 1, "q1"), (2, 1, 2, "a1"), (4, 2, 1, "q2")]
    for m in messages:
        check_message(m, id=m["id"], sender=m["sender"], receiver=m["receiver"],
                      content=m["content"])
    bob_conv = (await host.ok("message/user", {"user_id": 3}))[0]["data"]
    assert [m["content"] for m in bob_conv["messages"]] == ["bob"]
    await nothing_before_sentinel(ann, bob)


async def test_message_user_errors(relay: Relay) -> None:
    host, room_id, (ann,) = await classroom(relay, "Ann")
    assert (await host.ok("message/user", {"user_id": 2}))[0]["data"] == {
        "user_id": 2, "messages": []}
    await fails(host, "message/user", {"user_id": 1}, "user_not_found")
    await fails(host, "message/user", {"user_id": 7}, "user_not_found")
    for bad in ({}, {"user_id": "2"}, {"user_id": 2.5}, {"user_id": False}, [2]):
        await fails(host, "message/user", bad, "invalid_payload")
    await fails(host, "message/user", {"user_id": 2, "room_id": room_id + 1}, "forbidden")
    await fails(ann, "message/user", {"user_id": 2}, "not_host")
    await nothing_before_sentinel(host, ann)


async def test_conversation_keeps_newest_1000(start_relay: StartRelay) -> None:
    relay = await start_relay(rate_limit_burst=5000.0, rate_limit_rate=5000.0)
    host, _room_id, (ann,) = await classroom(relay, "Ann")
    for i in range(1001):
        await ann.send("message/to_mentor", {"content": f"m{i}"})
    for _ in range(1001):
        await host.expect("message/to_mentor")
    frames = await host.ok("message/user", {"user_id": 2})
    messages = frames[0]["data"]["messages"]
    assert len(messages) == 1000
    assert messages[0]["content"] == "m1" and messages[-1]["content"] == "m1000"
    assert messages[0]["id"] == 2 and messages[-1]["id"] == 1001


async def test_binding_and_roles_for_every_message_event(relay: Relay) -> None:
    host, _room_id, (ann, bob) = await classroom(relay, "Ann", "Bob")
    # A student that left is unbound again (its connection stays open).
    await bob.ok("room/leave", {})
    await host.expect("room/update")
    fresh = await relay.client()
    events = {"message/to_client": {"user_id": 2, "content": "x"},
              "message/to_all": {"content": "x"},
              "message/to_mentor": {"content": "x"},
              "message/user": {"user_id": 2}}
    for event, data in events.items():
        for unbound in (fresh, bob):
            await fails(unbound, event, data, "not_in_room")
        if event == "message/to_mentor":
            await fails(host, event, data, "not_student")
        else:
            await fails(ann, event, data, "not_host")
    await nothing_before_sentinel(host, ann)
