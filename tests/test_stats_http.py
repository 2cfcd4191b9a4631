"""§8 over real HTTP: stats page, event stream, JSON API, keys, health and metrics."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

import stats_web.events
from tests.support import Client, Relay, StartRelay, step, wait_until

SYMBOLS = {"NONE": "❌", "IN_PROGRESS": "⏳", "HELP": "❗", "DONE": "☑", "ACCEPTED": "✅"}
XSS_NAME = "<img src=x onerror=alert(1)>"
STATIC = Path(__file__).resolve().parent.parent / "stats_web" / "static"


# -- helpers -------------------------------------------------------------------------------

@dataclass
class Room:
    """A room driven over the relay: its host, ids and key."""

    relay: Relay
    host: Client
    room_id: int
    key: str
    students: dict[str, Client] = field(default_factory=dict)
    ids: dict[str, int] = field(default_factory=dict)

    async def publish(self, *steps: dict[str, str]) -> None:
        await self.host.ok("steps/all", list(steps))

    async def join(self, name: str) -> Client:
        client, joined = await self.relay.student(self.room_id, name)
        self.students[name] = client
        self.ids[name] = joined["user_id"]
        return client

    async def status(self, name: str, statuses: dict[str, str]) -> None:
        await self.students[name].ok("steps/status/to_mentor", statuses)

    async def accept(self, name: str, statuses: dict[str, str]) -> None:
        await self.host.ok("steps/status/to_client", {"user_id": self.ids[name],
                                                      "steps": statuses})

    def url(self, kind: str = "page", key: str | None = "") -> str:
        path = {"page": f"/roomstats/{self.room_id}",
                "events": f"/roomstats/{self.room_id}/events",
                "api": f"/api/rooms/{self.room_id}/stats"}[kind]
        if key == "":
            key = self.key
        return path if key is None else f"{path}?key={key}"


async def new_room(relay: Relay) -> Room:
    host, created = await relay.host()
    return Room(relay, host, created["room_id"], created["stats_key"])


@pytest.fixture
async def relay(start_relay: StartRelay) -> Relay:
    """These tests make many 403/404 requests on purpose: lift the failed-join limit
    (its own test below sets it low)."""
    return await start_relay(join_failure_limit=100_000)


@pytest.fixture
async def http(relay: Relay) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=relay.web, timeout=5.0) as client:
        yield client


async def api(http: httpx.AsyncClient, room: Room) -> dict[str, Any]:
    response = await http.get(room.url("api"))
    assert response.status_code == 200, response.text
    return response.json()


@dataclass
class Table:
    """What the stats page shows, parsed from its HTML."""

    h1: str = ""
    table_ids: list[str] = field(default_factory=list)
    header: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)

    def row(self, user_id: int) -> dict[str, Any]:
        return next(r for r in self.rows if r["attrs"].get("data-user-id") == str(user_id))


class TableParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.table = Table()
        self._in: str | None = None  # "h1", "th" or "td"
        self._text = ""
        self._attrs: dict[str, str | None] = {}
        self._in_stats = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table":
            self.table.table_ids.append(a.get("id") or "")
            self._in_stats = a.get("id") == "stats"
        elif tag == "tr" and self._in_stats and "data-user-id" in a:
            self.table.rows.append({"attrs": a, "cells": []})
        elif tag in ("h1", "th", "td"):
            self._in, self._text, self._attrs = tag, "", a

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._in_stats = False
        if tag != self._in:
            return
        if tag == "h1" and not self.table.h1:
            self.table.h1 = self._text
        elif tag == "th" and self._in_stats:
            self.table.header.append(self._text)
        elif tag == "td" and self._in_stats:
            self.table.rows[-1]["cells"].append((self._attrs, self._text))
        self._in = None

    def handle_data(self, data: str) -> None:
        if self._in is not None:
            self._text += data


def parse_page(text: str) -> Table:
    parser = TableParser()
    parser.feed(text)
    return parser.table


@dataclass
class Block:
    event: str | None
    data: str | None
    comments: list[str]


class EventStream:
    """Reads server-sent events block by block (a block ends with a blank line)."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()

    async def next(self, timeout: float = 3.0) -> Block | None:
        """The next block, or None when the stream ended."""
        event: str | None = None
        data: list[str] = []
        comments: list[str] = []
        with trio.fail_after(timeout):
            while True:
                try:
                    line = await anext(self._lines)
                except StopAsyncIteration:
                    return None
                if line == "":
                    if event is None and not data and not comments:
                        continue
                    return Block(event, "\n".join(data) if data else None, comments)
                if line.startswith(":"):
                    comments.append(line[1:].strip())
                elif line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].removeprefix(" "))

    async def stats(self, timeout: float = 3.0) -> dict[str, Any]:
        """The next ``stats`` event's JSON (keep-alives are skipped)."""
        while True:
            block = await self.next(timeout)
            assert block is not None, "stream ended"
            if block.event is None:
                continue
            assert block.event == "stats", block
            assert block.data is not None
            return httpx.Response(200, content=block.data).json()


