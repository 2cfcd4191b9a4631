"""Hostile and broken input: refused with one ``error`` to the sender, nothing else, no change."""

from __future__ import annotations

from typing import Any

import pytest

from relay.chat import Emit
from tests.test_chat_helpers import Chat, only_fail


def _deep(depth: int) -> Any:
    value: Any = "leaf"
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


#: Values of the wrong type (or shape) for any field; none is a usable string or object.
JUNK: list[Any] = [
    None,
    True,
    0,
    -1,
    10**4000,  # a huge integer: must never be converted or echoed
    1.5,
    [],
    ["a"],
    _deep(50_000),  # deep nesting: must never be walked
]

#: Extra wrong values for fields that must be an object.
NOT_OBJECTS: list[Any] = [*JUNK, "string", ""]


class World:
    """Three logged-in users, A and B in one group, C outside; S0 connected, not logged in."""

    def __init__(self) -> None:
        self.c = Chat()
        self.a = self.c.login("sA", "A")
        self.b = self.c.login("sB", "B")
        self.cc = self.c.login("sC", "C")
        self.gid = self.c.group("sA", self.a, self.b)
        self.c.tick(self.c.now + 1)

    def refused(self, session: str, event: str, data: Any, code: str) -> None:
        before = self.c.d.snapshot()
        deadline = self.c.d.next_deadline()
        chat_session = self.c.d.is_chat_session(session)
        only_fail(self.c.send(session, event, data), code, session, event)
        assert self.c.d.snapshot() == before, (event, data)
        assert self.c.d.next_deadline() == deadline
        assert self.c.d.is_chat_session(session) == chat_session

    def valid(self, event: str) -> dict[str, Any]:
        """A payload that would succeed for A (so that breaking one field is the only fault)."""
        payloads: dict[str, dict[str, Any]] = {
            "login": {"username": "Alpha"},
            "message": {"sender": self.a, "receiver": self.b, "message": "hi"},
            "create_group": {"sender": self.a, "member": {self.cc: "C"}},
            "join_group": {"groupid": self.gid, "sender": self.a},
            "leave_group": {"groupid": self.gid, "sender": self.a},
            "logout": {"sender": self.a},
        }
        return payloads[event]


FIELDS = [
    ("login", "username"),
    ("message", "sender"),
    ("message", "receiver"),
    ("message", "message"),
    ("create_group", "sender"),
    ("create_group", "member"),
    ("join_group", "groupid"),
    ("join_group", "sender"),
    ("leave_group", "groupid"),
    ("leave_group", "sender"),
    ("logout", "sender"),
]


@pytest.mark.parametrize(("event", "field"), FIELDS)
def test_wrong_types_in_every_field(event: str, field: str) -> None:
    w = World()
    for junk in [*JUNK, "MISSING"]:
        data = dict(w.valid(event))
        if junk == "MISSING":
            del data[field]
        else:
            data[field] = junk
        w.refused("sA", event, data, "invalid_payload")
    if field == "member":
        for text in ["", "x", '{"a": 1}']:
            w.refused("sA", event, {**w.valid(event), field: text}, "invalid_payload")


@pytest.mark.parametrize(
    "event", ["login", "message", "create_group", "join_group", "leave_group", "logout"]
)
def test_payload_that_is_not_an_object(event: str) -> None:
    w = World()
    for junk in NOT_OBJECTS:
        w.refused("sA", event, junk, "invalid_payload")


@pytest.mark.parametrize(
    "event", ["message", "create_group", "join_group", "leave_group", "logout"]
)
def test_everything_but_login_needs_a_login_first(event: str) -> None:
    w = World()
    for data in [w.valid(event), None, 10**4000, _deep(1000), {}]:
        w.refused("s0", event, data, "not_in_room")
    # a logged-out session is not logged in either
    w.c.send("sC", "logout", {"sender": w.cc})
    w.refused("sC", event, {**w.valid(event), "sender": w.cc}, "not_in_room")


