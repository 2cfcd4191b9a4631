"""ChatRoom spaces end to end (§9.1–§9.9, §9.11) through real sockets: the shell.

The sans-IO core has its own tests (``tests/test_spaces_*.py``); these drive the relay as
clients see it: the upgrades on ``/``, ``/chatroom`` and ``/chatroom/`` and their refusals,
both frame shapes, a client that behaves like the seed's, §2 on these connections, the timer
that fires timeouts, idle expiry, the inspector, ``space-key``, metrics and health.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import re
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import ConnectionRejected, open_websocket_url

from relay.spaces.names import space_key
from tests.chatroom_support import (
    ChatClient,
    RawChat,
    SeedClient,
    body,
    eventually,
    upgrade,
)
from tests.support import Relay, StartRelay

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
SECRET = "correct horse battery staple"
XSS = "<img src=x onerror=alert(1)>"
SEED_SET_KEYS = {"type", "value", "old_value", "id"}


# -- helpers -------------------------------------------------------------------------------

async def seed(relay: Relay, path: str = "/") -> SeedClient:
    """A seed-like client whose ``hello`` has arrived."""
    client = await SeedClient.open(relay, path)
    await client.until(lambda: client.id is not None)
    return client


async def chat(relay: Relay, path: str = "/chatroom", envelope: str = "args"
               ) -> tuple[ChatClient, dict[str, Any]]:
    """A plain client and the content of its ``hello``."""
    client = await ChatClient.open(relay, path, envelope)
    hello = body(await client.expect("hello"))
    client.id = hello["id"]
    return client, hello


async def watch_status(client: SeedClient) -> None:
    """Subscribe a seed client to ``_chatroom/server_status`` (a sentinel for state changes
    made on other connections)."""
    client.subscribe("_chatroom/server_status")
    await client.until(lambda: client.topics["_chatroom/server_status"].updates >= 1)


async def status_is(client: SeedClient, text: str) -> None:
    topic = client.topics["_chatroom/server_status"]
    await client.until(lambda: topic.value == text)


async def round_trip(client: ChatClient) -> list[dict[str, Any]]:
    """Everything the client receives before the answer to a subscription to its own
    ``client_message`` topic (which creates nothing): since messages are handled in arrival
    order, that answer confirms everything the client sent before."""
    marker = f"_chatroom/client_message/{client.id}"
    await client.send("subscribe", topic_name=marker)
    before: list[dict[str, Any]] = []
    while True:
        frame = await client.recv()
        if frame["type"] == "update" and body(frame)["topic_name"] == marker:
            return before
        before.append(frame)


# -- a session of the seed's client ----------------------------------------------------------

async def test_seed_client_session(relay: Relay) -> None:
    """String topic set and echoed, a service between two connections and to oneself, a
    validator that rejects then accepts, unsubscribe, and a provider that disconnects while
    a request is pending: one ``response`` (after the ``error`` the seed logs)."""
    alice = await seed(relay, "/")
    bob = await seed(relay, "/")
    assert (alice.id, bob.id) == (1, 2)
    assert alice.frames[0] == {"type": "hello", "args": {"id": 1}}
    await watch_status(alice)

    # a string topic: set, echoed to the sender (confirming it), followed by the other
    a_doc = alice.subscribe("doc")
    await alice.until(lambda: a_doc.updates == 1)
    b_doc = bob.subscribe("doc")
    await bob.until(lambda: b_doc.updates == 1)
    change_id = a_doc.set("hello")
    await alice.until(lambda: a_doc.pending == [])
    await bob.until(lambda: b_doc.value == "hello")
    assert a_doc.value == "hello"
    echoed = [f for f in alice.frames if f["type"] == "update"
              and f["args"]["change"]["id"] == change_id]
    assert len(echoed) == 1
    assert echoed[0]["args"] == {"topic_name": "doc", "change": {
        "type": "set", "value": "hello", "old_value": "", "id": change_id}}

    # a service provided by another connection
    results: list[Any] = []
    bob.register_service("add", lambda a, b: a + b)
    await status_is(alice, "service add registered by client 2")
    alice.request("add", results.append, a=2, b=3)
    await alice.until(lambda: results == [5])

    # a connection calling its own service (the seed deadlocked)
    alice.register_service("shout", lambda text: text.upper())
    alice.request("shout", results.append, text="hi")
    await alice.until(lambda: results == [5, "HI"])

    # a validator that rejects, then accepts
    verdicts: Iterator[dict[str, Any]] = itertools.chain(
        [{"valid": False, "reason": "too short"}], itertools.repeat({"valid": True}))
    seen: list[dict[str, Any]] = []

    def validator(change: dict[str, Any]) -> dict[str, Any]:
        seen.append(change)
        return next(verdicts)

    bob.register_service("_chatroom/validate_change/doc", validator)
    await status_is(alice, "service _chatroom/validate_change/doc registered by client 2")
    a_doc.set("hi")
    await alice.until(lambda: a_doc.rejected == ["too short"])
    assert a_doc.value == "hello" and a_doc.pending == []
    a_doc.set("hello world")
    await alice.until(lambda: a_doc.pending == [])
    await bob.until(lambda: b_doc.value == "hello world")
    assert a_doc.value == "hello world"
    assert [set(c) for c in seen[:2]] == [SEED_SET_KEYS, SEED_SET_KEYS]
    assert seen[0]["value"] == "hi" and seen[0]["old_value"] == "hello"

    # unsubscribe: nothing more about the topic (an update would kill the seed's thread)
    bob.unsubscribe("doc")
    marker = bob.subscribe("marker")  # answered after the unsubscribe was handled
    await bob.until(lambda: marker.updates == 1)
    bob_updates = b_doc.updates
    a_doc.set("again")  # bob still validates it (accepts)
    await alice.until(lambda: a_doc.pending == [])
    marker2 = bob.subscribe("marker2")
    await bob.until(lambda: marker2.updates == 1)
    assert b_doc.updates == bob_updates and b_doc.value == "hello world"

    # the provider disconnects while a request is pending
    carol, hello = await chat(relay, "/")
    assert hello == {"id": 3}
    await carol.send("register_service", service_name="slow")
    await status_is(alice, "service slow registered by client 3")
    rid = alice.request("slow", results.append, n=1)
    forwarded = await carol.expect("request")
    assert set(forwarded["args"]) == {"service_name", "args", "request_id"}
    assert forwarded["args"]["args"] == {"n": 1}
    assert UUID4.match(forwarded["args"]["request_id"]) and forwarded["args"]["request_id"] != rid
    await carol.aclose()
    await alice.until(lambda: results == [5, "HI", None])
    alice.request("shout", results.append, text="later")  # a round trip on alice's socket
    await alice.until(lambda: results[-1] == "LATER")
    about = [f for f in alice.frames if body(f).get("request_id") == rid]
    assert [f["type"] for f in about] == ["error", "response"], about
    error = about[0]["args"]
    assert error["code"] == "provider_disconnected"
    assert error["message_type"] == "request" and error["request_id"] == rid
    assert about[1] == {"type": "response", "args": {"request_id": rid, "response": None}}
    assert about[0] in alice.warnings  # logged by the seed's client, which carries on
    await status_is(alice, "client 3 disconnected")
    alice.check()
    bob.check()


async def test_seed_client_on_each_path_shares_the_default_space(relay: Relay) -> None:
    """``/`` (the seed's), ``/chatroom`` and ``/chatroom/`` are one endpoint; without
    ``space`` every connection is in ``default``."""
    clients = [await seed(relay, path) for path in ("/", "/chatroom", "/chatroom/",
                                                    "/?space=", "/chatroom?space=default")]
    assert [c.id for c in clients] == [1, 2, 3, 4, 5]
    topics = [c.subscribe("shared") for c in clients]
    for c, t in zip(clients, topics, strict=True):
        await c.until(functools.partial(lambda t: t.updates == 1, t))
    topics[4].set("from five")
    for c, t in zip(clients, topics, strict=True):
        await c.until(functools.partial(lambda t: t.value == "from five", t))
    for c in clients:
        c.check()


async def test_seed_client_survives_a_full_shape_neighbour(relay: Relay) -> None:
    """Frames are rendered per shape: a full-shape subscriber next to a seed one does not
    leak † keys or the ``content`` envelope to the seed's client."""
    old = await seed(relay, "/?space=mix")
    new, hello = await chat(relay, "/chatroom?space=mix&v=2", envelope="content")
    assert hello == {"id": 2, "space": "mix"}
    topic = old.subscribe("t")
    await old.until(lambda: topic.updates == 1)
    await new.send("subscribe", topic_name="t")
    first = await new.expect("update")
    assert set(first) == {"type", "content"}
    assert first["content"]["version"] == 0
    assert first["content"]["change"]["topic_type"] == "string"
    await new.send("update", topic_name="t", change={"type": "set", "value": "v2", "id": "n1"})
    got = await new.expect("update")
    assert got["content"] == {"topic_name": "t", "version": 1, "change": {
        "type": "set", "value": "v2", "old_value": "", "id": "n1", "topic_name": "t",
        "topic_type": "string"}}
    await old.until(lambda: topic.value == "v2")
    assert old.frames[-1] == {"type": "update", "args": {"topic_name": "t", "change": {
        "type": "set", "value": "v2", "old_value": "", "id": "n1"}}}
    old.check()


# -- the full shape over the socket (§9.9) --------------------------------------------------

async def test_full_shape_example(relay: Relay) -> None:
    a, hello = await chat(relay, "/chatroom?space=demo&v=2", envelope="content")
    assert hello == {"id": 1, "space": "demo"}
    await a.send("subscribe", topic_name="score", type="int")
    frame = await a.expect("update")
    assert set(frame) == {"type", "content"}
    content = frame["content"]
    change = content["change"]
    assert UUID4.match(change["id"])
    assert content == {"topic_name": "score", "version": 0, "change": {
        "type": "set", "value": 0, "old_value": None, "id": change["id"],
        "topic_name": "score", "topic_type": "int"}}
    # a client frame in the seed's envelope is read too
    await a.ws.send_message(json.dumps({"type": "update", "args": {
        "topic_name": "score", "change": {"type": "add", "value": 5, "id": "a1"}}}))
    assert (await a.expect("update"))["content"] == {"topic_name": "score", "version": 1,
                                                      "change": {"type": "add", "value": 5,
                                                                 "id": "a1",
                                                                 "topic_name": "score",
                                                                 "topic_type": "int"}}
    await a.send("update", topic_name="score", change={"type": "append", "item": 3, "id": "a2"})
    reject = (await a.expect("reject_update"))["content"]
    assert reject["code"] == "type_mismatch" and isinstance(reject["reason"], str)
    assert reject["change"] == {"type": "append", "item": 3, "id": "a2"}
    assert set(reject) == {"topic_name", "change", "code", "reason"}

    b, hello_b = await chat(relay, "/chatroom?space=demo&v=2", envelope="content")
    assert hello_b == {"id": 2, "space": "demo"}
    await b.send("register_service", service_name="sum")
    await round_trip(b)
    await a.send("request", service_name="sum", args={"a": 1, "b": 2}, request_id="q1")
    request = (await b.expect("request"))["content"]
    assert UUID4.match(request["request_id"])
    assert request == {"service_name": "sum", "args": {"a": 1, "b": 2},
                       "request_id": request["request_id"], "client_id": 1}
    await b.send("response", request_id=request["request_id"], response=3)
    assert (await a.expect("response"))["content"] == {"request_id": "q1", "response": 3}

    # a failure in the full shape: the response alone, with its error
    await a.send("request", service_name="nobody", request_id=7)
    failed = await a.expect("response")
    assert failed["content"]["request_id"] == 7 and failed["content"]["response"] is None
    assert failed["content"]["error"]["code"] == "service_not_found"
    assert set(failed["content"]["error"]) == {"code", "message"}
    await a.silent(0.2)


async def test_seed_shape_failure_is_error_then_null_response(relay: Relay) -> None:
    a, hello = await chat(relay, "/")
    assert hello == {"id": 1}
    await a.send("request", service_name="nobody", args={}, request_id="r1")
    error = await a.expect("error")
    assert error["args"]["code"] == "service_not_found"
    assert error["args"]["message_type"] == "request" and error["args"]["request_id"] == "r1"
    assert await a.expect("response") == {"type": "response",
                                          "args": {"request_id": "r1", "response": None}}


async def test_frame_errors_keep_the_connection(relay: Relay) -> None:
    a, _ = await chat(relay)
    await a.send_raw("not json")
    assert body(await a.expect("error"))["code"] == "bad_json"
    await a.send_raw("[1, 2]")
    assert body(await a.expect("error"))["code"] == "bad_frame"
    await a.send_raw(b"\x00binary")
    assert body(await a.expect("error"))["code"] == "bad_frame"
    await a.send_raw(json.dumps({"type": "action", "args": {}}))
    err = body(await a.expect("error"))
    assert err["code"] == "unknown_event" and err["message_type"] == "action"
    await a.send("subscribe", topic_name="x", type="string")
    assert body(await a.expect("update"))["topic_name"] == "x"


async def test_spaces_share_nothing(relay: Relay) -> None:
    """Two spaces: their own client ids, topics, values, services and server status."""
    a1, h1 = await chat(relay, "/chatroom?space=alpha&v=2", envelope="content")
    b1, h2 = await chat(relay, "/chatroom?space=beta&v=2", envelope="content")
    assert (h1, h2) == ({"id": 1, "space": "alpha"}, {"id": 1, "space": "beta"})
    a2, h3 = await chat(relay, "/chatroom?space=alpha&v=2", envelope="content")
    assert h3["id"] == 2

    await a1.send("subscribe", topic_name="t", type="string")
    await a1.expect("update")
    await a1.send("update", topic_name="t", change={"type": "set", "value": "alpha!"})
    assert body(await a1.expect("update"))["change"]["value"] == "alpha!"
    await a1.send("register_service", service_name="svc")
    await a1.send("subscribe", topic_name="_chatroom/server_status")
    status = body(await a1.expect("update"))
    assert status["change"]["value"] == "service svc registered by client 1"

    # beta does not know alpha's topic or service
    await b1.send("subscribe", topic_name="t")
    assert body(await b1.expect("error"))["code"] == "topic_not_found"
    await b1.send("subscribe", topic_name="t", type="int")  # another type is fine here
    assert body(await b1.expect("update"))["change"]["value"] == 0
    await b1.send("request", service_name="svc", request_id="x")
    assert body(await b1.expect("response"))["error"]["code"] == "service_not_found"
    await b1.send("register_service", service_name="svc")  # free in beta
    await b1.send("subscribe", topic_name="_chatroom/server_status")
    status = body(await b1.expect("update"))
    assert status["change"]["value"] == "service svc registered by client 1"
    assert status["version"] == 3  # client 1 connected, topic t created, service registered
    # alpha saw nothing of beta (its status topic included), and kept its value
    await a1.silent(0.2)
    await a2.send("subscribe", topic_name="t")
    assert body(await a2.expect("update"))["change"]["value"] == "alpha!"


# -- the upgrade and its refusals (§9.1) -----------------------------------------------------

def assert_refused(answer: Any, status: int, error: str) -> None:
    assert answer.status == status, answer
    assert answer.json() == {"error": error}, answer
    assert answer.headers.get("content-type", "").startswith("application/json")
    assert "upgrade" not in answer.headers and "sec-websocket-accept" not in answer.headers


INVALID_SPACES = [".hidden", "a%20b", "x" * 65, "%C3%A9t%C3%A9", "a/b", "a%2Fb", "a:b",
                  "%00"]


async def test_upgrade_refusals_in_order(start_relay: StartRelay) -> None:
    relay = await start_relay(chatroom_secret=SECRET, chatroom_max_spaces=2)
    port = relay.server.relay_port

    # 1. an invalid space is 400, before the key is looked at (even with "its" key)
    for bad in INVALID_SPACES:
        for path in ("/", "/chatroom", "/chatroom/"):
            assert_refused(await upgrade(port, f"{path}?space={bad}"), 400, "invalid_space")
    assert_refused(await upgrade(port, f"/chatroom?space=.x&key={space_key(SECRET, '.x')}"),
                   400, "invalid_space")

    # 2. with a secret, a missing or wrong key is 403
    one, two = space_key(SECRET, "one"), space_key(SECRET, "two")
    for query in ("space=one", "space=one&key=", f"space=one&key={two}",
                  f"space=one&key={one}=", f"space=one&key={one[:-1]}",
                  f"space=one&key={one.lower()}", f"key={one}", "space=default&key=x",
                  "space=one&key=%C3%A9", f"space=one&key=%20{one}"):
        for path in ("/", "/chatroom", "/chatroom/"):
            assert_refused(await upgrade(port, f"{path}?{query}"), 403, "forbidden")
    # the right key opens its space, on each path; no space means "default"
    a, hello = await chat(relay, f"/?space=one&key={one}")
    assert hello == {"id": 1}
    _b, hello = await chat(relay, f"/chatroom/?key={space_key(SECRET, 'default')}&v=2",
                          envelope="content")
    assert hello == {"id": 1, "space": "default"}
    assert len(space_key(SECRET, "one")) == 43

    # 3. a third space while two exist is 503 (after the other checks)
    assert_refused(await upgrade(port, f"/chatroom?space=two&key={two}"), 503,
                   "too_many_spaces")
    assert_refused(await upgrade(port, "/chatroom?space=two"), 403, "forbidden")
    assert_refused(await upgrade(port, "/chatroom?space=.two"), 400, "invalid_space")
    # ...while the existing spaces still accept, also once they have no connection left
    c, hello = await chat(relay, f"/chatroom?space=one&key={one}")
    assert hello == {"id": 2}
    await a.aclose()
    await c.aclose()
    await eventually(lambda: relay.server.connections and len(relay.server.connections) == 1)
    _d, hello = await chat(relay, f"/chatroom?space=one&key={one}")
    assert hello == {"id": 3}  # the space and its counter are still there
    assert_refused(await upgrade(port, f"/chatroom?space=two&key={two}"), 503,
                   "too_many_spaces")
    # a real client sees the same statuses
    with pytest.raises(ConnectionRejected) as info:
        async with open_websocket_url(relay.url + f"/chatroom?space=two&key={two}"):
            pass
    assert info.value.status_code == 503


async def test_no_secret_every_space_is_open(relay: Relay) -> None:
    _a, hello = await chat(relay, "/chatroom?space=open&key=whatever")
    assert hello == {"id": 1}
    _b, hello = await chat(relay, "/?space=A-z_0.9")
    assert hello == {"id": 1}
    _c, hello = await chat(relay, "/?space=" + "y" * 64 + "&v=2", envelope="content")
    assert hello == {"id": 1, "space": "y" * 64}


async def test_max_spaces_is_not_exceeded_by_concurrent_upgrades(
        start_relay: StartRelay) -> None:
    """§9.1/§9.7: at most ``OBSERVER_CHATROOM_MAX_SPACES`` spaces, however upgrades interleave.
    Twenty upgrades to twenty new spaces whose heads complete at the same moment, limit 2.
    (The limit holds for upgrades that arrive one after another: see above.)"""
    relay = await start_relay(chatroom_max_spaces=2)
    port = relay.server.relay_port
    streams = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(20)]
    heads = [(f"GET /chatroom?space=race{i} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
              "Upgrade: websocket\r\nConnection: Upgrade\r\n"
              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
              "Sec-WebSocket-Version: 13\r\n").encode() for i in range(20)]
    for stream, head in zip(streams, heads, strict=True):
        await stream.send_all(head)  # all but the blank line that ends the head
    await trio.sleep(0.2)
    for stream in streams:  # at once: no checkpoint between these writes
        assert os.write(stream.socket.fileno(), b"\r\n") == 2
    statuses = []
    for stream in streams:
        with trio.fail_after(5):
            answer = b""
            while b"\r\n" not in answer:
                answer += await stream.receive_some(4096)
        statuses.append(int(answer.split(b" ")[1]))
    async with httpx.AsyncClient(base_url=relay.web, timeout=5) as http:
        health = (await http.get("/healthz")).json()
    for stream in streams:
        await stream.aclose()
    assert statuses.count(101) <= 2 and health["rooms"] <= 2, (statuses, health)
    assert statuses.count(503) >= 18


