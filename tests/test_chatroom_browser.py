"""The space inspector (§9.8) in a real headless Chromium: live without reload, text only."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import trio

from relay.spaces.names import space_key
from tests.chatroom_support import ChatClient, body
from tests.support import StartRelay

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
XSS = "<img src=x onerror=alert(1)>"
SECRET = "inspector secret"

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                reason=f"Debian chromium is not installed at {CHROMIUM}")


def wait_text(page: Any, selector: str, text: str, timeout: float = 5.0) -> None:
    """Poll the element's textContent (the page's CSP forbids wait_for_function's eval)."""
    import time

    deadline = time.monotonic() + timeout
    while page.text_content(selector) != text:
        assert time.monotonic() < deadline, (selector, page.text_content(selector), text)
        page.wait_for_timeout(50)


async def test_inspector_page_live_in_chromium(start_relay: StartRelay) -> None:
    from playwright.sync_api import sync_playwright

    relay = await start_relay(chatroom_secret=SECRET)
    key = space_key(SECRET, "lab")
    a = await ChatClient.open(relay, f"/chatroom?space=lab&key={key}")
    assert body(await a.expect("hello")) == {"id": 1}
    b = await ChatClient.open(relay, f"/chatroom?space=lab&key={key}")
    await b.expect("hello")
    for name, kind in (("score", "int"), (XSS, "string")):
        await a.send("subscribe", topic_name=name, type=kind)
        await a.expect("update")
    await a.send("update", topic_name=XSS, change={"type": "set", "value": XSS})
    await a.expect("update")
    await b.send("register_service", service_name=XSS)
    await b.send("subscribe", topic_name="_chatroom/client_message/2")  # a round trip
    await b.expect("update")

    async def change(name: str, value: Any) -> None:
        await a.send("update", topic_name=name, change={"type": "set", "value": value})
        await a.expect("update")

    async def stop_relay() -> None:
        for client in (a, b):
            with trio.move_on_after(0.5):
                await client.aclose()
        await relay.server.shutdown()

    ARTIFACTS.mkdir(exist_ok=True)
    url = f"{relay.web}/spaces/lab?key={key}"
    score = 'tr[data-topic="score"]'
    xss_row = f'tr[data-topic="{XSS}"]'

    def browse() -> dict[str, Any]:
        seen: dict[str, Any] = {"dialogs": [], "errors": [], "requests": [], "console": []}
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                         args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 800},
                                        reduced_motion="reduce")
                def on_dialog(dialog: Any) -> None:
                    seen["dialogs"].append(dialog.message)
                    dialog.dismiss()

                page.on("dialog", on_dialog)
                page.on("pageerror", lambda e: seen["errors"].append(str(e)))
                page.on("request", lambda r: seen["requests"].append(r.url))
                page.on("console", lambda m: seen["console"].append(m.text)
                        if m.type == "error" else None)
                page.goto(url)
                seen["h1"] = page.text_content("h1")
                page.wait_for_selector('#live[data-state="live"]', timeout=5000)
                seen["before"] = page.text_content(f"{score} td.preview")
                seen["xss_name"] = page.text_content(f"{xss_row} td:nth-child(1)")
                seen["xss_value"] = page.text_content(f"{xss_row} td.preview")
                seen["xss_service"] = page.text_content(
                    f'#services tr[data-service="{XSS}"] td:nth-child(1)')
                seen["images_before"] = page.locator("img").count()
                page.evaluate("window.__sameDocument = true")
                trio.from_thread.run(change, "score", 42)
                wait_text(page, f"{score} td.preview", "42")
                seen["after_version"] = page.text_content(f"{score} td:nth-child(3)")
                # a value that is HTML, written live (text nodes, not markup)
                trio.from_thread.run(change, XSS, XSS + "<b>bold</b>")
                wait_text(page, f"{xss_row} td.preview", json.dumps(XSS + "<b>bold</b>"))
                seen["xss_live"] = page.text_content(f"{xss_row} td.preview")
                seen["images_after"] = page.locator("img").count()
                seen["bold"] = page.locator("#topics b").count()
                seen["same_document"] = page.evaluate("window.__sameDocument === true")
                seen["clients"] = page.locator("#clients li").all_text_contents()
                page.wait_for_timeout(300)  # an onerror handler would have fired by now
                page.screenshot(path=str(ARTIFACTS / "space-inspector.png"), full_page=True)
                seen["console_errors"] = list(seen["console"])
                trio.from_thread.run(stop_relay)
                page.wait_for_selector('#live:not([data-state="live"])', timeout=5000)
                seen["rows_kept"] = page.locator("#topics tr[data-topic]").count()
            finally:
                browser.close()
        return seen

    seen = await trio.to_thread.run_sync(browse)
    assert seen["errors"] == [] and seen["console_errors"] == []
    assert seen["dialogs"] == []
    assert all(u.startswith(relay.web) for u in seen["requests"]), seen["requests"]
    assert seen["h1"] == "Space lab"
    assert seen["before"] == "0"
    assert seen["after_version"] == "1"
    assert seen["same_document"] is True
    assert seen["xss_name"] == XSS and seen["xss_service"] == XSS
    assert seen["xss_value"] == json.dumps(XSS)
    assert seen["xss_live"] == json.dumps(XSS + "<b>bold</b>")
    assert seen["images_before"] == 0 and seen["images_after"] == 0 and seen["bold"] == 0
    assert seen["clients"] == ["1", "2"]
    assert seen["rows_kept"] == 5  # 2 client_message topics, server_status, score, XSS
