"""Unit tests of the sans-IO core: Hub.handle on Sessions, inspecting Outcome.actions."""

from __future__ import annotations

from typing import Any

import pytest

from relay.core.actions import Counted, Reply, Send, StartImport, StatsChanged
from relay.core.context import Session
from relay.core.hub import Hub, Outcome
from relay.core.ids import SecureEntropy
from relay.core.model import Room
from relay.core.settings import CoreSettings
from relay.core.steps_import import ImportFailure
from tests.support import step

WALL = 1741079702.1205  # 2025-03-04T09:15:02.120Z


class World:
    """A hub with one room: host session plus student sessions."""

    def __init__(self, *names: str) -> None:
        self.hub = Hub(CoreSettings())
        #: The time and entropy every command gets (the core reads neither by itself).
        self.now = WALL
        self.entropy = SecureEntropy()
        self.host = Session(ip="10.0.0.1")
        out = self.handle(self.host, "room/create", {"name": "Teacher"})
        assert out.error is None
        assert self.host.room_id is not None
        self.room_id: int = self.host.room_id
        self.students: list[Session] = []
        for name in names:
            session = Session(ip="10.0.0.2")
            out = self.handle(session, "room/join", {"room_id": self.room_id, "name": name})
            assert out.error is None, out.error
            self.students.append(session)

    def handle(self, session: Session, event: str, data: Any) -> Outcome:
        return self.hub.handle(session, event, data, now=self.now, entropy=self.entropy)

    @property
    def room(self) -> Room:
        return self.hub.rooms[self.room_id]

    def counter(self, user_id: int) -> int:
        return self.room.participants[user_id].replay.counter

    def ok(self, session: Session, event: str, data: Any) -> Outcome:
        out = self.handle(session, event, data)
        assert out.error is None, out.error.message if out.error else None
        return out

    def err(self, session: Session, event: str, data: Any, code: str) -> Outcome:
        out = self.handle(session, event, data)
        assert out.error is not None and out.error.code == code, (
            out.error and (out.error.code, out.error.message))
        return out


def sends(out: Outcome) -> list[tuple[int, str, Any, int | None]]:
    return [(a.user_id, a.out.event, a.out.data, a.seq) for a in out.actions
            if isinstance(a, Send)]


# -- deliveries and sequencing ------------------------------------------------------------
def test_message_payload_from_injected_wall_clock() -> None:
    w = World("Ann")
    before, own = w.counter(1), w.counter(2)
    out = w.ok(w.students[0], "message/to_mentor", {"content": "Stuck on task 1"})
    assert sends(out) == [(1, "message/to_mentor", {
        "id": 1, "sender": 2, "receiver": 1, "content": "Stuck on task 1", "status": None,
        "created_at": "09:15:02", "timestamp": "2025-03-04T09:15:02.120Z"}, before + 1)]
    assert w.counter(2) == own  # no echo: the sender's counter is untouched
    assert all(isinstance(a, Send) for a in out.actions)


def test_to_all_one_message_per_student_in_user_order() -> None:
    w = World("Ann", "Bob", "Cid")
    # Bob goes offline; he still gets his message.
    w.hub.disconnect(w.students[1], now=w.now, entropy=w.entropy)
    assert not w.room.participants[3].online
    counters = {uid: w.counter(uid) for uid in (2, 3, 4)}
    out = w.ok(w.host, "message/to_all", {"content": "Break"})
    got = sends(out)
    assert [(uid, event) for uid, event, _, _ in got] == [
        (2, "message/to_client"), (3, "message/to_client"), (4, "message/to_client")]
    assert [data["id"] for _, _, data, _ in got] == [1, 2, 3]
    assert [data["receiver"] for _, _, data, _ in got] == [2, 3, 4]
    for uid, _, _, seq in got:
        assert seq == counters[uid] + 1 == w.counter(uid)
    for action in out.actions:
        assert isinstance(action, Send) and action.after == action.seq
    assert w.room.next_message_id == 4
    assert len(w.room.participants[3].messages) == 1