async def test_chatroom_switched_off_is_404(start_relay: StartRelay) -> None:
    relay = await start_relay(chatroom=False)
    port = relay.server.relay_port
    for path in ("/", "/chatroom", "/chatroom/", "/?space=x", "/chatroom?space=x&v=2"):
        answer = await upgrade(port, path)
        assert answer.status == 404, (path, answer)
        assert "upgrade" not in answer.headers
    # the other endpoints are unaffected
    answer = await upgrade(port, "/observer")
    assert answer.status == 101


async def test_origin_applies(start_relay: StartRelay) -> None:
    relay = await start_relay(allowed_origins=["https://apps.example.org"])
    port = relay.server.relay_port
    refused = await upgrade(port, "/chatroom", {"Origin": "https://evil.example.org"})
    assert refused.status == 403
    ok = await upgrade(port, "/chatroom", {"Origin": "https://apps.example.org"})
    assert ok.status == 101
    assert (await upgrade(port, "/")).status == 101  # no Origin: not a browser


async def test_no_device_cookie_on_chatroom_upgrades(relay: Relay) -> None:
    for path in ("/", "/chatroom", "/chatroom/?space=x"):
        answer = await upgrade(relay.server.relay_port, path)
        assert answer.status == 101
        assert "set-cookie" not in answer.headers, (path, answer.headers)


