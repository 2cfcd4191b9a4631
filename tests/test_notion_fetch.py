"""Notion import against a real local HTTP server (trio + h11) on 127.0.0.1 only."""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import pytest
import trio

from relay.core.steps_import import ImportFailure
from relay.server.notion_fetch import fetch_notion_tasks
from tests.fake_notion import FakeNotion, Reply, Responder, json_reply

HEX = "0123456789abcdef0123456789abcdef"
UUID = "01234567-89ab-cdef-0123-456789abcdef"
MIB = 1024 * 1024


async def serve(nursery: trio.Nursery, respond: Responder) -> FakeNotion:
    return await FakeNotion(respond, page_hex=HEX).start(nursery)


async def failure_of(server: FakeNotion, **kwargs: Any) -> str:
    with pytest.raises(ImportFailure) as info:
        await fetch_notion_tasks(server.page_url(), [server.base], **kwargs)
    return info.value.message


def block(block_type: str, title: str | None = None, content: list[str] | None = None) -> dict:
    value: dict[str, Any] = {"type": block_type, "alive": True}
    if title is not None:
        value["properties"] = {"title": [[title]]}
    if content is not None:
        value["content"] = content
    return {"role": "reader", "value": value}


def chunk(blocks: dict[str, Any], stack: list[Any] | None) -> dict[str, Any]:
    data: dict[str, Any] = {"recordMap": {"block": blocks}}
    if stack is not None:
        data["cursor"] = {"stack": stack}
    return data


NEXT = [[{"table": "block", "id": UUID, "index": 2}]]


# --------------------------------------------------------------------------------------------


async def test_multi_chunk_import(nursery: trio.Nursery) -> None:
    chunks = [
        chunk(
            {
                UUID: block("page", "Tasks", ["h1", "t1", "d1", "h2", "c2", "sub"]),
                "h1": block("header", "First <task>"),
                "t1": block("text", "Old text"),
            },
            NEXT,
        ),
        chunk(
            {
                "t1": block("text", "Write f(x) & test it"),  # later chunks win
                "d1": block("divider"),
                "h2": {
                    "role": "reader",
                    "value": {"value": block("sub_header", "Second")["value"]},
                },
            },
            [[{"table": "block", "id": UUID, "index": 4}]],
        ),
        chunk(
            {
                "c2": block("code", "print('hi')"),
                "sub": block("page", "Child page", ["hidden"]),
                "hidden": block("text", "never shown"),
            },
            [],
        ),
    ]
    server = await serve(nursery, lambda i, _body: json_reply(chunks[i]))

    steps = await fetch_notion_tasks(server.page_url(), [server.base])

    assert steps == [
        {
            "name": "1",
            "content": "<h3>First &lt;task&gt;</h3>Write f(x) &amp; test it<br>",
            "language": "html",
            "type": "exercise",
        },
        {
            "name": "2",
            "content": '<h3>Second</h3><pre class="ql-syntax">print(&#x27;hi&#x27;)</pre>',
            "language": "html",
            "type": "exercise",
        },
    ]
    assert len(server.requests) == 3
    first = server.requests[0]
    assert first.method == "POST"
    assert first.target == "/api/v3/loadPageChunk"
    assert first.headers["content-type"] == "application/json"
    assert first.body == {
        "page": {"id": UUID},
        "limit": 50,
        "cursor": {"stack": []},
        "chunkNumber": 0,
        "verticalColumns": False,
    }
    assert list(first.body) == ["page", "limit", "cursor", "chunkNumber", "verticalColumns"]
    assert server.requests[1].body["cursor"] == chunks[0]["cursor"]
    assert server.requests[1].body["chunkNumber"] == 1
    assert server.requests[2].body["cursor"] == chunks[1]["cursor"]
    assert server.requests[2].body["chunkNumber"] == 2


