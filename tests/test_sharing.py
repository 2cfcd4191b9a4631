"""§6.4 code sharing over real sockets: sharer switching, forwarding, stored snapshots."""

from __future__ import annotations

from typing import Any

from tests.support import Client, Relay, StartRelay, classroom, fails, nothing_before_sentinel

MIB = 1024 * 1024


# -- helpers ----------------------------------------------------------------------------
async def start_sharing(host: Client, student: Client, user_id: int) -> None:
    assert await host.ok("sharing/start", {"user_id": user_id}) == []
    assert (await student.expect("sharing/start"))["data"] == {}


async def snapshot(host: Client, user_id: int) -> list[dict[str, Any]]:
    frames = await host.ok("sharing/snapshot", {"user_id": user_id})
    assert [f["event"] for f in frames] == ["sharing/snapshot"]
    assert frames[0]["data"]["user_id"] == user_id
    assert set(frames[0]["data"]) == {"user_id", "files"}
    return frames[0]["data"]["files"]


def f(filename: str, status: str = "CREATED", content: Any = "x") -> dict[str, Any]:
    return {"filename": filename, "status": status, "content": content}


# -- sharing/start and sharing/end ------------------------------------------------------
async def test_start_and_code_send_exact(relay: Relay) -> None:
    host, room_id, (ann, bob) = await classroom(relay, "Ann", "Bob")
    assert await host.ok("sharing/start", {"user_id": 2}) == []
    assert await ann.expect("sharing/start") == {"event": "sharing/start", "data": {}, "seq": 1}
    await nothing_before_sentinel(host, bob)
    files = [{"filename": "src/main.py", "status": "CREATED", "content": "print(1)\n"}]
    assert await ann.ok("sharing/code_send", {"files": files}) == []
    got = await host.expect("sharing/code_send")
    assert got == {"event": "sharing/code_send", "seq": host.last_seq,
                   "data": {"room_id": room_id, "user_id": 2, "files": files}}
    await nothing_before_sentinel(ann, bob)


async def test_switching_sharer(relay: Relay) -> None:
    host, room_id, (ann, bob) = await classroom(relay, "Ann", "Bob")
    await start_sharing(host, ann, 2)
    # Starting Bob ends Ann first.
    assert await host.ok("sharing/start", {"user_id": 3, "room_id": room_id}) == []
    assert await ann.expect("sharing/end") == {"event": "sharing/end", "data": {}, "seq": 2}
    assert (await bob.expect("sharing/start"))["data"] == {}
    await fails(ann, "sharing/code_send", {"files": [f("a")]}, "not_sharing")
    await fails(ann, "sharing/code_update", {"files": [f("a")]}, "not_sharing")
    await bob.ok("sharing/code_update", {"files": [f("b")]})
    assert (await host.expect("sharing/code_update"))["data"]["user_id"] == 3
    # Starting the current sharer again only repeats sharing/start.
    await host.ok("sharing/start", {"user_id": 3})
    assert (await bob.expect("sharing/start"))["data"] == {}
    await nothing_before_sentinel(host, ann, bob)


async def test_end_sharer_and_non_sharer(relay: Relay) -> None:
    host, room_id, (ann, bob) = await classroom(relay, "Ann", "Bob")
    await start_sharing(host, ann, 2)
    # Ending a student that is not the sharer: it gets sharing/end, the sharer stays.
    assert await host.ok("sharing/end", {"user_id": 3}) == []
    assert await bob.expect("sharing/end") == {"event": "sharing/end", "data": {}, "seq": 1}
    await ann.ok("sharing/code_send", {"files": [f("a")]})
    await host.expect("sharing/code_send")
    # Ending the sharer: the room has none.
    await host.ok("sharing/end", {"user_id": 2, "room_id": room_id})
    assert (await ann.expect("sharing/end"))["data"] == {}
    await fails(ann, "sharing/code_send", {"files": [f("a")]}, "not_sharing")
    # A new start therefore sends nobody a sharing/end.
    await start_sharing(host, bob, 3)
    await nothing_before_sentinel(host, ann, bob)
    # The stored snapshot is kept after sharing ended.
    assert await snapshot(host, 2) == [f("a")]


