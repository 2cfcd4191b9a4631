"""§8.6 screen-sharing pages in a real headless Chromium, against real `observer-peer` processes.

* `/share` (student) in Chromium → `observer-peer host`: the page captures Chromium's fake
  screen (`--use-fake-device-for-media-stream` makes getDisplayMedia return a 1280x720 test
  pattern), joins, requests, and once the host allows, offers; the host must decode ≥ 30 frames.
* `/view` (teacher) in Chromium ← `observer-peer student`: the page rehosts the room, lists the
  request, allows it with `button[data-user-id]`, answers the offer and plays `video#remote`.

Everything stays on 127.0.0.1: the pages run with `loopback=1` (they keep only 127.0.0.1 ICE
candidates) and the aiortc peer runs with its default `--loopback-only`. Screenshots go to
`test-artifacts/`. Timings are printed and recorded as properties, never asserted.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import pytest
import trio

from tests.support import Relay

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
    "--allow-loopback-in-peer-connection",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
FRAMES = 30
ENOUGH_FRAMES = f"() => Number(document.querySelector('video#remote').dataset.frames) >= {FRAMES}"

pytestmark = [
    pytest.mark.skipif(not os.path.exists(CHROMIUM),
                       reason=f"Debian chromium is not installed at {CHROMIUM}"),
    pytest.mark.timeout(90),
]


def _peer_cmd(*args: str) -> list[str]:
    script = Path(sys.executable).with_name("observer-peer")
    base = [str(script)] if script.exists() else [sys.executable, "-m", "signaling.peer.cli"]
    return [*base, *args]


class PeerProcess:
    """An `observer-peer` subprocess whose stdout lines are collected by a trio task."""

    def __init__(self, name: str, proc: trio.Process, stderr: IO[bytes], stderr_path: Path):
        self.name = name
        self.proc = proc
        self.stderr = stderr
        self.stderr_path = stderr_path
        self.lines: list[str] = []
        self._changed = trio.Event()
        self.eof = False

    @classmethod
    async def start(cls, nursery: trio.Nursery, name: str, args: list[str],
                    tmp_path: Path) -> PeerProcess:
        stderr_path = tmp_path / f"{name}.stderr"
        stderr = stderr_path.open("wb")
        proc = await trio.lowlevel.open_process(
            _peer_cmd(*args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr)
        peer = cls(name, proc, stderr, stderr_path)
        nursery.start_soon(peer._read)
        return peer

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        buffer = b""
        async for chunk in self.proc.stdout:
            buffer += chunk
            *done, buffer = buffer.split(b"\n")
            self.lines.extend(line.decode(errors="replace") for line in done)
            if done:
                self._wake()
        if buffer:
            self.lines.append(buffer.decode(errors="replace"))
        self.eof = True
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def find(self, pattern: str) -> re.Match[str] | None:
        for line in self.lines:
            found = re.search(pattern, line)
            if found:
                return found
        return None

    async def wait_line(self, pattern: str, timeout: float) -> re.Match[str]:
        with trio.move_on_after(timeout):
            while True:
                found = self.find(pattern)
                if found:
                    return found
                if self.eof:
                    break
                await self._changed.wait()
        pytest.fail(f"{self.name}: no line matching {pattern!r}\n{self.output()}", pytrace=False)

    async def wait(self, timeout: float) -> int:
        with trio.move_on_after(timeout):
            return await self.proc.wait()
        await self.stop()
        pytest.fail(f"{self.name}: still running after {timeout:g} s\n{self.output()}",
                    pytrace=False)

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
            with trio.move_on_after(6):
                await self.proc.wait()
            if self.proc.returncode is None:
                self.proc.kill()
                await self.proc.wait()
        self.stderr.close()

    def output(self) -> str:
        if not self.stderr.closed:
            self.stderr.flush()
        err = self.stderr_path.read_text(errors="replace")
        out = "\n".join(self.lines)
        return f"--- {self.name} stdout\n{out}\n--- {self.name} stderr\n{err}"


def _launch(pw: Any) -> Any:
    return pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


def _watch(page: Any, seen: dict[str, Any]) -> None:
    """Collect page errors, console errors and every URL the page fetches."""
    seen.setdefault("errors", [])
    seen.setdefault("console", [])
    seen.setdefault("requests", [])
    page.on("pageerror", lambda e: seen["errors"].append(str(e)))
    page.on("console", lambda m: seen["console"].append(f"{m.type}: {m.text}"))
    seen.setdefault("sent", [])
    page.on("request", lambda r: seen["requests"].append(r.url))
    page.on("websocket", lambda ws: ws.on("framesent", lambda p: seen["sent"].append(p)))


def _status_recorder(page: Any) -> None:
    """Remember every text #status shows (the page's own CSP does not apply to this)."""
    page.evaluate("""() => {
        const status = document.querySelector('#status');
        window.__statuses = [status.textContent];
        new MutationObserver((records) => {
            for (const record of records) {
                for (const node of record.addedNodes) window.__statuses.push(node.textContent);
            }
        }).observe(status, {childList: true});
    }""")


