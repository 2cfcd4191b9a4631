"""Packet-exact unit tests of the Socket.IO v5 / Engine.IO v4 codec (§3.2-§3.4, §2.2, §2.5)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from wsproto.connection import Connection, ConnectionType
from wsproto.events import TextMessage

from relay.codecs.base import BadFrame, CloseRequest, Incoming, ObserverCodec, Pong, Raw
from relay.codecs.socketio import TERMINAL_CLOSE_CODES, SocketIOCodec, new_sid
from relay.core.errors import EventError
from relay.core.outgoing import Outgoing
from relay.transport.sio_handshake import SessionState, parse_query, refusal

SID = re.compile(r"[A-Za-z0-9_-]{20}")
BINARY = "binary attachments are not supported"


def texts(data: bytes) -> list[str]:
    """The text messages in server frame bytes, as a client-side wsproto reads them."""
    client = Connection(ConnectionType.CLIENT)
    client.receive_data(data)
    out: list[str] = []
    for event in client.events():
        assert isinstance(event, TextMessage), event
        assert event.frame_finished and event.message_finished
        out.append(event.data)
    return out


def text(data: bytes) -> str:
    [only] = texts(data)
    return only


def raw_texts(items: list[Any]) -> list[str]:
    assert all(isinstance(item, Raw) for item in items), items
    return [text(item.payload) for item in items]


def codec() -> SocketIOCodec:
    return SocketIOCodec(25000, 20000, 4194304)


def connected() -> SocketIOCodec:
    c = codec()
    c.decode("40")
    assert c.connected
    return c


def test_implements_observer_codec() -> None:
    c: ObserverCodec = codec()  # checked by mypy against the Protocol
    assert c.endpoint == "socketio"


# -- Engine.IO open -----------------------------------------------------------------------
def test_open_packet() -> None:
    c = codec()
    packet = text(c.open_packet())
    assert packet.startswith('0{"sid":"')
    body = json.loads(packet[1:])
    assert SID.fullmatch(body["sid"]) and body["sid"] == c.sid
    assert packet == (
        '0{"sid":"' + c.sid + '","upgrades":[],"pingInterval":25000,"pingTimeout":20000,'
        '"maxPayload":4194304}'
    )
    assert c.endpoint == "socketio"
    assert not c.connected


def test_open_packet_uses_configuration() -> None:
    body = json.loads(text(SocketIOCodec(1500, 700, 1024).open_packet())[1:])
    assert (body["pingInterval"], body["pingTimeout"], body["maxPayload"]) == (1500, 700, 1024)


def test_sids_are_random_and_url_safe() -> None:
    sids = {new_sid() for _ in range(200)}
    assert len(sids) == 200
    assert all(SID.fullmatch(s) for s in sids)
    assert codec().sid != codec().sid


# -- namespace connect ----------------------------------------------------------------------
@pytest.mark.parametrize("packet", ["40", '40{"token":"x"}', "40{}", "40/,", '40/,{"a":1}', "40/"])
def test_connect(packet: str) -> None:
    c = codec()
    [answer] = raw_texts(c.decode(packet))
    m = re.fullmatch(r'40\{"sid":"([A-Za-z0-9_-]{20})"\}', answer)
    assert m is not None
    assert c.connected and c.socket_sid == m.group(1) and c.socket_sid != c.sid


@pytest.mark.parametrize(
    "packet", ["40[]", '40"x"', "40null", "401", "40{bad", "40 ", "40/,[1]", "40{}x"]
)
def test_connect_with_non_object_payload(packet: str) -> None:
    c = codec()
    assert raw_texts(c.decode(packet)) == ['44{"message":"Invalid connect payload"}']
    assert not c.connected
    # The session may retry.
    assert raw_texts(c.decode("40"))[0].startswith('40{"sid":')
    assert c.connected


@pytest.mark.parametrize(
    ("packet", "nsp"),
    [("40/admin,", "/admin"), ('40/admin,{"token":1}', "/admin"), ("40/chat", "/chat"),
     ("40/a/b,{}", "/a/b")],
)
def test_other_namespace_refused(packet: str, nsp: str) -> None:
    c = codec()
    assert raw_texts(c.decode(packet)) == [f'44{nsp},{{"message":"Invalid namespace"}}']
    assert not c.connected
    c.decode("40")
    # Refused at any time, also once connected to "/".
    assert raw_texts(c.decode(packet)) == [f'44{nsp},{{"message":"Invalid namespace"}}']
    assert c.connected


@pytest.mark.parametrize("packet", ["40", "40{}", "40[]", "40{bad"])
def test_second_connect_ignored(packet: str) -> None:
    c = connected()
    sid = c.socket_sid
    assert c.decode(packet) == []
    assert c.connected and c.socket_sid == sid


@pytest.mark.parametrize(
    "packet",
    ['42["room/create",{"name":"T"}]', '421["room/create",{}]', "41", "43", "430[{}]",
     '451-["x",{"_placeholder":true,"num":0}]', "461-1[]", "44", "4", "47", "4x", "", "x", "7",
     "0", "5", "6", '42/admin,["x"]'],
)
def test_packets_before_connect_ignored(packet: str) -> None:
    c = codec()
    assert c.decode(packet) == []
    assert not c.connected


# -- Engine.IO heartbeat and close ---------------------------------------------------------
@pytest.mark.parametrize("make", [codec, connected])
def test_engineio_level_packets_work_before_and_after_connect(make: Any) -> None:
    c = make()
    assert raw_texts(c.decode("2")) == ["3"]
    assert raw_texts(c.decode("2probe")) == ["3probe"]
    assert c.decode("3") == [Pong()]
    assert c.decode("3probe") == [Pong()]
    assert c.decode("1") == [CloseRequest(1000, "client disconnect")]
    assert c.decode("6") == []
    assert c.decode("5") == []
    assert c.decode("0") == []


def test_ping_frame() -> None:
    assert text(codec().ping_frame()) == "2"


def test_client_disconnect() -> None:
    c = connected()
    assert c.decode("41") == [CloseRequest(1000, "client disconnect")]
    assert c.decode("41/,") == [CloseRequest(1000, "client disconnect")]
    assert c.decode("41/admin,") == []  # a namespace the session never joined


def test_costs_token() -> None:
    c = connected()
    assert not c.costs_token("3")
    assert not c.costs_token("3probe")
    assert not c.costs_token("6")
    for packet in ("2", "40", '42["x",{}]', "41", "1", "", "x", "5", "43"):
        assert c.costs_token(packet), packet


# -- events -----------------------------------------------------------------------------------
def test_event_without_ack() -> None:
    c = connected()
    assert c.decode('42["message/to_mentor",{"room_id":1,"content":"Help"}]') == [
        Incoming("message/to_mentor", {"room_id": 1, "content": "Help"}, None)
    ]


def test_event_with_ack_id() -> None:
    c = connected()
    assert c.decode('420["room/create",{"name":"Teacher"}]') == [
        Incoming("room/create", {"name": "Teacher"}, 0)
    ]
    assert c.decode('4217["x",[1,2]]') == [Incoming("x", [1, 2], 17)]
    assert c.decode('4207["x",1]') == [Incoming("x", 1, 7)]  # leading zeros dropped
    assert c.decode(f'42{2**53 - 1}["x"]') == [Incoming("x", {}, 2**53 - 1)]


def test_event_data_rules() -> None:
    c = connected()
    assert c.decode('42["steps/table"]') == [Incoming("steps/table", {}, None)]
    assert c.decode('42["x",null]') == [Incoming("x", None, None)]
    assert c.decode('42["x",{"a":1},"ignored",3]') == [Incoming("x", {"a": 1}, None)]
    assert c.decode('42["x",{"a":1,"a":2}]') == [Incoming("x", {"a": 2}, None)]
    assert c.decode('42 ["x", {} ] ') == [Incoming("x", {}, None)]
    assert c.decode('42/,5["x",{}]') == [Incoming("x", {}, 5)]  # "/" written out
    # Event names are not restricted by the codec: the core answers unknown_event.
    assert c.decode('42["",{}]') == [Incoming("", {}, None)]


def test_event_on_other_namespace_ignored() -> None:
    c = connected()
    assert c.decode('42/admin,["x",{}]') == []
    assert c.decode('42/admin,3["x",{}]') == []
    assert c.decode('42/admin["x"]') == []


@pytest.mark.parametrize(
    ("packet", "ref"),
    [('42["x",{]', None), ("421[bad", 1), ('42abc["x",{}]', None), ('42["x",NaN]', None),
     ("42[", None), ('42["x"] x', None), ("42 1[\"x\"]", None), ('4212{"a":}', 12)],
)
def test_bad_json(packet: str, ref: int | None) -> None:
    [item] = connected().decode(packet)
    assert isinstance(item, BadFrame)
    assert (item.code, item.event, item.ref) == ("bad_json", None, ref)


@pytest.mark.parametrize(
    ("packet", "ref"),
    [("42[]", None), ("423[]", 3), ("42[1,2]", None), ("429[null]", 9), ('42{"a":1}', None),
     ('42"x"', None), ("425", 5), ("42", None), ("42/,", None), ("4211[[\"x\"]]", 11)],
)
def test_bad_event_frame(packet: str, ref: int | None) -> None:
    [item] = connected().decode(packet)
    assert isinstance(item, BadFrame)
    assert (item.code, item.event, item.ref) == ("bad_frame", None, ref)


def test_ack_id_out_of_range() -> None:
    c = connected()
    for packet in (f'42{2**53}["x",{{}}]', '42' + "9" * 5000 + '["x"]'):
        assert c.decode(packet) == [BadFrame("bad_frame", "ack id out of range", "x", None)]
    assert c.decode("42" + "9" * 40 + "[") == [
        BadFrame("bad_frame", "ack id out of range", None, None)
    ]


@pytest.mark.parametrize("packet", ["", "4", "47", "48[]", "4x", "4-", "x", "7", "{}", "99"])
def test_unparsable_packet_type(packet: str) -> None:
    [item] = connected().decode(packet)
    assert isinstance(item, BadFrame)
    assert (item.code, item.event, item.ref) == ("bad_frame", None, None)


@pytest.mark.parametrize("packet", ["43", "430[{}]", "431[]", '44{"message":"x"}', "6", "5", "0"])
def test_ignored_packets(packet: str) -> None:
    assert connected().decode(packet) == []


# -- binary --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("packet", "event", "ref"),
    [('451-["upload",{"_placeholder":true,"num":0}]', "upload", None),
     ('451-7["upload",{"_placeholder":true,"num":0}]', "upload", 7),
     ('452-/,12["upload",{}]', "upload", 12),
     ('45["upload"]', "upload", None),
     ("453[bad", None, 3),
     ("451-[1]", None, None),
     ("45", None, None),
     ('461-4[{"_placeholder":true,"num":0}]', None, 4),
     ('461-["x"]', None, None),
     ("46", None, None)],
)
def test_binary_attachments(packet: str, event: str | None, ref: int | None) -> None:
    assert connected().decode(packet) == [BadFrame("bad_frame", BINARY, event, ref)]


def test_binary_on_other_namespace_ignored() -> None:
    assert connected().decode('451-/admin,3["x",{}]') == []


def test_binary_websocket_messages_discarded() -> None:
    assert codec().binary() == []
    assert connected().binary() == []


# -- peek (rate-limit drops) ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("packet", "expected"),
    [('42["x",{}]', ("x", None)), ('4212["room/join",{"a":[1]}]', ("room/join", 12)),
     ("427[bad", (None, 7)), ('42abc["x"]', (None, None)), ("42[1]", (None, None)),
     ('42/,3["x"]', ("x", 3)), ('42/admin,3["x"]', (None, None)),
     ('451-5["up",{}]', ("up", 5)), ("461-6[{}]", (None, 6)),
     ("2", (None, None)), ("40", (None, None)), ("430[]", (None, None)), ("", (None, None)),
     (f'42{2**53}["x"]', ("x", None))],
)
def test_peek(packet: str, expected: tuple[str | None, int | None]) -> None:
    assert connected().peek(packet) == expected


def test_peek_mirrors_decode_refs() -> None:
    c = connected()
    for packet in ('4212["x",{}]', "427[bad", "423[]", '451-5["up",{}]', "461-6[{}]", "425",
                   '42["x"]', '42/admin,3["x"]', "430[]"):
        refs = [getattr(item, "ref", None) for item in c.decode(packet)]
        assert c.peek(packet)[1] == (refs[0] if refs else None), packet


def test_peek_before_connect() -> None:
    assert codec().peek('421["x",{}]') == (None, None)


# -- server events ----------------------------------------------------------------------------
def test_event_frame() -> None:
    c = connected()
    out = Outgoing("room/update", {"id": 48213377, "host": 1, "users": []})
    assert text(c.event_frame(out, None)) == (
        '42["room/update",{"id":48213377,"host":1,"users":[]}]'
    )
    # Never a seq, even when one is given.
    assert text(c.event_frame(Outgoing("x", {}), 5)) == '42["x",{}]'


def test_event_frame_non_ascii_and_large() -> None:
    c = connected()
    out = Outgoing("message/to_client", {"content": "héllo ✓" * 20000})
    assert json.loads(text(c.event_frame(out, None))[2:]) == [
        "message/to_client", {"content": "héllo ✓" * 20000}
    ]


def test_event_frame_cached_and_shared() -> None:
    out = Outgoing("message/to_mentor", {"content": "hi"})
    first = codec().event_frame(out, None)
    second = codec().event_frame(out, None)  # another connection, same bytes object
    assert first is second
    assert connected().event_frame(out, 3) is first
    assert out.cached("socketio") is first


def test_alerts_followed_by_alert() -> None:
    payload = {"message": "You have an outdated version of the plugin. Please install the latest "
               "version 1.2.15", "type": "WARNING"}
    out = Outgoing("alerts", payload)
    frame = codec().event_frame(out, None)
    body = json.dumps(payload, separators=(",", ":"))
    assert texts(frame) == [f'42["alerts",{body}]', f'42["alert",{body}]']
    assert codec().event_frame(out, None) is frame
    # Only the plural event is doubled.
    assert texts(codec().event_frame(Outgoing("alert", payload), None)) == [f'42["alert",{body}]']


def test_ack_frames() -> None:
    c = connected()
    assert text(c.ack_frame(0, None)) == '430[{"ok":true}]'
    assert text(c.ack_frame(12, None)) == '4312[{"ok":true}]'
    assert text(c.ack_frame(3, EventError("not_in_room", "join a room first"))) == (
        '433[{"ok":false,"error":{"code":"not_in_room","message":"join a room first"}}]'
    )


def test_decoded_ack_id_round_trips() -> None:
    c = connected()
    for packet, ack in (('420["x"]', "430"), ('4207["x"]', "437"), ("429[bad", "439")):
        [item] = c.decode(packet)
        assert isinstance(item, Incoming | BadFrame) and item.ref is not None
        assert text(c.ack_frame(item.ref, None)) == ack + '[{"ok":true}]'


def test_error_frame() -> None:
    c = connected()
    assert text(c.error_frame("bad_json", "the packet is not valid JSON", None, 4)) == (
        '42["error",{"code":"bad_json","message":"the packet is not valid JSON","event":null}]'
    )
    assert text(c.error_frame("not_host", "only the host", "room/close", None)) == (
        '42["error",{"code":"not_host","message":"only the host","event":"room/close"}]'
    )


@pytest.mark.parametrize("code", [1000, 1001, 1008, 1009, 1011, 4000, 4001, 4002, 4003, 4004,
                                  4008])
def test_close_preamble(code: int) -> None:
    frame = connected().close_preamble(code)
    if code in (4000, 4001, 4003, 4008):
        assert code in TERMINAL_CLOSE_CODES
        assert text(frame) == "41"
    else:
        assert frame == b""


# -- Appendix B, host side --------------------------------------------------------------------
def test_appendix_b_host() -> None:
    c = codec()
    assert text(c.open_packet()).startswith('0{"sid":')
    assert raw_texts(c.decode("40"))[0].startswith('40{"sid":')
    [item] = c.decode('420["room/create",{"name":"Teacher"}]')
    assert item == Incoming("room/create", {"name": "Teacher"}, 0)
    assert text(c.event_frame(Outgoing("rtc/config", {"ice_servers": [], "ttl": 0,
                                                      "polite": False}), None)) == (
        '42["rtc/config",{"ice_servers":[],"ttl":0,"polite":false}]'
    )
    assert text(c.ack_frame(0, None)) == '430[{"ok":true}]'
    assert text(c.ping_frame()) == "2"
    assert c.decode("3") == [Pong()]


# -- the §3.2 refusal table (v2: polling, upgrade, CORS) ----------------------------------------
WS_ONLY = (400, b'{"code":0,"message":"Only the websocket transport is supported"}')
TRANSPORT = (400, b'{"code":0,"message":"Transport unknown"}')
SESSION = (400, b'{"code":1,"message":"Session ID unknown"}')
METHOD = (400, b'{"code":2,"message":"Bad handshake method"}')
BAD = (400, b'{"code":3,"message":"Bad request"}')
FORBIDDEN = (403, b'{"code":4,"message":"Forbidden"}')
PROTOCOL = (400, b'{"code":5,"message":"Unsupported protocol version"}')
S = SessionState


@pytest.mark.parametrize(
    ("method", "ws", "query", "state", "polling", "origin_ok", "expected"),
    [
        ("GET", True, "EIO=4&transport=websocket", S.NONE, True, True, None),
        ("GET", True, "?EIO=4&transport=websocket&t=NxYz1&b64=1", S.NONE, True, True, None),
        ("GET", True, "transport=web%73ocket&EIO=4", S.NONE, True, True, None),
        ("GET", False, "EIO=4&transport=polling", S.NONE, True, True, None),
        ("GET", False, "EIO=4&transport=polling&sid=abc", S.POLLING, True, True, None),
        ("POST", False, "EIO=4&transport=polling&sid=abc", S.POLLING, True, True, None),
        ("OPTIONS", False, "EIO=4&transport=polling", S.NONE, True, True, None),
        ("GET", True, "EIO=4&transport=websocket&sid=abc", S.POLLING, True, True, None),
        # transport (code 0): unknown, or not the request's kind, or polling switched off
        ("GET", False, "EIO=4&transport=websocket", S.NONE, True, True, TRANSPORT),
        ("GET", True, "EIO=4&transport=polling", S.NONE, True, True, TRANSPORT),
        ("GET", True, "EIO=4", S.NONE, True, True, TRANSPORT),
        ("GET", False, "", S.NONE, True, True, TRANSPORT),
        ("GET", True, "EIO=4&transport=WebSocket", S.NONE, True, True, TRANSPORT),
        ("GET", True, "EIO=4&transport=websocket&transport=polling", S.NONE, True, True,
         TRANSPORT),
        ("GET", False, "EIO=4&transport=polling", S.NONE, False, True, WS_ONLY),
        # the first matching row wins (Appendix C)
        ("PUT", False, "EIO=3&transport=xhr", S.NONE, True, False, TRANSPORT),
        ("PUT", False, "EIO=3&transport=polling&sid=x", S.UNKNOWN, True, False, SESSION),
        ("GET", True, "EIO=4&transport=websocket&sid=", S.UNKNOWN, True, True, SESSION),
        ("PUT", False, "EIO=3&transport=polling", S.NONE, True, False, METHOD),
        ("POST", False, "EIO=4&transport=polling", S.NONE, True, True, METHOD),
        ("GET", False, "EIO=3&transport=polling&sid=x", S.UPGRADED, True, False, BAD),
        ("GET", True, "EIO=4&transport=websocket&sid=x", S.UPGRADING, True, True, BAD),
        ("GET", True, "EIO=4&transport=websocket&sid=x", S.UPGRADED, True, True, BAD),
        ("GET", False, "EIO=3&transport=polling", S.NONE, True, False, FORBIDDEN),
        ("GET", False, "EIO=3&transport=polling", S.NONE, True, True, PROTOCOL),
        ("GET", True, "transport=websocket", S.NONE, True, True, PROTOCOL),
        ("GET", True, "EIO=04&transport=websocket", S.NONE, True, True, PROTOCOL),
        ("GET", True, "eio=4&transport=websocket", S.NONE, True, True, PROTOCOL),
    ],
)
def test_refusal_table(method: str, ws: bool, query: str, state: SessionState, polling: bool,
                       origin_ok: bool, expected: tuple[int, bytes] | None) -> None:
    result = refusal(method, ws, parse_query(query), polling=polling, state=state,
                     origin_ok=origin_ok)
    assert result == expected
    if result is not None:
        json.loads(result[1])


# -- totality (the deep-nesting attack, Appendix D) ------------------------------------------
DEEP = "[" * 1000 + "]" * 1000
DEEP_OBJECT = '{"a":' * 1000 + "1" + "}" * 1000


@pytest.mark.parametrize(("packet", "ref"), [
    ("42" + DEEP, None), ("427" + DEEP, 7), ('42["x",' + DEEP + "]", None),
    ('4203["x",' + DEEP_OBJECT + "]", 3), ("42/,9" + DEEP, 9), ("42" + "[" * 100_000, None),
])
def test_deep_nesting_is_bad_json(packet: str, ref: int | None) -> None:
    """msgspec raises RecursionError (not a DecodeError) here; it once ended the process."""
    assert connected().decode(packet) == [BadFrame("bad_json", "JSON nested too deeply", None,
                                                   ref)]
    assert connected().peek(packet) == (None, ref)  # the rate-limited path


def test_deep_nesting_in_binary_packets_keeps_the_ack_id() -> None:
    assert connected().decode("451-4" + DEEP) == [BadFrame("bad_frame", BINARY, None, 4)]
    assert connected().peek("451-4" + DEEP) == (None, 4)


@pytest.mark.parametrize("payload", [DEEP_OBJECT, '{"a":' * 1000, DEEP])
def test_deep_connect_payload_is_invalid(payload: str) -> None:
    c = codec()
    assert raw_texts(c.decode("40" + payload)) == ['44{"message":"Invalid connect payload"}']
    assert not c.connected
    assert raw_texts(c.decode("40"))[0].startswith('40{"sid":')  # the session may retry


def test_deep_nesting_before_connect_is_ignored() -> None:
    c = codec()
    for packet in ("42" + DEEP, "421" + DEEP, "45" + DEEP):
        assert c.decode(packet) == []
        assert c.peek(packet) == (None, None)
    assert not c.connected


def test_lone_surrogates_never_raise() -> None:
    """The reader never delivers them (strict UTF-8), but the codec is total over str."""
    c = codec()
    assert raw_texts(c.decode("2\ud800")) == ["3?"]
    assert raw_texts(c.decode("40/\udc00,")) == ['44/?,{"message":"Invalid namespace"}']
    assert raw_texts(c.decode("40\ud800")) == ['44{"message":"Invalid connect payload"}']
    c.decode("40")
    assert c.decode('42["\ud800"]') == [BadFrame("bad_json", "the packet is not valid JSON")]
    # An escaped lone surrogate is valid JSON syntax that msgspec refuses: bad_json too.
    assert c.decode('421["\\ud800"]') == [
        BadFrame("bad_json", "the packet is not valid JSON", None, 1)]


@pytest.mark.parametrize("number", ["1e400", "-1e400", "9" * 5000])
def test_numbers_out_of_range_are_bad_json(number: str) -> None:
    assert connected().decode(f'425["x",{number}]') == [
        BadFrame("bad_json", "the packet is not valid JSON", None, 5)]


def test_huge_integers_in_data_are_kept() -> None:
    big = 10**300 + 7
    assert connected().decode(f'42["x",[{big},{-big}]]') == [Incoming("x", [big, -big])]
