"""Helpers for the chat directory tests, and tests of the entropy sources themselves.

``Chat`` wraps a ``Directory`` with a test clock that advances one second per command by
default, so every change's ``contact`` is emitted at once unless a test controls ``now``.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import pytest

from relay.chat import Action, Directory, Emit, Fail, SeededEntropy, SystemEntropy
from relay.chat.entropy import group_id_from, user_id_from

USER_ID = re.compile(r"[A-Za-z0-9_-]{20}")
GROUP_ID = re.compile(r"[0-9]{10}")


class ScriptedEntropy:
    """Returns scripted values first (to force collisions), then a seeded stream."""

    def __init__(self, byte_script: list[bytes] | None = None, int_script: list[int] | None = None):
        self.byte_script = list(byte_script or [])
        self.int_script = list(int_script or [])
        self.fallback = SeededEntropy(b"scripted")

    def token_bytes(self, n: int) -> bytes:
        if self.byte_script:
            return self.byte_script.pop(0)
        return self.fallback.token_bytes(n)

    def below(self, bound: int) -> int:
        if self.int_script:
            return self.int_script.pop(0)
        return self.fallback.below(bound)


class Chat:
    """A directory, a clock and an entropy stream, with shorthands for the common steps."""

    def __init__(self, directory: Directory | None = None, *, step: float = 1.0) -> None:
        self.d = directory if directory is not None else Directory()
        self.now = 1000.0
        self.step = step
        self.entropy = SeededEntropy(b"chat-tests")

    def send(self, session: str, event: str, data: Any, *, at: float | None = None) -> list[Action]:
        self.now = self.now + self.step if at is None else at
        return self.d.handle(session, event, data, now=self.now, entropy=self.entropy)

    def drop(self, session: str, *, at: float | None = None) -> list[Action]:
        self.now = self.now + self.step if at is None else at
        return self.d.disconnect(session, now=self.now, entropy=self.entropy)

    def tick(self, at: float) -> list[Action]:
        self.now = at
        return self.d.tick(at)

    def login(self, session: str, name: str, **kw: Any) -> str:
        actions = self.send(session, "login", {"username": name}, **kw)
        answer = actions[0]
        assert isinstance(answer, Emit) and answer.event == "login-response", actions
        assert answer.data["result"] == "success", answer
        uid = answer.data["userid"]
        assert isinstance(uid, str)
        return uid

    def group(self, session: str, uid: str, *others: str) -> str:
        member = {uid: "?"} | {o: "?" for o in others}
        actions = self.send(session, "create_group", {"sender": uid, "member": member})
        first = actions[0]
        assert isinstance(first, Emit) and first.event == "update_group", actions
        gid = first.data["groupid"]
        assert isinstance(gid, str)
        return gid


def flat(actions: list[Action]) -> list[tuple[str, str, Any]]:
    """Every delivery as (session, event, data), in order."""
    out: list[tuple[str, str, Any]] = []
    for a in actions:
        if isinstance(a, Emit):
            out.extend((s, a.event, a.data) for s in a.sessions)
        else:
            out.append((a.session, "error", a.payload))
    return out


def events(actions: list[Action]) -> list[tuple[tuple[str, ...], str]]:
    """(recipients, event) per action, for order checks."""
    return [
        (a.sessions, a.event) if isinstance(a, Emit) else ((a.session,), "error") for a in actions
    ]


def only_fail(actions: list[Action], code: str, session: str, event: str) -> None:
    """The event failed with ``code``, answered to its sender alone, and nothing else."""
    assert len(actions) == 1, actions
    fail = actions[0]
    assert isinstance(fail, Fail), actions
    assert (fail.session, fail.code, fail.event) == (session, code, event), fail
    assert isinstance(fail.message, str) and fail.message
    assert fail.payload == {"code": code, "message": fail.message, "event": event}


def contact_counts(actions: list[Action]) -> Counter[str]:
    """How many ``contact`` frames each session got."""
    return Counter(
        s for a in actions if isinstance(a, Emit) and a.event == "contact" for s in a.sessions
    )


# ------------------------------------------------------------------ entropy tests


def test_seeded_entropy_replays_and_differs_by_seed() -> None:
    a, b, c = SeededEntropy(b"s"), SeededEntropy(b"s"), SeededEntropy(b"t")
    draws_a = [a.token_bytes(15), a.below(10**10), a.token_bytes(3), a.below(7)]
    draws_b = [b.token_bytes(15), b.below(10**10), b.token_bytes(3), b.below(7)]
    assert draws_a == draws_b
    assert c.token_bytes(15) != draws_a[0]
    assert len(a.token_bytes(100)) == 100


def test_seeded_below_is_in_range_and_covers_it() -> None:
    e = SeededEntropy(b"range")
    seen = Counter(e.below(5) for _ in range(2000))
    assert set(seen) == {0, 1, 2, 3, 4}
    assert min(seen.values()) > 300  # roughly uniform (expected 400 each)
    assert all(e.below(1) == 0 for _ in range(10))
    with pytest.raises(ValueError):
        e.below(0)


def test_system_entropy_shapes() -> None:
    e = SystemEntropy()
    assert len(e.token_bytes(15)) == 15
    assert all(0 <= e.below(3) < 3 for _ in range(50))
    assert USER_ID.fullmatch(user_id_from(e))
    assert GROUP_ID.fullmatch(group_id_from(e))


def test_id_formats_keep_leading_zeros() -> None:
    assert group_id_from(ScriptedEntropy(int_script=[42])) == "0000000042"
    assert group_id_from(ScriptedEntropy(int_script=[10**10 - 1])) == "9999999999"
    assert user_id_from(ScriptedEntropy([b"\xff" * 15])) == "_" * 20
    assert user_id_from(ScriptedEntropy([b"\xfb" * 15])) == "-_v7" * 5


def test_broken_entropy_is_reported_not_trusted() -> None:
    with pytest.raises(ValueError):
        user_id_from(ScriptedEntropy([b"short"]))
    with pytest.raises(ValueError):
        group_id_from(ScriptedEntropy(int_script=[10**10]))
