"""Client events: who may send each, how its payload is read, what it does.

Every event is split into ``parse`` (payload rules only, no state read beyond what the
rules need) and ``apply`` (state checks, then changes). The hub runs the generic checks in
the order of §0.1 around them: binding, role, ``room_id`` type, parse, ``room_id``
equality, apply.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from .context import Ctx

HOST = "host"
STUDENT = "student"
ANY = "any"
UNBOUND = "unbound"

Parse = Callable[[Ctx, Any], Any]
Apply = Callable[[Ctx, Any], None]


@dataclass(frozen=True, slots=True)
class EventSpec:
    name: str
    role: str
    parse: Parse
    apply: Apply
    #: Whether a ``room_id`` key in an object payload is checked against the sender's room.
    room_id_key: bool = True


def build_table(*groups: Iterable[EventSpec]) -> Mapping[str, EventSpec]:
    """The event table from each module's ``EVENTS``; a name defined twice is a bug."""
    table: dict[str, EventSpec] = {}
    for group in groups:
        for spec in group:
            if spec.name in table:
                raise ValueError(f"event {spec.name!r} is defined twice")
            table[spec.name] = spec
    return MappingProxyType(table)


def no_payload(ctx: Ctx, data: Any) -> None:
    """Events whose payload carries nothing the server reads (object or absent)."""
    return None
