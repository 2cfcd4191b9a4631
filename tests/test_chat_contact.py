"""``contact`` coalescing: O(N) deliveries for a burst of N logins, never stale, never late."""

from __future__ import annotations

from collections import Counter, defaultdict
from itertools import pairwise
from typing import Any

import pytest

from relay.chat import CONTACT_WINDOW, Action, Directory, Emit, SeededEntropy
from tests.test_chat_helpers import Chat, contact_counts


class Shell:
    """Drives a directory the way the Trio shell will: ticks at every deadline that passed.

    Records every delivery with its time, so tests can check what each session saw and when.
    """

    def __init__(self) -> None:
        self.d = Directory()
        self.entropy = SeededEntropy(b"shell")
        self.log: list[tuple[float, str, str, Any]] = []  # (time, session, event, data)
        self.frames = 0
        self.gone: set[str] = set()  # sessions that logged in once and are gone now

    def _record(self, now: float, actions: list[Action]) -> None:
        for a in actions:
            assert isinstance(a, Emit), a
            self.frames += 1
            self.log.extend((now, s, a.event, a.data) for s in a.sessions)

    def advance(self, now: float) -> None:
        deadline = self.d.next_deadline()
        while deadline is not None and deadline <= now:
            self._record(deadline, self.d.tick(deadline))
            deadline = self.d.next_deadline()

    def send(self, now: float, session: str, event: str, data: Any) -> list[Action]:
        self.advance(now)
        actions = self.d.handle(session, event, data, now=now, entropy=self.entropy)
        self._record(now, actions)
        return actions

    def drop(self, now: float, session: str) -> None:
        self.advance(now)
        self._record(now, self.d.disconnect(session, now=now, entropy=self.entropy))
        self.gone.add(session)

    def finish(self) -> None:
        deadline = self.d.next_deadline()
        if deadline is not None:
            self.advance(deadline)
        assert self.d.next_deadline() is None

    def contacts(self) -> list[tuple[float, str, Any]]:
        return [(t, s, data) for t, s, e, data in self.log if e == "contact"]

    def last_contact(self) -> dict[str, Any]:
        last: dict[str, Any] = {}
        for _, s, data in self.contacts():
            last[s] = data
        return last

    def check_final_views(self) -> None:
        """Every logged-in session's last contact is the directory's state; no one else got one."""
        state = self.d.contact_payload()
        last = self.last_contact()
        logged_in = {s for s, uid in self.d.snapshot()["sessions"].items() if uid is not None}
        assert {self.d.user_id(s) for s in logged_in} == set(state["person"])
        assert set(last) <= logged_in | self.gone
        for session in logged_in:
            assert last[session] == state, session


def test_burst_of_2000_logins_costs_linear_contact_deliveries() -> None:
    n = 2000
    shell = Shell()
    for i in range(n):
        shell.send(10.0 + i * 1e-5, f"s{i}", "login", {"username": f"user{i}"})
    shell.finish()
    contacts = shell.contacts()
    per_session = contact_counts([Emit((s,), "contact", None) for _, s, _ in contacts])
    # the first login's contact went out at once; every later one shares the window's contact
    assert len(contacts) <= 2 * n, len(contacts)  # N² would be 2,001,000
    assert max(per_session.values()) <= 2
    assert set(per_session) == {f"s{i}" for i in range(n)}
    assert shell.frames == n + 2  # n login-responses and two contact frames
    shell.check_final_views()
    assert len(shell.d.contact_payload()["person"]) == n


def test_logins_spread_over_ten_seconds_get_one_contact_per_session_per_window() -> None:
    shell = Shell()
    n = 2000
    for i in range(n):
        shell.send(i * 10.0 / n, f"s{i}", "login", {"username": f"u{i}"})
    shell.finish()
    times: dict[str, list[float]] = defaultdict(list)
    for t, s, _ in shell.contacts():
        times[s].append(t)
    for s, ts in times.items():
        gaps = [b - a for a, b in pairwise(ts)]
        assert all(g >= CONTACT_WINDOW - 1e-9 for g in gaps), s
    windows = 10.0 / CONTACT_WINDOW + 2
    assert len(shell.contacts()) <= windows * n  # ~ windows x N/2, far below N²/2 for N/window
    assert shell.frames <= n + windows
    shell.check_final_views()


