"""Every row of §9.10's table: exact payloads, exact recipients, exact order."""

from __future__ import annotations

from relay.chat import Directory, Emit, SeededEntropy
from tests.test_chat_helpers import GROUP_ID, USER_ID, Chat, ScriptedEntropy, flat, only_fail


def contact(person: dict[str, str], group: dict[str, dict[str, str]]) -> dict[str, object]:
    return {"person": {uid: {uid: name} for uid, name in person.items()}, "group": group}


# ------------------------------------------------------------------------- login


def test_login_success_answers_then_contact_to_logged_in_only() -> None:
    c = Chat()
    c.send("stranger", "message", {})  # connected, never logged in
    actions = c.send("s1", "login", {"username": "  Alice "})
    uid = actions[0].data["userid"]  # type: ignore[union-attr]
    assert USER_ID.fullmatch(uid) and uid != "s1"
    assert actions == [
        Emit(("s1",), "login-response", {"username": "Alice", "result": "success", "userid": uid}),
        Emit(("s1",), "contact", contact({uid: "Alice"}, {})),
    ]
    actions = c.send("s2", "login", {"username": "Bob", "extra": [1, 2]})
    bob = actions[0].data["userid"]  # type: ignore[union-attr]
    assert bob != uid
    assert actions == [
        Emit(("s2",), "login-response", {"username": "Bob", "result": "success", "userid": bob}),
        Emit(("s1", "s2"), "contact", contact({uid: "Alice", bob: "Bob"}, {})),
    ]
    assert c.d.user_count == 2 and c.d.is_chat_session("s1") and not c.d.is_chat_session("stranger")


def test_login_duplicate_is_case_insensitive_and_changes_nothing() -> None:
    c = Chat()
    alice = c.login("s1", "Alice")
    before = c.d.snapshot()
    for name in ("Alice", " alice", "ALICE"):
        actions = c.send("s2", "login", {"username": name})
        answer = {"username": name.strip(), "result": "duplicate", "userid": None}
        assert actions == [Emit(("s2",), "login-response", answer)]
    # casefold, not lower: "STRASSE" and "straße" are the same name
    c.login("s3", "straße")
    assert c.send("s4", "login", {"username": "STRASSE"})[0].data["result"] == "duplicate"  # type: ignore[union-attr]
    assert c.d.user_id("s2") is None and c.d.is_chat_session("s2")
    assert before["users"] == [(alice, "Alice", "s1", [])]


def test_duplicate_for_a_logged_in_session_names_its_own_id_and_keeps_its_name() -> None:
    c = Chat()
    c.login("s1", "Alice")
    bob = c.login("s2", "Bob")
    actions = c.send("s2", "login", {"username": "alice"})
    assert actions == [
        Emit(("s2",), "login-response", {"username": "alice", "result": "duplicate", "userid": bob})
    ]
    assert c.d.contact_payload()["person"][bob] == {bob: "Bob"}


def test_login_invalid_names() -> None:
    c = Chat()
    bad = ["", "   ", "x" * 33, " " + "y" * 33, "tab\there", "line\nbreak", "\u200b", "nul\x00"]
    for name in bad:
        actions = c.send("s1", "login", {"username": name})
        answer = {"username": name.strip(), "result": "invalid", "userid": None}
        assert actions == [Emit(("s1",), "login-response", answer)], name
    assert c.d.user_count == 0 and c.d.is_chat_session("s1")
    # limits are inclusive: 1 and 32 characters, counted after trimming, in code points
    assert c.login("s2", "  " + "z" * 32 + "  ")
    assert c.login("s3", "q")
    assert c.login("s4", "😀" * 32)
    assert c.login("s5", "two  words")


def test_invalid_login_of_a_logged_in_session_keeps_it_logged_in() -> None:
    c = Chat()
    uid = c.login("s1", "Alice")
    actions = c.send("s1", "login", {"username": ""})
    answer = {"username": "", "result": "invalid", "userid": None}
    assert actions == [Emit(("s1",), "login-response", answer)]
    assert c.d.user_id("s1") == uid


