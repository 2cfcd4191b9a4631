"""Random sessions against the directory (hypothesis ``RuleBasedStateMachine``).

The machine drives the directory the way the shell will (ticking at every passed deadline
before a command), checks the invariants after every step, and at the end replays the whole
command log on a fresh directory with the same ``now`` and seeds: the actions and the state
must come out identical.
"""

from __future__ import annotations

import re
from typing import Any

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from relay.chat import CONTACT_WINDOW, Action, Directory, Emit, Fail, SeededEntropy

USER_ID = re.compile(r"[A-Za-z0-9_-]{20}")
GROUP_ID = re.compile(r"[0-9]{10}")
EPS = 1e-9

#: Session keys; one is shaped like a user id, to catch confusion of the two.
SESSIONS = ["s0", "s1", "s2", "s3", "s4", "AAAAAAAAAAAAAAAAAAAA"]
NAMES = ["alice", "Alice", " bob ", "bob", "carol", "ß", "SS", "", "   ", "x" * 33, "tab\t", "Dave"]
JUNK: list[Any] = [None, 7, "HUGE_INT", 1.5, True, [], {}, [[[[[]]]]], "", "nope", "0000000000"]
#: Stand-ins drawn by name (so that failure reports stay readable) and expanded when used.
EXPAND: dict[str, Any] = {"HUGE_INT": 10**400, "TOO_LONG": "x" * 10_001}


def expand(value: Any) -> Any:
    return EXPAND.get(value, value) if isinstance(value, str) else value


EVENTS = ["login", "message", "create_group", "join_group", "leave_group", "logout", "other"]

Command = tuple[str, tuple[Any, ...], float, bytes]  # (kind, args, now, seed)


def run(d: Directory, command: Command) -> list[Action]:
    kind, args, now, seed = command
    entropy = SeededEntropy(seed)
    if kind == "handle":
        session, event, data = args
        return d.handle(session, event, data, now=now, entropy=entropy)
    if kind == "disconnect":
        return d.disconnect(args[0], now=now, entropy=entropy)
    return d.tick(now)


def expected_contact(snap: dict[str, Any]) -> dict[str, Any]:
    """The contact payload rebuilt from the snapshot, independently of the directory's cache."""
    names = {uid: name for uid, name, _, _ in snap["users"]}
    return {
        "person": {uid: {uid: name} for uid, name in names.items()},
        "group": {gid: {m: names[m] for m in members} for gid, members in snap["groups"].items()},
    }


class ChatMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.d = Directory(max_users=5, max_groups=4, max_members=4, contact_window=CONTACT_WINDOW)
        self.now = 0.0
        self.log: list[Command] = []
        self.results: list[list[Action]] = []
        self.ids: list[str] = []  # every user id ever answered, in order
        self.gids: list[str] = []  # every group id ever created, in order
        self.last_contact: dict[str, tuple[float, Any]] = {}
        self.awaiting: dict[
            str, float
        ] = {}  # session -> time of its oldest answer not yet followed by a contact
        self.ever_logged_in: set[str] = set()

    # ----------------------------------------------------------------- plumbing

    def _exec(self, kind: str, args: tuple[Any, ...]) -> list[Action]:
        # The shell ticks at every deadline that has passed before running a command.
        deadline = self.d.next_deadline()
        while kind != "tick" and deadline is not None and deadline <= self.now:
            self._apply(("tick", (), deadline, b""))
            deadline = self.d.next_deadline()
        seed = len(self.log).to_bytes(4, "big")
        return self._apply((kind, args, self.now, seed))

    def _apply(self, command: Command) -> list[Action]:
        kind, args, now, _ = command
        before = self.d.snapshot()
        actions = run(self.d, command)
        self.log.append(command)
        self.results.append(actions)
        logged_in = self._logged_in()
        if any(isinstance(a, Fail) for a in actions):
            event(f"failed {actions[0].code}")  # type: ignore[union-attr]
            assert len(actions) == 1
            assert actions[0].session == args[0]  # type: ignore[union-attr]
            assert self.d.snapshot() == before  # a failed event changes nothing
            return actions
        for a in actions:
            assert isinstance(a, Emit)
            assert a.sessions and len(set(a.sessions)) == len(a.sessions)
            if kind == "disconnect":
                assert args[0] not in a.sessions
            if a.event == "login-response":
                assert a.sessions == (args[0],)
            elif a.event == "delete_group" and kind == "handle" and args[1] == "logout":
                assert set(a.sessions) <= logged_in | {args[0]}
            else:  # contact, message, update_group, delete_group: logged-in sessions only
                assert set(a.sessions) <= logged_in, (a, logged_in)
            self._observe(a, now)
        for s in list(self.awaiting):  # logged out: owed nothing any more
            if s not in logged_in:
                del self.awaiting[s]
        return actions

    def _observe(self, a: Emit, now: float) -> None:
        event(f"emitted {a.event}")  # coverage: --hypothesis-show-statistics
        if a.event == "login-response" and a.data["result"] == "success":
            uid = a.data["userid"]
            if uid not in self.ids:
                self.ids.append(uid)
            self.ever_logged_in.add(a.sessions[0])
        if a.event == "update_group" and a.data["groupid"] not in self.gids:
            self.gids.append(a.data["groupid"])
        if a.event == "contact":
            assert a.data == expected_contact(self.d.snapshot())  # the state after the change
            for s in a.sessions:
                previous = self.last_contact.get(s)
                if previous is not None:
                    assert now - previous[0] >= CONTACT_WINDOW - EPS  # one per window
                since = self.awaiting.pop(s, None)
                if since is not None:
                    assert now - since <= CONTACT_WINDOW + EPS  # never late
                self.last_contact[s] = (now, a.data)
        elif a.event in ("update_group", "delete_group") or (
            a.event == "login-response" and a.data["result"] == "success"
        ):  # an answer that changed something; invalid/duplicate change nothing
            for s in a.sessions:
                if self.d.user_id(s) is not None:
                    self.awaiting.setdefault(s, now)

    def _logged_in(self) -> set[str]:
        return {s for s in SESSIONS if self.d.user_id(s) is not None}

    def _pick(self, data: st.DataObject, session: str, *, own_first: bool = False) -> Any:
        """An id-like value: the session's own id (often), another id, a group id, junk."""
        own = self.d.user_id(session)
        others: list[Any] = [*self.ids, *self.gids, *JUNK, session]
        if own_first and own is not None and data.draw(st.booleans()):
            return own
        return expand(data.draw(st.sampled_from([own or "s0", *others])))

    # -------------------------------------------------------------------- rules

    @rule(dt=st.sampled_from([0.0, 0.001, 0.03, 0.099, 0.1, 0.15, 1.0]))
    def time_passes(self, dt: float) -> None:
        # The shell's timer fires at every deadline on the way.
        target = self.now + dt
        deadline = self.d.next_deadline()
        while deadline is not None and deadline <= target:
            self.now = max(self.now, deadline)
            self._exec("tick", ())
            deadline = self.d.next_deadline()
        self.now = target

    @rule(session=st.sampled_from(SESSIONS), name=st.sampled_from(NAMES))
    def login(self, session: str, name: str) -> None:
        self._exec("handle", (session, "login", {"username": name}))

    @rule(
        session=st.sampled_from(SESSIONS),
        data=st.data(),
        text=st.sampled_from(["hi", "", " ", "TOO_LONG"]),
    )
    def message(self, session: str, data: st.DataObject, text: str) -> None:
        payload = {
            "sender": self._pick(data, session, own_first=True),
            "receiver": self._pick(data, session),
            "message": expand(text),
        }
        self._exec("handle", (session, "message", payload))

    @rule(session=st.sampled_from(SESSIONS), data=st.data())
    def create_group(self, session: str, data: st.DataObject) -> None:
        own = self.d.user_id(session)
        sender = self._pick(data, session, own_first=True)
        keys = data.draw(
            st.lists(st.sampled_from([*self.ids, *self.gids, "s1", own or "x"]), max_size=5)
        )
        member = {k: expand(data.draw(st.sampled_from(JUNK))) for k in keys}
        self._exec("handle", (session, "create_group", {"sender": sender, "member": member}))

    @rule(
        session=st.sampled_from(SESSIONS),
        data=st.data(),
        event=st.sampled_from(["join_group", "leave_group"]),
    )
    def join_or_leave(self, session: str, data: st.DataObject, event: str) -> None:
        sender = self._pick(data, session, own_first=True)
        use_known = data.draw(st.booleans())
        if self.gids and use_known:
            gid = data.draw(st.sampled_from(self.gids))
        else:
            gid = self._pick(data, session)
        self._exec("handle", (session, event, {"groupid": gid, "sender": sender}))

    @rule(session=st.sampled_from(SESSIONS), data=st.data())
    def logout(self, session: str, data: st.DataObject) -> None:
        sender = self._pick(data, session, own_first=True)
        self._exec("handle", (session, "logout", {"sender": sender}))

    # Well-formed commands, so that the random walk reaches groups and messages often.

    @rule(session=st.sampled_from(SESSIONS), n=st.integers(0, 9))
    def login_well(self, session: str, n: int) -> None:
        self._exec("handle", (session, "login", {"username": f"User {n}"}))

    @rule(session=st.sampled_from(SESSIONS), data=st.data())
    def create_group_well(self, session: str, data: st.DataObject) -> None:
        own = self.d.user_id(session)
        others = sorted(s for s in self._logged_in() if s != session)
        if own is None or not others:
            return
        chosen = data.draw(st.lists(st.sampled_from(others), min_size=1, max_size=4, unique=True))
        member = {own: "me"} | {self.d.user_id(s): "?" for s in chosen}
        self._exec("handle", (session, "create_group", {"sender": own, "member": member}))

    @rule(
        session=st.sampled_from(SESSIONS),
        data=st.data(),
        event=st.sampled_from(["join_group", "leave_group"]),
    )
    def join_or_leave_well(self, session: str, data: st.DataObject, event: str) -> None:
        groups = sorted(self.d.snapshot()["groups"])
        own = self.d.user_id(session)
        if own is None or not groups:
            return
        gid = data.draw(st.sampled_from(groups))
        self._exec("handle", (session, event, {"groupid": gid, "sender": own}))

    @rule(session=st.sampled_from(SESSIONS), data=st.data())
    def message_well(self, session: str, data: st.DataObject) -> None:
        own = self.d.user_id(session)
        if own is None:
            return
        snap = self.d.snapshot()
        targets = [u[0] for u in snap["users"] if u[0] != own]
        targets += [gid for gid, members in snap["groups"].items() if own in members]
        if not targets:
            return
        receiver = data.draw(st.sampled_from(targets))
        self._exec(
            "handle", (session, "message", {"sender": own, "receiver": receiver, "message": "hi"})
        )

    @rule(session=st.sampled_from(SESSIONS))
    def disconnect(self, session: str) -> None:
        self._exec("disconnect", (session,))

    @rule(
        session=st.sampled_from(SESSIONS),
        event=st.sampled_from(EVENTS),
        payload=st.sampled_from(JUNK),
    )
    def junk(self, session: str, event: str, payload: Any) -> None:
        self._exec("handle", (session, event, expand(payload)))

    @precondition(lambda self: self.d.next_deadline() is not None)
    @rule()
    def tick_at_deadline(self) -> None:
        deadline = self.d.next_deadline()
        assert deadline is not None
        self.now = max(self.now, deadline)
        self._exec("tick", ())

    # --------------------------------------------------------------- invariants

    @invariant()
    def directory_is_consistent(self) -> None:
        snap = self.d.snapshot()
        users = snap["users"]
        uids = [u[0] for u in users]
        assert len(set(uids)) == len(uids)
        for uid, _, session, groups in users:
            assert USER_ID.fullmatch(uid) and uid not in SESSIONS
            assert snap["sessions"][session] == uid
            for gid in groups:
                assert uid in snap["groups"][gid]
        names = [u[1].casefold() for u in users]
        assert len(set(names)) == len(names)
        by_id = {u[0]: u for u in users}
        for gid, members in snap["groups"].items():
            assert GROUP_ID.fullmatch(gid) and gid in snap["used_group_ids"]
            assert 2 <= len(members) <= 4 and len(set(members)) == len(members)
            for m in members:
                assert m in by_id and gid in by_id[m][3]
        assert (
            self.d.user_count == len(users) <= 5 and self.d.group_count == len(snap["groups"]) <= 4
        )
        assert len(self.gids) == len(set(self.gids)) == len(snap["used_group_ids"])
        assert self._logged_in() == {u[2] for u in users}
        # an answer still waiting for its contact is due within the window
        deadline = self.d.next_deadline()
        for since in self.awaiting.values():
            assert deadline is not None and deadline <= since + CONTACT_WINDOW + EPS

    def teardown(self) -> None:
        deadline = self.d.next_deadline()
        if deadline is not None:
            self.now = max(self.now, deadline)
            self._exec("tick", ())
        assert self.d.next_deadline() is None and not self.awaiting
        state = self.d.contact_payload()
        assert state == expected_contact(self.d.snapshot())
        for s in self._logged_in():
            assert self.last_contact[s][1] == state  # every view ends equal to the directory
        assert set(self.last_contact) <= self.ever_logged_in  # never to a session before login
        # determinism: the same commands with the same now and seeds rebuild everything
        replica = Directory(max_users=5, max_groups=4, max_members=4)
        for command, actions in zip(self.log, self.results, strict=True):
            assert run(replica, command) == actions
        assert replica.snapshot() == self.d.snapshot()
        assert replica.contact_payload() == state


ChatMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=80,
    deadline=None,
    database=None,  # no example database in the shared tree
    suppress_health_check=[HealthCheck.too_slow],
)
TestChatMachine = ChatMachine.TestCase
