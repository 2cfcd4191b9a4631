"""Property tests of what cluster nodes write to Redis and send each other.

``relay/cluster/wire.py`` (log records and node messages) and ``relay/cluster/snapshot.py``
(room snapshots) are typed msgspec structs read back from Redis, i.e. untrusted input:

- round trip: every record and message built from the struct types themselves (so a field
  or message added later is generated too) decodes to an equal object and re-encodes to
  the same bytes; client payloads (JSON text, integers of hundreds of digits) round-trip
  through ``payload_text``/``payload_value``;
- garbage never raises out: arbitrary bytes, truncated or extended valid blobs, wrong
  format versions, msgpack of wrong shapes, valid blobs with one value replaced and deep
  nesting make ``decode_record``/``decode_batch``/``decode_room`` raise ``WireError`` and
  nothing else;
- a room snapshot round-trips: rooms built by driving the real core are decoded equal in
  every field (every dataclass field of the room and its participants, replay buffers
  included), and a hub holding the decoded room answers the next events exactly as the
  original does;
- what a snapshot cannot carry: a ``str`` with a lone surrogate (msgpack strings are
  UTF-8) or an integer beyond msgpack's 64 bits makes encoding raise.
"""

from __future__ import annotations

import math
import typing
from typing import Any

import msgspec
import msgspec.inspect as mi
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from relay.cluster import wire
from relay.cluster.snapshot import ParticipantState, RoomState, decode_room, encode_room
from relay.cluster.wire import (
    FORMAT,
    Batch,
    LogRecord,
    WireError,
    decode_batch,
    decode_record,
    encode_batch,
    encode_record,
    payload_text,
    payload_value,
)
from relay.core.actions import Bind, Disconnect, RoomClosed, Unbind
from relay.core.context import Session
from relay.core.hub import Hub
from relay.core.ids import SeededEntropy
from relay.core.settings import CoreSettings
from tests.test_core_stateful import (
    ALL_EVENTS,
    HOST_EVENTS,
    STUDENT_EVENTS,
    Pools,
    action_view,
    expand,
    outcome_view,
    payload_for,
    room_view,
)

PROPS = settings(deadline=None, max_examples=150,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
ENTRIES: tuple[type, ...] = typing.get_args(wire.Entry)
MESSAGES: tuple[type, ...] = typing.get_args(wire.Message)
I64_MIN, U64_MAX = -(2**63), 2**64 - 1  # what msgpack carries

# -- strategies built from the struct types --------------------------------------------------
TEXT = st.text(max_size=12)  # any code point but the surrogates (msgpack strings are UTF-8)
BIG = st.integers(min_value=-(10**400), max_value=10**400)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(I64_MIN, U64_MAX) | BIG
    | st.sampled_from([10**299, -(10**299), 2**64, -(2**63) - 1, 2**53 + 1])
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


def strategy_for(t: mi.Type, name: str = "") -> st.SearchStrategy[Any]:
    """Values of a msgspec type (its constraints respected), from its inspected form."""
    if isinstance(t, mi.StrType):
        return TEXT
    if isinstance(t, mi.IntType):
        lo = I64_MIN if t.ge is None else t.ge
        hi = U64_MAX if t.le is None else t.le
        return st.integers(lo, hi)
    if isinstance(t, mi.FloatType):
        return st.floats(allow_nan=False)
    if isinstance(t, mi.BoolType):
        return st.booleans()
    if isinstance(t, mi.NoneType):
        return st.none()
    if isinstance(t, mi.BytesType):
        if name == "data":  # a client payload's JSON text, or anything
            return st.one_of(JSON.map(payload_text), st.binary(max_size=24))
        return st.binary(max_size=24)
    if isinstance(t, mi.UnionType):
        return st.one_of(*(strategy_for(u, name) for u in t.types))
    if isinstance(t, mi.ListType):
        return st.lists(strategy_for(t.item_type), max_size=3)
    if isinstance(t, mi.TupleType):
        return st.tuples(*(strategy_for(u) for u in t.item_types))
    if isinstance(t, mi.DictType):
        return st.dictionaries(strategy_for(t.key_type), strategy_for(t.value_type), max_size=3)
    if isinstance(t, mi.StructType):
        return st.builds(t.cls, **{f.name: strategy_for(f.type, f.name) for f in t.fields})
    if isinstance(t, mi.AnyType):
        return JSON
    raise NotImplementedError(f"no strategy for {t!r}")


def structs(cls: type) -> st.SearchStrategy[Any]:
    return strategy_for(mi.type_info(cls))


ENTRY = st.one_of(*(structs(c) for c in ENTRIES))
MESSAGE = st.one_of(*(structs(c) for c in MESSAGES))
RECORD = st.tuples(st.binary(max_size=16), ENTRY)  # (cmd, entry)
BATCH = st.lists(MESSAGE, max_size=5)
ROOM_STATE = structs(RoomState).map(lambda s: msgspec.structs.replace(s, version=FORMAT))
MSGPACK = st.recursive(
    st.none() | st.booleans() | st.integers(I64_MIN, U64_MAX) | st.floats() | TEXT
    | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=5)
    | st.dictionaries(TEXT | st.integers(-5, 5), inner, max_size=4),
    max_leaves=30,
)