def without_time(stats: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in stats.items() if k != "generated_at"}


# -- the page (§8.1) -------------------------------------------------------------------------

async def test_page_structure(relay: Relay, http: httpx.AsyncClient) -> None:
    room = await new_room(relay)
    await room.publish(step("1"), step("Theory", type="theory"), step("2"))
    await room.join("Ann")
    await room.join("Bob")
    await room.status("Ann", {"1": "DONE", "2": "HELP"})
    await room.status("Bob", {"Theory": "IN_PROGRESS", "1": "DONE"})
    await room.accept("Bob", {"1": "ACCEPTED"})

    response = await http.get(room.url())
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["cache-control"] == "no-store"
    page = parse_page(response.text)
    assert page.h1 == f"Room # {room.room_id}"
    assert "stats" in page.table_ids
    assert page.header == ["Name", "Status", "Signal", "1", "Theory", "2", "%"]
    assert [r["attrs"]["data-user-id"] for r in page.rows] == [str(room.ids["Ann"]),
                                                              str(room.ids["Bob"])]

    ann = page.row(room.ids["Ann"])["cells"]
    assert ann[0][1] == "Ann"
    assert (ann[1][0]["data-status"], ann[1][1]) == ("online", "online")
    assert (ann[2][0]["data-signal"], ann[2][1]) == ("NONE", "NONE")
    assert [(a["data-status"], a["title"], t) for a, t in ann[3:6]] == [
        ("DONE", "DONE", SYMBOLS["DONE"]), ("NONE", "NONE", SYMBOLS["NONE"]),
        ("HELP", "HELP", SYMBOLS["HELP"])]
    assert ann[6][1] == "50%"
    bob = page.row(room.ids["Bob"])["cells"]
    assert [t for _, t in bob[3:6]] == [SYMBOLS["ACCEPTED"], SYMBOLS["IN_PROGRESS"],
                                        SYMBOLS["NONE"]]
    assert bob[6][1] == "50%"
    # The exact cell markup of §8.1.
    for status, symbol in (("DONE", "☑"), ("HELP", "❗"), ("ACCEPTED", "✅"),
                           ("IN_PROGRESS", "⏳"), ("NONE", "❌")):
        assert f'<td data-status="{status}" title="{status}">{symbol}</td>' in response.text


async def test_page_without_students_or_steps(relay: Relay, http: httpx.AsyncClient) -> None:
    room = await new_room(relay)
    page = parse_page((await http.get(room.url())).text)
    assert page.header == ["Name", "Status", "Signal", "%"]
    assert page.rows == []
    await room.join("Ann")
    page = parse_page((await http.get(room.url())).text)
    assert page.row(room.ids["Ann"])["cells"][-1][1] == "-"


async def test_page_escapes_user_text(relay: Relay, http: httpx.AsyncClient) -> None:
    room = await new_room(relay)
    await room.publish(step('<i>"x"</i> & \'y\''), step("<script>", type="theory"))
    await room.join(XSS_NAME)
    await room.join("O'Neil \"Q\" & co")
    text = (await http.get(room.url())).text
    assert "<img" not in text and "<i>" not in text and "<script>" not in text
    assert "&lt;img src=x onerror=alert(1)&gt;" in text
    assert "O&#x27;Neil &quot;Q&quot; &amp; co" in text
    assert 'title="&lt;i&gt;&quot;x&quot;&lt;/i&gt; &amp; &#x27;y&#x27;"' in text
    page = parse_page(text)
    assert page.header[3:5] == ['<i>"x"</i> & \'y\'', "<script>"]
    assert page.row(room.ids[XSS_NAME])["cells"][0][1] == XSS_NAME
    # The JSON carries the name as it is: the page's script writes it as text.
    assert (await api(http, room))["students"][0]["name"] == XSS_NAME


