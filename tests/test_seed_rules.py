"""Version 2's rules for the seeds' real clients, on the sans-IO core (protocol Appendix E).

§6.5 unpublished step names ignored; §4.5 a restarting plugin; §4.6 the device cookie;
§6.1 ``room/close`` leaves the host's connection open and ``room/update``'s shape per
framing; Appendix C ``last_seq`` ignored on Socket.IO; the cluster snapshot carrying the
new participant fields. The shell's side (cookies, framings over real sockets) is tested
end to end in ``test_socketio_flows.py``.
"""

from __future__ import annotations

from typing import Any

import pytest

from relay.cluster.snapshot import ParticipantState, decode_room, encode_room
from relay.core.actions import Bind, Counted, Reply, RoomClosed, Send, StatsChanged, Unbind
from relay.core.context import Session
from relay.core.hub import Hub, Outcome
from relay.core.ids import SecureEntropy
from relay.core.model import Participant, Room
from relay.core.settings import CoreSettings

WALL = 1741079702.1205
SIO = "socketio"
PLAIN = "observer"
D1 = "AAAAAAAAAAAAAAAAAAAAAA"
D2 = "BBBBBBBBBBBBBBBBBBBBBB"


class World:
    """A hub with one room; sessions carry a framing and maybe a device cookie."""

    def __init__(self, *, legacy: bool = False, host_framing: str = PLAIN,
                 host_device: str | None = None) -> None:
        self.hub = Hub(CoreSettings(legacy_tokenless=legacy, join_failure_limit=1000))
        self.entropy = SecureEntropy()
        self.now = WALL
        self.host = self.session(host_framing, host_device)
        created = self.reply(self.ok(self.host, "room/create", {"name": "Teacher"}),
                             "room/created")
        self.room_id: int = created["room_id"]
        self.host_token: str = created["token"]

    @staticmethod
    def session(framing: str = PLAIN, device: str | None = None, ip: str = "10.0.0.2"
                ) -> Session:
        return Session(ip=ip, device=device, framing=framing)

    def handle(self, session: Session, event: str, data: Any) -> Outcome:
        return self.hub.handle(session, event, data, now=self.now, entropy=self.entropy)

    def ok(self, session: Session, event: str, data: Any) -> Outcome:
        out = self.handle(session, event, data)
        assert out.error is None, (out.error.code, out.error.message) if out.error else None
        return out

    def err(self, session: Session, event: str, data: Any, code: str) -> Outcome:
        out = self.handle(session, event, data)
        assert out.error is not None and out.error.code == code, (
            out.error and (out.error.code, out.error.message))
        return out

    @staticmethod
    def reply(out: Outcome, event: str) -> dict[str, Any]:
        """The unsequenced reply ``event`` of an attach (sent to the bound sender)."""
        found = [a.out.data for a in out.actions
                 if isinstance(a, Send) and a.seq is None and a.out.event == event]
        assert len(found) == 1, out.actions
        return found[0]  # type: ignore[no-any-return]

    def join(self, name: str, framing: str = PLAIN, device: str | None = None,
             **data: Any) -> tuple[Session, dict[str, Any], Outcome]:
        s = self.session(framing, device)
        out = self.ok(s, "room/join", {"room_id": self.room_id, "name": name, **data})
        return s, self.reply(out, "room/join"), out

    def drop(self, session: Session) -> list[Any]:
        return self.hub.disconnect(session, now=self.now, entropy=self.entropy)

    @property
    def room(self) -> Room:
        return self.hub.rooms[self.room_id]

    def p(self, user_id: int) -> Participant:
        return self.room.participants[user_id]


def host_sends(out: Outcome | list[Any], event: str | None = None) -> list[Any]:
    actions = out.actions if isinstance(out, Outcome) else out
    return [a.out.data for a in actions if isinstance(a, Send) and a.user_id == 1
            and (event is None or a.out.event == event)]


def pinned(out: Outcome) -> list[tuple[str, Any]]:
    """The sequenced events an attach streams to the sender (its snapshot)."""
    binds = [a for a in out.actions if isinstance(a, Bind)]
    assert len(binds) == 1
    return [(o.event, o.data) for o in binds[0].pinned]