def test_spoofed_sender_is_forbidden_everywhere() -> None:
    w = World()
    w.refused("sC", "message", {"sender": w.a, "receiver": w.b, "message": "I am A"}, "forbidden")
    w.refused("sC", "message", {"sender": w.a, "receiver": w.gid, "message": "I am A"}, "forbidden")
    w.refused("sC", "create_group", {"sender": w.a, "member": {w.b: "B"}}, "forbidden")
    w.refused("sC", "leave_group", {"groupid": w.gid, "sender": w.a}, "forbidden")
    w.refused("sC", "logout", {"sender": w.a}, "forbidden")
    w.refused("sA", "message", {"sender": "sA", "receiver": w.b, "message": "sid"}, "forbidden")


def test_joining_someone_else_into_a_group_is_forbidden() -> None:
    w = World()
    w.refused("sA", "join_group", {"groupid": w.gid, "sender": w.cc}, "forbidden")
    w.refused("sC", "join_group", {"groupid": w.gid, "sender": w.a}, "forbidden")


def test_messaging_or_leaving_a_group_one_is_not_in() -> None:
    w = World()
    w.refused(
        "sC", "message", {"sender": w.cc, "receiver": w.gid, "message": "let me in"}, "forbidden"
    )
    w.refused("sC", "leave_group", {"groupid": w.gid, "sender": w.cc}, "forbidden")


def test_unknown_ids_are_not_found() -> None:
    w = World()
    for gid in ["9999999999", "", "x" * 10_000, w.a]:
        w.refused("sA", "join_group", {"groupid": gid, "sender": w.a}, "group_not_found")
        w.refused("sA", "leave_group", {"groupid": gid, "sender": w.a}, "group_not_found")
    # members must be logged-in user ids: session keys (the seed's ids) and strangers are not
    for key in ["sB", "s0", "B", "A" * 20, w.gid]:
        w.refused("sA", "create_group", {"sender": w.a, "member": {key: "B"}}, "user_not_found")
        w.refused(
            "sA", "create_group", {"sender": w.a, "member": {w.b: "B", key: "X"}}, "user_not_found"
        )


def test_huge_member_maps_are_refused_before_being_walked() -> None:
    w = World()
    member = {f"{i:020d}": i for i in range(200_000)}
    w.refused("sA", "create_group", {"sender": w.a, "member": member}, "too_large")


def test_huge_strings_are_refused_or_answered_cheaply() -> None:
    w = World()
    big = "x" * 4_000_000
    w.refused("sA", "message", {"sender": w.a, "receiver": w.b, "message": big}, "too_large")
    w.refused("sA", "message", {"sender": big, "receiver": w.b, "message": "m"}, "forbidden")
    w.refused("sA", "message", {"sender": w.a, "receiver": big, "message": "m"}, "group_not_found")
    actions = w.c.send("s0", "login", {"username": big})
    assert [a.data["result"] for a in actions if isinstance(a, Emit)] == ["invalid"]
    assert w.c.d.user_id("s0") is None


def test_contact_never_reaches_a_session_before_login() -> None:
    w = World()
    seen: list[str] = []
    for step in range(20):
        # strangers poke at everything while the others change the directory
        for event in ["message", "create_group", "join_group", "leave_group", "logout"]:
            actions = w.c.send("s0", event, w.valid(event), at=w.c.now + 0.03)
            seen.extend(s for a in actions if isinstance(a, Emit) for s in a.sessions)
        name = f"N{step}"
        actions = w.c.send(f"new{step}", "login", {"username": name}, at=w.c.now + 0.03)
        actions += w.c.tick(w.c.now + 0.2)
        for a in actions:
            if isinstance(a, Emit):
                seen.extend(s for s in a.sessions if a.event == "contact")
    assert "s0" not in seen
    assert not w.c.d.is_chat_session("s0")


def test_failure_inside_a_coalescing_window_does_not_flush_or_postpone() -> None:
    c = Chat()
    c.login("x1", "X1", at=5000.0)
    c.login("x2", "X2", at=5000.01)  # waits for the window
    assert c.d.next_deadline() == pytest.approx(5000.1)
    only_fail(c.send("x1", "message", {}, at=5000.2), "invalid_payload", "x1", "message")
    assert c.d.next_deadline() == pytest.approx(5000.1)
