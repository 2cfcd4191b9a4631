"""Plain JSON framing (§3.1), acknowledgements (§3.3), errors (§3.4) and Appendix C.

Every malformed frame gets exactly one ``error`` (plus a failed ``ack`` when its ``ref``
was readable) and the connection stays open for the next, valid, frame.
"""

from __future__ import annotations

import json
from typing import Any

import trio

from tests.support import Client, Relay, nothing_before_sentinel

_ABSENT = object()


async def expect_error(c: Client, code: str, event: Any, ref: Any = _ABSENT) -> dict[str, Any]:
    frame = await c.recv()
    assert frame["event"] == "error", frame
    assert "seq" not in frame
    assert set(frame["data"]) == {"code", "message", "event"}, frame
    assert frame["data"]["code"] == code, frame
    assert isinstance(frame["data"]["message"], str)
    assert frame["data"]["event"] == event, frame
    if ref is _ABSENT:
        assert "ref" not in frame, frame
        assert set(frame) == {"event", "data"}
    else:
        assert frame["ref"] == ref and type(frame["ref"]) is type(ref), frame
        assert set(frame) == {"event", "data", "ref"}
    return frame


async def expect_failed_ack(c: Client, ref: Any, code: str) -> None:
    frame = await c.recv()
    assert frame["event"] == "ack", frame
    assert frame["ref"] == ref and type(frame["ref"]) is type(ref), frame
    assert set(frame) == {"event", "ref", "data"}, frame
    assert frame["data"]["ok"] is False
    assert set(frame["data"]["error"]) == {"code", "message"}
    assert frame["data"]["error"]["code"] == code


async def still_works(c: Client) -> None:
    """The connection is open and a valid event is handled normally."""
    frames = await c.ok("room/create", {"name": "After"})
    assert frames[0]["event"] == "room/created"


async def probe(c: Client) -> None:
    """A valid frame on an unbound connection is handled next, and nothing else arrives
    before its answer (so the bad frame before it got exactly the answer checked)."""
    await c.send_raw('{"event":"rtc/config","data":{},"ref":"probe"}')
    await expect_error(c, "not_in_room", "rtc/config", "probe")
    await expect_failed_ack(c, "probe", "not_in_room")


# -- bad_json ---------------------------------------------------------------------------
BAD_JSON = [
    "{not json", "", " ", "NaN", '{"event":"room/create"', '{"event":"room/create"} x',
    '{"event":"room/create","data":{"name":NaN}}', '{"event":"x","ref":Infinity}',
    "{'event': 'room/create'}", '{"event":"room/create",}', "undefined",
    '{"event":"room/create","ref":1}{"event":"x"}',
]


async def test_bad_json(relay: Relay) -> None:
    c = await relay.client()
    for text in BAD_JSON:
        await c.send_raw(text)
        await expect_error(c, "bad_json", None)
        await probe(c)
    await still_works(c)
    await c.nothing_before_sentinel()


# -- bad_frame ---------------------------------------------------------------------------
async def test_non_object_is_bad_frame(relay: Relay) -> None:
    c = await relay.client()
    for text in ["[]", '[{"event":"room/create"}]', '"room/create"', "1", "null", "true",
                 "false", "1.5", '[{"event":"room/create","ref":1}]']:
        await c.send_raw(text)
        await expect_error(c, "bad_frame", None)
        await probe(c)
    await still_works(c)


BAD_EVENT_FIELDS: list[dict[str, Any]] = [
    {}, {"data": {"name": "x"}}, {"event": None}, {"event": 1}, {"event": True},
    {"event": []}, {"event": {"name": "room/create"}}, {"event": ""}, {"event": "x" * 65},
    {"event": "é" * 65}, {"Event": "room/create"},
]


async def test_bad_event_field(relay: Relay) -> None:
    c = await relay.client()
    for frame in BAD_EVENT_FIELDS:
        await c.send_raw(json.dumps(frame))
        await expect_error(c, "bad_frame", None)
        await probe(c)
    await still_works(c)