def test_login_again_renames_and_keeps_the_id() -> None:
    c = Chat()
    alice = c.login("s1", "Alice")
    bob = c.login("s2", "Bob")
    gid = c.group("s1", alice, bob)
    actions = c.send("s1", "login", {"username": "Alicia"})
    assert actions == [
        Emit(
            ("s1",), "login-response", {"username": "Alicia", "result": "success", "userid": alice}
        ),
        Emit(
            ("s1", "s2"),
            "contact",
            contact({alice: "Alicia", bob: "Bob"}, {gid: {alice: "Alicia", bob: "Bob"}}),
        ),
    ]
    # the old name is free again, the new one is taken
    assert c.login("s3", "alice")
    assert c.send("s3", "login", {"username": "ALICIA"})[0].data["result"] == "duplicate"  # type: ignore[union-attr]


def test_login_again_with_the_same_name_answers_success_and_a_contact_to_the_sender() -> None:
    c = Chat()
    alice = c.login("s1", "Alice")
    c.login("s2", "Bob")
    actions = c.send("s1", "login", {"username": " Alice"})
    assert actions == [
        Emit(
            ("s1",), "login-response", {"username": "Alice", "result": "success", "userid": alice}
        ),
        Emit(("s1",), "contact", c.d.contact_payload()),
    ]
    # a change of case is a rename: everyone hears of it
    actions = c.send("s1", "login", {"username": "ALICE"})
    assert actions[1] == Emit(("s1", "s2"), "contact", c.d.contact_payload())
    assert c.d.contact_payload()["person"][alice] == {alice: "ALICE"}


def test_full_directory_refuses_new_users_but_not_renames() -> None:
    c = Chat(Directory(max_users=2))
    c.login("s1", "A")
    c.login("s2", "B")
    only_fail(c.send("s3", "login", {"username": "C"}), "too_large", "s3", "login")
    assert not c.d.is_chat_session("s3")
    # the capacity check comes before the duplicate check
    only_fail(c.send("s3", "login", {"username": "a"}), "too_large", "s3", "login")
    assert c.login("s2", "Bee")
    # invalid names are still answered as invalid when full
    assert c.send("s3", "login", {"username": ""})[0].data["result"] == "invalid"  # type: ignore[union-attr]
    c.drop("s1")
    assert c.login("s3", "C")


def test_user_id_is_redrawn_on_collision_with_a_user_or_a_session_key() -> None:
    taken = b"\x00" * 15  # -> "AAAAAAAAAAAAAAAAAAAA"
    session_like = b"\xff" * 15  # -> "____________________"
    fresh = b"\x01" * 15
    c = Chat()
    c.entropy = ScriptedEntropy([taken, taken, session_like, session_like, fresh])  # type: ignore[assignment]
    first = c.login("s1", "A")
    assert first == "A" * 20
    second = c.login("_" * 20, "B")  # the session's own key must not become its id
    third = c.login("s3", "C")
    assert second == "AQEB" * 5
    assert third not in {first, second, "_" * 20}
    assert USER_ID.fullmatch(third)


# ----------------------------------------------------------------------- message


def test_direct_message_reaches_the_receiver_only() -> None:
    c = Chat()
    alice = c.login("s1", "Alice")
    bob = c.login("s2", "Bob")
    c.login("s3", "Carol")
    data = {"sender": alice, "receiver": bob, "message": " hi <b>&", "extra": {"x": 1}}
    actions = c.send("s1", "message", data)
    assert actions == [
        Emit(("s2",), "message", {"sender": alice, "receiver": bob, "message": " hi <b>&"})
    ]


def test_group_message_reaches_the_other_members_in_joining_order() -> None:
    c = Chat()
    a, b, cc, d = (c.login(f"s{i}", n) for i, n in enumerate("ABCD", 1))
    gid = c.group("s2", b, d, a)
    actions = c.send("s4", "message", {"sender": d, "receiver": gid, "message": "x" * 10_000})
    assert actions == [
        Emit(("s2", "s1"), "message", {"sender": d, "receiver": gid, "message": "x" * 10_000})
    ]
    assert cc not in flat(actions)[0]


