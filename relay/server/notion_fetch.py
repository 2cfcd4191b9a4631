"""Network side of the Notion ``steps/import`` (protocol §6.7).

A teacher-supplied URL makes the server issue outgoing requests, so every limit here is a
defence against server-side request forgery or resource exhaustion: the URL is checked against
the allowlist before any I/O, the request target is rebuilt from the validated origin,
redirects are refused, and the whole import is bounded in time, bytes and request count.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import trio

from relay.core.steps_import import (
    AllowedBase,
    ImportFailure,
    notion_blocks_to_tasks,
    notion_page_id,
    validate_tasks,
)

__all__ = ["ClientFactory", "fetch_notion_tasks"]

ClientFactory = Callable[[], httpx.AsyncClient]

_MIB = 1024 * 1024
_HEADERS = {
    "Content-Type": "application/json",
    "Accept": "application/json",
    # Ask for an uncompressed body so the byte cap bounds memory (no decompression bombs).
    "Accept-Encoding": "identity",
}


def _size_text(limit: int) -> str:
    return f"{limit // _MIB} MiB" if limit % _MIB == 0 else f"{limit} bytes"


class _ByteBudget:
    """Bytes still allowed across all responses of one import."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def failure(self) -> ImportFailure:
        return ImportFailure(f"The Notion page is larger than {_size_text(self.limit)}")

    def check_declared(self, content_length: str | None) -> None:
        # Fail before reading when the server already announces too much.
        declared = content_length.strip() if content_length is not None else ""
        if declared.isascii() and declared.isdigit() and self.used + int(declared) > self.limit:
            raise self.failure()

    def add(self, size: int) -> None:
        self.used += size
        if self.used > self.limit:
            raise self.failure()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # RFC 8259 has no NaN/Infinity


def _decode_json(raw: bytes) -> Any:
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ImportFailure("Notion sent an invalid answer (not JSON)") from None


async def _post_chunk(
    client: httpx.AsyncClient, endpoint: str, body: dict[str, Any], budget: _ByteBudget
) -> Any:
    payload = json.dumps(body, separators=(",", ":")).encode("utf-8")
    try:
        async with client.stream(
            "POST", endpoint, content=payload, headers=_HEADERS, follow_redirects=False
        ) as response:
            status = response.status_code
            if 300 <= status < 400:
                raise ImportFailure("Notion answered with a redirect, which is not followed")
            if status != 200:
                raise ImportFailure(f"Notion answered with HTTP status {status}")
            budget.check_declared(response.headers.get("content-length"))
            pieces: list[bytes] = []
            async for piece in response.aiter_bytes():
                budget.add(len(piece))
                pieces.append(piece)
    except httpx.TimeoutException:
        raise ImportFailure("The Notion import timed out") from None
    except httpx.TransportError:
        raise ImportFailure("Could not connect to Notion") from None
    except httpx.HTTPError:
        raise ImportFailure("Could not read the answer from Notion") from None
    return _decode_json(b"".join(pieces))


def _next_cursor(data: Any) -> Any | None:
    """The cursor to send next, or ``None`` when ``cursor.stack`` is empty or absent."""
    cursor = data.get("cursor") if isinstance(data, dict) else None
    stack = cursor.get("stack") if isinstance(cursor, dict) else None
    return cursor if isinstance(stack, list) and stack else None


async def _load_blocks(
    client: httpx.AsyncClient,
    endpoint: str,
    page_uuid: str,
    budget: _ByteBudget,
    max_requests: int,
) -> dict[str, Any]:
    blocks: dict[str, Any] = {}
    cursor: Any = {"stack": []}
    for chunk_number in range(max_requests):
        data = await _post_chunk(
            client,
            endpoint,
            {
                "page": {"id": page_uuid},
                "limit": 50,
                "cursor": cursor,
                "chunkNumber": chunk_number,
                "verticalColumns": False,
            },
            budget,
        )
        record_map = data.get("recordMap") if isinstance(data, dict) else None
        chunk_blocks = record_map.get("block") if isinstance(record_map, dict) else None
        if isinstance(chunk_blocks, dict):
            blocks.update(chunk_blocks)  # later chunks win
        cursor = _next_cursor(data)
        if cursor is None:
            return blocks
    raise ImportFailure("The Notion page is too large")


def _default_client(timeout: float) -> httpx.AsyncClient:
    # trust_env=False: no proxy or .netrc from the environment may redirect or decorate
    # requests that the allowlist was meant to pin down.
    return httpx.AsyncClient(
        follow_redirects=False, trust_env=False, timeout=httpx.Timeout(timeout)
    )


async def fetch_notion_tasks(
    url: str,
    allowed_bases: Sequence[str | AllowedBase],
    *,
    timeout: float = 10.0,
    max_bytes: int = 5 * _MIB,
    max_requests: int = 100,
    client_factory: ClientFactory | None = None,
) -> list[dict[str, str]]:
    """Import a Notion page as numbered steps, or raise :class:`ImportFailure`.

    ``timeout`` bounds the whole import (all requests and parsing), ``max_bytes`` the summed
    response bodies and ``max_requests`` the ``loadPageChunk`` calls. ``client_factory`` lets
    callers share transport settings; redirects are refused per request regardless.
    """
    origin, page_uuid = notion_page_id(url, allowed_bases)  # before any I/O, always
    endpoint = f"{origin}/api/v3/loadPageChunk"
    budget = _ByteBudget(max_bytes)
    with trio.move_on_after(timeout):
        client = client_factory() if client_factory is not None else _default_client(timeout)
        async with client:
            blocks = await _load_blocks(client, endpoint, page_uuid, budget, max_requests)
        return validate_tasks(notion_blocks_to_tasks(page_uuid, blocks))
    raise ImportFailure("The Notion import timed out")