async def test_event_of_64_characters_is_a_valid_frame(relay: Relay) -> None:
    c = await relay.client()
    for name in ("x" * 64, "é" * 64, "🙂" * 64):
        await c.send_raw(json.dumps({"event": name, "ref": 1}))
        await expect_error(c, "unknown_event", name, 1)
        await expect_failed_ack(c, 1, "unknown_event")
    await still_works(c)


BAD_REFS: list[Any] = [
    True, False, 1.5, 1.0, 1e3, -2.5, [], [1], {}, {"id": 1}, "", "r" * 65, "é" * 65,
    2**53, -(2**53), 10**30,  # integers beyond ±(2**53-1) (Appendix D)
]


async def test_bad_ref(relay: Relay) -> None:
    c = await relay.client()
    for ref in BAD_REFS:
        await c.send_raw(json.dumps({"event": "room/create", "data": {}, "ref": ref}))
        # The event string is valid, so the error names it; the ref is not echoed, no ack.
        await expect_error(c, "bad_frame", "room/create")
        # Nothing happened: the frame was not handled as room/create (still unbound).
        await probe(c)
    await still_works(c)


GOOD_REFS: list[Any] = [0, -1, 7, 2**53 - 1, -(2**53 - 1), "j", "r" * 64, "é" * 64, "🙂" * 64,
                        "1",
                        " ", "null"]


async def test_ack_echoes_ref_exactly(relay: Relay) -> None:
    c = await relay.client()
    await c.send_raw(json.dumps({"event": "room/create", "data": {}, "ref": "r0"}))
    assert [(await c.recv())["event"] for _ in range(4)] == [
        "room/created", "rtc/config", "room/update", "ack"]
    for ref in GOOD_REFS:
        await c.send_raw(json.dumps({"event": "steps/table", "data": {}, "ref": ref}))
        table = await c.recv()
        assert table["event"] == "steps/table" and "ref" not in table
        frame = await c.recv()
        assert frame == {"event": "ack", "ref": ref, "data": {"ok": True}}
        assert type(frame["ref"]) is type(ref)
        # Failure acks echo it too, after the error that also carries it.
        await c.send_raw(json.dumps({"event": "room/create", "ref": ref}))
        await expect_error(c, "already_in_room", "room/create", ref)
        await expect_failed_ack(c, ref, "already_in_room")


async def test_ref_int_and_string_are_distinct(relay: Relay) -> None:
    c = await relay.client()
    await c.send_raw('{"event":"nope","ref":1}')
    await c.send_raw('{"event":"nope","ref":"1"}')
    await expect_error(c, "unknown_event", "nope", 1)
    await expect_failed_ack(c, 1, "unknown_event")
    await expect_error(c, "unknown_event", "nope", "1")
    await expect_failed_ack(c, "1", "unknown_event")


async def test_ref_null_is_absent(relay: Relay) -> None:
    c = await relay.client()
    await c.send_raw('{"event":"nope","ref":null}')
    await expect_error(c, "unknown_event", "nope")
    await c.nothing_before_sentinel()
    await c.send_raw('{"event":"room/create","data":{},"ref":null}')
    assert [(await c.recv())["event"] for _ in range(3)] == [
        "room/created", "rtc/config", "room/update"]
    await c.nothing_before_sentinel()  # no ack
    await c.send_raw('{"ref":null}')
    await expect_error(c, "bad_frame", None)
    await c.nothing_before_sentinel()


async def test_frame_error_with_valid_ref_gets_failed_ack(relay: Relay) -> None:
    c = await relay.client()
    for frame in [{"ref": 5}, {"event": "", "ref": 5}, {"event": 3, "ref": "r"},
                  {"event": "x" * 65, "ref": 0}, {"event": None, "ref": "abc", "data": {}}]:
        await c.send_raw(json.dumps(frame))
        await expect_error(c, "bad_frame", None, frame["ref"])
        await expect_failed_ack(c, frame["ref"], "bad_frame")
        await probe(c)
    await still_works(c)


