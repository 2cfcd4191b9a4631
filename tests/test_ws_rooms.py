"""Unit tests for the sans-IO ``/ws`` signaling dialect (protocol §7)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from relay.core.limits import JoinFailures
from signaling.ws_rooms import (
    MESSAGE_TYPES,
    HubSnapshot,
    SignalingHub,
    new_room_id,
    peek_type,
    rate_limited_frame,
    type_label,
)

ROOM_A = "rm0a"
ROOM_B = "rm0b"
ROOM_C = "rm0c"


def ids(*values: str) -> Iterator[str]:
    yield from values
    n = 0
    while True:  # plenty of distinct extra ids for tests that create many rooms
        yield f"x{n:03d}"
        n += 1


def make_hub(*room_ids: str) -> SignalingHub:
    it = ids(*(room_ids or (ROOM_A, ROOM_B, ROOM_C)))
    return SignalingHub(rng=lambda: next(it))


def send(hub: SignalingHub, conn: int, type_: str | None = None, **fields: Any) -> list[Any]:
    message = dict(fields) if type_ is None else {"type": type_, **fields}
    return hub.receive(conn, json.dumps(message))


def err(message: str) -> dict[str, str]:
    return {"type": "ERROR", "message": message}


def bad_name(message: str) -> dict[str, str]:
    return {"type": "INVALID_USERNAME", "message": message}


def bad_room(message: str) -> dict[str, str]:
    return {"type": "INVALID_ROOM_ID", "message": message}


JOIN_FIRST = err("You must join a room first")
NO_USER = err("User not found")
HOST_GONE = err("The host has left the room")
TAKEN = bad_name("Username already exists in this room")
NOT_FOUND = bad_room("Room with given ID not found")


@dataclass
class Room:
    hub: SignalingHub
    host: int
    ann: int
    bob: int


@pytest.fixture
def room() -> Room:
    """Room ``ROOM_A`` hosted by "teacher" with users "ann" and "bob" (in that order)."""
    hub = make_hub()
    host, ann, bob = hub.connect(), hub.connect(), hub.connect()
    assert send(hub, host, "CREATE_ROOM", username="teacher") == [
        (host, {"type": "ROOM_CREATED", "roomid": ROOM_A})
    ]
    assert send(hub, ann, "JOIN_ROOM", roomid=ROOM_A, username="ann") == [
        (ann, {"type": "ROOM_JOINED", "roomid": ROOM_A}),
        (host, {"type": "USER_JOINED", "username": "ann"}),
    ]
    assert send(hub, bob, "JOIN_ROOM", roomid=ROOM_A, username="bob") == [
        (bob, {"type": "ROOM_JOINED", "roomid": ROOM_A}),
        (host, {"type": "USER_JOINED", "username": "bob"}),
    ]
    return Room(hub, host, ann, bob)


def state(hub: SignalingHub) -> tuple[Any, ...]:
    """Everything observable about membership, to assert that a failure changed nothing."""
    conns = range(1, 20)
    return (
        sorted(hub.room_ids()),
        [(c, hub.room_of(c), hub.role_of(c)) for c in conns],
        {r: hub.members(r) for r in hub.room_ids()},
        hub.snapshot(),
    )


# --------------------------------------------------------------------------- frame errors


@pytest.mark.parametrize(
    "text",
    ["", "{", "nope", "{'type': 'X'}", "NaN", "Infinity", "-Infinity", '{"type": NaN}',
     '{"type":"CREATE_ROOM","username":"a","x":Infinity}', '{"type":"X"} trailing',
     '{"x": 1e400}', "[" * 100_000, "\ufeff{}", '{"type":"X\x01"}'],
)  # fmt: skip
def test_invalid_json(text: str) -> None:
    hub = make_hub()
    c = hub.connect()
    assert hub.receive(c, text) == [(c, err("Invalid JSON"))]


@pytest.mark.parametrize("text", ["[]", "1", '"CREATE_ROOM"', "null", "true", '[{"type":"X"}]'])
def test_not_an_object(text: str) -> None:
    hub = make_hub()
    c = hub.connect()
    assert hub.receive(c, text) == [(c, err("Message must be a JSON object"))]


@pytest.mark.parametrize("text", ["{}", '{"type":null}', '{"type":1}', '{"type":["JOIN_ROOM"]}',
                                  '{"Type":"CREATE_ROOM"}', '{"type":true}'])  # fmt: skip
def test_type_required(text: str) -> None:
    hub = make_hub()
    c = hub.connect()
    assert hub.receive(c, text) == [(c, err("Message type is required"))]


@pytest.mark.parametrize("kind", ["FOO", "", "create_room", " CREATE_ROOM", "ROOM_CREATED",
                                  "ERROR", "Ω"])  # fmt: skip
def test_unknown_type(kind: str) -> None:
    hub = make_hub()
    c = hub.connect()
    assert send(hub, c, kind) == [(c, err(f"Unknown message type: {kind}"))]


def test_unknown_type_with_lone_surrogate_is_echoed_encodable() -> None:
    hub = make_hub()
    c = hub.connect()
    [(_, frame)] = hub.receive(c, '{"type":"A\\ud800"}')
    assert frame == err("Unknown message type: A\\ud800")
    frame["message"].encode("utf-8")


def test_binary_frames() -> None:
    hub = make_hub()
    c = hub.connect()
    expected = [(c, err("Binary frames are not supported"))]
    assert hub.receive(c, b'{"type":"CREATE_ROOM","username":"a"}') == expected
    assert hub.receive(c, None, binary=True) == expected
    assert hub.receive(c, '{"type":"CREATE_ROOM","username":"a"}', binary=True) == expected
    assert hub.receive(c, b"") == expected
    assert hub.room_count() == 0


def test_duplicate_keys_last_wins() -> None:
    hub = make_hub()
    c = hub.connect()
    assert hub.receive(c, '{"type":"FOO","type":"LEAVE_ROOM"}') == [(c, JOIN_FIRST)]
    text = '{"type":"CREATE_ROOM","username":5,"username":"ann"}'
    assert hub.receive(c, text) == [(c, {"type": "ROOM_CREATED", "roomid": ROOM_A})]


def test_type_checked_before_room_membership() -> None:
    hub = make_hub()
    c = hub.connect()
    assert send(hub, c, "BOGUS") == [(c, err("Unknown message type: BOGUS"))]


@pytest.mark.parametrize("kind", sorted(MESSAGE_TYPES - {"CREATE_ROOM", "JOIN_ROOM"}))
def test_must_join_first(kind: str) -> None:
    hub = make_hub()
    c = hub.connect()
    assert send(hub, c, kind) == [(c, JOIN_FIRST)]
    # Even with payloads that would be wrong inside a room.
    assert send(hub, c, kind, username=5, sdp=None, candidate=None) == [(c, JOIN_FIRST)]


def test_errors_never_end_the_session() -> None:
    hub = make_hub()
    c = hub.connect()
    for text in ("{", "[]", "{}", '{"type":"X"}', '{"type":"LEAVE_ROOM"}'):
        assert len(hub.receive(c, text)) == 1
    assert hub.receive(c, b"\x00", binary=True)[0][1]["type"] == "ERROR"
    assert send(hub, c, "CREATE_ROOM", username="ok") == [
        (c, {"type": "ROOM_CREATED", "roomid": ROOM_A})
    ]


def test_message_types() -> None:
    assert {
        "CREATE_ROOM",
        "JOIN_ROOM",
        "LEAVE_ROOM",
        "REQUEST_SHARING",
        "ALLOW_SHARING",
        "STOP_SHARING",
        "RCP_OFFER",
        "RCP_ANSWER",
        "ICE_CANDIDATE",
    } == MESSAGE_TYPES


# --------------------------------------------------------------------------- usernames


@pytest.mark.parametrize("kind", ["CREATE_ROOM", "JOIN_ROOM"])
@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "Username missing"),
        ({"username": None}, "Username missing"),
        ({"username": 5}, "Invalid username"),
        ({"username": True}, "Invalid username"),
        ({"username": ["ann"]}, "Invalid username"),
        ({"username": {"name": "ann"}}, "Invalid username"),
        ({"username": ""}, "Invalid username"),
        ({"username": "   \t\n"}, "Invalid username"),
        ({"username": "x" * 31}, "Invalid username"),
        ({"username": " " + "x" * 31 + " "}, "Invalid username"),
        ({"username": "a\tb"}, "Invalid username"),
        ({"username": "a\nb"}, "Invalid username"),
        ({"username": "a\u200bb"}, "Invalid username"),
        ({"username": "a\x7f"}, "Invalid username"),
    ],
)
def test_invalid_usernames(kind: str, fields: dict[str, Any], message: str) -> None:
    hub = make_hub()
    host = hub.connect()
    send(hub, host, "CREATE_ROOM", username="teacher")
    c = hub.connect()
    if kind == "JOIN_ROOM":
        fields = {"roomid": ROOM_A, **fields}
    before = state(hub)
    assert send(hub, c, kind, **fields) == [(c, bad_name(message))]
    assert state(hub) == before


def test_username_lone_surrogate_is_invalid() -> None:
    hub = make_hub()
    c = hub.connect()
    text = '{"type":"CREATE_ROOM","username":"a\\udc00"}'
    assert hub.receive(c, text) == [(c, bad_name("Invalid username"))]


@pytest.mark.parametrize(
    ("raw", "stored"),
    [("x" * 30, "x" * 30), ("  ann  ", "ann"), ("Ann Lee", "Ann Lee"), ("ñandú 🙂", "ñandú 🙂"),
     ("\t" + "é" * 30 + "\n", "é" * 30)],
)  # fmt: skip
def test_valid_usernames_are_trimmed(raw: str, stored: str) -> None:
    hub = make_hub()
    host, user = hub.connect(), hub.connect()
    send(hub, host, "CREATE_ROOM", username="teacher")
    assert send(hub, user, "JOIN_ROOM", roomid=ROOM_A, username=raw) == [
        (user, {"type": "ROOM_JOINED", "roomid": ROOM_A}),
        (host, {"type": "USER_JOINED", "username": stored}),
    ]
    assert hub.members(ROOM_A) == ("teacher", [stored])
    assert send(hub, user, "REQUEST_SHARING") == [
        (host, {"type": "REQUEST_SHARING", "username": stored})
    ]


def test_host_name_is_trimmed_and_stored() -> None:
    hub = make_hub()
    host, user = hub.connect(), hub.connect()
    send(hub, host, "CREATE_ROOM", username="  Ms Smith ")
    assert hub.members(ROOM_A) == ("Ms Smith", [])
    assert send(hub, user, "JOIN_ROOM", roomid=ROOM_A, username="Ms Smith") == [(user, TAKEN)]


# --------------------------------------------------------------------------- CREATE_ROOM


def test_create_room() -> None:
    hub = make_hub()
    c = hub.connect()
    assert send(hub, c, "CREATE_ROOM", username="teacher", roomid="ignored") == [
        (c, {"type": "ROOM_CREATED", "roomid": ROOM_A})
    ]
    assert hub.room_count() == 1
    assert hub.room_of(c) == ROOM_A
    assert hub.role_of(c) == "host"


def test_room_ids_are_redrawn_while_in_use() -> None:
    hub = make_hub(ROOM_A, ROOM_A, ROOM_A, ROOM_B)
    a, b = hub.connect(), hub.connect()
    assert send(hub, a, "CREATE_ROOM", username="a") == [
        (a, {"type": "ROOM_CREATED", "roomid": ROOM_A})
    ]
    assert send(hub, b, "CREATE_ROOM", username="b") == [
        (b, {"type": "ROOM_CREATED", "roomid": ROOM_B})
    ]


def test_default_room_ids() -> None:
    hub = SignalingHub()
    seen = set()
    for _ in range(50):
        c = hub.connect()
        [(_, frame)] = send(hub, c, "CREATE_ROOM", username="h")
        assert re.fullmatch(r"[a-z0-9]{4}", frame["roomid"])
        seen.add(frame["roomid"])
    assert len(seen) == 50 == hub.room_count()
    assert re.fullmatch(r"[a-z0-9]{4}", new_room_id())


def test_bad_generator_output_is_rejected() -> None:
    hub = SignalingHub(rng=lambda: "ABCD")
    c = hub.connect()
    with pytest.raises(ValueError):
        send(hub, c, "CREATE_ROOM", username="h")


def test_create_room_as_host_leaves_old_room(room: Room) -> None:
    hub = room.hub
    assert send(hub, room.host, "CREATE_ROOM", username="teacher") == [
        (room.ann, {"type": "HOST_LEFT"}),
        (room.bob, {"type": "HOST_LEFT"}),
        (room.host, {"type": "ROOM_CREATED", "roomid": ROOM_B}),
    ]
    assert hub.room_count() == 2  # the old room keeps its users
    assert hub.members(ROOM_A) == (None, ["ann", "bob"])
    assert hub.room_of(room.host) == ROOM_B
    assert send(hub, room.ann, "REQUEST_SHARING") == [(room.ann, HOST_GONE)]


def test_create_room_as_sole_host_deletes_old_room() -> None:
    hub = make_hub()
    c = hub.connect()
    send(hub, c, "CREATE_ROOM", username="a")
    assert send(hub, c, "CREATE_ROOM", username="a") == [
        (c, {"type": "ROOM_CREATED", "roomid": ROOM_B})
    ]
    assert hub.room_ids() == [ROOM_B]


def test_create_room_as_user_leaves_old_room(room: Room) -> None:
    hub = room.hub
    assert send(hub, room.ann, "CREATE_ROOM", username="ann2") == [
        (room.host, {"type": "USER_LEFT", "username": "ann"}),
        (room.ann, {"type": "ROOM_CREATED", "roomid": ROOM_B}),
    ]
    assert hub.members(ROOM_A) == ("teacher", ["bob"])
    assert hub.members(ROOM_B) == ("ann2", [])
    assert hub.role_of(room.ann) == "host"


def test_create_room_invalid_name_keeps_membership(room: Room) -> None:
    before = state(room.hub)
    assert send(room.hub, room.ann, "CREATE_ROOM", username="") == [
        (room.ann, bad_name("Invalid username"))
    ]
    assert send(room.hub, room.host, "CREATE_ROOM") == [(room.host, bad_name("Username missing"))]
    assert state(room.hub) == before


# --------------------------------------------------------------------------- JOIN_ROOM


@pytest.mark.parametrize("roomid", ["RM0A", "  rm0a", "Rm0A\t\n", "RM0a ", "rm0a"])
def test_join_normalises_room_id(roomid: str) -> None:
    hub = make_hub()
    host, c = hub.connect(), hub.connect()
    send(hub, host, "CREATE_ROOM", username="h")
    assert send(hub, c, "JOIN_ROOM", roomid=roomid, username="u") == [
        (c, {"type": "ROOM_JOINED", "roomid": ROOM_A}),
        (host, {"type": "USER_JOINED", "username": "u"}),
    ]


@pytest.mark.parametrize(
    "fields",
    [{}, {"roomid": None}, {"roomid": ""}, {"roomid": "  \t"}, {"roomid": 123456},
     {"roomid": ["rm0a"]}, {"roomid": True}],
)  # fmt: skip
def test_join_room_id_required(room: Room, fields: dict[str, Any]) -> None:
    c = room.hub.connect()
    expected = [(c, bad_room("Room ID is required"))]
    assert send(room.hub, c, "JOIN_ROOM", username="zed", **fields) == expected
    # The room id is checked before the name.
    assert send(room.hub, c, "JOIN_ROOM", **fields) == expected
    assert send(room.hub, c, "JOIN_ROOM", username=7, **fields) == expected


def test_join_name_checked_before_room_existence(room: Room) -> None:
    c = room.hub.connect()
    assert send(room.hub, c, "JOIN_ROOM", roomid="nosuch") == [(c, bad_name("Username missing"))]
    assert send(room.hub, c, "JOIN_ROOM", roomid="nosuch", username="") == [
        (c, bad_name("Invalid username"))
    ]


@pytest.mark.parametrize("roomid", ["nosuch", "rm0", "rm0aa", "rm0b", "r o o m"])
def test_join_unknown_room(room: Room, roomid: str) -> None:
    c = room.hub.connect()
    assert send(room.hub, c, "JOIN_ROOM", roomid=roomid, username="zed") == [(c, NOT_FOUND)]


def test_join_room_whose_host_left(room: Room) -> None:
    hub = room.hub
    send(hub, room.host, "LEAVE_ROOM")
    c = hub.connect()
    assert send(hub, c, "JOIN_ROOM", roomid=ROOM_A, username="zed") == [(c, NOT_FOUND)]
    # Unknown room is reported before a name clash.
    assert send(hub, c, "JOIN_ROOM", roomid=ROOM_A, username="ann") == [(c, NOT_FOUND)]


@pytest.mark.parametrize("name", ["ann", " ann ", "bob", "teacher", "\tteacher"])
def test_join_name_taken(room: Room, name: str) -> None:
    c = room.hub.connect()
    before = state(room.hub)
    assert send(room.hub, c, "JOIN_ROOM", roomid=ROOM_A, username=name) == [(c, TAKEN)]
    assert state(room.hub) == before


@pytest.mark.parametrize("name", ["Ann", "ANN", "Teacher", "ann.", "bob2", "an n"])
def test_names_compared_exactly(room: Room, name: str) -> None:
    c = room.hub.connect()
    assert send(room.hub, c, "JOIN_ROOM", roomid=ROOM_A, username=name) == [
        (c, {"type": "ROOM_JOINED", "roomid": ROOM_A}),
        (room.host, {"type": "USER_JOINED", "username": name}),
    ]


def test_same_name_allowed_in_other_rooms(room: Room) -> None:
    hub = room.hub
    h2, c = hub.connect(), hub.connect()
    send(hub, h2, "CREATE_ROOM", username="ann")
    assert send(hub, c, "JOIN_ROOM", roomid=ROOM_B, username="teacher")[0] == (
        c,
        {"type": "ROOM_JOINED", "roomid": ROOM_B},
    )


@pytest.mark.parametrize(
    ("fields", "reply"),
    [
        ({"username": "zed"}, bad_room("Room ID is required")),
        ({"roomid": ROOM_B}, bad_name("Username missing")),
        ({"roomid": ROOM_B, "username": "x" * 31}, bad_name("Invalid username")),
        ({"roomid": "nosuch", "username": "zed"}, NOT_FOUND),
        ({"roomid": ROOM_B, "username": "other"}, TAKEN),
        ({"roomid": ROOM_B, "username": "host-b"}, TAKEN),
    ],
)
def test_failed_join_leaves_user_where_it_was(
    room: Room, fields: dict[str, Any], reply: dict[str, str]
) -> None:
    hub = room.hub
    hb, other = hub.connect(), hub.connect()
    send(hub, hb, "CREATE_ROOM", username="host-b")
    send(hub, other, "JOIN_ROOM", roomid=ROOM_B, username="other")
    before = state(hub)
    for sender in (room.ann, room.host):
        assert send(hub, sender, "JOIN_ROOM", **fields) == [(sender, reply)]
        assert state(hub) == before
    # Still fully functional in the old room.
    assert send(hub, room.ann, "REQUEST_SHARING") == [
        (room.host, {"type": "REQUEST_SHARING", "username": "ann"})
    ]


def test_failed_join_from_room_whose_host_left(room: Room) -> None:
    hub = room.hub
    send(hub, room.host, "LEAVE_ROOM")
    assert send(hub, room.ann, "JOIN_ROOM", roomid="nosuch", username="ann") == [
        (room.ann, NOT_FOUND)
    ]
    assert hub.members(ROOM_A) == (None, ["ann", "bob"])


def test_user_joins_other_room_under_new_name(room: Room) -> None:
    hub = room.hub
    hb = hub.connect()
    send(hub, hb, "CREATE_ROOM", username="host-b")
    assert send(hub, room.ann, "JOIN_ROOM", roomid=" RM0B ", username="zed") == [
        (room.host, {"type": "USER_LEFT", "username": "ann"}),  # the old name
        (room.ann, {"type": "ROOM_JOINED", "roomid": ROOM_B}),
        (hb, {"type": "USER_JOINED", "username": "zed"}),
    ]
    assert hub.members(ROOM_A) == ("teacher", ["bob"])
    assert hub.members(ROOM_B) == ("host-b", ["zed"])
    # No ghost is left behind: the old name is free and unknown to the old host.
    assert send(hub, room.host, "ALLOW_SHARING", username="ann") == [(room.host, NO_USER)]
    c = hub.connect()
    assert send(hub, c, "JOIN_ROOM", roomid=ROOM_A, username="ann")[0][1]["type"] == "ROOM_JOINED"


def test_user_rejoins_same_room(room: Room) -> None:
    hub = room.hub
    # Its own current name is not "used by another member".
    assert send(hub, room.ann, "JOIN_ROOM", roomid=ROOM_A, username="ann") == [
        (room.host, {"type": "USER_LEFT", "username": "ann"}),
        (room.ann, {"type": "ROOM_JOINED", "roomid": ROOM_A}),
        (room.host, {"type": "USER_JOINED", "username": "ann"}),
    ]
    assert send(hub, room.ann, "JOIN_ROOM", roomid=ROOM_A, username="ann2") == [
        (room.host, {"type": "USER_LEFT", "username": "ann"}),
        (room.ann, {"type": "ROOM_JOINED", "roomid": ROOM_A}),
        (room.host, {"type": "USER_JOINED", "username": "ann2"}),
    ]
    assert send(hub, room.ann, "JOIN_ROOM", roomid=ROOM_A, username="bob") == [(room.ann, TAKEN)]
    assert hub.members(ROOM_A) == ("teacher", ["bob", "ann2"])


def test_last_user_joining_elsewhere_deletes_hostless_room(room: Room) -> None:
    hub = room.hub
    send(hub, room.host, "LEAVE_ROOM")
    send(hub, room.bob, "LEAVE_ROOM")
    hb = hub.connect()
    send(hub, hb, "CREATE_ROOM", username="hb")
    assert send(hub, room.ann, "JOIN_ROOM", roomid=ROOM_B, username="ann") == [
        (room.ann, {"type": "ROOM_JOINED", "roomid": ROOM_B}),
        (hb, {"type": "USER_JOINED", "username": "ann"}),
    ]
    assert hub.room_ids() == [ROOM_B]


def test_host_joins_other_room(room: Room) -> None:
    hub = room.hub
    hb = hub.connect()
    send(hub, hb, "CREATE_ROOM", username="hb")
    assert send(hub, room.host, "JOIN_ROOM", roomid=ROOM_B, username="teacher") == [
        (room.ann, {"type": "HOST_LEFT"}),
        (room.bob, {"type": "HOST_LEFT"}),
        (room.host, {"type": "ROOM_JOINED", "roomid": ROOM_B}),
        (hb, {"type": "USER_JOINED", "username": "teacher"}),
    ]
    assert hub.members(ROOM_A) == (None, ["ann", "bob"])
    assert hub.role_of(room.host) == "user"


def test_sole_host_joining_elsewhere_deletes_its_room() -> None:
    hub = make_hub()
    a, b = hub.connect(), hub.connect()
    send(hub, a, "CREATE_ROOM", username="a")
    send(hub, b, "CREATE_ROOM", username="b")
    assert send(hub, a, "JOIN_ROOM", roomid=ROOM_B, username="a") == [
        (a, {"type": "ROOM_JOINED", "roomid": ROOM_B}),
        (b, {"type": "USER_JOINED", "username": "a"}),
    ]
    assert hub.room_ids() == [ROOM_B]


def test_host_joining_own_room_is_not_found(room: Room) -> None:
    before = state(room.hub)
    assert send(room.hub, room.host, "JOIN_ROOM", roomid=ROOM_A, username="x") == [
        (room.host, NOT_FOUND)
    ]
    assert state(room.hub) == before


# --------------------------------------------------------------------------- LEAVE_ROOM


def test_user_leaves(room: Room) -> None:
    hub = room.hub
    assert send(hub, room.ann, "LEAVE_ROOM", username="bob") == [
        (room.ann, {"type": "LEFT_ROOM"}),
        (room.host, {"type": "USER_LEFT", "username": "ann"}),
    ]
    assert hub.room_of(room.ann) is None
    assert hub.members(ROOM_A) == ("teacher", ["bob"])
    assert send(hub, room.ann, "REQUEST_SHARING") == [(room.ann, JOIN_FIRST)]
    assert send(hub, room.ann, "LEAVE_ROOM") == [(room.ann, JOIN_FIRST)]


def test_host_leaves(room: Room) -> None:
    hub = room.hub
    assert send(hub, room.host, "LEAVE_ROOM") == [
        (room.host, {"type": "LEFT_ROOM"}),
        (room.ann, {"type": "HOST_LEFT"}),
        (room.bob, {"type": "HOST_LEFT"}),
    ]
    assert hub.room_of(room.host) is None
    assert send(hub, room.host, "ALLOW_SHARING", username="ann") == [(room.host, JOIN_FIRST)]
    assert hub.room_count() == 1
    # Users leave without anyone to notify; the last one deletes the room.
    assert send(hub, room.ann, "LEAVE_ROOM") == [(room.ann, {"type": "LEFT_ROOM"})]
    assert hub.room_count() == 1
    assert send(hub, room.bob, "LEAVE_ROOM") == [(room.bob, {"type": "LEFT_ROOM"})]
    assert hub.room_count() == 0


def test_host_leaves_empty_room() -> None:
    hub = make_hub()
    c = hub.connect()
    send(hub, c, "CREATE_ROOM", username="h")
    assert send(hub, c, "LEAVE_ROOM") == [(c, {"type": "LEFT_ROOM"})]
    assert hub.room_count() == 0


def test_room_survives_while_host_remains(room: Room) -> None:
    send(room.hub, room.ann, "LEAVE_ROOM")
    send(room.hub, room.bob, "LEAVE_ROOM")
    assert room.hub.members(ROOM_A) == ("teacher", [])
    assert room.hub.room_count() == 1


def test_users_of_departed_host(room: Room) -> None:
    hub = room.hub
    send(hub, room.host, "LEAVE_ROOM")
    cases: list[tuple[str, dict[str, Any]]] = [
        ("REQUEST_SHARING", {}),
        ("STOP_SHARING", {"username": "bob"}),
        ("RCP_OFFER", {"sdp": "v=0"}),
        ("RCP_OFFER", {"sdp": 5}),  # the target is checked before the sdp
        ("ICE_CANDIDATE", {"candidate": "c"}),
        ("ICE_CANDIDATE", {}),
    ]
    for kind, fields in cases:
        assert send(hub, room.ann, kind, **fields) == [(room.ann, HOST_GONE)]
    # Role errors still come first.
    assert send(hub, room.ann, "ALLOW_SHARING", username="bob") == [
        (room.ann, err("Only the host can allow sharing"))
    ]
    assert send(hub, room.ann, "RCP_ANSWER", username="bob", sdp="x") == [
        (room.ann, err("Only the host can send an answer"))
    ]


def test_new_host_does_not_revive_old_room(room: Room) -> None:
    hub = room.hub
    send(hub, room.host, "LEAVE_ROOM")
    assert send(hub, room.host, "CREATE_ROOM", username="teacher") == [
        (room.host, {"type": "ROOM_CREATED", "roomid": ROOM_B})
    ]
    assert send(hub, room.ann, "REQUEST_SHARING") == [(room.ann, HOST_GONE)]


# --------------------------------------------------------------------------- disconnect


def test_user_disconnect(room: Room) -> None:
    hub = room.hub
    assert hub.connection_count() == 3
    assert hub.disconnect(room.ann) == [(room.host, {"type": "USER_LEFT", "username": "ann"})]
    assert hub.connection_count() == 2
    assert hub.members(ROOM_A) == ("teacher", ["bob"])
    assert hub.disconnect(room.ann) == []
    with pytest.raises(KeyError):
        send(hub, room.ann, "LEAVE_ROOM")


def test_host_disconnect(room: Room) -> None:
    hub = room.hub
    assert hub.disconnect(room.host) == [
        (room.ann, {"type": "HOST_LEFT"}),
        (room.bob, {"type": "HOST_LEFT"}),
    ]
    assert send(hub, room.bob, "RCP_OFFER", sdp="v=0") == [(room.bob, HOST_GONE)]
    assert hub.disconnect(room.ann) == []
    assert hub.disconnect(room.bob) == []
    assert hub.room_count() == 0
    assert hub.connection_count() == 0


def test_disconnect_outside_a_room() -> None:
    hub = make_hub()
    c = hub.connect()
    assert hub.disconnect(c) == []
    assert hub.disconnect(12345) == []
    assert hub.connection_count() == 0


def test_disconnect_after_leaving(room: Room) -> None:
    send(room.hub, room.ann, "LEAVE_ROOM")
    assert room.hub.disconnect(room.ann) == []


def test_connection_ids_are_unique() -> None:
    hub = make_hub()
    first = [hub.connect() for _ in range(5)]
    hub.disconnect(first[0])
    assert len({*first, hub.connect()}) == 6


# --------------------------------------------------------------------------- sharing


def test_request_sharing(room: Room) -> None:
    assert send(room.hub, room.ann, "REQUEST_SHARING", username="bob") == [
        (room.host, {"type": "REQUEST_SHARING", "username": "ann"})
    ]
    assert send(room.hub, room.host, "REQUEST_SHARING") == [
        (room.host, err("The host cannot request sharing"))
    ]


def test_allow_sharing(room: Room) -> None:
    hub = room.hub
    assert send(hub, room.host, "ALLOW_SHARING", username="bob", extra=1) == [
        (room.bob, {"type": "ALLOW_SHARING"})
    ]
    only_host = [(room.ann, err("Only the host can allow sharing"))]
    assert send(hub, room.ann, "ALLOW_SHARING", username="bob") == only_host
    assert send(hub, room.ann, "ALLOW_SHARING", username="nobody") == only_host  # role first
    assert send(hub, room.ann, "ALLOW_SHARING") == only_host


@pytest.mark.parametrize("kind", ["ALLOW_SHARING", "STOP_SHARING", "RCP_ANSWER", "ICE_CANDIDATE"])
@pytest.mark.parametrize(
    "fields",
    [{}, {"username": None}, {"username": 1}, {"username": ["ann"]}, {"username": {"a": 1}},
     {"username": "nobody"}, {"username": "Ann"}, {"username": " ann"}, {"username": "teacher"},
     {"username": ""}],
)  # fmt: skip
def test_host_target_not_found(room: Room, kind: str, fields: dict[str, Any]) -> None:
    # Bad sdp/candidate too: the target is checked first.
    assert send(room.hub, room.host, kind, sdp=None, candidate=None, **fields) == [
        (room.host, NO_USER)
    ]


def test_host_target_that_left(room: Room) -> None:
    send(room.hub, room.ann, "LEAVE_ROOM")
    assert send(room.hub, room.host, "STOP_SHARING", username="ann") == [(room.host, NO_USER)]


def test_stop_sharing(room: Room) -> None:
    hub = room.hub
    assert send(hub, room.host, "STOP_SHARING", username="ann") == [
        (room.ann, {"type": "STOP_SHARING"})
    ]
    assert send(hub, room.ann, "STOP_SHARING") == [
        (room.host, {"type": "STOP_SHARING", "username": "ann"})
    ]
    # A user's username is ignored, whatever it is.
    for name in ("bob", 5, None, "teacher"):
        assert send(hub, room.bob, "STOP_SHARING", username=name) == [
            (room.host, {"type": "STOP_SHARING", "username": "bob"})
        ]


# --------------------------------------------------------------------------- SDP


def test_rcp_offer(room: Room) -> None:
    sdp = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n"
    assert send(room.hub, room.ann, "RCP_OFFER", sdp=sdp, username="bob", x=1) == [
        (room.host, {"type": "RCP_OFFER", "sdp": sdp, "username": "ann"})
    ]
    assert send(room.hub, room.host, "RCP_OFFER", sdp=sdp) == [
        (room.host, err("The host cannot send an offer"))
    ]
    assert send(room.hub, room.host, "RCP_OFFER", sdp=5) == [
        (room.host, err("The host cannot send an offer"))
    ]


def test_rcp_answer(room: Room) -> None:
    sdp = "v=0\r\nanswer\r\n"
    assert send(room.hub, room.host, "RCP_ANSWER", username="bob", sdp=sdp, extra=True) == [
        (room.bob, {"type": "RCP_ANSWER", "sdp": sdp})
    ]
    only_host = [(room.ann, err("Only the host can send an answer"))]
    assert send(room.hub, room.ann, "RCP_ANSWER", username="bob", sdp=sdp) == only_host
    assert send(room.hub, room.ann, "RCP_ANSWER", username="nobody", sdp=5) == only_host


@pytest.mark.parametrize("fields", [{}, {"sdp": None}, {"sdp": 5}, {"sdp": ["v=0"]},
                                    {"sdp": {"sdp": "v=0"}}, {"sdp": True}])  # fmt: skip
def test_invalid_sdp(room: Room, fields: dict[str, Any]) -> None:
    invalid = err("Invalid SDP")
    assert send(room.hub, room.ann, "RCP_OFFER", **fields) == [(room.ann, invalid)]
    assert send(room.hub, room.host, "RCP_ANSWER", username="ann", **fields) == [
        (room.host, invalid)
    ]


def test_sdp_size_boundary(room: Room) -> None:
    invalid = err("Invalid SDP")
    for exact, over in [("s" * 65536, "s" * 65537), ("é" * 32768, "é" * 32768 + "s")]:
        assert send(room.hub, room.ann, "RCP_OFFER", sdp=exact) == [
            (room.host, {"type": "RCP_OFFER", "sdp": exact, "username": "ann"})
        ]
        assert send(room.hub, room.ann, "RCP_OFFER", sdp=over) == [(room.ann, invalid)]
        assert send(room.hub, room.host, "RCP_ANSWER", username="ann", sdp=exact) == [
            (room.ann, {"type": "RCP_ANSWER", "sdp": exact})
        ]
        assert send(room.hub, room.host, "RCP_ANSWER", username="ann", sdp=over) == [
            (room.host, invalid)
        ]


def test_empty_sdp_is_relayed(room: Room) -> None:
    assert send(room.hub, room.ann, "RCP_OFFER", sdp="") == [
        (room.host, {"type": "RCP_OFFER", "sdp": "", "username": "ann"})
    ]


def test_sdp_with_lone_surrogate_is_invalid(room: Room) -> None:
    text = '{"type":"RCP_OFFER","sdp":"v=0\\ud800"}'
    assert room.hub.receive(room.ann, text) == [(room.ann, err("Invalid SDP"))]


# --------------------------------------------------------------------------- ICE


def test_ice_candidate_both_ways(room: Room) -> None:
    cand = {"candidate": "candidate:1 1 udp 2122260223 10.0.0.2 5000 typ host", "sdpMid": "0",
            "sdpMLineIndex": 0, "usernameFragment": None}  # fmt: skip
    assert send(room.hub, room.host, "ICE_CANDIDATE", username="ann", candidate=cand) == [
        (room.ann, {"type": "ICE_CANDIDATE", "candidate": cand})
    ]
    assert send(room.hub, room.ann, "ICE_CANDIDATE", candidate=cand, username="bob") == [
        (room.host, {"type": "ICE_CANDIDATE", "candidate": cand, "username": "ann"})
    ]
    assert send(room.hub, room.bob, "ICE_CANDIDATE", candidate="candidate:2", username=3) == [
        (room.host, {"type": "ICE_CANDIDATE", "candidate": "candidate:2", "username": "bob"})
    ]
    assert send(room.hub, room.bob, "ICE_CANDIDATE", candidate="") == [
        (room.host, {"type": "ICE_CANDIDATE", "candidate": "", "username": "bob"})
    ]


@pytest.mark.parametrize("fields", [{}, {"candidate": None}, {"candidate": 5}, {"candidate": 1.5},
                                    {"candidate": True}, {"candidate": ["c"]}])  # fmt: skip
def test_invalid_candidate(room: Room, fields: dict[str, Any]) -> None:
    invalid = err("Invalid ICE candidate")
    assert send(room.hub, room.ann, "ICE_CANDIDATE", **fields) == [(room.ann, invalid)]
    assert send(room.hub, room.host, "ICE_CANDIDATE", username="ann", **fields) == [
        (room.host, invalid)
    ]


def test_candidate_size_boundary(room: Room) -> None:
    invalid = err("Invalid ICE candidate")
    # A string: its JSON encoding adds two quotes.
    exact_s, over_s = "c" * 4094, "c" * 4095
    # An object: {"candidate":"<N>"} is N + 16 bytes; non-ASCII counts in UTF-8 bytes.
    exact_o, over_o = {"candidate": "é" * 2040}, {"candidate": "é" * 2040 + "c"}
    for exact, over in [(exact_s, over_s), (exact_o, over_o)]:
        assert send(room.hub, room.ann, "ICE_CANDIDATE", candidate=exact) == [
            (room.host, {"type": "ICE_CANDIDATE", "candidate": exact, "username": "ann"})
        ]
        assert send(room.hub, room.ann, "ICE_CANDIDATE", candidate=over) == [(room.ann, invalid)]
        assert send(room.hub, room.host, "ICE_CANDIDATE", username="ann", candidate=exact) == [
            (room.ann, {"type": "ICE_CANDIDATE", "candidate": exact})
        ]
        assert send(room.hub, room.host, "ICE_CANDIDATE", username="ann", candidate=over) == [
            (room.host, invalid)
        ]


def test_candidate_size_uses_compact_encoding(room: Room) -> None:
    # Whitespace in the client's text does not count; the candidate is re-encoded compactly.
    body = "c" * 4080
    text = '{ "type" : "ICE_CANDIDATE" ,  "candidate" :  { "candidate" :  "' + body + '" } }'
    assert room.hub.receive(room.ann, text) == [
        (room.host, {"type": "ICE_CANDIDATE", "candidate": {"candidate": body}, "username": "ann"})
    ]


# --------------------------------------------------------------------------- isolation


def test_rooms_are_isolated(room: Room) -> None:
    hub = room.hub
    hb, zed = hub.connect(), hub.connect()
    send(hub, hb, "CREATE_ROOM", username="hb")
    send(hub, zed, "JOIN_ROOM", roomid=ROOM_B, username="zed")
    assert send(hub, room.host, "ALLOW_SHARING", username="zed") == [(room.host, NO_USER)]
    assert send(hub, zed, "REQUEST_SHARING") == [
        (hb, {"type": "REQUEST_SHARING", "username": "zed"})
    ]
    assert hub.disconnect(hb) == [(zed, {"type": "HOST_LEFT"})]
    assert send(hub, room.ann, "REQUEST_SHARING") == [
        (room.host, {"type": "REQUEST_SHARING", "username": "ann"})
    ]


# --------------------------------------------------------------------------- failed joins (v2)

TOO_MANY = bad_room("Too many failed attempts; wait a minute")


def limited_hub(limit: int = 3) -> tuple[SignalingHub, JoinFailures, int]:
    """A hub with the core's failed-join counter and a room ``ROOM_A`` hosted from 10.0.0.9."""
    failures = JoinFailures(limit)
    it = ids()
    hub = SignalingHub(rng=lambda: next(it), limiter=failures)
    host = hub.connect("10.0.0.9")
    assert hub.receive(host, json.dumps({"type": "CREATE_ROOM", "username": "h"}),
                       now=0.0) == [(host, {"type": "ROOM_CREATED", "roomid": "x000"})]
    return hub, failures, host