async def test_page_keeps_offline_students_and_drops_removed(
        relay: Relay, http: httpx.AsyncClient) -> None:
    room = await new_room(relay)
    await room.publish(step("1"))
    await room.join("Ann")
    await room.join("Bob")
    await room.status("Ann", {"1": "DONE"})
    await room.students["Ann"].aclose()

    async def ann_offline() -> bool:
        return (await api(http, room))["students"][0]["status"] == "offline"

    await wait_until(ann_offline)
    row = parse_page((await http.get(room.url())).text).row(room.ids["Ann"])["cells"]
    assert (row[1][0]["data-status"], row[1][1]) == ("offline", "offline")
    assert (row[3][0]["data-status"], row[4][1]) == ("DONE", "100%")
    await room.students["Bob"].ok("room/leave", {})
    page = parse_page((await http.get(room.url())).text)
    assert [r["attrs"]["data-user-id"] for r in page.rows] == [str(room.ids["Ann"])]


async def test_page_has_no_external_resources(relay: Relay, http: httpx.AsyncClient) -> None:
    room = await new_room(relay)
    response = await http.get(room.url())
    assets = re.findall(r'(?:src|href)="([^"]+)"', response.text)
    assert sorted(assets) == ["/static/favicon.svg", "/static/stats.css", "/static/stats.js"]
    for asset in assets:
        served = await http.get(asset)
        assert served.status_code == 200
        assert served.headers["cache-control"] == "no-store"
        assert served.text == (STATIC / asset.rsplit("/", 1)[1]).read_text()
        text = served.text.replace('xmlns="http://www.w3.org/2000/svg"', "")
        assert not re.search(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I)
    script = (STATIC / "stats.js").read_text()
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script
    assert "script-src 'self'" in response.headers["content-security-policy"]


# -- keys, 403 / 404 -------------------------------------------------------------------------

async def test_keys_and_error_order(relay: Relay, http: httpx.AsyncClient) -> None:
    room = await new_room(relay)
    other = await new_room(relay)
    for kind in ("page", "events", "api"):
        for key in (None, "", "x" * 22, other.key, room.key[:-1], "ключ"):
            response = await http.get(room.url(kind, key if key != "" else "%20"))
            assert response.status_code == 403, (kind, key)
            assert response.headers["cache-control"] == "no-store"
            if kind == "page":
                assert "Access denied" in response.text
                assert response.headers["content-type"] == "text/html; charset=utf-8"
            else:
                assert response.headers["content-type"] == "application/json"
                assert response.json() == {"error": "forbidden"}
    # An unknown room is 404 whatever the key; a non-integer id is 404 too.
    missing = 10_000_000 if room.room_id != 10_000_000 else 10_000_001
    for raw in (str(missing), "abc", "12.5", "-5", "%3Cscript%3Ex"):
        for suffix in ("", f"?key={room.key}", "?key=nope"):
            page = await http.get(f"/roomstats/{raw}{suffix}")
            assert page.status_code == 404
            assert page.headers["cache-control"] == "no-store"
            for path in (f"/roomstats/{raw}/events{suffix}", f"/api/rooms/{raw}/stats{suffix}"):
                response = await http.get(path)
                assert response.status_code == 404, path
                assert response.json() == {"error": "room_not_found"}
                assert response.headers["cache-control"] == "no-store"
    assert f"Room # {missing} not found!" in (await http.get(f"/roomstats/{missing}")).text
    assert "Room # abc not found!" in (await http.get("/roomstats/abc?key=k")).text
    escaped = (await http.get("/roomstats/%3Cscript%3Ex")).text
    assert "Room # &lt;script&gt;x not found!" in escaped and "<script>" not in escaped


async def test_guessing_stats_urls_is_rate_limited(start_relay: StartRelay) -> None:
    """404s and 403s count as failed joins of the IP (§8, §4.3); at the limit every stats
    request gets 429 without a lookup, a valid one included, and so does a room/join."""
    relay = await start_relay(join_failure_limit=5)
    room = await new_room(relay)
    async with httpx.AsyncClient(base_url=relay.web, timeout=5.0) as http:
        for n in range(5):
            wrong = await http.get(room.url("api", "nope") if n % 2 else
                                   f"/api/rooms/{room.room_id + 1}/stats")
            assert wrong.status_code in (403, 404)
        for kind in ("api", "events"):
            response = await http.get(room.url(kind))
            assert response.status_code == 429
            assert response.json() == {"error": "rate_limited"}
            assert response.headers["cache-control"] == "no-store"
        page = await http.get(room.url("page"))
        assert page.status_code == 429 and "Too many requests" in page.text
    student = await relay.client()
    await student.fail("room/join", {"room_id": room.room_id, "name": "Ann"}, "rate_limited")


