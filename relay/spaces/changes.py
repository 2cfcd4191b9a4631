"""The change types of each topic type (§9.3's table): checks and normalization.

:func:`prepare` runs the checks common to all changes, then the checker of the change's
row, then the sizes of §9.7.

Each checker takes the topic and the client's change and returns a :class:`Prepared`
(its ``id`` is filled in by :func:`topics.prepare`) or raises :class:`Refused` with
``invalid_change`` / ``bad_version``. New values are new objects; sizes are computed
incrementally where the compact encoding allows it (per-item and per-character escaping
make them additive), so an edit of a large value does not re-encode all of it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Final

from .entropy import Entropy, uuid4
from .settings import SpaceSettings
from .strings import DELETE, INSERT, Edit, edits_since, transform_delete, transform_insert
from .topics import Prepared, Refused, Topic
from .values import canonical, encode, is_number, is_safe_integer, json_size

Checker = Callable[[Topic, dict[str, Any]], Prepared]
_MISSING: Final = object()


def _invalid(reason: str) -> Refused:
    return Refused("invalid_change", reason)


def _field(change: dict[str, Any], key: str) -> Any:
    """A required field that may be any JSON value, ``null`` included."""
    value = change.get(key, _MISSING)
    if value is _MISSING:
        raise _invalid(f"{key} is required")
    return value


def _safe_int(change: dict[str, Any], key: str) -> int:
    value: Any = change.get(key)
    if not is_safe_integer(value):
        raise _invalid(f"{key} must be an integer within ±(2^53-1)")
    return value  # type: ignore[no-any-return]


def _float(value: Any, key: str) -> float:
    if not is_number(value):
        raise _invalid(f"{key} must be a number")
    try:
        out = float(value)
    except OverflowError:
        raise _invalid(f"{key} is too large for a 64-bit float") from None
    if not math.isfinite(out):
        raise _invalid(f"{key} must be finite")
    return out


def _set(topic: Topic, value: Any) -> Prepared:
    return Prepared("set", "", {"value": value, "old_value": topic.value}, value,
                    json_size(value))


def _grown(size: int, was_empty: bool, item_bytes: int) -> int:
    """Size of an array/object after adding an element of ``item_bytes`` (with its comma)."""
    return size + item_bytes + (0 if was_empty else 1)


def _shrunk(size: int, now_empty: bool, item_bytes: int) -> int:
    return size - item_bytes - (0 if now_empty else 1)


# -- generic, string, int, float ----------------------------------------------------------

def generic_set(topic: Topic, change: dict[str, Any]) -> Prepared:
    return _set(topic, _field(change, "value"))


def string_set(topic: Topic, change: dict[str, Any]) -> Prepared:
    value = change.get("value")
    if not isinstance(value, str):
        raise _invalid("value must be a string")
    p = _set(topic, value)
    p.edit = Edit(0, "set")
    return p


def _string_edits(topic: Topic, change: dict[str, Any]) -> tuple[int, int, list[Edit]]:
    """``topic_version``, ``position`` and the edits to carry the change through."""
    tv = _safe_int(change, "topic_version")
    pos = _safe_int(change, "position")
    if pos < 0:
        raise _invalid("position must be >= 0")
    c = topic.version
    history = topic.history
    if tv > c or tv < 0 or (tv < c and (not history or history[0].version > tv + 1)):
        raise Refused("bad_version", f"topic_version {tv} is not among the versions the "
                      f"topic's history reaches (current {c})")
    if tv == c:
        return tv, pos, []
    edits = edits_since(history, tv)
    if edits is None:
        raise Refused("bad_version", f"the topic was set after version {tv}")
    return tv, pos, edits


def string_insert(topic: Topic, change: dict[str, Any]) -> Prepared:
    insertion = change.get("insertion")
    if not isinstance(insertion, str):
        raise _invalid("insertion must be a string")
    _, pos, edits = _string_edits(topic, change)
    pos = transform_insert(pos, edits)
    text: str = topic.value
    if pos > len(text):
        raise _invalid(f"position {pos} is beyond the text's length {len(text)}")
    return Prepared(
        "insert", "",
        {"topic_version": topic.version, "position": pos, "insertion": insertion},
        text[:pos] + insertion + text[pos:], topic.size + json_size(insertion) - 2,
        edit=Edit(0, INSERT, pos, len(insertion), insertion),
    )


def string_delete(topic: Topic, change: dict[str, Any]) -> Prepared:
    deletion = change.get("deletion")
    if not isinstance(deletion, str):
        raise _invalid("deletion must be a string")
    _, pos, edits = _string_edits(topic, change)
    pos, deletion = transform_delete(pos, deletion, edits)
    text: str = topic.value
    if text[pos : pos + len(deletion)] != deletion:
        raise _invalid("the text at position does not equal deletion")
    return Prepared(
        "delete", "",
        {"topic_version": topic.version, "position": pos, "deletion": deletion},
        text[:pos] + text[pos + len(deletion) :], topic.size - json_size(deletion) + 2,
        edit=Edit(0, DELETE, pos, len(deletion)),
    )


def int_set(topic: Topic, change: dict[str, Any]) -> Prepared:
    return _set(topic, _safe_int(change, "value"))


def int_add(topic: Topic, change: dict[str, Any]) -> Prepared:
    value = _safe_int(change, "value")
    total = topic.value + value
    if not is_safe_integer(total):
        raise _invalid("the sum leaves ±(2^53-1)")
    return Prepared("add", "", {"value": value}, total, json_size(total))


def float_set(topic: Topic, change: dict[str, Any]) -> Prepared:
    return _set(topic, _float(change.get("value"), "value"))


def float_add(topic: Topic, change: dict[str, Any]) -> Prepared:
    value = _float(change.get("value"), "value")
    total = topic.value + value
    if not math.isfinite(total):
        raise _invalid("the sum is not finite")
    return Prepared("add", "", {"value": value}, total, json_size(total))


# -- set, list, dict, event ---------------------------------------------------------------

def set_set(topic: Topic, change: dict[str, Any]) -> Prepared:
    value = change.get("value")
    if type(value) is not list:
        raise _invalid("value must be an array")
    keys = [canonical(v) for v in value]
    if len(set(keys)) != len(keys):
        raise _invalid("the items of a set must be pairwise unequal")
    p = _set(topic, value)
    p.keys = keys
    return p


def set_append(topic: Topic, change: dict[str, Any]) -> Prepared:
    item = _field(change, "item")
    key = canonical(item)
    if key in topic.keyset:
        raise _invalid("item is already in the set")
    old: list[Any] = topic.value
    return Prepared("append", "", {"item": item}, [*old, item],
                    _grown(topic.size, not old, json_size(item)), key_added=(key,))


def set_remove(topic: Topic, change: dict[str, Any]) -> Prepared:
    item = _field(change, "item")
    key = canonical(item)
    if key not in topic.keyset:
        raise _invalid("item is not in the set")
    old: list[Any] = topic.value
    i = topic.keys.index(key)
    new = old[:i] + old[i + 1 :]
    return Prepared("remove", "", {"item": item}, new,
                    _shrunk(topic.size, not new, json_size(old[i])), key_removed=i)


def list_set(topic: Topic, change: dict[str, Any]) -> Prepared:
    value = change.get("value")
    if type(value) is not list:
        raise _invalid("value must be an array")
    return _set(topic, value)


def list_insert(topic: Topic, change: dict[str, Any]) -> Prepared:
    item = _field(change, "item")
    pos = _safe_int(change, "position")
    old: list[Any] = topic.value
    n = len(old)
    if not -(n + 1) <= pos <= n:
        raise _invalid(f"position must be within [-{n + 1}, {n}]")
    if pos < 0:
        pos += n + 1
    return Prepared("insert", "", {"item": item, "position": pos},
                    [*old[:pos], item, *old[pos:]], _grown(topic.size, n == 0, json_size(item)))


def list_pop(topic: Topic, change: dict[str, Any]) -> Prepared:
    pos = _safe_int(change, "position")
    old: list[Any] = topic.value
    n = len(old)
    if not -n <= pos < n:
        raise _invalid(f"position must be within [-{n}, {n - 1}]" if n else "the list is empty")
    if pos < 0:
        pos += n
    return Prepared("pop", "", {"position": pos}, old[:pos] + old[pos + 1 :],
                    _shrunk(topic.size, n == 1, json_size(old[pos])))


def dict_set(topic: Topic, change: dict[str, Any]) -> Prepared:
    value = change.get("value")
    if type(value) is not dict:
        raise _invalid("value must be an object")
    return _set(topic, value)


def _key(change: dict[str, Any]) -> str:
    key = change.get("key")
    if not isinstance(key, str):
        raise _invalid("key must be a string")
    return key


def _entry_bytes(key: str, value: Any) -> int:
    return json_size(key) + 1 + json_size(value)


def dict_add(topic: Topic, change: dict[str, Any]) -> Prepared:
    key = _key(change)
    value = _field(change, "value")
    old: dict[str, Any] = topic.value
    if key in old:
        raise _invalid("key is already in the dict")
    new = dict(old)
    new[key] = value
    return Prepared("add", "", {"key": key, "value": value}, new,
                    _grown(topic.size, not old, _entry_bytes(key, value)))


def dict_pop(topic: Topic, change: dict[str, Any]) -> Prepared:
    key = _key(change)
    old: dict[str, Any] = topic.value
    if key not in old:
        raise _invalid("key is not in the dict")
    new = dict(old)
    removed = new.pop(key)
    return Prepared("pop", "", {"key": key}, new,
                    _shrunk(topic.size, not new, _entry_bytes(key, removed)))


def dict_change_value(topic: Topic, change: dict[str, Any]) -> Prepared:
    key = _key(change)
    value = _field(change, "value")
    old: dict[str, Any] = topic.value
    if key not in old:
        raise _invalid("key is not in the dict")
    new = dict(old)
    new[key] = value
    previous = old[key]
    return Prepared("change_value", "", {"key": key, "value": value, "old_value": previous},
                    new, topic.size - json_size(previous) + json_size(value))


def event_emit(topic: Topic, change: dict[str, Any]) -> Prepared:
    args = change.get("args")
    forward_info = change.get("forward_info")
    if args is None:
        args = {}
    if forward_info is None:
        forward_info = {}
    if type(args) is not dict or type(forward_info) is not dict:
        raise _invalid("args and forward_info must be objects")
    return Prepared("emit", "", {"args": args, "forward_info": forward_info}, None, topic.size)


CHECKERS: Final[dict[str, dict[str, Checker]]] = {
    "generic": {"set": generic_set},
    "string": {"set": string_set, "insert": string_insert, "delete": string_delete},
    "int": {"set": int_set, "add": int_add},
    "float": {"set": float_set, "add": float_add},
    "set": {"set": set_set, "append": set_append, "remove": set_remove},
    "list": {"set": list_set, "insert": list_insert, "pop": list_pop},
    "dict": {"set": dict_set, "add": dict_add, "pop": dict_pop,
             "change_value": dict_change_value},
    "event": {"emit": event_emit},
}
"""Topic type → change type → checker: exactly the rows of §9.3's table."""