def users(update: dict[str, Any]) -> list[tuple[int, str]]:
    return [(u["id"], u["status"]) for u in update["users"]]


def step(name: str, kind: str = "exercise") -> dict[str, str]:
    return {"name": name, "content": "c", "language": "html", "type": kind}


# -- §6.5 statuses for names that are not published ---------------------------------------
def test_plugin_T_status_ignored_help_and_done_forwarded() -> None:
    w = World()
    ann, _, _ = w.join("Ann", SIO)
    w.ok(w.host, "steps/all", [step("1"), step("2"), step("theory", "theory")])
    out = w.ok(ann, "steps/status/to_mentor", {"1": "HELP", "2": "DONE", "T": "NONE"})
    assert host_sends(out) == [{"user_id": 2, "steps": {"1": "HELP", "2": "DONE"}}]
    assert w.p(2).statuses == {"1": "HELP", "2": "DONE"}
    # Whatever the value of an unpublished name: no invalid_payload, no forbidden.
    for junk in ("T", "ACCEPTED", None, 3, ["DONE"], {"x": 1}):
        out = w.ok(ann, "steps/status/to_mentor", {"1": "DONE", "2": "DONE", "T": junk})
        assert w.p(2).statuses == {"1": "DONE", "2": "DONE"}
    # Only unpublished names: nothing changes, nothing is forwarded, no stats change.
    version = w.room.stats_version
    out = w.ok(ann, "steps/status/to_mentor", {"T": "T", "9": "DONE"})
    assert out.actions == [] and w.room.stats_version == version
    assert "T" not in w.p(2).statuses


def test_published_names_keep_their_rules() -> None:
    w = World()
    ann, _, _ = w.join("Ann")
    w.ok(w.host, "steps/all", [step("1"), step("2")])
    w.err(ann, "steps/status/to_mentor", {"1": "T", "T": "T"}, "invalid_payload")
    w.err(ann, "steps/status/to_mentor", {"1": "done"}, "invalid_payload")
    w.err(ann, "steps/status/to_mentor", {"2": "ACCEPTED", "T": "DONE"}, "forbidden")
    w.err(ann, "steps/status/to_mentor", ["1"], "invalid_payload")
    assert w.p(2).statuses == {}
    # A step stored as ACCEPTED keeps it; ACCEPTED may be repeated for it.
    w.ok(w.host, "steps/status/to_client", {"user_id": 2, "steps": {"1": "ACCEPTED"}})
    out = w.ok(ann, "steps/status/to_mentor", {"1": "ACCEPTED", "2": "HELP", "T": "x"})
    assert host_sends(out) == [{"user_id": 2, "steps": {"1": "ACCEPTED", "2": "HELP"}}]
    # steps/status/to_client (from the host) still requires published names.
    w.err(w.host, "steps/status/to_client", {"user_id": 2, "steps": {"T": "DONE"}},
          "invalid_payload")


def test_unpublishing_then_reporting_ignores_the_old_name() -> None:
    w = World()
    ann, _, _ = w.join("Ann")
    w.ok(w.host, "steps/all", [step("1")])
    w.ok(ann, "steps/status/to_mentor", {"1": "DONE"})
    w.ok(w.host, "steps/all", [step("2")])
    assert w.p(2).statuses == {}
    assert w.ok(ann, "steps/status/to_mentor", {"1": "DONE"}).actions == []


# -- §4.5 a restarting plugin ---------------------------------------------------------------
def plugin_with_state(w: World, framing: str = SIO, device: str | None = None
                      ) -> tuple[Session, dict[str, Any]]:
    """Student Ann (id 2): sharing, with statuses and messages, then offline."""
    ann, joined, _ = w.join("Ann", framing, device, version="1.2.9")
    w.ok(w.host, "steps/all", [step("1"), step("2")])
    w.ok(w.host, "sharing/start", {"user_id": 2})
    w.ok(ann, "steps/status/to_mentor", {"1": "HELP"})
    w.ok(ann, "message/to_mentor", {"content": "help"})
    w.ok(w.host, "message/to_client", {"user_id": 2, "content": "coming"})
    w.ok(ann, "sharing/code_send", {"files": [
        {"filename": "a.py", "status": "CREATED", "content": "x"}]})
    w.drop(ann)
    assert not w.p(2).online and w.p(2).framing == framing and w.p(2).device == device
    return ann, joined