async def test_long_room_ids_are_unknown(relay: Relay, http: httpx.AsyncClient) -> None:
    """A room id of thousands of digits is just an unknown room (it was a 500)."""
    for raw in ("9" * 21, "1" * 4301, "0" * 20 + "1"):
        assert (await http.get(f"/api/rooms/{raw}/stats")).json() == {
            "error": "room_not_found"}
        assert (await http.get(f"/roomstats/{raw}")).status_code == 404


async def test_closed_room_is_404(relay: Relay, http: httpx.AsyncClient) -> None:
    room = await new_room(relay)
    assert (await http.get(room.url("api"))).status_code == 200
    await room.host.ok("room/close", {})
    assert (await http.get(room.url("api"))).json() == {"error": "room_not_found"}
    assert f"Room # {room.room_id} not found!" in (await http.get(room.url())).text


async def test_public_stats_needs_no_key(start_relay: StartRelay) -> None:
    relay = await start_relay(public_stats=True)
    room = await new_room(relay)
    async with httpx.AsyncClient(base_url=relay.web, timeout=5.0) as http:
        for key in (None, "wrong"):
            assert (await http.get(room.url("page", key))).status_code == 200
            assert (await http.get(room.url("api", key))).json()["room_id"] == room.room_id
            async with http.stream("GET", room.url("events", key)) as response:
                assert response.status_code == 200
                assert (await EventStream(response).stats())["room_id"] == room.room_id
        response = await http.get("/api/rooms/1/stats")
        assert response.status_code == 404


# -- JSON (§8.3) -----------------------------------------------------------------------------

async def test_json_schema(relay: Relay, http: httpx.AsyncClient) -> None:
    room = await new_room(relay)
    await room.publish(step("1"), step("read", type="theory"), step("2"))
    await room.join("Ann")
    await room.status("Ann", {"2": "DONE"})
    response = await http.get(room.url("api"))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == {"room_id", "generated_at", "steps", "students"}
    assert body["room_id"] == room.room_id
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", body["generated_at"])
    assert body["steps"] == [{"name": "1", "type": "exercise"}, {"name": "read", "type": "theory"},
                             {"name": "2", "type": "exercise"}]
    assert body["students"] == [{
        "user_id": room.ids["Ann"], "name": "Ann", "status": "online", "signal": "NONE",
        "steps": {"1": "NONE", "read": "NONE", "2": "DONE"}, "percent": 50}]
    # Republishing drops the statuses of steps that are gone: still one key per step.
    await room.publish(step("2"), step("3"))
    student = (await api(http, room))["students"][0]
    assert student["steps"] == {"2": "DONE", "3": "NONE"}
    assert student["percent"] == 50


async def test_percent_rounds_half_up(relay: Relay, http: httpx.AsyncClient) -> None:
    eight = await new_room(relay)
    await eight.publish(*(step(str(i)) for i in range(1, 9)), step("t", type="theory"))
    await eight.join("One")
    await eight.join("Four")
    await eight.join("Theory")
    await eight.status("One", {"1": "DONE", "2": "HELP", "3": "IN_PROGRESS"})
    await eight.status("Four", {"1": "DONE", "2": "DONE", "3": "DONE", "8": "DONE"})
    await eight.status("Theory", {"t": "DONE"})
    assert [s["percent"] for s in (await api(http, eight))["students"]] == [13, 50, 0]

    three = await new_room(relay)
    await three.publish(step("a"), step("b"), step("c"))
    for name in ("Zero", "OneThird", "TwoThirds", "All"):
        await three.join(name)
    await three.status("OneThird", {"a": "DONE"})
    await three.status("TwoThirds", {"a": "DONE"})
    await three.accept("TwoThirds", {"c": "ACCEPTED"})
    await three.status("All", {"a": "DONE", "b": "DONE", "c": "DONE"})
    assert [s["percent"] for s in (await api(http, three))["students"]] == [0, 33, 67, 100]
    cells = [r["cells"][-1][1] for r in parse_page((await http.get(three.url())).text).rows]
    assert cells == ["0%", "33%", "67%", "100%"]


