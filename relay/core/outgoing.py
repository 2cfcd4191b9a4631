"""A server event encoded once and shared by every recipient and codec.

The JSON of a payload is produced once per event, however many participants receive it and
whichever framing they use; codecs only wrap those bytes (plain: event name + ``seq``;
Socket.IO: ``42[...]``) and may cache their wrapped form on the object.
"""

from __future__ import annotations

from typing import Any

import msgspec

_encode = msgspec.json.encode


_RELEASED = object()


class Outgoing:
    """One server event: name, payload and its lazily encoded JSON.

    Once encoded, the Python payload is released: replay buffers hold many events for a
    long time, and the bytes are all the codecs need (``data`` decodes them back on the
    rare reads after that, e.g. in tests).
    """

    __slots__ = ("_cache", "_data", "_payload", "event", "event_json")

    def __init__(self, event: str, data: Any) -> None:
        self.event = event
        self._data = data
        self.event_json = _encode(event)
        self._payload: bytes | None = None
        # Codec-owned cache of wrapped frames (e.g. the Socket.IO frame, identical for
        # every recipient); created on first use, since most buffered events never need it.
        self._cache: dict[str, bytes] | None = None

    @property
    def data(self) -> Any:
        if self._data is _RELEASED:
            return msgspec.json.decode(self.payload)
        return self._data

    @property
    def payload(self) -> bytes:
        if self._payload is None:
            self._payload = _encode(self._data)
            self._data = _RELEASED
        return self._payload

    @classmethod
    def encoded(cls, event: str, payload: bytes) -> Outgoing:
        """An event whose payload is already JSON text (a room rebuilt from a snapshot)."""
        out = cls(event, _RELEASED)
        out._payload = payload
        return out

    def cached(self, key: str) -> bytes | None:
        return self._cache.get(key) if self._cache is not None else None

    def remember(self, key: str, frame: bytes) -> bytes:
        if self._cache is None:
            self._cache = {}
        self._cache[key] = frame
        return frame

    def plain_size(self, seq: int) -> int:
        """Size of this event as a sequenced plain-JSON frame (the replay-buffer measure)."""
        # {"event":<name>,"data":<payload>,"seq":<n>}
        return 25 + len(self.event_json) + len(self.payload) + len(str(seq))

    def __repr__(self) -> str:
        return f"Outgoing({self.event!r}, {self.data!r})"


def encode_json(value: Any) -> bytes:
    return _encode(value)


def compact_json_size(value: Any) -> int:
    """UTF-8 size of the compact JSON encoding (separators ``,``/``:``, non-ASCII kept)."""
    return len(_encode(value))