def test_restarted_plugin_without_cookie_replaces_the_offline_student() -> None:
    w = World(host_framing=SIO)
    _, old = plugin_with_state(w)
    restarted = w.session(SIO)  # the plugin keeps no cookies
    out = w.ok(restarted, "room/join", {"room_id": w.room_id, "name": "ann", "version": "1.2.9"})
    new = w.reply(out, "room/join")
    assert new["user_id"] == 3 and new["token"] != old["token"]
    assert (restarted.room_id, restarted.user_id) == (w.room_id, 3)
    # The host: the removal (as room/leave) first, then the join; on Socket.IO neither
    # lists the offline student that is gone.
    updates = host_sends(out, "room/update")
    assert [users(u) for u in updates] == [[(1, "online")], [(1, "online"), (3, "online")]]
    assert updates[1]["users"][1]["name"] == "ann"
    # The new student is a new one: a plain student snapshot and the outdated-plugin alert.
    assert [e for e, _ in pinned(out)] == ["steps/all", "alerts"]
    assert [type(a) for a in out.actions].count(StatsChanged) == 2
    # Nothing of the old student is left.
    assert 2 not in w.room.participants and w.room.sharer is None
    assert w.p(3).statuses == {} and w.p(3).messages == [] and w.p(3).files == {}
    w.err(w.session(SIO), "room/rejoin", {"room_id": w.room_id, "user_id": 2,
                                          "token": old["token"]}, "user_not_found")
    w.err(w.host, "message/to_client", {"user_id": 2, "content": "x"}, "user_not_found")


def test_restarted_plugin_with_the_bound_cookie_is_reattached() -> None:
    w = World(host_framing=SIO)
    _, old = plugin_with_state(w, device=D1)
    back = w.session(SIO, D1)
    out = w.ok(back, "room/join", {"room_id": w.room_id, "name": "ANN", "version": "1.2.9"})
    # As room/rejoin without last_seq: same id and token, the student snapshot, no alert.
    assert w.reply(out, "room/join") == old
    assert [e for e, _ in pinned(out)] == [
        "steps/all", "steps/status/to_client", "sharing/start", "message/to_client"]
    assert [users(u) for u in host_sends(out, "room/update")] == [[(1, "online"),
                                                                   (2, "online")]]
    assert w.room.sharer == 2 and w.p(2).messages and w.p(2).files
    assert Counted("resumes", "fresh") in out.actions


def test_another_cookie_does_not_reattach() -> None:
    w = World()
    plugin_with_state(w, device=D1)
    _, new, _ = w.join("Ann", SIO, D2)
    assert new["user_id"] == 3 and 2 not in w.room.participants
    assert w.p(3).device == D2


def test_the_joiners_framing_does_not_matter_only_the_students() -> None:
    w = World()
    plugin_with_state(w, SIO)
    _, new, _ = w.join("Ann", PLAIN)
    assert new["user_id"] == 3 and w.p(3).framing == PLAIN


@pytest.mark.parametrize("device", [None, D1])
def test_offline_plain_student_keeps_its_name(device: str | None) -> None:
    w = World()
    ann, _, _ = w.join("Ann", PLAIN, device)
    w.drop(ann)
    for framing in (SIO, PLAIN):
        out = w.err(w.session(framing, device), "room/join",
                    {"room_id": w.room_id, "name": "ANN"}, "name_taken")
        assert [type(a) for a in out.actions] == [Reply]
    assert w.room.participants.keys() == {1, 2}