def prepare(topic: Topic, change: dict[str, Any], entropy: Entropy, settings: SpaceSettings,
            space_bytes: int) -> Prepared:
    """Check ``change`` against ``topic``: §9.3, then the sizes of §9.7; raise
    :class:`Refused`. ``space_bytes`` is the space's current total of value sizes."""
    if topic.special:
        raise Refused("forbidden", "special topics are set by the server only")
    ctype = change.get("type")
    if not isinstance(ctype, str):
        raise Refused("invalid_change", "a change needs a string type")
    checker = CHECKERS[topic.type].get(ctype)
    if checker is None:
        raise Refused("type_mismatch", f"{ctype[:64]} is not a change of {topic.type} topics")
    topic_type = change.get("topic_type")
    if topic_type is not None and topic_type != topic.type:
        raise Refused("type_mismatch", f"the topic's type is {topic.type}")
    topic_name = change.get("topic_name")
    if topic_name is not None and topic_name != topic.name:
        raise Refused("invalid_change", "topic_name is not this topic's")
    cid = change.get("id")
    if cid is not None and (not isinstance(cid, str) or not 1 <= len(cid) <= 64):
        raise Refused("invalid_change", "id must be a string of 1-64 characters")
    prepared = checker(topic, change)
    if len(encode(change)) > settings.max_change_bytes:
        raise Refused("too_large", "the change is over the size limit")
    if prepared.size > settings.max_value_bytes:
        raise Refused("too_large", "the new value is over the size limit")
    if space_bytes - topic.size + prepared.size > settings.max_space_bytes:
        raise Refused("too_large", "the space's values are over the size limit")
    prepared.id = cid if cid is not None else uuid4(entropy)
    return prepared
