"""Server frames in the two shapes of §9.2, encoded at most once per shape.

A :class:`ServerFrame` holds the content twice, as two dicts that share every value (no
copies): the **full** shape with the † keys, and the **seed** shape with exactly the keys the
seed's ``chatroom`` client accepts (its handlers take fixed keyword arguments, so one extra
key kills its receive thread). Bytes are rendered lazily and cached per shape, so a broadcast
to a hundred subscribers costs at most two encodings.
"""

from __future__ import annotations

from typing import Any, Final, Literal

from .values import encode

Shape = Literal["seed", "full"]
SHAPES: Final[tuple[Shape, ...]] = ("seed", "full")

JSON = Any
Content = dict[str, Any]


class ServerFrame:
    """One server frame: its ``type``, its content in both shapes, cached renderings."""

    __slots__ = ("_full_bytes", "_seed_bytes", "full", "seed", "type")

    def __init__(self, type: str, full: Content, seed: Content | None = None) -> None:
        self.type = type
        self.full = full
        self.seed = full if seed is None else seed
        self._seed_bytes: bytes | None = None
        self._full_bytes: bytes | None = None

    def content(self, shape: Shape) -> Content:
        return self.seed if shape == "seed" else self.full

    def render(self, shape: Shape) -> bytes:
        """The frame's JSON text (UTF-8) for a connection of ``shape``; cached."""
        if shape == "seed":
            out = self._seed_bytes
            if out is None:
                out = self._seed_bytes = encode({"type": self.type, "args": self.seed})
            return out
        out = self._full_bytes
        if out is None:
            out = self._full_bytes = encode({"type": self.type, "content": self.full})
        return out

    def __repr__(self) -> str:
        return f"ServerFrame({self.type!r}, {self.full!r})"


def render(frame: ServerFrame, shape: Shape) -> bytes:
    """Module-level alias of :meth:`ServerFrame.render` for the shell."""
    return frame.render(shape)


def hello(client_id: int, space: str) -> ServerFrame:
    return ServerFrame("hello", {"id": client_id, "space": space}, {"id": client_id})


def update(topic_name: str, seed_change: Content, full_change: Content,
           version: int) -> ServerFrame:
    return ServerFrame(
        "update",
        {"topic_name": topic_name, "change": full_change, "version": version},
        {"topic_name": topic_name, "change": seed_change},
    )


def reject_update(topic_name: str, change: JSON, code: str, reason: str) -> ServerFrame:
    """``change`` is the client's object exactly as sent, so that its ``id`` matches."""
    return ServerFrame(
        "reject_update",
        {"topic_name": topic_name, "change": change, "code": code, "reason": reason},
        {"topic_name": topic_name, "change": change, "reason": reason},
    )


def provider_request(service_name: str, args: JSON, request_id: str,
                     client_id: int) -> ServerFrame:
    return ServerFrame(
        "request",
        {"service_name": service_name, "args": args, "request_id": request_id,
         "client_id": client_id},
        {"service_name": service_name, "args": args, "request_id": request_id},
    )


def validation_request(service_name: str, topic_name: str, seed_change: Content,
                       full_change: Content, request_id: str, client_id: int) -> ServerFrame:
    """The validator's request: ``args`` holds the change as it would be broadcast."""
    return ServerFrame(
        "request",
        {"service_name": service_name,
         "args": {"change": full_change, "topic_name": topic_name, "client_id": client_id},
         "request_id": request_id, "client_id": client_id},
        {"service_name": service_name, "args": {"change": seed_change},
         "request_id": request_id},
    )


def response_ok(request_id: JSON, response: JSON) -> ServerFrame:
    return ServerFrame("response", {"request_id": request_id, "response": response})


def response_failed(request_id: JSON, code: str, message: str) -> ServerFrame:
    """The failure shape; seed connections also get :func:`error` first (§9.5)."""
    return ServerFrame(
        "response",
        {"request_id": request_id, "response": None,
         "error": {"code": code, "message": message}},
        {"request_id": request_id, "response": None},
    )


def error(code: str, message: str, message_type: str | None,
          echoes: Content | None = None) -> ServerFrame:
    """``error {code, message, message_type, topic_name?, service_name?, request_id?}``.

    Both shapes carry the same keys: the seed's client logs frames of unknown types and
    carries on, so the echoes cannot hurt it.
    """
    content: Content = {"code": code, "message": message, "message_type": message_type}
    if echoes:
        content.update(echoes)
    return ServerFrame("error", content)
