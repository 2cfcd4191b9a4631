"""Relay processes sharing a real Redis, for the scale-out tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any

import trio
from trio_websocket import connect_websocket_url

from tests.support import Client


class Node:
    """One ``python -m relay serve`` process using the Redis backplane."""

    def __init__(self, process: trio.Process, port: int, web_port: int) -> None:
        self.process = process
        self.port = port
        self.web_port = web_port
        self.url = f"ws://127.0.0.1:{port}"

    def kill9(self) -> None:
        self.process.send_signal(signal.SIGKILL)


async def start_node(nursery: trio.Nursery, redis_url: str, **env: str) -> Node:
    environ = dict(os.environ, OBSERVER_BACKPLANE_URL=redis_url, OBSERVER_LOG_LEVEL="WARNING",
                   OBSERVER_RATE_LIMIT_RATE="10000", OBSERVER_RATE_LIMIT_BURST="10000", **env)
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "relay", "serve", "--port", "0", "--http-port", "0"],
        stdout=subprocess.PIPE, env=environ,
    )
    assert process.stdout is not None
    buffer = b""
    with trio.fail_after(20):
        while buffer.count(b"\n") < 2:
            chunk = await process.stdout.receive_some()
            assert chunk, "the node exited during startup"
            buffer += chunk
    lines = buffer.decode().splitlines()
    port = int(lines[0].rsplit(":", 1)[1])
    web_port = int(lines[1].rsplit(":", 1)[1])
    node = Node(process, port, web_port)

    async def reap() -> None:
        try:
            await process.wait()
        finally:
            if process.returncode is None:
                process.kill()

    nursery.start_soon(reap)
    return node


async def client(nursery: trio.Nursery, node: Node, path: str = "/observer", **kw: Any
                 ) -> Client:
    return Client(await connect_websocket_url(nursery, node.url + path, **kw))
