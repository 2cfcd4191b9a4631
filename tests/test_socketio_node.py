"""The Node.js socket.io-client 4.x against the relay (§3.2, Appendix B).

The test run installs ``socket.io-client@4`` from npm into a temporary folder, then keeps it in
``~/.cache/observer-relay-test-npm/`` (``$XDG_CACHE_HOME`` if set) keyed by the version range,
so later runs need no network. A JS script written by the test connects a host and a student
with ``transports: ["websocket"]`` and prints one JSON object per line: every event each
socket receives, every acknowledgement and every disconnect, which the test then checks.

Skipped only when ``node``/``npm`` are missing or npm cannot reach the registry.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.support import Relay

CLIENT_SPEC = "socket.io-client@4"
NETWORK_ERRORS = ("ENOTFOUND", "EAI_AGAIN", "ECONNREFUSED", "ECONNRESET", "ETIMEDOUT",
                  "ENETUNREACH", "EHOSTUNREACH", "ERR_SOCKET_TIMEOUT", "network request",
                  "request to http")
OUTDATED = ("You have an outdated version of the plugin. Please install the latest version "
            "1.2.15")

SCRIPT = r"""
const { io } = require(process.env.SIO_CLIENT_MODULE);
const url = process.argv[2];
const opts = { transports: ["websocket"], forceNew: true, reconnectionDelay: 100 };
const out = (line) => process.stdout.write(JSON.stringify(line) + "\n");
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

setTimeout(() => { out({ fatal: "timeout" }); process.exit(2); }, 20000).unref();

// A socket whose every event is printed and kept, so that the script can wait for one.
function open(who) {
  const socket = io(url, opts);
  const seen = [];
  const waiters = [];
  socket.onAny((event, ...args) => {
    out({ who, event, data: args.length ? args[0] : null, extra: args.length > 1 });
    seen.push([event, args[0]]);
    for (const w of waiters.splice(0)) w();
  });
  socket.on("connect", () => out({ who, connect: socket.id }));
  socket.on("disconnect", (reason) => out({ who, disconnect: reason }));
  socket.on("connect_error", (err) => out({ who, connect_error: String(err) }));
  // Resolves with the data of the first `event` not yet returned by an earlier wait.
  let cursor = 0;
  socket.next = async (event) => {
    for (;;) {
      for (; cursor < seen.length; cursor++) {
        if (seen[cursor][0] === event) return seen[cursor++][1];
      }
      await new Promise((resolve) => waiters.push(resolve));
    }
  };
  // The ack is printed from its callback, so that it is in order with the events around it.
  socket.call = (event, data) => new Promise((resolve, reject) => {
    socket.timeout(5000).emit(event, data, (err, result) => {
      if (err) return reject(err);
      out({ who, ack: event, result });
      resolve(result);
    });
  });
  return new Promise((resolve) => socket.once("connect", () => resolve(socket)));
}

async function main() {
  const host = await open("host");
  await host.call("room/create", { name: "Teacher" });
  const roomId = (await host.next("room/created")).room_id;

  const student = await open("student");
  await student.call("room/join", { room_id: roomId, name: "Ann", version: "1.2.9" });
  await host.next("room/update");
  await host.next("room/update");

  student.emit("message/to_mentor", { room_id: roomId, content: "Hi from node" });
  await host.next("message/to_mentor");
  await host.call("message/to_client", { user_id: 2, room_id: roomId, content: "Hello back" });
  await student.next("message/to_client");
  await student.call("no/such/event", {});

  await host.call("room/close", { room_id: roomId });
  await student.next("room/closed");
  await sleep(600);  // a reconnect would have happened by now
  // v2 (§6.1): the host's socket stays open, unbound: the teacher UI creates the next room.
  await host.call("room/create", { name: "Teacher" });
  out({ final: {
    host: { connected: host.connected, active: host.active },
    student: { connected: student.connected, active: student.active },
  } });
  process.exit(0);
}