async def test_bad_event_and_bad_ref_together(relay: Relay) -> None:
    c = await relay.client()
    await c.send_raw(json.dumps({"event": "", "ref": True}))
    await expect_error(c, "bad_frame", None)
    await c.nothing_before_sentinel()
    await still_works(c)


async def test_binary_message_is_bad_frame(relay: Relay) -> None:
    c = await relay.client()
    await c.send_raw(b'{"event":"room/create","data":{}}')
    await expect_error(c, "bad_frame", None)
    await c.nothing_before_sentinel()
    await c.send_raw(b"\x00\xff\x10")
    await expect_error(c, "bad_frame", None)
    await c.nothing_before_sentinel()
    await still_works(c)
    # Also on a bound connection: nothing is broadcast, the participant stays.
    await c.send_raw(b"\x01")
    await expect_error(c, "bad_frame", None)
    await c.ok("steps/table", {})


# -- unknown events ----------------------------------------------------------------------
UNKNOWN = ["room/log", "solution/ai", "ping", "pong", "ROOM/CREATE", "room/create ",
           "room/created", "ack", "error", "room/update", "alerts", "log", "join_room",
           "message"]


async def test_unknown_event(relay: Relay) -> None:
    c = await relay.client()
    host, room = await relay.host()
    student, _ = await relay.student(room["room_id"], "Ann")
    await host.expect("room/update")
    for event in UNKNOWN:
        await c.fail(event, {}, "unknown_event")
        # Also for bound participants; unknown names are reported before binding checks.
        await host.fail(event, {}, "unknown_event")
        await student.fail(event, "garbage", "unknown_event")
    await nothing_before_sentinel(c, host, student)
    await still_works(c)


async def test_unknown_event_without_ref(relay: Relay) -> None:
    c = await relay.client()
    await c.send("room/log")
    await expect_error(c, "unknown_event", "room/log")
    await c.nothing_before_sentinel()


# -- binding ------------------------------------------------------------------------------
BOUND_ONLY = [
    "room/leave", "room/kill", "room/close", "message/to_client", "message/to_all",
    "message/to_mentor", "message/user", "settings", "sharing/start", "sharing/end",
    "sharing/code_send", "sharing/code_update", "sharing/snapshot", "steps/all",
    "steps/status/to_mentor", "steps/status/to_client", "steps/table", "steps/import",
    "exercise", "exercise/feedback", "exercise/reset", "signal", "error/from_client",
    "rtc/config", "rtc/request", "rtc/allow", "rtc/offer", "rtc/answer", "rtc/ice", "rtc/stop",
]


async def test_not_in_room(relay: Relay) -> None:
    c = await relay.client()
    for event in BOUND_ONLY:
        await c.fail(event, {}, "not_in_room")
        # Binding is checked before role and payload (§0.1).
        await c.fail(event, "garbage", "not_in_room")
    await c.nothing_before_sentinel()
    await still_works(c)


async def test_already_in_room(relay: Relay) -> None:
    host, room = await relay.host()
    student, joined = await relay.student(room["room_id"], "Ann")
    await host.expect("room/update")
    good = {
        "room/create": {},
        "room/join": {"room_id": room["room_id"], "name": "Bob"},
        "room/rehost": {"room_id": room["room_id"], "user_id": 1, "token": room["token"]},
        "room/rejoin": {"room_id": room["room_id"], "user_id": joined["user_id"],
                        "token": joined["token"]},
    }
    for event, data in good.items():
        for c in (host, student):
            await c.fail(event, data, "already_in_room")
            await c.fail(event, "garbage", "already_in_room")
    await nothing_before_sentinel(host, student)
    # Still bound to the same participant.
    await student.ok("message/to_mentor", {"content": "still here"})
    assert (await host.expect("message/to_mentor"))["data"]["sender"] == joined["user_id"]