# -- §2 on ChatRoom connections -------------------------------------------------------------

async def test_too_large_message_closes_1009(start_relay: StartRelay) -> None:
    relay = await start_relay(max_message_size=1000)
    a, _ = await chat(relay)
    fits = json.dumps({"type": "subscribe", "args": {"topic_name": "t", "type": "generic"}})
    await a.send_raw(fits.ljust(1000))
    assert body(await a.expect("update"))["topic_name"] == "t"
    await a.send_raw("x" * 1001)
    assert await a.closed() == 1009
    _b, hello = await chat(relay)  # the space carries on
    assert hello == {"id": 2}


async def test_rate_limited_error_at_most_once_per_second(start_relay: StartRelay) -> None:
    relay = await start_relay(rate_limit_rate=1, rate_limit_burst=2, rate_limit_close_after=60)
    a, _ = await chat(relay)
    for i in range(10):
        await a.send("subscribe", topic_name=f"t{i}", type="generic")
    frames = []
    with trio.move_on_after(0.6):
        while True:
            frames.append(body(await a.recv()))
    assert [f.get("topic_name") for f in frames[:2]] == ["t0", "t1"]
    errors = frames[2:]
    assert len(errors) == 1, frames
    assert errors[0]["code"] == "rate_limited" and errors[0]["message_type"] == "subscribe"
    # dropped unprocessed: t2..t9 do not exist
    await trio.sleep(1.0)
    await a.send("subscribe", topic_name="t5")
    assert body(await a.expect("error"))["code"] == "topic_not_found"
    # a second flood, more than a second later: one more rate_limited
    for _ in range(5):
        await a.send("subscribe", topic_name="t0")
    got = []
    with trio.move_on_after(0.6):
        while True:
            got.append(body(await a.recv()))
    assert [g.get("code") for g in got].count("rate_limited") == 1, got