_untyped = msgspec.msgpack.Decoder()
_encode = msgspec.msgpack.Encoder().encode


def valid_blobs() -> st.SearchStrategy[tuple[str, bytes]]:
    """(kind, blob) for each of the three decoders."""
    return st.one_of(
        RECORD.map(lambda r: ("record", encode_record(*r))),
        BATCH.map(lambda b: ("batch", encode_batch(b))),
        ROOM_STATE.map(lambda s: ("room", _encode(s))),
    )


SNAP = CoreSettings(replay_events=6, replay_bytes=3000, join_failure_limit=10**6,
                    room_idle_expiry=10**9)


def decode(kind: str, blob: bytes) -> Any:
    if kind == "record":
        return decode_record(blob)
    if kind == "batch":
        return decode_batch(blob)
    return decode_room(blob, SNAP)


def refused_or_read(kind: str, blob: bytes) -> None:
    """The only exception a decoder may raise is ``WireError``."""
    try:
        decode(kind, blob)
    except WireError:
        pass


KINDS = ["record", "batch", "room"]


# -- round trips ------------------------------------------------------------------------------
@PROPS
@given(record=RECORD)
def test_log_records_round_trip(record: tuple[bytes, Any]) -> None:
    cmd, entry = record
    blob = encode_record(cmd, entry)
    decoded = decode_record(blob)
    assert decoded == LogRecord(FORMAT, cmd, entry)
    assert type(decoded.entry) is type(entry)
    assert _encode(decoded) == blob


@PROPS
@given(messages=BATCH)
def test_node_messages_round_trip(messages: list[Any]) -> None:
    blob = encode_batch(messages)
    decoded = decode_batch(blob)
    assert decoded == messages
    assert [type(m) for m in decoded] == [type(m) for m in messages]
    assert _encode(Batch(FORMAT, decoded)) == blob


@PROPS
@given(state=ROOM_STATE)
def test_well_typed_snapshots_decode_to_what_they_say(state: RoomState) -> None:
    """No field of a snapshot is lost on the way into the core: re-encoding the decoded
    room gives the snapshot back, but for what a room cannot hold twice (a user id, a
    file name: the last one wins) and the buffered events beyond the replay bounds."""
    try:
        room = decode_room(_encode(state), SNAP)
    except WireError:
        return
    again = msgspec.msgpack.decode(encode_room(room), type=RoomState)
    assert msgspec.structs.replace(again, participants=[]) == msgspec.structs.replace(
        state, participants=[])
    last = {ps.user_id: ps for ps in state.participants}
    assert [p.user_id for p in again.participants] == list(last)
    for got in again.participants:
        want = last[got.user_id]
        files = {f.name: f for f in want.files}
        assert got.files == list(files.values())
        assert got.counter == want.counter
        assert got.events == want.events[len(want.events) - len(got.events):]
        assert len(got.events) >= min(1, len(want.events))
        assert msgspec.structs.replace(got, files=[], events=[]) == msgspec.structs.replace(
            want, files=[], events=[])


