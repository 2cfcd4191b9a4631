"""The space inspector (§9.8): a read-only view of one ChatRoom space on the web port.

Keyed like the stats pages: the space key unless ``OBSERVER_PUBLIC_STATS`` is on, and while
``OBSERVER_CHATROOM_SECRET`` is empty (no keys exist) every answer is 403. The key is
checked first, because space names are guessable: 403, then 404 for an unknown space.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio
from quart import Response, request, url_for
from quart_trio import QuartTrio

from relay.spaces.names import check_space_key, is_valid_space_name

from .events import KEEPALIVE, KEEPALIVE_INTERVAL, MIN_INTERVAL, first_of

if TYPE_CHECKING:
    from relay.ports import WebHost

CLOSED = b"event: closed\ndata: {}\n\n"


def _event(doc: dict[str, Any]) -> bytes:
    data = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
    return f"event: space\ndata: {data}\n\n".encode()


def register(app: QuartTrio, host: WebHost, page: Callable[..., Awaitable[Response]],
             json_response: Callable[..., Response]) -> None:

    def allowed(space: str) -> bool:
        if host.public_stats:
            return True
        secret = host.chatroom_secret
        return bool(secret) and check_space_key(secret, space, request.args.get("key"))

    def lookup(space: str) -> tuple[int, dict[str, Any]] | None:
        return host.space_document(space) if is_valid_space_name(space) else None

    @app.get("/spaces/<space>")
    async def space_page(space: str) -> Response:
        if not allowed(space):
            return await page("error.html", 403, title="Access denied", message="Access denied",
                              detail="This page needs the space's key.")
        found = lookup(space)
        if found is None:
            return await page("error.html", 404, title="Space not found",
                              message=f"Space {space} not found!", detail=None)
        return await page("space.html", 200, doc=found[1],
                          events_url=url_for("space_events", space=space))

    @app.get("/api/spaces/<space>")
    async def space_api(space: str) -> Response:
        if not allowed(space):
            return json_response({"error": "forbidden"}, 403)
        found = lookup(space)
        if found is None:
            return json_response({"error": "space_not_found"}, 404)
        return json_response(found[1])

    @app.get("/spaces/<space>/events")
    async def space_events(space: str) -> Response:
        if not allowed(space):
            return json_response({"error": "forbidden"}, 403)
        found = lookup(space)
        if found is None:
            return json_response({"error": "space_not_found"}, 404)
        response = Response(_stream(host, space, found), content_type="text/event-stream")
        response.timeout = None
        response.headers["X-Accel-Buffering"] = "no"
        return response


async def _stream(host: WebHost, space: str, first: tuple[int, dict[str, Any]]
                  ) -> AsyncIterator[bytes]:
    """``space`` events as §8.2's stats stream: at once, after changes (at most one per
    second), keep-alives, ``closed`` when the space goes."""
    clock = trio.current_time
    sent = first[0]
    yield _event(first[1])
    last_event = last_write = clock()
    while not host.shutting_down:
        found = host.space_document(space)
        if found is None:
            yield CLOSED
            return
        now = clock()
        if found[0] != sent:
            deadline = last_event + MIN_INTERVAL
            if now >= deadline:
                sent = found[0]
                yield _event(found[1])
                last_event = last_write = clock()
                continue
        else:
            deadline = last_write + KEEPALIVE_INTERVAL
            if now >= deadline:
                yield KEEPALIVE
                last_write = clock()
                continue
        await first_of(deadline - now, lambda: host.wait_space_change(space),
                       host.wait_shutdown)
