"""WebRTC signaling events in observer rooms (§6.8), wired to the pure rules in ``signaling``."""

from __future__ import annotations

from typing import Any

from signaling.rules import RtcError, route_rtc

from .context import Ctx
from .errors import EventError
from .lifecycle import rtc_config_out
from .payload import obj
from .registry import ANY, HOST, STUDENT, EventSpec


def _parse_config(ctx: Ctx, data: Any) -> None:
    obj(data)


def rtc_config(ctx: Ctx, _: None) -> None:
    assert ctx.room is not None and ctx.sender is not None
    ctx.unseq(ctx.room, ctx.sender, rtc_config_out(ctx, ctx.sender))


def _keep(ctx: Ctx, data: Any) -> Any:
    # The relay rules validate the payload and then the state (the ``room_id`` equality
    # among them) in the order of §0.1, so the hub's own room_id check is off for these.
    return data


def _relay(name: str) -> Any:
    def apply(ctx: Ctx, data: Any) -> None:
        room, sender = ctx.room, ctx.sender
        assert room is not None and sender is not None
        participants = room.participants
        try:
            target, payload = route_rtc(
                name, data, sender_id=sender.user_id, host_id=room.host.user_id,
                is_student=lambda uid: uid in participants and not participants[uid].is_host,
                is_online=lambda uid: uid in participants and participants[uid].online,
                room_id=room.room_id,
            )
        except RtcError as exc:
            raise EventError(exc.code, exc.message) from None
        ctx.unseq(room, participants[target], name, payload)

    return apply


#: This module's events, in the order of the protocol's tables.
EVENTS = (
    EventSpec("rtc/config", ANY, _parse_config, rtc_config),
    *(EventSpec(name, role, _keep, _relay(name), room_id_key=False) for name, role in (
        ("rtc/request", STUDENT), ("rtc/allow", HOST), ("rtc/offer", ANY),
        ("rtc/answer", ANY), ("rtc/ice", ANY), ("rtc/stop", ANY))),
)