@PROPS
@given(value=JSON)
def test_client_payloads_round_trip(value: Any) -> None:
    assert_same(payload_value(payload_text(value)), value)


def assert_same(got: Any, want: Any) -> None:
    """Equal and of the same JSON types (1 is not 1.0, -0.0 keeps its sign)."""
    assert type(got) is type(want), (got, want)
    if isinstance(want, dict):
        assert list(got) == list(want)
        for key in want:
            assert_same(got[key], want[key])
    elif isinstance(want, list):
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            assert_same(g, w)
    elif isinstance(want, float):
        assert got == want and math.copysign(1, got) == math.copysign(1, want)
    else:
        assert got == want


@pytest.mark.parametrize("digits", [300, 4299, 4300])
def test_payload_integers_the_socket_decoder_accepts_round_trip(digits: int) -> None:
    """Integers up to the decoder's limit (the socket's JSON decoder is msgspec's too)."""
    for value in (int("9" * digits), -int("9" * (digits - 1))):
        text = str(value).encode()
        assert msgspec.json.decode(text) == value  # a client can send it
        assert payload_value(payload_text(value)) == value


@PROPS
@given(time=st.just(math.nan), ip=TEXT)
def test_nan_times_survive(time: float, ip: str) -> None:
    """NaN never equals itself, so the round trip above excludes it: it survives too."""
    entry = wire.Disconnected(ip, 1, 2, time)
    decoded = decode_record(encode_record(b"c", entry)).entry
    assert isinstance(decoded, wire.Disconnected) and math.isnan(decoded.time)


LONE = st.text(alphabet=st.characters(categories=["Cs"]), min_size=1, max_size=3)


@PROPS
@given(before=TEXT, lone=LONE, after=TEXT)
def test_lone_surrogates_are_not_encoded(before: str, lone: str, after: str) -> None:
    """A ``str`` with a lone surrogate has no UTF-8 form: encoding raises
    ``UnicodeEncodeError`` (not ``WireError``) rather than writing something else. No
    client string can hold one (the frame reader decodes strict UTF-8 and msgspec's JSON
    decoder refuses escaped surrogates), so this documents a limit of the format."""
    text = before + lone + after
    with pytest.raises(UnicodeEncodeError):
        encode_record(b"c", wire.Disconnected(text, 1, 2, 0.0))
    with pytest.raises(UnicodeEncodeError):
        encode_batch([wire.Gone(text, 1)])
    with pytest.raises(UnicodeEncodeError):
        payload_text({"content": text})


@pytest.mark.parametrize("value", [2**64, -(2**63) - 1, 10**30])
def test_integers_beyond_64_bits_are_not_encoded(value: int) -> None:
    """msgpack integers are 64-bit: a wider one makes encoding raise ``OverflowError``.
    The relay never puts one there (client integers travel inside the JSON text, plain refs
    are bounded to ±(2**53-1))."""
    with pytest.raises(OverflowError):
        encode_batch([wire.Result(value, None, None, None)])


# -- garbage ----------------------------------------------------------------------------------
@PROPS
@given(blob=st.binary(max_size=200), kind=st.sampled_from(KINDS))
def test_arbitrary_bytes_raise_only_wire_error(blob: bytes, kind: str) -> None:
    refused_or_read(kind, blob)


@PROPS
@given(valid=valid_blobs(), data=st.data())
def test_truncated_or_extended_blobs_raise_wire_error(valid: tuple[str, bytes],
                                                      data: st.DataObject) -> None:
    kind, blob = valid
    cut = data.draw(st.integers(0, len(blob) - 1), label="cut")
    with pytest.raises(WireError):
        decode(kind, blob[:cut])
    tail = data.draw(st.binary(min_size=1, max_size=4), label="tail")
    with pytest.raises(WireError):
        decode(kind, blob + tail)


@PROPS
@given(valid=valid_blobs(), version=st.integers(I64_MIN, U64_MAX).filter(lambda v: v != FORMAT))
def test_other_format_versions_raise_wire_error(valid: tuple[str, bytes], version: int) -> None:
    kind, blob = valid
    raw = _untyped.decode(blob)
    raw[0] = version  # every envelope starts with its version
    with pytest.raises(WireError):
        decode(kind, _encode(raw))