def test_message_limits() -> None:
    c = Chat()
    a = c.login("s1", "A")
    b = c.login("s2", "B")
    only_fail(
        c.send("s1", "message", {"sender": a, "receiver": b, "message": ""}),
        "invalid_payload",
        "s1",
        "message",
    )
    only_fail(
        c.send("s1", "message", {"sender": a, "receiver": b, "message": "x" * 10_001}),
        "too_large",
        "s1",
        "message",
    )
    # characters are code points: 10,000 emoji (40,000 bytes) are allowed
    assert len(c.send("s1", "message", {"sender": a, "receiver": b, "message": "😀" * 10_000})) == 1
    only_fail(
        c.send("s1", "message", {"sender": a, "receiver": b, "message": "bad \ud800"}),
        "invalid_payload",
        "s1",
        "message",
    )


def test_message_to_oneself_or_to_nobody() -> None:
    c = Chat()
    a = c.login("s1", "A")
    only_fail(
        c.send("s1", "message", {"sender": a, "receiver": a, "message": "m"}),
        "user_not_found",
        "s1",
        "message",
    )
    gone = c.login("s2", "B")
    c.drop("s2")
    only_fail(
        c.send("s1", "message", {"sender": a, "receiver": gone, "message": "m"}),
        "user_not_found",
        "s1",
        "message",
    )
    only_fail(
        c.send("s1", "message", {"sender": a, "receiver": "0123456789", "message": "m"}),
        "group_not_found",
        "s1",
        "message",
    )
    only_fail(
        c.send("s1", "message", {"sender": a, "receiver": "", "message": "m"}),
        "group_not_found",
        "s1",
        "message",
    )


# ------------------------------------------------------------------------ groups


def test_create_group_uses_the_directory_names_and_sender_first() -> None:
    c = Chat()
    a = c.login("s1", "Alice")
    b = c.login("s2", "Bob")
    c.login("s3", "Carol")
    member = {b: "<script>Mallory</script>", a: None}  # names and value types are ignored
    actions = c.send("s1", "create_group", {"sender": a, "member": member})
    gid = actions[0].data["groupid"]  # type: ignore[union-attr]
    assert GROUP_ID.fullmatch(gid)
    view = {a: "Alice", b: "Bob"}
    assert list(actions[0].data["member"]) == [a, b]  # type: ignore[union-attr]
    assert actions == [
        Emit(("s1", "s2"), "update_group", {"groupid": gid, "member": view}),
        Emit(("s1", "s2", "s3"), "contact", c.d.contact_payload()),
    ]
    assert c.d.contact_payload()["group"] == {gid: view}
    assert c.d.group_count == 1


def test_create_group_without_the_sender_in_member_and_size_limits() -> None:
    c = Chat(Directory(max_members=3, max_groups=1))
    a, b, cc, d = (c.login(f"s{i}", n) for i, n in enumerate("ABCD", 1))
    only_fail(
        c.send("s1", "create_group", {"sender": a, "member": {}}),
        "invalid_payload",
        "s1",
        "create_group",
    )
    only_fail(
        c.send("s1", "create_group", {"sender": a, "member": {a: "A"}}),
        "invalid_payload",
        "s1",
        "create_group",
    )
    four = {b: "", cc: "", d: ""}
    only_fail(
        c.send("s1", "create_group", {"sender": a, "member": four}),
        "too_large",
        "s1",
        "create_group",
    )
    actions = c.send("s1", "create_group", {"sender": a, "member": {cc: "", b: ""}})
    assert list(actions[0].data["member"]) == [a, cc, b]  # type: ignore[union-attr]
    assert actions[0].sessions == ("s1", "s3", "s2")  # type: ignore[union-attr]
    only_fail(
        c.send("s4", "create_group", {"sender": d, "member": {a: ""}}),
        "too_large",
        "s4",
        "create_group",
    )


