"""Names: spaces, space keys, topic and service names, the reserved ``_chatroom/`` prefix.

Pure functions, so that the HTTP upgrade path, the inspector and the CLI's ``space-key``
agree with the core on one definition (§9.1, §9.3, §9.6).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from typing import Final

DEFAULT_SPACE: Final = "default"
SPECIAL_PREFIX: Final = "_chatroom/"
SERVER_STATUS: Final = "_chatroom/server_status"
CLIENT_MESSAGE_PREFIX: Final = "_chatroom/client_message/"
VALIDATE_PREFIX: Final = "_chatroom/validate_change/"
MAX_NAME_CHARS: Final = 256

_SPACE_RE: Final = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")


def is_valid_space_name(name: str) -> bool:
    """1–64 characters from ``A-Z a-z 0-9 . _ -``, not starting with ``.`` (§9.1)."""
    return _SPACE_RE.fullmatch(name) is not None


def space_from_query(value: str | None) -> str | None:
    """The space a ``space`` query value names: ``default`` when absent or empty.

    ``None`` means the value is invalid (the upgrade is refused with 400 ``invalid_space``).
    """
    if not value:
        return DEFAULT_SPACE
    return value if is_valid_space_name(value) else None


def space_key(secret: str, space: str) -> str:
    """Unpadded base64url of HMAC-SHA256(secret, space), both UTF-8: 43 characters."""
    digest = hmac.new(secret.encode(), space.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def check_space_key(secret: str, space: str, key: str | None) -> bool:
    """Whether ``key`` opens ``space``; an empty secret opens every space.

    The comparison is constant-time and on bytes (``hmac.compare_digest`` refuses
    non-ASCII ``str``, and a client chooses the key).
    """
    if not secret:
        return True
    if key is None:
        return False
    return hmac.compare_digest(space_key(secret, space).encode(), key.encode("utf-8", "replace"))


def name_problem(value: object, max_chars: int = MAX_NAME_CHARS) -> str | None:
    """The error code for a topic or service name, or ``None`` when it is well formed.

    1–``max_chars`` printable characters; ``too_large`` if longer, else ``invalid_payload``
    (§9.7). Reservation of ``_chatroom/`` is a state rule, checked later.
    """
    if not isinstance(value, str):
        return "invalid_payload"
    if len(value) > max_chars:
        return "too_large"
    if not value or not value.isprintable():
        return "invalid_payload"
    return None


def is_special(name: str) -> bool:
    return name.startswith(SPECIAL_PREFIX)


def client_message_topic(client_id: int) -> str:
    return f"{CLIENT_MESSAGE_PREFIX}{client_id}"


def validator_service(topic_name: str) -> str:
    return f"{VALIDATE_PREFIX}{topic_name}"


def service_name_problem(value: object, max_chars: int = MAX_NAME_CHARS) -> str | None:
    """Like :func:`name_problem`; a validator's name is checked on its topic part (§9.6).

    ``_chatroom/validate_change/<topic>`` may be longer than ``max_chars``: the limit
    applies to ``<topic>``.
    """
    if isinstance(value, str) and value.startswith(VALIDATE_PREFIX):
        return name_problem(value[len(VALIDATE_PREFIX) :], max_chars)
    return name_problem(value, max_chars)


def is_validator_name(name: str) -> bool:
    """A validator service a client may hold: its topic is not itself special."""
    return name.startswith(VALIDATE_PREFIX) and not is_special(name[len(VALIDATE_PREFIX) :])