def test_status_alerts_sequenced_before_statuses() -> None:
    w = World("Ann")
    ann = w.students[0]
    w.ok(w.host, "steps/all", [step("1"), step("2")])
    w.ok(ann, "steps/status/to_mentor", {"1": "DONE"})
    start = w.counter(2)
    out = w.ok(w.host, "steps/status/to_client",
               {"user_id": 2, "steps": {"2": "ACCEPTED", "1": "NONE"}})
    assert sends(out) == [
        (2, "alerts", {"message": "Task 2 solution accepted!", "type": "SUCCESS"}, start + 1),
        (2, "alerts", {"message": "Task 1 solution declined!", "type": "WARNING"}, start + 2),
        (2, "steps/status/to_client", {"2": "ACCEPTED", "1": "NONE"}, start + 3),
    ]
    assert isinstance(out.actions[-1], StatsChanged)
    assert w.room.participants[2].statuses == {"1": "NONE", "2": "ACCEPTED"}


def test_sharing_switch_ends_previous_first() -> None:
    w = World("Ann", "Bob")
    w.ok(w.host, "sharing/start", {"user_id": 2})
    out = w.ok(w.host, "sharing/start", {"user_id": 3})
    assert [(uid, event, data) for uid, event, data, _ in sends(out)] == [
        (2, "sharing/end", {}), (3, "sharing/start", {})]
    assert w.room.sharer == 3
    out = w.ok(w.host, "sharing/start", {"user_id": 3})
    assert [(uid, event) for uid, event, _, _ in sends(out)] == [(3, "sharing/start")]


def test_unchanged_status_forwards_nothing() -> None:
    w = World("Ann")
    w.ok(w.host, "steps/all", [step("1")])
    w.ok(w.students[0], "steps/status/to_mentor", {"1": "HELP"})
    before = w.counter(1)
    out = w.ok(w.students[0], "steps/status/to_mentor", {"1": "HELP"})
    assert out.actions == []
    assert w.counter(1) == before


def test_conversation_keeps_newest_1000() -> None:
    w = World("Ann")
    for i in range(1005):
        w.ok(w.students[0], "message/to_mentor", {"content": str(i)})
    messages = w.room.participants[2].messages
    assert len(messages) == 1000
    assert messages[0]["content"] == "5" and messages[-1]["id"] == 1005
    out = w.ok(w.host, "message/user", {"user_id": 2})
    ((uid, event, data, _),) = sends(out)
    assert (uid, event) == (1, "message/user")
    assert [m["content"] for m in data["messages"]] == [str(i) for i in range(5, 1005)]


# -- check order --------------------------------------------------------------------------
def test_check_order() -> None:
    w = World("Ann")
    ann = w.students[0]
    cases: list[tuple[Session, str, Any, str]] = [
        (w.host, "no/such", {}, "unknown_event"),
        (Session(ip="x"), "steps/all", "junk", "not_in_room"),
        (Session(ip="x"), "message/to_client", {"room_id": "bad"}, "not_in_room"),
        (w.host, "room/join", {}, "already_in_room"),
        (ann, "message/to_client", {"content": ""}, "not_host"),
        (ann, "steps/import", 5, "not_host"),
        (w.host, "signal", {"value": "nope"}, "not_student"),
        (w.host, "sharing/code_send", None, "not_student"),
        # payload before state (room_id equality, user lookup, sharer, ACCEPTED rule)
        (w.host, "message/to_client", {"user_id": 9, "content": "", "room_id": 1},
         "invalid_payload"),
        (w.host, "message/to_client", {"user_id": 2, "content": "x", "room_id": "1"},
         "invalid_payload"),
        (w.host, "message/to_client", {"user_id": 2, "content": "x", "room_id": 1},
         "forbidden"),
        (w.host, "message/to_client", {"user_id": 9, "content": "x"}, "user_not_found"),
        (ann, "sharing/code_send", {"files": [{"filename": "/x", "status": "CREATED",
                                               "content": ""}]}, "invalid_payload"),
        (ann, "sharing/code_send", {"files": []}, "not_sharing"),
        (ann, "signal", {"value": "x", "user_id": 5}, "invalid_payload"),
        (ann, "signal", {"value": "HELP", "user_id": 5}, "forbidden"),
    ]
    for session, event, data, code in cases:
        out = w.err(session, event, data, code)
        assert out.actions == [], (event, code)


# -- all or nothing -----------------------------------------------------------------------
def test_failed_status_to_client_changes_nothing() -> None:
    w = World("Ann")
    w.ok(w.host, "steps/all", [step("1")])
    w.ok(w.students[0], "steps/status/to_mentor", {"1": "DONE"})
    ann = w.room.participants[2]
    counter = ann.replay.counter
    # The first entry alone would alert; the unpublished second one fails the whole event.
    out = w.err(w.host, "steps/status/to_client",
                {"user_id": 2, "steps": {"1": "ACCEPTED", "zzz": "DONE"}}, "invalid_payload")
    assert out.actions == []
    assert ann.statuses == {"1": "DONE"}
    assert ann.replay.counter == counter