async def test_start_end_errors_change_nothing(relay: Relay) -> None:
    host, room_id, (ann, bob) = await classroom(relay, "Ann", "Bob")
    await start_sharing(host, ann, 2)
    for event in ("sharing/start", "sharing/end"):
        await fails(host, event, {"user_id": 1}, "user_not_found")
        await fails(host, event, {"user_id": 42}, "user_not_found")
        for bad in ({}, {"user_id": "3"}, {"user_id": 3.0}, {"user_id": None}, [3], 3):
            await fails(host, event, bad, "invalid_payload")
        await fails(host, event, {"user_id": 3, "room_id": room_id + 1}, "forbidden")
        await fails(host, event, {"user_id": 3, "room_id": [room_id]}, "invalid_payload")
        await fails(ann, event, {"user_id": 3}, "not_host")
        unbound = await relay.client()
        await fails(unbound, event, {"user_id": 3}, "not_in_room")
    await nothing_before_sentinel(host, ann, bob)
    # Ann is still the sharer and nobody got sharing/end.
    await ann.ok("sharing/code_send", {"files": []})
    assert (await host.expect("sharing/code_send"))["data"]["files"] == []


async def test_start_offline_target_waits_in_buffer(relay: Relay) -> None:
    host, room = await relay.host()
    room_id = room["room_id"]
    ann = await relay.client()
    reply = (await ann.ok("room/join", {"room_id": room_id, "name": "Ann"}))[0]["data"]
    await host.expect("room/update")
    await ann.aclose()
    await host.expect("room/update")
    assert await host.ok("sharing/start", {"user_id": 2}) == []
    again = await relay.client()
    frames = await again.ok("room/rejoin", {**reply, "last_seq": 0})
    assert [(x["event"], x["data"], x.get("seq")) for x in frames[2:]] == [
        ("sharing/start", {}, 1)]
    await host.expect("room/update")
    # It is the sharer now.
    await again.ok("sharing/code_send", {"files": [f("a.py")]})
    assert (await host.expect("sharing/code_send"))["data"]["files"] == [f("a.py")]
    await again.aclose()
    await host.expect("room/update")
    # A fresh attach of the sharer gets sharing/start {} in its snapshot.
    fresh = await relay.client()
    frames = await fresh.ok("room/rejoin", reply)
    assert [x["event"] for x in frames] == ["room/join", "rtc/config", "sharing/start"]


# -- forwarding -------------------------------------------------------------------------
async def test_forwarded_files_exact_keys_and_order(relay: Relay) -> None:
    host, room_id, (ann,) = await classroom(relay, "Ann")
    await start_sharing(host, ann, 2)
    sent = [
        {"filename": "z.py", "status": "CHANGED", "content": "z", "extra": 1, "size": 9},
        {"filename": "a.py", "status": "REMOVED", "content": "ignored"},
        {"filename": "gone.txt", "status": "REMOVED"},
        {"filename": "b.py", "status": "REMOVED", "content": 12},
        {"filename": "a.py", "status": "CREATED", "content": ""},
    ]
    for event in ("sharing/code_send", "sharing/code_update"):
        await ann.ok(event, {"files": sent, "room_id": room_id})
        got = await host.expect(event)
        assert got["data"] == {"room_id": room_id, "user_id": 2, "files": [
            {"filename": "z.py", "status": "CHANGED", "content": "z"},
            {"filename": "a.py", "status": "REMOVED", "content": None},
            {"filename": "gone.txt", "status": "REMOVED", "content": None},
            {"filename": "b.py", "status": "REMOVED", "content": None},
            {"filename": "a.py", "status": "CREATED", "content": ""},
        ]}
    await nothing_before_sentinel(ann)


