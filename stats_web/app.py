"""The web port: health, metrics and (later) the live stats pages."""

from __future__ import annotations

from typing import TYPE_CHECKING

from quart import Response
from quart_trio import QuartTrio

if TYPE_CHECKING:
    from relay.server import RelayServer


def create_app(server: RelayServer) -> QuartTrio:
    app = QuartTrio(__name__)

    @app.after_request
    async def no_store(response: Response) -> Response:
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.get("/healthz")
    async def healthz() -> tuple[dict[str, object], int]:
        status, body = server.health()
        return body, status

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(server.metrics.render(), content_type="text/plain; version=0.0.4")

    return app