async def test_sustained_flood_closes_4008(start_relay: StartRelay) -> None:
    relay = await start_relay(rate_limit_rate=5, rate_limit_burst=5, rate_limit_close_after=1)
    a, _ = await chat(relay)
    watcher, _ = await chat(relay)
    await watcher.send("subscribe", topic_name="_chatroom/server_status")
    await watcher.expect("update")

    async def flood() -> None:
        try:
            while True:
                await a.send("subscribe", topic_name="x", type="generic")
                await trio.sleep(0.01)
        except Exception:
            pass

    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(flood)
        assert await a.closed(timeout=5) == 4008
        nursery.cancel_scope.cancel()
    assert 0.9 <= trio.current_time() - started < 4
    codes = [body(f).get("code") for f in a.inbox if f["type"] == "error"]
    assert 1 <= codes.count("rate_limited") <= 3
    status = body(await watcher.expect("update"))
    assert status["change"]["value"] in ("topic x created by client 1", "client 1 disconnected")


async def test_reader_that_never_reads_is_closed_4002(start_relay: StartRelay) -> None:
    relay = await start_relay(send_queue_frames=20, send_queue_bytes=100_000,
                              rate_limit_rate=100_000, rate_limit_burst=100_000)
    slow = await RawChat.connect(relay.server.relay_port, "/chatroom?space=slow", rcvbuf=4096)
    await slow.send("subscribe", topic_name="big", type="string")
    first = await slow.frames(count=2)
    assert [f["type"] for f in first] == ["hello", "update"]
    writer, _ = await chat(relay, "/chatroom?space=slow")
    await writer.send("subscribe", topic_name="big")

    async def drain() -> None:  # the writer reads everything it gets
        while True:
            await writer.recv(timeout=30)

    def gave_up() -> bool:  # the sentinel: the server closes the reader with 4002
        return any(c.close_code == 4002 for c in relay.server.connections)

    text = "x" * 8000
    async with trio.open_nursery() as nursery:
        nursery.start_soon(drain)
        with trio.fail_after(20):
            n = 0
            while not gave_up():
                n += 1
                await writer.send("update", topic_name="big",
                                  change={"type": "set", "value": f"{n}:{text}"})
                await trio.sleep(0.002)
        nursery.cancel_scope.cancel()
    rest = await slow.frames(timeout=10, until_closed=True)
    assert slow.close_code == 4002
    assert len(rest) < n  # it did not get everything: the server gave up on it
    # the space carries on for the others
    await writer.send("update", topic_name="big", change={"type": "set", "value": "after"})
    while True:
        frame = body(await writer.recv())
        if frame.get("topic_name") == "big" and frame["change"]["value"] == "after":
            break


