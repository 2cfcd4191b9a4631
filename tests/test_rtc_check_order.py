"""§0.1's check order for the relayed WebRTC events (§6.8): payload rules before state, and
the ``room_id`` equality is a state check — a bad payload naming another room is
``invalid_payload``, a good one naming another room is ``forbidden``."""

from __future__ import annotations

import pytest

from tests.support import Relay, classroom, fails


@pytest.mark.parametrize(("event", "bad"), [
    ("rtc/offer", {"sdp": 5}), ("rtc/answer", {"sdp": ""}),
    ("rtc/ice", {}), ("rtc/stop", {"user_id": "x"}),
])
async def test_payload_errors_come_before_a_foreign_room_id(relay: Relay, event: str,
                                                            bad: dict[str, object]) -> None:
    _host, room_id, (student,) = await classroom(relay, "Ann")
    await fails(student, event, {"room_id": room_id + 1, **bad}, "invalid_payload")
    good = {"sdp": "v=0"} if event in ("rtc/offer", "rtc/answer") else (
        {"candidate": "c"} if event == "rtc/ice" else {})
    await fails(student, event, {"room_id": room_id + 1, **good}, "forbidden")
    await fails(student, event, {"room_id": "x", **good}, "invalid_payload")