def test_failed_to_mentor_changes_nothing() -> None:
    w = World("Ann")
    w.ok(w.host, "steps/all", [step("1"), step("2")])
    out = w.err(w.students[0], "steps/status/to_mentor", {"1": "DONE", "2": "ACCEPTED"},
                "forbidden")
    assert out.actions == []
    assert w.room.participants[2].statuses == {}


def test_failed_code_update_changes_nothing() -> None:
    w = World("Ann")
    ann = w.students[0]
    w.ok(w.host, "sharing/start", {"user_id": 2})
    files = [{"filename": f"f{i}", "status": "CREATED", "content": ""} for i in range(2000)]
    w.ok(ann, "sharing/code_send", {"files": files})
    student = w.room.participants[2]
    host_counter = w.counter(1)
    stored = dict(student.files)
    out = w.err(ann, "sharing/code_update", {"files": [
        {"filename": "f0", "status": "CHANGED", "content": "changed"},
        {"filename": "new", "status": "CREATED", "content": "x"}]}, "too_large")
    assert out.actions == []
    assert student.files == stored and student.files["f0"].content == ""
    assert w.counter(1) == host_counter


def test_failed_steps_all_changes_nothing() -> None:
    w = World("Ann")
    w.ok(w.host, "steps/all", [step("1")])
    w.ok(w.host, "steps/import", {"markdown": "draft"})
    draft = w.room.draft
    counter = w.counter(2)
    out = w.err(w.host, "steps/all", [step("2"), {"content": "x"}], "invalid_payload")
    assert out.actions == []
    assert w.room.steps == [step("1")] and w.room.draft == draft
    assert w.counter(2) == counter


# -- imports ------------------------------------------------------------------------------
def test_markdown_import_actions() -> None:
    w = World("Ann")
    start = w.counter(1)
    out = w.ok(w.host, "steps/import", {"markdown": "A\n---\nB"})
    assert not out.deferred
    assert sends(out) == [
        (1, "steps/load", [
            {"name": "1", "content": "A<br>", "language": "html", "type": "exercise"},
            {"name": "2", "content": "B<br>", "language": "html", "type": "exercise"}],
         start + 1),
        (1, "alerts", {"message": "Tasks were imported successfully!", "type": "SUCCESS"},
         start + 2),
    ]
    assert Counted("imports", "markdown:ok") in out.actions
    assert w.room.steps == [] and w.counter(2) == 0  # students see nothing


def test_markdown_import_failure_actions() -> None:
    w = World()
    start = w.counter(1)
    out = w.err(w.host, "steps/import", {"markdown": "\n\n"}, "import_failed")
    assert out.error is not None
    assert sends(out) == [(1, "alerts", {"message": out.error.message, "type": "ERROR"},
                           start + 1)]
    assert Counted("imports", "markdown:failed") in out.actions
    assert w.room.draft is None


def test_notion_import_is_deferred_and_exclusive() -> None:
    w = World()
    out = w.ok(w.host, "steps/import", {"url": "https://www.notion.so/x-" + "a" * 32})
    assert out.deferred
    assert [a for a in out.actions if isinstance(a, StartImport)] == [
        StartImport(w.room_id, "https://www.notion.so/x-" + "a" * 32)]
    assert w.room.importing
    for data in ({"markdown": "x"}, {"url": "https://www.notion.so/" + "b" * 32}):
        out = w.err(w.host, "steps/import", data, "import_failed")
        assert out.error is not None and out.error.message == "An import is already running"
        assert out.actions == []
    # The background result comes back through import_done.
    failed = w.hub.import_done(w.room_id, ImportFailure("Could not connect to Notion"),
                               now=w.now, entropy=w.entropy)
    assert failed.error is not None and failed.error.code == "import_failed"
    assert failed.error.message == "Could not connect to Notion"
    assert [(e, d) for _, e, d, _ in sends(failed)] == [
        ("alerts", {"message": "Could not connect to Notion", "type": "ERROR"})]
    assert not w.room.importing and w.room.draft is None
    w.ok(w.host, "steps/import", {"url": "https://www.notion.so/" + "c" * 32})
    steps = [{"name": "1", "content": "x", "language": "html", "type": "exercise"}]
    done = w.hub.import_done(w.room_id, steps, now=w.now, entropy=w.entropy)
    assert done.error is None
    assert [e for _, e, _, _ in sends(done)] == ["steps/load", "alerts"]
    assert w.room.draft == steps and not w.room.importing
    # A result for a room that is gone is dropped.
    assert w.hub.import_done(12345678, steps, now=w.now, entropy=w.entropy).actions == []


