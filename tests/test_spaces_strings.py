"""§9.3 string edits: the transformation table, the history window, and convergence."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.spaces import SpaceSettings
from relay.spaces.strings import DELETE, INSERT, Edit, transform_delete, transform_insert
from relay.spaces.testing import Harness
from relay.spaces.values import json_size


def ins(q: int, t: str) -> Edit:
    return Edit(1, INSERT, q, len(t), t)


def dele(q: int, e: str) -> Edit:
    return Edit(1, DELETE, q, len(e))


# -- the table, row by row ------------------------------------------------------------------

@pytest.mark.parametrize(("p", "edit", "expected"), [
    (5, ins(2, "ab"), 7),     # q < p: shifted
    (5, ins(5, "ab"), 5),     # q = p: the incoming insert stays in front
    (5, ins(7, "ab"), 5),     # after: unaffected
    (5, dele(1, "ab"), 3),    # delete wholly before: p -= len(e)
    (5, dele(3, "abcd"), 3),  # p inside the deleted range: moved to q
    (5, dele(5, "ab"), 5),    # q = p: unaffected
    (5, dele(6, "ab"), 5),
])
def test_incoming_insert(p: int, edit: Edit, expected: int) -> None:
    assert transform_insert(p, [edit]) == expected


@pytest.mark.parametrize(("p", "d", "edit", "expected"), [
    (5, "wxyz", ins(2, "ab"), (7, "wxyz")),       # q < p
    (5, "wxyz", ins(5, "ab"), (7, "wxyz")),       # q = p: shifted (q <= p)
    (5, "wxyz", ins(7, "ab"), (5, "wxabyz")),     # inside: the insertion is deleted too
    (5, "wxyz", ins(9, "ab"), (5, "wxyz")),       # q = p + L: after
    (5, "wxyz", dele(0, "abc"), (2, "wxyz")),     # before
    (5, "wxyz", dele(3, "abcd"), (3, "yz")),      # overlaps the start
    (5, "wxyz", dele(6, "xy"), (5, "wz")),        # inside
    (5, "wxyz", dele(7, "yzab"), (5, "wx")),      # overlaps the end
    (5, "wxyz", dele(4, "awxyzb"), (4, "")),      # covers it: emptied, still applies
    (5, "wxyz", dele(9, "ab"), (5, "wxyz")),      # after
])
def test_incoming_delete(p: int, d: str, edit: Edit, expected: tuple[int, str]) -> None:
    assert transform_delete(p, d, [edit]) == expected


def test_edits_are_carried_through_in_order() -> None:
    edits = [ins(0, "ab"), dele(1, "bc"), ins(4, "Z")]
    assert transform_insert(3, edits) == 3
    assert transform_delete(3, "cd", edits) == (3, "cZd")


# -- versions -----------------------------------------------------------------------------------

def make(history: int = 100) -> tuple[Harness, int]:
    h = Harness(settings=SpaceSettings(string_history=history))
    a = h.connect("full")
    h.send(a, "subscribe", {"topic_name": "s", "type": "string"})
    return h, a


def edit(h: Harness, a: int, change: dict[str, Any]) -> dict[str, Any]:
    got = h.send(a, "update", {"topic_name": "s", "change": change})
    frame = got[a][0]
    return frame["content"]  # type: ignore[no-any-return]


def test_concurrent_edits_against_an_old_version() -> None:
    h, a = make()
    edit(h, a, {"type": "set", "value": "hello world"})          # v1
    edit(h, a, {"type": "insert", "topic_version": 1, "position": 0, "insertion": ">> "})  # v2
    out = edit(h, a, {"type": "insert", "topic_version": 1, "position": 5, "insertion": ","})
    assert out["change"]["position"] == 8 and out["change"]["topic_version"] == 2
    assert out["version"] == 3
    out = edit(h, a, {"type": "delete", "topic_version": 1, "position": 6,
                      "deletion": "world"})
    assert out["change"]["position"] == 10 and out["change"]["deletion"] == "world"
    assert h.space.topics["s"].value == ">> hello, "
    out = edit(h, a, {"type": "delete", "topic_version": 1, "position": 4, "deletion": "o w"})
    # the comma inserted inside its range is deleted too; "world" was already gone
    assert out["change"] == {"type": "delete", "topic_version": 4, "position": 7,
                             "deletion": "o, ", "id": out["change"]["id"], "topic_name": "s",
                             "topic_type": "string"}
    assert h.space.topics["s"].value == ">> hell"


def test_history_window_and_sets() -> None:
    h, a = make(history=100)
    for i in range(120):
        edit(h, a, {"type": "insert", "topic_version": i, "position": 0, "insertion": "x"})
    assert h.space.topics["s"].version == 120
    out = edit(h, a, {"type": "insert", "topic_version": 19, "position": 0, "insertion": "y"})
    assert out["code"] == "bad_version"
    out = edit(h, a, {"type": "insert", "topic_version": 20, "position": 0, "insertion": "y"})
    assert "code" not in out and out["change"]["position"] == 0  # exactly 100 back
    out = edit(h, a, {"type": "insert", "topic_version": 122, "position": 0, "insertion": "y"})
    assert out["code"] == "bad_version"
    edit(h, a, {"type": "set", "value": "abc"})  # v122
    out = edit(h, a, {"type": "delete", "topic_version": 121, "position": 0, "deletion": "x"})
    assert out["code"] == "bad_version"  # a set was applied after it
    out = edit(h, a, {"type": "delete", "topic_version": 122, "position": 0, "deletion": "a"})
    assert out["version"] == 123
    out = edit(h, a, {"type": "insert", "topic_version": 122, "position": 2, "insertion": "!"})
    assert out["change"]["position"] == 1 and h.space.topics["s"].value == "b!c"


def test_empty_edits_apply_and_count_as_versions() -> None:
    h, a = make()
    edit(h, a, {"type": "set", "value": "ab"})
    edit(h, a, {"type": "delete", "topic_version": 1, "position": 0, "deletion": "ab"})
    out = edit(h, a, {"type": "delete", "topic_version": 1, "position": 1, "deletion": "b"})
    assert out["change"]["deletion"] == "" and out["version"] == 3
    out = edit(h, a, {"type": "insert", "topic_version": 3, "position": 0, "insertion": ""})
    assert out["version"] == 4


def test_code_points_not_utf16_units() -> None:
    h, a = make()
    edit(h, a, {"type": "set", "value": "😀😀"})
    out = edit(h, a, {"type": "insert", "topic_version": 1, "position": 1, "insertion": "|"})
    assert out["change"]["position"] == 1 and h.space.topics["s"].value == "😀|😀"
    out = edit(h, a, {"type": "insert", "topic_version": 2, "position": 4, "insertion": "|"})
    assert out["code"] == "invalid_change"


# -- convergence (hypothesis) ---------------------------------------------------------------

WINDOW = 6  # a short history so that stale versions are reachable in few steps


@st.composite
def scripts(draw: st.DrawFn) -> tuple[str, list[tuple[Any, ...]]]:
    initial = draw(st.text(alphabet="abcdé😀", max_size=12))
    steps = draw(st.lists(st.tuples(
        st.integers(0, 3),                          # client
        st.sampled_from(["insert", "delete", "delete", "insert", "set", "bad"]),
        st.integers(-WINDOW - 3, 2),                # version offset from the current one
        st.integers(0, 40), st.integers(0, 6),      # position seed, length
        st.text(alphabet="xyz😀", max_size=4),
    ), max_size=60))
    return initial, steps


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scripts())
def test_concurrent_edits_converge(script: tuple[str, list[tuple[Any, ...]]]) -> None:
    """Every subscriber ends with the server's value, which is the initial value with the
    broadcast (transformed) changes applied in the server's order; a change that was valid
    against the version it names is never refused, unless that version left the window or
    was followed by a set."""
    initial, steps = script
    h = Harness(settings=SpaceSettings(string_history=WINDOW))
    clients = [h.connect("full" if i % 2 else "seed") for i in range(4)]
    for c in clients:
        h.send(c, "subscribe", {"topic_name": "s", "type": "string"})
    h.send(clients[0], "update", {"topic_name": "s",
                                  "change": {"type": "set", "value": initial}})
    topic = h.space.topics["s"]
    history = {0: "", 1: initial}  # value after each version
    last_set = 1
    replicas = {c: "" for c in clients}
    broadcasts: list[dict[str, Any]] = []

    def apply_all() -> None:
        for c in clients:
            frames = h.inbox[c]
            for frame in frames:
                body = frame.get("args") or frame.get("content")
                if frame["type"] != "update":
                    continue
                ch = body["change"]
                if c == clients[0]:
                    broadcasts.append(ch)
                v = replicas[c]
                if ch["type"] == "set":
                    v = ch["value"]
                elif ch["type"] == "insert":
                    assert ch["position"] <= len(v)
                    v = v[: ch["position"]] + ch["insertion"] + v[ch["position"]:]
                else:
                    assert v[ch["position"]: ch["position"] + len(ch["deletion"])] == \
                        ch["deletion"]
                    v = v[: ch["position"]] + v[ch["position"] + len(ch["deletion"]):]
                replicas[c] = v
            frames.clear()

    apply_all()
    for client_i, kind, offset, pos_seed, length, text in steps:
        c = clients[client_i]
        current = topic.version
        tv = current + offset
        base = history.get(tv)
        in_window = base is not None and tv >= current - WINDOW and tv >= last_set
        if kind == "set":
            change: dict[str, Any] = {"type": "set", "value": text}
            valid = True
        elif kind == "insert":
            pos = pos_seed % (len(base) + 1) if base is not None else pos_seed
            change = {"type": "insert", "topic_version": tv, "position": pos, "insertion": text}
            valid = in_window
        elif kind == "delete":
            pos = pos_seed % (len(base) + 1) if base is not None else pos_seed
            deletion = base[pos: pos + length] if base is not None else "q"
            change = {"type": "delete", "topic_version": tv, "position": pos,
                      "deletion": deletion}
            valid = in_window
        else:  # deliberately inconsistent with the text at that version
            change = {"type": "delete", "topic_version": tv, "position": pos_seed,
                      "deletion": "#"}
            valid = False
        before = (topic.value, topic.version)
        got = h.send(c, "update", {"topic_name": "s", "change": change})
        reply = got[c][-1]
        if reply["type"] == "reject_update":
            assert not valid, (change, reply)
            assert (topic.value, topic.version) == before
            h.inbox[c].pop()
            stale = tv > current or tv < 0 or tv < current - WINDOW or tv < last_set
            if kind != "set" and stale and "content" in reply:
                assert reply["content"]["code"] == "bad_version"
        else:
            assert topic.version == current + 1
            history[topic.version] = topic.value
            if kind == "set":
                last_set = topic.version
        apply_all()
        for c2 in clients:
            assert replicas[c2] == topic.value
    replay = ""
    for ch in broadcasts:
        if ch["type"] == "set":
            replay = ch["value"]
        elif ch["type"] == "insert":
            replay = replay[: ch["position"]] + ch["insertion"] + replay[ch["position"]:]
        else:
            replay = replay[: ch["position"]] + replay[ch["position"] + len(ch["deletion"]):]
    assert replay == topic.value
    assert topic.size == json_size(topic.value)


def test_history_is_bounded_space_wide() -> None:
    """Cycling large inserts and deletes cannot make the space hold unbounded history."""
    h = Harness(settings=SpaceSettings(max_history_chars=100))
    a = h.connect("full")
    h.send(a, "subscribe", {"topic_name": "s", "type": "string"})
    h.send(a, "subscribe", {"topic_name": "u", "type": "string"})
    for v in range(0, 10, 2):
        edit(h, a, {"type": "insert", "topic_version": v, "position": 0, "insertion": "x" * 40})
        edit(h, a, {"type": "delete", "topic_version": v + 1, "position": 0,
                    "deletion": "x" * 40})
    space = h.space
    assert space.history_chars <= 100
    kept = space.topics["s"].history
    assert [e.version for e in kept] == list(range(kept[0].version, 11))
    assert sum(e.length for e in kept if e.kind == "insert") == space.history_chars
    # versions whose edits were forgotten: bad_version; those still kept: transformed
    oldest = kept[0].version
    out = edit(h, a, {"type": "insert", "topic_version": oldest - 2, "position": 0,
                      "insertion": "y"})
    assert out["code"] == "bad_version"
    out = edit(h, a, {"type": "insert", "topic_version": oldest - 1, "position": 0,
                      "insertion": "y"})
    assert "code" not in out
    # another topic's edit takes from the budget by dropping its own oldest first
    got = h.send(a, "update", {"topic_name": "u", "change": {
        "type": "insert", "topic_version": 0, "position": 0, "insertion": "z" * 90}})
    assert got[a][0]["type"] == "update"
    assert len(space.topics["u"].history) == 1 and space.history_chars <= 100 + 90