async def test_percent_null_without_exercise_steps(relay: Relay, http: httpx.AsyncClient) -> None:
    room = await new_room(relay)
    await room.join("Ann")
    assert (await api(http, room))["students"][0]["percent"] is None
    await room.publish(step("read", type="theory"))
    await room.status("Ann", {"read": "DONE"})
    body = await api(http, room)
    assert body["students"][0]["percent"] is None
    assert body["students"][0]["steps"] == {"read": "DONE"}
    cells = parse_page((await http.get(room.url())).text).row(room.ids["Ann"])["cells"]
    assert cells[-1][1] == "-"


async def test_signal_shows_everywhere(relay: Relay, http: httpx.AsyncClient) -> None:
    room = await new_room(relay)
    student = await room.join("Ann")
    await student.ok("signal", {"value": "HELP"})
    assert (await api(http, room))["students"][0]["signal"] == "HELP"
    cells = parse_page((await http.get(room.url())).text).row(room.ids["Ann"])["cells"]
    assert (cells[2][0]["data-signal"], cells[2][1]) == ("HELP", "HELP")


# -- the event stream (§8.2) -----------------------------------------------------------------

async def test_sse_first_event_then_updates(relay: Relay, http: httpx.AsyncClient,
                                            autojump_clock: trio.abc.Clock) -> None:
    """Virtual time: the first event comes at once, the updates after the coalescing
    interval (its own test below) without real waiting."""
    room = await new_room(relay)
    await room.publish(step("1"), step("2"))
    await room.join("Ann")
    started = trio.current_time()
    async with http.stream("GET", room.url("events")) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].split(";")[0] == "text/event-stream"
        assert response.headers["cache-control"] == "no-store"
        stream = EventStream(response)
        first = await stream.next(timeout=1.0)
        assert first is not None and first.event == "stats" and first.data is not None
        assert "\n" not in first.data
        assert trio.current_time() - started < 0.01  # no timer before it
        snapshot = httpx.Response(200, content=first.data).json()
        assert without_time(snapshot) == without_time(await api(http, room))

        await room.status("Ann", {"2": "HELP"})
        update = await stream.stats()
        assert update["students"][0]["steps"] == {"1": "NONE", "2": "HELP"}

        await room.join("Bob")  # a join is a change too
        update = await stream.stats()
        assert [s["name"] for s in update["students"]] == ["Ann", "Bob"]

        await room.students["Bob"].aclose()  # and going offline
        update = await stream.stats()
        assert update["students"][1]["status"] == "offline"

        await room.publish(step("2"))  # and the published steps
        update = await stream.stats()
        assert update["steps"] == [{"name": "2", "type": "exercise"}]
        assert update["students"][0]["steps"] == {"2": "HELP"}


async def test_sse_coalesces_changes(relay: Relay, http: httpx.AsyncClient,
                                     autojump_clock: trio.abc.Clock) -> None:
    """Virtual time: the interval is the server's own, whatever the load."""
    room = await new_room(relay)
    await room.publish(step("1"), step("2"), step("3"))
    await room.join("Ann")
    async with http.stream("GET", room.url("events")) as response:
        stream = EventStream(response)
        await stream.stats()
        first_at = trio.current_time()
        await room.status("Ann", {"1": "DONE"})
        await room.status("Ann", {"2": "DONE"})
        await room.status("Ann", {"3": "IN_PROGRESS"})
        update = await stream.stats()
        second_at = trio.current_time()
        assert second_at - first_at >= stats_web.events.MIN_INTERVAL
        assert update["students"][0]["steps"] == {"1": "DONE", "2": "DONE", "3": "IN_PROGRESS"}
        # A sentinel change: the next event must be the one that shows it, so no event
        # with the coalesced changes alone came in between.
        await room.status("Ann", {"1": "HELP"})
        update = await stream.stats()
        assert trio.current_time() - second_at >= stats_web.events.MIN_INTERVAL
        assert update["students"][0]["steps"] == {"1": "HELP", "2": "DONE", "3": "IN_PROGRESS"}


