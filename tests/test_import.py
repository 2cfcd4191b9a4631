"""§6.7 steps/import through the socket: markdown, and Notion against a real local server."""

from __future__ import annotations

from typing import Any

import trio

from tests.fake_notion import FakeNotion, Reply, Responder, json_reply
from tests.support import (
    Client,
    Relay,
    SioRaw,
    StartRelay,
    fails,
    nothing_before_sentinel,
    open_classroom,
    wait_until,
)

HEX = "0123456789abcdef0123456789ABCDEF"
UUID = "01234567-89ab-cdef-0123-456789abcdef"
IMPORT_OK = {"type": "SUCCESS", "message": "Tasks were imported successfully!"}
BUSY = "An import is already running"
SUFFIX = "?pvs=4#frag"


def answer(data: Any, status: int = 200) -> Reply:
    return json_reply(data, status=status)


def block(kind: str, title: Any = None, content: list[str] | None = None) -> dict[str, Any]:
    value: dict[str, Any] = {"type": kind}
    if title is not None:
        value["properties"] = {"title": title}
    if content is not None:
        value["content"] = content
    return {"value": value}


CHUNK_1 = {
    UUID: block("page", [["My tasks"]], ["h1", "t1", "d1", "c1", "sub", "t2"]),
    "h1": block("sub_header", [["Task A"]]),
    "t1": block("text", ["Do ", ["X & Y", [["b"]]]]),
    "d1": block("divider"),
}
CHUNK_2 = {
    "c1": block("code", [["print('<hi>')"]]),
    "sub": block("page", [["Sub page"]], ["hidden"]),
    "hidden": block("text", [["never shown"]]),
    # The newer double-wrapped record shape.
    "t2": {"value": {"value": {"type": "text", "properties": {"title": [["Then"]]},
                               "content": ["t3"]}}},
    "t3": block("bulleted_list", [["nested"]]),
}
CURSOR = {"stack": [[{"table": "block", "id": "t1", "index": 2}]]}
NOTION_STEPS = [
    {"name": "1", "content": "<h3>Task A</h3>Do X &amp; Y<br>", "language": "html",
     "type": "exercise"},
    {"name": "2", "content": "<pre class=\"ql-syntax\">print(&#x27;&lt;hi&gt;&#x27;)</pre>"
                             "Then<br>nested<br>", "language": "html", "type": "exercise"},
]


async def two_chunks(index: int, body: Any) -> Reply:
    if index == 0:
        return answer({"recordMap": {"block": CHUNK_1}, "cursor": CURSOR})
    return answer({"recordMap": {"block": CHUNK_2}, "cursor": {"stack": []}})


async def notion_relay(start_relay: StartRelay, nursery: trio.Nursery,
                       respond: Responder | None = None) -> tuple[Relay, FakeNotion]:
    fake = await FakeNotion(respond, page_hex=HEX, page_suffix=SUFFIX).start(nursery)
    relay = await start_relay(notion_base_urls=[fake.base])
    return relay, fake


def check_import_failure(frames: list[dict[str, Any]]) -> str:
    """alerts ERROR M, then error import_failed M, then the failed ack; returns M."""
    assert [f["event"] for f in frames] == ["alerts", "error", "ack"], frames
    alert, error, ack = frames
    assert alert["data"]["type"] == "ERROR"
    message = alert["data"]["message"]
    assert isinstance(message, str) and message
    assert "seq" in alert and "seq" not in error
    assert error["data"] == {"code": "import_failed", "message": message,
                             "event": "steps/import"}
    assert error["ref"] == ack["ref"]
    assert ack["data"] == {"ok": False, "error": {"code": "import_failed", "message": message}}
    return message


async def rehost(relay: Relay, host: Client,
                 room: dict[str, Any]) -> tuple[Client, list[Any]]:
    """Fresh rehost on a new connection (replacing ``host``): the new client and its
    snapshot frames other than room/update."""
    new = await relay.client()
    new.last_seq = host.last_seq
    frames = await new.ok("room/rehost", {"room_id": room["room_id"], "user_id": 1,
                                          "token": room["token"]})
    assert await host.closed() == 4003
    assert frames[0]["event"] == "rtc/config"
    return new, [(f["event"], f["data"]) for f in frames[1:] if f["event"] != "room/update"]


async def rehost_snapshot(relay: Relay, host: Client, room: dict[str, Any]) -> list[Any]:
    return (await rehost(relay, host, room))[1]


