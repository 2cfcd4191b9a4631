"""Reference relay: python-socketio ``AsyncServer`` on uvicorn, the stack classes run today.

It implements the observer events the workloads use with ``observer_back``'s semantics and
structure (``AsyncServer(async_mode="asgi")``, one asyncio task per event, an
``emit(..., to=sid)`` per delivery, a room-wide ``emit`` for ``steps/all``), so that both
servers are driven over the same Socket.IO wire. Handlers return ``{"ok": true}`` so that a
client asking for an acknowledgement gets one, as from Observer Relay. Not a conformant
implementation of the protocol: no tokens, no sequencing, no replay, few checks.

    python -m bench.reference_server --port 8001
"""

from __future__ import annotations

import argparse
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import socketio
import uvicorn

OK = {"ok": True}


@dataclass
class User:
    uid: int
    name: str
    role: str
    sid: str | None
    steps: dict[str, str] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)
    signal: str | None = "NONE"


@dataclass
class Room:
    rid: int
    host: User
    users: dict[int, User] = field(default_factory=dict)
    steps: list[dict[str, Any]] = field(default_factory=list)
    sharer: int | None = None
    next_message: int = 1

    def data(self) -> dict[str, Any]:
        return {"id": self.rid, "host": self.host.uid, "users": [
            {"id": u.uid, "name": u.name, "role": u.role,
             "status": "online" if u.sid else "offline", "steps": u.steps,
             "signal": None if u.role == "host" else u.signal}
            for u in self.users.values()]}


