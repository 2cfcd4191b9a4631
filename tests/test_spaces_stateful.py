"""A stateful hypothesis test of a whole space with several clients.

Clients connect, subscribe, update, register, request, respond, send garbage and
disconnect while time passes. After every step: nothing raised out of the core; every
update's version follows the previous one each subscriber saw, and one version is one
change for everybody; sizes and subscriptions are consistent; the inspector's version moved
whenever its document did. At the end every request has had exactly one response (or its
requester left), and replaying the recorded calls with the same entropy seed rebuilds the
same frames, byte for byte, and the same state.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from relay.spaces import Deliver, SeededEntropy, Space, SpaceSettings
from relay.spaces.values import encode

TOPICS = ["a", "b", "s", "_chatroom/server_status"]
SERVICES = ["f", "g", "_chatroom/validate_change/a", "_chatroom/validate_change/s"]
TYPES = [None, "int", "string", "list", "dict", "set", "generic", "float", "event"]
SETTINGS = SpaceSettings(max_waiting_changes=3, string_history=4, max_pending_requests=3)

values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-5, 5),
                                st.floats(-3, 3), st.text(max_size=3)),
                      lambda inner: st.lists(inner, max_size=2) | st.dictionaries(
                          st.text(max_size=1), inner, max_size=2), max_leaves=4)
changes = st.fixed_dictionaries(
    {"type": st.sampled_from(["set", "add", "insert", "delete", "append", "remove", "pop",
                              "change_value", "emit"])},
    optional={"value": values, "item": values, "key": st.text(max_size=1),
              "position": st.integers(-3, 4), "topic_version": st.integers(-1, 8),
              "insertion": st.text(max_size=2), "deletion": st.text(max_size=2),
              "id": st.sampled_from(["x", "y", "z"]), "args": values})
garbage = st.one_of(st.text(max_size=20), st.sampled_from([
    "{}", "[]", '{"type":"action","args":{}}', '{"type":"subscribe","args":7}',
    '{"type":"response","args":{"request_id":"nope"}}', '{"type":"request","args":{}}',
    '{"type":"update","args":{"topic_name":"a"}}', "1e400", "[" * 300 + "]" * 300]))


def fitting(ttype: str, value: Any, version: int) -> st.SearchStrategy[dict[str, Any]]:
    """Changes that mostly suit a topic of ``ttype`` holding ``value``."""
    n = len(value) if isinstance(value, str | list | dict) else 0
    pos = st.integers(-n - 1, n)
    keys = st.sampled_from(["k", "l", "m"])
    rows: dict[str, st.SearchStrategy[dict[str, Any]]] = {
        "int": st.fixed_dictionaries({"type": st.sampled_from(["add", "set"]),
                                      "value": st.integers(-9, 9)}),
        "float": st.fixed_dictionaries({"type": st.sampled_from(["add", "set"]),
                                        "value": st.floats(-9, 9) | st.integers(-9, 9)}),
        "generic": st.fixed_dictionaries({"type": st.just("set"), "value": values}),
        "event": st.fixed_dictionaries({"type": st.just("emit")}, optional={"args": values}),
        "string": st.fixed_dictionaries({
            "type": st.sampled_from(["insert", "delete", "insert", "set"]),
            "topic_version": st.integers(max(0, version - 5), version),
            "position": st.integers(0, n),
            "insertion": st.text("xy", max_size=2), "value": st.text("ab", max_size=4),
            "deletion": st.just(value[:2] if isinstance(value, str) else "")}),
        "list": st.fixed_dictionaries({"type": st.sampled_from(["insert", "pop", "set"]),
                                       "item": values, "position": pos,
                                       "value": st.lists(values, max_size=3)}),
        "dict": st.fixed_dictionaries({
            "type": st.sampled_from(["add", "pop", "change_value", "set"]), "key": keys,
            "value": values}),
        "set": st.fixed_dictionaries({"type": st.sampled_from(["append", "remove", "set"]),
                                      "item": st.integers(0, 3),
                                      "value": st.just([1, 2])}),
    }
    return rows[ttype]


def run_calls(calls: list[tuple[Any, ...]], seed: int) -> tuple[Space, list[tuple[int, bytes]]]:
    """Replay recorded calls on a fresh space; every delivery rendered in both shapes."""
    space = Space("replay", SETTINGS)
    entropy = SeededEntropy(seed)
    out: list[tuple[int, bytes]] = []
    for call in calls:
        kind, now = call[0], call[-1]
        if kind == "connect":
            _, actions = space.connect(call[1], now=now, entropy=entropy)
        elif kind == "receive":
            actions = space.receive(call[1], call[2], now=now, entropy=entropy)
        elif kind == "disconnect":
            actions = space.disconnect(call[1], now=now, entropy=entropy)
        else:
            actions = space.tick(now, entropy)
        for action in actions:
            if isinstance(action, Deliver):
                for cid in action.client_ids:
                    out.append((cid, action.frame.render("seed") + action.frame.render("full")))
    return space, out


class SpaceMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.seed = 7
        self.space = Space("replay", SETTINGS)
        self.entropy = SeededEntropy(self.seed)
        self.now = 1_000.0
        self.calls: list[tuple[Any, ...]] = []
        self.delivered: list[tuple[int, bytes]] = []
        self.clients: list[int] = []
        self.forwarded: dict[int, list[str]] = {}
        """Request ids each client was asked to answer (as provider or validator)."""
        self.outstanding: dict[tuple[int, Any], int] = {}
        self.seen_version: dict[tuple[int, str], int] = {}
        self.version_change: dict[tuple[str, int], str] = {}
        self.last_doc: dict[str, Any] | None = None
        self.last_version = -1
        self.next_rid = 0
        self.applied = 0

    # -- plumbing ---------------------------------------------------------------------------

    def handle(self, actions: list[Any]) -> None:
        for action in actions:
            if not isinstance(action, Deliver):
                continue
            frame = action.frame
            for cid in action.client_ids:
                assert cid in self.space.clients, "delivery to a departed client"
                self.delivered.append((cid, frame.render("seed") + frame.render("full")))
                self.observe(cid, frame.type, frame.full)

    def observe(self, cid: int, ftype: str, content: dict[str, Any]) -> None:
        if ftype == "update":
            key = (cid, content["topic_name"])
            version = content["version"]
            if content["change"]["type"] == "set" and content["change"]["old_value"] is None \
                    and key not in self.seen_version:
                pass  # first frame of a subscription: any version
            elif key in self.seen_version:
                assert version == self.seen_version[key] + 1, \
                    (key, self.seen_version[key], version)
            self.seen_version[key] = version
            change = content["change"]
            vkey = (content["topic_name"], version)
            if change["type"] == "set" and change["old_value"] is None:
                return  # possibly a subscription snapshot, which has its own fresh id
            self.applied += 1
            assert self.version_change.setdefault(vkey, change["id"]) == change["id"]
        elif ftype == "request":
            self.forwarded.setdefault(cid, []).append(content["request_id"])
        elif ftype == "response":
            key = (cid, content["request_id"])
            assert self.outstanding.get(key, 0) == 1, ("unexpected response", key)
            del self.outstanding[key]

    def call(self, kind: str, *args: Any) -> list[Any]:
        self.calls.append((kind, *args, self.now))
        if kind == "connect":
            cid, actions = self.space.connect(args[0], now=self.now, entropy=self.entropy)
            self.clients.append(cid)
        elif kind == "receive":
            actions = self.space.receive(args[0], args[1], now=self.now, entropy=self.entropy)
        elif kind == "disconnect":
            actions = self.space.disconnect(args[0], now=self.now, entropy=self.entropy)
        else:
            actions = self.space.tick(self.now, self.entropy)
        self.handle(actions)
        return actions

    def send(self, cid: int, type: str, body: dict[str, Any]) -> None:
        self.call("receive", cid, json.dumps({"type": type, "args": body}))

    def pick(self, i: int) -> int:
        return self.clients[i % len(self.clients)]

    # -- rules ------------------------------------------------------------------------------

    @rule(shape=st.sampled_from(["seed", "full"]))
    def connect(self, shape: str) -> None:
        if len(self.clients) < 5:
            self.call("connect", shape)

    @precondition(lambda self: self.clients)
    @rule(i=st.integers(0, 9))
    def disconnect(self, i: int) -> None:
        cid = self.pick(i)
        self.clients.remove(cid)
        for key in [k for k in self.outstanding if k[0] == cid]:
            del self.outstanding[key]
        for key in [k for k in self.seen_version if k[0] == cid]:
            del self.seen_version[key]
        self.call("disconnect", cid)

    @precondition(lambda self: self.clients)
    @rule(i=st.integers(0, 9), topic=st.sampled_from(TOPICS), type=st.sampled_from(TYPES))
    def subscribe(self, i: int, topic: str, type: str | None) -> None:
        cid = self.pick(i)
        self.seen_version.pop((cid, topic), None)
        self.send(cid, "subscribe", {"topic_name": topic, "type": type})

    @precondition(lambda self: self.clients)
    @rule(i=st.integers(0, 9), topic=st.sampled_from(TOPICS))
    def unsubscribe(self, i: int, topic: str) -> None:
        cid = self.pick(i)
        self.seen_version.pop((cid, topic), None)
        self.send(cid, "unsubscribe", {"topic_name": topic})

    @precondition(lambda self: self.clients)
    @rule(i=st.integers(0, 9), topic=st.sampled_from(TOPICS), data=st.data())
    def update(self, i: int, topic: str, data: st.DataObject) -> None:
        cid = self.pick(i)
        pairs = [(c, t) for c in self.clients for t in self.space.clients[c].subscriptions
                 if not t.startswith("_chatroom/client_message/")]
        if pairs and data.draw(st.integers(0, 4)):
            cid, topic = data.draw(st.sampled_from(pairs))
        elif topic not in self.space.clients[cid].subscriptions and data.draw(st.booleans()):
            self.seen_version.pop((cid, topic), None)
            known = topic in self.space.topics
            self.send(cid, "subscribe", {"topic_name": topic, "type": None if known else
                                         data.draw(st.sampled_from(TYPES[1:]))})
        existing = self.space.topics.get(topic)
        if existing is not None and data.draw(st.integers(0, 4)):
            change = data.draw(fitting(existing.type, existing.value, existing.version))
        else:
            change = data.draw(changes)
        self.send(cid, "update", {"topic_name": topic, "change": change})

    # updates are the point: give them more weight than the other rules
    @precondition(lambda self: self.clients)
    @rule(i=st.integers(0, 9), topic=st.sampled_from(TOPICS), data=st.data())
    def update_more(self, i: int, topic: str, data: st.DataObject) -> None:
        self.update(i, topic, data)

    @precondition(lambda self: self.clients)
    @rule(i=st.integers(0, 9), topic=st.sampled_from(TOPICS), data=st.data())
    def update_again(self, i: int, topic: str, data: st.DataObject) -> None:
        self.update(i, topic, data)

    @precondition(lambda self: self.clients)
    @rule(i=st.integers(0, 9), service=st.sampled_from(SERVICES), register=st.booleans())
    def service(self, i: int, service: str, register: bool) -> None:
        kind = "register_service" if register else "unregister_service"
        self.send(self.pick(i), kind, {"service_name": service})

    @precondition(lambda self: self.clients)
    @rule(i=st.integers(0, 9), service=st.sampled_from([*SERVICES, "none"]),
          timeout=st.sampled_from([None, 1, 2.5, 60]), use_int=st.booleans(), data=st.data())
    def request(self, i: int, service: str, timeout: float | None, use_int: bool,
                data: st.DataObject) -> None:
        cid = self.pick(i)
        offered = sorted(n for n in self.space.services if not n.startswith("_chatroom/"))
        if offered and data.draw(st.integers(0, 3)):
            service = data.draw(st.sampled_from(offered))
        self.next_rid += 1
        rid: Any = self.next_rid if use_int else f"r{self.next_rid}"
        self.outstanding[(cid, rid)] = 1
        body = {"service_name": service, "request_id": rid, "args": {"n": 1}}
        if timeout is not None:
            body["timeout"] = timeout
        self.send(cid, "request", body)

    @precondition(lambda self: self.clients)
    @rule(i=st.integers(0, 9), service=st.sampled_from(SERVICES[:2]), data=st.data())
    def provide_and_call(self, i: int, service: str, data: st.DataObject) -> None:
        """Register a service (if free) and call it from another client."""
        self.service(i, service, True)
        self.request(i + 1, service, None, False, data)

    @precondition(lambda self: self.clients)
    @rule(i=st.integers(0, 9), which=st.integers(0, 5), answer=st.sampled_from([
        {"response": 1}, {"error": "no"}, {"response": {"valid": True}},
        {"response": {"valid": False, "reason": "r"}}, {"response": {"valid": "?"}}, {},
        {"error": 3}]))
    def respond(self, i: int, which: int, answer: dict[str, Any]) -> None:
        cid = self.pick(i)
        asked = self.forwarded.get(cid) or ["unknown"]
        rid = asked[which % len(asked)]
        self.send(cid, "response", {"request_id": rid, **answer})

    @precondition(lambda self: self.clients)
    @rule(i=st.integers(0, 9), text=garbage)
    def junk(self, i: int, text: str) -> None:
        self.call("receive", self.pick(i), text)

    @rule(seconds=st.sampled_from([0.5, 2.0, 16.0]))
    def wait(self, seconds: float) -> None:
        """Time passes and the shell has not ticked yet: the next call expires what is due."""
        self.now += seconds

    @rule(seconds=st.sampled_from([0.5, 1.0, 3.0, 16.0]))
    def tick(self, seconds: float) -> None:
        self.now += seconds
        self.call("tick")
        deadline = self.space.next_deadline()
        assert deadline is None or deadline > self.now

    # -- invariants -------------------------------------------------------------------------

    @invariant()
    def state_is_consistent(self) -> None:
        space = self.space
        total = 0
        for name, topic in space.topics.items():
            assert topic.size == len(encode(topic.value)), name
            if not topic.special:
                total += topic.size
            for cid in topic.subscribers:
                assert name in space.clients[cid].subscriptions
            assert topic.in_flight is None or topic.in_flight in space.pending
        assert total == space.space_bytes
        assert space.waiting_bytes == sum(w.size for t in space.topics.values() for w in t.queue)
        assert space.history_chars == sum(
            e.length for t in space.topics.values() for e in t.history if e.kind == "insert")
        for cid, client in space.clients.items():
            for name in client.subscriptions:
                assert cid in space.topics[name].subscribers
            for rid in client.provided:
                assert space.pending[rid].provider == cid
        for provider in space.services.values():
            assert provider in space.clients
        doc = space.inspect(0)
        if doc != self.last_doc:
            assert space.version != self.last_version, "inspector document moved silently"
        self.last_doc, self.last_version = doc, space.version

    def teardown(self) -> None:
        event(f"changes applied: {min(self.applied, 20) // 4 * 4}+")
        # every request has its one response once all timeouts have passed (a validation
        # that times out lets the next queued change start its own)
        while (deadline := self.space.next_deadline()) is not None:
            self.now = max(self.now, deadline)
            self.call("tick")
        assert self.outstanding == {}, self.outstanding
        assert self.space.pending == {}
        replayed, frames = run_calls(self.calls, self.seed)
        assert frames == self.delivered
        assert replayed.inspect(0) == self.space.inspect(0)
        assert {n: encode(t.value) for n, t in replayed.topics.items()} == {
            n: encode(t.value) for n, t in self.space.topics.items()}


SpaceMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=60, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
test_space_machine = SpaceMachine.TestCase