def join(hub: SignalingHub, conn: int, roomid: Any, now: float, **fields: Any) -> list[Any]:
    message = {"type": "JOIN_ROOM", "roomid": roomid, "username": "u", **fields}
    return hub.receive(conn, json.dumps(message), now=now)


def test_not_found_joins_are_counted_and_limited_per_ip() -> None:
    hub, failures, host = limited_hub(3)
    guesser, same_ip = hub.connect("1.2.3.4"), hub.connect("1.2.3.4")
    other_ip = hub.connect("5.6.7.8")
    for i, roomid in enumerate(["aaaa", "bbbb", "cccc"]):
        assert join(hub, guesser, roomid, 1.0 + i) == [(guesser, NOT_FOUND)]
    assert failures.blocked("1.2.3.4", 3.0) and len(failures) == 1
    # At the limit every JOIN_ROOM from that IP is refused without a lookup, even for a room
    # that exists and even with a bad payload; nothing is counted any more.
    for conn in (guesser, same_ip):
        for roomid, fields in (("x000", {}), ("X000 ", {}), ("", {}), ("x000", {"username": ""})):
            assert join(hub, conn, roomid, 4.0, **fields) == [(conn, TOO_MANY)]
    assert failures.blocked("1.2.3.4", 4.0)
    assert hub.room_of(guesser) is None and hub.members("x000") == ("h", [])
    # Other addresses are unaffected; other message types are unaffected.
    assert join(hub, other_ip, " X000", 4.0) == [
        (other_ip, {"type": "ROOM_JOINED", "roomid": "x000"}),
        (host, {"type": "USER_JOINED", "username": "u"}),
    ]
    assert hub.receive(guesser, '{"type":"CREATE_ROOM","username":"g"}', now=4.0)[0][1][
        "type"] == "ROOM_CREATED"
    # The window slides: 60 s after the first failure the address may try again.
    assert join(hub, same_ip, "x000", 61.5, username="w") == [
        (same_ip, {"type": "ROOM_JOINED", "roomid": "x000"}),
        (host, {"type": "USER_JOINED", "username": "w"}),
    ]


