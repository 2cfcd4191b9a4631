"""The chat app's directory of users and groups (§9.10), sans-IO.

``Directory`` holds the logged-in users and the groups and turns each command — an event from
a session, a disconnect, or a timer tick — into an ordered list of actions (``Emit``/``Fail``).
It never reads a clock or a random source: ``now`` and an ``Entropy`` come with each command,
so replaying the same commands with the same ``now`` and entropy rebuilds exactly the same
state, ids and actions (the shell replicates the directory that way). Iteration orders are
those of ``dict`` insertion, never of a ``set``, so replays do not depend on string hashing.

Every handler checks everything before it changes anything and raises ``Refused`` for a
failure, so a failed event changes nothing (§0.1). The check order follows §0.1: binding
(``not_in_room``), then payload (``invalid_payload``/``too_large``), then state
(``forbidden``, ``user_not_found``, ``group_not_found``). The decisions where §9.10 is silent
are listed in the package docstring (``relay.chat``), section "Interpretations".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .actions import (
    FORBIDDEN,
    GROUP_NOT_FOUND,
    INVALID_PAYLOAD,
    NOT_IN_ROOM,
    TOO_LARGE,
    UNKNOWN_EVENT,
    USER_NOT_FOUND,
    Action,
    Emit,
    Fail,
)
from .entropy import Entropy, group_id_from, user_id_from
from .pacing import ContactPacer
from .rules import Refused, clean_name, require_object, require_str, require_text

MAX_USERS = 10_000
MAX_GROUPS = 1_000
MAX_MEMBERS = 100
MAX_MESSAGE_CHARS = 10_000
#: Changes closer together than this may share one ``contact`` (seconds).
CONTACT_WINDOW = 0.1
#: The chat app's client events; anything else is ``unknown_event``.
CHAT_EVENTS = frozenset({"login", "message", "create_group", "join_group", "leave_group", "logout"})
#: Draws before an id source is declared broken (a CSPRNG repeats with probability ~0).
_MAX_DRAWS = 64
#: Length of a user id; the front end tells people from groups by it.
_USER_ID_CHARS = 20


@dataclass(slots=True)
class _User:
    id: str
    name: str
    folded: str  # name.casefold(), the key of the uniqueness rule
    session: str
    view: dict[str, str]  # {id: name}: this user's entry of contact.person; replaced, never mutated
    groups: dict[str, None]  # group ids in joining order


@dataclass(slots=True)
class _Group:
    id: str
    members: dict[str, None]  # user ids in joining order, creator first
    view: dict[str, str] | None = None  # cached {id: name}; replaced, never mutated


_Handler = Callable[[str, Any, Entropy, list[Action]], None]


class Directory:
    """One server's chat users and groups; see the module docstring."""

    def __init__(
        self,
        *,
        max_users: int = MAX_USERS,
        max_groups: int = MAX_GROUPS,
        max_members: int = MAX_MEMBERS,
        max_message_chars: int = MAX_MESSAGE_CHARS,
        contact_window: float = CONTACT_WINDOW,
    ) -> None:
        self._max_users = max_users
        self._max_groups = max_groups
        self._max_members = max_members
        self._max_message_chars = max_message_chars
        self._users: dict[str, _User] = {}  # in login order
        self._sessions: dict[str, str | None] = {}  # every chat session -> its user id, if any
        self._names: dict[str, str] = {}  # folded name -> user id
        self._groups: dict[str, _Group] = {}  # in creation order
        self._used_group_ids: set[str] = set()  # never reused (only membership is tested)
        self._person: dict[str, dict[str, str]] = {}  # contact.person, kept up to date
        self._contact: dict[str, Any] | None = None  # the last built contact payload, if valid
        self._pacer = ContactPacer(contact_window)
        self._handlers: dict[str, _Handler] = {
            "login": self._login,
            "message": self._message,
            "create_group": self._create_group,
            "join_group": self._join_group,
            "leave_group": self._leave_group,
            "logout": self._logout,
        }

    # ----------------------------------------------------------------- commands

    def handle(
        self, session: str, event: str, data: object, *, now: float, entropy: Entropy
    ) -> list[Action]:
        """One client event from ``session``; ``data`` is any decoded JSON value."""
        handler = self._handlers.get(event)
        if handler is None:
            return [Fail(session, UNKNOWN_EVENT, "no such chat event", event)]
        out: list[Action] = []
        try:
            handler(session, data, entropy, out)
        except Refused as refused:
            return [Fail(session, refused.code, refused.message, event)]
        self._flush(now, out)
        return out

    def disconnect(self, session: str, *, now: float, entropy: Entropy) -> list[Action]:
        """The session ended: a logged-in user is logged out, without frames to ``session``.

        Draws nothing from ``entropy`` (kept for a uniform command signature). Safe for any
        session, chat or not; the directory forgets it either way.
        """
        uid = self._sessions.pop(session, None)
        if uid is None:
            return []
        out: list[Action] = []
        self._remove_user(self._users[uid], out, notify_leaver=False)
        self._sessions.pop(session, None)
        self._flush(now, out)
        return out

    def tick(self, now: float) -> list[Action]:
        """Emit the coalesced ``contact`` if its window has ended (call at ``next_deadline``)."""
        out: list[Action] = []
        self._flush(now, out)
        return out

    # ------------------------------------------------------------------ queries

    def next_deadline(self) -> float | None:
        """When ``tick`` should be called next, or ``None`` when no ``contact`` waits."""
        return self._pacer.deadline()

    def sessions(self) -> list[str]:
        """Every chat session the directory knows (to drop a dead node's, by key prefix)."""
        return list(self._sessions)

    def is_chat_session(self, session: str) -> bool:
        """Whether the session has become a chat session (it got a ``login-response``)."""
        return session in self._sessions

    def user_id(self, session: str) -> str | None:
        """The id of the user logged in on ``session``, if any."""
        return self._sessions.get(session)

    @property
    def user_count(self) -> int:
        """Logged-in users (the ``observer_chat_users`` gauge)."""
        return len(self._users)

    @property
    def group_count(self) -> int:
        """Groups (``observer_rooms{kind="chat_group"}``)."""
        return len(self._groups)

    def contact_payload(self) -> dict[str, Any]:
        """The ``contact`` payload of the current state (shared; do not mutate)."""
        if self._contact is None:
            groups = {gid: self._group_view(g) for gid, g in self._groups.items()}
            self._contact = {"person": dict(self._person), "group": groups}
        return self._contact

    def snapshot(self) -> dict[str, Any]:
        """The whole state as plain data, for replay checks and debugging."""
        return {
            "users": [(u.id, u.name, u.session, list(u.groups)) for u in self._users.values()],
            "sessions": dict(self._sessions),
            "groups": {gid: list(g.members) for gid, g in self._groups.items()},
            "used_group_ids": sorted(self._used_group_ids),
            "pacer": self._pacer.state(),
        }

    # ----------------------------------------------------------------- handlers

    def _login(self, session: str, data: Any, entropy: Entropy, out: list[Action]) -> None:
        raw = require_str(require_object(data), "username")
        uid = self._sessions.get(session)
        name = clean_name(raw)
        if name is None:
            self._sessions.setdefault(session, None)
            out.append(Emit((session,), "login-response", _login_answer(raw.strip(), "invalid")))
            return
        if uid is None and len(self._users) >= self._max_users:
            raise Refused(TOO_LARGE, f"the directory holds {self._max_users} users")
        folded = name.casefold()
        holder = self._names.get(folded)
        if holder is not None and holder != uid:
            self._sessions.setdefault(session, None)
            out.append(Emit((session,), "login-response", _login_answer(name, "duplicate", uid)))
            return
        if uid is None:
            uid = self._draw_user_id(session, entropy)
            user = _User(uid, name, folded, session, {uid: name}, {})
            self._users[uid] = user
            self._sessions[session] = uid
            self._names[folded] = uid
            self._person[uid] = user.view
            self._changed()
        elif self._users[uid].name != name:
            self._rename(self._users[uid], name, folded)
        else:
            self._pacer.owe(session)  # nothing changed for anyone else
        out.append(Emit((session,), "login-response", _login_answer(name, "success", uid)))

    def _message(self, session: str, data: Any, entropy: Entropy, out: list[Action]) -> None:
        uid = self._require_login(session)
        payload = require_object(data)
        sender = require_str(payload, "sender")
        receiver = require_str(payload, "receiver")
        text = require_text(payload, self._max_message_chars)
        _require_self(sender, uid)
        target = self._users.get(receiver)
        if target is not None:
            if receiver == uid:
                raise Refused(USER_NOT_FOUND, "cannot send a message to oneself")
            recipients: tuple[str, ...] = (target.session,)
        else:
            group = self._groups.get(receiver)
            if group is None:
                if len(receiver) == _USER_ID_CHARS:
                    raise Refused(USER_NOT_FOUND, "no such user")
                raise Refused(GROUP_NOT_FOUND, "no such group")
            if uid not in group.members:
                raise Refused(FORBIDDEN, "not a member of that group")
            users = self._users
            recipients = tuple(users[m].session for m in group.members if m != uid)
        delivered = {"sender": uid, "receiver": receiver, "message": text}
        out.append(Emit(recipients, "message", delivered))

    def _create_group(self, session: str, data: Any, entropy: Entropy, out: list[Action]) -> None:
        uid = self._require_login(session)
        payload = require_object(data)
        sender = require_str(payload, "sender")
        member = payload.get("member")
        if not isinstance(member, dict):
            raise Refused(INVALID_PAYLOAD, "member must be an object")
        if len(member) > self._max_members + 1:  # at most one key can be the sender
            raise Refused(TOO_LARGE, f"a group has at most {self._max_members} members")
        others = [key for key in member if key != uid]
        if 1 + len(others) > self._max_members:
            raise Refused(TOO_LARGE, f"a group has at most {self._max_members} members")
        if not others:
            raise Refused(INVALID_PAYLOAD, "a group needs at least 2 members")
        _require_self(sender, uid)
        for key in others:
            if key not in self._users:
                raise Refused(USER_NOT_FOUND, "a member is not a logged-in user")
        if len(self._groups) >= self._max_groups:
            raise Refused(TOO_LARGE, f"the directory holds {self._max_groups} groups")
        gid = self._draw_group_id(entropy)
        group = _Group(gid, dict.fromkeys([uid, *others]))
        self._groups[gid] = group
        self._used_group_ids.add(gid)
        for m in group.members:
            self._users[m].groups[gid] = None
        self._emit_update(group, tuple(group.members), out)
        self._changed()

    def _join_group(self, session: str, data: Any, entropy: Entropy, out: list[Action]) -> None:
        uid = self._require_login(session)
        payload = require_object(data)
        gid = require_str(payload, "groupid")
        _require_self(require_str(payload, "sender"), uid)
        group = self._require_group(gid)
        if uid in group.members:
            return
        if len(group.members) >= self._max_members:
            raise Refused(TOO_LARGE, f"a group has at most {self._max_members} members")
        group.members[uid] = None
        group.view = None
        self._users[uid].groups[gid] = None
        self._emit_update(group, tuple(group.members), out)
        self._changed()

    def _leave_group(self, session: str, data: Any, entropy: Entropy, out: list[Action]) -> None:
        uid = self._require_login(session)
        payload = require_object(data)
        gid = require_str(payload, "groupid")
        _require_self(require_str(payload, "sender"), uid)
        group = self._require_group(gid)
        if uid not in group.members:
            raise Refused(FORBIDDEN, "not a member of that group")
        self._leave(group, self._users[uid], out, notify_leaver=True)
        self._changed()

    def _logout(self, session: str, data: Any, entropy: Entropy, out: list[Action]) -> None:
        uid = self._require_login(session)
        _require_self(require_str(require_object(data), "sender"), uid)
        self._remove_user(self._users[uid], out, notify_leaver=True)

    # ------------------------------------------------------------------ helpers

    def _require_login(self, session: str) -> str:
        uid = self._sessions.get(session)
        if uid is None:
            raise Refused(NOT_IN_ROOM, "log in first")
        return uid

    def _require_group(self, gid: str) -> _Group:
        group = self._groups.get(gid)
        if group is None:
            raise Refused(GROUP_NOT_FOUND, "no such group")
        return group

    def _draw_user_id(self, session: str, entropy: Entropy) -> str:
        for _ in range(_MAX_DRAWS):
            uid = user_id_from(entropy)
            # Unique, and never a session key (the shell's keys may be the secret sids).
            if uid not in self._users and uid not in self._sessions and uid != session:
                return uid
        raise RuntimeError("the entropy source keeps repeating user ids")

    def _draw_group_id(self, entropy: Entropy) -> str:
        for _ in range(_MAX_DRAWS):
            gid = group_id_from(entropy)
            if gid not in self._used_group_ids:
                return gid
        raise RuntimeError("the entropy source keeps repeating group ids")

    def _group_view(self, group: _Group) -> dict[str, str]:
        view = group.view
        if view is None:
            users = self._users
            view = group.view = {m: users[m].name for m in group.members}
        return view

    def _emit_update(self, group: _Group, members: tuple[str, ...], out: list[Action]) -> None:
        users = self._users
        data = {"groupid": group.id, "member": self._group_view(group)}
        out.append(Emit(tuple(users[m].session for m in members), "update_group", data))

    def _leave(self, group: _Group, user: _User, out: list[Action], *, notify_leaver: bool) -> None:
        """``user`` leaves ``group``; a group left with one member is deleted."""
        gid = group.id
        del group.members[user.id]
        del user.groups[gid]
        group.view = None
        if len(group.members) > 1:
            self._emit_update(group, tuple(group.members), out)
            return
        del self._groups[gid]
        recipients = [user.session] if notify_leaver else []
        for m in group.members:
            remaining = self._users[m]
            del remaining.groups[gid]
            recipients.append(remaining.session)
        out.append(Emit(tuple(recipients), "delete_group", {"groupid": gid}))

    def _remove_user(self, user: _User, out: list[Action], *, notify_leaver: bool) -> None:
        """Logout: leave every group (with its events), then leave the directory."""
        for gid in list(user.groups):
            self._leave(self._groups[gid], user, out, notify_leaver=notify_leaver)
        del self._users[user.id]
        del self._person[user.id]
        del self._names[user.folded]
        self._sessions[user.session] = None
        self._changed()

    def _rename(self, user: _User, name: str, folded: str) -> None:
        """A logged-in session logs in again under another name: same id, new name."""
        del self._names[user.folded]
        self._names[folded] = user.id
        user.name, user.folded = name, folded
        user.view = self._person[user.id] = {user.id: name}
        for gid in user.groups:
            self._groups[gid].view = None
        self._changed()

    def _changed(self) -> None:
        self._contact = None
        self._pacer.changed()

    def _flush(self, now: float, out: list[Action]) -> None:
        """Append the pending ``contact`` if its window allows it at ``now``."""
        pacer = self._pacer
        if not pacer.due(now):
            return
        everyone, owed = pacer.take()
        if everyone:
            recipients = tuple(u.session for u in self._users.values())
        else:
            sessions = self._sessions  # defensive: a logout is a change, sent to everyone
            recipients = tuple(s for s in owed if sessions.get(s) is not None)
        if recipients:
            out.append(Emit(recipients, "contact", self.contact_payload()))
            pacer.sent(now)


def _require_self(sender: str, uid: str) -> None:
    if sender != uid:
        raise Refused(FORBIDDEN, "sender must be your own id")


def _login_answer(name: str, result: str, uid: str | None = None) -> dict[str, Any]:
    return {"username": name, "result": result, "userid": uid}
