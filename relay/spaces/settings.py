"""The limits of a space (§9.7) and the service timeout, with the documented defaults."""

from __future__ import annotations

from dataclasses import dataclass

KIB = 1024
MIB = 1024 * KIB


@dataclass(frozen=True, slots=True)
class SpaceSettings:
    """Everything a :class:`~relay.spaces.space.Space` needs to know about configuration.

    ``max_spaces`` is enforced by the shell at the upgrade (HTTP 503); it lives here so that
    all of §9.7 is in one place. ``max_nesting``, ``max_history_chars`` and
    ``max_waiting_bytes`` are ours (see the Interpretations in ``relay.spaces``).
    """

    service_timeout: float = 15.0
    """``OBSERVER_SERVICE_TIMEOUT``: default request timeout and the validation timeout."""
    max_spaces: int = 100
    max_topics: int = 1000
    max_subscriptions: int = 1000
    max_name_chars: int = 256
    max_change_bytes: int = 1 * MIB
    max_value_bytes: int = 1 * MIB
    max_space_bytes: int = 16 * MIB
    string_history: int = 100
    max_history_chars: int = 4 * MIB
    """Ours: insertions kept by all string histories of a space, in code points."""
    max_waiting_changes: int = 100
    max_waiting_bytes: int = 16 * MIB
    """Ours: changes queued behind validations in a space, compact JSON bytes."""
    max_services_per_client: int = 100
    max_services: int = 1000
    max_args_bytes: int = 64 * KIB
    max_pending_requests: int = 100
    min_timeout: float = 1.0
    max_timeout: float = 60.0
    max_response_bytes: int = 1 * MIB
    max_reason_chars: int = 1000
    max_nesting: int = 128
