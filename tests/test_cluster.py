"""Scale-out (§1.3 Backplane): rooms shared by relay processes through a real Redis."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import coredis
import pytest
import trio

from tests.cluster_support import Node, client, start_node
from tests.redis_server import redis_server, redis_url  # noqa: F401  (fixtures)
from tests.support import Client

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(params=["forwarding", "handoff"])
async def nodes(request: pytest.FixtureRequest, nursery: trio.Nursery, redis_url: str  # noqa: F811
                ) -> AsyncIterator[list[Node]]:
    """Two nodes; every test runs with clients forwarded between them (nodes on different
    hosts) and with same-host handoff (a joining client moves to the room's owner)."""
    env = {"OBSERVER_CLUSTER_HANDOFF": "1" if request.param == "handoff" else "0"}
    started = [await start_node(nursery, redis_url, **env),
               await start_node(nursery, redis_url, **env)]
    yield started
    for node in started:
        if node.process.returncode is None:
            node.process.terminate()


async def test_cross_node_room(nursery: trio.Nursery, nodes: list[Node]) -> None:
    a, b = nodes
    host = await client(nursery, a)
    created = (await host.ok("room/create", {"name": "Teacher"}))[0]["data"]
    student = await client(nursery, b)
    frames = await student.call("room/join", {"room_id": created["room_id"], "name": "Ann",
                                              "version": "1.2.15"})
    assert [f["event"] for f in frames] == ["room/join", "rtc/config", "ack"]
    joined = frames[0]["data"]
    update = await host.expect("room/update")
    assert [u["name"] for u in update["data"]["users"]] == ["Teacher", "Ann"]

    # Both directions, every event family.
    await student.ok("message/to_mentor", {"content": "help"})
    assert (await host.expect("message/to_mentor"))["data"]["content"] == "help"
    await host.ok("message/to_client", {"user_id": 2, "content": "look at line 3"})
    assert (await student.expect("message/to_client"))["data"]["content"] == "look at line 3"
    await host.ok("sharing/start", {"user_id": 2})
    assert (await student.expect("sharing/start"))["seq"] == 2
    files = [{"filename": "a.py", "status": "CREATED", "content": "print(1)"}]
    await student.ok("sharing/code_send", {"files": files})
    sent = await host.expect("sharing/code_send")
    assert sent["data"] == {"room_id": created["room_id"], "user_id": 2, "files": files}
    await host.ok("steps/all", [{"name": "1", "content": "x", "language": "py",
                                 "type": "exercise"}])
    await student.expect("steps/all")
    await student.ok("steps/status/to_mentor", {"1": "HELP"})
    assert (await host.expect("steps/status/to_mentor"))["data"]["steps"] == {"1": "HELP"}
    await student.ok("rtc/request", {})
    assert (await host.expect("rtc/request"))["data"] == {"user_id": 2}
    await student.fail("room/kill", {"user_id": 2}, "not_host")
    await host.silent()
    # The remaining families: settings, exercise, signal, logs, tables, imports.
    await host.ok("settings", {"files_to_ignore": "build/\n*.pyc"})
    assert (await student.expect("settings"))["data"] == {
        "names": [], "dirs": ["build"], "extensions": ["pyc"]}
    await host.ok("exercise", {"content": "do it"})
    assert (await student.expect("exercise"))["data"] == {"content": "do it"}
    await host.ok("steps/status/to_client", {"user_id": 2, "steps": {"1": "ACCEPTED"}})
    assert (await student.expect("alerts"))["data"]["type"] == "SUCCESS"
    await student.expect("steps/status/to_client")
    await student.ok("signal", {"value": "HELP"})
    assert (await host.expect("signal"))["data"] == {"user_id": 2, "value": "HELP"}
    await student.ok("error/from_client", {"content": "Traceback"})
    assert (await host.expect("log"))["data"]["message"].startswith("Error from Ann")
    table = await host.ok("steps/table", {})
    assert table[0]["data"][0]["steps"] == {"1": "ACCEPTED"}
    imported = await host.ok("steps/import", {"markdown": "# A\n---\nB"})
    assert [f["event"] for f in imported] == ["steps/load", "alerts"]
    history = await host.ok("message/user", {"user_id": 2})
    assert len(history[0]["data"]["messages"]) == 2

    # Replacement across nodes: the same student re-attaches on node A.
    again = await client(nursery, a)
    frames = await again.call("room/rejoin", {**joined, "last_seq": student.last_seq})
    assert frames[-1]["data"] == {"ok": True}
    assert await student.closed() == 4003
    assert (await host.expect("room/update"))["data"]["users"][1]["status"] == "online"
    await host.ok("message/to_client", {"user_id": 2, "content": "still there?"})
    assert (await again.expect("message/to_client"))["data"]["content"] == "still there?"

    # Kick and leave across nodes.
    bo = await client(nursery, b)
    bo_id = (await bo.ok("room/join", {"room_id": created["room_id"], "name": "Bo"}))[0][
        "data"]["user_id"]
    await host.expect("room/update")
    await host.ok("room/kill", {"user_id": bo_id})
    assert (await bo.expect("room/kicked"))["data"]["message"].startswith("You were removed")
    assert await bo.closed() == 4001
    cy = await client(nursery, b)
    await cy.ok("room/join", {"room_id": created["room_id"], "name": "Cy"})
    await cy.ok("room/leave", {})
    await cy.fail("message/to_mentor", {"content": "x"}, "not_in_room")
    updates = [await host.expect("room/update") for _ in range(2)]
    assert [u["name"] for u in updates[-1]["data"]["users"]] == ["Teacher", "Ann"]

    # A room id is unique across nodes; closing on one node closes everywhere.
    await host.ok("room/close", {})
    assert await again.closed() == 4000
    late = await client(nursery, b)
    await late.fail("room/join", {"room_id": created["room_id"], "name": "X"},
                    "room_not_found")


async def test_same_host_handoff_moves_the_socket_to_the_owner(
        nursery: trio.Nursery, redis_url: str) -> None:  # noqa: F811
    """A student who connected to the node that does not own the room is handed over to
    the owner at its join (same host): killing the accepting node afterwards does not
    touch its connection, and everything keeps flowing both ways."""
    a = await start_node(nursery, redis_url)
    b = await start_node(nursery, redis_url)
    host = await client(nursery, a)
    room = (await host.ok("room/create", {"name": "Teacher"}))[0]["data"]
    student = await client(nursery, b)
    joined = await student.ok("room/join", {"room_id": room["room_id"], "name": "Ann"})
    assert joined[0]["data"]["user_id"] > 1
    await host.expect("room/update")
    await student.ok("message/to_mentor", {"content": "before"})
    assert (await host.expect("message/to_mentor"))["data"]["content"] == "before"
    b.kill9()
    await trio.sleep(0.5)
    await student.ok("message/to_mentor", {"content": "after"})
    assert (await host.expect("message/to_mentor"))["data"]["content"] == "after"
    await host.send("message/to_all", {"content": "hello"})
    assert (await student.expect("message/to_client"))["data"]["content"] == "hello"


async def test_socketio_client_is_handed_off_with_its_session(
        nursery: trio.Nursery, redis_url: str) -> None:  # noqa: F811
    """A Socket.IO client moves with its Engine.IO session: after the accepting node is
    killed, the owner pings it, and events flow both ways on the same socket."""
    from trio_websocket import connect_websocket_url

    env = {"OBSERVER_SIO_PING_INTERVAL": "0.5", "OBSERVER_SIO_PING_TIMEOUT": "2"}
    a = await start_node(nursery, redis_url, **env)
    b = await start_node(nursery, redis_url, **env)
    host = await client(nursery, a)
    room = (await host.ok("room/create", {"name": "Teacher"}))[0]["data"]
    ws = await connect_websocket_url(nursery, b.url + "/socket.io/?EIO=4&transport=websocket")
    assert (await ws.get_message()).startswith("0{")
    await ws.send_message("40")
    assert (await ws.get_message()).startswith('40{"sid":')
    pings = 0

    async def next_event() -> list[Any]:
        nonlocal pings
        with trio.fail_after(10):
            while True:
                message = await ws.get_message()
                if message == "2":  # Engine.IO ping: answer it, as clients do
                    pings += 1
                    await ws.send_message("3")
                elif message.startswith("42"):
                    return list(json.loads(message[2:]))

    join = {"room_id": room["room_id"], "name": "Ann"}
    await ws.send_message("42" + json.dumps(["room/join", join]))
    assert (await next_event())[0] == "room/join"
    await host.expect("room/update")
    b.kill9()
    pings = 0
    with trio.move_on_after(1.5):
        while True:
            await next_event()  # rtc/config (sent after the join), then only pings from a
    assert pings >= 2
    await ws.send_message("42" + json.dumps(["message/to_mentor", {"content": "after"}]))
    assert (await host.expect("message/to_mentor"))["data"]["content"] == "after"
    await host.send("message/to_all", {"content": "hello"})
    event = await next_event()
    assert event[0] == "message/to_client" and event[1]["content"] == "hello"


def test_handoff_only_when_nothing_was_read_past_the_joining_frame() -> None:
    from wsproto.frame_protocol import FrameProtocol

    from relay.transport.wsread import TEXT, FrameReader

    client_side = FrameProtocol(client=True, extensions=[])
    join, chat = (client_side.send_data(text, fin=True) for text in ("join", "chat"))
    reader = FrameReader(1 << 20)
    assert reader.feed(join + chat[:3]) == [(TEXT, "join")]  # and the next frame's start
    assert reader.buffered == 3
    reader = FrameReader(1 << 20)
    assert reader.feed(join) == [(TEXT, "join")]
    assert reader.buffered == 0


async def test_forwarded_events_keep_their_order_acks_and_errors(
        nursery: trio.Nursery, nodes: list[Node]) -> None:
    """A student on the other node sends many events back to back (more than the forward
    window, so most are not waited for): the host gets them in order, the student gets
    every ack and every error in order, on its own connection only."""
    a, b = nodes
    host = await client(nursery, a)
    room = (await host.ok("room/create", {"name": "Teacher"}))[0]["data"]
    student = await client(nursery, b)
    await student.ok("room/join", {"room_id": room["room_id"], "name": "Ann"})
    await host.expect("room/update")
    for i in range(50):
        if i % 10 == 7:
            await student.send("message/to_all", {"content": "not mine"}, ref=i)  # host only
        else:
            await student.send("message/to_mentor", {"content": f"m{i}"}, ref=i)
    answers = []
    while len(answers) < 50:
        frame = await student.recv()
        if frame["event"] == "ack":
            answers.append((frame["ref"], frame["data"].get("error", {}).get("code")))
    assert answers == [(i, "not_host" if i % 10 == 7 else None) for i in range(50)]
    got = []
    while len(got) < 45:
        frame = await host.expect("message/to_mentor")
        got.append(frame["data"]["content"])
    assert got == [f"m{i}" for i in range(50) if i % 10 != 7]
    await host.silent()


async def test_kill_owner_then_resume_elsewhere(nursery: trio.Nursery,
                                                nodes: list[Node]) -> None:
    """kill -9 the node holding the host and half the students mid chat and code stream;
    everyone resumes on the surviving node and gets every event exactly once, in order."""
    a, b = nodes
    host = await client(nursery, a)
    room = (await host.ok("room/create", {"name": "Teacher"}))[0]["data"]
    students = []
    for i, node in enumerate([a, b, a, b]):
        c = await client(nursery, node)
        joined = (await c.ok("room/join", {"room_id": room["room_id"], "name": f"s{i}"}))[0]
        students.append((c, joined["data"], node))
        await host.expect("room/update")
    sharer_id = students[1][1]["user_id"]
    await host.ok("sharing/start", {"user_id": sharer_id})
    await students[1][0].expect("sharing/start")

    # Traffic in flight: the host chats to everyone, the sharer streams code updates.
    for i in range(20):
        await host.send("message/to_all", {"content": f"chat {i}"})
        await students[1][0].send("sharing/code_update", {"files": [
            {"filename": "a.py", "status": "CHANGED", "content": f"v{i}"}]})
    await trio.sleep(0.3)
    a.kill9()

    # Collect what each survivor got before the kill, then resume on node B.
    async def drain(c: client) -> list[dict]:  # type: ignore[valid-type]
        got = []
        with trio.move_on_after(8):
            try:
                while True:
                    got.append(await c.recv(timeout=8))
            except Exception:
                pass
        return got

    resumed = []
    for c, creds, _node in students:
        before = await drain(c)
        last = c.last_seq
        fresh = await client(nursery, b)
        fresh.last_seq = last
        frames = await fresh.call("room/rejoin", {**creds, "last_seq": last}, timeout=30)
        assert frames[-1]["data"] == {"ok": True}, frames
        chats = [f["data"]["content"] for f in before + frames
                 if f["event"] == "message/to_client"]
        resumed.append(chats)
    host_before = await drain(host)
    host2 = await client(nursery, b)
    host2.last_seq = host.last_seq
    frames = await host2.call("room/rehost", {"room_id": room["room_id"], "user_id": 1,
                                              "token": room["token"],
                                              "last_seq": host.last_seq}, timeout=30)
    assert frames[-1]["data"] == {"ok": True}, frames
    for chats in resumed:
        # Exactly once, in order: what the host sent, up to the last committed event.
        assert chats == [f"chat {i}" for i in range(len(chats))]
    assert all(len(c) == len(resumed[0]) for c in resumed)
    assert len(resumed[0]) >= 1
    updates = [f["data"]["files"][0]["content"] for f in host_before + frames
               if f["event"] == "sharing/code_update"]
    assert updates == [f"v{i}" for i in range(len(updates))] and updates
    # The stored snapshot is the last committed update, on the surviving node.
    snap = await host2.ok("sharing/snapshot", {"user_id": sharer_id})
    assert snap[-1]["data"]["files"][0]["content"] == updates[-1]


async def _room_with_a_step(nursery: trio.Nursery, a: Node, b: Node
                            ) -> tuple[dict[str, Any], Client]:
    """A room created on ``a`` with one step, and a student "Ann" joined through ``b``."""
    host = await client(nursery, a)
    room = (await host.ok("room/create", {"name": "Teacher"}))[0]["data"]
    await host.ok("steps/all", [{"name": "1", "content": "x", "language": "py",
                                 "type": "exercise"}])
    student = await client(nursery, b)
    await student.ok("room/join", {"room_id": room["room_id"], "name": "Ann"})
    return room, student


async def test_stats_and_sse_on_any_node(nursery: trio.Nursery, nodes: list[Node]) -> None:
    import httpx

    a, b = nodes
    room, student = await _room_with_a_step(nursery, a, b)
    base = f"http://127.0.0.1:{b.web_port}"
    url = f"{base}/api/rooms/{room['room_id']}/stats?key={room['stats_key']}"
    async with httpx.AsyncClient(timeout=10) as http:
        with trio.fail_after(10):
            while True:
                body = (await http.get(url)).json()
                if body.get("students"):
                    break
                await trio.sleep(0.1)
        assert body["students"][0]["name"] == "Ann"
        assert (await http.get(url.replace(room["stats_key"], "wrong"))).status_code == 403
        events = f"{base}/roomstats/{room['room_id']}/events?key={room['stats_key']}"
        async with http.stream("GET", events) as stream:
            lines = stream.aiter_lines()
            first = [line async for line in _take(lines, 2)]
            assert first[0] == "event: stats"
            await student.ok("steps/status/to_mentor", {"1": "DONE"})
            with trio.fail_after(10):
                async for line in lines:
                    if line.startswith("data:") and '"DONE"' in line:
                        break


async def test_stats_documents_are_written_on_demand_and_fresh_on_first_read(
        nursery: trio.Nursery, nodes: list[Node], redis_url: str) -> None:  # noqa: F811
    """Owners build documents only for rooms somebody reads; the first read on another
    node still sees every change made before it (it waits for a fresh document)."""
    import httpx

    a, b = nodes
    room, student = await _room_with_a_step(nursery, a, b)
    await student.ok("steps/status/to_mentor", {"1": "DONE"})
    await trio.sleep(1.5)  # a few stats flushes: nobody reads, so nothing is written
    doc_key = f"or:kv:stats:{room['room_id']}"
    redis = coredis.Redis.from_url(redis_url)
    async with redis:
        assert await redis.exists([doc_key]) == 0
    path = f"/api/rooms/{room['room_id']}/stats?key={room['stats_key']}"
    async with httpx.AsyncClient(timeout=10) as http:
        for node in (b, a):  # b reads the owner's document, a (the owner) its live room
            body = (await http.get(f"http://127.0.0.1:{node.web_port}{path}")).json()
            assert [s["name"] for s in body["students"]] == ["Ann"]
            assert '"DONE"' in json.dumps(body)
    async with redis:
        assert await redis.exists([doc_key]) == 1


async def _take(lines: object, n: int) -> AsyncIterator[str]:
    count = 0
    async for line in lines:  # type: ignore[attr-defined]
        yield line
        count += 1
        if count >= n:
            return


async def test_healthz_503_while_redis_is_unreachable(nursery: trio.Nursery, redis_server,  # noqa: F811
                                                      nodes: list[Node]) -> None:
    import httpx

    a, _ = nodes
    url = f"http://127.0.0.1:{a.port}/healthz"
    async with httpx.AsyncClient(timeout=5) as http:
        assert (await http.get(url)).status_code == 200
        redis_server.pause()
        try:
            with trio.fail_after(15):
                while (await http.get(url)).status_code != 503:
                    await trio.sleep(0.2)
            assert (await http.get(url)).json()["status"] == "backplane_unavailable"
        finally:
            redis_server.resume()
        with trio.fail_after(15):
            while (await http.get(url)).status_code != 200:
                await trio.sleep(0.2)


async def test_ws_dialect_room_across_nodes(nursery: trio.Nursery, nodes: list[Node]) -> None:
    import json

    a, b = nodes

    async def recv(c: object) -> dict:
        with trio.fail_after(5):
            return json.loads(await c.ws.get_message())  # type: ignore[attr-defined]

    host = await client(nursery, a, "/ws")
    await host.send_raw(json.dumps({"type": "CREATE_ROOM", "username": "teacher"}))
    room = (await recv(host))["roomid"]
    user = await client(nursery, b, "/ws")
    # A user first in a room of its own node, then joining the room on node A.
    await user.send_raw(json.dumps({"type": "CREATE_ROOM", "username": "mine"}))
    await recv(user)
    with trio.fail_after(10):
        while True:
            await user.send_raw(json.dumps({"type": "JOIN_ROOM", "roomid": room,
                                            "username": "ann"}))
            reply = await recv(user)
            if reply["type"] == "ROOM_JOINED":
                break
            await trio.sleep(0.2)  # the room's registration may still be on its way
    assert reply == {"type": "ROOM_JOINED", "roomid": room}
    assert await recv(host) == {"type": "USER_JOINED", "username": "ann"}
    await user.send_raw(json.dumps({"type": "REQUEST_SHARING"}))
    assert await recv(host) == {"type": "REQUEST_SHARING", "username": "ann"}
    await host.send_raw(json.dumps({"type": "ALLOW_SHARING", "username": "ann"}))
    assert await recv(user) == {"type": "ALLOW_SHARING"}
    await user.send_raw(json.dumps({"type": "RCP_OFFER", "sdp": "v=0"}))
    assert await recv(host) == {"type": "RCP_OFFER", "sdp": "v=0", "username": "ann"}
    await host.send_raw(json.dumps({"type": "RCP_ANSWER", "username": "ann", "sdp": "v=1"}))
    assert await recv(user) == {"type": "RCP_ANSWER", "sdp": "v=1"}
    # Leaving returns the connection to its own node; the host hears about it.
    await user.send_raw(json.dumps({"type": "LEAVE_ROOM"}))
    assert await recv(user) == {"type": "LEFT_ROOM"}
    assert await recv(host) == {"type": "USER_LEFT", "username": "ann"}
    await user.aclose()
    await host.silent()


async def test_room_of_a_dead_owner_expires(nursery: trio.Nursery, redis_url: str  # noqa: F811
                                            ) -> None:
    a = await start_node(nursery, redis_url, OBSERVER_ROOM_IDLE_EXPIRY="1")
    b = await start_node(nursery, redis_url, OBSERVER_ROOM_IDLE_EXPIRY="1")
    host = await client(nursery, a)
    room = (await host.ok("room/create", {}))[0]["data"]
    await trio.sleep(1.5)  # the owner has touched the room's keys once
    a.kill9()
    await trio.sleep(6)  # idle expiry + margins, nobody resumed
    late = await client(nursery, b)
    await late.fail("room/join", {"room_id": room["room_id"], "name": "X"}, "room_not_found")
    b.process.terminate()