def test_group_ids_are_never_reused() -> None:
    c = Chat()
    a = c.login("s1", "A")
    b = c.login("s2", "B")
    c.entropy = ScriptedEntropy(int_script=[7, 7, 7, 8])  # type: ignore[assignment]
    first = c.group("s1", a, b)
    c.send("s1", "leave_group", {"groupid": first, "sender": a})  # deleted
    assert c.d.group_count == 0
    second = c.group("s1", a, b)
    assert (first, second) == ("0000000007", "0000000008")


def test_join_group_tells_every_member_then_contact() -> None:
    c = Chat()
    a = c.login("s1", "A")
    b = c.login("s2", "B")
    cc = c.login("s3", "C")
    gid = c.group("s1", a, b)
    actions = c.send("s3", "join_group", {"groupid": gid, "sender": cc})
    view = {a: "A", b: "B", cc: "C"}
    assert actions == [
        Emit(("s1", "s2", "s3"), "update_group", {"groupid": gid, "member": view}),
        Emit(("s1", "s2", "s3"), "contact", contact({a: "A", b: "B", cc: "C"}, {gid: view})),
    ]
    assert list(actions[0].data["member"]) == [a, b, cc]  # type: ignore[union-attr]
    # joining again does nothing at all
    assert c.send("s3", "join_group", {"groupid": gid, "sender": cc}) == []
    assert c.d.next_deadline() is None


def test_join_a_full_group() -> None:
    c = Chat(Directory(max_members=2))
    a, b, cc = (c.login(f"s{i}", n) for i, n in enumerate("ABC", 1))
    gid = c.group("s1", a, b)
    only_fail(
        c.send("s3", "join_group", {"groupid": gid, "sender": cc}), "too_large", "s3", "join_group"
    )


def test_leave_group_with_members_remaining() -> None:
    c = Chat()
    a, b, cc = (c.login(f"s{i}", n) for i, n in enumerate("ABC", 1))
    gid = c.group("s1", a, b, cc)
    actions = c.send("s1", "leave_group", {"groupid": gid, "sender": a})
    view = {b: "B", cc: "C"}
    assert actions == [
        Emit(("s2", "s3"), "update_group", {"groupid": gid, "member": view}),
        Emit(("s1", "s2", "s3"), "contact", contact({a: "A", b: "B", cc: "C"}, {gid: view})),
    ]
    only_fail(
        c.send("s1", "leave_group", {"groupid": gid, "sender": a}), "forbidden", "s1", "leave_group"
    )


def test_leave_group_down_to_one_deletes_it() -> None:
    c = Chat()
    a, b, cc = (c.login(f"s{i}", n) for i, n in enumerate("ABC", 1))
    gid = c.group("s1", a, b)
    actions = c.send("s2", "leave_group", {"groupid": gid, "sender": b})
    assert actions == [
        Emit(("s2", "s1"), "delete_group", {"groupid": gid}),
        Emit(("s1", "s2", "s3"), "contact", contact({a: "A", b: "B", cc: "C"}, {})),
    ]
    assert c.d.group_count == 0
    only_fail(
        c.send("s1", "leave_group", {"groupid": gid, "sender": a}),
        "group_not_found",
        "s1",
        "leave_group",
    )
    only_fail(
        c.send("s1", "join_group", {"groupid": gid, "sender": a}),
        "group_not_found",
        "s1",
        "join_group",
    )


# ---------------------------------------------------------------- logout, disconnect


def _three_groups(c: Chat) -> tuple[str, str, str, str, str, str]:
    a, b, cc = (c.login(f"s{i}", n) for i, n in enumerate("ABC", 1))
    g1 = c.group("s1", a, b)  # A leaving deletes it
    g2 = c.group("s2", b, a, cc)  # A leaving leaves B and C
    g3 = c.group("s2", b, cc)  # A is not in it
    return a, b, cc, g1, g2, g3