# -- markdown ---------------------------------------------------------------------------
async def test_markdown_import_exact_order(relay: Relay) -> None:
    host, room, (ann,) = await open_classroom(relay, "Ann")
    frames = await host.call("steps/import", {"markdown": "# Task A\nDo X\n---\nB & C"})
    assert [f["event"] for f in frames] == ["steps/load", "alerts", "ack"]
    load, alert, ack = frames
    assert load == {"event": "steps/load", "seq": host.last_seq - 1, "data": [
        {"name": "1", "content": "<h3>Task A</h3>Do X<br>", "language": "html",
         "type": "exercise"},
        {"name": "2", "content": "B &amp; C<br>", "language": "html", "type": "exercise"},
    ]}
    assert alert == {"event": "alerts", "data": IMPORT_OK, "seq": host.last_seq}
    assert ack["data"] == {"ok": True}
    # Students see nothing: the steps are only a draft.
    await nothing_before_sentinel(ann, host)
    late = await relay.client()
    snap = await late.ok("room/join", {"room_id": room["room_id"], "name": "Bob"})
    assert [f["event"] for f in snap] == ["room/join", "rtc/config"]


async def test_markdown_draft_then_publish(relay: Relay) -> None:
    host, room, (ann,) = await open_classroom(relay, "Ann")
    await host.ok("steps/all", [{"name": "old", "content": "c", "language": "py",
                                 "type": "theory"}])
    published = (await ann.expect("steps/all"))["data"]
    md = "```\r\nx < 1  \r\n```\r\n\r\n---\r\n## Two ##\r\n"
    frames = await host.ok("steps/import", {"markdown": md})
    draft = frames[0]["data"]
    assert [s["content"] for s in draft] == ['<pre class="ql-syntax">x &lt; 1  </pre>',
                                             "<h3>Two</h3>"]
    await nothing_before_sentinel(ann)
    # The host's snapshot shows the draft rather than the published steps ...
    host, snap = await rehost(relay, host, room)
    assert snap == [("steps/load", draft)]
    # ... until steps/all publishes, which clears the draft.
    final = [{"name": "P", "content": "p", "language": "py", "type": "exercise"}]
    await host.ok("steps/all", final)
    assert (await ann.expect("steps/all"))["data"] == final != published
    _, snap = await rehost(relay, host, room)
    assert snap == [("steps/load", final)]


async def test_markdown_failures(relay: Relay) -> None:
    host, room, (ann,) = await open_classroom(relay, "Ann")
    await host.ok("steps/import", {"markdown": "kept"})
    messages = []
    for md in ("", "   \n\n---\n  \n", "\n---\n".join(f"t{i}" for i in range(101)),
               "a" * (256 * 1024 + 1)):
        frames = await host.call("steps/import", {"markdown": md})
        messages.append(check_import_failure(frames))
    assert len(set(messages)) == 3  # empty twice, too many, too big
    # 100 tasks are fine.
    frames = await host.ok("steps/import", {"markdown": "\n---\n".join(f"t{i}"
                                                                       for i in range(100))})
    assert len(frames[0]["data"]) == 100 and frames[0]["data"][-1]["name"] == "100"
    frames = await host.call("steps/import", {"markdown": ""})
    check_import_failure(frames)
    await nothing_before_sentinel(ann, host)
    # The failure left the last successful draft in place.
    snap = await rehost_snapshot(relay, host, room)
    assert len(snap[0][1]) == 100


async def test_import_payload_errors_have_no_alert(relay: Relay) -> None:
    host, room, (ann,) = await open_classroom(relay, "Ann")
    for bad in ({}, {"url": "http://x", "markdown": "y"}, {"url": 5}, {"markdown": 5},
                {"markdown": ["x"]}, [], "x", {"markdown": "x", "room_id": "1"}):
        await fails(host, "steps/import", bad, "invalid_payload")
    await fails(host, "steps/import", {"url": "https://notion.so/" + "a" * 2040}, "too_large")
    await fails(host, "steps/import", {"markdown": "a" * (1024 * 1024 + 1)}, "too_large")
    await fails(host, "steps/import", {"markdown": "é" * (512 * 1024) + "a"}, "too_large")
    await fails(host, "steps/import", {"markdown": "x", "room_id": room["room_id"] + 1},
                "forbidden")
    await fails(ann, "steps/import", {"markdown": "x"}, "not_host")
    unbound = await relay.client()
    await fails(unbound, "steps/import", {"markdown": "x"}, "not_in_room")
    await nothing_before_sentinel(host, ann)