# -- stored snapshot --------------------------------------------------------------------
async def test_stored_snapshot_send_and_update(relay: Relay) -> None:
    host, _room_id, (ann,) = await classroom(relay, "Ann")
    assert await snapshot(host, 2) == []
    await start_sharing(host, ann, 2)
    # code_send replaces the snapshot with its CREATED/CHANGED items; later duplicates win.
    await ann.ok("sharing/code_send", {"files": [
        f("b.py", "CREATED", "b1"), f("old.py", "REMOVED"), f("a.py", "CHANGED", "a1"),
        f("b.py", "CHANGED", "b2")]})
    await host.expect("sharing/code_send")
    assert await snapshot(host, 2) == [f("a.py", "CHANGED", "a1"), f("b.py", "CHANGED", "b2")]
    # code_update applies in order: set, delete, set again.
    await ann.ok("sharing/code_update", {"files": [
        f("c.py", "CREATED", "c"), f("a.py", "REMOVED"), f("b.py", "REMOVED"),
        f("b.py", "CREATED", "b3"), f("missing", "REMOVED")]})
    await host.expect("sharing/code_update")
    assert await snapshot(host, 2) == [f("b.py", "CREATED", "b3"), f("c.py", "CREATED", "c")]
    # A new code_send replaces everything.
    await ann.ok("sharing/code_send", {"files": [f("only.txt", "CREATED", "o")]})
    await host.expect("sharing/code_send")
    assert await snapshot(host, 2) == [f("only.txt", "CREATED", "o")]
    await ann.ok("sharing/code_send", {"files": []})
    await host.expect("sharing/code_send")
    assert await snapshot(host, 2) == []
    await nothing_before_sentinel(ann)


async def test_code_send_ignores_removed_items_in_stored_snapshot(relay: Relay) -> None:
    """code_send stores exactly its CREATED/CHANGED items: a REMOVED item deletes nothing."""
    host, _, (ann,) = await classroom(relay, "Ann")
    await start_sharing(host, ann, 2)
    sent = [f("a.py", "CREATED", "a"), f("a.py", "REMOVED"), f("b.py", "REMOVED"),
            f("b.py", "CHANGED", "b")]
    await ann.ok("sharing/code_send", {"files": sent})
    forwarded = (await host.expect("sharing/code_send"))["data"]["files"]
    assert [x["status"] for x in forwarded] == ["CREATED", "REMOVED", "REMOVED", "CHANGED"]
    assert await snapshot(host, 2) == [f("a.py", "CREATED", "a"), f("b.py", "CHANGED", "b")]
    # code_update, by contrast, deletes in order.
    await ann.ok("sharing/code_update", {"files": [f("c.py"), f("c.py", "REMOVED"),
                                                   f("a.py", "REMOVED")]})
    await host.expect("sharing/code_update")
    assert await snapshot(host, 2) == [f("b.py", "CHANGED", "b")]


async def test_snapshot_sorted_by_code_point(relay: Relay) -> None:
    host, _, (ann, _bob) = await classroom(relay, "Ann", "Bob")
    await start_sharing(host, ann, 2)
    names = ["é.txt", "b", "Z", "a/b", "a", "a.b", "_x", "B", "a/a", "10", "9"]
    await ann.ok("sharing/code_send", {"files": [f(n, "CREATED", n) for n in names]})
    await host.expect("sharing/code_send")
    got = await snapshot(host, 2)
    assert [x["filename"] for x in got] == sorted(names)
    assert [x["filename"] for x in got] == [
        "10", "9", "B", "Z", "_x", "a", "a.b", "a/a", "a/b", "b", "é.txt"]
    assert all(x["content"] == x["filename"] for x in got)
    # A student that never shared has an empty snapshot.
    assert await snapshot(host, 3) == []


async def test_snapshot_errors(relay: Relay) -> None:
    host, room_id, (ann,) = await classroom(relay, "Ann")
    await fails(host, "sharing/snapshot", {"user_id": 1}, "user_not_found")
    await fails(host, "sharing/snapshot", {"user_id": 3}, "user_not_found")
    for bad in ({}, {"user_id": "2"}, {"user_id": 2.0}, []):
        await fails(host, "sharing/snapshot", bad, "invalid_payload")
    await fails(host, "sharing/snapshot", {"user_id": 2, "room_id": room_id + 1}, "forbidden")
    await fails(ann, "sharing/snapshot", {"user_id": 2}, "not_host")
    await nothing_before_sentinel(host, ann)