def test_only_room_not_found_counts() -> None:
    hub, failures, host = limited_hub(1)
    c = hub.connect("1.2.3.4")
    assert join(hub, c, "", 1.0) == [(c, bad_room("Room ID is required"))]
    assert join(hub, c, "x000", 1.0, username="") == [(c, bad_name("Invalid username"))]
    assert join(hub, c, "x000", 1.0, username="h") == [(c, TAKEN)]
    assert len(failures) == 0
    # The sender's own room and a room whose host left answer "not found": both count.
    assert join(hub, host, "x000", 2.0) == [(host, NOT_FOUND)]
    assert failures.blocked("10.0.0.9", 2.0)


def test_host_left_room_counts_as_not_found() -> None:
    hub, _, host = limited_hub(1)
    user = hub.connect("1.2.3.4")
    assert join(hub, user, "x000", 1.0)[0][1]["type"] == "ROOM_JOINED"
    hub.receive(host, '{"type":"LEAVE_ROOM"}', now=1.0)
    c = hub.connect("1.2.3.4")
    assert join(hub, c, "x000", 2.0, username="v") == [(c, NOT_FOUND)]
    assert join(hub, c, "x000", 2.0, username="v") == [(c, TOO_MANY)]


def test_join_limit_needs_limiter_ip_and_time() -> None:
    hub, failures, _ = limited_hub(1)
    anonymous = hub.connect()  # no IP: neither counted nor limited
    timeless = hub.connect("1.2.3.4")
    for _ in range(3):
        assert hub.receive(anonymous, '{"type":"JOIN_ROOM","roomid":"zzzz","username":"u"}',
                           now=1.0) == [(anonymous, NOT_FOUND)]
        assert send(hub, timeless, "JOIN_ROOM", roomid="zzzz", username="u") == [
            (timeless, NOT_FOUND)]
    assert len(failures) == 0
    plain = make_hub()  # no limiter: the existing shell's SignalingHub() and connect()
    c = plain.connect()
    for _ in range(50):
        assert plain.receive(c, '{"type":"JOIN_ROOM","roomid":"zzzz","username":"u"}',
                             now=1.0) == [(c, NOT_FOUND)]