def test_every_answer_is_followed_by_a_contact_that_includes_it_within_the_window() -> None:
    """After each login-response / update_group / delete_group, the session's next contact
    arrives at most 100 ms later and shows the change."""
    shell = Shell()
    t = 100.0
    ids: dict[str, str] = {}
    for i in range(6):
        t += 0.013
        actions = shell.send(t, f"s{i}", "login", {"username": f"u{i}"})
        ids[f"s{i}"] = actions[0].data["userid"]  # type: ignore[union-attr]
    t += 0.02
    shell.send(t, "s0", "create_group", {"sender": ids["s0"], "member": {ids["s1"]: ""}})
    gid = next(d["groupid"] for _, _, e, d in shell.log if e == "update_group")
    t += 0.02
    shell.send(t, "s2", "join_group", {"groupid": gid, "sender": ids["s2"]})
    t += 0.02
    shell.send(t, "s1", "leave_group", {"groupid": gid, "sender": ids["s1"]})
    t += 0.02
    shell.send(t, "s2", "leave_group", {"groupid": gid, "sender": ids["s2"]})  # deletes it
    t += 0.02
    shell.send(t, "s3", "login", {"username": "renamed"})
    shell.drop(t + 0.01, "s4")
    shell.finish()

    checked: Counter[str] = Counter()
    for index, (when, session, event, data) in enumerate(shell.log):
        if event not in ("login-response", "update_group", "delete_group"):
            continue
        rest = shell.log[index + 1 :]
        later = [
            (t2, i2) for i2, (t2, s2, e2, _) in enumerate(rest) if s2 == session and e2 == "contact"
        ]
        assert later, (event, session)
        t2, i2 = later[0]
        assert t2 - when <= CONTACT_WINDOW + 1e-9
        view = rest[i2][3]
        # the contact shows this change unless a later change of the same thing came first
        # (the same action's other recipients share its data object, so they are skipped)
        between = [(e3, d3) for _, _, e3, d3 in rest[:i2] if d3 is not data]
        if event == "login-response":
            uid = data["userid"]
            renamed = any(e3 == "login-response" and d3["userid"] == uid for e3, d3 in between)
            if not renamed:
                assert view["person"][uid] == {uid: data["username"]}
                checked[event] += 1
        else:
            gid = data["groupid"]
            touched = any(
                e3 in ("update_group", "delete_group") and d3["groupid"] == gid
                for e3, d3 in between
            )
            if touched:
                continue
            if event == "update_group":
                assert view["group"][gid] == data["member"]
            else:
                assert gid not in view["group"]
            checked[event] += 1
    assert checked["login-response"] >= 6 and checked["update_group"] >= 2, checked
    assert checked["delete_group"] == 2, checked
    shell.check_final_views()


def test_first_change_after_a_quiet_window_is_announced_at_once() -> None:
    c = Chat()
    c.login("s1", "A", at=0.0)
    actions = c.send("s2", "login", {"username": "B"}, at=0.05)
    assert [a.event for a in actions if isinstance(a, Emit)] == ["login-response"]
    assert c.d.next_deadline() == pytest.approx(0.1)
    assert c.tick(0.099) == []
    flushed = c.tick(0.1)
    assert flushed == [Emit(("s1", "s2"), "contact", c.d.contact_payload())]
    assert c.d.next_deadline() is None
    assert c.tick(0.5) == []
    # quiet for a whole window: the next change goes out in the same action list
    actions = c.send("s3", "login", {"username": "C"}, at=0.2)
    assert [a.event for a in actions if isinstance(a, Emit)] == ["login-response", "contact"]


def test_any_later_command_flushes_a_due_contact_after_its_own_frames() -> None:
    c = Chat()
    a = c.login("s1", "A", at=0.0)
    b = c.login("s2", "B", at=0.01)
    actions = c.send("s1", "message", {"sender": a, "receiver": b, "message": "m"}, at=0.3)
    assert [(x.event, x.sessions) for x in actions if isinstance(x, Emit)] == [
        ("message", ("s2",)),
        ("contact", ("s1", "s2")),
    ]


def test_same_name_login_inside_a_window_owes_a_contact_to_its_sender_only() -> None:
    c = Chat()
    c.login("s1", "A", at=0.0)
    c.login("s2", "B", at=1.0)
    actions = c.send("s2", "login", {"username": "B"}, at=1.05)
    assert [x.event for x in actions if isinstance(x, Emit)] == ["login-response"]
    assert c.tick(1.1) == [Emit(("s2",), "contact", c.d.contact_payload())]


def test_a_session_that_logs_out_before_the_flush_gets_no_contact() -> None:
    c = Chat()
    a = c.login("s1", "A", at=0.0)
    c.login("s2", "B", at=0.01)
    c.send("s1", "login", {"username": "A"}, at=0.02)  # owed
    c.send("s1", "logout", {"sender": a}, at=0.03)
    c.drop("s2", at=0.04)
    assert c.tick(0.1) == []
    assert c.d.next_deadline() is None


def test_a_backward_clock_step_does_not_stall_the_contact() -> None:
    c = Chat()
    c.login("s1", "A", at=1000.0)
    actions = c.send("s2", "login", {"username": "B"}, at=10.0)  # the wall clock stepped back
    assert [x.event for x in actions if isinstance(x, Emit)] == ["login-response", "contact"]


def test_emitted_contact_payloads_are_never_mutated_afterwards() -> None:
    c = Chat()
    a = c.login("s1", "A")
    b = c.login("s2", "B")
    first = c.send("s3", "login", {"username": "C"})[-1]
    assert isinstance(first, Emit) and first.event == "contact"
    frozen = repr(first.data)
    gid = c.group("s1", a, b)
    c.send("s1", "login", {"username": "A2"})
    c.send("s2", "leave_group", {"groupid": gid, "sender": b})
    c.drop("s3")
    assert repr(first.data) == frozen