async def test_markdown_of_exactly_one_mib_is_accepted(relay: Relay) -> None:
    host, _, _ = await open_classroom(relay)
    md = "\n---\n".join(["x" * 1000] * 100)
    md += "\n" * (1024 * 1024 - len(md))
    assert len(md.encode()) == 1024 * 1024
    frames = await host.ok("steps/import", {"markdown": md})
    assert [f["event"] for f in frames] == ["steps/load", "alerts"]


# -- Notion -----------------------------------------------------------------------------
async def test_notion_import_success(start_relay: StartRelay, nursery: trio.Nursery) -> None:
    relay, fake = await notion_relay(start_relay, nursery, two_chunks)
    host, room, (ann,) = await open_classroom(relay, "Ann")
    frames = await host.call("steps/import", {"url": fake.page_url()})
    assert [f["event"] for f in frames] == ["steps/load", "alerts", "ack"]
    assert frames[0]["data"] == NOTION_STEPS
    assert frames[1]["data"] == IMPORT_OK
    assert frames[2]["data"] == {"ok": True}
    # The requests: POST loadPageChunk with the exact bodies, following the cursor.
    assert len(fake.requests) == 2
    for index, request in enumerate(fake.requests):
        assert request.method == "POST"
        assert request.target == "/api/v3/loadPageChunk"
        assert request.headers["content-type"] == "application/json"
        assert request.body == {
            "page": {"id": UUID}, "limit": 50,
            "cursor": {"stack": []} if index == 0 else CURSOR,
            "chunkNumber": index, "verticalColumns": False}
    await nothing_before_sentinel(ann)
    snap = await rehost_snapshot(relay, host, room)
    assert snap == [("steps/load", NOTION_STEPS)]


async def test_notion_runs_in_background_and_second_import_fails(
        start_relay: StartRelay, nursery: trio.Nursery) -> None:
    gate = trio.Event()

    async def slow(index: int, body: Any) -> Reply:
        await gate.wait()
        return await two_chunks(index, body)

    relay, fake = await notion_relay(start_relay, nursery, slow)
    host, _room, (ann,) = await open_classroom(relay, "Ann")
    await host.send("steps/import", {"url": fake.page_url()}, ref="imp")
    # Other events are handled meanwhile.
    frames = await host.ok("steps/table", {})
    assert [f["event"] for f in frames] == ["steps/table"]
    await ann.ok("message/to_mentor", {"content": "hi"})
    assert (await host.expect("message/to_mentor"))["data"]["content"] == "hi"
    # A second import while one runs: import_failed without an alert.
    for data in ({"markdown": "# x"}, {"url": fake.page_url()}):
        error = await fails(host, "steps/import", data, "import_failed")
        assert error["message"] == BUSY
    await wait_until(lambda: bool(fake.requests))
    assert len(fake.requests) == 1
    gate.set()
    load = await host.expect("steps/load")
    assert load["data"] == NOTION_STEPS
    assert (await host.expect("alerts"))["data"] == IMPORT_OK
    ack = await host.expect("ack")
    assert ack == {"event": "ack", "ref": "imp", "data": {"ok": True}}
    assert len(fake.requests) == 2
    await nothing_before_sentinel(host, ann)
    # Finished: a new import may start.
    assert [f["event"] for f in await host.ok("steps/import", {"markdown": "y"})] == [
        "steps/load", "alerts"]


async def test_notion_http_failure(start_relay: StartRelay, nursery: trio.Nursery) -> None:
    async def broken(index: int, body: Any) -> Reply:
        return Reply(500, b'{"error":"boom"}')

    relay, fake = await notion_relay(start_relay, nursery, broken)
    host, room, (ann,) = await open_classroom(relay, "Ann")
    await host.ok("steps/import", {"markdown": "draft"})
    frames = await host.call("steps/import", {"url": fake.page_url()})
    check_import_failure(frames)
    assert len(fake.requests) == 1
    await nothing_before_sentinel(host, ann)
    # The failure released the room's import slot and kept the old draft.
    snap = await rehost_snapshot(relay, host, room)
    assert snap == [("steps/load", [{"name": "1", "content": "draft<br>", "language": "html",
                                     "type": "exercise"}])]


