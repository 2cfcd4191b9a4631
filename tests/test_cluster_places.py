"""Replicated places across nodes (§9 "every rule holds across nodes"): ChatRoom spaces and
the chat app's directory shared by relay processes through a real Redis.

Clients of one space or one chat sit on different nodes; every node applies the places'
commands in the order of one stream. The kill -9 tests show that a node's death loses no
applied change and drops exactly that node's clients.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
from trio_websocket import WebSocketConnection, connect_websocket_url

from tests.cluster_support import Node, start_node
from tests.redis_server import redis_server, redis_url  # noqa: F401  (fixtures)

pytestmark = pytest.mark.timeout(120)
WAIT = 10.0


@pytest.fixture
async def nodes(nursery: trio.Nursery, redis_url: str  # noqa: F811
                ) -> AsyncIterator[list[Node]]:
    started = [await start_node(nursery, redis_url), await start_node(nursery, redis_url)]
    yield started
    for node in started:
        if node.process.returncode is None:
            node.process.terminate()


class Space:
    """A ChatRoom client in the full shape (``?v=2``)."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self.id = 0

    @classmethod
    async def open(cls, nursery: trio.Nursery, node: Node, space: str) -> Space:
        ws = await connect_websocket_url(nursery, f"{node.url}/chatroom?space={space}&v=2")
        client = cls(ws)
        hello = await client.recv()
        assert hello["type"] == "hello"
        client.id = hello["content"]["id"]
        return client

    async def send(self, type_: str, **content: Any) -> None:
        await self.ws.send_message(json.dumps({"type": type_, "content": content}))

    async def recv(self) -> dict[str, Any]:
        with trio.fail_after(WAIT):
            return json.loads(await self.ws.get_message())  # type: ignore[no-any-return]

    async def expect(self, type_: str) -> dict[str, Any]:
        frame = await self.recv()
        assert frame["type"] == type_, frame
        return frame["content"]  # type: ignore[no-any-return]