@PROPS
@given(value=MSGPACK, kind=st.sampled_from(KINDS))
def test_msgpack_of_other_shapes_raises_only_wire_error(value: Any, kind: str) -> None:
    refused_or_read(kind, _encode(value))


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    paths = [path]
    if isinstance(value, list):
        for i, item in enumerate(value):
            paths.extend(_paths(item, (*path, i)))
    elif isinstance(value, dict):
        for key, item in value.items():
            paths.extend(_paths(item, (*path, key)))
    return paths


@PROPS
@given(valid=valid_blobs(), data=st.data())
def test_valid_blobs_with_a_value_replaced_raise_only_wire_error(
        valid: tuple[str, bytes], data: st.DataObject) -> None:
    """Near-valid garbage reaches deep into the typed decoders (tags, unions, tuples)."""
    kind, blob = valid
    raw = _untyped.decode(blob)
    for _ in range(data.draw(st.integers(1, 3), label="edits")):
        paths = [p for p in _paths(raw) if p]
        if not paths:
            break
        path = data.draw(st.sampled_from(paths), label="path")
        target = raw
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = data.draw(MSGPACK, label="value")
    refused_or_read(kind, _encode(raw))


@pytest.mark.parametrize("depth", [100, 1_000, 10_000, 200_000])
@pytest.mark.parametrize("kind", KINDS)
def test_deep_nesting_raises_wire_error(kind: str, depth: int) -> None:
    arrays = b"\x91" * depth + b"\xc0"  # [[[...[nil]...]]]
    maps = b"\x81\xa1k" * depth + b"\xc0"  # {"k": {"k": ...}}
    for nested in (arrays, maps):
        for blob in (nested, b"\x92\x01" + nested, b"\x93\x01\xc4\x01c" + nested):
            with pytest.raises(WireError):
                decode(kind, blob)
    # Inside a field typed as a container: ImportDone.tasks, Batch.messages, RoomState.steps.
    deep = {"record": b"\x93\x01\xc4\x01c\x94\xa3imp\xc0" + arrays,
            "batch": b"\x92\x01" + b"\x91" * depth + b"\x90",
            "room": b"\x9f\x01" + arrays}[kind]
    with pytest.raises(WireError):
        decode(kind, deep)


# -- room snapshots of rooms the core built ---------------------------------------------------
CONNS = [("10.0.0.1", "observer", None), ("10.0.0.2", "observer", "device-A"),
         ("10.0.0.3", "socketio", "device-B"), ("10.0.0.3", "socketio", None)]
POOLS = Pools(("<ROOM>",), (2, 3, 4, 1, 5, 0, "<HUGE_INT>"),
              ("<TOKEN:1>", "<TOKEN:2>", "<TOKEN:3>", "A" * 22, None))
PRELUDE: list[tuple[Any, ...]] = [
    ("event", 0, "room/create", {"name": "Teacher"}),
    ("event", 1, "room/join", {"room_id": "<ROOM>", "name": "Ann"}),
    ("event", 2, "room/join", {"room_id": "<ROOM>", "name": "Bob"}),
    ("event", 3, "room/join", {"room_id": "<ROOM>"}),
]
START = 1_700_000_000.0