async def test_sse_keep_alive(relay: Relay, http: httpx.AsyncClient,
                              autojump_clock: trio.abc.Clock) -> None:
    """The real 15 s interval, in virtual time."""
    room = await new_room(relay)
    async with http.stream("GET", room.url("events"), timeout=60.0) as response:
        stream = EventStream(response)
        await stream.stats()
        sent = trio.current_time()
        block = await stream.next(timeout=30.0)
        assert block == Block(None, None, ["keep-alive"])
        assert trio.current_time() - sent >= stats_web.events.KEEPALIVE_INTERVAL


async def test_sse_closed_when_room_removed(relay: Relay, http: httpx.AsyncClient) -> None:
    room = await new_room(relay)
    await room.join("Ann")
    async with http.stream("GET", room.url("events")) as response:
        stream = EventStream(response)
        await stream.stats()
        await room.host.ok("room/close", {})
        block = await stream.next()
        assert block == Block("closed", "{}", [])
        assert await stream.next() is None


async def test_sse_ends_on_shutdown(start_relay: StartRelay, autojump_clock: trio.abc.Clock
                                    ) -> None:
    relay = await start_relay()
    room = await new_room(relay)
    async with httpx.AsyncClient(base_url=relay.web, timeout=5.0) as http, \
            http.stream("GET", room.url("events")) as response:
        stream = EventStream(response)
        await stream.stats()
        began = trio.current_time()
        relay.nursery.start_soon(relay.server.shutdown)
        assert await stream.next(timeout=2.0) is None
        assert trio.current_time() - began < 1.0  # not the shutdown grace


# -- the rest of the web port ------------------------------------------------------------------

async def test_healthz_and_metrics(relay: Relay, http: httpx.AsyncClient) -> None:
    await new_room(relay)
    health = await http.get("/healthz")
    assert health.status_code == 200
    assert health.headers["cache-control"] == "no-store"
    body = health.json()
    assert body["status"] == "ok" and body["rooms"] == 1 and body["connections"] == 1
    metrics = await http.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert metrics.headers["cache-control"] == "no-store"
    # §8.5 names; counters are written as prometheus-client writes them (``_total``).
    expected = {
        "observer_connections": "gauge", "observer_rooms": "gauge",
        "observer_participants": "gauge", "observer_replayed_events_total": "counter",
        "observer_connections_opened_total": "counter", "observer_messages_in_total": "counter",
        "observer_messages_out_total": "counter", "observer_bytes_in_total": "counter",
        "observer_bytes_out_total": "counter", "observer_errors_total": "counter",
        "observer_rate_limited_frames_total": "counter", "observer_disconnects_total": "counter",
        "observer_resumes_total": "counter", "observer_imports_total": "counter",
    }
    for name, kind in expected.items():
        base = name.removesuffix("_total")
        assert re.search(rf"^# TYPE {base}(?:_total)? {kind}$", metrics.text, re.M), name
        assert name in metrics.text
    assert 'observer_connections{endpoint="observer"} 1.0' in metrics.text


async def test_web_port_refuses_websockets(relay: Relay) -> None:
    headers = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
    room = await new_room(relay)
    for path in ("/observer", "/ws", room.url(), room.url("events"), "/healthz"):
        async with httpx.AsyncClient(base_url=relay.web, timeout=5.0) as client:
            response = await client.get(path, headers=headers)
        assert response.status_code == 404, path
        assert response.headers["cache-control"] == "no-store"


async def test_connection_close_requests_get_eof(relay: Relay) -> None:
    """A ``Connection: close`` or HTTP/1.0 client reading to EOF must not hang."""
    room = await new_room(relay)
    requests = ["GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                f"GET {room.url()} HTTP/1.0\r\n\r\n",
                f"GET {room.url('api')} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"]
    for raw in requests:
        stream = await trio.open_tcp_stream("127.0.0.1", relay.server.web_port)
        async with stream:
            await stream.send_all(raw.encode())
            data = b""
            with trio.fail_after(2.0):
                while chunk := await stream.receive_some():
                    data += chunk
        assert data.startswith(b"HTTP/1.1 200"), data[:40]
        assert b"\r\ncache-control: no-store\r\n" in data.lower()


async def test_cache_control_on_every_answer(relay: Relay, http: httpx.AsyncClient) -> None:
    for path in ("/nope", "/api/nope", "/static/nope.css", "/roomstats"):
        response = await http.get(path)
        assert response.status_code == 404, path
        assert response.headers["cache-control"] == "no-store"
    response = await http.post("/healthz")
    assert response.status_code == 405
    assert response.headers["cache-control"] == "no-store"
