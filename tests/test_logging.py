"""What the relay tells an operator (§1.1): connection, room and error lines — and never a
client's content, tokens, keys or cookies, at any level, in either format."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
import trio
from trio_websocket import open_websocket_url

from tests.support import Client

SECRET_CHAT = "zebra-marmalade-4711"
SECRET_CODE = "print('quokka-9931')"
SECRET_SDP = "v=0 o=- sdp-pelican-5512"


async def _lesson(port: int) -> list[str]:
    """A small lesson full of recognisable content; the secrets it saw (tokens, key)."""
    url = f"ws://127.0.0.1:{port}"
    secrets: list[str] = [SECRET_CHAT, SECRET_CODE, SECRET_SDP]
    async with open_websocket_url(url + "/observer") as h, \
            open_websocket_url(url + "/observer") as s:
        host, student = Client(h), Client(s)
        room = (await host.ok("room/create", {"name": "Teacher"}))[0]["data"]
        secrets += [room["token"], room["stats_key"]]
        joined = (await student.ok("room/join", {"room_id": room["room_id"],
                                                 "name": "Ann"}))[0]["data"]
        secrets.append(joined["token"])
        await host.expect("room/update")
        await student.ok("message/to_mentor", {"content": SECRET_CHAT})
        await host.ok("sharing/start", {"user_id": joined["user_id"]})
        await student.ok("sharing/code_send", {"files": [
            {"filename": "a.py", "status": "CREATED", "content": SECRET_CODE}]})
        await student.ok("rtc/request", {})
        await host.ok("rtc/allow", {"user_id": joined["user_id"]})
        await student.ok("rtc/offer", {"sdp": SECRET_SDP})
        await student.fail("room/join", {"room_id": 1}, "already_in_room")  # an error line
        await host.ok("room/close", {})
    # A Socket.IO connection whose upgrade sets a device cookie (it must not be logged).
    async with open_websocket_url(url + "/socket.io/?EIO=4&transport=websocket") as ws:
        await ws.get_message()
    return secrets


@pytest.mark.parametrize("fmt", ["text", "json"])
async def test_debug_logs_name_connections_rooms_errors_but_no_content(fmt: str) -> None:
    env = dict(os.environ, OBSERVER_LOG_LEVEL="DEBUG", OBSERVER_LOG_FORMAT=fmt)
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "relay", "serve", "--port", "0", "--http-port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert process.stdout is not None and process.stderr is not None
    stderr = bytearray()

    async def drain() -> None:
        assert process.stderr is not None
        async for chunk in process.stderr:
            stderr.extend(chunk)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(drain)
        head = b""
        with trio.fail_after(15):
            while head.count(b"\n") < 2:
                head += await process.stdout.receive_some()
        port = int(head.decode().splitlines()[0].rsplit(":", 1)[1])
        secrets = await _lesson(port)
        process.terminate()
        with trio.fail_after(10):
            await process.wait()
    text = stderr.decode()
    for secret in secrets:
        assert secret not in text, secret
    assert "observer_device" not in text
    lines = text.splitlines()
    if fmt == "json":
        records: list[dict[str, Any]] = [json.loads(line) for line in lines]  # every line
        assert all({"ts", "level", "logger", "msg"} <= r.keys() for r in records)
        msgs = [(r["msg"], r) for r in records]
    else:
        msgs = [(line, {}) for line in lines]
    opened = [m for m, _ in msgs if "connection opened" in m]
    closed = [m for m, _ in msgs if "connection closed" in m]
    assert len(opened) >= 3 and len(closed) >= 3
    assert any("room opened" in m for m, _ in msgs) and any("room removed" in m for m, _ in msgs)
    assert any("error answer" in m for m, _ in msgs)
    if fmt == "json":
        close = next(r for m, r in msgs if m == "connection closed")
        assert {"endpoint", "transport", "ip", "code", "reason", "duration"} <= close.keys()
        error = next(r for m, r in msgs if m == "error answer")
        assert error["code"] == "already_in_room" and error["event"] == "room/join"
    else:
        assert any("code=4000" in m or "code=1000" in m for m in closed)
        assert any("endpoint=observer" in m and "ip=127.0.0.1" in m for m in opened)
