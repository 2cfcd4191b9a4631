"""Every topic type's changes against a simple reference model (hypothesis).

The model is written from §9.3's text alone, deliberately naively (pairwise equality, no
canonical keys, no incremental sizes). For every drawn change, the server must accept it
exactly when the model does, then hold the model's value (byte for byte in compact JSON)
and broadcast the model's normalized change; a refused change changes nothing, not even
the version.
"""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.spaces.testing import Harness
from relay.spaces.values import encode

MAX = 2**53 - 1

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.integers(-(2**60), 2**60),
    st.sampled_from([MAX, -MAX, MAX + 1, 0.0, -0.0, 1.0, 2.0, 1.5, 1e308, -1e308]),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=3),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=2), inner, max_size=3)),
    max_leaves=6)


def meq(a: Any, b: Any) -> bool:
    """JSON equality, naively: same kind; numbers by value; containers item by item."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(meq(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(meq(a[k], b[k]) for k in a)
    return bool(a == b)


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def as_float(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    try:
        f = float(v)
    except OverflowError:
        return None
    return f if math.isfinite(f) else None


class Refuse(Exception):
    pass


def model(ttype: str, value: Any, version: int, ch: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """(new value, broadcast fields) or raise Refuse."""
    kind = ch.get("type")
    has = ch.__contains__
    if ttype == "event":
        if kind != "emit":
            raise Refuse
        a, f = ch.get("args"), ch.get("forward_info")
        a = {} if a is None else a
        f = {} if f is None else f
        if not isinstance(a, dict) or not isinstance(f, dict):
            raise Refuse
        return None, {"args": a, "forward_info": f}
    if kind == "set":
        v = ch.get("value")
        ok = {"generic": has("value"), "string": isinstance(v, str),
              "int": is_int(v) and abs(v) <= MAX, "float": as_float(v) is not None,
              "list": isinstance(v, list), "dict": isinstance(v, dict),
              "set": isinstance(v, list) and all(
                  not meq(v[i], v[j]) for i in range(len(v)) for j in range(i))}[ttype]
        if not ok:
            raise Refuse
        if ttype == "float":
            v = as_float(v)
        return v, {"value": v, "old_value": value}
    if ttype == "int" and kind == "add":
        v = ch.get("value")
        if not is_int(v) or abs(v) > MAX or abs(value + v) > MAX:
            raise Refuse
        return value + v, {"value": v}
    if ttype == "float" and kind == "add":
        v = as_float(ch.get("value"))
        if v is None or not math.isfinite(value + v):
            raise Refuse
        return value + v, {"value": v}
    if ttype == "string" and kind in ("insert", "delete"):
        p, tv = ch.get("position"), ch.get("topic_version")
        text = ch.get("insertion" if kind == "insert" else "deletion")
        if not (is_int(p) and is_int(tv) and isinstance(text, str)) or p < 0 or tv != version:
            raise Refuse
        if kind == "insert":
            if p > len(value):
                raise Refuse
            return value[:p] + text + value[p:], {"topic_version": version, "position": p,
                                                  "insertion": text}
        if value[p:p + len(text)] != text:
            raise Refuse
        return value[:p] + value[p + len(text):], {"topic_version": version, "position": p,
                                                   "deletion": text}
    if ttype == "set" and kind in ("append", "remove"):
        if not has("item"):
            raise Refuse
        item = ch["item"]
        found = [i for i, x in enumerate(value) if meq(x, item)]
        if kind == "append":
            if found:
                raise Refuse
            return [*value, item], {"item": item}
        if not found:
            raise Refuse
        return value[:found[0]] + value[found[0] + 1:], {"item": item}
    if ttype == "list" and kind in ("insert", "pop"):
        p, n = ch.get("position"), len(value)
        if not is_int(p) or abs(p) > MAX:
            raise Refuse
        if kind == "insert":
            if not has("item") or not -(n + 1) <= p <= n:
                raise Refuse
            p = p + n + 1 if p < 0 else p
            return [*value[:p], ch["item"], *value[p:]], {"item": ch["item"], "position": p}
        if not -n <= p < n:
            raise Refuse
        p = p + n if p < 0 else p
        return value[:p] + value[p + 1:], {"position": p}
    if ttype == "dict" and kind in ("add", "pop", "change_value"):
        k = ch.get("key")
        if not isinstance(k, str) or (kind != "pop" and not has("value")):
            raise Refuse
        if (kind == "add") == (k in value):
            raise Refuse
        new = dict(value)
        if kind == "add":
            new[k] = ch["value"]
            return new, {"key": k, "value": ch["value"]}
        if kind == "pop":
            del new[k]
            return new, {"key": k}
        new[k] = ch["value"]
        return new, {"key": k, "value": ch["value"], "old_value": value[k]}
    raise Refuse


ROWS = {"generic": ["set"], "string": ["set", "insert", "delete"], "int": ["set", "add"],
        "float": ["set", "add"], "set": ["set", "append", "remove"],
        "list": ["set", "insert", "pop"], "dict": ["set", "add", "pop", "change_value"],
        "event": ["emit"]}
ALL_KINDS = sorted({k for row in ROWS.values() for k in row})


@st.composite
def change_for(draw: st.DrawFn, ttype: str, value: Any, version: int) -> dict[str, Any]:
    kind = draw(st.sampled_from(ROWS[ttype]) if draw(st.integers(0, 9)) else
                st.sampled_from(ALL_KINDS))
    ch: dict[str, Any] = {"type": kind, "id": f"c{draw(st.integers(0, 10**6))}"}
    existing = value if isinstance(value, list) else list(value) if isinstance(value, dict) \
        else []
    pick = st.sampled_from(existing) if existing else values

    def maybe(key: str, strat: st.SearchStrategy[Any]) -> None:
        if draw(st.integers(0, 9)):
            ch[key] = draw(strat)

    if ttype == "string":
        text = value if isinstance(value, str) else ""
        maybe("position", st.integers(-1, len(text) + 1))
        # older versions are transformed (test_spaces_strings); here: current or invalid
        maybe("topic_version", st.sampled_from([version, version, version + 1, -1]))
        p = ch.get("position", 0) if is_int(ch.get("position", 0)) else 0
        maybe("insertion", st.text(max_size=3))
        maybe("deletion", st.sampled_from([text[max(p, 0):max(p, 0) + 2], "zz"]))
        maybe("value", st.one_of(st.text(max_size=4), values))
    elif ttype in ("int", "float"):
        maybe("value", st.one_of(st.integers(-MAX - 2, MAX + 2), values,
                                 st.sampled_from([1e308, MAX, -MAX, 10**400])))
    elif ttype == "set":
        maybe("item", st.one_of(pick, values))
        maybe("value", st.one_of(st.lists(values, max_size=4), values))
    elif ttype == "list":
        n = len(existing)
        maybe("item", values)
        maybe("position", st.one_of(st.integers(-n - 2, n + 1), values))
        maybe("value", st.one_of(st.lists(values, max_size=4), values))
    elif ttype == "dict":
        maybe("key", st.one_of(pick, st.text(max_size=2), values))
        maybe("value", values)
    elif ttype == "event":
        maybe("args", st.one_of(st.none(), st.dictionaries(st.text(max_size=2), values,
                                                           max_size=2), values))
        maybe("forward_info", st.one_of(st.none(), values))
    else:
        maybe("value", values)
    return ch


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(ROWS)), st.data())
def test_changes_match_the_model(ttype: str, data: st.DataObject) -> None:
    h = Harness()
    a = h.connect("full")
    h.send(a, "subscribe", {"topic_name": "t", "type": ttype})
    topic = h.space.topics["t"]
    expected_value = topic.value
    for _ in range(data.draw(st.integers(1, 12))):
        change = data.draw(change_for(ttype, expected_value, topic.version))
        text = json.dumps({"type": "update", "args": {"topic_name": "t", "change": change}})
        version = topic.version
        try:
            new_value, fields = model(ttype, expected_value, version, change)
        except Refuse:
            got = h.send_text(a, text)
            assert got[a][0]["type"] == "reject_update", (change, got)
            assert got[a][0]["content"]["change"] == change
            assert topic.version == version
            assert encode(topic.value) == encode(expected_value)
            continue
        got = h.send_text(a, text)
        frame = got[a][0]
        assert frame["type"] == "update", (change, frame)
        assert frame["content"]["version"] == version + 1 == topic.version
        assert frame["content"]["change"] == {"type": change["type"], **fields,
                                              "id": change["id"], "topic_name": "t",
                                              "topic_type": ttype}
        assert encode(topic.value) == encode(new_value), (topic.value, new_value)
        assert topic.size == len(encode(new_value))
        expected_value = new_value
