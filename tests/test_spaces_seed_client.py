"""A client written the way the seed's ``chatroom`` client (9512c29) behaves, driving the core.

Its receive loop reads ``message["args"]`` (a ``content`` envelope raises ``KeyError``) and
calls ``handler(**args)`` with handlers of fixed parameters, so one extra key raises
``TypeError``; set changes are rebuilt as ``ChangeSet(**change_without_type)``. In the seed
any of these exceptions ends the receive thread; here they fail the test.
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Callable
from typing import Any

from relay.spaces.testing import Harness


class ChangeSet:
    """The seed's ``ChangeSet``: exactly ``value``, ``old_value`` and ``id``."""

    def __init__(self, value: Any, old_value: Any, id: str) -> None:
        self.value = value
        self.old_value = old_value
        self.id = id

    def serialize(self) -> dict[str, Any]:
        return {"type": "set", "value": self.value, "old_value": self.old_value, "id": self.id}


class SeedTopic:
    """``topic.Set(v)`` applies locally at once; the server's echo (same id) confirms it,
    any other update first reverts the pending local changes."""

    def __init__(self, client: SeedClient, name: str) -> None:
        self.client = client
        self.name = name
        self.value: Any = None
        self.pending: list[ChangeSet] = []
        self.rejected: list[str] = []

    def set(self, value: Any) -> None:
        change = ChangeSet(value, self.value, str(uuid.uuid4()))
        self.value = value
        self.pending.append(change)
        self.client.send("update", topic_name=self.name, change=change.serialize())

    def on_update(self, change: ChangeSet) -> None:
        if self.pending and self.pending[0].id == change.id:
            self.pending.pop(0)
            return
        if self.pending:
            self.value = self.pending[0].old_value
            self.pending.clear()
        self.value = change.value

    def on_reject(self, change: dict[str, Any], reason: str) -> None:
        ids = [c.id for c in self.pending]
        if change["id"] not in ids:  # the seed's thread dies here
            raise AssertionError("reject_update without a pending change")
        self.value = self.pending[ids.index(change["id"])].old_value
        self.pending.clear()
        self.rejected.append(reason)


class SeedClient:
    def __init__(self, harness: Harness) -> None:
        self.h = harness
        self.cid = harness.connect("seed")
        self.read = 0
        self.id: int | None = None
        self.topics: dict[str, SeedTopic] = {}
        self.services: dict[str, Callable[..., Any]] = {}
        self.callbacks: dict[str, Callable[[Any], None]] = {}
        self.warnings: list[str] = []
        self.pump()

    # -- sending, as the seed does: json.dumps({"type": T, "args": {...}}) -------------------

    def send(self, frame_type: str, /, **args: Any) -> None:
        self.h.send_text(self.cid, json.dumps({"type": frame_type, "args": args}))

    def subscribe(self, name: str, type: str = "string") -> SeedTopic:
        topic = self.topics[name] = SeedTopic(self, name)
        self.send("subscribe", topic_name=name, type=type)
        return topic

    def unsubscribe(self, name: str) -> None:
        del self.topics[name]
        self.send("unsubscribe", topic_name=name)

    def register_service(self, name: str, fn: Callable[..., Any]) -> None:
        self.services[name] = fn
        self.send("register_service", service_name=name)

    def request(self, service: str, callback: Callable[[Any], None], **args: Any) -> None:
        request_id = str(uuid.uuid4())
        self.callbacks[request_id] = callback
        self.send("request", service_name=service, args=args, request_id=request_id)

    # -- the receive loop -----------------------------------------------------------------

    def pump(self) -> None:
        """Handle every frame received since the last pump, as the seed's thread does."""
        frames = self.h.raw[self.cid]
        while self.read < len(frames):
            message = json.loads(frames[self.read])
            self.read += 1
            handler = getattr(self, "on_" + message["type"], None)
            if handler is None:
                self.warnings.append(message["type"])  # the seed logs and carries on
                continue
            handler(**message["args"])

    def on_hello(self, id: int) -> None:
        self.id = id

    def on_update(self, topic_name: str, change: dict[str, Any]) -> None:
        topic = self.topics[topic_name]  # an update for an unknown topic kills the thread
        assert change["type"] == "set", change
        topic.on_update(ChangeSet(**{k: v for k, v in change.items() if k != "type"}))

    def on_reject_update(self, topic_name: str, change: dict[str, Any], reason: str) -> None:
        self.topics[topic_name].on_reject(change, reason)

    def on_request(self, service_name: str, args: dict[str, Any], request_id: str) -> None:
        result = self.services[service_name](**args)
        self.send("response", response=result, request_id=request_id)

    def on_response(self, request_id: str, response: Any) -> None:
        self.callbacks.pop(request_id)(response)