async def test_heartbeat_timeout_4004(start_relay: StartRelay) -> None:
    relay = await start_relay(heartbeat_interval=0.2, heartbeat_timeout=0.2)
    silent = await RawChat.connect(relay.server.relay_port, "/")
    alive, _ = await chat(relay, "/")  # trio-websocket answers pings
    await trio.sleep(1.0)  # never read, never answer the ping
    frames = await silent.frames(timeout=3, until_closed=True)
    assert frames[0]["type"] == "hello"
    assert silent.close_code == 4004
    await alive.send("subscribe", topic_name="_chatroom/server_status")
    while True:  # the server ends it once the close handshake is over or timed out
        status = body(await alive.expect("update", timeout=5))
        if status["change"]["value"] == "client 1 disconnected":
            break


async def test_shutdown_closes_1001(relay: Relay) -> None:
    a, _ = await chat(relay)
    b = await seed(relay, "/?space=other")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(relay.server.shutdown)
        assert await a.closed(timeout=6) == 1001
    await b.ended.wait()
    b.check()


# -- the space's timer: timeouts fire without any traffic ------------------------------------

async def test_request_timeouts_fire_on_their_own(start_relay: StartRelay) -> None:
    relay = await start_relay(service_timeout=0.5)
    requester, _ = await chat(relay, "/")
    provider, hello = await chat(relay, "/chatroom?v=2", envelope="content")
    await provider.send("subscribe", topic_name=f"_chatroom/client_message/{hello['id']}")
    await provider.expect("update")
    await provider.send("register_service", service_name="never")
    await round_trip(provider)

    # the default timeout (OBSERVER_SERVICE_TIMEOUT)
    started = trio.current_time()
    await requester.send("request", service_name="never", args={}, request_id="r1")
    forwarded = body(await provider.expect("request"))
    error = body(await requester.expect("error", timeout=3))
    took = trio.current_time() - started
    assert error["code"] == "timeout" and error["request_id"] == "r1"
    assert await requester.expect("response") == {"type": "response", "args": {
        "request_id": "r1", "response": None}}
    assert 0.4 <= took < 2.0, took
    note = body(await provider.expect("update"))
    assert note["change"]["value"] == f"request {forwarded['request_id']} to never timed out"
    # a late answer is unknown
    await provider.send("response", request_id=forwarded["request_id"], response=1)
    assert body(await provider.expect("error"))["code"] == "unknown_request"

    # a request's own timeout, due before one already waiting (the timer wakes earlier)
    await requester.send("request", service_name="never", request_id="long", timeout=60)
    await provider.expect("request")
    started = trio.current_time()
    await requester.send("request", service_name="never", request_id=2, timeout=1)
    await provider.expect("request")
    error = body(await requester.expect("error", timeout=3))
    assert error["code"] == "timeout" and error["request_id"] == 2
    assert body(await requester.expect("response"))["request_id"] == 2
    assert 0.9 <= trio.current_time() - started < 2.5


async def test_validator_timeout_rejects_and_the_queue_moves_on(
        start_relay: StartRelay) -> None:
    relay = await start_relay(service_timeout=0.5)
    writer, _ = await chat(relay, "/chatroom?v=2", envelope="content")
    validator, _ = await chat(relay, "/chatroom?v=2", envelope="content")
    await writer.send("subscribe", topic_name="doc", type="string")
    await writer.expect("update")
    await validator.send("register_service", service_name="_chatroom/validate_change/doc")
    await round_trip(validator)
    await writer.send("update", topic_name="doc", change={"type": "set", "value": "a",
                                                          "id": "c1"})
    await writer.send("update", topic_name="doc", change={"type": "set", "value": "b",
                                                          "id": "c2"})
    first = body(await validator.expect("request"))
    assert first["args"]["change"]["id"] == "c1" and first["args"]["client_id"] == 1
    reject = body(await writer.expect("reject_update", timeout=3))
    assert reject["code"] == "validator_failed" and reject["change"]["id"] == "c1"
    second = body(await validator.expect("request", timeout=3))  # c2's turn
    assert second["args"]["change"]["id"] == "c2"
    await validator.send("response", request_id=second["request_id"],
                         response={"valid": True})
    update = body(await writer.expect("update"))
    assert update["change"]["id"] == "c2" and update["version"] == 1


# -- idle expiry -----------------------------------------------------------------------------

async def space_gone(http: httpx.AsyncClient, space: str) -> bool:
    return (await http.get(f"/api/spaces/{space}")).status_code == 404


async def test_idle_space_is_forgotten(start_relay: StartRelay) -> None:
    relay = await start_relay(room_idle_expiry=1.0, public_stats=True)
    async with httpx.AsyncClient(base_url=relay.web, timeout=5) as http:
        a, hello = await chat(relay, "/?space=exp")
        assert hello == {"id": 1}
        await a.send("subscribe", topic_name="t", type="string")
        await a.expect("update")
        await a.send("update", topic_name="t", change={"type": "set", "value": "kept"})
        await a.expect("update")
        await a.aclose()
        # back within the expiry: the same space (ids go on, the topic is there)
        b, hello = await chat(relay, "/?space=exp")
        assert hello == {"id": 2}
        await b.send("subscribe", topic_name="t")
        assert body(await b.expect("update"))["change"]["value"] == "kept"
        await b.aclose()
        assert (await http.get("/api/spaces/exp")).status_code == 200
        # the sentinel: the inspector no longer knows the space
        await eventually(lambda: space_gone(http, "exp"), timeout=5, interval=0.05)
        c, hello = await chat(relay, "/?space=exp")
        assert hello == {"id": 1}  # a new space: its counter starts again
        await c.send("subscribe", topic_name="t")
        assert body(await c.expect("error"))["code"] == "topic_not_found"
        await c.send("subscribe", topic_name="_chatroom/server_status")
        assert body(await c.expect("update"))["change"]["value"] == "client 1 connected"


async def test_expired_spaces_free_their_place(start_relay: StartRelay) -> None:
    relay = await start_relay(room_idle_expiry=0.5, chatroom_max_spaces=1, public_stats=True)
    port = relay.server.relay_port
    async with httpx.AsyncClient(base_url=relay.web, timeout=5) as http:
        a, _ = await chat(relay, "/?space=first")
        await a.aclose()
        # an expiring space still counts
        assert_refused(await upgrade(port, "/?space=second"), 503, "too_many_spaces")
        await eventually(lambda: space_gone(http, "first"), timeout=5, interval=0.05)
        text = (await http.get("/metrics")).text
        assert metric(text, "observer_rooms", kind="space") == 0
        assert (await http.get("/healthz")).json()["rooms"] == 0
        _b, hello = await chat(relay, "/?space=second")
        assert hello == {"id": 1}


# -- the inspector (§9.8) --------------------------------------------------------------------

@pytest.fixture
async def keyed(start_relay: StartRelay) -> Relay:
    return await start_relay(chatroom_secret=SECRET, join_failure_limit=100_000)


