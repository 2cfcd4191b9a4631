"""An echo server on the relay's own WebSocket transport, for Autobahn|Testsuite.

Autobahn's fuzzingclient judges a server by what comes back: every message echoed, pings
answered, protocol violations failed with the right close code, the closing handshake
done properly. So the echo server is made of the pieces the relay serves with: the HTTP
upgrade of ``relay.transport.http``, ``wsframe.accept_key``, and a subclass of the relay's
``WebSocketConnection``, whose reader, frame parser (``wsread``), control-frame handling,
writer and close logic are what is under test. Only the message handling is the echo's.

The connection talks to its node through ``relay.ports.ConnectionHost``; :class:`EchoHost`
is a minimal one (metrics, a clock, and the callbacks the echo does not use). The bounds
are raised for Autobahn's section 9, whose messages reach 16 MiB and 65,537 frames (the
relay's defaults are 4 MiB and 1,000 frames, §2.1).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from collections.abc import Awaitable
from functools import partial
from typing import Any

import trio

from relay.codecs import wsframe
from relay.config import Config
from relay.metrics import Metrics
from relay.transport.connection import WebSocketConnection
from relay.transport.http import read_request, send_answer, send_switching, upgrade_refusal
from relay.transport.settings import TransportSettings
from relay.transport.wsread import FrameReader

log = logging.getLogger("conformance.echo")

MAX_MESSAGE_SIZE = 16 * 1024 * 1024  # Autobahn 9.1.6 / 9.2.6: one 16 MiB message
# Autobahn 9.3.1 / 9.4.1: 4 MiB in 64-byte fragments, and an empty last frame (Autobahn
# sends one when the size is a multiple of the fragment size).
MAX_FRAMES = 4 * 1024 * 1024 // 64 + 1
STOP_AFTER = 600.0  # a standalone echo server stops by itself


def echo_config(**changes: Any) -> Config:
    """The relay's defaults, with room for Autobahn's largest messages echoed at once."""
    values: dict[str, Any] = {
        "host": "127.0.0.1", "max_message_size": MAX_MESSAGE_SIZE,
        "send_queue_frames": 1 << 20, "send_queue_bytes": 1 << 30}
    values.update(changes)
    return dataclasses.replace(Config(), **values)


@dataclasses.dataclass(slots=True)
class EchoHost:
    """A ``relay.ports.ConnectionHost`` for echo connections, and what the server counts."""

    config: Config = dataclasses.field(default_factory=echo_config)
    max_frames: int = MAX_FRAMES
    metrics: Metrics = dataclasses.field(default_factory=Metrics)
    connections: int = 0
    errors: list[str] = dataclasses.field(default_factory=list)  # unexpected exceptions

    @property
    def settings(self) -> TransportSettings:
        return self.config.transport_settings()

    def now(self) -> float:
        return trio.current_time()

    def observer_event(self, conn: Any, event: str, data: Any, ref: Any) -> None:
        return None

    def signaling_message(self, conn: Any, text: str | None, binary: bool) -> None:
        return None

    def connection_closed(self, conn: Any) -> None:
        pass


class EchoConnection(WebSocketConnection):
    """Echoes each text and binary message as one frame of the same kind."""

    def __init__(self, host: EchoHost, stream: trio.SocketStream, ip: str,
                 trailing: bytes) -> None:
        settings = host.settings
        super().__init__(host, settings, stream, ip, trailing)
        self._frames = FrameReader(settings.max_message_size, trailing, host.max_frames)

    def handle_text(self, text: str) -> Awaitable[None] | None:
        self.push(wsframe.text_frame(text.encode("utf-8")))
        return None

    def handle_binary(self, payload: bytes) -> Awaitable[None] | None:
        self.push(wsframe.binary_frame(payload))
        return None


async def handle(host: EchoHost, stream: trio.SocketStream) -> None:
    """One TCP connection: the relay's strict handshake, then the echo until it closes."""
    host.connections += 1
    try:
        request = await read_request(stream)
        if request is None:
            return
        refusal = upgrade_refusal(request)
        if refusal is not None:
            await send_answer(stream, *refusal)
            return
        await send_switching(stream, wsframe.accept_key(request.headers["sec-websocket-key"]))
        await EchoConnection(host, stream, "127.0.0.1", request.trailing).run()
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass  # the client left during the handshake
    except Exception as exc:  # counted and reported: the run fails on any
        log.exception("echo connection failed")
        host.errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(0.5):
            await stream.aclose()


async def serve(host: EchoHost, port: int = 0, *,
                task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve on 127.0.0.1 until cancelled; reports the bound port through ``task_status``."""
    listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(partial(handle, host), listeners)


def main() -> None:
    """``python -m conformance.echo``: serve for a while, to try a client against it."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=9001)
    parser.add_argument("--seconds", type=float, default=STOP_AFTER)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve, EchoHost(), args.port)
            print(f"echo server on ws://127.0.0.1:{port}/ for {args.seconds:g} s", flush=True)
            await trio.sleep(args.seconds)
            nursery.cancel_scope.cancel()

    trio.run(run)


if __name__ == "__main__":
    main()