class Chat:
    """The chat app's events over Socket.IO on a WebSocket (Engine.IO v4)."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws

    @classmethod
    async def open(cls, nursery: trio.Nursery, node: Node) -> Chat:
        ws = await connect_websocket_url(
            nursery, f"{node.url}/socket.io/?EIO=4&transport=websocket")
        chat = cls(ws)
        assert (await chat._packet()).startswith("0{")
        await ws.send_message("40")
        assert (await chat._packet()).startswith("40")
        return chat

    async def _packet(self) -> str:
        with trio.fail_after(WAIT):
            while True:
                packet = await self.ws.get_message()
                assert isinstance(packet, str)
                if packet == "2":
                    await self.ws.send_message("3")
                    continue
                return packet

    async def emit(self, event: str, data: Any) -> None:
        await self.ws.send_message("42" + json.dumps([event, data]))

    async def expect(self, event: str) -> Any:
        packet = await self._packet()
        assert packet.startswith("42"), packet
        name, data = json.loads(packet[2:])
        assert name == event, (name, data)
        return data

    async def until(self, event: str, check: Any = lambda data: True) -> Any:
        """Skip other events (``contact`` frames may be coalesced) until a matching one."""
        while True:
            packet = await self._packet()
            name, data = json.loads(packet[2:])
            if name == event and check(data):
                return data

    async def login(self, name: str) -> str:
        await self.emit("login", {"username": name})
        answer = await self.expect("login-response")
        assert answer["result"] == "success", answer
        return str(answer["userid"])


async def test_a_space_spans_nodes(nursery: trio.Nursery, nodes: list[Node]) -> None:
    """Ids, topics and order are the space's, wherever its clients are; a provider on one
    node serves a requester on another."""
    a, b = nodes
    one = await Space.open(nursery, a, "demo")
    two = await Space.open(nursery, b, "demo")
    assert (one.id, two.id) == (1, 2)  # one counter for the space, across nodes
    await one.send("subscribe", topic_name="score", type="int")
    assert (await one.expect("update"))["version"] == 0
    await two.send("subscribe", topic_name="score", type="int")
    assert (await two.expect("update"))["version"] == 0
    for i in range(20):
        await (one if i % 2 else two).send(
            "update", topic_name="score", change={"type": "add", "value": 1, "id": f"c{i}"})
    for client in (one, two):
        seen = [await client.expect("update") for _ in range(20)]
        assert [u["version"] for u in seen] == list(range(1, 21))
        # Both see the same order of changes (the space's one order).
        assert [u["change"]["id"] for u in seen] == [u["change"]["id"] for u in seen]
    orders = []
    for client in (one, two):
        await client.send("subscribe", topic_name="score")
        orders.append(await client.expect("update"))
    assert orders[0]["change"]["value"] == orders[1]["change"]["value"] == 20

    await two.send("register_service", service_name="sum")
    # The registration has no answer; a subscription sent after it on the same connection
    # is answered only once both are in the space's one order, so the request sent next
    # (from the other node) is ordered after the registration. Without this the request
    # could be ordered first and find no provider: the two nodes are not causally related.
    await two.send("subscribe", topic_name="ready", type="int")
    assert (await two.expect("update"))["topic_name"] == "ready"
    await one.send("request", service_name="sum", args={"a": 1, "b": 2}, request_id="q1")
    forwarded = await two.expect("request")
    assert forwarded["client_id"] == 1
    await two.send("response", request_id=forwarded["request_id"], response=3)
    assert await one.expect("response") == {"request_id": "q1", "response": 3}


async def test_kill_9_keeps_every_applied_change_and_drops_that_nodes_clients(
        nursery: trio.Nursery, nodes: list[Node]) -> None:
    a, b = nodes
    survivor = await Space.open(nursery, a, "lab")
    doomed = await Space.open(nursery, b, "lab")
    await survivor.send("subscribe", topic_name="_chatroom/server_status", type="string")
    await survivor.expect("update")
    await doomed.send("subscribe", topic_name="notes", type="list")
    await doomed.expect("update")
    for i in range(10):
        await doomed.send("update", topic_name="notes",
                          change={"type": "insert", "item": i, "position": -1})
    for _ in range(10):
        await doomed.expect("update")  # applied: every node has them
    await doomed.send("register_service", service_name="echo")
    statuses = [(await survivor.expect("update"))["change"]["value"] for _ in range(2)]
    assert statuses == ["topic notes created by client 2", "service echo registered by client 2"]
    await survivor.send("request", service_name="echo", request_id=7, timeout=30)
    await doomed.expect("request")  # pending at the provider when its node dies

    b.kill9()
    statuses: list[str] = []
    failures = []
    while "client 2 disconnected" not in statuses or not failures:
        frame = await survivor.recv()  # the request fails at once, not after 30 s
        if frame["type"] == "response":
            failures.append(frame["content"])
        else:
            statuses.append(frame["content"]["change"]["value"])
    assert failures == [{"request_id": 7, "response": None, "error": {
        "code": "provider_disconnected", "message": failures[0]["error"]["message"]}}]
    assert "service echo unregistered" in statuses
    # The dead node's changes are all there, and the space goes on with new ids.
    await survivor.send("subscribe", topic_name="notes")
    assert (await survivor.expect("update"))["change"]["value"] == list(range(10))
    late = await Space.open(nursery, a, "lab")
    assert late.id == 3


async def test_a_node_that_starts_later_has_the_spaces_and_the_chat(
        nursery: trio.Nursery, redis_url: str) -> None:  # noqa: F811
    """A new node replays the places' log before serving: its replicas are complete."""
    a = await start_node(nursery, redis_url)
    first = await Space.open(nursery, a, "late")
    await first.send("subscribe", topic_name="t", type="generic")
    await first.expect("update")
    await first.send("update", topic_name="t", change={"type": "set", "value": {"x": 1}})
    await first.expect("update")
    ann = await Chat.open(nursery, a)
    ann_id = await ann.login("ann")

    b = await start_node(nursery, redis_url)
    second = await Space.open(nursery, b, "late")
    assert second.id == 2
    await second.send("subscribe", topic_name="t")
    answer = await second.expect("update")
    assert answer["version"] == 1 and answer["change"]["value"] == {"x": 1}
    bob = await Chat.open(nursery, b)
    await bob.emit("login", {"username": "Ann "})  # the name is taken on the other node
    assert (await bob.expect("login-response"))["result"] == "duplicate"
    bob_id = await bob.login("bob")
    contact = await ann.until("contact", lambda c: bob_id in c["person"])
    assert set(contact["person"]) == {ann_id, bob_id}