@pytest.fixture
async def http(keyed: Relay) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=keyed.web, timeout=5.0) as client:
        yield client


def k(space: str) -> str:
    return space_key(SECRET, space)


ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


async def populate(relay: Relay, space: str = "insp") -> tuple[ChatClient, ChatClient]:
    """Client 1 with topic ``t`` = "hello" and an unanswered request to client 2's ``svc``."""
    a, _ = await chat(relay, f"/chatroom?space={space}&key={k(space)}")
    b, _ = await chat(relay, f"/chatroom?space={space}&key={k(space)}")
    await a.send("subscribe", topic_name="t", type="string")
    await a.expect("update")
    await a.send("update", topic_name="t", change={"type": "set", "value": "hello"})
    await a.expect("update")
    await b.send("register_service", service_name="svc")
    await round_trip(b)
    await a.send("request", service_name="svc", request_id="q")
    await b.expect("request")
    return a, b


async def test_inspector_json(keyed: Relay, http: httpx.AsyncClient) -> None:
    await populate(keyed)
    r = await http.get(f"/api/spaces/insp?key={k('insp')}")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    assert r.headers["cache-control"] == "no-store"
    doc = r.json()
    assert set(doc) == {"space", "generated_at", "clients", "topics", "services"}
    assert doc["space"] == "insp" and ISO.match(doc["generated_at"])
    assert doc["clients"] == [1, 2]
    names = [t["name"] for t in doc["topics"]]
    assert names == ["_chatroom/client_message/1", "_chatroom/client_message/2",
                     "_chatroom/server_status", "t"]
    t = doc["topics"][-1]
    assert t == {"name": "t", "type": "string", "version": 1, "subscribers": 1, "bytes": 7,
                 "preview": '"hello"'}
    for topic in doc["topics"]:
        assert set(topic) == {"name", "type", "version", "subscribers", "bytes", "preview"}
    assert doc["services"] == [{"name": "svc", "provider": 2, "pending": 1}]


async def test_inspector_preview_and_bytes(keyed: Relay, http: httpx.AsyncClient) -> None:
    a, _ = await chat(keyed, f"/chatroom?space=big&key={k('big')}")
    await a.send("subscribe", topic_name="d", type="dict")
    await a.expect("update")
    value = {"ünï": "cödé " * 100, "n": [1, 2.5, None]}
    await a.send("update", topic_name="d", change={"type": "set", "value": value})
    await a.expect("update")
    doc = (await http.get(f"/api/spaces/big?key={k('big')}")).json()
    compact = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    d = next(t for t in doc["topics"] if t["name"] == "d")
    assert d["bytes"] == len(compact.encode()) and d["preview"] == compact[:200]


async def test_inspector_key_first_then_404(keyed: Relay, http: httpx.AsyncClient) -> None:
    await populate(keyed)
    for url in ("/api/spaces/insp", "/api/spaces/insp?key=", f"/api/spaces/insp?key={k('x')}",
                f"/api/spaces/insp?key={k('insp')[:-1]}", "/api/spaces/nope",
                f"/api/spaces/nope?key={k('insp')}", "/spaces/insp/events",
                "/spaces/nope/events"):
        r = await http.get(url)
        assert r.status_code == 403, url
        assert r.json() == {"error": "forbidden"}, url
        assert r.headers["cache-control"] == "no-store"
    for url in ("/spaces/insp", "/spaces/nope", f"/spaces/insp?key={k('other')}"):
        r = await http.get(url)
        assert r.status_code == 403 and "Access denied" in r.text, url
        assert r.headers["content-type"].startswith("text/html")
    # then 404 for an unknown or invalid space, with that space's key
    r = await http.get(f"/spaces/%3Cb%3Ex?key={k('<b>x')}")
    assert r.status_code == 404 and "Space &lt;b&gt;x not found!" in r.text
    assert "<b>x" not in r.text
    for space in ("nope", ".x", "x" * 65):
        r = await http.get(f"/api/spaces/{space}?key={k(space)}")
        assert r.status_code == 404 and r.json() == {"error": "space_not_found"}, space
        r = await http.get(f"/spaces/{space}/events?key={k(space)}")
        assert r.status_code == 404 and r.json() == {"error": "space_not_found"}, space
        r = await http.get(f"/spaces/{space}?key={k(space)}")
        assert r.status_code == 404 and f"Space {space} not found!" in r.text, space


async def test_inspector_without_secret_is_always_403(relay: Relay) -> None:
    await chat(relay, "/chatroom?space=open")
    async with httpx.AsyncClient(base_url=relay.web, timeout=5) as http:
        for url in ("/api/spaces/open", "/api/spaces/open?key=anything",
                    f"/api/spaces/open?key={k('open')}", "/api/spaces/nope",
                    "/spaces/open/events", "/spaces/default"):
            assert (await http.get(url)).status_code == 403, url


async def test_inspector_public_stats_needs_no_key(start_relay: StartRelay) -> None:
    relay = await start_relay(public_stats=True, chatroom_secret=SECRET)
    await chat(relay, f"/chatroom?space=pub&key={k('pub')}")
    async with httpx.AsyncClient(base_url=relay.web, timeout=5) as http:
        r = await http.get("/api/spaces/pub")
        assert r.status_code == 200 and r.json()["clients"] == [1]
        assert (await http.get("/api/spaces/pub?key=wrong")).status_code == 200
        r = await http.get("/api/spaces/nope")
        assert r.status_code == 404 and r.json() == {"error": "space_not_found"}


def parse_html(text: str) -> dict[str, Any]:
    from html.parser import HTMLParser

    found: dict[str, Any] = {"h1": "", "tables": [], "topics": [], "services": [],
                             "clients": [], "img": 0}

    class Parser(HTMLParser):
        def __init__(self) -> None:
            super().__init__(convert_charrefs=True)
            self.where: list[str] = []
            self.table = ""
            self.text = ""
            self.row: list[str] | None = None

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            a = dict(attrs)
            if tag == "img":
                found["img"] += 1
            if tag == "table":
                self.table = a.get("id") or ""
                found["tables"].append(self.table)
                found[self.table + "_header"] = []
            if tag == "tr" and ("data-topic" in a or "data-service" in a):
                self.row = []
                found["topics" if "data-topic" in a else "services"].append(
                    (a.get("data-topic") or a.get("data-service"), self.row))
            if tag == "li" and "data-client" in a:
                found["clients"].append(a["data-client"])
            self.where.append(tag)
            self.text = ""

        def handle_endtag(self, tag: str) -> None:
            if tag == "h1" and not found["h1"]:
                found["h1"] = self.text
            elif tag == "th" and self.table:
                found[self.table + "_header"].append(self.text)
            elif tag == "td" and self.row is not None:
                self.row.append(self.text)
            elif tag == "tr":
                self.row = None
            if self.where:
                self.where.pop()

        def handle_data(self, data: str) -> None:
            self.text += data

    Parser().feed(text)
    return found


