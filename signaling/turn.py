"""The ``rtc/config`` payload of protocol §6.8 (pure: the clock is an argument).

TURN servers are not given a static password: the relay mints short-lived TURN REST
credentials (the scheme coturn's ``use-auth-secret`` understands) so that a leaked config stops
working after ``turn_ttl`` seconds and the TURN server needs no user database.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

__all__ = ["rtc_config", "turn_credentials"]


def turn_credentials(
    user_id: int, *, turn_secret: str, turn_ttl: int, now: float
) -> tuple[str, str]:
    """Return ``(username, credential)`` for the TURN REST scheme.

    ``username`` is ``"<expiry>:<user_id>"`` with ``expiry = int(now) + turn_ttl`` (the TURN
    server rejects it after that instant); ``credential`` is standard, padded base64 of
    HMAC-SHA1 keyed with the shared secret over the username, so the TURN server can recompute
    it from the secret alone.
    """
    username = f"{int(now) + turn_ttl}:{user_id}"
    digest = hmac.new(turn_secret.encode("utf-8"), username.encode("utf-8"), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii")


def rtc_config(
    user_id: int,
    is_host: bool,
    *,
    stun_urls: list[str],
    turn_urls: list[str],
    turn_secret: str,
    turn_ttl: int,
    now: float,
) -> dict[str, Any]:
    """Build the ``rtc/config`` payload ``{ice_servers, ttl, polite}`` for one participant.

    STUN comes first, then TURN, each entry only when its URL list is non-empty (TURN URLs
    without a secret are rejected at configuration time, so that case is a programming error
    here). ``ttl`` tells the client when to ask for a fresh config and is ``0`` when there is
    nothing that expires. The host is the impolite peer of perfect negotiation so that both
    sides agree on who yields during offer glare.
    """
    ice_servers: list[dict[str, Any]] = []
    if stun_urls:
        ice_servers.append({"urls": list(stun_urls)})
    ttl = 0
    if turn_urls:
        if not turn_secret:
            raise ValueError("TURN URLs are configured without a TURN secret")
        username, credential = turn_credentials(
            user_id, turn_secret=turn_secret, turn_ttl=turn_ttl, now=now
        )
        ice_servers.append(
            {"urls": list(turn_urls), "username": username, "credential": credential}
        )
        ttl = turn_ttl
    return {"ice_servers": ice_servers, "ttl": ttl, "polite": not is_host}