async def test_chat_users_on_two_nodes(nursery: trio.Nursery, nodes: list[Node]) -> None:
    a, b = nodes
    ann, bob, cy = (await Chat.open(nursery, a), await Chat.open(nursery, b),
                    await Chat.open(nursery, b))
    ann_id, bob_id, cy_id = await ann.login("ann"), await bob.login("bob"), await cy.login("cy")
    await ann.emit("message", {"sender": ann_id, "receiver": bob_id, "message": "hi bob"})
    assert await bob.until("message") == {"sender": ann_id, "receiver": bob_id,
                                          "message": "hi bob"}
    await bob.emit("create_group", {"sender": bob_id, "member": {ann_id: "", cy_id: ""}})
    group = await ann.until("update_group")
    assert list(group["member"]) == [bob_id, ann_id, cy_id]
    gid = group["groupid"]
    await cy.emit("message", {"sender": cy_id, "receiver": gid, "message": "to all"})
    assert (await ann.until("message"))["message"] == "to all"
    assert (await bob.until("message"))["message"] == "to all"

    b.kill9()  # bob and cy are gone: the group loses both and is deleted
    deleted = await ann.until("delete_group")
    assert deleted == {"groupid": gid}
    contact = await ann.until("contact", lambda c: bob_id not in c["person"]
                              and cy_id not in c["person"])
    assert list(contact["person"]) == [ann_id] and contact["group"] == {}
    # The names are free again.
    dan = await Chat.open(nursery, a)
    assert await dan.login("bob")


async def test_redis_paused_mid_stream_applies_every_change_once(
        nursery: trio.Nursery, redis_server: Any, nodes: list[Node]) -> None:  # noqa: F811
    """Commands issued while Redis is paused wait (bounded) and are resent; a batch whose
    outcome was unknown is not applied twice (each command's seq)."""
    a, b = nodes
    one = await Space.open(nursery, a, "paused")
    two = await Space.open(nursery, b, "paused")
    for client in (one, two):
        await client.send("subscribe", topic_name="n", type="int")
        await client.expect("update")
    redis_server.pause()
    try:
        for i in range(30):
            await one.send("update", topic_name="n", change={"type": "add", "value": 1,
                                                             "id": f"p{i}"})
        await trio.sleep(3.0)  # past the backplane's operation timeout: resends happen
    finally:
        redis_server.resume()
    for client in (one, two):
        seen = [await client.expect("update") for _ in range(30)]
        assert [u["change"]["id"] for u in seen] == [f"p{i}" for i in range(30)]
        assert [u["version"] for u in seen] == list(range(1, 31))
    # A sentinel after them: nothing was applied twice.
    await one.send("update", topic_name="n", change={"type": "set", "value": -1, "id": "end"})
    for client in (one, two):
        sentinel = await client.expect("update")
        assert sentinel["change"]["id"] == "end" and sentinel["version"] == 31
        assert sentinel["change"]["old_value"] == 30


class _Host:
    """A PlacesHost whose places live while they have had more connects than disconnects."""

    def __init__(self) -> None:
        self.count: dict[str, int] = {}
        self.applied: list[tuple[str, int]] = []

    def apply_place(self, cmd: Any) -> None:
        self.applied.append((cmd.node, cmd.seq))
        delta = {"connect": 1, "disconnect": -1}.get(cmd.op, 0)
        self.count[cmd.place] = self.count.get(cmd.place, 0) + delta

    def place_alive(self, kind: str, place: str) -> bool:
        return self.count.get(place, 0) > 0


def test_births_bound_the_trim_and_resends_apply_once() -> None:
    from relay.cluster.places import TRIM_AGE, Places
    from relay.cluster.wire import PlaceCommand, encode_place

    host = _Host()
    places = Places(host, None)  # type: ignore[arg-type]

    def entry(stream_id: str, place: str, op: str, seq: int) -> tuple[str, bytes]:
        return stream_id, encode_place(PlaceCommand("space", place, op, "n1", 1, "", None,
                                                    b"s" * 16, 0.0, seq))

    places._apply_all([entry("10-0", "x", "connect", 1), entry("11-0", "y", "connect", 2),
                       entry("12-0", "x", "disconnect", 3),
                       entry("13-0", "x", "disconnect", 3)])  # (a resent command)
    assert host.applied == [("n1", 1), ("n1", 2), ("n1", 3)]
    now = 10**9
    # x is dead, y was born at 11-0: nothing from 11-0 on may go, even if old.
    assert places.trim_point(now, []) == "11-0"
    # A lagging node's position holds the trim back too.
    assert places.trim_point(now, ["5-3"]) == "5-3"
    places._apply_all([entry("14-0", "y", "disconnect", 4)])
    # No live place: everything older than TRIM_AGE may go, but not past what we read.
    assert places.trim_point(now, []) == "14-0"
    assert places.trim_point(20_000 + int(TRIM_AGE * 1000), []) == "14-0"
    assert places.trim_point(10 + int(TRIM_AGE * 1000), []) == "10-0"