async def test_inspector_page(keyed: Relay, http: httpx.AsyncClient) -> None:
    a, _ = await populate(keyed)
    await a.send("subscribe", topic_name=XSS, type="string")
    await a.expect("update")
    await a.send("update", topic_name=XSS, change={"type": "set", "value": XSS})
    await a.expect("update")
    r = await http.get(f"/spaces/insp?key={k('insp')}")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert r.headers["cache-control"] == "no-store"
    assert "<img" not in r.text and "&lt;img src=x onerror=alert(1)&gt;" in r.text
    page = parse_html(r.text)
    assert page["h1"] == "Space insp"
    assert {"topics", "services"} <= set(page["tables"])
    assert page["topics_header"] == ["Topic", "Type", "Version", "Subscribers", "Value"]
    assert page["services_header"] == ["Service", "Provider", "Pending"]
    rows = dict(page["topics"])
    assert rows["t"] == ["t", "string", "1", "1", '"hello"']
    assert rows[XSS] == [XSS, "string", "1", "1", json.dumps(XSS)]
    assert page["services"] == [("svc", ["svc", "2", "1"])]
    assert page["clients"] == ["1", "2"]
    assert page["img"] == 0


class Events:
    """Server-sent events, block by block."""

    def __init__(self, response: httpx.Response) -> None:
        self.lines = response.aiter_lines()

    async def next(self, timeout: float = 3.0) -> tuple[str | None, str | None] | None:
        event = data = None
        with trio.fail_after(timeout):
            while True:
                try:
                    line = await anext(self.lines)
                except StopAsyncIteration:
                    return None
                if line == "":
                    if event is None and data is None:
                        continue
                    return event, data
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data = line[5:].strip()


async def test_inspector_event_stream(start_relay: StartRelay) -> None:
    relay = await start_relay(chatroom_secret=SECRET, room_idle_expiry=1.0)
    a, b = await populate(relay, "live")
    async with httpx.AsyncClient(base_url=relay.web, timeout=10) as http, \
            http.stream("GET", f"/spaces/live/events?key={k('live')}") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = Events(response)
        first = await events.next()
        assert first is not None and first[0] == "space"
        doc = json.loads(first[1] or "")
        assert next(t for t in doc["topics"] if t["name"] == "t")["preview"] == '"hello"'
        # a burst of changes: events follow, at most one per second, the last one last
        arrivals: list[float] = []
        last = trio.Event()

        async def read() -> None:
            while True:
                got = await events.next(timeout=5)
                assert got is not None and got[0] == "space", got
                arrivals.append(trio.current_time())
                doc = json.loads(got[1] or "")
                if next(t for t in doc["topics"] if t["name"] == "t")["preview"] == '"w14"':
                    last.set()
                    return

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            for i in range(15):
                await a.send("update", topic_name="t",
                             change={"type": "set", "value": f"w{i}"})
                await a.expect("update")
                await trio.sleep(0.1)
            with trio.fail_after(3):
                await last.wait()
        assert 1 <= len(arrivals) <= 3, arrivals
        gaps = [y - x for x, y in itertools.pairwise(arrivals)]
        assert all(g >= 0.9 for g in gaps), gaps
        # the space goes: every connection ends, then the idle expiry
        await a.aclose()
        await b.aclose()
        while True:
            got = await events.next(timeout=5)
            assert got is not None, "the stream ended without event: closed"
            if got[0] == "closed":
                assert got[1] == "{}"
                break
            assert got[0] == "space"
        assert await events.next(timeout=3) is None  # and the stream ends


# -- space-key, metrics, health --------------------------------------------------------------

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