def pump(*clients: SeedClient) -> None:
    for _ in range(3):  # answers can trigger further frames
        for c in clients:
            c.pump()


def test_seed_client_session() -> None:
    h = Harness()
    alice, bob = SeedClient(h), SeedClient(h)
    assert (alice.id, bob.id) == (1, 2)

    # a string topic set and echoed; the other subscriber follows
    a_doc = alice.subscribe("doc")
    b_doc = bob.subscribe("doc")
    a_doc.set("hello")
    pump(alice, bob)
    assert a_doc.value == b_doc.value == "hello" and a_doc.pending == []

    # a service call
    bob.register_service("add", lambda a, b: a + b)
    results: list[Any] = []
    alice.request("add", results.append, a=2, b=3)
    pump(alice, bob)
    assert results == [5]

    # a validator that rejects, then accepts
    verdicts = itertools.chain([{"valid": False, "reason": "too short"}],
                               itertools.repeat({"valid": True}))
    seen: list[dict[str, Any]] = []

    def validator(change: dict[str, Any]) -> dict[str, Any]:
        seen.append(change)
        return next(verdicts)

    bob.register_service("_chatroom/validate_change/doc", validator)
    pump(alice, bob)
    a_doc.set("hi")
    pump(alice, bob)
    assert a_doc.rejected == ["too short"] and a_doc.value == "hello" == b_doc.value
    a_doc.set("hello world")
    pump(alice, bob)
    assert a_doc.value == b_doc.value == "hello world"
    assert set(seen[0]) == {"type", "value", "old_value", "id"}

    # unsubscribe: no more updates for that topic (the seed would die on one)
    bob.unsubscribe("doc")
    a_doc.set("again")
    pump(alice, bob)
    assert a_doc.value == "again" and b_doc.value == "hello world"

    # the provider disconnects while a request is pending: the callback still runs
    carol = SeedClient(h)
    carol.register_service("slow", lambda: None)
    alice.request("slow", results.append)
    h.disconnect(carol.cid)  # before carol answers
    pump(alice, bob)
    assert results == [5, None]
    assert "error" in alice.warnings  # the failure's error frame, logged and skipped

    # every failure to the seed client is an error (logged) plus response null
    alice.request("missing", results.append)
    pump(alice)
    assert results == [5, None, None]


def test_seed_client_survives_the_server_status_and_its_client_messages() -> None:
    h = Harness()
    watcher = SeedClient(h)
    watcher.subscribe("_chatroom/server_status")
    watcher.subscribe(f"_chatroom/client_message/{watcher.id}")
    provider = SeedClient(h)
    provider.subscribe(f"_chatroom/client_message/{provider.id}")
    provider.register_service("never", lambda: None)
    watcher.request("never", lambda r: None)
    h.advance(20)  # timed out: noted in the provider's client_message topic
    h.disconnect(provider.cid)
    pump(watcher, provider)
    assert watcher.topics["_chatroom/server_status"].value == "client 2 disconnected"
    assert provider.topics["_chatroom/client_message/2"].value.endswith("timed out")


def test_extra_keys_would_kill_the_seed_client() -> None:
    """The harness above really is strict: a full-shape frame breaks it."""
    h = Harness()
    client = SeedClient(h)
    h.raw[client.cid].append(b'{"type":"hello","args":{"id":1,"space":"demo"}}')
    try:
        client.pump()
    except TypeError:
        pass
    else:
        raise AssertionError("an extra key must raise TypeError")
    h.raw[client.cid].append(b'{"type":"hello","content":{"id":1}}')
    try:
        client.pump()
    except KeyError:
        pass
    else:
        raise AssertionError("a content envelope must raise KeyError")
