"""What both signaling dialects share: the `Event` stream, room info, and the base class.

`Signaling` owns the WebSocket (opening it, sending JSON, decoding frames, closing) and
declares the operations the role logic calls; each dialect (`dialect_observer.py`,
`dialect_ws.py`) maps them onto its own frames and turns what it receives into `Event`s, so
that `roles.py` is identical for both.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import json
import sys
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

PeerId = int | str

MAX_MESSAGE = 8 * 1024 * 1024


def log(message: str) -> None:
    """Diagnostics go to stderr; stdout is kept for the machine-readable progress lines."""
    print(f"observer-peer: {message}", file=sys.stderr, flush=True)


@dataclass
class Event:
    """One thing that happened, from the signaling channel or from the local media side.

    kind is one of: request, allow, offer, answer, ice, stop (peer signaling); config,
    resync, reconnected, host-back, host-left, peer-left, error, closed (channel state); the
    role runner adds its own local kinds (pc-state, done, interrupt, deadline).
    """

    kind: str
    peer: PeerId | None = None
    sdp: str = ""
    candidate: Any = None
    detail: str = ""


@dataclass
class RoomInfo:
    room: str
    user_id: int | None = None
    token: str | None = None
    stats_key: str | None = None


class SignalingError(Exception):
    """Room setup failed, or a frame could not be sent."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class Signaling(abc.ABC):
    """Common surface of both dialects; `peer` is None when a student addresses its host."""

    dialect = ""

    def __init__(self, url: str, events: asyncio.Queue[Event], *, verbose: bool = False) -> None:
        self.url = url
        self.events = events
        self.verbose = verbose
        self.polite = False
        self.ice_servers: list[Any] = []
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._closing = False

    # -- room setup -------------------------------------------------------------------------
    @abc.abstractmethod
    async def create(self, name: str | None) -> RoomInfo: ...

    @abc.abstractmethod
    async def join(self, room: str, name: str | None) -> RoomInfo: ...

    async def rehost(self, room: str, user_id: int, token: str) -> RoomInfo:
        raise SignalingError(f"the {self.dialect} dialect cannot rehost a room")

    # -- WebRTC relays ----------------------------------------------------------------------
    @abc.abstractmethod
    async def request(self) -> None: ...

    @abc.abstractmethod
    async def allow(self, peer: PeerId) -> None: ...

    @abc.abstractmethod
    async def offer(self, peer: PeerId | None, sdp: str) -> None: ...

    @abc.abstractmethod
    async def answer(self, peer: PeerId | None, sdp: str) -> None: ...

    @abc.abstractmethod
    async def ice(self, peer: PeerId | None, candidate: Any) -> None: ...

    @abc.abstractmethod
    async def stop(self, peer: PeerId | None) -> None: ...

    # -- plumbing ---------------------------------------------------------------------------
    def _emit(self, event: Event) -> None:
        self.events.put_nowait(event)

    def _debug(self, message: str) -> None:
        if self.verbose:
            log(message)

    async def _open(self) -> ClientConnection:
        try:
            ws = await connect(
                self.url,
                max_size=MAX_MESSAGE,
                open_timeout=10,
                ping_interval=20,
                ping_timeout=20,
                close_timeout=2,
            )
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise SignalingError(f"cannot connect to {self.url}: {exc}") from exc
        self._ws = ws
        return ws

    async def _send_json(self, message: dict[str, Any]) -> None:
        ws = self._ws
        if ws is None:
            raise SignalingError("not connected")
        try:
            await ws.send(json.dumps(message, separators=(",", ":"), ensure_ascii=False))
        except ConnectionClosed as exc:
            raise SignalingError("connection closed") from exc

    @staticmethod
    def _decode(raw: str | bytes) -> dict[str, Any] | None:
        if isinstance(raw, bytes):
            log("ignoring a binary frame from the relay")
            return None
        try:
            value = json.loads(raw)
        except ValueError:
            log("ignoring a frame that is not JSON")
            return None
        if not isinstance(value, dict):
            log("ignoring a frame that is not a JSON object")
            return None
        return value

    def _start_reader(self) -> None:
        self._reader = asyncio.create_task(self._read_loop(), name=f"{self.dialect}-reader")

    @abc.abstractmethod
    async def _read_loop(self) -> None: ...

    async def close(self) -> None:
        """Close for good; no `closed` event is emitted for a close we asked for."""
        self._closing = True
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws.close(1000, "bye"), 3)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader


def close_info(ws: ClientConnection) -> tuple[int | None, str]:
    return ws.close_code, ws.close_reason or ""
