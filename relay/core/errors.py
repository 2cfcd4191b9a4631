"""The error type every handler raises, carrying a §3.4 code.

Handlers validate before they mutate, so raising an ``EventError`` anywhere in a handler
leaves the room untouched: that is how "a failed event changes nothing" is kept.
"""

from __future__ import annotations


class EventError(Exception):
    """A client event failed with a documented error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(message: str) -> EventError:
    return EventError("invalid_payload", message)


def too_large(message: str) -> EventError:
    return EventError("too_large", message)
