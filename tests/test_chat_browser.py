"""The chat app (§9.10) in a real headless Chromium: three people, three browser contexts.

``tests/chat_pages/`` holds a page built like the seed chat app ("Convo!"): socket.io-client
4 with **default options** (long-polling, then the upgrade to WebSocket), a login form, the
people and groups rendered from ``contact`` (told apart by ``id.length == 20``), messages
rendered as text, direct and group messages sent with the page's own id as ``sender``, and a
button that creates a group of the checked people. A tiny static server (127.0.0.1, its own
port, so another origin than the relay) serves it with the socket.io-client browser bundle
from the npm cache that ``tests/test_socketio_node.py``'s fixture fills.

Three contexts (separate cookie jars, as three people's browsers) open the page: they log
in and see each other, exchange direct and group messages, and one closes its tab; the
others' contact lists drop it. Each page's own log shows it opened on polling and upgraded
to the WebSocket.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.support import Relay
from tests.test_socketio_node import sio_client_module  # noqa: F401  (a fixture)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
PAGES = Path(__file__).resolve().parent / "chat_pages"
NAMES = ("Ann", "Ben", "Cid")
WAIT_MS = 10_000

pytestmark = [
    pytest.mark.skipif(not os.path.exists(CHROMIUM),
                       reason=f"Debian chromium is not installed at {CHROMIUM}"),
    pytest.mark.timeout(120),
]


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def static_site(bundle: Path, root: Path) -> Iterator[str]:
    """Serve the chat page and the bundle from ``root`` on 127.0.0.1; yields the origin."""
    for page in PAGES.iterdir():
        shutil.copy(page, root / page.name)
    shutil.copy(bundle, root / "socket.io.min.js")
    handler = functools.partial(Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def texts(selector: str) -> str:
    """JS: the trimmed text of every element matching ``selector``."""
    return (f"[...document.querySelectorAll({json.dumps(selector)})]"
            ".map((e) => e.textContent.trim())")


def people_are(names: list[str]) -> str:
    return (f"() => JSON.stringify({texts('#people li')}.sort()) === "
            f"{json.dumps(json.dumps(sorted(names), separators=(',', ':')))}")


def shows(selector: str, text: str) -> str:
    return f"() => {texts(selector)}.includes({json.dumps(text)})"


def browse(origin: str, relay_url: str, users: Any) -> dict[str, Any]:
    """The whole scenario (in a worker thread); ``users()`` reads the relay's user count."""
    from playwright.sync_api import sync_playwright

    seen: dict[str, Any] = {"errors": [], "console": [], "logs": {}, "messages": {}}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=CHROMIUM_ARGS)
        try:
            pages = {}
            for name in NAMES:
                context = browser.new_context()  # one person's browser
                page = context.new_page()
                page.on("pageerror", lambda e, n=name: seen["errors"].append((n, str(e))))
                page.on("console", lambda m, n=name: seen["console"].append((n, m.text))
                        if m.type == "error" else None)
                page.goto(f"{origin}/index.html?relay={relay_url}")
                pages[name] = page
            for name, page in pages.items():
                page.wait_for_function("() => window.__log.some((e) => 'connect' in e)",
                                       timeout=WAIT_MS)
                page.fill("#name", name)
                page.click("#login")
            # Everyone sees the two others.
            for name, page in pages.items():
                page.wait_for_function(people_are([n for n in NAMES if n != name]),
                                       timeout=WAIT_MS)
            ids = {name: page.evaluate("chatState.me") for name, page in pages.items()}
            seen["ids"] = ids
            ann, ben, cid = (pages[n] for n in NAMES)

            # A direct message, and the reply.
            ann.click(f"#people li[data-id='{ids['Ben']}']")
            ann.fill("#text", "hi Ben, Ann here")
            ann.click("#send")
            ben.wait_for_function(shows("#messages li", "Ann: hi Ben, Ann here"),
                                  timeout=WAIT_MS)
            ben.click(f"#people li[data-id='{ids['Ann']}']")
            ben.fill("#text", "hello Ann")
            ben.click("#send")
            ann.wait_for_function(shows("#messages li", "Ben: hello Ann"), timeout=WAIT_MS)

            # Ann makes a group of the three.
            ann.check(f"#people li[data-id='{ids['Ben']}'] input")
            ann.check(f"#people li[data-id='{ids['Cid']}'] input")
            ann.click("#create")
            for page in pages.values():
                page.wait_for_function(
                    "() => document.querySelectorAll('#groups li').length === 1 && "
                    "document.querySelector('#groups li').textContent.endsWith("
                    "': Ann, Ben, Cid')", timeout=WAIT_MS)
            gid = ann.evaluate("Object.keys(chatState.group)[0]")
            seen["gid"] = gid

            # Ben writes to the group: Ann and Cid read it.
            ben.click(f"#groups li[data-id='{gid}']")
            ben.fill("#text", "hello group")
            ben.click("#send")
            for page in (ann, cid):
                page.wait_for_function(shows("#messages li", f"Ben in #{gid}: hello group"),
                                       timeout=WAIT_MS)
            cid.click(f"#groups li[data-id='{gid}']")
            cid.fill("#text", "Cid to the group")
            cid.click("#send")
            for page in (ann, ben):
                page.wait_for_function(
                    shows("#messages li", f"Cid in #{gid}: Cid to the group"),
                    timeout=WAIT_MS)
            for name, page in pages.items():
                page.wait_for_function("() => window.transport() === 'websocket'",
                                       timeout=WAIT_MS)
                seen["logs"][name] = page.evaluate("window.__log")
                seen["messages"][name] = page.evaluate(texts("#messages li"))

            if os.environ.get("CHAT_BROWSER_SCREENSHOT"):
                ann.screenshot(path=os.environ["CHAT_BROWSER_SCREENSHOT"])
            # Cid closes its tab: the others' lists drop Cid, and the group goes on without.
            cid.close()
            for page in (ann, ben):
                page.wait_for_function(people_are([n for n in ("Ann", "Ben")
                                                   if page is not pages[n]]),
                                       timeout=WAIT_MS)
                page.wait_for_function(
                    "() => [...document.querySelectorAll('#groups li')].map((e) => "
                    "e.textContent).join('|').endsWith(': Ann, Ben')", timeout=WAIT_MS)
            for name in ("Ann", "Ben"):
                seen["logs"][name] = pages[name].evaluate("window.__log")
                seen["messages"][name] = pages[name].evaluate(texts("#messages li"))
                seen.setdefault("people", {})[name] = pages[name].evaluate(texts("#people li"))
            seen["users_after_close"] = trio.from_thread.run_sync(users)

            # Ben reloads the page (the old session's end logs Ben out) and logs in again
            # under the same name: a new id, which Ann's list shows.
            ben.reload()
            ben.wait_for_function("() => window.__log.some((e) => 'connect' in e)",
                                  timeout=WAIT_MS)
            ben.fill("#name", "Ben")
            ben.click("#login")
            ben.wait_for_function("() => chatState.me !== null", timeout=WAIT_MS)
            seen["ben_again"] = ben.evaluate("chatState.me")
            ann.wait_for_function(
                "(id) => document.querySelector(`#people li[data-id='${id}']`) !== null",
                arg=seen["ben_again"], timeout=WAIT_MS)
            seen["reloaded_log"] = ben.evaluate("window.__log")
            seen["ann_people_after_reload"] = ann.evaluate(texts("#people li"))
        finally:
            browser.close()
    return seen


