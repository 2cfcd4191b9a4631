"""The `/ws` dialect (protocol §7): the seed FastAPI framing.

Usernames instead of ids, no acks, no config, no resume.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

from websockets.exceptions import ConnectionClosed

from signaling.peer.channel import (
    Event,
    PeerId,
    RoomInfo,
    Signaling,
    SignalingError,
    close_info,
    log,
)


class WsSignaling(Signaling):
    """Seed dialect on `/ws` (protocol §7): rooms are strings, peers are usernames."""

    dialect = "ws"

    def __init__(
        self,
        url: str,
        events: asyncio.Queue[Event],
        *,
        verbose: bool = False,
        ice_servers: list[Any] | None = None,
    ) -> None:
        super().__init__(url, events, verbose=verbose)
        self.ice_servers = list(ice_servers or [])

    async def _setup(self, message: dict[str, Any], success: str) -> dict[str, Any]:
        ws = await self._open()
        await self._send_json(message)
        try:
            async with asyncio.timeout(10):
                while True:
                    frame = self._decode(await ws.recv())
                    if frame is None:
                        continue
                    kind = frame.get("type")
                    if kind == success:
                        return frame
                    if kind in ("ERROR", "INVALID_USERNAME", "INVALID_ROOM_ID"):
                        raise SignalingError(
                            f"{message['type']} failed: {kind}: {frame.get('message', '')}",
                            code=str(kind),
                        )
                    self._dispatch(frame)
        except TimeoutError as exc:
            raise SignalingError(f"{message['type']}: no {success} within 10 s") from exc
        except ConnectionClosed as exc:
            code, reason = close_info(ws)
            raise SignalingError(f"connection closed ({code} {reason})".strip()) from exc

    async def create(self, name: str | None) -> RoomInfo:
        self.polite = False
        frame = await self._setup(
            {"type": "CREATE_ROOM", "username": name or "Host"}, "ROOM_CREATED"
        )
        self._start_reader()
        return RoomInfo(room=str(frame.get("roomid")))

    async def join(self, room: str, name: str | None) -> RoomInfo:
        self.polite = True
        frame = await self._setup(
            {"type": "JOIN_ROOM", "roomid": room, "username": name or _default_student_name()},
            "ROOM_JOINED",
        )
        self._start_reader()
        return RoomInfo(room=str(frame.get("roomid", room)))

    async def _send(self, message: dict[str, Any]) -> None:
        await self._send_json(message)

    async def request(self) -> None:
        await self._send({"type": "REQUEST_SHARING"})

    async def allow(self, peer: PeerId) -> None:
        await self._send({"type": "ALLOW_SHARING", "username": peer})

    async def offer(self, peer: PeerId | None, sdp: str) -> None:
        await self._send({"type": "RCP_OFFER", "sdp": sdp})

    async def answer(self, peer: PeerId | None, sdp: str) -> None:
        await self._send({"type": "RCP_ANSWER", "username": peer, "sdp": sdp})

    async def ice(self, peer: PeerId | None, candidate: Any) -> None:
        message: dict[str, Any] = {"type": "ICE_CANDIDATE", "candidate": candidate}
        if peer is not None:
            message["username"] = peer
        await self._send(message)

    async def stop(self, peer: PeerId | None) -> None:
        message: dict[str, Any] = {"type": "STOP_SHARING"}
        if peer is not None:
            message["username"] = peer
        await self._send(message)

    def _dispatch(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        user = frame.get("username")
        peer = user if isinstance(user, str) else None
        if kind == "REQUEST_SHARING":
            self._emit(Event("request", peer=peer))
        elif kind == "ALLOW_SHARING":
            self._emit(Event("allow"))
        elif kind in ("RCP_OFFER", "RCP_ANSWER"):
            sdp = frame.get("sdp")
            if isinstance(sdp, str) and sdp:
                self._emit(Event("offer" if kind == "RCP_OFFER" else "answer", peer=peer, sdp=sdp))
            else:
                log(f"ignoring {kind} without sdp")
        elif kind == "ICE_CANDIDATE":
            self._emit(Event("ice", peer=peer, candidate=frame.get("candidate")))
        elif kind == "STOP_SHARING":
            self._emit(Event("stop", peer=peer))
        elif kind == "USER_LEFT":
            self._emit(Event("peer-left", peer=peer))
        elif kind == "HOST_LEFT":
            self._emit(Event("closed", detail="the host left the room"))
        elif kind in ("ERROR", "INVALID_USERNAME", "INVALID_ROOM_ID"):
            log(f"relay {kind}: {frame.get('message', '')}")
            self._emit(Event("error", detail=str(kind)))
        else:
            self._debug(f"frame {kind}")

    async def _read_loop(self) -> None:
        ws = self._ws
        assert ws is not None
        try:
            async for raw in ws:
                frame = self._decode(raw)
                if frame is not None:
                    self._dispatch(frame)
        except ConnectionClosed:
            pass
        if not self._closing:
            code, reason = close_info(ws)
            self._emit(Event("closed", detail=f"connection closed ({code} {reason})"))


def _default_student_name() -> str:
    """/ws requires a username and rejects duplicates, so unnamed students get a random one."""
    return f"Student{secrets.randbelow(10**6):06d}"
