"""§5 sequencing, replay and resume, and §4.2 replacement, over real sockets."""

from __future__ import annotations

import trio

from tests.support import Client, Relay, StartRelay


async def _offline(host: Client, student: Client) -> None:
    await student.aclose()
    update = await host.expect("room/update")
    assert update["data"]["users"][1]["status"] == "offline"


async def test_resume_replays_exactly_the_missed_events(relay: Relay) -> None:
    host, room = await relay.host()
    student, joined = await relay.student(room["room_id"], "Ann")
    await host.expect("room/update")
    await host.ok("message/to_client", {"user_id": 2, "content": "before"})
    seen = await student.expect("message/to_client")
    last_seq = student.last_seq
    assert seen["seq"] == last_seq
    await _offline(host, student)
    for i in range(50):
        await host.ok("message/to_client", {"user_id": 2, "content": f"m{i}"})

    again = await relay.client()
    again.last_seq = last_seq
    frames = await again.call("room/rejoin", {**joined, "last_seq": last_seq})
    assert [f["event"] for f in frames[:2]] == ["room/join", "rtc/config"]
    replayed = frames[2:-1]
    assert [f["data"]["content"] for f in replayed] == [f"m{i}" for i in range(50)]
    assert [f["seq"] for f in replayed] == list(range(last_seq + 1, last_seq + 51))
    assert frames[-1]["event"] == "ack"
    await again.nothing_before_sentinel()
    update = await host.expect("room/update")
    assert update["data"]["users"][1]["status"] == "online"
    # The counter goes on from where it was.
    await host.ok("message/to_client", {"user_id": 2, "content": "after"})
    assert (await again.expect("message/to_client"))["seq"] == last_seq + 51


async def test_resume_with_nothing_missed(relay: Relay) -> None:
    host, room = await relay.host()
    student, joined = await relay.student(room["room_id"], "Ann")
    await host.expect("room/update")
    await _offline(host, student)
    again = await relay.client()
    frames = await again.call("room/rejoin", {**joined, "last_seq": student.last_seq})
    assert [f["event"] for f in frames] == ["room/join", "rtc/config", "ack"]


async def test_eviction_gives_gap_resync_and_snapshot(start_relay: StartRelay) -> None:
    relay = await start_relay(replay_events=10)
    host, room = await relay.host()
    student, joined = await relay.student(room["room_id"], "Ann")
    await host.ok("steps/all", [{"name": "1", "content": "x", "language": "py",
                                 "type": "exercise"}])
    await student.expect("steps/all")
    last_seq = student.last_seq
    await _offline(host, student)
    for i in range(20):
        await host.ok("message/to_client", {"user_id": 2, "content": f"m{i}"})
    again = await relay.client()
    frames = await again.call("room/rejoin", {**joined, "last_seq": last_seq})
    events = [f["event"] for f in frames]
    assert events[:3] == ["room/join", "rtc/config", "room/resync"]
    assert frames[2]["data"] == {"reason": "gap"} and "seq" not in frames[2]
    # Snapshot: steps, then every stored message from the host, as new sequenced events.
    assert events[3] == "steps/all"
    assert [f["data"]["content"] for f in frames[4:-1]] == [f"m{i}" for i in range(20)]
    seqs = [f["seq"] for f in frames[3:-1]]
    assert seqs == list(range(seqs[0], seqs[0] + 21))
    assert seqs[0] > last_seq + 20


async def test_ahead_gives_ahead_resync(relay: Relay) -> None:
    host, room = await relay.host()
    student, joined = await relay.student(room["room_id"], "Ann")
    await host.expect("room/update")
    await _offline(host, student)
    again = await relay.client()
    frames = await again.call("room/rejoin", {**joined, "last_seq": 10_000})
    assert [f["event"] for f in frames] == ["room/join", "rtc/config", "room/resync", "ack"]
    assert frames[2]["data"] == {"reason": "ahead"}


async def test_host_resume_and_fresh_rehost(relay: Relay) -> None:
    host, room = await relay.host()
    student, _joined = await relay.student(room["room_id"], "Ann")
    await host.expect("room/update")
    await host.ok("sharing/start", {"user_id": 2})
    await student.expect("sharing/start")
    last_seq = host.last_seq
    await host.aclose()
    assert (await student.expect("message"))["data"] == {"message": "The teacher is offline!"}
    await student.ok("message/to_mentor", {"content": "hello?"})

    # Resume: the missed message, then a fresh room/update.
    host2 = await relay.client()
    host2.last_seq = last_seq
    frames = await host2.call("room/rehost", {"room_id": room["room_id"], "user_id": 1,
                                              "token": room["token"], "last_seq": last_seq})
    assert [f["event"] for f in frames] == ["rtc/config", "message/to_mentor", "room/update",
                                            "ack"]
    assert (await student.expect("message"))["data"] == {"message": "The teacher reconnected!"}

    # A fresh rehost ends sharing first, then sends the host snapshot.
    host3 = await relay.client()
    frames = await host3.call("room/rehost", {"room_id": room["room_id"], "user_id": 1,
                                              "token": room["token"]})
    assert await host2.closed() == 4003
    assert [f["event"] for f in frames] == ["rtc/config", "room/update", "message/user", "ack"]
    assert (await student.expect("sharing/end"))["data"] == {}
    # The host was online (replaced): no "reconnected" message.
    await student.nothing_before_sentinel()


async def test_replacement_closes_old_connection_with_4003(relay: Relay) -> None:
    host, room = await relay.host()
    student, joined = await relay.student(room["room_id"], "Ann")
    await host.expect("room/update")
    second = await relay.client()
    await second.ok("room/rejoin", {**joined, "last_seq": student.last_seq})
    assert await student.closed() == 4003
    update = await host.expect("room/update")
    assert update["data"]["users"][1]["status"] == "online"
    # The new connection is the participant; the old one's close changed no presence.
    await host.ok("message/to_client", {"user_id": 2, "content": "hi"})
    assert (await second.expect("message/to_client"))["data"]["content"] == "hi"
    await host.nothing_before_sentinel()


async def test_idle_room_expires(start_relay: StartRelay, autojump_clock: trio.abc.Clock
                                  ) -> None:
    """§4.5: a room without an online participant for the expiry is removed within 1 s
    after it (virtual time: the sleeps below take no real time)."""
    relay = await start_relay(room_idle_expiry=600.0)
    host, room = await relay.host()
    probe = await relay.client()  # unbound: not a participant
    await host.aclose()
    # Still there just before the expiry: the name rules are checked only for a room that
    # exists (§4.3), so an empty name is invalid_payload rather than room_not_found.
    await trio.sleep(599.0)
    await probe.fail("room/join", {"room_id": room["room_id"], "name": ""}, "invalid_payload")
    await trio.sleep(2.0)
    late = await relay.client()
    await late.fail("room/rehost", {"room_id": room["room_id"], "user_id": 1,
                                    "token": room["token"]}, "room_not_found")