@pytest.mark.parametrize("device", [None, D1])
def test_online_student_and_host_keep_their_names(device: str | None) -> None:
    w = World(host_framing=SIO, host_device=D1)
    w.join("Ann", SIO, D1)
    w.err(w.session(SIO, device), "room/join", {"room_id": w.room_id, "name": "ann"},
          "name_taken")
    w.drop(w.host)
    w.err(w.session(SIO, device), "room/join", {"room_id": w.room_id, "name": "teacher"},
          "name_taken")
    assert w.room.participants.keys() == {1, 2}


def test_failed_join_removes_nobody() -> None:
    w = World()
    ann, _, _ = w.join("Ann", SIO)
    w.drop(ann)
    w.err(w.session(SIO), "room/join", {"room_id": w.room_id, "name": "Ann", "version": 3},
          "invalid_payload")
    w.err(w.session(SIO), "room/join", {"room_id": w.room_id + 1, "name": "Ann"},
          "room_not_found")
    assert 2 in w.room.participants


def test_replaced_student_that_was_the_last_online_keeps_the_room() -> None:
    w = World()
    ann, _, _ = w.join("Ann", SIO)
    w.drop(w.host)
    w.drop(ann)
    assert w.room.empty_since == WALL
    w.join("Ann", SIO)
    assert w.room.empty_since is None and w.room.participants.keys() == {1, 3}


def test_legacy_mode_keeps_reattaching_any_offline_student() -> None:
    w = World(legacy=True)
    for framing in (PLAIN, SIO):
        ann, joined, _ = w.join(f"Ann-{framing}", framing)
        w.drop(ann)
        _, again, _ = w.join(f"ANN-{framing}", SIO)
        assert again == joined


# -- §4.6 the device cookie -----------------------------------------------------------------
def test_tokenless_rehost_with_the_bound_cookie() -> None:
    w = World(host_framing=SIO, host_device=D1)
    assert w.p(1).device == D1
    w.drop(w.host)
    reload = w.session(SIO, D1)
    out = w.ok(reload, "room/rehost", {"room_id": w.room_id, "user_id": 1})
    assert reload.user_id == 1 and any(isinstance(a, Bind) for a in out.actions)
    # Without the cookie, or with another: bad_token (and counted as a failed join).
    for device in (None, D2):
        w.err(w.session(SIO, device), "room/rehost", {"room_id": w.room_id, "user_id": 1},
              "bad_token")
    assert w.hub.state.join_failures.blocked("10.0.0.2", w.now) is False
    assert len(w.hub.state.join_failures) == 1  # counted for the address


def test_tokenless_rejoin_with_the_bound_cookie() -> None:
    w = World()
    ann, joined, _ = w.join("Ann", SIO, D1)
    w.drop(ann)
    w.err(w.session(SIO), "room/rejoin", {"room_id": w.room_id, "user_id": 2}, "bad_token")
    out = w.ok(w.session(SIO, D1), "room/rejoin", {"room_id": w.room_id, "user_id": 2})
    assert w.reply(out, "room/join") == joined
    # The role is checked after the token: a student's cookie does not make it the host.
    w.err(w.session(SIO, D1), "room/rehost", {"room_id": w.room_id, "user_id": 2},
          "forbidden")


def test_a_present_token_must_match_cookie_or_not() -> None:
    w = World(host_device=D1)
    for token in ("x" * 22, "", "wrong"):
        w.err(w.session(PLAIN, D1), "room/rehost",
              {"room_id": w.room_id, "user_id": 1, "token": token}, "bad_token")
    w.ok(w.session(PLAIN), "room/rehost",
         {"room_id": w.room_id, "user_id": 1, "token": w.host_token})


def test_latest_attach_wins() -> None:
    w = World(host_device=D1)
    # Re-attached (with its token) from another browser: bound to that one now.
    w.ok(w.session(PLAIN, D2), "room/rehost",
         {"room_id": w.room_id, "user_id": 1, "token": w.host_token})
    assert w.p(1).device == D2
    w.err(w.session(PLAIN, D1), "room/rehost", {"room_id": w.room_id, "user_id": 1},
          "bad_token")
    # Re-attached by a connection carrying no cookie: bound to none.
    w.ok(w.session(PLAIN), "room/rehost",
         {"room_id": w.room_id, "user_id": 1, "token": w.host_token})
    assert w.p(1).device is None
    for device in (D1, D2, None):
        w.err(w.session(PLAIN, device), "room/rehost", {"room_id": w.room_id, "user_id": 1},
              "bad_token")


