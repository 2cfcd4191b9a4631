"""socket.io-client in a real headless Chromium, from another origin (§2.1, §3.2).

A tiny static server (``http.server`` in a thread, 127.0.0.1, its own port) serves a page
and the socket.io-client 4 browser bundle (``dist/socket.io.min.js`` from the npm cache
that ``tests/test_socketio_node.py``'s fixture fills). The page connects to the relay —
another port, so another origin — with **default options**: Engine.IO long-polling with
CORS, then the upgrade to WebSocket. It joins a room as a student and exchanges events
with a Python host on the plain framing. With ``allowed_origins`` not listing the page's
origin, the polling handshake is refused with 403 and the page's ``connect_error`` fires.
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

from tests.polling_support import eio_target, one_request
from tests.support import Relay, StartRelay
from tests.test_socketio_node import sio_client_module  # noqa: F401  (a fixture)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
OK = {"ok": True}

pytestmark = [
    pytest.mark.skipif(not os.path.exists(CHROMIUM),
                       reason=f"Debian chromium is not installed at {CHROMIUM}"),
    pytest.mark.timeout(90),
]

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>polling</title><link rel="icon" href="data:,">
<script src="/socket.io.min.js"></script></head>
<body><pre id="out"></pre>
<script>
window.__log = [];
const log = (entry) => { window.__log.push(entry); };
const relay = new URLSearchParams(location.search).get("relay");
const socket = io(relay);  // default options: polling, then the upgrade
socket.io.on("open", () => {
  const engine = socket.io.engine;
  log({ open: engine.transport.name });
  engine.on("upgrade", (transport) => log({ upgrade: transport.name }));
});
socket.on("connect", () => log({ connect: socket.io.engine.transport.name }));
socket.on("disconnect", (reason) => log({ disconnect: reason }));
socket.on("connect_error", (err) => log({ connect_error: String(err && err.message),
                                          type: err && err.type }));
socket.onAny((event, data) => log({ event, data }));
window.call = (event, data) => new Promise((resolve) => {
  socket.timeout(5000).emit(event, data, (err, result) => {
    log({ ack: event, result, err: err ? String(err) : null });
    resolve(result);
  });
});
window.transport = () => socket.io.engine && socket.io.engine.transport.name;
</script></body></html>
"""


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def static_site(bundle: Path, root: Path) -> Iterator[str]:
    """Serve the page and the bundle from ``root`` on 127.0.0.1; yields the origin."""
    (root / "index.html").write_text(PAGE)
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


def launch(pw: Any) -> Any:
    return pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


def relay_http(relay: Relay) -> str:
    return f"http://127.0.0.1:{relay.server.relay_port}"


def log_has(kind: str) -> str:
    return f"() => window.__log.some((e) => {json.dumps(kind)} in e)"


def event_seen(event: str, content: str | None = None) -> str:
    check = "" if content is None else f" && e.data && e.data.content === {json.dumps(content)}"
    return f"() => window.__log.some((e) => e.event === {json.dumps(event)}{check})"


