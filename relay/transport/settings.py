"""The part of the configuration a connection needs (a slice of ``relay.config.Config``)."""

from __future__ import annotations

from dataclasses import dataclass

#: A Socket.IO session must send its namespace connect (``40``) within this (§3.1); a
#: WebSocket and a long-polling session alike.
SIO_CONNECT_DEADLINE = 45.0


@dataclass(frozen=True, slots=True)
class TransportSettings:
    max_message_size: int = 4 * 1024 * 1024
    rate_limit_rate: float = 50.0
    rate_limit_burst: float = 200.0
    rate_limit_close_after: float = 10.0
    send_queue_frames: int = 1000
    send_queue_bytes: int = 8 * 1024 * 1024
    heartbeat_interval: float = 20.0
    heartbeat_timeout: float = 20.0
    sio_ping_interval: float = 25.0
    sio_ping_timeout: float = 20.0