def build(ping_interval: float = 25, ping_timeout: float = 20) -> socketio.ASGIApp:
    sio = socketio.AsyncServer(async_mode="asgi", cors_allowed_origins="*",
                               ping_interval=ping_interval, ping_timeout=ping_timeout,
                               max_http_buffer_size=4 * 1024 * 1024)
    rooms: dict[int, Room] = {}
    by_sid: dict[str, tuple[Room, User]] = {}
    room_ids = itertools.count(1000)

    def message(room: Room, sender: User, receiver: User, content: str) -> dict[str, Any]:
        now = time.time()
        msg = {"id": room.next_message, "sender": sender.uid, "receiver": receiver.uid,
               "content": content, "status": None,
               "created_at": time.strftime("%H:%M:%S", time.gmtime(now))}
        room.next_message += 1
        return msg

    async def update_host(room: Room) -> None:
        if room.host.sid:
            await sio.emit("room/update", room.data(), to=room.host.sid)

    @sio.on("room/create")  # type: ignore[misc]
    async def create(sid: str, data: dict[str, Any]) -> dict[str, Any]:
        rid = next(room_ids)
        host = User(1, str((data or {}).get("name") or "Host"), "host", sid, signal=None)
        room = Room(rid, host, {1: host})
        rooms[rid] = room
        by_sid[sid] = (room, host)
        await sio.enter_room(sid, rid)
        await sio.emit("room/created", {"room_id": rid, "user_id": 1}, to=sid)
        await update_host(room)
        return OK

    @sio.on("room/join")  # type: ignore[misc]
    async def join(sid: str, data: dict[str, Any]) -> dict[str, Any]:
        room = rooms.get(int(data["room_id"]))
        if room is None:
            return {"ok": False, "error": {"code": "room_not_found", "message": "no room"}}
        uid = max(room.users) + 1
        user = User(uid, str(data.get("name") or f"Guest{uid}"), "client", sid)
        room.users[uid] = user
        by_sid[sid] = (room, user)
        await sio.enter_room(sid, room.rid)
        await sio.emit("room/join", {"room_id": room.rid, "user_id": uid}, to=sid)
        if room.steps:
            await sio.emit("steps/all", room.steps, to=sid)
        await update_host(room)
        return OK

    @sio.on("message/to_mentor")  # type: ignore[misc]
    async def to_mentor(sid: str, data: dict[str, Any]) -> dict[str, Any]:
        room, user = by_sid[sid]
        msg = message(room, user, room.host, data["content"])
        user.messages.append(msg)
        if room.host.sid:
            await sio.emit("message/to_mentor", msg, to=room.host.sid)
        return OK

    @sio.on("message/to_client")  # type: ignore[misc]
    async def to_client(sid: str, data: dict[str, Any]) -> dict[str, Any]:
        room, host = by_sid[sid]
        target = room.users[int(data["user_id"])]
        msg = message(room, host, target, data["content"])
        target.messages.append(msg)
        if target.sid:
            await sio.emit("message/to_client", msg, to=target.sid)
        return OK

    @sio.on("sharing/start")  # type: ignore[misc]
    async def sharing_start(sid: str, data: dict[str, Any]) -> dict[str, Any]:
        room, _ = by_sid[sid]
        target = room.users[int(data["user_id"])]
        # observer_back: every other student is told to stop first.
        for user in room.users.values():
            if user.role == "client" and user is not target and user.sid:
                await sio.emit("sharing/end", {}, to=user.sid)
        room.sharer = target.uid
        if target.sid:
            await sio.emit("sharing/start", {}, to=target.sid)
        return OK

    async def code(event: str, sid: str, data: dict[str, Any]) -> dict[str, Any]:
        room, user = by_sid[sid]
        if room.host.sid:
            await sio.emit(event, {"room_id": room.rid, "user_id": user.uid,
                                   "files": data["files"]}, to=room.host.sid)
        return OK

    @sio.on("sharing/code_send")  # type: ignore[misc]
    async def code_send(sid: str, data: dict[str, Any]) -> dict[str, Any]:
        return await code("sharing/code_send", sid, data)

    @sio.on("sharing/code_update")  # type: ignore[misc]
    async def code_update(sid: str, data: dict[str, Any]) -> dict[str, Any]:
        return await code("sharing/code_update", sid, data)

    @sio.on("steps/all")  # type: ignore[misc]
    async def steps_all(sid: str, data: list[dict[str, Any]]) -> dict[str, Any]:
        room, _ = by_sid[sid]
        room.steps = [{k: s.get(k) for k in ("name", "content", "language", "type")}
                      for s in data if s.get("content")]
        await sio.emit("steps/all", room.steps, room=room.rid, skip_sid=sid)
        return OK

    @sio.on("steps/status/to_mentor")  # type: ignore[misc]
    async def status(sid: str, data: dict[str, str]) -> dict[str, Any]:
        room, user = by_sid[sid]
        user.steps.update(data)
        if room.host.sid:
            await sio.emit("steps/status/to_mentor", {"user_id": user.uid, "steps": user.steps},
                           to=room.host.sid)
        return OK

    @sio.on("signal")  # type: ignore[misc]
    async def signal(sid: str, data: dict[str, Any]) -> dict[str, Any]:
        room, user = by_sid[sid]
        user.signal = data["value"]
        if room.host.sid:
            await sio.emit("signal", {"user_id": user.uid, "value": user.signal},
                           to=room.host.sid)
        return OK

    async def rtc(event: str, sid: str, data: dict[str, Any]) -> dict[str, Any]:
        room, user = by_sid[sid]
        body = {k: v for k, v in data.items() if k != "user_id"}
        if user.role == "host":
            target = room.users.get(int(data["user_id"]))
        else:
            target = room.host
            body["user_id"] = user.uid
        if target is None or not target.sid:
            return {"ok": False, "error": {"code": "peer_offline", "message": "offline"}}
        await sio.emit(event, body, to=target.sid)
        return OK

    for name in ("rtc/offer", "rtc/answer", "rtc/ice", "rtc/request", "rtc/allow", "rtc/stop"):
        async def relay(sid: str, data: dict[str, Any], _name: str = name) -> dict[str, Any]:
            return await rtc(_name, sid, data)
        sio.on(name, relay)

    @sio.event  # type: ignore[misc]
    async def disconnect(sid: str, *args: Any) -> None:
        found = by_sid.pop(sid, None)
        if found is None:
            return
        room, user = found
        user.sid = None
        if user.role == "client":
            await update_host(room)

    return socketio.ASGIApp(sio)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="python-socketio reference relay (bench)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--ping-interval", type=float, default=25)
    parser.add_argument("--ping-timeout", type=float, default=20)
    args = parser.parse_args(argv)
    app = build(args.ping_interval, args.ping_timeout)
    print(f"reference relay listening on ws://{args.host}:{args.port}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False,
                backlog=4096)


if __name__ == "__main__":
    main()