async def test_absent_cursor_stops_after_one_request(nursery: trio.Nursery) -> None:
    data = chunk({UUID: block("page", "P", ["a"]), "a": block("text", "only")}, None)
    server = await serve(nursery, lambda i, _body: json_reply(data))
    steps = await fetch_notion_tasks(server.page_url(), [server.base])
    assert [s["content"] for s in steps] == ["only<br>"]
    assert len(server.requests) == 1


async def test_url_not_in_allowlist_makes_no_request(nursery: trio.Nursery) -> None:
    server = await serve(nursery, lambda i, _body: json_reply(chunk({}, [])))
    other_port = server.port + 1 if server.port < 65535 else server.port - 1
    cases = [
        (server.page_url(), [f"http://127.0.0.1:{other_port}"]),  # port differs
        (server.page_url(), [f"https://127.0.0.1:{server.port}"]),  # scheme differs
        (server.page_url(), ["http://*.0.0.1:" + str(server.port)]),  # wildcard ≠ this host
        (server.page_url(), []),
        (f"http://user@127.0.0.1:{server.port}/{HEX}", [server.base]),
        (f"{server.base}/no-page-id", [server.base]),
    ]
    for url, bases in cases:
        with pytest.raises(ImportFailure):
            await fetch_notion_tasks(url, bases)
    assert server.requests == []


async def test_redirect_is_a_failure_and_not_followed(nursery: trio.Nursery) -> None:
    def respond(i: int, _body: Any) -> Reply:
        return Reply(status=302, headers=[("Location", f"{server.base}/elsewhere")])

    server = await serve(nursery, respond)
    assert "redirect" in await failure_of(server)
    assert len(server.requests) == 1


@pytest.mark.parametrize("status", [201, 404, 500])
async def test_non_200_is_a_failure(nursery: trio.Nursery, status: int) -> None:
    server = await serve(nursery, lambda i, _body: json_reply(chunk({}, []), status=status))
    assert str(status) in await failure_of(server)


@pytest.mark.parametrize("body", [b"{not json", b"", b'{"a": NaN}', b"\xff\xfe{}"])
async def test_invalid_json_is_a_failure(nursery: trio.Nursery, body: bytes) -> None:
    server = await serve(nursery, lambda i, _body: Reply(body=body))
    assert "JSON" in await failure_of(server)


async def test_invalid_json_in_a_later_chunk(nursery: trio.Nursery) -> None:
    first = json_reply(chunk({UUID: block("page", "P", ["a"]), "a": block("text", "x")}, NEXT))
    server = await serve(nursery, lambda i, _body: first if i == 0 else Reply(body=b"]"))
    assert "JSON" in await failure_of(server)
    assert len(server.requests) == 2


async def test_single_oversize_body(nursery: trio.Nursery) -> None:
    padded = chunk({}, [])
    padded["pad"] = "a" * (5 * MIB + 1)
    body = json.dumps(padded).encode()
    server = await serve(nursery, lambda i, _body: Reply(body=body))
    assert await failure_of(server) == "The Notion page is larger than 5 MiB"


async def test_oversize_streamed_body_without_length(nursery: trio.Nursery) -> None:
    padded = chunk({}, [])
    padded["pad"] = "a" * (6 * MIB)
    body = json.dumps(padded).encode()
    server = await serve(nursery, lambda i, _body: Reply(body=body, chunked=True))
    assert await failure_of(server) == "The Notion page is larger than 5 MiB"


async def test_byte_cap_sums_all_responses(nursery: trio.Nursery) -> None:
    padded = chunk({UUID: block("page", "P", ["a"]), "a": block("text", "x")}, NEXT)
    padded["pad"] = "a" * (2 * MIB)
    body = json.dumps(padded).encode()
    server = await serve(nursery, lambda i, _body: Reply(body=body, chunked=i % 2 == 1))
    assert await failure_of(server) == "The Notion page is larger than 5 MiB"
    assert len(server.requests) == 3

    # A body of exactly the cap is fine.
    small = chunk({UUID: block("page", "P", ["a"]), "a": block("text", "x")}, [])
    small["pad"] = ""
    exact = json.dumps(small).encode()
    server2 = await serve(nursery, lambda i, _body: Reply(body=exact))
    steps = await fetch_notion_tasks(server2.page_url(), [server2.base], max_bytes=len(exact))
    assert [s["content"] for s in steps] == ["x<br>"]