def test_every_attach_records_device_and_framing() -> None:
    w = World(host_framing=SIO, host_device=D1)
    assert (w.p(1).device, w.p(1).framing) == (D1, SIO)
    _, joined, _ = w.join("Ann", SIO, D2)
    assert (w.p(2).device, w.p(2).framing) == (D2, SIO)
    w.ok(w.session(PLAIN), "room/rejoin", {"room_id": w.room_id, "user_id": 2,
                                           "token": joined["token"]})  # replaces ann
    assert (w.p(2).device, w.p(2).framing) == (None, PLAIN)
    w.ok(w.session(SIO, D1), "room/rehost", {"room_id": w.room_id, "user_id": 1})
    assert (w.p(1).device, w.p(1).framing) == (D1, SIO)


def test_legacy_mode_needs_no_cookie() -> None:
    w = World(legacy=True, host_device=D1)
    w.ok(w.session(PLAIN), "room/rehost", {"room_id": w.room_id, "user_id": 1})
    w.err(w.session(PLAIN, D1), "room/rehost",
          {"room_id": w.room_id, "user_id": 1, "token": "x" * 22}, "bad_token")


# -- §6.1 room/close --------------------------------------------------------------------------
def test_close_leaves_the_host_unbound_and_closes_the_students() -> None:
    w = World(host_framing=SIO)
    ann, _, _ = w.join("Ann", SIO)
    bob, _, _ = w.join("Bob", PLAIN)
    cid, _, _ = w.join("Cid", SIO)
    w.drop(bob)
    out = w.ok(w.host, "room/close", {"room_id": w.room_id})
    kinds = [type(a) for a in out.actions]
    assert kinds == [Send, Send, Unbind, RoomClosed, StatsChanged]
    closed = [(a.user_id, a.out.event, a.out.data) for a in out.actions if isinstance(a, Send)]
    assert closed == [(2, "room/closed", {"message": "Room closed!"}),
                      (4, "room/closed", {"message": "Room closed!"})]
    [room_closed] = [a for a in out.actions if isinstance(a, RoomClosed)]
    assert room_closed == RoomClosed(w.room_id, (2, 3, 4))  # students only, not the host
    assert not w.host.bound and w.room_id not in w.hub.rooms
    assert not w.hub.state.room_cap_reached("10.0.0.2")
    # The same connection creates the next room; the closed room is gone for good.
    w.err(w.host, "steps/table", {}, "not_in_room")
    out = w.ok(w.host, "room/create", {"name": "Teacher"})
    created = w.reply(out, "room/created")
    assert created["room_id"] != w.room_id and created["user_id"] == 1
    assert w.host.room_id == created["room_id"]
    for s in (ann, cid):
        w.err(s, "message/to_mentor", {"content": "x"}, "not_in_room")
    w.err(w.session(SIO), "room/join", {"room_id": w.room_id, "name": "Zed"},
          "room_not_found")


def test_close_then_join_another_room_as_student() -> None:
    w = World()
    other = w.session(ip="10.0.0.3")
    second = w.reply(w.ok(other, "room/create", {}), "room/created")["room_id"]
    out = w.ok(w.host, "room/close", {})
    assert [type(a) for a in out.actions] == [Unbind, RoomClosed, StatsChanged]
    out = w.ok(w.host, "room/join", {"room_id": second, "name": "Former host"})
    assert w.reply(out, "room/join")["user_id"] == 2 and w.host.room_id == second


def test_idle_expiry_still_closes_everyone() -> None:
    w = World()
    ann, _, _ = w.join("Ann")
    w.drop(w.host)
    w.drop(ann)
    assert w.hub.expire(WALL + 1.0) == []
    [closed, _] = w.hub.expire(WALL + w.hub.settings.room_idle_expiry)
    assert closed == RoomClosed(w.room_id, (1, 2), "expired")


