"""Random classroom sessions against the sans-IO observer core (hypothesis stateful test).

A ``RuleBasedStateMachine`` plays a few clients against one ``relay.core.hub.Hub``: a teacher
creating rooms, students joining, leaving and being killed, connections dropping (the shell's
``Hub.disconnect``), resumes with ``room/rejoin``/``room/rehost`` and ``last_seq``, and the
events of §6 with payloads that are often malformed (wrong types, huge and negative integers,
deep nesting, missing keys) or sent from the wrong role, unbound or already bound.

Each connection is simulated as a client that records what it would receive, exactly as the
shell (``relay/server/rooms.py``) carries the actions out: a ``Bind`` streams its ``pinned``
events from ``cursor`` and replaces the participant's previous connection, sequenced ``Send``
frames reach the participant's current connection, ``Disconnect``/``RoomClosed`` close it.

The properties are invariants, not per-event expectations (the room rules keep evolving):

- nothing raises out of ``handle``/``disconnect``/``expire``/``import_done`` and no event
  ends in an ``internal`` error (the core logs the exception; it is quoted in the failure);
- a failed event changes nothing: the canonical dump of the hub (rooms, participants,
  statuses, messages, files, steps, settings, sharer, counters, the sender's binding) is the
  same before and after, the failed-join counter aside; it may only add the alerts §6 pairs
  with a failure to the replay buffers (and sends nothing else);
- every participant's sequenced events are numbered 1..n without gaps, and every
  connection receives them contiguously from where it attached (pinned, then live);
- the replay buffer holds exactly the newest events an independent model says it should
  (count and byte bounds), so a resume with ``last_seq`` = the last seq a client processed
  delivers exactly the events it missed, in order, equal to what it would have received
  had it stayed online; §5.2 decides the cursor of every resume;
- replaying the command log on a fresh hub with the same seeds and times gives identical
  rooms, tokens, ids and actions (what the cluster's log replay relies on).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import event as note
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from relay.core.actions import Bind, Counted, Disconnect, Reply, RoomClosed, Send, Unbind
from relay.core.context import Session
from relay.core.hub import Hub, Outcome
from relay.core.ids import SeededEntropy
from relay.core.model import SIGNALS, STATUSES, Room
from relay.core.outgoing import Outgoing
from relay.core.replay import ReplayBuffer
from relay.core.settings import CoreSettings
from relay.core.steps_import import ImportFailure

Key = tuple[int, int]  # (room_id, user_id)
Entry = tuple[str, bytes, int]  # a sequenced event as the client sees it: name, payload, size

TOKEN = re.compile(r"[A-Za-z0-9_-]{22}")
#: §5.1: every event delivered to a participant is sequenced except these.
UNSEQUENCED = frozenset({
    "room/created", "room/join", "room/resync", "rtc/config", "rtc/request", "rtc/allow",
    "rtc/offer", "rtc/answer", "rtc/ice", "rtc/stop",
})


# -- payloads -------------------------------------------------------------------------------
def _deep_list(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


def _deep_dict(depth: int) -> Any:
    value: Any = {}
    for _ in range(depth):
        value = {"a": value}
    return value


#: Stand-ins drawn by name (failure reports stay readable) and expanded when used.
STAND_INS: dict[str, Callable[[], Any]] = {
    "<HUGE_INT>": lambda: 10**400,
    "<NEG_HUGE_INT>": lambda: -(10**300),
    "<INT64>": lambda: 2**63,
    "<TEXT_70K>": lambda: "x" * 70_000,
    "<TEXT_10001>": lambda: "y" * 10_001,
    "<TEXT_33>": lambda: "n" * 33,
    "<TEXT_513>": lambda: "f" * 513,
    "<DEEP_LIST>": lambda: _deep_list(5_000),
    "<DEEP_DICT>": lambda: _deep_dict(5_000),
    "<STEPS_101>": lambda: [
        {"name": f"s{i}", "content": "c", "language": "py", "type": "theory"} for i in range(101)
    ],
}


def expand(value: Any, resolve: Callable[[str], Any] | None = None) -> Any:
    """A fresh payload with the stand-ins replaced (``resolve`` knows context names)."""
    if isinstance(value, str):
        if value.startswith("<") and value.endswith(">"):
            make = STAND_INS.get(value)
            if make is not None:
                return make()
            if resolve is not None:
                try:
                    return resolve(value)
                except KeyError:
                    pass
        return value
    if isinstance(value, list):
        return [expand(v, resolve) for v in value]
    if isinstance(value, dict):
        return {k: expand(v, resolve) for k, v in value.items()}
    return value


JUNK: list[Any] = [
    None, True, False, 0, -1, 1.5, -0.0, "", "x", [], {}, [1, "a"], {"a": {"b": []}},
    "<HUGE_INT>", "<NEG_HUGE_INT>", "<INT64>", "<TEXT_70K>", "<DEEP_LIST>", "<DEEP_DICT>",
]
NAMES: list[Any] = ["Ann", "ann", " Bob ", "Ünï", "ß", "SS", "Host", "", "   ", "<TEXT_33>",
                    "tab\there", None, 5]
VERSIONS: list[Any] = ["1.2.15", "1.2.14", "0.9", "2.0.0", "<TEXT_33>", "", None, 7]
CONTENTS: list[Any] = ["hi", "ünïcödé ✓ 🎉", "x", "", "<TEXT_10001>", 5, None]
FILES_TO_IGNORE: list[Any] = [
    "", "# output\nbuild/\n/dist\n/a/b/\n*.pyc\n.env\n*.pyc\nfoo bar\n~tmp",
    "node_modules/\n*.class",
    "<TEXT_70K>", 3,
]
EXERCISES: list[Any] = ["def f(): ...", "", None, "<TEXT_70K>", 3]
STEP_NAMES: list[Any] = ["a", "B", "T", " a ", "1"]
STATUS_VALUES: list[Any] = ["DONE", *STATUSES, "bogus", 1, None]
MARKDOWN: list[Any] = ["# Task A\nDo X\n---\nB & C", "", "---\n---", "```\ncode", 5]
URLS: list[Any] = ["https://www.notion.so/Page-0123456789abcdef0123456789abcdef", "ftp://x", ""]
FILENAMES: list[Any] = [*["a.py", "dir/b.py", "ü.txt"] * 6, "/abs", "../up", "a\x01b", "",
                        "<TEXT_513>", 3]
FILE_STATUSES: list[Any] = [*["CREATED", "CHANGED", "REMOVED"] * 4, "DELETED", None]
FILE_CONTENTS: list[Any] = [*["print(1)", "", "é" * 20] * 4, None, 4]
SDPS: list[Any] = ["v=0\r\n", "", "<TEXT_70K>", 1]
CANDIDATES: list[Any] = [
    {"candidate": "candidate:1 1 udp 1 1.2.3.4 5 typ host", "sdpMid": "0"}, "cand", "<DEEP_DICT>",
    _deep_list(40), 5, None,
]
SIGNAL_VALUES: list[Any] = ["HELP", *SIGNALS, "ACCEPTED", "nope", 1]

# (The first of each list is what hypothesis draws most: a benign event that always works.)
HOST_EVENTS = [
    "message/to_all", "room/kill", "room/close", "message/to_client", "message/user", "settings",
    "exercise", "exercise/feedback", "exercise/reset", "steps/all", "steps/status/to_client",
    "steps/table", "steps/import", "sharing/start", "sharing/end", "sharing/snapshot",
    "rtc/config", "rtc/allow", "rtc/offer", "rtc/answer", "rtc/ice", "rtc/stop",
]
STUDENT_EVENTS = [
    "message/to_mentor", "room/leave", "signal", "error/from_client", "steps/status/to_mentor",
    "sharing/code_send", "sharing/code_update", "rtc/config", "rtc/request", "rtc/offer",
    "rtc/answer", "rtc/ice", "rtc/stop",
]
UNBOUND_EVENTS = ["room/create", "room/join", "room/rehost", "room/rejoin"]
OTHER_EVENTS = ["ping", "room/log", "nope", ""]
ALL_EVENTS = sorted({*HOST_EVENTS, *STUDENT_EVENTS, *UNBOUND_EVENTS, *OTHER_EVENTS})


@dataclass(frozen=True)
class Pools:
    """Context values a payload may name: rooms, users, tokens (hashable: strategies for
    the same pools are built once)."""

    room_ids: tuple[Any, ...]
    user_ids: tuple[Any, ...]
    tokens: tuple[Any, ...]


LAST_SEQS: list[Any] = [0, 1, 3, 10**6, -1, "<HUGE_INT>"]


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[Any], room_ids: tuple[Any, ...]) -> Any:
    """Mostly ``base``; sometimes junk, a key dropped or retyped, or a ``room_id`` added."""
    value = draw(base)
    if isinstance(value, dict | list):
        value = copy.copy(value)  # never change a value a strategy may hand out again
    how = draw(st.sampled_from(["as_is"] * 10 + ["junk", "drop", "retype", "room_id"]))
    if how == "junk":
        return draw(st.sampled_from(JUNK))
    if isinstance(value, dict):
        keys = sorted(value)
        if how == "drop" and keys:
            del value[draw(st.sampled_from(keys))]
        elif how == "retype" and keys:
            value[draw(st.sampled_from(keys))] = draw(st.sampled_from(JUNK))
        elif how == "room_id":
            value["room_id"] = draw(st.sampled_from(
                [*room_ids, 10_000_000, "12345678", 1.0, True, None, "<HUGE_INT>"]))
    elif isinstance(value, list) and value:
        i = draw(st.integers(0, len(value) - 1))
        if how == "drop":
            del value[i]
        elif how == "retype":
            value[i] = draw(st.sampled_from(JUNK))
    return value


fd, pick = st.fixed_dictionaries, st.sampled_from
_STEP = fd({"name": pick(STEP_NAMES), "content": pick(["print(1)", "x", "", "   ", None]),
            "language": pick(["python", "java"]), "type": pick(["exercise", "theory"])})
_STATUSES = st.dictionaries(pick([*STEP_NAMES, "zzz"]), pick(STATUS_VALUES), max_size=3)
_FILES = fd({"files": st.lists(fd({"filename": pick(FILENAMES), "status": pick(FILE_STATUSES),
                                   "content": pick(FILE_CONTENTS)}), max_size=4)})
_STEPS = st.lists(_STEP, max_size=4, unique_by=lambda item: item["name"].strip())
#: Payloads that name nothing from the context.
FIXED: dict[str, st.SearchStrategy[Any]] = {
    "room/create": fd({}, optional={"name": pick(NAMES)}),
    "room/leave": fd({}),
    "room/close": fd({}),
    "message/to_all": fd({"content": pick(CONTENTS)}),
    "message/to_mentor": fd({"content": pick(CONTENTS)}),
    "settings": fd({"files_to_ignore": pick(FILES_TO_IGNORE)}),
    "exercise": fd({}, optional={"content": pick(EXERCISES)}),
    "exercise/reset": fd({}),
    "error/from_client": fd({}, optional={
        "content": st.one_of(pick(["boom", "", 3]), st.lists(pick(["a", "b", 1]), max_size=3)),
        "path": pick(["Main.java", 4]), "function": pick(["main", None])}),
    "steps/all": st.one_of(_STEPS, _STEPS, _STEPS, st.just("<STEPS_101>")),
    "steps/status/to_mentor": _STATUSES,
    "steps/table": fd({}),
    "steps/import": st.one_of(
        fd({"markdown": pick(MARKDOWN)}), fd({"markdown": pick(MARKDOWN)}),
        fd({"url": pick(URLS)}), fd({"url": pick(URLS), "markdown": pick(MARKDOWN)}),
        st.builds(dict)),
    "sharing/code_send": _FILES,
    "sharing/code_update": _FILES,
    "rtc/config": fd({}),
}
#: Payloads that name users: built from the user pool.
WITH_USER: dict[str, Callable[[st.SearchStrategy[Any]], st.SearchStrategy[Any]]] = {
    "room/kill": lambda uid: fd({"user_id": uid}),
    "message/to_client": lambda uid: fd({"user_id": uid, "content": pick(CONTENTS)}),
    "message/user": lambda uid: fd({"user_id": uid}),
    "exercise/feedback": lambda uid: fd({"user_id": uid,
                                         "accepted": pick([True, False, 1, None])}),
    "signal": lambda uid: fd({"value": pick(SIGNAL_VALUES)}, optional={"user_id": uid}),
    "steps/status/to_client": lambda uid: fd({"user_id": uid, "steps": _STATUSES}),
    "sharing/start": lambda uid: fd({"user_id": uid}),
    "sharing/end": lambda uid: fd({"user_id": uid}),
    "sharing/snapshot": lambda uid: fd({"user_id": uid}),
    "rtc/request": lambda uid: fd({}, optional={"user_id": uid}),
    "rtc/allow": lambda uid: fd({"user_id": uid}),
    "rtc/offer": lambda uid: fd({"sdp": pick(SDPS)}, optional={"user_id": uid}),
    "rtc/answer": lambda uid: fd({"sdp": pick(SDPS)}, optional={"user_id": uid}),
    "rtc/ice": lambda uid: fd({"candidate": pick(CANDIDATES)}, optional={"user_id": uid}),
    "rtc/stop": lambda uid: fd({}, optional={"user_id": uid}),
}


@functools.lru_cache(maxsize=4096)
def payload_for(event: str, pools: Pools) -> st.SearchStrategy[Any]:
    """A payload for ``event``: mostly well-formed, often not (see ``mutated``)."""
    if event in FIXED:
        base = FIXED[event]
    elif event in WITH_USER:
        base = WITH_USER[event](pick(pools.user_ids))
    elif event == "room/join":
        base = fd({"room_id": pick(pools.room_ids)},
                  optional={"name": pick(NAMES), "version": pick(VERSIONS)})
    elif event in ("room/rehost", "room/rejoin"):
        base = fd({"room_id": pick(pools.room_ids), "user_id": pick(pools.user_ids),
                   "token": pick(pools.tokens)}, optional={"last_seq": pick(LAST_SEQS)})
    else:
        base = fd({})
    return mutated(base, pools.room_ids)


# -- canonical views ---------------------------------------------------------------------
def out_view(out: Outgoing) -> tuple[str, bytes]:
    return out.event, out.payload


def action_view(a: Any) -> tuple[Any, ...]:
    if isinstance(a, Send):
        return ("send", a.room_id, a.user_id, *out_view(a.out), a.seq, a.after, a.size)
    if isinstance(a, Reply):
        return ("reply", *out_view(a.out))
    if isinstance(a, Bind):
        return ("bind", a.room_id, a.user_id, a.cursor, a.replay_end,
                tuple(out_view(o) for o in a.pinned))
    fields = getattr(a, "__slots__", ())
    return (type(a).__name__, *(getattr(a, f) for f in fields))


def outcome_view(o: Outcome) -> tuple[Any, ...]:
    error = None if o.error is None else (o.error.code, o.error.message)
    return (tuple(action_view(a) for a in o.actions), error, o.deferred)


def replay_view(r: ReplayBuffer) -> tuple[Any, ...]:
    return (r.counter, r.first_seq, r.bytes, len(r), r.max_events, r.max_bytes,
            tuple(out_view(o) for o in r.events_after(r.first_seq - 1)))


def canon(value: Any, skip: frozenset[str] = frozenset()) -> Any:
    """A comparable copy of core state: every dataclass field (new ones included, so a
    field the snapshot forgets is noticed), dicts in order, scalars with their type."""
    if isinstance(value, Outgoing):
        return ("Outgoing", *out_view(value))
    if isinstance(value, ReplayBuffer):
        return ("ReplayBuffer", replay_view(value))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (type(value).__name__, tuple(
            (f.name, canon(getattr(value, f.name), skip))
            for f in dataclasses.fields(value) if f.name not in skip))
    if isinstance(value, dict):
        return ("dict", tuple((canon(k), canon(v, skip)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return (type(value).__name__, tuple(canon(v, skip) for v in value))
    return (type(value).__name__, value)


def room_view(room: Room, *, with_replay: bool = True, with_cache: bool = True) -> Any:
    """Every field of the room and its participants; without ``replay`` (the buffers)
    and/or ``steps_out`` (a cache of the published steps' encoding) when asked."""
    skip = frozenset(([] if with_replay else ["replay"]) + ([] if with_cache else ["steps_out"]))
    return canon(room, skip)


def hub_view(hub: Hub, *, with_replay: bool = True) -> Any:
    """Everything the hub holds but the failed-join windows."""
    return {
        "rooms": [(rid, room_view(room, with_replay=with_replay))
                  for rid, room in hub.rooms.items()],
        "by_ip": dict(hub.state._by_ip),
    }


def entry_size(event: str, payload: bytes, seq: int) -> int:
    """§5.1: a buffered event is measured as its plain frame {"event":..,"data":..,"seq":n}."""
    return len(b'{"event":%s,"data":%s,"seq":%d}' % (Outgoing(event, None).event_json, payload,
                                                      seq))


def model_first_seq(log: dict[int, Entry], max_events: int, max_bytes: int) -> int:
    """The oldest seq the buffer must hold: the longest suffix within both bounds (>= 1)."""
    n = len(log)
    count = total = 0
    for seq in range(n, 0, -1):
        size = log[seq][2]
        if count + 1 > max_events or (count and total + size > max_bytes):
            break
        count += 1
        total += size
    return n - count + 1


def import_result(ok: bool) -> Any:
    """What the shell feeds back after a Notion fetch: validated tasks, or the failure."""
    if not ok:
        return ImportFailure("could not fetch")
    return [{"name": "1", "content": "<h3>A</h3>", "language": "html", "type": "exercise"}]


class CoreErrors(logging.Handler):
    """Collects what the core logs (an ``internal`` outcome logs its traceback)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(self.format(record))


# -- the simulated clients --------------------------------------------------------------
@dataclass(eq=False)
class Client:
    ip: str
    framing: str = "observer"  # §3: "observer" (plain) or "socketio"
    device: str | None = None  # the device cookie its connections carry (§4.6)
    conns: list[Conn] = field(default_factory=list)  # open, oldest first
    creds: list[tuple[int, int, str]] = field(default_factory=list)  # learned identities
    processed: dict[Key, int] = field(default_factory=dict)  # last seq received
    #: The sequenced events received per participant, contiguous: (base seq, events after it).
    stream: dict[Key, tuple[int, list[tuple[int, str, bytes]]]] = field(default_factory=dict)


@dataclass(eq=False)
class Conn:
    cid: int
    client: Client
    session: Session
    attached: Key | None = None  # the participant whose frames it receives (shell's peers)
    last: int = 0  # seq of the last sequenced event received
    replay_end: int = 0  # of its current Bind
    open: bool = True


IPS = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.3"]  # two clients share an address
FRAMINGS = ["observer", "observer", "socketio"]
DEVICES = [None, "device-A", "device-B"]  # two clients may carry the same cookie
START = 1_700_000_000.0


class CoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.settings = CoreSettings()
        self.hub = Hub(self.settings)
        self.now = START
        self.clients = [Client(ip) for ip in IPS]
        self.conns: dict[int, Conn] = {}
        self.peers: dict[Key, Conn] = {}
        self.plog: dict[Key, dict[int, Entry]] = {}  # everything sequenced to each participant
        self.closed_rooms: list[int] = []
        self.log: list[tuple[Any, ...]] = []  # commands, for the determinism replay
        self.results: dict[int, Any] = {}  # command index -> what it returned
        self.broken = False  # a check failed: teardown must not mask it
        self.errors = CoreErrors()
        logging.getLogger("relay.core").addHandler(self.errors)

    @initialize(replay=st.sampled_from([(4, 100_000), (8, 1500), (1000, 8 << 20)]),
                legacy=st.booleans(), limit=st.sampled_from([2, 20]),
                framings=st.lists(st.sampled_from(FRAMINGS), min_size=len(IPS),
                                  max_size=len(IPS)),
                devices=st.lists(st.sampled_from(DEVICES), min_size=len(IPS),
                                 max_size=len(IPS)))
    def configure(self, replay: tuple[int, int], legacy: bool, limit: int,
                  framings: list[str], devices: list[str | None]) -> None:
        for client, framing, device in zip(self.clients, framings, devices, strict=True):
            client.framing, client.device = framing, device
        self.settings = CoreSettings(
            replay_events=replay[0], replay_bytes=replay[1], legacy_tokenless=legacy,
            join_failure_limit=limit, room_idle_expiry=100.0, max_rooms_per_ip=2)
        self.hub = Hub(self.settings)

    # -- plumbing ------------------------------------------------------------------------
    def _open(self, client: Client) -> Conn:
        cid = len(self.log)
        conn = Conn(cid, client, Session(ip=client.ip, device=client.device,
                                         framing=client.framing))
        self.log.append(("open", cid, client.ip, client.device, client.framing))
        self.conns[cid] = conn
        client.conns.append(conn)
        return conn

    def _close(self, conn: Conn) -> None:
        """The shell closes it (replaced, kicked, room closed, dropped): it is unbound."""
        conn.open = False
        conn.attached = None
        conn.session.room_id = conn.session.user_id = None
        self.conns.pop(conn.cid, None)
        if conn in conn.client.conns:
            conn.client.conns.remove(conn)

    def _logged(self, command: tuple[Any, ...], result: Any) -> None:
        self.results[len(self.log)] = result
        self.log.append(command)

    def _counter(self, key: Key) -> int:
        return len(self.plog.get(key, {}))

    def _internal(self, outcome: Outcome, what: str) -> None:
        if outcome.error is not None and outcome.error.code == "internal":
            raise AssertionError(f"{what} ended in 'internal':\n" + "\n".join(self.errors.texts))

    def _handle(self, conn: Conn, event: str, raw: Any, seed: bytes) -> Outcome:
        self.broken = True
        self.now += 0.25
        data = expand(raw)
        session = conn.session
        binding = (session.room_id, session.user_id)
        before = hub_view(self.hub, with_replay=False)
        counters = {(rid, uid): p.replay.counter for rid, room in self.hub.rooms.items()
                    for uid, p in room.participants.items()}
        resume = self._resume_expectation(event, data)
        socketio = session.framing == "socketio"
        outcome = self.hub.handle(session, event, data, now=self.now, entropy=SeededEntropy(seed))
        self._logged(("handle", conn.cid, event, raw, self.now, seed), outcome_view(outcome))
        self._internal(outcome, f"{event} {raw!r}")
        note(f"{event}: {outcome.error.code if outcome.error else 'ok'}")
        if outcome.error is not None:
            self._check_failure(outcome, before, counters, binding, session)
        self._apply(outcome.actions, conn)
        if outcome.error is None:
            self._check_attach(event, outcome, resume, socketio)
        self._purge()
        self.broken = False
        return outcome

    def _check_failure(self, outcome: Outcome, before: dict[str, Any],
                       counters: dict[Key, int], binding: tuple[Any, Any],
                       session: Session) -> None:
        """§0.1: a failed event changes nothing and sends only the alerts paired with it."""
        added: dict[Key, int] = {}
        for a in outcome.actions:
            if isinstance(a, Send):
                assert a.seq is not None and a.out.event == "alerts", action_view(a)
                key = (a.room_id, a.user_id)
                added[key] = added.get(key, 0) + 1
            else:
                assert isinstance(a, Reply | Counted), action_view(a)
                if isinstance(a, Reply):
                    assert a.out.event == "alerts", action_view(a)
        assert hub_view(self.hub, with_replay=False) == before, outcome.error
        if binding[0] is None or self._exists(binding):
            assert (session.room_id, session.user_id) == binding
        else:  # bound to a room that went away: the core may forget that binding
            assert outcome.error is not None and outcome.error.code in (
                "not_in_room", "already_in_room"), outcome.error
        for rid, room in self.hub.rooms.items():
            for uid, p in room.participants.items():
                key = (rid, uid)
                assert p.replay.counter == counters[key] + added.get(key, 0), key

    def _resume_expectation(self, event: str, data: Any) -> tuple[Key, int, int | None,
                                                                   int] | None:
        """For a rehost/rejoin naming a known participant: (key, counter, last_seq, first)."""
        if event not in ("room/rehost", "room/rejoin") or not isinstance(data, dict):
            return None
        room_id, user_id = data.get("room_id"), data.get("user_id")
        if type(room_id) is not int or type(user_id) is not int:
            return None
        key = (room_id, user_id)
        if key not in self.plog:
            return None
        last_seq = data.get("last_seq")
        first = model_first_seq(self.plog[key], self.settings.replay_events,
                                self.settings.replay_bytes)
        return key, self._counter(key), last_seq if type(last_seq) is int else None, first

    def _check_attach(self, event: str, outcome: Outcome,
                      resume: tuple[Key, int, int | None, int] | None, socketio: bool) -> None:
        """§5.2 decides the cursor: the client's last_seq when everything after it is held
        (a Socket.IO client may be given a fresh attach instead: it carries no seq)."""
        binds = [a for a in outcome.actions if isinstance(a, Bind)]
        if event in UNBOUND_EVENTS:
            assert len(binds) == 1, outcome.actions
        else:
            assert not binds
        if resume is None or not binds:
            return
        key, counter, last_seq, first = resume
        bind = binds[0]
        assert (bind.room_id, bind.user_id) == key
        if last_seq is None:
            expected, mode = counter, "fresh"
        elif last_seq > counter:
            expected, mode = counter, "ahead"
        elif last_seq + 1 >= first:
            expected, mode = last_seq, "replayed"
        else:
            expected, mode = counter, "gap"
        resyncs = [a for a in outcome.actions
                   if isinstance(a, Send) and a.out.event == "room/resync"]
        if socketio and bind.cursor == counter and not resyncs:
            expected, mode = counter, "fresh"
        note(f"resume: {mode}{' (socketio)' if socketio else ''}")
        assert bind.cursor == expected, (mode, bind.cursor, expected)
        assert len(resyncs) == (mode in ("ahead", "gap")), mode

    # -- carrying out the actions as the shell does ----------------------------------------
    def _record(self, key: Key, seq: int, out: Outgoing) -> Entry:
        log = self.plog.setdefault(key, {})
        assert seq == len(log) + 1, f"{key}: seq {seq} after {len(log)}"
        entry = (out.event, out.payload, entry_size(out.event, out.payload, seq))
        assert out.event not in UNSEQUENCED, out.event
        log[seq] = entry
        return entry

    def _deliver(self, conn: Conn, key: Key, seq: int, entry: Entry) -> None:
        assert seq == conn.last + 1, f"connection {conn.cid} got seq {seq} after {conn.last}"
        conn.last = seq
        client = conn.client
        client.processed[key] = seq
        base, events = client.stream.setdefault(key, (seq - 1, []))
        assert base + len(events) + 1 == seq
        events.append((seq, entry[0], entry[1]))

    def _apply(self, actions: list[Any], sender: Conn | None) -> None:
        for a in actions:
            if isinstance(a, Send):
                key = (a.room_id, a.user_id)
                conn = self.peers.get(key)
                if a.seq is not None:
                    entry = self._record(key, a.seq, a.out)
                    assert a.size == entry[2], (a.size, entry)
                    if conn is not None and a.seq > conn.replay_end:
                        self._deliver(conn, key, a.seq, entry)
                else:
                    assert a.out.event in UNSEQUENCED, a.out.event
                    assert 0 <= a.after <= self._counter(key), (a.after, self._counter(key))
                    if conn is not None and a.out.event in ("room/created", "room/join"):
                        data = a.out.data
                        cred = (data["room_id"], data["user_id"], data["token"])
                        assert cred[:2] == key and TOKEN.fullmatch(cred[2])
                        creds = conn.client.creds
                        if cred in creds:
                            creds.remove(cred)
                        creds.append(cred)
                        del creds[:-6]
            elif isinstance(a, Bind):
                self._bind(a, sender)
            elif isinstance(a, Unbind):
                assert sender is not None
                if sender.attached is not None:
                    self.peers.pop(sender.attached, None)
                sender.attached = None
            elif isinstance(a, Disconnect):
                conn = self.peers.pop((a.room_id, a.user_id), None)
                if conn is not None:
                    self._close(conn)
            elif isinstance(a, RoomClosed):
                self.closed_rooms.append(a.room_id)
                for uid in a.user_ids:
                    conn = self.peers.pop((a.room_id, uid), None)
                    if conn is sender and conn is not None:
                        conn.attached = None  # §6.1: the host's connection stays open
                    elif conn is not None:
                        self._close(conn)

    def _bind(self, a: Bind, sender: Conn | None) -> None:
        assert sender is not None and sender.open and sender.attached is None
        key = (a.room_id, a.user_id)
        old = self.peers.get(key)
        if old is not None and old is not sender:
            self._close(old)  # replaced (4003)
        counter = self._counter(key)
        assert 0 <= a.cursor <= counter, (a.cursor, counter)
        assert len(a.pinned) == a.replay_end - a.cursor, (a.cursor, a.replay_end, len(a.pinned))
        log = self.plog.setdefault(key, {})
        entries: list[Entry] = []
        for i, out in enumerate(a.pinned):
            seq = a.cursor + 1 + i
            if seq <= counter:
                # A replayed event is exactly the one the participant was sent back then.
                entry = log[seq]
                assert (out.event, out.payload) == entry[:2], (seq, out, entry)
            else:
                entry = self._record(key, seq, out)
            entries.append(entry)
        self.peers[key] = sender
        sender.attached = key
        sender.last = sender.replay_end = a.cursor
        client = sender.client
        base, events = client.stream.get(key, (a.cursor, []))
        if base + len(events) != a.cursor:
            client.stream[key] = (a.cursor, [])  # not a continuation: a fresh stream
        else:
            client.stream[key] = (base, events)
        for i, entry in enumerate(entries):
            self._deliver(sender, key, a.cursor + 1 + i, entry)
        sender.replay_end = a.replay_end
        assert sender.session.room_id == a.room_id and sender.session.user_id == a.user_id

    def _exists(self, key: tuple[Any, Any]) -> bool:
        room = self.hub.rooms.get(key[0])  # type: ignore[arg-type]
        return room is not None and key[1] in room.participants

    def _purge(self) -> None:
        """Forget the participants the hub forgot (removed students, closed rooms)."""
        rooms = self.hub.rooms
        for key, conn in list(self.peers.items()):
            if not self._exists(key):  # a connection left bound to nothing stays open
                del self.peers[key]
                conn.attached = None
        for key in list(self.plog):
            room = rooms.get(key[0])
            if room is None or key[1] not in room.participants:
                del self.plog[key]
                for client in self.clients:
                    client.processed.pop(key, None)
                    client.stream.pop(key, None)

    def _conn(self, client: Client, pick: int) -> Conn:
        if not client.conns:
            return self._open(client)
        return client.conns[pick % len(client.conns)]

    def _pools(self, conn: Conn | None) -> Pools:
        room_ids: list[Any] = list(self.hub.rooms) * 3 + self.closed_rooms[-1:]
        users: list[Any] = [1, 2, 3]
        if conn is not None and conn.session.room_id in self.hub.rooms:
            room = self.hub.rooms[conn.session.room_id]
            users = [*[p.user_id for p in room.students()] * 3, 1,
                     *range(2, room.next_user_id)]  # removed students too
        tokens: list[Any] = [t for c in self.clients for _, _, t in c.creds]
        return Pools(tuple(room_ids or [10_000_000]), (*users, 0, 99, "<HUGE_INT>"),
                     (*tokens, "A" * 22, "", None))

    # -- rules ------------------------------------------------------------------------------
    # (hypothesis favours the rules with fewer arguments: the four one-argument rules that
    # send events come first, rather than ``tick`` or ``drop``.)
    @rule(data=st.data())
    def send(self, data: st.DataObject) -> None:
        """Any client sends an event on one of its connections (opening one if needed)."""
        who = data.draw(st.integers(0, len(IPS) - 1), label="client")
        client = self.clients[who]
        conn = self._conn(client, data.draw(st.integers(0, 1), label="connection"))
        session = conn.session
        if not session.bound:
            preferred = ["room/join"] if who else ["room/create"]
        elif session.user_id == 1:
            preferred = HOST_EVENTS
        else:
            preferred = STUDENT_EVENTS
        self._send(conn, preferred, data)

    @precondition(lambda self: bool(self.hub.rooms))
    @rule(data=st.data())
    def join(self, data: st.DataObject) -> None:
        """A student client joins a room (on a fresh connection if its own is bound)."""
        client = self.clients[data.draw(st.integers(1, len(IPS) - 1), label="client")]
        conn = next((c for c in client.conns if not c.session.bound), None)
        if conn is None:
            if len(client.conns) >= 2:
                self._drop(client.conns[0], b"")
            conn = self._open(client)
        self._send(conn, ["room/join"], data)

    def _bound(self, host: bool) -> list[Conn]:
        return [c for key, c in sorted(self.peers.items()) if (key[1] == 1) == host]

    @precondition(lambda self: bool(self._bound(host=True)))
    @rule(data=st.data())
    def host_sends(self, data: st.DataObject) -> None:
        """Rooms live longer than most connections: weight the events of bound clients."""
        self._send(data.draw(st.sampled_from(self._bound(host=True)), label="host"),
                   HOST_EVENTS, data)

    @precondition(lambda self: bool(self._bound(host=False)))
    @rule(data=st.data())
    def student_sends(self, data: st.DataObject) -> None:
        self._send(data.draw(st.sampled_from(self._bound(host=False)), label="student"),
                   STUDENT_EVENTS, data)

    def _send(self, conn: Conn, preferred: list[str], data: st.DataObject) -> None:
        seed = data.draw(st.binary(max_size=2), label="seed")
        focused = data.draw(st.integers(0, 9), label="focus") < 8
        event = data.draw(st.sampled_from(preferred if focused else ALL_EVENTS), label="event")
        raw = data.draw(payload_for(event, self._pools(conn)), label="payload")
        self._handle(conn, event, raw, seed)

    @precondition(lambda self: any(c.creds for c in self.clients))
    @rule(data=st.data(), seed=st.binary(max_size=2),
          last=st.sampled_from(["processed", "zero", "processed", "older", "processed", "none",
                                "ahead", "huge", "negative"]),
          token=st.sampled_from(["right"] * 5 + ["wrong", "missing", "other"]),
          swap=st.sampled_from([False] * 9 + [True]))
    def resume(self, data: st.DataObject, seed: bytes, last: str, token: str,
               swap: bool) -> None:
        """A client comes back on a new connection (the old one may still be open)."""
        client = data.draw(st.sampled_from([c for c in self.clients if c.creds]), label="client")
        room_id, user_id, right = data.draw(st.sampled_from(client.creds), label="cred")
        processed = client.processed.get((room_id, user_id), 0)
        last_seq = {"processed": processed, "none": None, "zero": 0,
                    "older": max(0, processed - 2), "ahead": self._counter((room_id, user_id)) + 3,
                    "huge": "<HUGE_INT>", "negative": -1}[last]
        others = [t for c in self.clients for _, _, t in c.creds if t != right] or ["B" * 22]
        tok = {"right": right, "wrong": "A" * 22, "missing": None, "other": others[0]}[token]
        payload: dict[str, Any] = {"room_id": room_id, "user_id": user_id}
        if tok is not None:
            payload["token"] = tok
        if last_seq is not None:
            payload["last_seq"] = last_seq
        event = "room/rehost" if (user_id == 1) != swap else "room/rejoin"
        if len(client.conns) >= 2:
            self._drop(client.conns[0], seed)
        conn = self._open(client)
        self._handle(conn, event, payload, seed)

    def _drop(self, conn: Conn, seed: bytes) -> None:
        """The connection ends (not replaced): the participant goes offline."""
        self.broken = True
        key = conn.attached
        if key is not None and self.peers.get(key) is conn:
            del self.peers[key]
            self.now += 0.25
            assert conn.session.bound
            actions = self.hub.disconnect(conn.session, now=self.now, entropy=SeededEntropy(seed))
            self._logged(("disconnect", conn.cid, self.now, seed),
                         tuple(action_view(a) for a in actions))
            assert not conn.session.bound
            conn.attached = None
            self._apply(actions, None)
            self._purge()
        self._close(conn)
        self.broken = False

    def _sharers(self) -> list[Conn]:
        return [self.peers[(rid, room.sharer)] for rid, room in self.hub.rooms.items()
                if room.sharer is not None and (rid, room.sharer) in self.peers]

    @precondition(lambda self: bool(self._sharers()))
    @rule(data=st.data(), seed=st.binary(max_size=2),
          event=st.sampled_from(["sharing/code_send", "sharing/code_update"]))
    def share_code(self, data: st.DataObject, seed: bytes, event: str) -> None:
        """The current sharer sends its code (rarely reached by ``send`` alone)."""
        conn = data.draw(st.sampled_from(self._sharers()), label="sharer")
        self._handle(conn, event, data.draw(payload_for(event, self._pools(conn))), seed)

    @precondition(lambda self: bool(self.conns))
    @rule(data=st.data(), seed=st.binary(max_size=2))
    def drop(self, data: st.DataObject, seed: bytes) -> None:
        conn = data.draw(st.sampled_from(sorted(self.conns.values(), key=lambda c: c.cid)),
                         label="conn")
        self._drop(conn, seed)

    @rule(dt=st.sampled_from([1.0, 5.0, 30.0, 61.0, 150.0]), expire=st.booleans())
    def tick(self, dt: float, expire: bool) -> None:
        """Time passes; the shell expires idle rooms (§4.5) every second or so."""
        self.broken = True
        self.now += dt
        if not expire:
            self.broken = False
            return
        actions = self.hub.expire(self.now)
        self._logged(("expire", self.now), tuple(action_view(a) for a in actions))
        self._apply(actions, None)
        self._purge()
        limit = self.settings.room_idle_expiry
        for room in self.hub.rooms.values():
            assert room.empty_since is None or self.now - room.empty_since < limit
        self.broken = False

    @precondition(lambda self: any(r.importing for r in self.hub.rooms.values()))
    @rule(data=st.data(), seed=st.binary(max_size=2), ok=st.booleans())
    def import_done(self, data: st.DataObject, seed: bytes, ok: bool) -> None:
        """A Notion import started by ``steps/import {url}`` finishes."""
        self.broken = True
        room_id = data.draw(st.sampled_from(
            sorted(r.room_id for r in self.hub.rooms.values() if r.importing)), label="room")
        self.now += 0.25
        outcome = self.hub.import_done(room_id, import_result(ok), now=self.now,
                                       entropy=SeededEntropy(seed))
        self._logged(("import", room_id, ok, self.now, seed), outcome_view(outcome))
        self._internal(outcome, "import_done")
        assert not self.hub.rooms[room_id].importing
        self._apply(outcome.actions, None)
        self.broken = False

    # -- invariants ------------------------------------------------------------------------
    @invariant()
    def consistent(self) -> None:
        self.broken = True
        s = self.settings
        for key, conn in self.peers.items():
            assert conn.open and conn.attached == key
            assert (conn.session.room_id, conn.session.user_id) == key
        for conn in self.conns.values():
            binding = (conn.session.room_id, conn.session.user_id)
            if conn.session.bound and self._exists(binding):
                assert self.peers.get(binding) is conn  # type: ignore[arg-type]
            else:
                assert conn.attached is None
        for rid, room in self.hub.rooms.items():
            assert room.room_id == rid and 10_000_000 <= rid <= 99_999_999
            assert TOKEN.fullmatch(room.stats_key)
            host = room.participants.get(1)
            assert host is not None and host.is_host
            assert sum(p.is_host for p in room.participants.values()) == 1
            uids = list(room.participants)
            assert uids == sorted(uids) and uids[-1] < room.next_user_id
            names = [p.name.casefold() for p in room.participants.values()]
            assert len(names) == len(set(names)), names
            assert room.sharer is None or (room.sharer in room.participants
                                           and room.sharer != 1)
            published = {step["name"] for step in room.steps}
            online = 0
            for uid, p in room.participants.items():
                key = (rid, uid)
                assert p.user_id == uid and TOKEN.fullmatch(p.token)
                assert 1 <= len(p.name) <= 32 and p.name == p.name.strip()
                assert p.online == (key in self.peers), key
                online += p.online
                assert set(p.statuses) <= published, (p.statuses, published)
                assert all(v in STATUSES for v in p.statuses.values())
                assert p.signal in SIGNALS
                ids = [m["id"] for m in p.messages]
                assert ids == sorted(set(ids)) and all(i < room.next_message_id for i in ids)
                assert len(p.messages) <= 1000
                assert all(f.size == len(f.content.encode()) for f in p.files.values())
                assert p.files_bytes == sum(f.size for f in p.files.values())
                # The replay buffer is exactly the newest events the bounds allow.
                log = self.plog[key]
                first = model_first_seq(log, s.replay_events, s.replay_bytes)
                r = p.replay
                assert r.counter == len(log), (key, r.counter, len(log))
                assert r.first_seq == first, (key, r.first_seq, first)
                held = [out_view(o) for o in r.events_after(first - 1)]
                assert held == [log[i][:2] for i in range(first, len(log) + 1)], key
                assert r.bytes == sum(log[i][2] for i in range(first, len(log) + 1))
            assert (room.empty_since is None) == (online > 0), (room.empty_since, online)
        for client in self.clients:
            for key, (base, events) in client.stream.items():
                log = self.plog[key]
                for i, (seq, name, payload) in enumerate(events):
                    assert seq == base + 1 + i and log[seq][:2] == (name, payload)
        self.broken = False

    def teardown(self) -> None:
        logging.getLogger("relay.core").removeHandler(self.errors)
        if self.broken:
            return
        # Determinism: the same commands, seeds and times give the same rooms and actions.
        hub = Hub(self.settings)
        sessions: dict[int, Session] = {}
        for i, cmd in enumerate(self.log):
            kind = cmd[0]
            result: Any = None
            if kind == "open":
                sessions[cmd[1]] = Session(ip=cmd[2], device=cmd[3], framing=cmd[4])
                continue
            if kind == "handle":
                _, cid, event, raw, now, seed = cmd
                result = outcome_view(hub.handle(
                    sessions[cid], event, expand(raw), now=now, entropy=SeededEntropy(seed)))
            elif kind == "disconnect":
                _, cid, now, seed = cmd
                actions = hub.disconnect(sessions[cid], now=now, entropy=SeededEntropy(seed))
                result = tuple(action_view(a) for a in actions)
            elif kind == "expire":
                result = tuple(action_view(a) for a in hub.expire(cmd[1]))
            else:
                _, room_id, ok, now, seed = cmd
                result = outcome_view(hub.import_done(
                    room_id, import_result(ok), now=now, entropy=SeededEntropy(seed)))
            assert result == self.results[i], f"command {i} {cmd!r} differs on replay"
        assert hub_view(hub) == hub_view(self.hub)


CoreMachine.TestCase.settings = settings(
    max_examples=300, stateful_step_count=60, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.filter_too_much],
)
TestCoreMachine = CoreMachine.TestCase
