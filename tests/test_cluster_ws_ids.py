"""``/ws`` room ids across nodes (§7, §1.3): four characters, unique in the whole cluster.

Each node draws its rooms' ids from a few ids it reserved in Redis ahead of need, so two
nodes never hand out the same id, and a room's id names its node for forwarded joins.
"""

from __future__ import annotations

import json

import coredis
import pytest
import trio
from trio_websocket import connect_websocket_url

from tests.cluster_support import start_node
from tests.redis_server import redis_server, redis_url  # noqa: F401  (fixtures)

pytestmark = pytest.mark.timeout(120)


async def test_ws_room_ids_are_reserved_cluster_wide(nursery: trio.Nursery,
                                                     redis_url: str) -> None:  # noqa: F811
    nodes = [await start_node(nursery, redis_url), await start_node(nursery, redis_url)]
    created: dict[int, list[str]] = {0: [], 1: []}
    hosts = []
    for i in range(40):  # more rooms than a node keeps reserved: the pool refills
        which = i % 2
        ws = await connect_websocket_url(nursery, nodes[which].url + "/ws")
        hosts.append(ws)
        await ws.send_message(json.dumps({"type": "CREATE_ROOM", "username": f"h{i}"}))
        with trio.fail_after(10):
            answer = json.loads(await ws.get_message())
        assert answer["type"] == "ROOM_CREATED", answer
        created[which].append(answer["roomid"])
    everything = created[0] + created[1]
    assert len(set(everything)) == len(everything)
    redis = coredis.Redis.from_url(redis_url)
    async with redis:
        owners = [{(await redis.get(f"or:kv:ws:{room}")) for room in created[which]}
                  for which in (0, 1)]
    # Every room's key names the node that created it (one node id per node).
    assert len(owners[0]) == len(owners[1]) == 1 and owners[0] != owners[1]
    assert None not in owners[0] | owners[1]
    # A student on the other node joins through the key.
    student = await connect_websocket_url(nursery, nodes[1].url + "/ws")
    await student.send_message(json.dumps({"type": "JOIN_ROOM", "roomid": created[0][0],
                                           "username": "ann"}))
    with trio.fail_after(10):
        assert json.loads(await student.get_message()) == {"type": "ROOM_JOINED",
                                                           "roomid": created[0][0]}
    for node in nodes:
        node.process.terminate()