class Driver:
    """Runs commands on a hub the way the shell would: one session per connection slot;
    a closed or replaced connection's slot gets a new connection (a fresh session)."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.sessions = [Session(ip=ip, framing=framing, device=device)
                         for ip, framing, device in CONNS]
        self.peers: dict[tuple[int, int], int] = {}  # participant -> connection slot
        self.room_id: int | None = None

    def clone(self, hub: Hub) -> Driver:
        other = Driver(hub)
        other.sessions = [Session(ip=s.ip, room_id=s.room_id, user_id=s.user_id,
                                  framing=s.framing, device=s.device) for s in self.sessions]
        other.peers = dict(self.peers)
        other.room_id = self.room_id
        return other

    def resolve(self, name: str) -> Any:
        room = self.hub.rooms.get(self.room_id) if self.room_id is not None else None
        if name == "<ROOM>":
            return self.room_id if self.room_id is not None else 10_000_000
        if name.startswith("<TOKEN:") and room is not None:
            return room.participants[int(name[7:-1])].token  # KeyError: stays a wrong token
        raise KeyError(name)

    def _fresh(self, slot: int) -> None:
        ip, framing, device = CONNS[slot]
        self.sessions[slot] = Session(ip=ip, framing=framing, device=device)

    def _apply(self, actions: list[Any], sender: int | None) -> None:
        for a in actions:
            if isinstance(a, Bind):
                assert sender is not None
                key = (a.room_id, a.user_id)
                old = self.peers.get(key)
                if old is not None and old != sender:
                    self._fresh(old)  # replaced: closed with 4003
                self.peers[key] = sender
                if self.room_id is None:
                    self.room_id = a.room_id
            elif isinstance(a, Unbind):
                for key, slot in list(self.peers.items()):
                    if slot == sender:
                        del self.peers[key]
            elif isinstance(a, Disconnect):
                slot = self.peers.pop((a.room_id, a.user_id), None)
                if slot is not None:
                    self._fresh(slot)
            elif isinstance(a, RoomClosed):
                for uid in a.user_ids:
                    slot = self.peers.pop((a.room_id, uid), None)
                    if slot is not None and slot != sender:
                        self._fresh(slot)

    def _drop(self, slot: int, now: float, seed: bytes) -> tuple[Any, ...]:
        session = self.sessions[slot]
        key = (session.room_id, session.user_id)
        actions: list[Any] = []
        if session.bound and self.peers.get(key) == slot:  # type: ignore[arg-type]
            del self.peers[key]  # type: ignore[arg-type]
            actions = self.hub.disconnect(session, now=now, entropy=SeededEntropy(seed))
            self._apply(actions, None)
        self._fresh(slot)
        return tuple(action_view(a) for a in actions)

    def run(self, command: tuple[Any, ...], index: int) -> tuple[Any, ...]:
        now, seed = START + index * 0.5, index.to_bytes(2, "big")
        kind, slot = command[0], command[1]
        if kind == "drop":
            return self._drop(slot, now, seed)
        if kind == "resume":
            _, _, user_id, last_seq = command
            dropped = self._drop(slot, now, seed)
            raw: dict[str, Any] = {"room_id": "<ROOM>", "user_id": user_id,
                                   "token": f"<TOKEN:{user_id}>"}
            if last_seq is not None:
                raw["last_seq"] = last_seq
            event = "room/rehost" if user_id == 1 else "room/rejoin"
        else:
            _, _, event, raw = command
            dropped = ()
        data = expand(raw, self.resolve)
        outcome = self.hub.handle(self.sessions[slot], event, data, now=now,
                                  entropy=SeededEntropy(seed))
        assert outcome.error is None or outcome.error.code != "internal", (event, raw)
        self._apply(outcome.actions, slot)
        return dropped, outcome_view(outcome)


def commands(events: list[str], max_size: int) -> st.SearchStrategy[list[tuple[Any, ...]]]:
    slot = st.integers(0, len(CONNS) - 1)
    host, student = st.sampled_from([0, 0, 0, 1, 2, 3]), st.sampled_from([1, 2, 3, 1, 2, 3, 0])

    def sender(name: str) -> st.SearchStrategy[int]:  # mostly the role the event is for
        if name in HOST_EVENTS and name not in STUDENT_EVENTS:
            return host
        return student if name in STUDENT_EVENTS and name not in HOST_EVENTS else slot

    event = st.sampled_from(events).flatmap(lambda name: st.tuples(
        st.just("event"), sender(name), st.just(name), payload_for(name, POOLS)))
    join = st.tuples(st.just("event"), st.integers(1, len(CONNS) - 1), st.just("room/join"),
                     payload_for("room/join", POOLS))
    resume = st.integers(1, 5).flatmap(lambda user: st.tuples(  # on its own slot, mostly
        st.just("resume"), st.sampled_from([min(user - 1, 3), min(user - 1, 3), 3]),
        st.just(user), st.sampled_from([None, 0, 2, 5, 10**6])))
    drop = st.tuples(st.just("drop"), slot)
    return st.lists(st.one_of(event, event, event, join, resume, drop), max_size=max_size)


BEFORE = sorted({*HOST_EVENTS, *STUDENT_EVENTS} - {"room/close"})


@settings(deadline=None, max_examples=150,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(before=commands(BEFORE, 40), after=commands(ALL_EVENTS, 20))
def test_a_snapshot_of_a_room_the_core_built_round_trips(
        before: list[tuple[Any, ...]], after: list[tuple[Any, ...]]) -> None:
    hub = Hub(SNAP)
    driver = Driver(hub)
    history = PRELUDE + before
    for i, command in enumerate(history):
        driver.run(command, i)
    assert driver.room_id is not None
    room = hub.rooms[driver.room_id]

    blob = encode_room(room)
    copy = decode_room(blob, SNAP)
    assert room_view(copy, with_cache=False) == room_view(room, with_cache=False)
    assert encode_room(copy) == blob

    # A hub holding the decoded room answers the next events exactly as the original.
    other = Hub(SNAP)
    other.state.adopt_room(copy)
    twin = driver.clone(other)
    for i, command in enumerate(after, start=len(history)):
        assert twin.run(command, i) == driver.run(command, i), command
    for room_id in hub.rooms.keys() | other.rooms.keys():
        assert room_view(other.rooms[room_id], with_cache=False) == room_view(
            hub.rooms[room_id], with_cache=False)
    assert other.state._by_ip == hub.state._by_ip


# -- what a well-typed snapshot may still say -----------------------------------------------
def _no_host_state() -> RoomState:
    """The minimal example hypothesis found: one offline student, no participant 1."""
    student = ParticipantState(user_id=2, name="a", token="t" * 22, is_host=False, online=False,
                               signal="NONE", statuses={}, messages=[], files=[], counter=0,
                               events=[])
    return RoomState(version=FORMAT, room_id=12345678, stats_key="k" * 22, creator_ip="",
                     participants=[student], next_user_id=4, next_message_id=1, sharer=None,
                     steps=[], draft=None, settings=None, exercise="", importing=False,
                     empty_since=None, stats_version=0)


@example(state=_no_host_state())
@settings(deadline=None, max_examples=50)
@given(state=st.builds(
    RoomState, version=st.just(FORMAT), room_id=st.just(12345678), stats_key=st.just("k" * 22),
    creator_ip=st.just(""),
    participants=st.lists(st.builds(
        ParticipantState, user_id=st.integers(1, 3), name=st.sampled_from(["a", "b"]),
        token=st.just("t" * 22), is_host=st.booleans(), online=st.booleans(),
        signal=st.just("NONE"), statuses=st.just({}), messages=st.just([]),
        files=st.just([]), counter=st.integers(0, 3), events=st.just([])), max_size=3),
    next_user_id=st.just(4), next_message_id=st.just(1), sharer=st.none(),
    steps=st.just([]), draft=st.none(), settings=st.none(), exercise=st.just(""),
    importing=st.just(False), empty_since=st.none(), stats_version=st.just(0)))
def test_a_decoded_snapshot_is_refused_or_servable(state: RoomState) -> None:
    """A snapshot this version could not have written must be refused (``WireError``, as
    ``decode_room`` promises) or at least leave a room the core can serve."""
    try:
        room = decode_room(_encode(state), SNAP)
    except WireError:
        return
    hub = Hub(SNAP)
    hub.state.adopt_room(room)
    for uid in list(room.participants):
        for event in ("rtc/config", "message/to_mentor", "message/to_all"):
            session = Session(ip="10.0.0.9", room_id=room.room_id, user_id=uid)
            outcome = hub.handle(session, event, {"content": "hi"}, now=START,
                                 entropy=SeededEntropy(b""))
            assert outcome.error is None or outcome.error.code != "internal", (uid, event)
        hub.disconnect(Session(ip="10.0.0.9", room_id=room.room_id, user_id=uid), now=START,
                       entropy=SeededEntropy(b""))
