"""The `/observer` dialect (protocol §3.1, §6.1, §6.8): the relay's own plain JSON framing.

Acknowledged room setup, `rtc/config` with the polite role, `rtc/*` relays keyed by user id,
and resumable sessions (reconnect + `room/rehost`/`room/rejoin` with `last_seq`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
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

# Close codes after which protocol §2.5 says "reconnect and resume".
RESUMABLE_CODES = {1001, 1006, 1011, 1012, 1013, 4002, 4004, 4008}
# Resume failures that no retry can fix.
FATAL_ATTACH_CODES = {"room_not_found", "user_not_found", "bad_token", "forbidden"}


class ObserverSignaling(Signaling):
    """Plain JSON framing on `/observer`, with automatic resume after a dropped connection.

    The media path is peer-to-peer, so a relay restart or a 4002/4004 close must not end a
    screen share: the connection is re-established and re-attached with `last_seq`, and the
    role runner only hears `reconnected` (rtc/* events are never buffered, protocol §5.1, so it
    may need to repeat an `rtc/request`).
    """

    dialect = "observer"

    def __init__(
        self,
        url: str,
        events: asyncio.Queue[Event],
        *,
        verbose: bool = False,
        reconnect_attempts: int = 6,
    ) -> None:
        super().__init__(url, events, verbose=verbose)
        self.reconnect_attempts = reconnect_attempts
        self.last_seq = 0
        self._seq_baseline = True  # accept whatever seq comes next (fresh attach, resync)
        self._force_resume = False
        self._closer: asyncio.Task[None] | None = None
        self._refs = itertools.count(1)
        self._ready = asyncio.Event()
        self._resume: tuple[str, dict[str, Any]] | None = None
        self.room: RoomInfo | None = None

    # -- room setup -------------------------------------------------------------------------
    async def create(self, name: str | None) -> RoomInfo:
        self.polite = False
        await self._open()
        reply = await self._attach("room/create", {"name": name} if name else {})
        if not isinstance(reply, dict) or "room_id" not in reply:
            raise SignalingError("room/create succeeded without a room/created frame")
        info = RoomInfo(
            room=str(reply["room_id"]),
            user_id=_int_or_none(reply.get("user_id")),
            token=reply.get("token") if isinstance(reply.get("token"), str) else None,
            stats_key=reply.get("stats_key") if isinstance(reply.get("stats_key"), str) else None,
        )
        self._remember("room/rehost", reply)
        return self._started(info)

    async def join(self, room: str, name: str | None) -> RoomInfo:
        self.polite = True
        room_id = _room_number(room)
        await self._open()
        data: dict[str, Any] = {"room_id": room_id}
        if name:
            data["name"] = name
        reply = await self._attach("room/join", data)
        if not isinstance(reply, dict):
            raise SignalingError("room/join succeeded without a room/join frame")
        info = RoomInfo(
            room=str(reply.get("room_id", room_id)),
            user_id=_int_or_none(reply.get("user_id")),
            token=reply.get("token") if isinstance(reply.get("token"), str) else None,
        )
        self._remember("room/rejoin", {"room_id": room_id, **reply})
        return self._started(info)

    async def rehost(self, room: str, user_id: int, token: str) -> RoomInfo:
        self.polite = False
        room_id = _room_number(room)
        await self._open()
        await self._attach("room/rehost", {"room_id": room_id, "user_id": user_id, "token": token})
        self._remember("room/rehost", {"room_id": room_id, "user_id": user_id, "token": token})
        return self._started(RoomInfo(room=str(room_id), user_id=user_id, token=token))

    def _remember(self, event: str, reply: dict[str, Any]) -> None:
        if all(k in reply for k in ("room_id", "user_id", "token")):
            keys = {k: reply[k] for k in ("room_id", "user_id", "token")}
            self._resume = (event, keys)

    def _started(self, info: RoomInfo) -> RoomInfo:
        self.room = info
        self._ready.set()
        self._start_reader()
        return info

    async def _attach(self, event: str, data: dict[str, Any], timeout: float = 10) -> Any:
        """Send a binding event with a ref and read until its ack; return the reply payload.

        Frames that arrive meanwhile (rtc/config, snapshot, replay) are dispatched normally.
        """
        ws = self._ws
        assert ws is not None
        ref = next(self._refs)
        await self._send_json({"event": event, "data": data, "ref": ref})
        reply: Any = None
        try:
            async with asyncio.timeout(timeout):
                while True:
                    frame = self._decode(await ws.recv())
                    if frame is None:
                        continue
                    name = frame.get("event")
                    if name in ("ack", "error") and frame.get("ref") == ref:
                        payload = frame.get("data")
                        if not isinstance(payload, dict):
                            payload = {}
                        if name == "ack" and payload.get("ok") is True:
                            return reply
                        err = payload.get("error", payload) if name == "ack" else payload
                        if not isinstance(err, dict):
                            err = {}
                        code = err.get("code")
                        raise SignalingError(
                            f"{event} failed: {code}: {err.get('message', '')}",
                            code=code if isinstance(code, str) else None,
                        )
                    if name in ("room/created", "room/join") and reply is None:
                        reply = frame.get("data")
                        continue
                    self._dispatch(frame)
        except TimeoutError as exc:
            raise SignalingError(f"{event}: no acknowledgement within {timeout:g} s") from exc
        except ConnectionClosed as exc:
            code, reason = close_info(ws)
            raise SignalingError(f"{event}: connection closed ({code} {reason})".strip()) from exc

    # -- WebRTC relays ----------------------------------------------------------------------
    async def _send(self, event: str, data: dict[str, Any], wait: float = 10) -> None:
        if not self._ready.is_set():
            try:
                await asyncio.wait_for(self._ready.wait(), wait)
            except TimeoutError as exc:
                raise SignalingError(f"{event}: not connected to the relay") from exc
        await self._send_json({"event": event, "data": data})

    @staticmethod
    def _addressed(data: dict[str, Any], peer: PeerId | None) -> dict[str, Any]:
        if peer is not None:
            data["user_id"] = peer
        return data

    async def request(self) -> None:
        await self._send("rtc/request", {})

    async def allow(self, peer: PeerId) -> None:
        await self._send("rtc/allow", {"user_id": peer})

    async def offer(self, peer: PeerId | None, sdp: str) -> None:
        await self._send("rtc/offer", self._addressed({"sdp": sdp}, peer))

    async def answer(self, peer: PeerId | None, sdp: str) -> None:
        await self._send("rtc/answer", self._addressed({"sdp": sdp}, peer))

    async def ice(self, peer: PeerId | None, candidate: Any) -> None:
        await self._send("rtc/ice", self._addressed({"candidate": candidate}, peer))

    async def stop(self, peer: PeerId | None) -> None:
        await self._send("rtc/stop", self._addressed({}, peer), wait=1)

    # -- receiving --------------------------------------------------------------------------
    def _accept_seq(self, seq: int) -> bool:
        """Drop replayed duplicates; on a gap, reconnect and resume (protocol §5.2)."""
        if self._seq_baseline:
            self._seq_baseline = False
            self.last_seq = seq
            return True
        if seq <= self.last_seq:
            return False
        if seq == self.last_seq + 1:
            self.last_seq = seq
            return True
        if not self._force_resume:
            log(f"sequence gap (expected {self.last_seq + 1}, got {seq}); resuming")
            self._force_resume = True
            if self._ws is not None:
                self._closer = asyncio.create_task(self._ws.close(1000, "resume"))
        return False

    def _dispatch(self, frame: dict[str, Any]) -> None:
        name = frame.get("event")
        data = frame.get("data")
        if not isinstance(data, dict):
            data = {} if data is None else {"value": data}
        seq = frame.get("seq")
        if isinstance(seq, int) and not isinstance(seq, bool) and not self._accept_seq(seq):
            return
        peer = _int_or_none(data.get("user_id"))
        if name == "rtc/config":
            servers = data.get("ice_servers")
            self.ice_servers = servers if isinstance(servers, list) else []
            if isinstance(data.get("polite"), bool):
                self.polite = data["polite"]
            self._emit(Event("config"))
        elif name == "rtc/request":
            self._emit(Event("request", peer=peer))
        elif name == "rtc/allow":
            self._emit(Event("allow", peer=peer))
        elif name in ("rtc/offer", "rtc/answer"):
            sdp = data.get("sdp")
            if isinstance(sdp, str) and sdp:
                self._emit(Event(name[4:], peer=peer, sdp=sdp))
            else:
                log(f"ignoring {name} without sdp")
        elif name == "rtc/ice":
            self._emit(Event("ice", peer=peer, candidate=data.get("candidate")))
        elif name == "rtc/stop":
            self._emit(Event("stop", peer=peer))
        elif name == "room/resync":
            log(f"room/resync ({data.get('reason')}): rebuilding room state")
            self._seq_baseline = True
            self._emit(Event("resync", detail=str(data.get("reason"))))
        elif name == "error":
            code, message, event = data.get("code"), data.get("message"), data.get("event")
            log(f"relay error {code} on {event}: {message}")
            self._emit(Event("error", detail=f"{code} {event}"))
        elif name == "ack":
            pass  # failures were already reported by their error frame
        elif name in ("room/closed", "room/kicked"):
            self._emit(Event("closed", detail=f"{name}: {data.get('message', '')}"))
        elif name == "message":
            text = str(data.get("message", ""))
            log(f"notice: {text}")
            if "offline" in text.lower():
                self._emit(Event("host-left", detail=text))
            elif "reconnected" in text.lower():
                self._emit(Event("host-back", detail=text))
        elif name in ("alerts", "alert"):
            if name == "alerts":
                log(f"alert {data.get('type')}: {data.get('message')}")
        else:
            self._debug(f"event {name}")

    async def _read_loop(self) -> None:
        while True:
            ws = self._ws
            assert ws is not None
            try:
                async for raw in ws:
                    frame = self._decode(raw)
                    if frame is not None:
                        self._dispatch(frame)
            except ConnectionClosed:
                pass
            self._ready.clear()
            if self._closing:
                return
            code, reason = close_info(ws)
            resumable = self._force_resume or code is None or code in RESUMABLE_CODES
            if not resumable or self._resume is None or self.reconnect_attempts <= 0:
                self._emit(Event("closed", detail=f"connection closed ({code} {reason})"))
                return
            if not self._force_resume:
                log(f"connection closed ({code} {reason}); reconnecting")
            if not await self._reconnect(code):
                self._emit(Event("closed", detail=f"could not resume after close {code}"))
                return
            self._emit(Event("reconnected"))

    async def _reconnect(self, code: int | None) -> bool:
        assert self._resume is not None
        event, keys = self._resume
        delay = 2.0 if code == 4008 else 0.25
        for _ in range(self.reconnect_attempts):
            await asyncio.sleep(delay)
            delay = min(delay * 2, 8.0)
            if self._closing:
                return False
            try:
                await self._open()
                self._force_resume = False
                await self._attach(event, {**keys, "last_seq": self.last_seq})
            except SignalingError as exc:
                log(f"resume failed: {exc}")
                if self._ws is not None:
                    with contextlib.suppress(Exception):
                        await self._ws.close()
                if exc.code in FATAL_ATTACH_CODES:
                    return False
                continue
            self._ready.set()
            log(f"resumed with {event} (last_seq {self.last_seq})")
            return True
        return False


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _room_number(room: str) -> int:
    try:
        return int(room)
    except ValueError as exc:
        raise SignalingError(f"observer room ids are integers, got {room!r}") from exc
