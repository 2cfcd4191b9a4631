"""The per-connection and per-request records of a space, and the output of one call."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .actions import Action, Counted, Deliver
from .entropy import Entropy
from .frames import ServerFrame, Shape
from .topics import Prepared, Waiting

RequestId = str | int


@dataclass(slots=True)
class Client:
    """One connection of the space. Ordered dicts keep every iteration deterministic."""

    id: int
    shape: Shape
    subscriptions: dict[str, None] = field(default_factory=dict)
    regular_subscriptions: int = 0
    """Subscriptions to non-special topics: the ones that count toward the limit."""
    services: dict[str, None] = field(default_factory=dict)
    requests: dict[RequestId, str] = field(default_factory=dict)
    """This client's pending requests: its own request id → the id the provider saw."""
    provided: dict[str, None] = field(default_factory=dict)
    """Ids of pending requests (and validations) forwarded to this client."""


@dataclass(slots=True)
class Pending:
    """A request forwarded to a provider, or a validation sent to a topic's validator."""

    id: str
    """The fresh UUID4 the provider sees (never the requester's own id)."""
    service: str
    provider: int
    deadline: float
    requester: int | None = None
    """``None`` for a validation: the server asked, and ``waiting`` holds the change."""
    request_id: RequestId | None = None
    waiting: Waiting | None = None
    topic: str | None = None
    prepared: Prepared | None = None

    @property
    def is_validation(self) -> bool:
        return self.requester is None


class Turn:
    """The time, entropy and growing action list of one call into the space."""

    __slots__ = ("actions", "entropy", "now")

    def __init__(self, now: float, entropy: Entropy | None) -> None:
        self.now = now
        self.entropy = entropy
        self.actions: list[Action] = []

    def send(self, client_ids: tuple[int, ...], frame: ServerFrame) -> None:
        self.actions.append(Deliver(client_ids, frame))

    def count(self, metric: str, label: str) -> None:
        self.actions.append(Counted(metric, label))

    def rng(self) -> Entropy:
        """The entropy of a call that may draw ids (every call but the read-only ones)."""
        assert self.entropy is not None, "this call needs an entropy source"
        return self.entropy


def jsonable_id(value: Any) -> RequestId | None:
    """A request id as the protocol accepts it, or ``None``."""
    if isinstance(value, str) and 1 <= len(value) <= 64:
        return value
    if type(value) is int and -(2**53 - 1) <= value <= 2**53 - 1:
        return value
    return None
