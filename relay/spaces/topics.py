"""Topics: typed values with versions and subscribers (§9.3).

``changes.prepare`` checks one change against a topic without touching it and returns a
:class:`Prepared` (the broadcast change, the new value and its size); :meth:`Topic.commit`
applies it. The split lets a change wait for its validator (§9.4) with everything already
computed: nothing else can change the topic meanwhile, because its changes queue behind.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Final

from .entropy import Entropy, uuid4
from .strings import SET, Edit
from .values import Hashable, encode

TOPIC_TYPES: Final = ("generic", "string", "int", "float", "set", "list", "dict", "event")
DEFAULTS: Final[dict[str, Any]] = {
    "generic": None, "string": "", "int": 0, "float": 0.0, "set": [], "list": [], "dict": {},
    "event": None,
}


class Refused(Exception):
    """A change or request refused with a protocol code (``reject_update`` / failure)."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


@dataclass(slots=True)
class Prepared:
    """A checked change, ready to apply: its broadcast fields and the value it leads to."""

    type: str
    id: str
    fields: dict[str, Any]
    """The row's fields, normalized, in broadcast order (``type`` and ``id`` apart)."""
    value: Any
    size: int
    edit: Edit | None = None
    keys: list[Hashable] | None = None
    """Set topics, ``set``: canonical keys of the new value's items."""
    key_added: tuple[Hashable] | None = None
    """Set topics, ``append``: the new item's key."""
    key_removed: int | None = None
    """Set topics, ``remove``: the index of the removed item."""
    _dicts: tuple[dict[str, Any], dict[str, Any]] | None = None

    def change_dicts(self, topic: Topic) -> tuple[dict[str, Any], dict[str, Any]]:
        """The broadcast change in the seed and the full shape (built once)."""
        if self._dicts is None:
            seed = {"type": self.type, **self.fields, "id": self.id}
            full = {**seed, "topic_name": topic.name, "topic_type": topic.type}
            self._dicts = (seed, full)
        return self._dicts


@dataclass(slots=True)
class Waiting:
    """A change queued behind one that waits for the topic's validator."""

    client_id: int
    change: dict[str, Any]
    size: int = 0
    """Compact JSON size while queued (the space bounds the bytes its queues hold)."""


class Topic:
    """One topic's state. Values are never mutated in place (see ``values``)."""

    __slots__ = ("_preview", "_targets", "history", "in_flight", "keys", "keyset", "name", "queue",
                 "size", "special", "subscribers", "type", "value", "version")

    def __init__(self, name: str, type: str, *, special: bool = False) -> None:
        self.name = name
        self.type = type
        self.special = special
        self.value: Any = DEFAULTS[type]
        self.size = len(encode(self.value))
        self.version = 0
        self.subscribers: dict[int, None] = {}
        self._targets: tuple[int, ...] | None = ()
        self.history: deque[Edit] = deque()
        """String topics: the last applied changes, oldest first (bounded by the space)."""
        self.keys: list[Hashable] = []
        self.keyset: set[Hashable] = set()
        self.queue: deque[Waiting] = deque()
        self._preview: tuple[int, str] | None = None
        self.in_flight: str | None = None
        """The request id of the validation this topic's changes wait for."""

    @property
    def targets(self) -> tuple[int, ...]:
        """Subscriber ids in subscription order, cached between subscription changes."""
        t = self._targets
        if t is None:
            t = self._targets = tuple(self.subscribers)
        return t

    def subscribe(self, client_id: int) -> bool:
        """Add a subscriber; whether it is new."""
        if client_id in self.subscribers:
            return False
        self.subscribers[client_id] = None
        self._targets = None
        return True

    def unsubscribe(self, client_id: int) -> bool:
        """Drop a subscriber; whether it was one."""
        if client_id not in self.subscribers:
            return False
        del self.subscribers[client_id]
        self._targets = None
        return True

    def preview(self, chars: int) -> str:
        """The first ``chars`` characters of the value's compact JSON (inspector, §9.8);
        cached per version, since the inspector asks every second and values are large."""
        cached = self._preview
        if cached is None or cached[0] != self.version:
            cached = self._preview = (self.version, encode(self.value).decode()[:chars])
        return cached[1]

    def commit(self, p: Prepared) -> Edit | None:
        """Apply a prepared change: value, size and version together.

        For a string topic, returns the edit for the history, which the space keeps (it
        bounds all histories together).
        """
        self.value = p.value
        self.size = p.size
        self.version += 1
        if self.type == "string":
            e = p.edit
            if e is None or e.kind == SET:
                return Edit(self.version, SET)
            return Edit(self.version, e.kind, e.position, e.length, e.text)
        if p.keys is not None:
            self.keys = p.keys
            self.keyset = set(p.keys)
        elif p.key_added is not None:
            # keys/keyset are private to the topic (never in a frame): edited in place,
            # so an append to a large set costs no rehash of every item
            self.keys.append(p.key_added[0])
            self.keyset.add(p.key_added[0])
        elif p.key_removed is not None:
            self.keyset.discard(self.keys.pop(p.key_removed))
        return None

    def server_set(self, text: str, entropy: Entropy) -> Prepared:
        """A server-made ``set`` of a special (string) topic, to be applied by the space."""
        return Prepared("set", uuid4(entropy), {"value": text, "old_value": self.value}, text,
                        len(encode(text)))

    def snapshot_change(self, entropy: Entropy) -> tuple[dict[str, Any], dict[str, Any]]:
        """The ``set`` of the current value that answers a ``subscribe`` (§9.3)."""
        seed = {"type": "set", "value": self.value, "old_value": None, "id": uuid4(entropy)}
        return seed, {**seed, "topic_name": self.name, "topic_type": self.type}
