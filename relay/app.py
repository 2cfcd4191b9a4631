"""Composition: one relay node as ``observer-relay serve`` runs it.

The one place that knows every part: it builds the node (``relay.server``), its backplane
(this process for ``memory://``, the cluster for ``redis://``) and the web port
(``stats_web``), wires them through their ports, and runs them in one nursery.
"""

from __future__ import annotations

from typing import Any

import trio

from relay.config import Config
from relay.server import RelayServer
from stats_web.server import serve_web


def build(config: Config) -> RelayServer:
    """The node for ``config``, with the backplane its URL asks for."""
    if config.backplane_url.startswith("redis://"):
        from relay.cluster import Cluster

        def cluster(node: RelayServer) -> Cluster:
            return Cluster(node, config.backplane_url, handoff=config.cluster_handoff,
                           idle_expiry=config.room_idle_expiry)

        return RelayServer(config, backplane=cluster)
    return RelayServer(config)


async def run_node(config: Config, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Run a node and its web port until the node shuts down; reports the node once both
    ports listen (its ``relay_port`` and ``web_port`` are set)."""
    node = build(config)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.serve)
        node.web_port = await nursery.start(serve_web, node, config.host, config.http_port)
        task_status.started(node)
