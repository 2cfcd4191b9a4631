"""Who may see a room's stats (§8): room id parsing, lookup and the stats key."""

from __future__ import annotations

import enum
import hmac
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from relay.ports import StatsEntry, WebHost


class Denied(enum.Enum):
    """Why a stats request is refused, in the order the checks run."""

    NOT_FOUND = 404
    FORBIDDEN = 403
    RATE_LIMITED = 429


@dataclass(frozen=True, slots=True)
class Lookup:
    """Outcome of :func:`find_room`: the room's stats, or why they are refused."""

    room: StatsEntry | None
    denied: Denied | None


MAX_ID_DIGITS = 20


def parse_room_id(raw: str) -> int | None:
    """A path segment that is a decimal integer (ASCII digits only, at most 20 of them:
    a longer one names no room and must not cost a 4,300-digit conversion), else None."""
    if raw and len(raw) <= MAX_ID_DIGITS and raw.isascii() and raw.isdigit():
        return int(raw)
    return None


def key_matches(given: str | None, expected: str) -> bool:
    """Constant-time comparison of the ``key`` query parameter with the room's stats key."""
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


async def find_room(host: WebHost, raw_id: str, key: str | None, ip: str) -> Lookup:
    """Unknown or non-integer room → 404 (before the key); missing or wrong key → 403.

    Both answers tell a guesser something (which room ids exist), so both count as failed
    joins of the client IP (§4.3), and at the limit the answer is 429 without a lookup.
    """
    if host.join_blocked(ip):
        return Lookup(None, Denied.RATE_LIMITED)
    room_id = parse_room_id(raw_id)
    room = await host.stats.get(room_id) if room_id is not None else None
    if room is None:
        host.count_join_failure(ip)
        return Lookup(None, Denied.NOT_FOUND)
    if not host.public_stats and not key_matches(key, room.stats_key):
        host.count_join_failure(ip)
        return Lookup(None, Denied.FORBIDDEN)
    return Lookup(room, None)
