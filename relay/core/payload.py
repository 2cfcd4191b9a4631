"""Edge validation helpers for observer payloads (protocol §0, §3.4).

Exceeding a documented maximum is ``too_large``; any other rule is ``invalid_payload``.
"""

from __future__ import annotations

from typing import Any

from .errors import invalid, too_large


def obj(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise invalid("payload must be an object")
    return data


def req_int(data: dict[str, Any], key: str) -> int:
    value = data.get(key)
    if type(value) is not int:
        raise invalid(f"'{key}' must be an integer")
    return value


def opt_int(data: dict[str, Any], key: str) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if type(value) is not int:
        raise invalid(f"'{key}' must be an integer")
    return value


def req_str(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise invalid(f"'{key}' must be a string")
    return value


def max_chars(value: str, limit: int, what: str) -> str:
    if len(value) > limit:
        raise too_large(f"{what} is longer than {limit} characters")
    return value


def max_bytes(value: str, limit: int, what: str) -> str:
    # Fast path: a str can't exceed ``limit`` UTF-8 bytes if 4*chars fits.
    if len(value) * 4 > limit and len(value.encode("utf-8")) > limit:
        raise too_large(f"{what} is larger than {limit} bytes")
    return value


def text_len(value: str, lo: int, hi: int, what: str) -> str:
    if len(value) < lo:
        raise invalid(f"{what} must be at least {lo} characters")
    return max_chars(value, hi, what)


def clean_name(value: object, limit: int) -> str:
    """Trimmed, 1..limit printable characters (§4.1)."""
    if not isinstance(value, str):
        raise invalid("'name' must be a string")
    name = value.strip()
    if not name:
        raise invalid("'name' must not be empty")
    if len(name) > limit:
        raise too_large(f"'name' is longer than {limit} characters")
    if not name.isprintable():
        raise invalid("'name' must be printable")
    return name
