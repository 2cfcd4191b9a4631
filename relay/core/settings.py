"""The configuration the observer core needs (a slice of ``relay.config.Config``)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class CoreSettings:
    replay_events: int = 1000
    replay_bytes: int = 8 * 1024 * 1024
    legacy_tokenless: bool = False
    plugin_version: str = "1.2.15"
    join_failure_limit: int = 20
    room_idle_expiry: float = 7200.0
    stun_urls: list[str] = field(default_factory=list)
    turn_urls: list[str] = field(default_factory=list)
    turn_secret: str = ""
    turn_ttl: int = 86400
    max_rooms_per_ip: int = 50  # 0 = no cap