async def test_stored_snapshot_too_many_files(relay: Relay) -> None:
    host, _, (ann,) = await classroom(relay, "Ann")
    await start_sharing(host, ann, 2)
    many = [f(f"f{i:04}", "CREATED", "") for i in range(2000)]
    await ann.ok("sharing/code_send", {"files": many})
    await host.expect("sharing/code_send")
    # One more file would make 2,001 stored files.
    await fails(ann, "sharing/code_update", {"files": [f("extra")]}, "too_large")
    # ... also when an earlier item in the same event removes one and a later one adds two.
    await fails(ann, "sharing/code_update", {"files": [
        f("f0000", "REMOVED"), f("extra1"), f("extra2")]}, "too_large")
    await nothing_before_sentinel(host)
    stored = await snapshot(host, 2)
    assert len(stored) == 2000 and stored[0] == f("f0000", "CREATED", "")
    # Replacing an existing file, or removing one then adding one, is fine.
    await ann.ok("sharing/code_update", {"files": [f("f0001", "CHANGED", "new"),
                                                   f("f0000", "REMOVED"), f("extra")]})
    await host.expect("sharing/code_update")
    stored = await snapshot(host, 2)
    assert len(stored) == 2000
    assert stored[0] == f("extra") and stored[1] == f("f0001", "CHANGED", "new")
    assert stored[-1] == f("f1999", "CREATED", "")


async def test_files_list_limit(relay: Relay) -> None:
    host, _, (ann,) = await classroom(relay, "Ann")
    await start_sharing(host, ann, 2)
    # 2,001 items are too many even if they are all removals.
    await fails(ann, "sharing/code_update",
                {"files": [f(f"r{i}", "REMOVED") for i in range(2001)]}, "too_large")
    await ann.ok("sharing/code_update",
                 {"files": [f(f"r{i}", "REMOVED") for i in range(2000)]})
    assert len((await host.expect("sharing/code_update"))["data"]["files"]) == 2000


async def test_stored_snapshot_too_many_bytes(start_relay: StartRelay) -> None:
    relay = await start_relay(max_message_size=16 * MIB, send_queue_bytes=64 * MIB,
                              replay_bytes=64 * MIB)
    # The test clients must accept large frames too.
    host = await relay.client(max_message_size=64 * MIB)
    room_id = (await host.ok("room/create", {}))[0]["data"]["room_id"]
    ann = await relay.client(max_message_size=64 * MIB)
    await ann.ok("room/join", {"room_id": room_id, "name": "Ann"})
    await host.expect("room/update")
    await start_sharing(host, ann, 2)
    three = "a" * (3 * MIB)
    # Replacing the same file does not accumulate.
    for _ in range(3):
        await ann.ok("sharing/code_update", {"files": [f("big", "CHANGED", three)]})
        await host.expect("sharing/code_update")
    await ann.ok("sharing/code_update", {"files": [f("big2", "CREATED", three)]})
    await host.expect("sharing/code_update")
    # Exactly 8 MiB of UTF-8 content: the last 2 MiB written as 2-byte characters.
    await ann.ok("sharing/code_update", {"files": [f("big3", "CREATED", "é" * MIB)]})
    await host.expect("sharing/code_update")
    await fails(ann, "sharing/code_update", {"files": [f("one-more", "CREATED", "x")]},
                "too_large")
    await fails(ann, "sharing/code_update", {"files": [f("big3", "CHANGED", "é" * MIB + "x")]},
                "too_large")
    # A code_send over 8 MiB fails too and leaves the old snapshot in place.
    await fails(ann, "sharing/code_send", {"files": [f("n1", "CREATED", three),
                                                     f("n2", "CREATED", three),
                                                     f("n3", "CREATED", three)]}, "too_large")
    await nothing_before_sentinel(host)
    stored = await snapshot(host, 2)
    assert [x["filename"] for x in stored] == ["big", "big2", "big3"]
    # Removing a file frees its bytes.
    await ann.ok("sharing/code_update", {"files": [f("big", "REMOVED"),
                                                   f("one-more", "CREATED", three)]})
    await host.expect("sharing/code_update")
    assert [x["filename"] for x in await snapshot(host, 2)] == ["big2", "big3", "one-more"]


