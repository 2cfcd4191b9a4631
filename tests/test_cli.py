"""The real process (§1.1, §1.3, Appendix C "Command line"): stdout, exit codes, signals."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

from tests.support import Client

ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv" / "bin" / "python")
ENTRY = str(ROOT / ".venv" / "bin" / "observer-relay")
SERVE = [PYTHON, "-m", "relay", "serve", "--port", "0", "--http-port", "0"]
RELAY_LINE = re.compile(r"^observer-relay relay listening on ws://127\.0\.0\.1:(\d+)$")
WEB_LINE = re.compile(r"^observer-relay web listening on http://127\.0\.0\.1:(\d+)$")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OBSERVER_")}
    env.update(extra)
    return env


def run_sync(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run to completion; a process still running after 20 s is killed (returncode None)."""
    try:
        return subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True,
                              timeout=20)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else exc.stderr or ""
        return subprocess.CompletedProcess(args, None, out, err)  # type: ignore[arg-type]


async def run(args: list[str], limiter: trio.CapacityLimiter | None = None,
              **env: str) -> subprocess.CompletedProcess[str]:
    return await trio.to_thread.run_sync(run_sync, args, clean_env(**env), limiter=limiter)


class Server:
    """A running ``relay serve`` process with its two announced ports."""

    def __init__(self, proc: trio.Process, stderr: Path) -> None:
        self.proc = proc
        self.stderr_path = stderr
        self.buffer = b""
        self.lines: list[str] = []
        self.relay_port = 0
        self.web_port = 0

    async def read_line(self) -> str:
        assert self.proc.stdout is not None
        while b"\n" not in self.buffer:
            chunk = await self.proc.stdout.receive_some(4096)
            if not chunk:
                raise AssertionError(f"stdout ended: {self.buffer!r} {self.stderr()}")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode()

    async def rest_of_stdout(self) -> bytes:
        assert self.proc.stdout is not None
        data = self.buffer
        while chunk := await self.proc.stdout.receive_some(4096):
            data += chunk
        return data

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.relay_port}"

    @property
    def web(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"


async def start(tmp_path: Path, args: list[str] | None = None, **env: str) -> Server:
    stderr = tmp_path / f"stderr-{len(list(tmp_path.iterdir()))}.txt"
    with open(stderr, "wb") as err:
        proc = await trio.lowlevel.open_process(
            args or SERVE, stdout=subprocess.PIPE, stderr=err, env=clean_env(**env), cwd=ROOT)
    server = Server(proc, stderr)
    with trio.fail_after(15):
        first = await server.read_line()
        second = await server.read_line()
    m1, m2 = RELAY_LINE.match(first), WEB_LINE.match(second)
    assert m1 and m2, (first, second, server.stderr())
    server.relay_port, server.web_port = int(m1.group(1)), int(m2.group(1))
    assert server.relay_port != server.web_port
    assert server.relay_port > 0 and server.web_port > 0
    return server


async def stop(server: Server, sig: int = signal.SIGTERM) -> float:
    """Send ``sig``; returns the seconds until the process exited."""
    t0 = trio.current_time()
    server.proc.send_signal(sig)
    with trio.fail_after(10):
        await server.proc.wait()
    return trio.current_time() - t0


@pytest.fixture
async def cleanup() -> Any:
    procs: list[trio.Process] = []
    yield procs
    for proc in procs:
        if proc.returncode is None:
            proc.kill()
            with trio.move_on_after(5):
                await proc.wait()


async def get_health(base: str) -> tuple[int, dict[str, Any]]:
    async with httpx.AsyncClient() as client:
        r = await client.get(base + "/healthz")
    assert r.headers.get("cache-control") == "no-store"
    return r.status_code, r.json()


# -- startup -----------------------------------------------------------------------------
async def test_stdout_lines_and_graceful_sigterm(tmp_path: Path, cleanup: list[Any]) -> None:
    server = await start(tmp_path)
    cleanup.append(server.proc)
    # Both listeners accept connections as soon as the lines are printed.
    status, body = await get_health(server.web)
    assert (status, body) == (200, {"status": "ok", "rooms": 0, "connections": 0})
    codes: dict[str, int | None] = {}
    seen: dict[str, list[str]] = {}

    async def hold(name: str, path: str, first: list[Any],
                   task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with open_websocket_url(server.ws + path) as ws:
            seen[name] = []
            for message in first:
                if message is not None:
                    await ws.send_message(message if isinstance(message, str)
                                          else json.dumps(message))
                seen[name].append(await ws.get_message())
            task_status.started(seen[name][-1])
            try:
                while True:
                    seen[name].append(await ws.get_message())
            except ConnectionClosed as exc:
                codes[name] = exc.reason.code

    sse_lines: list[str] = []

    async def sse(url: str, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with httpx.AsyncClient(timeout=10) as client, \
                client.stream("GET", url) as response:
            assert response.status_code == 200
            task_status.started()
            async for line in response.aiter_lines():
                sse_lines.append(line)
        sse_lines.append("<end>")

    async with trio.open_nursery() as nursery:
        created = json.loads(await nursery.start(
            hold, "host", "/observer", [{"event": "room/create", "data": {}}]))
        await nursery.start(hold, "idle", "/observer/", [{"event": "nope"}])
        await nursery.start(hold, "ws", "/ws", [{"type": "CREATE_ROOM", "username": "T"}])
        # Socket.IO: open packet, then connect to "/".
        await nursery.start(hold, "sio", "/socket.io/?EIO=4&transport=websocket", [None, "40"])
        assert seen["sio"][0].startswith("0{") and seen["sio"][1].startswith("40{")
        room = created["data"]
        await nursery.start(
            sse, f"{server.web}/roomstats/{room['room_id']}/events?key={room['stats_key']}")
        status, body = await get_health(server.web)
        assert (status, body) == (200, {"status": "ok", "rooms": 2, "connections": 4})
        elapsed = await stop(server)
    assert server.proc.returncode == 0, server.stderr()
    assert elapsed < 5.0
    assert codes == {"host": 1001, "idle": 1001, "ws": 1001, "sio": 1001}
    # Socket.IO sessions get no "41" before the 1001 (clients should reconnect).
    assert "41" not in seen["sio"][2:], seen["sio"]
    # The SSE stream ended.
    assert sse_lines[-1] == "<end>" and "event: stats" in sse_lines
    # Exactly two lines on stdout; logs went to stderr.
    assert await server.rest_of_stdout() == b""


async def test_sigint_and_flag_overrides_invalid_env(tmp_path: Path, cleanup: list[Any]) -> None:
    server = await start(
        tmp_path, [*SERVE, "--host", "127.0.0.1"], OBSERVER_HOST="not a host!",
        OBSERVER_PORT="abc", OBSERVER_HTTP_PORT="not-a-port",
        # Valid but unusual values must be accepted.
        OBSERVER_LEGACY_TOKENLESS="YES", OBSERVER_PUBLIC_STATS="", OBSERVER_RATE_LIMIT_RATE="0.5",
        OBSERVER_HEARTBEAT_INTERVAL="2.5", OBSERVER_ALLOWED_ORIGINS=" https://a.example , ,*",
        OBSERVER_LOG_LEVEL="debug", OBSERVER_BACKPLANE_URL="memory://",
        OBSERVER_TURN_URLS="turn:turn.example:3478", OBSERVER_TURN_SECRET="s3cret",
    )
    cleanup.append(server.proc)
    secrets = ["SECRET-CHAT-1", "SECRET-CODE-2", "SECRET-SDP-3", "SECRET-ICE-4",
               "SECRET-REPLY-5", "SECRET-LOG-6"]
    async with open_websocket_url(server.ws + "/observer") as hws, \
            open_websocket_url(server.ws + "/observer") as sws:
        host, student = Client(hws), Client(sws)
        frames = await host.ok("room/create", {})
        assert frames[1]["data"]["ice_servers"][0]["urls"] == ["turn:turn.example:3478"]
        room = frames[0]["data"]
        joined = (await student.ok("room/join", {"room_id": room["room_id"], "name": "Ann"}))[0]
        secrets += [room["token"], room["stats_key"], joined["data"]["token"]]
        await host.expect("room/update")
        await student.ok("message/to_mentor", {"content": secrets[0]})
        await host.expect("message/to_mentor")
        await host.ok("sharing/start", {"user_id": 2})
        await student.expect("sharing/start")
        await student.ok("sharing/code_send", {"files": [
            {"filename": "a.py", "status": "CREATED", "content": secrets[1]}]})
        await host.expect("sharing/code_send")
        await student.ok("rtc/offer", {"sdp": f"v=0\r\no=- {secrets[2]}\r\n"})
        await host.expect("rtc/offer")
        await student.ok("rtc/ice", {"candidate": {"candidate": secrets[3], "sdpMid": "0"}})
        await host.expect("rtc/ice")
        await host.ok("message/to_client", {"user_id": 2, "content": secrets[4]})
        await student.expect("message/to_client")
        await student.ok("error/from_client", {"content": secrets[5]})
        await host.expect("log")
        # A rejected token must not be logged either.
        async with open_websocket_url(server.ws + "/observer") as tws:
            secrets.append("SECRET-TOKEN-7abcdefghi")
            await Client(tws).fail("room/rehost", {"room_id": room["room_id"], "user_id": 1,
                                                   "token": secrets[-1]}, "bad_token")
        # OBSERVER_PUBLIC_STATS="" is false: the stats API wants the key.
        async with httpx.AsyncClient() as http:
            r = await http.get(f"{server.web}/api/rooms/{room['room_id']}/stats")
            assert r.status_code == 403
        # OBSERVER_LEGACY_TOKENLESS="YES" is true: a rejoin without token re-attaches.
        async with open_websocket_url(server.ws + "/observer") as aws:
            again = Client(aws)
            again.last_seq = student.last_seq
            frames = await again.ok("room/rejoin", {"room_id": room["room_id"], "user_id": 2})
            assert frames[0]["data"]["token"] == joined["data"]["token"]
            assert await student.closed() == 4003
            elapsed = await stop(server, signal.SIGINT)
            assert await host.closed() == 1001
            assert await again.closed() == 1001
    assert server.proc.returncode == 0, server.stderr()
    assert elapsed < 5.0
    assert await server.rest_of_stdout() == b""
    # §1.1: no SDP, ICE candidates, chat content, shared code or tokens in the logs,
    # even at DEBUG level.
    log = server.stderr()
    for secret in secrets:
        assert secret not in log, secret


async def test_healthz_503_while_shutting_down(tmp_path: Path, cleanup: list[Any]) -> None:
    server = await start(tmp_path)
    cleanup.append(server.proc)
    # A raw WebSocket that never answers the close frame keeps the shutdown going a while.
    stream = await trio.open_tcp_stream("127.0.0.1", server.relay_port)
    await stream.send_all(
        b"GET /observer HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += await stream.receive_some(4096)
    assert head.startswith(b"HTTP/1.1 101")
    t0 = trio.current_time()
    server.proc.send_signal(signal.SIGTERM)
    seen = None
    with trio.move_on_after(3.0):
        while seen is None:
            try:
                status, body = await get_health(server.web)
            except httpx.HTTPError:
                break
            if status == 503:
                seen = body
            await trio.sleep(0.02)
    assert seen is not None and seen["status"] == "shutting_down", seen
    # New WebSocket connections are not accepted any more.
    with pytest.raises((OSError, HandshakeError)):
        async with open_websocket_url(server.ws + "/observer"):
            pass
    # Let the shutdown finish: the stalled client goes away.
    await stream.aclose()
    with trio.fail_after(10):
        await server.proc.wait()
    assert trio.current_time() - t0 < 5.0
    assert server.proc.returncode == 0


# -- usage and configuration errors ------------------------------------------------------
USAGE_ERRORS = [[ENTRY], [PYTHON, "-m", "relay"], [ENTRY, "serve", "--port", "abc"]]


async def run_all(jobs: list[tuple[list[str], dict[str, str]]]) -> list[Any]:
    """Run the processes concurrently; results in job order."""
    results: list[Any] = [None] * len(jobs)
    limiter = trio.CapacityLimiter(3)  # the machine may have few CPUs

    async def one(i: int, args: list[str], env: dict[str, str]) -> None:
        results[i] = await run(args, limiter, **env)

    async with trio.open_nursery() as nursery:
        for i, (args, env) in enumerate(jobs):
            nursery.start_soon(one, i, args, env)
    return results


async def test_usage_errors_exit_2() -> None:
    results = await run_all([(args, {}) for args in USAGE_ERRORS])
    for args, result in zip(USAGE_ERRORS, results, strict=True):
        assert result.returncode == 2, (args, result)
        assert result.stderr.strip(), args
        assert "listening" not in result.stdout


BAD_ENV = [
    ("OBSERVER_PORT", "abc"), ("OBSERVER_HTTP_PORT", "70000"), ("OBSERVER_RATE_LIMIT_RATE", "-1"),
    ("OBSERVER_LEGACY_TOKENLESS", "maybe"), ("OBSERVER_BACKPLANE_URL", "http://x"),
    ("OBSERVER_BACKPLANE_URL", "redis://host"), ("OBSERVER_MAX_MESSAGE_SIZE", "1.5"),
    ("OBSERVER_HEARTBEAT_INTERVAL", "soon"), ("OBSERVER_LOG_LEVEL", "LOUD"),
]


def serve_args_without(name: str) -> list[str]:
    """``serve`` with free ports, minus the flag that would override ``name``."""
    if name == "OBSERVER_PORT":
        return [PYTHON, "-m", "relay", "serve", "--http-port", "0"]
    if name == "OBSERVER_HTTP_PORT":
        return [PYTHON, "-m", "relay", "serve", "--port", "0"]
    return SERVE


async def test_bad_env_values_exit_2() -> None:
    jobs = [(serve_args_without(name), {name: value}) for name, value in BAD_ENV]
    jobs.append((SERVE, {"OBSERVER_TURN_URLS": "turn:a:3478", "OBSERVER_TURN_SECRET": ""}))
    results = await run_all(jobs)
    for (_, env), result in zip(jobs, results, strict=True):
        assert result.returncode == 2, (env, result)
        assert result.stderr.strip(), env
        assert "listening" not in result.stdout


# -- other startup failures --------------------------------------------------------------
async def test_port_in_use_exits_1() -> None:
    sock = trio.socket.socket()
    await sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = str(sock.getsockname()[1])
    jobs = [
        ([PYTHON, "-m", "relay", "serve", "--port", port, "--http-port", "0"], {}),
        ([PYTHON, "-m", "relay", "serve", "--port", "0"], {"OBSERVER_HTTP_PORT": port}),
    ]
    try:
        results = await run_all(jobs)
    finally:
        sock.close()
    for job, result in zip(jobs, results, strict=True):
        assert result.returncode == 1, (job, result)
        assert result.stderr.strip()
        assert "listening" not in result.stdout



async def test_unreachable_redis_at_startup_exits_1() -> None:
    """§1.1 / Appendix C: a backplane that cannot be reached at startup is a startup
    failure: exit status 1 within 10 s, with a message, and no listening lines."""
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, OBSERVER_BACKPLANE_URL=f"redis://127.0.0.1:{port}/0")
    started = trio.current_time()
    with trio.fail_after(10):
        result = await trio.run_process(
            [sys.executable, "-m", "relay", "serve", "--port", "0", "--http-port", "0"],
            env=env, capture_stdout=True, capture_stderr=True, check=False)
    assert result.returncode == 1, result.stderr.decode()
    assert trio.current_time() - started < 10
    assert b"listening" not in result.stdout
    assert b"cannot start" in result.stderr