async def test_timeout_when_server_stalls(nursery: trio.Nursery) -> None:
    server = await serve(nursery, lambda i, _body: Reply(stall=True))
    with trio.fail_after(5):
        assert await failure_of(server, timeout=0.3) == "The Notion import timed out"
    assert len(server.requests) == 1


async def test_timeout_covers_the_whole_import(nursery: trio.Nursery) -> None:
    # Each answer is quick, but the later chunks never come: the deadline is global.
    first = json_reply(chunk({}, NEXT))
    server = await serve(nursery, lambda i, _body: first if i < 2 else Reply(stall=True))
    with trio.fail_after(5):
        assert await failure_of(server, timeout=0.3) == "The Notion import timed out"
    assert len(server.requests) == 3


async def test_request_cap(nursery: trio.Nursery) -> None:
    endless = json_reply(chunk({UUID: block("page", "P", ["a"]), "a": block("text", "x")}, NEXT))
    server = await serve(nursery, lambda i, _body: endless)
    assert await failure_of(server) == "The Notion page is too large"
    assert len(server.requests) == 100
    assert [r.body["chunkNumber"] for r in server.requests] == list(range(100))


async def test_request_cap_reached_exactly_on_last_chunk(nursery: trio.Nursery) -> None:
    def respond(i: int, _body: Any) -> Reply:
        stack = NEXT if i < 2 else []
        return json_reply(chunk({UUID: block("page", "P", ["a"]), "a": block("text", "x")}, stack))

    server = await serve(nursery, respond)
    steps = await fetch_notion_tasks(server.page_url(), [server.base], max_requests=3)
    assert len(steps) == 1 and len(server.requests) == 3


async def test_connection_refused() -> None:
    sock = trio.socket.socket()
    await sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens on this port any more
    base = f"http://127.0.0.1:{port}"
    with pytest.raises(ImportFailure) as info:
        await fetch_notion_tasks(f"{base}/{HEX}", [base])
    assert info.value.message == "Could not connect to Notion"


async def test_server_hangs_up(nursery: trio.Nursery) -> None:
    async def hang_up(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        await stream.aclose()

    listeners = await nursery.start(partial(trio.serve_tcp, hang_up, 0, host="127.0.0.1"))
    base = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
    with pytest.raises(ImportFailure) as info:
        await fetch_notion_tasks(f"{base}/{HEX}", [base])
    assert info.value.message == "Could not connect to Notion"


async def test_zero_and_too_many_tasks(nursery: trio.Nursery) -> None:
    empty = json_reply(chunk({UUID: block("page", "P", [])}, []))
    server = await serve(nursery, lambda i, _body: empty)
    assert await failure_of(server) == "No tasks were found"

    # 101 text blocks separated by distinct dividers (a block id is visited only once).
    content = [x for n in range(101) for x in (f"t{n}", f"d{n}")]
    blocks: dict[str, Any] = {UUID: block("page", "P", content)}
    blocks |= {f"t{n}": block("text", str(n)) for n in range(101)}
    blocks |= {f"d{n}": block("divider") for n in range(101)}
    many = json_reply(chunk(blocks, []))
    server2 = await serve(nursery, lambda i, _body: many)
    assert "more than 100" in await failure_of(server2)


async def test_non_object_answer_yields_no_tasks(nursery: trio.Nursery) -> None:
    server = await serve(nursery, lambda i, _body: json_reply([1, 2, 3]))
    assert await failure_of(server) == "No tasks were found"
    assert len(server.requests) == 1