def test_logout_leaves_every_group_then_contact() -> None:
    c = Chat()
    a, b, cc, g1, g2, g3 = _three_groups(c)
    actions = c.send("s1", "logout", {"sender": a})
    assert actions == [
        Emit(("s1", "s2"), "delete_group", {"groupid": g1}),
        Emit(("s2", "s3"), "update_group", {"groupid": g2, "member": {b: "B", cc: "C"}}),
        Emit(
            ("s2", "s3"),
            "contact",
            contact({b: "B", cc: "C"}, {g2: {b: "B", cc: "C"}, g3: {b: "B", cc: "C"}}),
        ),
    ]
    assert c.d.user_id("s1") is None and c.d.is_chat_session("s1") and c.d.user_count == 2
    # the session stays open and logs in again with a new id; its name was freed
    again = c.login("s1", "A")
    assert again != a
    only_fail(
        c.send("s2", "message", {"sender": b, "receiver": a, "message": "m"}),
        "user_not_found",
        "s2",
        "message",
    )


def test_disconnect_acts_as_logout_without_frames_to_the_gone_session() -> None:
    c = Chat()
    _a, b, cc, g1, g2, g3 = _three_groups(c)
    actions = c.drop("s1")
    assert actions == [
        Emit(("s2",), "delete_group", {"groupid": g1}),
        Emit(("s2", "s3"), "update_group", {"groupid": g2, "member": {b: "B", cc: "C"}}),
        Emit(
            ("s2", "s3"),
            "contact",
            contact({b: "B", cc: "C"}, {g2: {b: "B", cc: "C"}, g3: {b: "B", cc: "C"}}),
        ),
    ]
    assert not c.d.is_chat_session("s1")
    assert c.drop("s1") == [] and c.drop("never-seen") == []
    # the name is free again
    assert c.login("s9", "a")


def test_disconnect_of_a_session_that_never_logged_in_sends_nothing() -> None:
    c = Chat()
    c.login("s1", "A")
    c.send("s2", "login", {"username": ""})
    assert c.d.is_chat_session("s2")
    assert c.drop("s2") == []
    assert not c.d.is_chat_session("s2")
    assert c.d.next_deadline() is None


def test_last_user_logging_out_sends_no_contact_to_anyone() -> None:
    c = Chat()
    a = c.login("s1", "A")
    assert c.send("s1", "logout", {"sender": a}) == []
    assert c.d.next_deadline() is None


def test_unknown_events_are_refused() -> None:
    c = Chat()
    c.login("s1", "A")
    only_fail(c.send("s1", "room/join", {}), "unknown_event", "s1", "room/join")
    only_fail(c.send("s1", "new_group", {}), "unknown_event", "s1", "new_group")


def test_counters_and_queries() -> None:
    d = Directory()
    e = SeededEntropy(b"q")
    assert (d.user_count, d.group_count, d.next_deadline(), d.user_id("x")) == (0, 0, None, None)
    d.handle("s", "login", {"username": "n"}, now=1.0, entropy=e)
    assert d.user_count == 1 and d.user_id("s") is not None


def test_replaying_the_same_commands_with_the_same_seeds_rebuilds_the_same_directory() -> None:
    def script(d: Directory, seed: bytes) -> list[object]:
        out: list[object] = []
        t = 0.0
        for i in range(8):
            t += 0.04
            out += d.handle(
                f"s{i}",
                "login",
                {"username": f"u{i}"},
                now=t,
                entropy=SeededEntropy(seed + bytes([i])),
            )
        a, b, c = (d.user_id(f"s{i}") for i in range(3))
        out += d.handle(
            "s0",
            "create_group",
            {"sender": a, "member": {b: "", c: ""}},
            now=t,
            entropy=SeededEntropy(seed),
        )
        out += d.disconnect("s1", now=t + 0.01, entropy=SeededEntropy(seed))
        out += d.tick(t + 1)
        return out

    first, second, other = Directory(), Directory(), Directory()
    assert script(first, b"seed") == script(second, b"seed")
    assert first.snapshot() == second.snapshot()
    script(other, b"other")
    assert other.snapshot()["users"] != first.snapshot()["users"]
    assert other.snapshot()["used_group_ids"] != first.snapshot()["used_group_ids"]
