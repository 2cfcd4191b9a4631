"""Configuration from flags and ``OBSERVER_*`` environment variables (§1.3).

Precedence is flag, then environment, then default; a value that cannot be parsed is a
configuration error, which the CLI turns into exit status 2.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from relay.core.settings import CoreSettings
from relay.spaces.settings import SpaceSettings
from relay.transport.settings import TransportSettings


class ConfigError(ValueError):
    pass


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("", "0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def parse_duration(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"not a duration: {text!r}")
    return value


def parse_positive_duration(text: str) -> float:
    value = parse_duration(text)
    if value <= 0:
        raise ValueError(f"must be > 0: {text!r}")
    return value


def parse_size(text: str) -> int:
    value = int(text.strip())
    if value <= 0:
        raise ValueError(f"must be > 0: {text!r}")
    return value


def parse_port(text: str) -> int:
    value = int(text.strip())
    if not 0 <= value <= 65535:
        raise ValueError(f"not a port: {text!r}")
    return value


def parse_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_rate(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise ValueError(f"must be > 0: {text!r}")
    return value


_REDIS = re.compile(r"^redis://[^\s/:]+:\d{1,5}(/\d+)?$")


def parse_backplane(text: str) -> str:
    value = text.strip()
    if value == "memory://" or _REDIS.match(value):
        return value
    raise ValueError(f"expected memory:// or redis://host:port[/db], got {text!r}")


def parse_log_level(text: str) -> str:
    value = text.strip().upper()
    if value not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError(f"not a log level: {text!r}")
    return value


def parse_origins(text: str) -> list[str]:
    origins = parse_list(text)
    for origin in origins:
        if origin != "*" and not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s]+$", origin):
            raise ValueError(f"not an origin: {origin!r}")
    return origins


def parse_proxies(text: str) -> list[str]:
    from relay.transport.clients import parse_networks

    entries = parse_list(text)
    parse_networks(entries)  # ValueError for anything that is not an address or a block
    return entries


def parse_log_format(text: str) -> str:
    value = text.strip().lower()
    if value not in ("text", "json"):
        raise ValueError(f"not a log format (text or json): {text!r}")
    return value


def parse_notion_bases(text: str) -> list[str]:
    from relay.core.steps_import import parse_allowed_bases

    bases = parse_list(text)
    parse_allowed_bases(bases)
    return bases


@dataclass(slots=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 8000
    http_port: int = 8080
    max_message_size: int = 4 * 1024 * 1024
    rate_limit_rate: float = 50.0
    rate_limit_burst: float = 200.0
    rate_limit_close_after: float = 10.0
    join_failure_limit: int = 20
    send_queue_frames: int = 1000
    send_queue_bytes: int = 8 * 1024 * 1024
    replay_events: int = 1000
    replay_bytes: int = 8 * 1024 * 1024
    heartbeat_interval: float = 20.0
    heartbeat_timeout: float = 20.0
    sio_ping_interval: float = 25.0
    sio_ping_timeout: float = 20.0
    room_idle_expiry: float = 7200.0
    allowed_origins: list[str] = field(default_factory=list)
    legacy_tokenless: bool = False
    public_stats: bool = False
    stun_urls: list[str] = field(default_factory=list)
    turn_urls: list[str] = field(default_factory=list)
    turn_secret: str = ""
    turn_ttl: int = 86400
    notion_base_urls: list[str] = field(default_factory=lambda: [
        "https://notion.so", "https://www.notion.so", "https://*.notion.site"])
    backplane_url: str = "memory://"
    cluster_handoff: bool = True  # same-host nodes pass sockets to the room's owner
    plugin_version: str = "1.2.15"
    log_level: str = "INFO"
    max_connections_per_ip: int = 2000
    max_rooms_per_ip: int = 50
    sio_polling: bool = True  # Engine.IO long-polling and upgrade on /socket.io/
    trusted_proxies: list[str] = field(default_factory=list)  # addresses or CIDR blocks
    device_cookie: bool = True  # §4.6
    log_format: str = "text"  # or "json"
    chatroom: bool = True  # §9: the ChatRoom endpoints
    chatroom_secret: str = ""  # empty: every space is open
    chatroom_max_spaces: int = 100
    service_timeout: float = 15.0

    def transport_settings(self) -> TransportSettings:
        return TransportSettings(
            max_message_size=self.max_message_size, rate_limit_rate=self.rate_limit_rate,
            rate_limit_burst=self.rate_limit_burst,
            rate_limit_close_after=self.rate_limit_close_after,
            send_queue_frames=self.send_queue_frames, send_queue_bytes=self.send_queue_bytes,
            heartbeat_interval=self.heartbeat_interval, heartbeat_timeout=self.heartbeat_timeout,
            sio_ping_interval=self.sio_ping_interval, sio_ping_timeout=self.sio_ping_timeout,
        )

    def space_settings(self) -> SpaceSettings:
        return SpaceSettings(service_timeout=self.service_timeout,
                             max_spaces=self.chatroom_max_spaces)

    def core_settings(self) -> CoreSettings:
        return CoreSettings(
            replay_events=self.replay_events, replay_bytes=self.replay_bytes,
            legacy_tokenless=self.legacy_tokenless, plugin_version=self.plugin_version,
            join_failure_limit=self.join_failure_limit, room_idle_expiry=self.room_idle_expiry,
            stun_urls=self.stun_urls, turn_urls=self.turn_urls, turn_secret=self.turn_secret,
            turn_ttl=self.turn_ttl, max_rooms_per_ip=self.max_rooms_per_ip,
        )


def _nonneg_int(text: str) -> int:
    value = int(text.strip())
    if value < 0:
        raise ValueError(f"must be >= 0: {text!r}")
    return value


def _positive_int(text: str) -> int:
    value = int(text.strip())
    if value <= 0:
        raise ValueError(f"must be > 0: {text!r}")
    return value


def _plain(text: str) -> str:
    return text


# variable name -> (field, parser)
ENV: dict[str, tuple[str, Callable[[str], Any]]] = {
    "OBSERVER_HOST": ("host", lambda t: t.strip() or "127.0.0.1"),
    "OBSERVER_PORT": ("port", parse_port),
    "OBSERVER_HTTP_PORT": ("http_port", parse_port),
    "OBSERVER_MAX_MESSAGE_SIZE": ("max_message_size", parse_size),
    "OBSERVER_RATE_LIMIT_RATE": ("rate_limit_rate", parse_rate),
    "OBSERVER_RATE_LIMIT_BURST": ("rate_limit_burst", parse_rate),
    "OBSERVER_RATE_LIMIT_CLOSE_AFTER": ("rate_limit_close_after", parse_duration),
    "OBSERVER_JOIN_FAILURE_LIMIT": ("join_failure_limit", _positive_int),
    "OBSERVER_SEND_QUEUE_FRAMES": ("send_queue_frames", _positive_int),
    "OBSERVER_SEND_QUEUE_BYTES": ("send_queue_bytes", parse_size),
    "OBSERVER_REPLAY_EVENTS": ("replay_events", _positive_int),
    "OBSERVER_REPLAY_BYTES": ("replay_bytes", parse_size),
    "OBSERVER_HEARTBEAT_INTERVAL": ("heartbeat_interval", parse_positive_duration),
    "OBSERVER_HEARTBEAT_TIMEOUT": ("heartbeat_timeout", parse_positive_duration),
    "OBSERVER_SIO_PING_INTERVAL": ("sio_ping_interval", parse_positive_duration),
    "OBSERVER_SIO_PING_TIMEOUT": ("sio_ping_timeout", parse_positive_duration),
    "OBSERVER_ROOM_IDLE_EXPIRY": ("room_idle_expiry", parse_duration),
    "OBSERVER_ALLOWED_ORIGINS": ("allowed_origins", parse_origins),
    "OBSERVER_LEGACY_TOKENLESS": ("legacy_tokenless", parse_bool),
    "OBSERVER_PUBLIC_STATS": ("public_stats", parse_bool),
    "OBSERVER_STUN_URLS": ("stun_urls", parse_list),
    "OBSERVER_TURN_URLS": ("turn_urls", parse_list),
    "OBSERVER_TURN_SECRET": ("turn_secret", _plain),
    "OBSERVER_TURN_TTL": ("turn_ttl", _positive_int),
    "OBSERVER_NOTION_BASE_URLS": ("notion_base_urls", parse_notion_bases),
    "OBSERVER_BACKPLANE_URL": ("backplane_url", parse_backplane),
    "OBSERVER_CLUSTER_HANDOFF": ("cluster_handoff", parse_bool),
    "OBSERVER_PLUGIN_VERSION": ("plugin_version", lambda t: t.strip()),
    "OBSERVER_LOG_LEVEL": ("log_level", parse_log_level),
    "OBSERVER_MAX_CONNECTIONS_PER_IP": ("max_connections_per_ip", _nonneg_int),
    "OBSERVER_MAX_ROOMS_PER_IP": ("max_rooms_per_ip", _nonneg_int),
    "OBSERVER_SIO_POLLING": ("sio_polling", parse_bool),
    "OBSERVER_TRUSTED_PROXIES": ("trusted_proxies", parse_proxies),
    "OBSERVER_DEVICE_COOKIE": ("device_cookie", parse_bool),
    "OBSERVER_LOG_FORMAT": ("log_format", parse_log_format),
    "OBSERVER_CHATROOM": ("chatroom", parse_bool),
    "OBSERVER_CHATROOM_SECRET": ("chatroom_secret", _plain),
    "OBSERVER_CHATROOM_MAX_SPACES": ("chatroom_max_spaces", _positive_int),
    "OBSERVER_SERVICE_TIMEOUT": ("service_timeout", parse_positive_duration),
}


def load_config(env: Mapping[str, str], overrides: Mapping[str, Any] | None = None) -> Config:
    """Build the configuration; ``overrides`` (from flags) win and skip their variable."""
    overrides = dict(overrides or {})
    values: dict[str, Any] = {}
    for var, (name, parse) in ENV.items():
        if name in overrides or var not in env:
            continue
        try:
            values[name] = parse(env[var])
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{var}: {exc}") from None
    values.update(overrides)
    config = dataclasses.replace(Config(), **values)
    if config.turn_urls and not config.turn_secret:
        raise ConfigError("OBSERVER_TURN_URLS requires OBSERVER_TURN_SECRET")
    return config
