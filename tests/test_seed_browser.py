"""observer_front's reload, close and next room in a real headless Chromium (§4.6, §6.1).

``tests/seed_pages/teacher.html`` + ``teacher.js`` do with socket.io-client 4 (the browser
bundle of the npm package, cached by ``test_socketio_node``) what the seed teacher UI does:
``io(server, {transports: ["websocket"]})``, ``room/create {name: "Host"}``, ``ROOM_ID`` and
``HOST_ID`` kept in localStorage from ``room/update``, and on page load, if a room is stored,
``room/rehost {room_id, user_id}`` **without a token**. The page is served by a tiny static
server on 127.0.0.1, the relay's host: cookies are per host, not per port, so the device
cookie the relay sets on the WebSocket upgrade is the page's too (and same-site for
``SameSite=Lax``). The relay runs in the default configuration (legacy tokenless mode off).

The flow: create a room (a student joins it), reload → the tokenless rehost succeeds through
the cookie and the page has its room back; the same page in a second browser context (another
cookie jar) with the room's ids in its localStorage gets ``bad_token``; ``room/close``, then a
second room on the same socket without reloading; the second context fails on that one too;
a last reload takes the second room back.

A second test runs the page with socket.io-client's default transports (polling first), with
and without ``withCredentials``: cookies on cross-origin polls need the latter.
"""

from __future__ import annotations

import functools
import http.server
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed

from tests.support import SENTINEL_EVENT, Client, Relay
from tests.test_socketio_node import sio_client_module  # noqa: F401  (fixture)
from tests.test_stats_browser import CHROMIUM, CHROMIUM_ARGS

PAGES = Path(__file__).resolve().parent / "seed_pages"

pytestmark = [
    pytest.mark.skipif(not os.path.exists(CHROMIUM),
                       reason=f"Debian chromium is not installed at {CHROMIUM}"),
    pytest.mark.timeout(90),
]


class _Handler(http.server.SimpleHTTPRequestHandler):
    bundle: Path

    def translate_path(self, path: str) -> str:
        if path.split("?", 1)[0] == "/socket.io.min.js":
            return str(self.bundle)
        return super().translate_path(path)

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def static_site(sio_client_module: Path) -> Iterator[str]:  # noqa: F811
    """``tests/seed_pages`` and the socket.io-client 4 browser bundle on 127.0.0.1."""
    bundle = sio_client_module / "dist" / "socket.io.min.js"
    assert bundle.is_file(), bundle
    handler = type("Handler", (_Handler,), {"bundle": bundle})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(PAGES)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def has_update(room_id: int) -> str:
    return (f"() => window.__log.some(e => e.event === 'room/update' && e.data.id === {room_id}"
            ")")


def events(page: Any) -> list[dict[str, Any]]:
    """What the page's socket received so far, without the sentinels' answers."""
    return [e for e in page.evaluate("window.__log")
            if not (e.get("event") == "error" and e["data"].get("event") == SENTINEL_EVENT)]


def settle(page: Any) -> list[dict[str, Any]]:
    """Send a sentinel event with an ack from the page's socket and wait for the ack: every
    event queued for the page before it has then been received. The page's log."""
    page.evaluate("async (name) => { await window.__socket.timeout(3000).emitWithAck(name, {}) }",
                  SENTINEL_EVENT)
    return events(page)