# -- §6.1 room/update per framing -------------------------------------------------------------
@pytest.mark.parametrize("framing", [SIO, PLAIN])
def test_room_update_shape_follows_the_hosts_framing(framing: str) -> None:
    w = World(host_framing=framing)
    ann, _, _ = w.join("Ann", SIO)
    _, _, out = w.join("Bob", PLAIN)
    assert [users(u) for u in host_sends(out, "room/update")] == [
        [(1, "online"), (2, "online"), (3, "online")]]
    update = host_sends(w.drop(ann), "room/update")[0]
    if framing == SIO:
        assert users(update) == [(1, "online"), (3, "online")]
    else:
        assert users(update) == [(1, "online"), (2, "offline"), (3, "online")]
        assert update["users"][1] == {"id": 2, "name": "Ann", "role": "client",
                                      "status": "offline", "steps": {}, "signal": "NONE"}
    # steps/table lists everyone whatever the framing.
    table = host_sends(w.ok(w.host, "steps/table", {}), "steps/table")[0]
    assert [(r["user_id"], r["status"]) for r in table] == [(2, "offline"), (3, "online")]


def test_room_update_shape_changes_with_the_hosts_reattach() -> None:
    w = World(host_framing=PLAIN)
    ann, _, _ = w.join("Ann")
    w.drop(ann)
    w.drop(w.host)
    out = w.ok(w.session(SIO), "room/rehost",
               {"room_id": w.room_id, "user_id": 1, "token": w.host_token})
    [update] = [d for e, d in pinned(out) if e == "room/update"]
    assert users(update) == [(1, "online")]
    out = w.ok(w.session(PLAIN), "room/rehost",
               {"room_id": w.room_id, "user_id": 1, "token": w.host_token})
    [update] = [d for e, d in pinned(out) if e == "room/update"]
    assert users(update) == [(1, "online"), (2, "offline")]


def test_offline_host_keeps_its_shape() -> None:
    w = World(host_framing=SIO)
    ann, _, _ = w.join("Ann")
    w.join("Bob")
    w.drop(w.host)
    update = host_sends(w.drop(ann), "room/update")[0]
    assert users(update) == [(1, "offline"), (3, "online")]


# -- Appendix C: a last_seq on Socket.IO is ignored -----------------------------------------
def test_socketio_last_seq_is_ignored() -> None:
    w = World(host_framing=SIO)
    ann, joined, _ = w.join("Ann", SIO)
    w.drop(ann)
    w.ok(w.host, "message/to_client", {"user_id": 2, "content": "x"})
    counter = w.p(2).replay.counter
    out = w.ok(w.session(SIO), "room/rejoin", {**joined, "last_seq": counter - 1})
    assert Counted("resumes", "fresh") in out.actions
    out = w.ok(w.session(PLAIN), "room/rejoin", {**joined, "last_seq": w.p(2).replay.counter})
    assert Counted("resumes", "replayed") in out.actions
    out = w.ok(w.session(SIO), "room/rehost",
               {"room_id": w.room_id, "user_id": 1, "token": w.host_token, "last_seq": 10**6})
    assert Counted("resumes", "fresh") in out.actions
    assert not any(a.out.event == "room/resync" for a in out.actions if isinstance(a, Send))


# -- the cluster snapshot carries the new fields --------------------------------------------
def test_snapshot_round_trip_keeps_device_and_framing() -> None:
    w = World(host_framing=SIO, host_device=D1)
    w.join("Ann", SIO)
    w.join("Bob", PLAIN, D2)
    room = decode_room(encode_room(w.room), w.hub.settings)
    assert [(p.user_id, p.device, p.framing) for p in room.participants.values()] == [
        (1, D1, SIO), (2, None, SIO), (3, D2, PLAIN)]


def test_snapshot_written_without_the_new_fields_still_decodes() -> None:
    import msgspec

    old = msgspec.msgpack.encode([2, "Ann", "t" * 22, False, True, "NONE", {}, [], [], 0, []])
    state = msgspec.msgpack.decode(old, type=ParticipantState)
    assert (state.device, state.framing) == (None, "observer")
