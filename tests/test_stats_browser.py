"""The stats page in a real headless Chromium: live updates without reload, XSS-safe names."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.support import Relay

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
XSS_NAME = "<img src=x onerror=alert(1)>"

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                reason=f"Debian chromium is not installed at {CHROMIUM}")


def step(name: str, kind: str = "exercise") -> dict[str, str]:
    return {"name": name, "content": f"Task {name}", "language": "python", "type": kind}


async def test_stats_page_live_in_chromium(relay: Relay) -> None:
    from playwright.sync_api import sync_playwright

    host, room = await relay.host()
    room_id, key = room["room_id"], room["stats_key"]
    await host.ok("steps/all", [step("Hello"), step("Loops"), step("Reading", "theory"),
                                step("Functions"), step("Classes")])
    students: dict[str, Any] = {}
    ids: dict[str, int] = {}
    plan = {
        "Ann Smith": {"Hello": "DONE", "Loops": "DONE", "Reading": "DONE", "Functions": "DONE",
                      "Classes": "DONE"},
        "Ben": {"Hello": "DONE", "Loops": "IN_PROGRESS"},
        XSS_NAME: {"Hello": "DONE", "Loops": "HELP"},
        "Chloé Martin": {"Hello": "DONE", "Loops": "DONE", "Reading": "IN_PROGRESS"},
        "Dmitri": {},
        "Eva": {"Hello": "IN_PROGRESS"},
    }
    for name, statuses in plan.items():
        students[name], joined = await relay.student(room_id, name)
        ids[name] = joined["user_id"]
        if statuses:
            await students[name].ok("steps/status/to_mentor", statuses)
    await host.ok("steps/status/to_client", {"user_id": ids["Ann Smith"],
                                             "steps": {"Hello": "ACCEPTED"}})
    await students["Eva"].ok("signal", {"value": "HELP"})
    await students["Dmitri"].aclose()  # shown as offline, kept in the table

    async def change_status() -> None:
        await students["Ben"].ok("steps/status/to_mentor", {"Loops": "HELP"})

    async def stop_relay() -> None:
        # Our idle clients have unread frames; hang up first so shutdown need not wait for them.
        for client in [host, *students.values()]:
            with trio.move_on_after(0.5):
                await client.aclose()
        await relay.server.shutdown()

    ARTIFACTS.mkdir(exist_ok=True)
    url = f"{relay.web}/roomstats/{room_id}?key={key}"
    ben = f'tr[data-user-id="{ids["Ben"]}"]'
    xss = f'tr[data-user-id="{ids[XSS_NAME]}"]'

    def browse() -> dict[str, Any]:
        seen: dict[str, Any] = {"dialogs": [], "errors": [], "requests": [], "console": []}
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                         args=CHROMIUM_ARGS)
            try:
                # Reduced motion: no row flash or pulsing dot in the screenshots.
                page = browser.new_page(viewport={"width": 1366, "height": 768},
                                        reduced_motion="reduce")
                page.on("dialog", lambda d: (seen["dialogs"].append(d.message), d.dismiss()))
                page.on("pageerror", lambda e: seen["errors"].append(str(e)))
                page.on("request", lambda r: seen["requests"].append(r.url))
                page.on("console", lambda m: seen["console"].append(m.text)
                        if m.type == "error" else None)  # e.g. a CSP violation
                page.goto(url)
                page.wait_for_selector('#live[data-state="live"]', timeout=5000)
                seen["dmitri"] = page.text_content(
                    f'tr[data-user-id="{ids["Dmitri"]}"] td.presence')
                seen["xss_text"] = page.text_content(f"{xss} td.name")
                seen["images"] = page.locator("#stats img").count()
                seen["before"] = page.get_attribute(f"{ben} td:nth-child(5)", "data-status")
                page.evaluate("window.__sameDocument = true")
                trio.from_thread.run(change_status)
                page.wait_for_selector(
                    f'{ben} td:nth-child(5)[data-status="HELP"][title="HELP"]', timeout=5000)
                seen["after_text"] = page.text_content(f"{ben} td:nth-child(5)")
                seen["same_document"] = page.evaluate("window.__sameDocument === true")
                seen["ben_class"] = page.get_attribute(ben, "class")
                seen["help_count"] = page.text_content('#summary [data-kind="help"] b')
                seen["xss_after"] = page.text_content(f"{xss} td.name")
                page.screenshot(path=str(ARTIFACTS / "stats-page.png"), full_page=True)
                page.set_viewport_size({"width": 1920, "height": 1080})
                page.screenshot(path=str(ARTIFACTS / "stats-page-projector.png"))
                seen["console_errors"] = list(seen["console"])
                trio.from_thread.run(stop_relay)
                page.wait_for_selector('#live[data-state="reconnecting"]', timeout=5000)
                seen["rows_kept"] = page.locator("#stats tr[data-user-id]").count()
            finally:
                browser.close()
        return seen

    seen = await trio.to_thread.run_sync(browse)
    assert seen["errors"] == []
    assert seen["dialogs"] == []
    assert seen["console_errors"] == []
    assert all(u.startswith(relay.web) for u in seen["requests"]), seen["requests"]
    assert seen["dmitri"] == "offline"
    assert seen["xss_text"] == XSS_NAME and seen["xss_after"] == XSS_NAME
    assert seen["images"] == 0
    assert seen["before"] == "IN_PROGRESS"
    assert seen["after_text"] == "❗"
    assert seen["same_document"] is True
    assert "help" in seen["ben_class"].split()
    assert seen["help_count"] == "3"
    assert seen["rows_kept"] == len(plan)
    assert (ARTIFACTS / "stats-page.png").stat().st_size > 10_000