async def test_leave_unbinds_and_keeps_connection_open(relay: Relay) -> None:
    host, room = await relay.host()
    student, _ = await relay.student(room["room_id"], "Ann")
    await host.expect("room/update")
    await student.ok("room/leave", {})
    await host.expect("room/update")
    await student.fail("message/to_mentor", {"content": "x"}, "not_in_room")
    frames = await student.ok("room/join", {"room_id": room["room_id"], "name": "Ann"})
    assert frames[0]["data"]["user_id"] == 3


# -- acknowledgements and frame details ------------------------------------------------
async def test_ack_comes_after_own_frames_and_error_precedes_failed_ack(relay: Relay) -> None:
    host, room = await relay.host()
    frames = await host.call("message/user", {"user_id": 5})
    assert [f["event"] for f in frames] == ["error", "ack"]
    assert frames[0]["data"]["code"] == "user_not_found"
    assert frames[0]["ref"] == frames[1]["ref"]
    _student, joined = await relay.student(room["room_id"], "Ann")
    await host.expect("room/update")
    frames = await host.call("message/user", {"user_id": joined["user_id"]})
    assert [f["event"] for f in frames] == ["message/user", "ack"]
    assert "ref" not in frames[0]


async def test_data_absent_means_empty_object(relay: Relay) -> None:
    c = await relay.client()
    await c.send_raw('{"event":"room/create","ref":"a"}')
    frames = [await c.recv() for _ in range(4)]
    assert frames[-1] == {"event": "ack", "ref": "a", "data": {"ok": True}}
    assert frames[2]["data"]["users"][0]["name"] == "Host"
    # data of the wrong type is a payload error, not a frame error.
    d = await relay.client()
    await d.send_raw('{"event":"room/create","data":[],"ref":"b"}')
    await expect_error(d, "invalid_payload", "room/create", "b")
    await expect_failed_ack(d, "b", "invalid_payload")


async def test_duplicate_keys_last_one_wins(relay: Relay) -> None:
    c = await relay.client()
    await c.send_raw('{"event":"nope","event":"room/create","ref":1,"ref":"z",'
                     '"data":{"name":"A"},"data":{"name":"B"}}')
    frames = [await c.recv() for _ in range(4)]
    assert frames[0]["event"] == "room/created"
    assert frames[2]["data"]["users"][0]["name"] == "B"
    assert frames[3] == {"event": "ack", "ref": "z", "data": {"ok": True}}


async def test_errors_are_never_sequenced_and_do_not_consume_seq(relay: Relay) -> None:
    host, room = await relay.host()
    assert host.last_seq == 1
    await host.send_raw("{")
    await expect_error(host, "bad_json", None)
    await host.fail("sharing/start", {"user_id": 9}, "user_not_found")
    await relay.student(room["room_id"], "Ann")
    update = await host.expect("room/update")
    assert update["seq"] == 2


async def test_many_errors_in_a_row_keep_the_connection(relay: Relay) -> None:
    c = await relay.client()
    bad = ["{", "[]", '{"event":""}', '{"event":"nope"}', '{"event":"room/leave"}', b"\x00"]
    for text in bad * 5:
        await c.send_raw(text)
    codes = [(await c.recv())["data"]["code"] for _ in range(len(bad) * 5)]
    assert codes == ["bad_json", "bad_frame", "bad_frame", "unknown_event", "not_in_room",
                     "bad_frame"] * 5
    await c.nothing_before_sentinel()
    await still_works(c)