async def test_notion_bad_answers(start_relay: StartRelay, nursery: trio.Nursery) -> None:
    answers: list[Reply] = [
        Reply(200, b"not json"),
        answer({"recordMap": {"block": {}}}),  # zero tasks
        Reply(302, headers=[("Location", "placeholder")]),
    ]
    target = await FakeNotion(page_hex=HEX, page_suffix=SUFFIX).start(nursery)
    answers[2] = Reply(302, headers=[("Location", target.page_url())])

    async def scripted(index: int, body: Any) -> Reply:
        return answers[index]

    relay, fake = await notion_relay(start_relay, nursery, scripted)
    host, _, _ = await open_classroom(relay)
    for count in range(1, 4):
        check_import_failure(await host.call("steps/import", {"url": fake.page_url()}))
        assert len(fake.requests) == count
    # The redirect was not followed.
    assert target.requests == []


async def test_notion_url_not_allowed_makes_no_request(
        start_relay: StartRelay, nursery: trio.Nursery) -> None:
    relay, fake = await notion_relay(start_relay, nursery, two_chunks)
    other = await FakeNotion(two_chunks, page_hex=HEX, page_suffix=SUFFIX).start(nursery)
    host, _, (ann,) = await open_classroom(relay, "Ann")
    urls = [
        other.page_url(),  # another port
        fake.page_url(host="localhost"),  # another host name for the same server
        fake.page_url().replace("http://", "https://"),  # another scheme
        f"http://user:pw@127.0.0.1:{fake.port}/{HEX}",  # userinfo
        f"http://127.0.0.1:{fake.port}/no-page-id",  # allowed, but no page id
        "not a url",
    ]
    for url in urls:
        check_import_failure(await host.call("steps/import", {"url": url}))
    assert fake.requests == [] and other.requests == []
    await nothing_before_sentinel(host, ann)


async def test_notion_request_cap(start_relay: StartRelay, nursery: trio.Nursery) -> None:
    async def endless(index: int, body: Any) -> Reply:
        return answer({"recordMap": {"block": {}}, "cursor": CURSOR})

    relay, fake = await notion_relay(start_relay, nursery, endless)
    host, _, _ = await open_classroom(relay)
    frames = await host.call("steps/import", {"url": fake.page_url()})
    assert check_import_failure(frames) == "The Notion page is too large"
    assert len(fake.requests) == 100
    assert [r.body["chunkNumber"] for r in fake.requests] == list(range(100))


async def test_notion_room_closed_during_import(
        start_relay: StartRelay, nursery: trio.Nursery) -> None:
    gate = trio.Event()

    async def slow(index: int, body: Any) -> Reply:
        await gate.wait()
        return await two_chunks(index, body)

    relay, fake = await notion_relay(start_relay, nursery, slow)
    host, _room, (ann,) = await open_classroom(relay, "Ann")
    await host.send("steps/import", {"url": fake.page_url()}, ref=1)
    await wait_until(lambda: bool(fake.requests))
    await host.send("room/close", {}, ref=2)
    assert await host.expect("ack") == {"event": "ack", "ref": 2, "data": {"ok": True}}
    await ann.expect("room/closed")
    assert await ann.closed() == 4000  # v2 (§6.1): the host's connection stays open
    gate.set()
    # The server is unaffected and the room is gone.
    again, _ = await relay.host()
    frames = await again.call("steps/import", {"markdown": "x"})
    assert frames[-1]["data"] == {"ok": True}


# -- the same over Socket.IO ------------------------------------------------------------
async def test_import_over_socketio(start_relay: StartRelay, nursery: trio.Nursery) -> None:
    async def broken(index: int, body: Any) -> Reply:
        return Reply(404, b"{}")

    relay, fake = await notion_relay(start_relay, nursery, broken)
    host, _ = await SioRaw.open(relay)
    frames = await host.call("room/create", {"name": "T"})
    assert [e for e, _ in frames] == ["room/created", "rtc/config", "room/update", "ack"]
    # Success: steps/load, alerts, alert, then the acknowledgement.
    frames = await host.call("steps/import", {"markdown": "# A"})
    assert frames == [
        ("steps/load", [{"name": "1", "content": "<h3>A</h3>", "language": "html",
                         "type": "exercise"}]),
        ("alerts", IMPORT_OK), ("alert", IMPORT_OK), ("ack", {"ok": True})]
    # Failure (Notion): alerts, alert, error, failed acknowledgement.
    frames = await host.call("steps/import", {"url": fake.page_url()})
    assert [e for e, _ in frames] == ["alerts", "alert", "error", "ack"]
    message = frames[0][1]["message"]
    assert frames[0][1] == frames[1][1] == {"type": "ERROR", "message": message}
    assert frames[2][1] == {"code": "import_failed", "message": message,
                            "event": "steps/import"}
    assert frames[3][1] == {"ok": False, "error": {"code": "import_failed", "message": message}}
    assert len(fake.requests) == 1