async def test_space_key_command() -> None:
    env = {**os.environ, "OBSERVER_CHATROOM_SECRET": SECRET}
    done = await trio.run_process([sys.executable, "-m", "relay", "space-key", "demo"],
                                  cwd=ROOT, env=env, capture_stdout=True, capture_stderr=True,
                                  check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode() == space_key(SECRET, "demo") + "\n"
    env.pop("OBSERVER_CHATROOM_SECRET")
    done = await trio.run_process([sys.executable, "-m", "relay", "space-key", "demo"],
                                  cwd=ROOT, env=env, capture_stdout=True, capture_stderr=True,
                                  check=False)
    assert done.returncode == 2 and done.stdout == b""
    assert done.stderr.strip()
    env["OBSERVER_CHATROOM_SECRET"] = ""
    done = await trio.run_process([sys.executable, "-m", "relay", "space-key", "demo"],
                                  cwd=ROOT, env=env, capture_stdout=True, capture_stderr=True,
                                  check=False)
    assert done.returncode == 2


def metric(text: str, name: str, **labels: str) -> float | None:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        if head == (f"{name}{{{want}}}" if want else name) or (
                head.startswith(name + "{") and want and
                set(head[len(name) + 1:-1].split(",")) == set(want.split(","))):
            return float(value)
    return None


async def test_metrics_and_health(relay: Relay) -> None:
    async with httpx.AsyncClient(timeout=5) as http:
        async def scrape() -> str:
            return (await http.get(relay.web + "/metrics")).text

        a, _ = await chat(relay, "/chatroom?space=m")
        b, _ = await chat(relay, "/chatroom?space=m")
        await b.send("register_service", service_name="svc")
        await round_trip(b)
        await a.send("request", service_name="svc", request_id=1)
        forwarded = body(await b.expect("request"))
        await b.send("response", request_id=forwarded["request_id"], response="ok")
        assert body(await a.expect("response")) == {"request_id": 1, "response": "ok"}
        await a.send("request", service_name="missing", request_id=2)
        await a.expect("error")
        await a.expect("response")
        text = await scrape()
        assert metric(text, "observer_connections", endpoint="chatroom") == 2
        assert metric(text, "observer_rooms", kind="space") == 1
        assert metric(text, "observer_service_requests_total", result="ok") == 1
        assert metric(text, "observer_service_requests_total", result="service_not_found") == 1
        assert metric(text, "observer_connections_opened_total", endpoint="chatroom") == 2
        assert (metric(text, "observer_messages_in_total", endpoint="chatroom",
                       event="request") or 0) >= 2

        for base in (relay.web, f"http://127.0.0.1:{relay.server.relay_port}"):
            health = (await http.get(base + "/healthz")).json()
            assert health == {"status": "ok", "rooms": 1, "connections": 2}, (base, health)
        _c, _ = await chat(relay, "/?space=n")
        health = (await http.get(relay.web + "/healthz")).json()
        assert health["rooms"] == 2 and health["connections"] == 3
        text = await scrape()
        assert metric(text, "observer_rooms", kind="space") == 2
        assert metric(text, "observer_connections", endpoint="chatroom") == 3
        # a provider that goes away with a request pending
        await a.send("request", service_name="svc", request_id=3)
        await b.expect("request")
        await b.aclose()
        assert body(await a.expect("error"))["code"] == "provider_disconnected"
        await a.expect("response")
        text = await scrape()
        assert metric(text, "observer_service_requests_total",
                      result="provider_disconnected") == 1
        assert metric(text, "observer_connections", endpoint="chatroom") == 2


async def test_per_ip_connection_cap_applies(start_relay: StartRelay) -> None:
    relay = await start_relay(max_connections_per_ip=2)
    await chat(relay, "/")
    await chat(relay, "/chatroom?space=other")
    answer = await upgrade(relay.server.relay_port, "/chatroom")
    assert answer.status == 429


LOG_SECRETS = ["topic-value-zebra-4711", "service-args-quokka-9931", "result-pelican-5512",
               "validator-reason-heron-77"]


async def test_logs_name_spaces_but_no_content(start_relay: StartRelay,
                                               caplog: pytest.LogCaptureFixture) -> None:
    """§1.1: a line per space created and removed; never topic values, service arguments or
    results, keys."""
    caplog.set_level("DEBUG")
    relay = await start_relay(chatroom_secret=SECRET, room_idle_expiry=0.3,
                              public_stats=True)
    key = k("logged")
    a, _ = await chat(relay, f"/chatroom?space=logged&key={key}")
    b, _ = await chat(relay, f"/chatroom?space=logged&key={key}")
    await a.send("subscribe", topic_name="t", type="string")
    await a.expect("update")
    await a.send("update", topic_name="t", change={"type": "set", "value": LOG_SECRETS[0]})
    await a.expect("update")
    await b.send("register_service", service_name="svc")
    await b.send("register_service", service_name="_chatroom/validate_change/t")
    await round_trip(b)
    await a.send("request", service_name="svc", args={"x": LOG_SECRETS[1]}, request_id="r")
    forwarded = body(await b.expect("request"))
    await b.send("response", request_id=forwarded["request_id"], response=LOG_SECRETS[2])
    await a.expect("response")
    await a.send("update", topic_name="t", change={"type": "set", "value": "no"})
    check = body(await b.expect("request"))
    await b.send("response", request_id=check["request_id"],
                 response={"valid": False, "reason": LOG_SECRETS[3]})
    assert body(await a.expect("reject_update"))["reason"] == LOG_SECRETS[3]
    await a.send("update", topic_name="nope", change={})  # an error line at DEBUG
    await a.expect("error")
    await a.aclose()
    await b.aclose()
    async with httpx.AsyncClient(base_url=relay.web, timeout=5) as http:
        await eventually(lambda: space_gone(http, "logged"), timeout=5, interval=0.05)
    ours = [r for r in caplog.records  # not the test's own clients
            if not r.name.startswith(("trio-websocket", "trio_websocket", "httpx", "httpcore"))]
    lines = [f"{r.getMessage()} {r.__dict__}" for r in ours]
    for secret in [*LOG_SECRETS, key, SECRET]:
        assert not [line for line in lines if secret in line], secret
    spaces = [r for r in caplog.records if getattr(r, "space", None) == "logged"]
    messages = [r.getMessage() for r in spaces]
    assert any("opened" in m or "created" in m for m in messages), messages
    assert any("removed" in m for m in messages), messages


async def test_requester_disconnect_cancels_its_requests(relay: Relay) -> None:
    """§9.5: the requester's end cancels its pending requests (noted in the provider's
    ``client_message`` topic); the provider's late answer is ``unknown_request``."""
    provider, hello = await chat(relay, "/chatroom?v=2", envelope="content")
    await provider.send("subscribe", topic_name=f"_chatroom/client_message/{hello['id']}")
    await provider.expect("update")
    await provider.send("register_service", service_name="svc")
    await round_trip(provider)
    requester, _ = await chat(relay, "/")
    await requester.send("request", service_name="svc", args={"a": 1}, request_id="gone")
    forwarded = body(await provider.expect("request"))
    await requester.aclose()
    note = body(await provider.expect("update"))
    assert note["change"]["value"] == f"request {forwarded['request_id']} to svc cancelled"
    await provider.send("response", request_id=forwarded["request_id"], response=1)
    error = body(await provider.expect("error"))
    assert error["code"] == "unknown_request"
    assert error["request_id"] == forwarded["request_id"]
    async with httpx.AsyncClient(timeout=5) as http:
        text = (await http.get(relay.web + "/metrics")).text
    assert metric(text, "observer_service_requests_total", result="cancelled") == 1


async def test_reset_and_half_close_end_only_that_connection(relay: Relay) -> None:
    """§1.1 failure isolation: a provider that resets its TCP connection mid-frame, and one
    that half-closes it, end like any disconnection; the space and the others carry on."""
    import socket
    import struct

    watcher, _ = await chat(relay, "/chatroom?v=2", envelope="content")
    await watcher.send("subscribe", topic_name="_chatroom/server_status")
    await watcher.expect("update")

    async def status(text: str) -> None:
        while body(await watcher.expect("update"))["change"]["value"] != text:
            pass

    for how in ("reset", "half-close"):
        raw = await RawChat.connect(relay.server.relay_port, "/chatroom")
        hello = await raw.frames(count=1)
        cid = hello[0]["args"]["id"]
        await raw.send("register_service", service_name=how)
        await status(f"service {how} registered by client {cid}")
        await watcher.send("request", service_name=how, request_id=how)
        assert (await raw.frames(count=1))[0]["type"] == "request"
        sock = raw.stream.socket
        if how == "reset":
            # a frame header promising 1,000 bytes, 10 of them, then RST
            await raw.stream.send_all(bytes([0x81, 0x80 | 126]) + struct.pack("!H", 1000)
                                      + b"\0\0\0\0" + b"x" * 10)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        else:
            sock.shutdown(socket.SHUT_WR)
        failed = None
        while failed is None:
            frame = await watcher.recv()
            if frame["type"] == "response":
                failed = frame["content"]
        assert failed["request_id"] == how and failed["response"] is None
        assert failed["error"]["code"] == "provider_disconnected"
        await status(f"client {cid} disconnected")
        if how == "half-close":
            await raw.aclose()
    await watcher.send("subscribe", topic_name="still", type="int")
    assert body(await watcher.expect("update"))["topic_name"] == "still"
