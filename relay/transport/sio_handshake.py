"""Which requests to ``/socket.io/`` are served, and how the others are refused (§3.2).

Pure, so that the table is tested without sockets. The caller gives what only it knows
(whether polling is enabled, the state of the session a ``sid`` names, whether the Origin
is allowed); this answers with the refusal of the first row of §3.2's table that matches
(Appendix C: the first matching row wins), or ``None`` when the request is to be served.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from urllib.parse import parse_qsl

__all__ = ["SessionState", "SioQuery", "parse_query", "refusal"]

TRANSPORT_UNKNOWN = b'{"code":0,"message":"Transport unknown"}'
WEBSOCKET_ONLY = b'{"code":0,"message":"Only the websocket transport is supported"}'
SID_UNKNOWN = b'{"code":1,"message":"Session ID unknown"}'
BAD_METHOD = b'{"code":2,"message":"Bad handshake method"}'
BAD_REQUEST = b'{"code":3,"message":"Bad request"}'
FORBIDDEN = b'{"code":4,"message":"Forbidden"}'
BAD_VERSION = b'{"code":5,"message":"Unsupported protocol version"}'


class SessionState(Enum):
    """What the session a request's ``sid`` names is, as far as this node knows."""

    NONE = "none"  # no sid in the request
    UNKNOWN = "unknown"  # never was, ended, or held by no node
    POLLING = "polling"  # open, on long-polling
    UPGRADING = "upgrading"  # open, a WebSocket probe is under way
    UPGRADED = "upgraded"  # it moved to a WebSocket


@dataclass(frozen=True, slots=True)
class SioQuery:
    transport: str | None
    eio: str | None
    sid: str | None  # present (maybe empty) or None


def parse_query(query: str) -> SioQuery:
    """The Engine.IO parameters of a query string: percent-decoded, a repeated parameter
    counting with its last value (as duplicate JSON keys do, §0), ``sid`` present even
    when empty. Other parameters (``t``, ``b64``, custom ones) are ignored."""
    params = dict(parse_qsl(query.removeprefix("?"), keep_blank_values=True))
    return SioQuery(params.get("transport"), params.get("EIO"), params.get("sid"))


def refusal(method: str, websocket: bool, query: SioQuery, *, polling: bool,
            state: SessionState, origin_ok: bool) -> tuple[int, bytes] | None:
    """``(status, JSON body)`` refusing the request, or None to serve it.

    ``websocket`` is whether the request asks for a WebSocket upgrade (its handshake itself
    is checked by ``relay.transport.http.upgrade_refusal``).
    """
    transport = query.transport
    if (transport not in ("polling", "websocket") or (transport == "websocket") != websocket
            or (transport == "polling" and not polling)):
        if transport == "polling" and not polling and not websocket:
            return 400, WEBSOCKET_ONLY
        return 400, TRANSPORT_UNKNOWN
    if query.sid is not None and state is SessionState.UNKNOWN:
        return 400, SID_UNKNOWN
    if method not in ("GET", "POST", "OPTIONS") or (method == "POST" and query.sid is None):
        return 400, BAD_METHOD
    if query.sid is not None and (state is SessionState.UPGRADED
                                  or (websocket and state is SessionState.UPGRADING)):
        return 400, BAD_REQUEST  # polling after the upgrade, or a second upgrade
    if not origin_ok:
        return 403, FORBIDDEN
    if query.eio != "4":
        return 400, BAD_VERSION
    return None