def _address(candidate_line: str) -> str | None:
    parts = candidate_line.removeprefix("a=").split()
    return parts[4] if len(parts) >= 8 else None


def _loopback_signaling(sent: list[str | bytes]) -> int:
    """Every candidate the page sent (trickled or inside an SDP) is on 127.0.0.1; count rtc/ice."""
    trickled = 0
    for raw in sent:
        frame = json.loads(raw)
        data = frame.get("data") or {}
        if frame["event"] == "rtc/ice":
            trickled += 1
            assert _address(data["candidate"]["candidate"]) == "127.0.0.1", frame
        elif frame["event"] in ("rtc/offer", "rtc/answer"):
            lines = [ln for ln in data["sdp"].splitlines() if ln.startswith("a=candidate:")]
            assert all(_address(ln) == "127.0.0.1" for ln in lines), lines
    return trickled


def _same_origin_or_relay(seen: dict[str, Any], web: str, relay: str) -> None:
    stray = [u for u in seen["requests"] if not (u.startswith(web) or u.startswith(relay))]
    assert not stray, f"the page fetched foreign resources: {stray}"


async def test_share_page_to_observer_peer_host(
    relay: Relay, nursery: trio.Nursery, tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    from playwright.sync_api import sync_playwright

    snapshot = tmp_path / "host-frame.png"
    host = await PeerProcess.start(nursery, "host", [
        "host", "--url", f"{relay.url}/observer", "--create", "--name", "Teacher",
        "--count", str(FRAMES), "--duration", "45", "--snapshot", str(snapshot),
    ], tmp_path)
    try:
        room = (await host.wait_line(r"^room (\d+) user 1 token \S+", 20)).group(1)
        url = f"{relay.web}/share?room={room}&name=Ann&loopback=1"
        host_done = threading.Event()
        ARTIFACTS.mkdir(exist_ok=True)

        def browse() -> dict[str, Any]:
            seen: dict[str, Any] = {}
            with sync_playwright() as pw:
                browser = _launch(pw)
                try:
                    page = browser.new_page(viewport={"width": 1280, "height": 800})
                    _watch(page, seen)
                    page.goto(url)
                    seen["prefill"] = (page.input_value("#room"), page.input_value("#name"))
                    page.wait_for_function("() => document.querySelector('#share') !== null")
                    _status_recorder(page)
                    clicked = time.monotonic()
                    page.click("#share")
                    page.wait_for_selector('body[data-connection="connected"]', timeout=20_000)
                    seen["connected_s"] = time.monotonic() - clicked
                    seen["status_sharing"] = page.text_content("#status")
                    page.wait_for_function(
                        "() => document.querySelector('#preview').currentTime > 1", timeout=10_000)
                    page.screenshot(path=str(ARTIFACTS / "share-page.png"))
                    seen["capture"] = page.evaluate("""() => {
                        const v = document.querySelector('#preview');
                        return [v.videoWidth, v.videoHeight];
                    }""")
                    # The host stops by itself after FRAMES frames and sends rtc/stop.
                    seen["host_done"] = host_done.wait(40)
                    page.wait_for_function(
                        "() => document.querySelector('#status').textContent === 'stopped'",
                        timeout=10_000)
                    seen["statuses"] = page.evaluate("window.__statuses")
                    seen["detail"] = page.text_content("#detail")
                finally:
                    browser.close()
            return seen

        seen: dict[str, Any] = {}

        async def run_browser() -> None:
            seen.update(await trio.to_thread.run_sync(browse))

        async with trio.open_nursery() as inner:
            inner.start_soon(run_browser)
            try:
                code = await host.wait(50)
            finally:
                host_done.set()
    finally:
        await host.stop()

    done = host.find(r"done frames (\d+) fps ([\d.]+) latency_ms (\S+)")
    assert code == 0 and done, host.output()
    frames, fps, latency = int(done.group(1)), float(done.group(2)), done.group(3)
    assert frames >= FRAMES, host.output()
    assert host.find(r"first-frame user 2 latency_ms \S+ size 1280x720"), host.output()
    assert snapshot.stat().st_size > 1000
    assert seen["prefill"] == (room, "Ann")
    assert seen["status_sharing"] == "sharing"
    assert seen["statuses"][:3] == ["not sharing", "starting", "waiting"], seen["statuses"]
    assert "sharing" in seen["statuses"] and seen["statuses"][-1] == "stopped"
    assert "stopped viewing" in seen["detail"]
    assert seen["capture"] == [1280, 720]
    assert seen["errors"] == [], seen["errors"]
    _same_origin_or_relay(seen, relay.web, relay.url)
    assert _loopback_signaling(seen["sent"]) >= 1  # the page trickles its candidates
    assert (ARTIFACTS / "share-page.png").stat().st_size > 10_000
    print(f"\n[/share → observer-peer host] rtc/request → first decoded frame {latency} ms; "
          f"{frames} frames at {fps:.1f} fps; click → connected {seen['connected_s']:.2f} s")
    record_property("share_first_frame_latency_ms", latency)
    record_property("share_frames", frames)
    record_property("share_fps", fps)


async def test_view_page_from_observer_peer_student(
    relay: Relay, nursery: trio.Nursery, tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    from playwright.sync_api import sync_playwright

    creator, created = await relay.host()
    room, token = created["room_id"], created["token"]
    await creator.aclose()  # the page takes the host over with room/rehost
    url = f"{relay.web}/view?room={room}&user_id=1&token={token}&loopback=1"
    ARTIFACTS.mkdir(exist_ok=True)
    students: list[PeerProcess] = []

    async def start_student() -> None:
        students.append(await PeerProcess.start(nursery, "student", [
            "student", "--url", f"{relay.url}/observer", "--room", str(room), "--name", "Ann",
            "--duration", "40",
        ], tmp_path))

    def browse() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        with sync_playwright() as pw:
            browser = _launch(pw)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                _watch(page, seen)
                page.goto(url)
                page.wait_for_selector('#conn[data-state="online"]', timeout=10_000)
                seen["status_online"] = page.text_content("#status")
                trio.from_thread.run(start_student)
                allow = page.wait_for_selector("button[data-user-id]", timeout=20_000)
                seen["request_name"] = page.text_content("#requests .request .name")
                page.wait_for_timeout(500)  # let the request card's entry animation finish
                page.screenshot(path=str(ARTIFACTS / "view-page-request.png"))
                seen["allow_for"] = allow.get_attribute("data-user-id")
                allowed = time.monotonic()
                allow.click()
                page.wait_for_function(
                    ENOUGH_FRAMES,
                    timeout=20_000)
                seen["frames_s"] = time.monotonic() - allowed
                seen["video"] = page.evaluate("""() => {
                    const v = document.querySelector('video#remote');
                    const q = v.getVideoPlaybackQuality();
                    return {width: v.videoWidth, height: v.videoHeight,
                            frames: Number(v.dataset.frames), decoded: q.totalVideoFrames,
                            first_frame_ms: Number(v.dataset.firstFrameMs)};
                }""")
                seen["status_viewing"] = page.text_content("#status")
                seen["watching"] = page.text_content("#watching")
                page.screenshot(path=str(ARTIFACTS / "view-page.png"))
                page.click("#stop")
                page.wait_for_selector("#stop", state="hidden", timeout=5_000)
            finally:
                browser.close()
        return seen

    try:
        seen = await trio.to_thread.run_sync(browse)
        assert students, "the student was never started"
        code = await students[0].wait(15)
    finally:
        for student in students:
            await student.stop()
    student = students[0]
    assert code == 0, student.output()
    assert student.find(r"^allowed$"), student.output()
    # "Stop viewing" sends rtc/stop and closes the connection: the student sees either first.
    assert student.find(r"^done sent \d+ fps [\d.]+ connected yes "
                        r"reason (stop|connection closed)$"), student.output()
    assert seen["status_online"] == "connected"
    assert seen["request_name"] == "Ann" and seen["allow_for"] == "2"
    assert seen["video"]["width"] == 640 and seen["video"]["height"] == 360, seen["video"]
    assert seen["video"]["decoded"] >= FRAMES, seen["video"]
    assert seen["status_viewing"] == "viewing"
    assert seen["watching"] == "Ann's screen"
    assert seen["errors"] == [], seen["errors"]
    _same_origin_or_relay(seen, relay.web, relay.url)
    _loopback_signaling(seen["sent"])
    print(f"\n[observer-peer student → /view] allow → first frame "
          f"{seen['video']['first_frame_ms']} ms; {FRAMES} frames after {seen['frames_s']:.2f} s; "
          f"{seen['video']['width']}x{seen['video']['height']}")
    record_property("view_first_frame_ms", seen["video"]["first_frame_ms"])


async def test_share_page_to_view_page(relay: Relay) -> None:
    """Both pages in Chromium: the student's /share offers, the teacher's /view answers."""
    from playwright.sync_api import sync_playwright

    creator, created = await relay.host()
    room, token = created["room_id"], created["token"]
    await creator.aclose()
    view_url = f"{relay.web}/view?room={room}&user_id=1&token={token}&loopback=1"
    share_url = f"{relay.web}/share?room={room}&name=Bea&loopback=1"
    ARTIFACTS.mkdir(exist_ok=True)

    def browse() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        student_seen: dict[str, Any] = {}
        with sync_playwright() as pw:
            browser = _launch(pw)
            try:
                teacher = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
                student = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
                _watch(teacher, seen)
                _watch(student, student_seen)
                teacher.goto(view_url)
                teacher.wait_for_selector('#conn[data-state="online"]', timeout=10_000)
                student.goto(share_url)
                student.click("#share")
                student.wait_for_function(
                    "() => document.querySelector('#status').textContent === 'waiting'",
                    timeout=10_000)
                allowed = time.monotonic()
                teacher.click('button[data-user-id="2"]', timeout=10_000)
                teacher.wait_for_function(
                    ENOUGH_FRAMES,
                    timeout=20_000)
                seen["frames_s"] = time.monotonic() - allowed
                seen["video"] = teacher.evaluate("""() => {
                    const v = document.querySelector('video#remote');
                    return {width: v.videoWidth, height: v.videoHeight,
                            first_frame_ms: Number(v.dataset.firstFrameMs)};
                }""")
                seen["student_status"] = student.text_content("#status")
                student.wait_for_selector('body[data-connection="connected"]', timeout=5_000)
                teacher.screenshot(path=str(ARTIFACTS / "view-page-from-browser.png"))
                # The student ends the capture: the teacher's page must notice (rtc/stop).
                student.click("#stop")
                teacher.wait_for_selector("#stop", state="hidden", timeout=5_000)
                seen["student_after"] = student.text_content("#status")
                seen["teacher_log"] = teacher.text_content("#log")
                # "Share again" reuses the joined session: a new request reaches the teacher.
                student.click("#share")
                teacher.wait_for_selector('button[data-user-id="2"]', timeout=10_000)
                seen["student_again"] = student.text_content("#status")
            finally:
                browser.close()
        seen["student_errors"] = student_seen["errors"]
        seen["requests"] += student_seen["requests"]
        seen["student_sent"] = student_seen["sent"]
        return seen

    seen = await trio.to_thread.run_sync(browse)
    assert seen["video"]["width"] == 1280 and seen["video"]["height"] == 720, seen["video"]
    assert seen["student_status"] == "sharing"
    assert seen["student_after"] == "stopped"
    assert "Bea stopped sharing." in seen["teacher_log"]
    assert seen["student_again"] == "waiting"
    assert seen["errors"] == [] and seen["student_errors"] == []
    _same_origin_or_relay(seen, relay.web, relay.url)
    _loopback_signaling(seen["sent"])
    assert _loopback_signaling(seen["student_sent"]) >= 1
    print(f"\n[/share → /view] allow → first frame {seen['video']['first_frame_ms']} ms; "
          f"{FRAMES} frames after {seen['frames_s']:.2f} s")