async def test_observer_front_reload_close_and_second_browser(
        relay: Relay, static_site: str) -> None:
    from playwright.sync_api import sync_playwright

    server = f"http://127.0.0.1:{relay.server.relay_port}"
    page_url = f"{static_site}/teacher.html"
    set_server = f"localStorage.setItem('SERVER', {server!r});"
    students: list[Client] = []

    async def student_joins(room_id: int) -> None:
        student, _ = await relay.student(room_id, "Ann")
        students.append(student)

    async def student_closed() -> tuple[list[str], int | None]:
        got: list[str] = []
        with trio.fail_after(5):
            try:
                while True:
                    got.append((await students[0].recv())["event"])
            except ConnectionClosed as exc:
                return got, exc.reason.code

    def browse() -> dict[str, Any]:
        seen: dict[str, Any] = {"errors": [], "dialogs": []}
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                         args=["--headless", *CHROMIUM_ARGS])
            try:
                first = browser.new_context()
                first.add_init_script(set_server)
                page = first.new_page()
                page.on("pageerror", lambda e: seen["errors"].append(str(e)))
                page.on("dialog", lambda d: (seen["dialogs"].append(d.message), d.dismiss()))
                page.goto(page_url)
                page.wait_for_function("() => window.__log.some(e => e.connect)")
                page.click("#create")
                page.wait_for_function("() => localStorage.getItem('ROOM_ID') !== null")
                room_id = int(page.evaluate("localStorage.getItem('ROOM_ID')"))
                seen["created"] = events(page)
                seen["cookies"] = first.cookies()
                seen["document_cookie"] = page.evaluate("document.cookie")
                trio.from_thread.run(student_joins, room_id)
                page.wait_for_selector("#students li")

                # Reload: the new page rehosts without a token; the cookie vouches for it.
                page.reload()
                page.wait_for_function(has_update(room_id), timeout=5000)
                page.wait_for_selector("#students li")
                seen["reloaded"] = settle(page)
                seen["student_after_reload"] = trio.from_thread.run(students[0].sentinel)

                # Another browser (its own cookie jar) with the room's ids: bad_token.
                second = browser.new_context()
                second.add_init_script(set_server)
                other = second.new_page()
                other.on("pageerror", lambda e: seen["errors"].append(str(e)))
                other.goto(page_url)
                other.evaluate(f"localStorage.setItem('ROOM_ID', '{room_id}');"
                               "localStorage.setItem('HOST_ID', '1')")
                other.reload()
                other.wait_for_function("() => window.__log.some(e => e.event === 'error')",
                                        timeout=5000)
                seen["other_first"] = settle(other)
                seen["other_cookies"] = second.cookies()

                # Close the room, then the next one on the same socket, no reload.
                page.click("#close")
                seen["student_closed"] = trio.from_thread.run(student_closed)
                seen["closed"] = settle(page)
                page.click("#create")
                page.wait_for_function(
                    f"() => localStorage.getItem('ROOM_ID') !== '{room_id}'", timeout=5000)
                next_id = int(page.evaluate("localStorage.getItem('ROOM_ID')"))
                page.wait_for_function(has_update(next_id))
                seen["room_ids"] = (room_id, next_id)
                seen["after_close"] = events(page)

                other.evaluate(f"localStorage.setItem('ROOM_ID', '{next_id}')")
                other.reload()
                other.wait_for_function("() => window.__log.some(e => e.event === 'error')",
                                        timeout=5000)
                seen["other_second"] = settle(other)

                page.reload()
                page.wait_for_function(has_update(next_id), timeout=5000)
                seen["last"] = settle(page)
                page.click("#close")
                settle(page)
            finally:
                browser.close()
        return seen

    seen = await trio.to_thread.run_sync(browse)
    assert seen["errors"] == [] and seen["dialogs"] == []
    room_id, next_id = seen["room_ids"]
    assert next_id != room_id

    def names(log: list[dict[str, Any]]) -> list[str]:
        return [e["event"] if "event" in e else next(k for k in e if k != "at") for e in log]

    # The first page: connect, then room/create's three answers.
    assert names(seen["created"]) == ["connect", "room/created", "rtc/config", "room/update"]
    # The device cookie: host-only on 127.0.0.1, HttpOnly (invisible to the page), Lax.
    cookies = [c for c in seen["cookies"] if c["name"] == "observer_device"]
    assert len(cookies) == 1, seen["cookies"]
    cookie = cookies[0]
    assert (cookie["domain"], cookie["path"], cookie["httpOnly"], cookie["secure"],
            cookie["sameSite"]) == ("127.0.0.1", "/", True, False, "Lax")
    assert cookie["expires"] > time.time() + 364 * 86400
    assert "observer_device" not in seen["document_cookie"]

    # After the reload: the rehost succeeded (no error), the page has its room and student.
    reloaded = seen["reloaded"]
    assert names(reloaded)[:3] == ["rehost", "connect", "rtc/config"], reloaded
    assert "error" not in names(reloaded) and "disconnect" not in names(reloaded)
    update = next(e["data"] for e in reloaded if e.get("event") == "room/update")
    assert update["id"] == room_id and update["host"] == 1
    assert [(u["id"], u["name"], u["status"]) for u in update["users"]] == [
        (1, "Host", "online"), (2, "Ann", "online")]
    # The student heard the teacher go and come back (or nothing, if the new page's socket
    # replaced the old one before the old one's close arrived).
    messages = [f["data"]["message"] for f in seen["student_after_reload"]
                if f["event"] == "message"]
    assert messages in ([], ["The teacher is offline!", "The teacher reconnected!"]), messages

    # The second browser: its own cookie, and bad_token for the first room's ids.
    other_cookie = [c for c in seen["other_cookies"] if c["name"] == "observer_device"]
    assert len(other_cookie) == 1 and other_cookie[0]["value"] != cookie["value"]
    for log, rid in ((seen["other_first"], room_id), (seen["other_second"], next_id)):
        assert [e["rehost"] for e in log if "rehost" in e] == [rid]
        errors = [e["data"] for e in log if e.get("event") == "error"]
        assert [(e["code"], e["event"]) for e in errors] == [("bad_token", "room/rehost")], log
        assert "room/update" not in names(log) and "rtc/config" not in names(log)

    # room/close: the student's room/closed and 4000; the teacher's socket stays connected
    # and the next room/create on it works.
    assert seen["student_closed"] == (["room/closed"], 4000)
    assert seen["closed"] == reloaded  # nothing for the teacher's page, no disconnect
    after = seen["after_close"][len(reloaded):]
    assert names(after) == ["room/created", "rtc/config", "room/update"], after
    assert after[0]["data"]["room_id"] == next_id and after[0]["data"]["user_id"] == 1
    assert [e for e in seen["after_close"] if "connect" in e or "disconnect" in e] == [
        e for e in reloaded if "connect" in e]  # one connect, no disconnect, same socket

    # A last reload takes the second room back.
    last = seen["last"]
    assert names(last)[:3] == ["rehost", "connect", "rtc/config"] and "error" not in names(last)
    assert [e["data"]["id"] for e in last if e.get("event") == "room/update"] == [next_id]