async def test_browser_default_options_from_another_origin(
        relay: Relay, sio_client_module: Path, tmp_path: Path) -> None:  # noqa: F811
    from playwright.sync_api import sync_playwright

    bundle = sio_client_module / "dist" / "socket.io.min.js"
    assert bundle.is_file(), bundle
    host, room = await relay.host()
    room_id = room["room_id"]
    relay_url = relay_http(relay)
    joined: dict[str, Any] = {}

    async def host_sees_join() -> None:
        frame = await host.expect("room/update")
        joined.update({u["name"]: u for u in frame["data"]["users"]})

    async def host_sees(content: str) -> dict[str, Any]:
        frame = await host.expect("message/to_mentor")
        assert frame["data"]["content"] == content, frame
        return dict(frame["data"])

    async def host_sends(content: str) -> None:
        await host.ok("message/to_client", {"user_id": joined["Browser"]["id"],
                                            "content": content})

    def browse(origin: str) -> dict[str, Any]:
        seen: dict[str, Any] = {"requests": [], "websockets": [], "errors": [],
                                "console": [], "statuses": []}
        with sync_playwright() as pw:
            browser = launch(pw)
            try:
                page = browser.new_page()
                page.on("pageerror", lambda e: seen["errors"].append(str(e)))
                page.on("console", lambda m: seen["console"].append(m.text)
                        if m.type == "error" else None)
                page.on("request", lambda r: seen["requests"].append((r.method, r.url)))
                page.on("response", lambda r: seen["statuses"].append((r.status, r.url)))
                page.on("websocket", lambda ws: seen["websockets"].append(ws.url))
                page.goto(f"{origin}/index.html?relay={relay_url}")
                seen["origin"] = page.evaluate("location.origin")
                page.wait_for_function(log_has("connect"), timeout=10000)
                seen["join"] = page.evaluate(
                    "(id) => call('room/join', {room_id: id, name: 'Browser'})", room_id)
                trio.from_thread.run(host_sees_join)
                seen["ack1"] = page.evaluate(
                    "call('message/to_mentor', {content: 'from the browser 1'})")
                seen["to_mentor1"] = trio.from_thread.run(host_sees, "from the browser 1")
                trio.from_thread.run(host_sends, "from python 1")
                page.wait_for_function(event_seen("message/to_client", "from python 1"),
                                       timeout=5000)
                # The upgrade happens with default options; events go on after it.
                page.wait_for_function(log_has("upgrade"), timeout=10000)
                seen["transport"] = page.evaluate("transport()")
                seen["ack2"] = page.evaluate(
                    "call('message/to_mentor', {content: 'from the browser 2'})")
                seen["to_mentor2"] = trio.from_thread.run(host_sees, "from the browser 2")
                trio.from_thread.run(host_sends, "from python 2")
                page.wait_for_function(event_seen("message/to_client", "from python 2"),
                                       timeout=5000)
                seen["log"] = page.evaluate("window.__log")
            finally:
                browser.close()
        return seen

    with static_site(bundle, tmp_path) as origin:
        seen = await trio.to_thread.run_sync(browse, origin)

    assert seen["errors"] == [] and seen["console"] == [], seen
    assert seen["origin"] == origin and origin != relay_url  # cross-origin for real
    log = seen["log"]
    kinds = [next(iter(e)) for e in log]
    # Opened on polling, upgraded to the WebSocket once, never disconnected.
    assert log[0] == {"open": "polling"}, log
    assert [e for e in log if "upgrade" in e] == [{"upgrade": "websocket"}], log
    assert "disconnect" not in kinds and "connect_error" not in kinds, log
    assert kinds.count("connect") == 1
    assert seen["transport"] == "websocket"
    polls = [(m, u) for m, u in seen["requests"] if "/socket.io/" in u
             and "transport=polling" in u]
    assert any(m == "GET" for m, _ in polls) and any(m == "POST" for m, _ in polls), polls
    assert all(u.startswith(relay_url) for _, u in polls)
    assert [u for u in seen["websockets"] if "transport=websocket" in u and "sid=" in u]
    assert all(status in (200, 204) for status, url in seen["statuses"]
               if "/socket.io/" in url), seen["statuses"]
    # The exchange: join, two messages each way, every ack ok.
    assert seen["join"] == OK and seen["ack1"] == OK and seen["ack2"] == OK
    assert joined["Browser"]["status"] == "online"
    events = [(e["event"], e["data"]) for e in log if "event" in e]
    assert [name for name, _ in events[:2]] == ["room/join", "rtc/config"], events
    assert events[0][1]["room_id"] == room_id
    to_client = [d["content"] for name, d in events if name == "message/to_client"]
    assert to_client == ["from python 1", "from python 2"]
    assert seen["to_mentor1"]["sender"] == seen["to_mentor2"]["sender"] == joined[
        "Browser"]["id"]
    acks = [(e["ack"], e["result"]) for e in log if "ack" in e]
    assert acks == [("room/join", OK), ("message/to_mentor", OK), ("message/to_mentor", OK)]


async def test_browser_origin_not_allowed(start_relay: StartRelay, sio_client_module: Path,  # noqa: F811
                                          tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    bundle = sio_client_module / "dist" / "socket.io.min.js"
    relay = await start_relay(allowed_origins=["http://teach.example.org"])
    relay_url = relay_http(relay)

    def browse(origin: str) -> dict[str, Any]:
        seen: dict[str, Any] = {"statuses": [], "failed": [], "websockets": []}
        with sync_playwright() as pw:
            browser = launch(pw)
            try:
                page = browser.new_page()
                page.on("response", lambda r: seen["statuses"].append((r.status, r.url)))
                page.on("requestfailed", lambda r: seen["failed"].append(r.url))
                page.on("websocket", lambda ws: seen["websockets"].append(ws.url))
                page.goto(f"{origin}/index.html?relay={relay_url}")
                page.wait_for_function(log_has("connect_error"), timeout=10000)
                seen["log"] = page.evaluate("window.__log")
            finally:
                browser.close()
        return seen

    with static_site(bundle, tmp_path) as origin:
        seen = await trio.to_thread.run_sync(browse, origin)
        # The same handshake, checked directly: 403 code 4, no CORS grant.
        direct = await one_request(relay.server.relay_port, "GET", eio_target(),
                                   [("Origin", origin)])
    assert direct.status == 403 and direct.body == b'{"code":4,"message":"Forbidden"}'
    assert direct.header("access-control-allow-origin") is None
    log = seen["log"]
    errors = [e for e in log if "connect_error" in e]
    assert errors and errors[0] == {"connect_error": "xhr poll error",
                                    "type": "TransportError"}, log
    assert not [e for e in log if "connect" in e or "open" in e], log
    assert seen["websockets"] == []
    assert relay.server.polling.sessions == {}
    # Without a CORS grant the page cannot read the 403: to Chromium the polling handshake
    # failed (and nothing else of the relay's was received).
    failed = [u for u in seen["failed"] if "/socket.io/" in u]
    assert failed and all("transport=polling" in u and "sid=" not in u for u in failed), seen
    assert not [u for _, u in seen["statuses"] if u.startswith(relay_url)], seen
