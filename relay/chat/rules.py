"""Payload rules of §9.10: reading fields, names and message texts.

Every check only looks at types and lengths (``isinstance``, ``len``) before touching a
value, so hostile payloads (huge integers, deep nesting, megabyte strings) cost no more than
the codec already paid to decode them: nothing here converts, walks or echoes a structure it
has not first checked to be a plain string of bounded size.
"""

from __future__ import annotations

from typing import Any

from .actions import INVALID_PAYLOAD, TOO_LARGE

#: Longest name, in characters after trimming.
MAX_NAME_CHARS = 32


class Refused(Exception):
    """Raised by a handler *before* it changes anything; becomes a ``Fail``."""

    __slots__ = ("code", "message")

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message


def require_object(data: object) -> dict[str, Any]:
    """The event's payload, which must be a JSON object."""
    if not isinstance(data, dict):
        raise Refused(INVALID_PAYLOAD, "payload must be an object")
    return data


def require_str(payload: dict[str, Any], key: str) -> str:
    """A required string field."""
    value = payload.get(key)
    if not isinstance(value, str):
        raise Refused(INVALID_PAYLOAD, f"{key} must be a string")
    return value


def clean_name(raw: str) -> str | None:
    """The trimmed name, or ``None`` when it breaks the name rules (1–32 printable chars).

    The length is checked before ``isprintable`` so a huge name costs one ``strip``.
    """
    name = raw.strip()
    if not 1 <= len(name) <= MAX_NAME_CHARS or not name.isprintable():
        return None
    return name


def require_text(payload: dict[str, Any], max_chars: int) -> str:
    """The ``message`` field: a string of 1 to ``max_chars`` characters, sent as it is.

    Texts are not trimmed (whitespace is content in a chat). A string holding a lone
    surrogate cannot be encoded as UTF-8, so it could never be delivered: it is refused here
    rather than failing later in the shell's encoder on the recipients' connections. The
    codec never produces one; the check costs nothing for ASCII text (``isascii`` is O(1)).
    """
    text = payload.get("message")
    if not isinstance(text, str):
        raise Refused(INVALID_PAYLOAD, "message must be a string")
    if not text:
        raise Refused(INVALID_PAYLOAD, "message must not be empty")
    if len(text) > max_chars:
        raise Refused(TOO_LARGE, f"message longer than {max_chars} characters")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise Refused(INVALID_PAYLOAD, "message is not valid Unicode text") from None
    return text
