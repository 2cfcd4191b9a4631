"""The web port (§8): live stats page, its event stream, the JSON API, health, metrics."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import trio
from quart import Response, render_template, request, url_for
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from . import share_pages, spaces
from .access import Denied, find_room
from .events import stats_stream
from .view import LEGEND, MANY_STEPS, SYMBOLS, escape_output, row_classes, summary

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, Scope

    from relay.ports import WebHost

    ASGIApp = Callable[[Scope, ASGIReceiveCallable, ASGISendCallable],
                       Coroutine[Any, Any, None]]

HTML = "text/html; charset=utf-8"
#: The page loads only its own script and stylesheet and talks only to this origin.
PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self'; base-uri 'none'; form-action 'none'")
ERRORS = {Denied.NOT_FOUND: "room_not_found", Denied.FORBIDDEN: "forbidden",
          Denied.RATE_LIMITED: "rate_limited"}


def json_response(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body, ensure_ascii=False), status,
                    content_type="application/json")


def web_port_middleware(inner: ASGIApp) -> ASGIApp:
    """ASGI middleware for two things the app cannot do itself.

    * Every WebSocket upgrade is answered with HTTP 404 (the web port has none).
    * The last ``send`` of an HTTP response is shielded from cancellation. Quart-Trio
      cancels the request's nursery as soon as Hypercorn reports the disconnect, which
      cancelled Hypercorn's socket close for ``Connection: close`` / HTTP/1.0 requests:
      the client then never saw EOF. Data sends are already shielded by Hypercorn.
    """

    async def app(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] == "websocket":
            body = b'{"error":"not_found"}'
            headers = [(b"content-type", b"application/json"),
                       (b"content-length", str(len(body)).encode())]
            await send({"type": "websocket.http.response.start", "status": 404,
                        "headers": headers})
            await send({"type": "websocket.http.response.body", "body": body,
                        "more_body": False})
            return
        if scope["type"] != "http":
            await inner(scope, receive, send)
            return

        async def send_last_shielded(message: Any) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                with trio.CancelScope(shield=True):
                    await send(message)
            else:
                await send(message)

        await inner(scope, receive, send_last_shielded)

    return app


def create_app(host: WebHost) -> QuartTrio:
    """Build the Quart-Trio app serving ``host``'s web port."""
    app = QuartTrio(__name__)
    app.jinja_options = {"finalize": escape_output, "trim_blocks": True, "lstrip_blocks": True}
    app.asgi_app = web_port_middleware(app.asgi_app)  # type: ignore[method-assign,assignment]

    async def page(template: str, status: int, **context: Any) -> Response:
        text = await render_template(template, **context)
        response = Response(text, status, content_type=HTML)
        response.headers["Content-Security-Policy"] = PAGE_CSP
        response.headers["Referrer-Policy"] = "no-referrer"  # the URL carries the stats key
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    @app.after_request
    async def no_store(response: Response) -> Response:
        # The server adds "Cache-Control: no-store" to every answer (stats_web/server.py);
        # drop any other caching header (e.g. Quart's on static files) so it is the only one.
        response.headers.pop("Cache-Control", None)
        return response

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        status = error.code or 500
        if request.path.startswith("/api/"):
            return json_response({"error": (error.name or "error").lower().replace(" ", "_")},
                                 status)
        return await page("error.html", status, title=f"{status} {error.name}",
                          message=error.name, detail=None)

    @app.get("/healthz")
    async def healthz() -> tuple[dict[str, object], int]:
        status, body = host.health()
        return body, status

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(host.metrics_text(), content_type="text/plain; version=0.0.4")

    def client_ip() -> str:
        """The client's address, behind trusted proxies too (§1.3): the failed-join
        limit of the stats endpoints (§8) counts per client, not per proxy."""
        return host.client_ip(request.remote_addr or "?",
                              {k.lower(): v for k, v in request.headers.items()})

    @app.get("/roomstats/<raw_id>")
    async def stats_page(raw_id: str) -> Response:
        found = await find_room(host, raw_id, request.args.get("key"), client_ip())
        if found.denied is Denied.RATE_LIMITED:
            return await page("error.html", 429, title="Too many requests",
                              message="Too many requests",
                              detail="Too many failed attempts from this address; "
                                     "wait a minute.")
        if found.denied is Denied.NOT_FOUND:
            return await page("error.html", 404, title="Room not found",
                              message=f"Room # {raw_id} not found!",
                              detail="The room was closed or the link is wrong.")
        if found.room is None:
            return await page("error.html", 403, title="Access denied", message="Access denied",
                              detail="This page needs the room's stats link (with its key).")
        stats = found.room.document
        return await page(
            "stats.html", 200, stats=stats, summary=summary(stats), symbols=SYMBOLS,
            legend=LEGEND, row_classes=row_classes, many_steps=MANY_STEPS,
            events_url=url_for("stats_events", raw_id=found.room.room_id),
            api_url=url_for("stats_api", raw_id=found.room.room_id))

    def refused(denied: Denied | None) -> Response:
        """The JSON 404/403 of the API and the event stream."""
        assert denied is not None
        return json_response({"error": ERRORS[denied]}, denied.value)

    @app.get("/roomstats/<raw_id>/events")
    async def stats_events(raw_id: str) -> Response:
        found = await find_room(host, raw_id, request.args.get("key"), client_ip())
        if found.room is None:
            return refused(found.denied)
        response = Response(stats_stream(host, found.room), content_type="text/event-stream")
        response.timeout = None  # streams for as long as needed
        response.headers["X-Accel-Buffering"] = "no"
        return response

    @app.get("/api/rooms/<raw_id>/stats")
    async def stats_api(raw_id: str) -> Response:
        found = await find_room(host, raw_id, request.args.get("key"), client_ip())
        if found.room is None:
            return refused(found.denied)
        return json_response(found.room.document)

    spaces.register(app, host, page, json_response)
    share_pages.register(app, host)
    return app