@pytest.mark.parametrize("credentials", [False, True], ids=["no-credentials", "credentials"])
async def test_page_with_default_transports_and_the_cookie(
        relay: Relay, static_site: str, credentials: bool) -> None:
    """The same page with socket.io-client's default transports (polling, then upgrade).

    The page and the relay are different origins (ports), so the polls are CORS requests:
    with ``withCredentials: true`` the browser keeps the polling handshake's cookie and the
    reload gets the room back. Without it the browser drops that ``Set-Cookie`` and sends no
    cookie on the polls, so the reloaded page's session carries a fresh cookie and the
    tokenless rehost gets ``bad_token`` (§4.6 vouches only for a cookie the connection
    carries); observer_front is not affected (WebSocket only)."""
    from playwright.sync_api import sync_playwright

    server = f"http://127.0.0.1:{relay.server.relay_port}"
    page_url = f"{static_site}/teacher.html?transports=default" + (
        "&credentials=1" if credentials else "")

    def browse() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                         args=["--headless", *CHROMIUM_ARGS])
            try:
                context = browser.new_context()
                context.add_init_script(f"localStorage.setItem('SERVER', {server!r});")
                page = context.new_page()
                page.goto(page_url)
                page.wait_for_function("() => window.__log.some(e => e.connect)")
                page.click("#create")
                page.wait_for_function("() => localStorage.getItem('ROOM_ID') !== null")
                seen["room_id"] = int(page.evaluate("localStorage.getItem('ROOM_ID')"))
                page.wait_for_function(
                    "() => window.__socket.io.engine.transport.name === 'websocket'")
                seen["cookies"] = [c["name"] for c in context.cookies()]
                page.reload()
                page.wait_for_function(
                    "() => window.__log.some(e => e.event === 'room/update'"
                    " || e.event === 'error')", timeout=5000)
                seen["reloaded"] = events(page)
            finally:
                browser.close()
        return seen

    seen = await trio.to_thread.run_sync(browse)
    errors = [(e["data"]["code"], e["data"]["event"]) for e in seen["reloaded"]
              if e.get("event") == "error"]
    updates = [e["data"]["id"] for e in seen["reloaded"] if e.get("event") == "room/update"]
    if credentials:
        assert seen["cookies"] == ["observer_device"]
        assert (errors, updates) == ([], [seen["room_id"]])
    else:
        assert (errors, updates) == ([("bad_token", "room/rehost")], [])


async def test_teacher_page_on_another_site_keeps_no_cookie(
        relay: Relay, static_site: str) -> None:
    """The cookie is ``SameSite=Lax``: a page on another *site* than the relay (here
    ``localhost`` against ``127.0.0.1``) gets no device cookie from its WebSocket upgrade,
    so its reload cannot take the room back (``bad_token``). observer_front must be served
    from the relay's site (e.g. through the same nginx server) for §4.6 to help it."""
    from playwright.sync_api import sync_playwright

    server = f"http://127.0.0.1:{relay.server.relay_port}"
    page_url = static_site.replace("127.0.0.1", "localhost") + "/teacher.html"

    def browse() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                         args=["--headless", *CHROMIUM_ARGS])
            try:
                context = browser.new_context()
                context.add_init_script(f"localStorage.setItem('SERVER', {server!r});")
                page = context.new_page()
                page.goto(page_url)
                page.wait_for_function("() => window.__log.some(e => e.connect)")
                page.click("#create")
                page.wait_for_function("() => localStorage.getItem('ROOM_ID') !== null")
                seen["cookies"] = context.cookies()
                page.reload()
                page.wait_for_function(
                    "() => window.__log.some(e => e.event === 'room/update'"
                    " || e.event === 'error')", timeout=5000)
                seen["reloaded"] = settle(page)
            finally:
                browser.close()
        return seen

    seen = await trio.to_thread.run_sync(browse)
    assert seen["cookies"] == []
    assert [(e["data"]["code"], e["data"]["event"]) for e in seen["reloaded"]
            if e.get("event") == "error"] == [("bad_token", "room/rehost")]
