"""Run the Quart-Trio web app on Hypercorn inside the relay's nursery."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from .app import create_app

if TYPE_CHECKING:
    from relay.ports import WebHost


class _Config(HypercornConfig):
    """Hypercorn settings that add ``Cache-Control: no-store`` to every answer.

    Appendix C wants it on every HTTP answer of the port, including the 400s Hypercorn
    sends itself for malformed requests, where the app never runs: the server's own
    header list is the one place every answer goes through.
    """

    def response_headers(self, protocol: str) -> list[tuple[bytes, bytes]]:
        return [*super().response_headers(protocol), (b"cache-control", b"no-store")]


async def serve_web(host: WebHost, bind_host: str, port: int, *,
                    task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Serve the web port until ``host`` shuts down; reports the bound port."""
    cfg = _Config()
    cfg.bind = [f"{bind_host}:{port}"]
    cfg.accesslog = None
    cfg.errorlog = None
    cfg.graceful_timeout = 1.0
    cfg.keep_alive_timeout = 5.0
    app = create_app(host)

    async def started(*, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        await serve(app, cfg, shutdown_trigger=host.wait_shutdown,  # type: ignore[arg-type]
                    task_status=task_status)

    async with trio.open_nursery() as nursery:
        binds = await nursery.start(started)
        port = int(str(binds[0]).rsplit(":", 1)[1])
        task_status.started(port)