main().catch((err) => { out({ fatal: String((err && err.stack) || err) }); process.exit(1); });
"""


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "observer-relay-test-npm" / CLIENT_SPEC.replace("/", "_")


def _module(prefix: Path) -> Path:
    return prefix / "node_modules" / "socket.io-client"


def _npm_install(prefix: Path) -> None:
    try:
        proc = subprocess.run(
            ["npm", "install", "--prefix", str(prefix), "--no-audit", "--no-fund",
             "--loglevel=error", CLIENT_SPEC],
            capture_output=True, text=True, timeout=300,
        )
    except subprocess.TimeoutExpired:
        pytest.skip(f"npm install {CLIENT_SPEC} timed out (registry unreachable?)")
    if proc.returncode != 0:
        output = proc.stdout + proc.stderr
        network = [line.strip() for line in output.splitlines()
                   if any(marker in line for marker in NETWORK_ERRORS)]
        if network:
            pytest.skip(f"npm cannot reach the registry to install {CLIENT_SPEC}: "
                        f"{network[0][:300]}")
        pytest.fail(f"npm install {CLIENT_SPEC} failed:\n{output}")
    assert (_module(prefix) / "package.json").is_file(), proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def sio_client_module(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of an installed ``socket.io-client`` 4.x package (cached between runs)."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            pytest.skip(f"`{tool}` is not installed; the Node.js socket.io-client test needs it")
    cached = _cache_dir()
    if (_module(cached) / "package.json").is_file():
        return _module(cached)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".install-", dir=cached.parent))
    except OSError:  # no writable cache: install for this run only
        staging = tmp_path_factory.mktemp("npm")
        _npm_install(staging)
        return _module(staging)
    try:
        _npm_install(staging)
        try:
            staging.rename(cached)  # atomic: a concurrent run may have won the race
        except OSError:
            if not (_module(cached) / "package.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return _module(cached)


async def test_node_socketio_client(relay: Relay, sio_client_module: Path,
                                    tmp_path: Path) -> None:
    version = json.loads((sio_client_module / "package.json").read_text())["version"]
    assert version.split(".")[0] == "4", version
    script = tmp_path / "flow.js"
    script.write_text(SCRIPT)
    env = dict(os.environ, SIO_CLIENT_MODULE=str(sio_client_module))
    url = f"http://127.0.0.1:{relay.server.relay_port}"
    with trio.fail_after(30):
        proc = await trio.run_process(["node", str(script), url], capture_stdout=True,
                                      capture_stderr=True, check=False, env=env)
    lines: list[dict[str, Any]] = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    assert proc.returncode == 0, (lines, proc.stderr.decode())
    assert not [line for line in lines if "fatal" in line or "connect_error" in line], lines

    def of(who: str) -> list[Any]:
        """What ``who`` saw, in order: ``(event, data)``, ``("ack", event, result)``, …"""
        seen: list[Any] = []
        for line in lines:
            if line.get("who") != who:
                continue
            if "event" in line:
                assert line["extra"] is False, line  # one argument per server event
                seen.append((line["event"], line["data"]))
            elif "ack" in line:
                seen.append(("ack", line["ack"], line["result"]))
            elif "disconnect" in line:
                seen.append(("disconnect", line["disconnect"]))
            else:
                seen.append(("connect",))
        return seen

    host, student = of("host"), of("student")
    created = host[1][1]
    room_id = created["room_id"]
    ok = {"ok": True}
    assert [h[0] for h in host[:5]] == ["connect", "room/created", "rtc/config", "room/update",
                                        "ack"]
    assert created["user_id"] == 1 and host[4] == ("ack", "room/create", ok)

    assert [s[0] for s in student[:6]] == ["connect", "room/join", "rtc/config", "alerts",
                                           "alert", "ack"]
    assert student[1][1] == {"room_id": room_id, "user_id": 2, "token": student[1][1]["token"]}
    warning = {"type": "WARNING", "message": OUTDATED}
    assert student[3][1] == student[4][1] == warning
    assert student[5] == ("ack", "room/join", ok)

    update = host[5]
    assert update[0] == "room/update"
    assert [(u["id"], u["name"], u["status"]) for u in update[1]["users"]] == [
        (1, "Teacher", "online"), (2, "Ann", "online")]
    to_mentor = host[6]
    assert to_mentor[0] == "message/to_mentor"
    assert (to_mentor[1]["sender"], to_mentor[1]["receiver"], to_mentor[1]["content"]) == (
        2, 1, "Hi from node")
    assert host[7] == ("ack", "message/to_client", ok)

    to_client = student[6]
    assert to_client[0] == "message/to_client"
    assert (to_client[1]["sender"], to_client[1]["receiver"], to_client[1]["content"]) == (
        1, 2, "Hello back")
    error, failed = student[7], student[8]
    assert error[0] == "error" and error[1]["code"] == "unknown_event"
    assert error[1]["event"] == "no/such/event"
    assert failed[:2] == ("ack", "no/such/event") and failed[2]["ok"] is False
    assert failed[2]["error"]["code"] == "unknown_event"

    # room/close: the host's ack, the student's room/closed, then "io server disconnect" (the
    # server's 41) for the student, and no automatic reconnection. v2 (§6.1): the host's
    # socket stays open, unbound, and creates the next room.
    assert [e[0] for e in host[8:]] == ["ack", "room/created", "rtc/config", "room/update",
                                        "ack"]
    assert host[8] == ("ack", "room/close", ok) and host[12] == ("ack", "room/create", ok)
    assert host[9][1]["room_id"] != room_id and host[9][1]["user_id"] == 1
    assert student[9:] == [("room/closed", {"message": "Room closed!"}),
                           ("disconnect", "io server disconnect")]
    final = lines[-1]["final"]
    assert final == {"host": {"connected": True, "active": True},
                     "student": {"connected": False, "active": False}}
