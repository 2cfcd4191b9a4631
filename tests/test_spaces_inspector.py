"""§9.8: the space inspector's JSON document and its change counter."""

from __future__ import annotations

import datetime as dt

import pytest

from relay.spaces.inspector import iso_timestamp
from relay.spaces.testing import Harness


@pytest.mark.parametrize(("now", "text"), [
    (dt.datetime(2025, 3, 4, 9, 15, 2, 120000, tzinfo=dt.UTC).timestamp(),
     "2025-03-04T09:15:02.120Z"),
    (1741079702.12, "2025-03-04T09:15:02.120Z"),
    (1741079702.9999996, "2025-03-04T09:15:03.000Z"),
    (1741079702.9994, "2025-03-04T09:15:02.999Z"),
    (0.0, "1970-01-01T00:00:00.000Z"),
])
def test_iso_timestamp(now: float, text: str) -> None:
    assert iso_timestamp(now) == text


def test_document() -> None:
    h = Harness("room-1")
    a, b, c = h.connect(), h.connect("full"), h.connect()
    h.disconnect(b)
    h.send(c, "subscribe", {"topic_name": "zeta", "type": "string"})
    h.send(a, "subscribe", {"topic_name": "zeta"})
    h.send(a, "subscribe", {"topic_name": "Alpha", "type": "list"})
    h.send(a, "update", {"topic_name": "zeta", "change": {"type": "set", "value": "é" * 300}})
    h.send(c, "register_service", {"service_name": "svc"})
    h.send(a, "register_service", {"service_name": "_chatroom/validate_change/Alpha"})
    h.send(a, "request", {"service_name": "svc", "request_id": 1})
    h.send(a, "request", {"service_name": "svc", "request_id": 2})
    doc = h.space.inspect(1741079702.12)
    assert set(doc) == {"space", "generated_at", "clients", "topics", "services"}
    assert doc["space"] == "room-1" and doc["generated_at"] == "2025-03-04T09:15:02.120Z"
    assert doc["clients"] == [a, c]
    names = [t["name"] for t in doc["topics"]]
    assert names == sorted(names) == ["Alpha", f"_chatroom/client_message/{a}",
                                      f"_chatroom/client_message/{c}",
                                      "_chatroom/server_status", "zeta"]
    zeta = doc["topics"][-1]
    assert set(zeta) == {"name", "type", "version", "subscribers", "bytes", "preview"}
    assert zeta == {"name": "zeta", "type": "string", "version": 1, "subscribers": 2,
                    "bytes": 602, "preview": '"' + "é" * 199}
    assert doc["topics"][0] == {"name": "Alpha", "type": "list", "version": 0,
                                "subscribers": 1, "bytes": 2, "preview": "[]"}
    assert doc["services"] == [
        {"name": "_chatroom/validate_change/Alpha", "provider": a, "pending": 0},
        {"name": "svc", "provider": c, "pending": 2},
    ]
    # a change waiting for Alpha's validator counts as pending at the validator
    h.send(a, "update", {"topic_name": "Alpha", "change": {"type": "insert", "item": 1,
                                                           "position": 0}})
    services = h.space.inspect(0)["services"]
    assert services[0]["pending"] == 1


def test_version_moves_with_the_document_only() -> None:
    h = Harness()
    versions = [h.space.version]

    def moved() -> bool:
        versions.append(h.space.version)
        return versions[-1] != versions[-2]

    a = h.connect()
    assert moved()
    h.send(a, "subscribe", {"topic_name": "t", "type": "int"})
    assert moved()
    h.send(a, "update", {"topic_name": "t", "change": {"type": "add", "value": 1}})
    assert moved()
    h.send(a, "update", {"topic_name": "t", "change": {"type": "add", "value": 1.5}})
    assert not moved()  # refused
    h.send_text(a, "junk")
    assert not moved()
    h.send(a, "register_service", {"service_name": "s"})
    assert moved()
    h.send(a, "request", {"service_name": "s", "request_id": 1})
    assert moved()  # pending count
    h.advance(15)
    assert moved()
    h.send(a, "unsubscribe", {"topic_name": "t"})
    assert moved()
    h.disconnect(a)
    assert moved()