def events(log: list[dict[str, Any]], name: str) -> list[Any]:
    return [e["data"] for e in log if e.get("event") == name]


async def test_three_browsers_chat(relay: Relay, sio_client_module: Path,  # noqa: F811
                                   tmp_path: Path) -> None:
    bundle = sio_client_module / "dist" / "socket.io.min.js"
    assert bundle.is_file(), bundle
    relay_url = f"http://127.0.0.1:{relay.server.relay_port}"
    with static_site(bundle, tmp_path) as origin:
        seen = await trio.to_thread.run_sync(browse, origin, relay_url, relay.server.chat.users)
        await trio.sleep(0.3)
        assert relay.server.chat.users() == 0  # (every tab is closed now)

    assert seen["errors"] == [] and seen["console"] == [], seen
    ids, gid, logs = seen["ids"], seen["gid"], seen["logs"]
    for name in NAMES:
        log = logs[name]
        kinds = [next(iter(e)) for e in log]
        # It polled first, then upgraded to the WebSocket, once, and never dropped.
        assert log[0] == {"open": "polling"}, log
        assert [e for e in log if "upgrade" in e] == [{"upgrade": "websocket"}], log
        assert kinds.count("connect") == 1 and "disconnect" not in kinds, log
        assert kinds.index("open") < kinds.index("upgrade")
        # Its login answer, with a 20-character id, then a contact.
        answers = events(log, "login-response")
        assert answers == [{"username": name, "result": "success", "userid": ids[name]}]
        assert len(ids[name]) == 20
        names = [e.get("event") for e in log if "event" in e]
        assert names.index("login-response") < names.index("contact")
        # update_group on the creation, with the members in joining order.
        updates = events(log, "update_group")
        assert updates[0] == {"groupid": gid, "member": {
            ids["Ann"]: "Ann", ids["Ben"]: "Ben", ids["Cid"]: "Cid"}}, updates
        assert len(gid) == 10 and gid.isdigit()
        # Never an echo of its own messages.
        assert all(m["sender"] != ids[name] for m in events(log, "message")), log
        assert not events(log, "error"), log
    # Who got which message: the direct ones only their receiver, the group's the others.
    assert [(m["sender"], m["receiver"], m["message"]) for m in events(logs["Ben"], "message")
            ] == [(ids["Ann"], ids["Ben"], "hi Ben, Ann here"),
                  (ids["Cid"], gid, "Cid to the group")]
    assert [(m["sender"], m["receiver"], m["message"]) for m in events(logs["Ann"], "message")
            ] == [(ids["Ben"], ids["Ann"], "hello Ann"), (ids["Ben"], gid, "hello group"),
                  (ids["Cid"], gid, "Cid to the group")]
    assert [(m["sender"], m["receiver"], m["message"]) for m in events(logs["Cid"], "message")
            ] == [(ids["Ben"], gid, "hello group")]
    assert seen["messages"]["Cid"] == [f"Ben in #{gid}: hello group", "me: Cid to the group"]
    # After Cid's tab closed: the last contact and group update lack Cid.
    for name in ("Ann", "Ben"):
        last = events(logs[name], "contact")[-1]
        assert set(last["person"]) == {ids["Ann"], ids["Ben"]}, last
        assert last["group"] == {gid: {ids["Ann"]: "Ann", ids["Ben"]: "Ben"}}, last
        assert events(logs[name], "update_group")[-1] == {
            "groupid": gid, "member": {ids["Ann"]: "Ann", ids["Ben"]: "Ben"}}
    assert seen["people"] == {"Ann": ["Ben"], "Ben": ["Ann"]}
    assert seen["users_after_close"] == 2  # Cid's tab is gone, so is Cid
    # The reloaded page got in again as Ben, with a new id; Ann sees one Ben.
    assert events(seen["reloaded_log"], "login-response") == [
        {"username": "Ben", "result": "success", "userid": seen["ben_again"]}]
    assert seen["ben_again"] != ids["Ben"]
    assert seen["ann_people_after_reload"] == ["Ben"]
