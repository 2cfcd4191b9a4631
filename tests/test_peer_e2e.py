"""End to end: the real relay in a subprocess, two `observer-peer` processes sharing a screen.

The host creates a room and waits for 30 decoded frames; the student joins, requests, and
shares its synthetic test pattern.  Once over `/observer` (plain framing, rtc/*), once over
`/ws` (seed dialect).  Latency (host's rtc/request → first decoded frame) is printed and
recorded as a property, never asserted: timing depends on the machine.

OBSERVER_RELAY_CMD (shell-style) replaces the relay command, e.g. to try a different build.
"""

from __future__ import annotations

import os
import queue
import re
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, NoReturn

import numpy as np
import pytest
from PIL import Image

from signaling.peer.media import decode_counter

ROOT = Path(__file__).resolve().parents[1]
FRAMES = 30


class Proc:
    """A subprocess whose stdout lines are collected by a thread (no pipe can fill up)."""

    def __init__(self, name: str, args: list[str], stderr_path: Path) -> None:
        self.name = name
        self.args = args
        self.stderr_path = stderr_path
        self._stderr: IO[bytes] = stderr_path.open("wb")
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self.popen = subprocess.Popen(
            args,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            bufsize=1,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            line = line.rstrip("\n")
            self.lines.append(line)
            self._queue.put(line)
        self._queue.put(None)

    def wait_line(
        self, match: Callable[[str], re.Match[str] | None], timeout: float
    ) -> re.Match[str]:
        """Return the first stdout line matching `match`, or fail with the process output."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.fail(f"no matching line within {timeout:g} s")
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                self.popen.wait(5)
                self.fail(f"exited with {self.popen.returncode} before the expected line")
            found = match(line)
            if found:
                return found

    def wait(self, timeout: float) -> int:
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            self.fail(f"still running after {timeout:g} s")
        self._reader.join(5)
        return code

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(6)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        self._reader.join(5)
        self._stderr.close()

    def output(self) -> str:
        if not self._stderr.closed:
            self._stderr.flush()
        err = self.stderr_path.read_text(errors="replace")
        out = "\n".join(self.lines)
        return f"--- {self.name} stdout\n{out}\n--- {self.name} stderr\n{err}"

    def fail(self, why: str) -> NoReturn:
        pytest.fail(f"{self.name}: {why}\n{self.output()}", pytrace=False)


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start `python -m relay serve --port 0 --http-port 0`; yield its ws://HOST:PORT base."""
    custom = os.environ.get("OBSERVER_RELAY_CMD")
    cmd = (
        shlex.split(custom)
        if custom
        else [sys.executable, "-m", "relay", "serve", "--port", "0", "--http-port", "0"]
    )
    logs = tmp_path_factory.mktemp("relay")
    proc = Proc("relay", cmd, logs / "relay.stderr")
    try:
        ws = proc.wait_line(re.compile(r"relay listening on (ws://\S+)").search, 20)
        proc.wait_line(re.compile(r"web listening on (http://\S+)").search, 5)
        yield ws.group(1).rstrip("/")
    finally:
        proc.stop()


def _peer_cmd(*args: str) -> list[str]:
    script = Path(sys.executable).with_name("observer-peer")
    base = [str(script)] if script.exists() else [sys.executable, "-m", "signaling.peer.cli"]
    return [*base, *args]


def _share(
    relay: str, path: str, dialect: str, tmp_path: Path, record: Callable[[str, object], None]
) -> None:
    url = f"{relay}{path}"
    snapshot = tmp_path / f"{dialect}.png"
    host = Proc(
        f"host[{dialect}]",
        _peer_cmd(
            "host",
            "--url",
            url,
            "--dialect",
            dialect,
            "--create",
            "--name",
            "Teacher",
            "--count",
            str(FRAMES),
            "--duration",
            "60",
            "--snapshot",
            str(snapshot),
        ),
        tmp_path / "host.stderr",
    )
    student: Proc | None = None
    try:
        room = host.wait_line(re.compile(r"^room (\S+)").match, 20).group(1)
        student = Proc(
            f"student[{dialect}]",
            _peer_cmd(
                "student",
                "--url",
                url,
                "--dialect",
                dialect,
                "--room",
                room,
                "--name",
                "Ann",
                "--duration",
                "60",
            ),
            tmp_path / "student.stderr",
        )
        # Wait for the host, but stop early if the student has already given up.
        deadline = time.monotonic() + 75
        while host.popen.poll() is None and time.monotonic() < deadline:
            if student.popen.poll() not in (None, 0):
                host.stop()
                break
            time.sleep(0.1)
        host_rc = host.wait(max(1.0, deadline - time.monotonic()))
        student_rc = student.wait(15)
        done = next((ln for ln in host.lines if ln.startswith("done frames ")), None)
        if host_rc != 0 or student_rc != 0 or done is None:
            pytest.fail(
                f"host exit {host_rc}, student exit {student_rc}\n"
                f"{host.output()}\n{student.output()}",
                pytrace=False,
            )
        m = re.match(r"done frames (\d+) fps ([\d.]+) latency_ms (\S+)", done)
        assert m, done
        frames, fps, latency = int(m.group(1)), float(m.group(2)), m.group(3)
        assert frames >= FRAMES, host.output()
        student_done = next(ln for ln in student.lines if ln.startswith("done sent "))
        assert "connected yes" in student_done, student.output()
        # The host decoded the student's frame counter from the pixels themselves.
        summary = next(ln for ln in host.lines if ln.startswith("summary "))
        assert re.search(r"counter \d+", summary), summary
        img = np.asarray(Image.open(snapshot).convert("RGB"), dtype=np.uint8)
        assert decode_counter(img) is not None, "snapshot does not carry a readable counter"
        print(
            f"\n[{dialect}] rtc/request -> first decoded frame: {latency} ms; "
            f"{frames} frames at {fps:.1f} fps; {summary}"
        )
        record(f"{dialect}_first_frame_latency_ms", latency)
        record(f"{dialect}_frames", frames)
        record(f"{dialect}_fps", fps)
    finally:
        if student is not None:
            student.stop()
        host.stop()


@pytest.mark.timeout(90)
def test_screen_share_over_observer_plain_framing(
    relay: str, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    _share(relay, "/observer", "observer", tmp_path, record_property)


@pytest.mark.timeout(90)
def test_screen_share_over_ws_seed_dialect(
    relay: str, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    _share(relay, "/ws", "ws", tmp_path, record_property)
