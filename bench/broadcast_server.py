"""Stretch bar for W2: a `websockets` server fanning out with ``broadcast()``.

Speaks just enough Socket.IO v5 / Engine.IO v4 for the W2 wire (``40`` connect,
``room/create``, ``room/join``, ``steps/all`` with acknowledgements): the frame of each
``steps/all`` is encoded once (payload decoded and re-encoded with msgspec, as a relay that
validates must) and written into every student's transport by ``websockets.broadcast()``.
This is roughly the most a single Python process can deliver, not a relay.

    python -m bench.broadcast_server --port 8002
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import secrets
from typing import Any

import msgspec
from websockets.asyncio.server import ServerConnection, broadcast, serve

_decode = msgspec.json.decode
_encode = msgspec.json.encode


def _open_packet() -> str:
    sid = secrets.token_urlsafe(15)
    return ('0{"sid":"' + sid + '","upgrades":[],"pingInterval":25000,"pingTimeout":20000,'
            '"maxPayload":4194304}')


async def run(host: str, port: int) -> None:
    rooms: dict[int, set[ServerConnection]] = {}
    room_ids = itertools.count(1000)

    async def handler(ws: ServerConnection) -> None:
        await ws.send(_open_packet())
        room: int | None = None
        async for message in ws:
            if not isinstance(message, str):
                continue
            if message == "2":
                await ws.send("3")
            elif message.startswith("40"):
                await ws.send('40{"sid":"' + secrets.token_urlsafe(15) + '"}')
            elif message.startswith("42"):
                i = 2
                while message[i].isdigit():
                    i += 1
                ack = message[2:i]
                packet: list[Any] = _decode(message[i:])
                event, data = packet[0], packet[1] if len(packet) > 1 else {}
                if event == "steps/all" and room is not None:
                    broadcast(rooms[room], '42["steps/all",' + _encode(data).decode() + "]")
                elif event == "room/create":
                    room = next(room_ids)
                    rooms[room] = set()
                    await ws.send(f'42["room/created",{{"room_id":{room},"user_id":1}}]')
                elif event == "room/join":
                    room = int(data["room_id"])
                    members = rooms[room]
                    members.add(ws)
                    uid = len(members) + 1
                    await ws.send(f'42["room/join",{{"room_id":{room},"user_id":{uid}}}]')
                if ack:
                    await ws.send("43" + ack + '[{"ok":true}]')
        if room is not None:
            rooms.get(room, set()).discard(ws)

    async with serve(handler, host, port, compression=None, max_size=4 * 1024 * 1024,
                     max_queue=None):
        print(f"websockets broadcast relay listening on ws://{host}:{port}", flush=True)
        await asyncio.Future()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="websockets broadcast() bar (bench)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8002)
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:
        asyncio.run(run(args.host, args.port))
    else:
        uvloop.run(run(args.host, args.port))


if __name__ == "__main__":
    main()