def test_observer_joins_and_ws_joins_share_the_counter() -> None:
    from relay.core.context import Session
    from relay.core.hub import Hub
    from relay.core.ids import SecureEntropy
    from relay.core.settings import CoreSettings

    core = Hub(CoreSettings(join_failure_limit=2))
    hub = SignalingHub(limiter=core.state.join_failures)
    c = hub.connect("1.2.3.4")
    assert join(hub, c, "zzzz", 1.0) == [(c, NOT_FOUND)]
    out = core.handle(Session(ip="1.2.3.4"), "room/join", {"room_id": 12345678}, now=2.0,
                      entropy=SecureEntropy())
    assert out.error is not None and out.error.code == "room_not_found"
    assert join(hub, c, "zzzz", 3.0) == [(c, TOO_MANY)]
    out = core.handle(Session(ip="1.2.3.4"), "room/join", {"room_id": 12345678}, now=3.0,
                      entropy=SecureEntropy())
    assert out.error is not None and out.error.code == "rate_limited"


def test_failures_change_nothing_and_reply_only_to_sender(room: Room) -> None:
    hub = room.hub
    before = state(hub)
    failures = [
        (room.ann, '{"type":"ALLOW_SHARING","username":"bob"}'),
        (room.host, '{"type":"RCP_OFFER","sdp":"x"}'),
        (room.host, '{"type":"RCP_ANSWER","username":"zzz","sdp":"x"}'),
        (room.ann, '{"type":"RCP_OFFER","sdp":7}'),
        (room.host, '{"type":"JOIN_ROOM","roomid":"nosuch","username":"q"}'),
        (room.bob, '{"type":"JOIN_ROOM","roomid":"rm0a","username":"ann"}'),
        (room.bob, "{"),
    ]
    for sender, text in failures:
        out = hub.receive(sender, text)
        assert [target for target, _ in out] == [sender]
        assert out[0][1]["type"] in {"ERROR", "INVALID_USERNAME", "INVALID_ROOM_ID"}
        assert state(hub) == before


