"""Which requests to ``/socket.io/`` may become a Socket.IO session (§3.2 handshake table).

Pure, so that the table is tested without sockets. Only the WebSocket transport of Engine.IO
v4 exists here: there is no polling session a ``sid`` could refer to, so every request that
does not open a fresh WebSocket session is refused with 400 and a Socket.IO-style JSON body.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

__all__ = ["check_sio_request"]

_BAD_TRANSPORT = b'{"code":0,"message":"Only the websocket transport is supported"}'
_BAD_PROTOCOL = b'{"code":5,"message":"Unsupported protocol version"}'
_UNKNOWN_SID = b'{"code":1,"message":"Session ID unknown"}'


def check_sio_request(is_upgrade: bool, query: str) -> tuple[int, bytes] | None:
    """``(400, JSON body)`` for a request to refuse, ``None`` for one to upgrade.

    The first matching row wins (Appendix C). ``query`` is the raw query string (a leading
    ``?`` is tolerated); values are percent-decoded; a repeated parameter counts with its last
    value (as duplicate JSON keys do, §0); ``sid`` counts as present even when empty. Other
    parameters (``t``, ``b64``, custom ones) are ignored.
    """
    params = dict(parse_qsl(query.removeprefix("?"), keep_blank_values=True))
    if not is_upgrade or params.get("transport") != "websocket":
        return 400, _BAD_TRANSPORT
    if params.get("EIO") != "4":
        return 400, _BAD_PROTOCOL
    if "sid" in params:
        return 400, _UNKNOWN_SID
    return None