# -- §2.1 / §2.5: the only closes caused by input ------------------------------------------
async def test_message_size_limit_closes_1009(start_relay: Any) -> None:
    relay = await start_relay(max_message_size=1024)
    c = await relay.client()
    # Exactly at the limit (UTF-8 bytes): handled, a field error at most.
    frame = '{"event":"room/create","data":{"pad":"' + "é" * 10 + '"},"ref":1,"x":"'
    frame += "a" * (1024 - len(frame.encode()) - 2) + '"}'
    assert len(frame.encode()) == 1024
    await c.send_raw(frame)
    frames = [await c.recv() for _ in range(4)]
    assert frames[-1] == {"event": "ack", "ref": 1, "data": {"ok": True}}
    # One byte over (counted in UTF-8, not characters) closes with 1009.
    over = '{"event":"rtc/config","data":{},"x":"' + "é" * 500 + '"}'
    assert len(over) < 1024 < len(over.encode())
    await c.send_raw(over)
    assert await c.closed() == 1009


async def raw_ws(relay: Relay) -> tuple[trio.SocketStream, bytes]:
    """A hand-made WebSocket handshake on /observer; returns the stream and leftover bytes."""
    stream = await trio.open_tcp_stream("127.0.0.1", relay.server.relay_port)
    await stream.send_all(
        b"GET /observer HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    data = b""
    with trio.fail_after(3):
        while b"\r\n\r\n" not in data:
            data += await stream.receive_some(4096)
    assert data.startswith(b"HTTP/1.1 101")
    return stream, data.partition(b"\r\n\r\n")[2]


def masked_frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    mask = b"\x01\x02\x03\x04"
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    n = len(payload)
    length = bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big")
    return bytes([(0x80 if fin else 0) | opcode]) + length + mask + body


async def test_fragmented_message_over_the_limit_closes_1009(start_relay: Any) -> None:
    relay = await start_relay(max_message_size=1024)
    first = b'{"event":"nope","x":"' + b"a" * 600
    second = b"b" * 600 + b'"}'
    assert await close_code_after(
        relay, masked_frame(0x1, first, fin=False) + masked_frame(0x0, second)) == 1009


async def test_fragmented_message_within_the_limit_is_handled(start_relay: Any) -> None:
    relay = await start_relay(max_message_size=1024)
    stream, data = await raw_ws(relay)
    await stream.send_all(masked_frame(0x1, b'{"event":"no', fin=False)
                          + masked_frame(0x9, b"ping")  # control frames may interleave
                          + masked_frame(0x0, b'pe","ref":"f"}'))
    with trio.fail_after(3):
        while b'"ref":"f","data":{"ok":false' not in data:
            data += await stream.receive_some(4096)
    assert b"unknown_event" in data
    await stream.aclose()


async def close_code_after(relay: Relay, raw: bytes) -> int:
    """Send ``raw`` on a fresh connection; the first server frame must be a close."""
    stream, data = await raw_ws(relay)
    await stream.send_all(raw)
    with trio.fail_after(3):
        while len(data) < 4:
            chunk = await stream.receive_some(4096)
            assert chunk, data
            data += chunk
    await stream.aclose()
    assert data[0] == 0x88, data  # a close frame, no error event first
    return int.from_bytes(data[2:4], "big")


async def test_raw_client_valid_frame_is_handled(relay: Relay) -> None:
    """Control for the raw helpers below: a well-formed frame gets its answer."""
    stream, data = await raw_ws(relay)
    await stream.send_all(masked_frame(0x1, b'{"event":"nope"}'))
    with trio.fail_after(3):
        while b"unknown_event" not in data:
            data += await stream.receive_some(4096)
    assert data[0] == 0x81
    await stream.aclose()


async def test_invalid_utf8_closes_1007(relay: Relay) -> None:
    assert await close_code_after(relay, masked_frame(0x1, b'{"event":"\xff"}')) == 1007


async def test_unmasked_client_frame_closes_1002(relay: Relay) -> None:
    assert await close_code_after(relay, b"\x81\x02{}") == 1002


async def test_reserved_opcode_closes_1002(relay: Relay) -> None:
    assert await close_code_after(relay, masked_frame(0x3, b"x")) == 1002
