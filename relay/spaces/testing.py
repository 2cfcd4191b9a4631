"""A deterministic driver for a :class:`Space`, for tests (here and in the shell's).

It plays the shell's part without I/O: keeps the time, a seeded entropy source, renders
every delivered frame in its recipient's shape and keeps what each client received, decoded
with the standard library's ``json`` (what a real client would parse).
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from .actions import Action, Counted, Deliver
from .entropy import SeededEntropy
from .frames import Shape
from .settings import SpaceSettings
from .space import Space

Received = dict[int, list[dict[str, Any]]]


class Harness:
    """Drives one space; ``inbox[client_id]`` holds every frame that client received."""

    def __init__(self, name: str = "demo", settings: SpaceSettings | None = None,
                 seed: int | str = 0, now: float = 1_700_000_000.0) -> None:
        self.space = Space(name, settings)
        self.entropy = SeededEntropy(seed)
        self.now = now
        self.inbox: Received = {}
        self.raw: dict[int, list[bytes]] = {}
        self.counts: Counter[tuple[str, str]] = Counter()
        self.log: list[tuple[int, bytes]] = []
        """Every delivery in order: (client id, rendered bytes)."""

    def connect(self, shape: Shape = "seed") -> int:
        cid, actions = self.space.connect(shape, now=self.now, entropy=self.entropy)
        self.inbox.setdefault(cid, [])
        self.raw.setdefault(cid, [])
        self.run(actions)
        return cid

    def send_text(self, client_id: int, text: str | bytes) -> Received:
        return self.run(self.space.receive(client_id, text, now=self.now, entropy=self.entropy))

    def send(self, client_id: int, type: str, body: Any = None, *,
             envelope: str = "args") -> Received:
        """Send ``{"type": type, envelope: body}`` (no body key when ``body`` is ``None``)."""
        frame: dict[str, Any] = {"type": type}
        if body is not None:
            frame[envelope] = body
        return self.send_text(client_id, json.dumps(frame))

    def disconnect(self, client_id: int) -> Received:
        return self.run(self.space.disconnect(client_id, now=self.now, entropy=self.entropy))

    def advance(self, seconds: float) -> Received:
        """Let time pass and tick, as the shell does at ``next_deadline()``."""
        self.now += seconds
        return self.run(self.space.tick(self.now, self.entropy))

    def run(self, actions: list[Action]) -> Received:
        """Carry out ``actions``; return the decoded frames per recipient."""
        got: Received = {}
        for action in actions:
            if isinstance(action, Counted):
                self.counts[(action.metric, action.label)] += 1
                continue
            assert isinstance(action, Deliver)
            for cid in action.client_ids:
                shape = self.space.shape_of(cid)
                assert shape is not None, f"delivery to disconnected client {cid}"
                data = action.frame.render(shape)
                self.raw[cid].append(data)
                self.log.append((cid, data))
                decoded = json.loads(data)
                self.inbox[cid].append(decoded)
                got.setdefault(cid, []).append(decoded)
        return got

    def last(self, client_id: int) -> dict[str, Any]:
        return self.inbox[client_id][-1]

    def clear(self) -> None:
        for frames in self.inbox.values():
            frames.clear()