def test_frames_are_independent_objects(room: Room) -> None:
    out = send(room.hub, room.host, "LEAVE_ROOM")
    frames = [frame for _, frame in out]
    assert len({id(f) for f in frames}) == len(frames)


# --------------------------------------------------------------------------- transport helpers


def test_rate_limited_frame() -> None:
    assert rate_limited_frame() == {"type": "ERROR", "message": "Rate limit exceeded"}
    rate_limited_frame()["message"] = "mutated"
    assert rate_limited_frame()["message"] == "Rate limit exceeded"


@pytest.mark.parametrize(
    ("text", "kind", "label"),
    [
        ('{"type":"RCP_OFFER","sdp":"x"}', "RCP_OFFER", "RCP_OFFER"),
        ('{"type":"WHATEVER"}', "WHATEVER", "unknown"),
        ('{"type":5}', None, "invalid"),
        ("{}", None, "invalid"),
        ("[]", None, "invalid"),
        ("{", None, "invalid"),
        ("NaN", None, "invalid"),
        (b'{"type":"RCP_OFFER"}', None, "invalid"),
        (None, None, "invalid"),
    ],
)
def test_peek_type_and_label(text: str | bytes | None, kind: str | None, label: str) -> None:
    assert peek_type(text) == kind
    assert type_label(text) == label


def test_snapshot(room: Room) -> None:
    hub = room.hub
    hub.connect()
    assert hub.snapshot() == HubSnapshot(rooms=1, connections=4, hosts=1, users=2)
    send(hub, room.host, "LEAVE_ROOM")
    assert hub.snapshot() == HubSnapshot(rooms=1, connections=4, hosts=0, users=2)
    assert hub.room_count() == 1
    assert hub.members("nosuch") is None
    assert hub.role_of(room.ann) == "user"
    assert hub.role_of(room.host) is None
    assert hub.room_of(999) is None
