"""The seed chat app's directory ("Convo!", ``yjl450/networking-project``; protocol §9.10).

A sans-IO core in the manner of h11/wsproto: ``Directory`` takes one command (a client event,
a disconnect or a timer tick) with the time and an ``Entropy`` and returns the actions to
carry out (``Emit``, ``Fail``). The Trio shell owns the Socket.IO sessions, routes the six
chat events here, delivers the actions and calls ``tick`` at ``next_deadline()``.

Interpretations
---------------
Decisions where §9.10 is silent (each has a test in ``tests/test_chat_*.py``):

1. **Login payload.** ``login`` whose payload is not an object, or whose ``username`` is
   missing or not a string, fails with ``invalid_payload`` (no ``login-response``): "bad
   name" is read as a string that breaks the name rules. A string that breaks them (empty
   after trimming, over 32 characters, not printable) gets ``result: "invalid"``.
2. **The ``username`` echoed** in every ``login-response`` is the trimmed name, i.e. the name
   the server judged and, on success, stored (the front end keeps the echoed name).
3. **``duplicate``'s ``userid``** is the session's own id when it is logged in (it tried to
   rename itself to a name another user holds; it stays logged in under its old name), and
   ``null`` when it is not. ``invalid`` always says ``userid: null``, also for a logged-in
   session, which likewise keeps its old name and id.
4. **Logging in again with the same name** (exactly) answers ``success`` with the same id;
   only that session is owed a ``contact``. A change of case only (``bob`` → ``Bob``) is a
   rename: the name is stored as given and everyone gets a ``contact``.
5. **A rename** sends no ``update_group``; the next ``contact`` shows the new name in
   ``person`` and in every group's member map.
6. **Full directory.** A login that would add user 10,001 fails with ``too_large``; the check
   comes after the name check and before the duplicate check (§0.1: payload, then state).
   Renames of logged-in users are not limited.
7. **Chat session.** A session becomes a chat session when it gets its first
   ``login-response`` (success, duplicate or invalid); a failed ``login`` (``Fail``) leaves
   it unbound, since a failed event changes nothing. It stays a chat session after
   ``logout`` (it may log in again, with a new id) until it disconnects.
8. **User ids** are base64url of 15 CSPRNG bytes (20 characters), redrawn if equal to a
   logged-in user's id or to the key of any session the directory knows.
9. **Group ids** are ``f"{n:010d}"`` for ``n`` uniform in [0, 10**10): a leading zero is
   possible, never a ``-``. They are never reused during the directory's life (a set of
   every id drawn is kept). Browsers order object keys that are array indices (decimal
   numbers below 2**32 - 1 without a leading zero) numerically, so the front end may list
   groups in numeric rather than creation order; user ids (20 characters) never are.
10. **Unknown ``receiver``**: ``user_not_found`` when it is 20 characters long (the front
    end's own test for a person), else ``group_not_found``. A ``receiver`` equal to one's
    own id is ``user_not_found``.
11. **Message text** is delivered as sent (not trimmed; whitespace-only text is allowed).
    Text that cannot be encoded as UTF-8 (a lone surrogate) is ``invalid_payload``.
12. **``create_group``.** The sender's own id may or may not be a key of ``member`` (the
    front end includes it); the sender is always first, then the other keys in payload
    order. Values are ignored whatever their type. More than 100 members in all →
    ``too_large``; fewer than 2 → ``invalid_payload``; the 1,001st group → ``too_large``.
    Check order: payload (``member`` an object, size), ``forbidden``, ``user_not_found``,
    group count.
13. **``join_group``** into a full group (100 members) → ``too_large``. A join by a member is
    a success that sends nothing (no error, no ``contact``).
14. **``logout``** needs ``{sender}`` equal to one's own id (``invalid_payload`` /
    ``forbidden``), like every other ``sender``. Its ``delete_group`` events go to the
    leaver too, as ``leave_group``'s do; its ``update_group`` events go to the remaining
    members only. The logged-out session gets no ``contact`` afterwards (it is no longer
    logged in). **Disconnect** sends nothing to the disconnected session: its
    ``delete_group`` goes to the one remaining member only.
15. **Group order on logout** is the order in which the user joined its groups.
16. **Recipient order**: ``update_group`` to the members in joining order; a group
    ``message`` to the other members in joining order; ``contact`` to the logged-in sessions
    in login order.
17. **``contact`` pacing** (§9.10 allows sharing within 100 ms): one window for the whole
    directory. The first change after a quiet 100 ms is announced at once, in the same
    action list, after the event's own frames; later changes wait until 100 ms after the
    last ``contact`` and then share one, emitted by ``tick`` (or by any later command once
    due). Each session thus gets at most one ``contact`` per 100 ms and every change is
    announced at most 100 ms after it happened. A ``now`` earlier than the last ``contact``
    (the wall clock stepped back) ends the window at once.
18. **Messages and events never wait** for the pacer; only ``contact`` is paced. A failed
    event never carries a due ``contact`` (it sends nothing but its ``error``, §0.1); a
    successful one, even one that changes nothing (a ``message``, a repeated join), may
    carry it after its own frames.
19. **Replication.** Users, groups and ids depend only on the ``handle``/``disconnect``
    commands and their entropy, never on ``now`` or ``tick``; only the pacing does. A
    failed command draws no entropy and changes nothing, so it need not be logged.
"""

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
from .directory import (
    CHAT_EVENTS,
    CONTACT_WINDOW,
    MAX_GROUPS,
    MAX_MEMBERS,
    MAX_MESSAGE_CHARS,
    MAX_USERS,
    Directory,
)
from .entropy import Entropy, SeededEntropy, SystemEntropy
from .rules import MAX_NAME_CHARS

__all__ = [
    "CHAT_EVENTS",
    "CONTACT_WINDOW",
    "FORBIDDEN",
    "GROUP_NOT_FOUND",
    "INVALID_PAYLOAD",
    "MAX_GROUPS",
    "MAX_MEMBERS",
    "MAX_MESSAGE_CHARS",
    "MAX_NAME_CHARS",
    "MAX_USERS",
    "NOT_IN_ROOM",
    "TOO_LARGE",
    "UNKNOWN_EVENT",
    "USER_NOT_FOUND",
    "Action",
    "Directory",
    "Emit",
    "Entropy",
    "Fail",
    "SeededEntropy",
    "SystemEntropy",
]