@pytest.mark.parametrize("event", ["sharing/start", "message/to_client", "exercise/feedback"])
def test_removed_student_is_not_found(event: str) -> None:
    w = World("Ann")
    w.ok(w.students[0], "room/leave", {})
    data = {"user_id": 2, "content": "x", "accepted": True}
    assert w.err(w.host, event, data, "user_not_found").actions == []


def test_name_taken_failure_reply_only() -> None:
    w = World("Ann")
    out = w.err(Session(ip="y"), "room/join", {"room_id": w.room_id, "name": "ANN"},
                "name_taken")
    assert [type(a) for a in out.actions] == [Reply]


def test_seeded_entropy_is_deterministic_and_well_formed() -> None:
    import re

    from relay.core.ids import SeededEntropy

    a, b = SeededEntropy(b"k" * 16), SeededEntropy(b"k" * 16)
    tokens = [a.token() for _ in range(5)]
    assert tokens == [b.token() for _ in range(5)]
    assert len(set(tokens)) == 5
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{22}", t) for t in tokens)
    assert all(10_000_000 <= a.room_id() <= 99_999_999 for _ in range(100))
    assert re.fullmatch(r"Guest\d{10}", a.guest_name())
    assert SeededEntropy(b"x" * 16).token() != SeededEntropy(b"y" * 16).token()


def test_iso_now_formats_like_datetime_including_rounding_edges() -> None:
    """The cached per-second prefix gives exactly what ``datetime.fromtimestamp`` gives,
    also where rounding to microseconds carries into the next second."""
    import datetime as dt
    import random

    from relay.core.stats import iso_now

    def reference(wall: float) -> str:
        when = dt.datetime.fromtimestamp(wall, dt.UTC)
        return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"

    rng = random.Random(5)
    walls = [rng.uniform(0, 4e9) for _ in range(20_000)]
    walls += [int(w) + 0.9999995 + rng.uniform(-2e-6, 2e-6) for w in walls[:2000]]
    walls += [0.0, 1.9999995, 1.9999994, 1e9 + 0.9999996, 12.0000004]
    walls.sort()  # consecutive calls within one second use the cached prefix
    assert [iso_now(w) for w in walls] == [reference(w) for w in walls]


# -- timers through the injected clock ------------------------------------------------------
def test_idle_expiry_by_the_injected_clock() -> None:
    """§4.5 through ``Hub.expire(now)``: a room with an online participant never expires;
    once the last one goes offline it is removed at the expiry, not a moment before."""
    w = World("Ann")
    limit = w.hub.settings.room_idle_expiry
    assert w.hub.expire(w.now + 10 * limit) == [] and w.room_id in w.hub.rooms
    w.hub.disconnect(w.host, now=w.now, entropy=w.entropy)
    assert w.hub.expire(w.now + 10 * limit) == []  # Ann is still online
    gone = w.now + 5.0
    w.hub.disconnect(w.students[0], now=gone, entropy=w.entropy)
    assert w.hub.expire(gone + limit - 0.001) == [] and w.room_id in w.hub.rooms
    assert w.hub.expire(gone + limit) != []
    assert w.room_id not in w.hub.rooms


def test_failed_joins_leave_the_window_by_the_injected_clock() -> None:
    """§4.3: failures count over a sliding 60 s window of the time each event is given."""
    w = World()
    missing = 10_000_000 if w.room_id != 10_000_000 else 10_000_001
    limit = w.hub.settings.join_failure_limit
    guesser = Session(ip="10.9.9.9")
    for i in range(limit):
        w.now = WALL + i  # one failure a second
        w.err(guesser, "room/join", {"room_id": missing}, "room_not_found")
    w.now = WALL + 59.9  # all of them within the window: blocked, even for the right room
    w.err(guesser, "room/join", {"room_id": w.room_id, "name": "G"}, "rate_limited")
    w.now = WALL + 60.5  # the first failure left the window
    w.hub.expire(w.now)
    w.ok(guesser, "room/join", {"room_id": w.room_id, "name": "G"})
