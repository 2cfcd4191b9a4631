"""§6.1 room lifecycle over real sockets: exact frames, order and errors."""

from __future__ import annotations

from tests.support import Relay


async def test_create_exact_frames(relay: Relay) -> None:
    host = await relay.client()
    frames = await host.call("room/create", {"name": "Teacher"})
    assert [f["event"] for f in frames] == ["room/created", "rtc/config", "room/update", "ack"]
    created = frames[0]["data"]
    assert set(created) == {"room_id", "user_id", "token", "stats_key"}
    assert 10_000_000 <= created["room_id"] <= 99_999_999
    assert created["user_id"] == 1
    assert len(created["token"]) == 22 and len(created["stats_key"]) == 22
    assert "seq" not in frames[0] and "seq" not in frames[1]
    assert frames[1]["data"] == {"ice_servers": [], "ttl": 0, "polite": False}
    assert frames[2] == {
        "event": "room/update", "seq": 1,
        "data": {"id": created["room_id"], "host": 1, "users": [
            {"id": 1, "name": "Teacher", "role": "host", "status": "online", "steps": {},
             "signal": None}]},
    }


async def test_join_and_host_update(relay: Relay) -> None:
    host, room = await relay.host()
    student = await relay.client()
    frames = await student.call("room/join", {"room_id": room["room_id"], "name": "Ann",
                                              "version": "1.2.15"})
    assert [f["event"] for f in frames] == ["room/join", "rtc/config", "ack"]
    assert frames[0]["data"]["user_id"] == 2
    assert frames[1]["data"]["polite"] is True
    update = await host.expect("room/update")
    assert update["data"]["users"][1] == {
        "id": 2, "name": "Ann", "role": "client", "status": "online", "steps": {},
        "signal": "NONE"}


async def test_outdated_plugin_alert(relay: Relay) -> None:
    _, room = await relay.host()
    student = await relay.client()
    frames = await student.call("room/join", {"room_id": room["room_id"], "name": "Bo",
                                              "version": "1.2.9"})
    assert [f["event"] for f in frames] == ["room/join", "rtc/config", "alerts", "ack"]
    assert frames[2]["data"] == {
        "type": "WARNING",
        "message": "You have an outdated version of the plugin. Please install the latest "
                   "version 1.2.15"}
    assert frames[2]["seq"] == 1


async def test_name_taken_casefold_with_alert(relay: Relay) -> None:
    _, room = await relay.host("Teacher")
    await relay.student(room["room_id"], "Straße")
    other = await relay.client()
    frames = await other.call("room/join", {"room_id": room["room_id"], "name": "STRASSE"})
    assert [f["event"] for f in frames] == ["alerts", "error", "ack"]
    assert frames[0]["data"] == {
        "type": "ERROR",
        "message": f"Username STRASSE is already used in room {room['room_id']}!"}
    assert "seq" not in frames[0]
    assert frames[1]["data"]["code"] == "name_taken"
    # The host's name counts too.
    await other.fail("room/join", {"room_id": room["room_id"], "name": " teacher "}, "name_taken")


async def test_close_room(relay: Relay) -> None:
    host, room = await relay.host()
    s1, _ = await relay.student(room["room_id"], "Ann")
    await host.expect("room/update")
    frames = await host.call("room/close", {})
    assert frames[-1]["data"] == {"ok": True}
    closed = await s1.expect("room/closed")
    assert closed["data"] == {"message": "Room closed!"}
    assert await s1.closed() == 4000
    # v2 (§6.1): the host's connection stays open, unbound, and can create the next room.
    await host.nothing_before_sentinel()
    await host.fail("message/to_all", {"content": "x"}, "not_in_room")
    host.last_seq = None  # a new participant: its seq starts again at 1
    frames = await host.ok("room/create", {"name": "Teacher"})
    assert frames[2]["seq"] == 1
    assert [f["event"] for f in frames] == ["room/created", "rtc/config", "room/update"]
    assert frames[0]["data"]["room_id"] != room["room_id"]
    assert frames[0]["data"]["user_id"] == 1
    late = await relay.client()
    await late.fail("room/join", {"room_id": room["room_id"], "name": "X"}, "room_not_found")
