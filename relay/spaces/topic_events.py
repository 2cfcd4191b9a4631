"""``subscribe``, ``unsubscribe``, ``update`` and the validation hook (§9.3, §9.4, §9.6).

Changes to one topic are handled one at a time: while one waits for the topic's validator
(``topic.in_flight``), later ones queue behind it and are checked at their turn, against the
value as it is then. Other topics are not held up.
"""

from __future__ import annotations

from typing import Any

from . import frames
from .actions import ERRORS_TOTAL
from .changes import prepare
from .entropy import uuid4
from .names import SERVER_STATUS, client_message_topic, is_special, name_problem, validator_service
from .state import Client, Pending, Turn
from .surface import SpaceSurface
from .topics import TOPIC_TYPES, Refused, Topic, Waiting
from .values import json_size


def subscribe(space: SpaceSurface, turn: Turn, client: Client, body: dict[str, Any]) -> None:
    name = body.get("topic_name")
    problem = name_problem(name, space.settings.max_name_chars)
    if problem is not None:
        space.fail(turn, client, problem, "topic_name must be 1-256 printable characters",
                   "subscribe", body)
        return
    assert isinstance(name, str)
    ttype = body.get("type")
    if ttype is not None and ttype not in TOPIC_TYPES:
        space.fail(turn, client, "invalid_payload", "unknown topic type", "subscribe", body)
        return
    topic = space.topics.get(name)
    if is_special(name):
        if name != SERVER_STATUS and name != client_message_topic(client.id):
            space.fail(turn, client, "forbidden", "reserved topic", "subscribe", body)
            return
        assert topic is not None
    if topic is not None and ttype is not None and ttype != topic.type:
        space.fail(turn, client, "type_mismatch", f"the topic's type is {topic.type}",
                   "subscribe", body)
        return
    if topic is None and ttype is None:
        space.fail(turn, client, "topic_not_found", "a new topic needs a type", "subscribe",
                   body)
        return
    settings = space.settings
    counts = not is_special(name) and name not in client.subscriptions
    if counts and client.regular_subscriptions >= settings.max_subscriptions:
        space.fail(turn, client, "too_large", "too many subscriptions", "subscribe", body)
        return
    created = topic is None
    if topic is None:
        if space.regular_topics >= settings.max_topics:
            space.fail(turn, client, "too_large", "too many topics in the space", "subscribe",
                       body)
            return
        assert isinstance(ttype, str)
        topic = space.new_topic(name, ttype)
    topic.subscribe(client.id)
    if name not in client.subscriptions:
        client.subscriptions[name] = None
        if counts:
            client.regular_subscriptions += 1
    space.version += 1
    seed, full = topic.snapshot_change(turn.rng())
    turn.send((client.id,), frames.update(name, seed, full, topic.version))
    if created:
        space.status(turn, f"topic {name} created by client {client.id}")


def unsubscribe(space: SpaceSurface, turn: Turn, client: Client, body: dict[str, Any]) -> None:
    name = body.get("topic_name")
    problem = name_problem(name, space.settings.max_name_chars)
    if problem is not None:
        space.fail(turn, client, problem, "topic_name must be 1-256 printable characters",
                   "unsubscribe", body)
        return
    assert isinstance(name, str)
    if name not in client.subscriptions:
        space.fail(turn, client, "not_subscribed", "not a subscriber of this topic",
                   "unsubscribe", body)
        return
    del client.subscriptions[name]
    if not is_special(name):
        client.regular_subscriptions -= 1
    space.topics[name].unsubscribe(client.id)
    space.version += 1


def update(space: SpaceSurface, turn: Turn, client: Client, body: dict[str, Any]) -> None:
    name = body.get("topic_name")
    change = body.get("change")
    if not isinstance(name, str) or type(change) is not dict:
        space.fail(turn, client, "invalid_payload", "update needs topic_name and a change object",
                   "update", body)
        return
    if name not in client.subscriptions:
        space.fail(turn, client, "not_subscribed", "only subscribers may update a topic",
                   "update", body)
        return
    topic = space.topics[name]
    waiting = Waiting(client.id, change)
    if topic.in_flight is not None:
        settings = space.settings
        if 1 + len(topic.queue) >= settings.max_waiting_changes:
            reject(space, turn, topic, waiting, "rate_limited",
                   "too many changes are waiting for this topic's validator")
            return
        waiting.size = json_size(change)
        if space.waiting_bytes + waiting.size > settings.max_waiting_bytes:
            reject(space, turn, topic, waiting, "rate_limited",
                   "too many bytes of changes are waiting for validators in this space")
            return
        space.waiting_bytes += waiting.size
        topic.queue.append(waiting)
        return
    process(space, turn, topic, waiting)


def reject(space: SpaceSurface, turn: Turn, topic: Topic, waiting: Waiting, code: str,
           reason: str) -> None:
    """``reject_update`` to the sender (if still connected) with its change as sent."""
    if waiting.client_id in space.clients:
        reason = reason[: space.settings.max_reason_chars]
        turn.send((waiting.client_id,),
                  frames.reject_update(topic.name, waiting.change, code, reason))
        turn.count(ERRORS_TOTAL, code)


def process(space: SpaceSurface, turn: Turn, topic: Topic, waiting: Waiting) -> None:
    """A change at its turn: check, then ask the validator or apply (§9.4 steps 2–4)."""
    settings = space.settings
    try:
        prepared = prepare(topic, waiting.change, turn.rng(), settings, space.space_bytes)
    except Refused as refusal:
        reject(space, turn, topic, waiting, refusal.code, refusal.reason)
        return
    service = validator_service(topic.name)
    provider = space.services.get(service)
    if provider is None:
        space.apply(turn, topic, prepared)
        return
    rid = uuid4(turn.rng())
    space.add_pending(Pending(rid, service, provider, turn.now + settings.service_timeout,
                              waiting=waiting, topic=topic.name, prepared=prepared))
    topic.in_flight = rid
    seed, full = prepared.change_dicts(topic)
    turn.send((provider,), frames.validation_request(service, topic.name, seed, full, rid,
                                                     waiting.client_id))


def resolve_validation(space: SpaceSurface, turn: Turn, pending: Pending, code: str | None,
                       reason: str) -> None:
    """End a validation: apply (``code`` ``None``) or reject, then run the queued changes."""
    assert pending.topic is not None and pending.waiting is not None
    assert pending.prepared is not None
    topic = space.topics[pending.topic]
    topic.in_flight = None
    if code is None:
        limit = space.settings.max_space_bytes
        if space.space_bytes - topic.size + pending.prepared.size > limit:
            reject(space, turn, topic, pending.waiting, "too_large",
                   "the space's values are over the size limit")
        else:
            space.apply(turn, topic, pending.prepared)
    else:
        reject(space, turn, topic, pending.waiting, code, reason)
    while topic.in_flight is None and topic.queue:
        waiting = topic.queue.popleft()
        space.waiting_bytes -= waiting.size
        process(space, turn, topic, waiting)
