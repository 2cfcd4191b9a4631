"""What the directory asks the shell to do: deliver events, or answer a failure.

The directory returns these in order; the shell carries them out in that order, so the
protocol's ordering rules (``login-response`` before ``contact``, group events before
``contact``) are decided here. Payload objects inside actions are never mutated after they
are returned, so the shell may encode them later, or once for many recipients, and several
actions may share one payload object.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Error codes the chat events can answer (§3.4, plus §9.11's ``group_not_found``).
UNKNOWN_EVENT = "unknown_event"
INVALID_PAYLOAD = "invalid_payload"
TOO_LARGE = "too_large"
NOT_IN_ROOM = "not_in_room"
FORBIDDEN = "forbidden"
USER_NOT_FOUND = "user_not_found"
GROUP_NOT_FOUND = "group_not_found"


@dataclass(slots=True, frozen=True)
class Emit:
    """Send ``42["<event>",<data>]`` to every listed session, in the listed order.

    One object for all recipients so that a broadcast (notably ``contact``, whose payload is
    the whole directory) is encoded once. ``sessions`` is never empty.
    """

    sessions: tuple[str, ...]
    event: str
    data: Any


@dataclass(slots=True, frozen=True)
class Fail:
    """The event failed: answer ``error {code, message, event}`` to its sender alone.

    Nothing changed and nothing else is sent (§0.1); the shell also sends the failed
    acknowledgement when the event asked for one. An event that returns no ``Fail`` succeeded
    (a ``login-response`` with ``invalid`` or ``duplicate`` is an answer, not a failure).
    """

    session: str
    code: str
    message: str
    event: str | None

    @property
    def payload(self) -> dict[str, Any]:
        """The ``error`` event's payload (§3.4)."""
        return {"code": self.code, "message": self.message, "event": self.event}


Action = Emit | Fail