# -- file rules -------------------------------------------------------------------------
async def test_filename_rules(relay: Relay) -> None:
    host, _room_id, (ann,) = await classroom(relay, "Ann")
    await start_sharing(host, ann, 2)
    good = ["a" * 512, "..a", "a..b/c", "./x", "a//b", "dir/.hidden", "a\\..\\b", "\u0080x",
            "ü/ñ.py", "a b.txt"]
    await ann.ok("sharing/code_send", {"files": [f(n) for n in good]})
    assert [x["filename"] for x in (await host.expect("sharing/code_send"))["data"]["files"]] \
        == good
    bad_names: list[Any] = ["", "/abs", "/", "..", "../a", "a/../b", "a/..", "x\x00",
                            "x\x1f", "x\x7f", "a\tb", "line\nbreak", None, 5, ["a"]]
    for event in ("sharing/code_send", "sharing/code_update"):
        for name in bad_names:
            await fails(ann, event, {"files": [f("fine"), f(name)]}, "invalid_payload")
        await fails(ann, event, {"files": [f("a" * 513)]}, "too_large")
    await nothing_before_sentinel(host)
    assert [x["filename"] for x in await snapshot(host, 2)] == sorted(good)


async def test_item_rules(relay: Relay) -> None:
    host, room_id, (ann,) = await classroom(relay, "Ann")
    await start_sharing(host, ann, 2)
    bad_payloads: list[Any] = [
        {}, {"files": None}, {"files": {}}, {"files": "a.py"}, [], "x",
        {"files": ["a.py"]}, {"files": [None]},
        {"files": [{"filename": "a", "status": "DELETED", "content": "x"}]},
        {"files": [{"filename": "a", "status": "created", "content": "x"}]},
        {"files": [{"filename": "a", "content": "x"}]},
        {"files": [{"filename": "a", "status": None, "content": "x"}]},
        {"files": [{"filename": "a", "status": "CREATED"}]},
        {"files": [{"filename": "a", "status": "CHANGED", "content": None}]},
        {"files": [{"filename": "a", "status": "CHANGED", "content": 1}]},
        {"files": [{"status": "CREATED", "content": "x"}]},
        {"files": [], "room_id": "x"},
    ]
    for event in ("sharing/code_send", "sharing/code_update"):
        for data in bad_payloads:
            await fails(ann, event, data, "invalid_payload")
        await fails(ann, event, {"files": [], "room_id": room_id + 1}, "forbidden")
    await nothing_before_sentinel(host)
    assert await snapshot(host, 2) == []


async def test_code_check_order(relay: Relay) -> None:
    host, room_id, (ann, bob) = await classroom(relay, "Ann", "Bob")
    await start_sharing(host, ann, 2)
    # Role before payload; payload before the sharer state.
    await fails(host, "sharing/code_send", {"files": 1}, "not_student")
    await fails(host, "sharing/code_update", {"files": []}, "not_student")
    await fails(bob, "sharing/code_send", {"files": 1}, "invalid_payload")
    await fails(bob, "sharing/code_send", {"files": [f("a" * 600)]}, "too_large")
    await fails(bob, "sharing/code_send", {"files": [f("ok")]}, "not_sharing")
    await fails(bob, "sharing/code_send", {"files": [], "room_id": room_id + 1}, "forbidden")
    unbound = await relay.client()
    await fails(unbound, "sharing/code_send", {"files": 1}, "not_in_room")
    await nothing_before_sentinel(host, ann, bob)
    assert await snapshot(host, 3) == []


async def test_binding_and_roles_for_every_sharing_event(relay: Relay) -> None:
    host, _room_id, (ann, bob) = await classroom(relay, "Ann", "Bob")
    await start_sharing(host, ann, 2)
    await bob.ok("room/leave", {})
    await host.expect("room/update")
    fresh = await relay.client()
    host_events = {"sharing/start": {"user_id": 2}, "sharing/end": {"user_id": 2},
                   "sharing/snapshot": {"user_id": 2}}
    student_events = {"sharing/code_send": {"files": []}, "sharing/code_update": {"files": []}}
    for event, data in {**host_events, **student_events}.items():
        for unbound in (fresh, bob):
            await fails(unbound, event, data, "not_in_room")
        if event in host_events:
            await fails(ann, event, data, "not_host")
        else:
            await fails(host, event, data, "not_student")
    await nothing_before_sentinel(host, ann)
