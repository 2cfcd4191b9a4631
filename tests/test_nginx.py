"""The README's "Running behind nginx" configuration, in a real nginx in front of the relay.

The ```` ```nginx ```` block of that README section is parsed and used as it is, except for
the ports (free ports on 127.0.0.1) and the certificate paths (a self-signed certificate
made with the ``openssl`` CLI, or the ``cryptography`` package; without either only the
plain-HTTP ``listen`` is kept and the TLS tests skip). nginx runs as the current user with
``-p <tmpdir>`` and every path inside the temporary directory.

Through it: a lesson with a plain-framing teacher (WebSocket) and a python-socketio student
with default options (HTTP long-polling, then the upgrade), over ``http``/``ws`` and over
``https``/``wss`` (verification off); the relay (``OBSERVER_TRUSTED_PROXIES=127.0.0.1``)
takes the client IP from nginx's ``X-Forwarded-For`` for the failed-join limit, the stats
endpoints and its logs; ``X-Forwarded-Proto: https`` makes the device cookie ``Secure``; a
polling POST larger than nginx's default body limit; idle connections outliving nginx's
read timeout thanks to the relay's pings.

All clients connect from 127.0.0.1, which is also nginx's address (a trusted proxy). To
show a *forwarded* address reaching the relay, a client sends its own ``X-Forwarded-For``
(as a CDN or a second proxy in front of nginx would): nginx appends 127.0.0.1, the relay
skips that trusted hop and takes the client's entry.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import ssl
import subprocess
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import connect_websocket_url
from websockets.asyncio.client import connect as ws_connect

from tests.cluster_support import start_node
from tests.redis_server import free_port, redis_server, redis_url  # noqa: F401  (fixtures)
from tests.support import Client, Relay, StartRelay
from tests.test_seed_clients import COOKIE_FIELD, Http, RawSio, check_message
from tests.test_socketio_flows import (
    JAVA_STEPS,
    Plain,
    Sio,
    alert,
    check_error,
    host_entry,
    room_update,
    student_entry,
)

NGINX = "/usr/sbin/nginx"
README = Path(__file__).resolve().parent.parent / "README.md"
A = "203.0.113.7"
B = "198.51.100.9"

pytestmark = [
    pytest.mark.skipif(not os.access(NGINX, os.X_OK), reason=f"nginx is not installed at {NGINX}"),
    pytest.mark.timeout(120),
]


# -- the documented configuration ---------------------------------------------------------------
def readme_block() -> str:
    """The ```nginx block of the README's "Running behind nginx" section."""
    text = README.read_text()
    m = re.search(r"^## Running behind nginx\n(.*?)(?=^## )", text, re.S | re.M)
    assert m, "README.md has no 'Running behind nginx' section"
    blocks = re.findall(r"^```nginx\n(.*?)^```", m.group(1), re.S | re.M)
    assert len(blocks) == 1, blocks
    return str(blocks[0])


def setting(block: str, name: str) -> str:
    values = re.findall(rf"^\s*{name}\s+([^;]+);", block, re.M)
    assert len(values) == 1, (name, values)
    return str(values[0]).strip()


def seconds(value: str) -> float:
    m = re.fullmatch(r"(\d+)(ms|s|m|h)?", value)
    assert m, value
    return int(m.group(1)) * {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600}[m.group(2)]


def render(block: str, *, relay_ports: list[int], web_port: int, http_port: int,
           https_port: int | None, cert: Path | None, key: Path | None,
           extra: dict[str, str] | None = None) -> str:
    """The README block with this test's ports and paths; each replaced text must occur once."""
    swaps = {
        "server 127.0.0.1:8000;": " ".join(f"server 127.0.0.1:{p};" for p in relay_ports),
        "server 127.0.0.1:8080;": f"server 127.0.0.1:{web_port};",
        "listen 80;": f"listen 127.0.0.1:{http_port};",
        "listen 443 ssl;": f"listen 127.0.0.1:{https_port} ssl;",
        "/etc/ssl/observer/fullchain.pem": str(cert),
        "/etc/ssl/observer/privkey.pem": str(key),
        **(extra or {}),
    }
    for old, new in swaps.items():
        assert block.count(old) == 1, (old, block)
        block = block.replace(old, new)
    if https_port is None:  # no certificate could be made: the plain-HTTP server only
        block = "\n".join(line for line in block.splitlines()
                          if " ssl;" not in line and "ssl_certificate" not in line)
    return block


def make_certificate(tmp: Path) -> tuple[Path, Path] | None:
    """A self-signed certificate for 127.0.0.1: openssl CLI, else ``cryptography``."""
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    openssl = shutil.which("openssl")
    if openssl:
        subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", "/CN=observer.example.org",
                        "-addext", "subjectAltName=DNS:observer.example.org,IP:127.0.0.1",
                        "-keyout", str(key), "-out", str(cert)],
                       check=True, capture_output=True, timeout=60)
        return cert, key
    try:
        import datetime as dt
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        return None
    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "observer.example.org")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(private.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(private, hashes.SHA256()))
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(private.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return cert, key


def insecure_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@dataclass
class Proxied:
    relay: Relay | None  # None: the upstreams are relay processes of a cluster
    http_port: int
    https_port: int | None
    tmp: Path

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def https(self) -> str:
        if self.https_port is None:
            pytest.skip("no TLS: neither the openssl CLI nor the cryptography package")
        return f"https://127.0.0.1:{self.https_port}"

    def base(self, scheme: str) -> str:
        return self.https if scheme == "https" else self.http

    def error_log(self) -> str:
        path = self.tmp / "error.log"
        return path.read_text() if path.exists() else ""


async def run_nginx(nursery: trio.Nursery, tmp: Path, relay: Relay | None,
                    extra: dict[str, str] | None = None,
                    ports: tuple[list[int], int] | None = None) -> Proxied:
    """nginx with the README block in front of ``relay`` (or of the relay ports and web port
    ``ports``); stopped when the nursery ends. The access log names each request's upstream."""
    if relay is not None:
        ports = ([relay.server.relay_port], relay.server.web_port)
    assert ports is not None
    relay_ports, web_port = ports
    for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi", "logs"):
        (tmp / sub).mkdir(exist_ok=True)
    pair = make_certificate(tmp)
    http_port = free_port()
    https_port = free_port() if pair else None
    block = render(readme_block(), relay_ports=relay_ports,
                   web_port=web_port, http_port=http_port, https_port=https_port,
                   cert=pair[0] if pair else None, key=pair[1] if pair else None, extra=extra)
    user = "user root;\n" if os.geteuid() == 0 else ""  # as the current user, as root too
    (tmp / "nginx.conf").write_text(f"""{user}worker_processes 1;
events {{ worker_connections 512; }}
http {{
    log_format upstreams '$request_method $request_uri $status $upstream_addr';
    access_log {tmp}/access.log upstreams;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;

{block}
}}
""")
    process = await trio.lowlevel.open_process(
        [NGINX, "-p", str(tmp), "-c", str(tmp / "nginx.conf"),
         "-g", f"daemon off; pid {tmp}/nginx.pid; error_log {tmp}/error.log;"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proxied = Proxied(relay, http_port, https_port, tmp)

    async def stop_with_nursery() -> None:
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                if process.returncode is None:
                    process.terminate()
                    with trio.move_on_after(5):
                        await process.wait()
                if process.returncode is None:
                    process.kill()
                    await process.wait()

    nursery.start_soon(stop_with_nursery)
    with trio.fail_after(10):
        while True:
            assert process.returncode is None, f"nginx exited:\n{proxied.error_log()}"
            try:
                status, _, _ = await Http.request(http_port, "GET", "/healthz", [])
                if status == 200:
                    break
            except OSError:
                pass
            await trio.sleep(0.05)
    return proxied


@pytest.fixture
async def proxied(nursery: trio.Nursery, start_relay: StartRelay, tmp_path: Path
                  ) -> AsyncIterator[Proxied]:
    relay = await start_relay(trusted_proxies=["127.0.0.1"], join_failure_limit=3)
    yield await run_nginx(nursery, tmp_path, relay)


def in_thread(scenario: Any) -> Any:
    """Run an asyncio scenario (python-socketio, websockets) beside the relay's trio loop."""
    return trio.to_thread.run_sync(lambda: asyncio.run(asyncio.wait_for(scenario(), 45)))


def test_readme_timeouts_outlast_the_relays_pings() -> None:
    from relay.config import Config

    block = readme_block()
    config = Config()
    longest = max(config.heartbeat_interval, config.sio_ping_interval)
    assert seconds(setting(block, "proxy_read_timeout")) > 2 * longest
    assert seconds(setting(block, "proxy_send_timeout")) > 2 * longest
    assert setting(block, "proxy_buffering") == "off"
    assert setting(block, "proxy_http_version") == "1.1"
    size = setting(block, "client_max_body_size")
    m = re.fullmatch(r"(\d+)([km]?)", size.lower())
    assert m, size
    assert int(m.group(1)) * {"": 1, "k": 1024, "m": 1024 ** 2}[m.group(2)] > \
        config.max_message_size


# -- a lesson through nginx --------------------------------------------------------------------
@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_lesson_through_nginx(proxied: Proxied, scheme: str,
                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="relay")
    base = proxied.base(scheme)
    ws_base = base.replace("http", "ws", 1)
    context = insecure_context() if scheme == "https" else None
    seen: dict[str, Any] = {}

    async def scenario() -> None:
        # The teacher: plain framing over a WebSocket through nginx.
        ws = await ws_connect(ws_base + "/observer", ssl=context, open_timeout=5,
                              additional_headers={"X-Forwarded-For": B})
        teacher = Plain(ws)
        created = (await teacher.ok("room/create", {"name": "Teacher"}))[0][1]
        room_id = created["room_id"]
        assert await teacher.ok("steps/all", JAVA_STEPS) == []

        # The student: python-socketio with its default options (polling, then upgrade).
        student = Sio(ssl_verify=False)
        await student.sio.connect(base, headers={"X-Forwarded-For": A}, wait_timeout=5)
        before = await student.ok("room/join", {"room_id": room_id, "name": "Ann",
                                                "version": "1.2.9"})
        assert [e for e, _ in before] == ["room/join", "rtc/config", "steps/all", "alerts",
                                          "alert"]
        uid = before[0][1]["user_id"]
        assert await teacher.expect_one("room/update") == room_update(
            room_id, host_entry("Teacher"), student_entry(uid, "Ann"))

        assert await student.ok("message/to_mentor", {"content": "Help with 2"}) == []
        check_message(await teacher.expect_one("message/to_mentor"), None, uid, 1, "Help with 2")
        assert await teacher.ok("message/to_client", {"user_id": uid, "content": "Sure"}) == []
        check_message(await student.expect_one("message/to_client"), None, 1, uid, "Sure")
        assert await student.ok("steps/status/to_mentor", {"1": "DONE", "2": "HELP",
                                                           "T": "NONE"}) == []
        assert await teacher.expect_one("steps/status/to_mentor") == {
            "user_id": uid, "steps": {"1": "DONE", "2": "HELP"}}
        assert await teacher.ok("steps/status/to_client",
                                {"user_id": uid, "steps": {"1": "ACCEPTED"}}) == []
        accepted = alert("SUCCESS", "Task 1 solution accepted!")
        assert await student.expect("alerts", "alert", "steps/status/to_client") == [
            accepted, accepted, {"1": "ACCEPTED"}]
        assert await teacher.ok("sharing/start", {"user_id": uid}) == []
        assert await student.expect_one("sharing/start") == {}
        files = [{"filename": "main.py", "status": "CREATED", "content": "print('hi')\n"}]
        assert await student.ok("sharing/code_send", {"files": files}) == []
        assert await teacher.expect_one("sharing/code_send") == {
            "room_id": room_id, "user_id": uid, "files": files}
        seen["final_transport"] = student.sio.transport()

        # The stats API on the web port, through the same server block.
        url = f"{base}/api/rooms/{room_id}/stats?key={created['stats_key']}"
        with await asyncio.to_thread(urllib.request.urlopen, url, context=context) as answer:
            assert answer.status == 200
            stats = json.loads(answer.read())
        assert [(s["user_id"], s["status"], s["percent"]) for s in stats["students"]] == [
            (uid, "online", 50)]

        assert await teacher.ok("room/close", {}) == []
        assert await student.expect_one("room/closed") == {"message": "Room closed!"}
        await student.disconnected()
        assert teacher.close_code is None  # the teacher's connection stays open (§6.1)
        await ws.close()

    await in_thread(scenario)
    assert seen["final_transport"] == "websocket"
    lines = [(r.getMessage(), getattr(r, "endpoint", None), getattr(r, "transport", None),
              getattr(r, "ip", None)) for r in caplog.records]
    # The student's session opened on polling and upgraded through nginx; the relay saw
    # the forwarded client addresses, not nginx's.
    assert ("connection opened", "socketio", "polling", A) in lines, lines
    assert ("connection upgraded", "socketio", "websocket", A) in lines, lines
    assert ("connection opened", "observer", "websocket", B) in lines, lines
    assert not [line for line in lines if line[0] == "connection opened"
                and line[3] == "127.0.0.1"], lines
    assert "[error]" not in proxied.error_log() and "[crit]" not in proxied.error_log()


@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_screen_sharing_signaling_through_nginx(proxied: Proxied, scheme: str) -> None:
    """The Naytonpeilaus pages' ``/ws/`` dialect (§7) through the same server block, as its
    production frontend connects: ``wss://<host>/ws/``."""
    nursery = proxied.relay.nursery  # type: ignore[union-attr]
    base = proxied.base(scheme).replace("http", "ws", 1)
    context = insecure_context() if scheme == "https" else None

    async def open_ws(forwarded: str) -> Any:
        return await connect_websocket_url(nursery, base + "/ws/", ssl_context=context,
                                           extra_headers=[("X-Forwarded-For", forwarded)])

    async def send(ws: Any, **frame: Any) -> None:
        await ws.send_message(json.dumps(frame))

    async def recv(ws: Any) -> dict[str, Any]:
        with trio.fail_after(3):
            return dict(json.loads(await ws.get_message()))

    host, user = await open_ws(B), await open_ws(A)
    await send(host, type="CREATE_ROOM", username="teacher")
    created = await recv(host)
    assert created["type"] == "ROOM_CREATED" and re.fullmatch(r"[a-z0-9]{4}", created["roomid"])
    room = created["roomid"]
    await send(user, type="JOIN_ROOM", roomid=f" {room.upper()} ", username="ann")
    assert await recv(user) == {"type": "ROOM_JOINED", "roomid": room}
    assert await recv(host) == {"type": "USER_JOINED", "username": "ann"}
    await send(user, type="RCP_OFFER", sdp="v=0 offer")
    assert await recv(host) == {"type": "RCP_OFFER", "sdp": "v=0 offer", "username": "ann"}
    await send(host, type="RCP_ANSWER", username="ann", sdp="v=0 answer")
    assert await recv(user) == {"type": "RCP_ANSWER", "sdp": "v=0 answer"}
    candidate = {"candidate": "candidate:1 1 udp 1 192.0.2.1 5000 typ host", "sdpMid": "0"}
    await send(user, type="ICE_CANDIDATE", candidate=candidate)
    assert await recv(host) == {"type": "ICE_CANDIDATE", "candidate": candidate,
                                "username": "ann"}
    await send(host, type="ICE_CANDIDATE", username="ann", candidate=candidate)
    assert await recv(user) == {"type": "ICE_CANDIDATE", "candidate": candidate}
    await send(user, type="STOP_SHARING")
    assert await recv(host) == {"type": "STOP_SHARING", "username": "ann"}
    await user.aclose()
    assert await recv(host) == {"type": "USER_LEFT", "username": "ann"}
    await host.aclose()


# -- client addresses --------------------------------------------------------------------------
async def test_failed_join_limit_counts_the_forwarded_address(proxied: Proxied) -> None:
    relay = proxied.relay
    nursery = relay.nursery
    host, created = await relay.host()  # directly: a real room to knock at
    room_id = created["room_id"]

    async def knock(forwarded: str | None, target: int, code: str | None) -> None:
        headers = [("X-Forwarded-For", forwarded)] if forwarded else []
        ws = await connect_websocket_url(nursery, proxied.http.replace("http", "ws", 1)
                                         + "/observer", extra_headers=headers)
        client = Client(ws)
        if code is None:
            await client.ok("room/join", {"room_id": target, "name": f"S{forwarded}"})
        else:
            await client.fail("room/join", {"room_id": target, "name": "Eve"}, code)
        await client.aclose()

    for _ in range(3):  # join_failure_limit=3
        await knock(A, room_id + 1, "room_not_found")
    await knock(A, room_id, "rate_limited")  # no lookup, even for the real room
    # Over Socket.IO (polling through nginx is covered by the lesson) and on the web port.
    sio = await RawSio.open(nursery, proxied.http.replace("http", "ws", 1),
                            headers=[("X-Forwarded-For", A)])
    await sio.emit("room/rehost", {"room_id": room_id, "user_id": 1,
                                   "token": created["token"]})
    check_error((await sio.expect("error"))[0], "rate_limited", "room/rehost")
    await sio.aclose()
    status, _, body = await Http.request(
        proxied.http_port, "GET", f"/api/rooms/{room_id}/stats?key={created['stats_key']}",
        [("X-Forwarded-For", A)])
    assert (status, json.loads(body)) == (429, {"error": "rate_limited"})

    # B and nginx's own clients (no header: 127.0.0.1) have their own counts.
    await knock(B, room_id, None)
    await host.expect("room/update")
    await knock(None, room_id + 1, "room_not_found")
    status, _, _ = await Http.request(
        proxied.http_port, "GET", f"/api/rooms/{room_id}/stats?key={created['stats_key']}",
        [("X-Forwarded-For", B)])
    assert status == 200
    # B's 404s on the web port count for B: the third one reaches the limit.
    for expected in (404, 404, 404, 429):
        status, _, _ = await Http.request(proxied.http_port, "GET",
                                          f"/api/rooms/{room_id + 1}/stats?key=x",
                                          [("X-Forwarded-For", B)])
        assert status == expected
    await knock(B, room_id, "rate_limited")
    await knock(None, room_id, None)  # 127.0.0.1: one failure so far


# -- TLS and the Secure cookie ------------------------------------------------------------------
async def test_tls_termination_marks_the_device_cookie_secure(proxied: Proxied) -> None:
    nursery = proxied.relay.nursery
    context = insecure_context()
    https = proxied.https
    wss = https.replace("https", "wss", 1)

    secure = await RawSio.open(nursery, wss, ssl_context=context)
    assert len(secure.set_cookies) == 1 and COOKIE_FIELD.match(secure.set_cookies[0])
    assert secure.set_cookies[0].endswith("; Secure"), secure.set_cookies
    await secure.emit("room/create", {"name": "Host"})
    created, _, _ = await secure.expect("room/created", "rtc/config", "room/update")

    ws = await connect_websocket_url(nursery, wss + "/observer", ssl_context=context)
    fields = [v.decode() for k, v in ws.handshake_headers if k == b"set-cookie"]
    assert len(fields) == 1 and fields[0].endswith("; Secure"), fields
    await ws.aclose()
    plain = await RawSio.open(nursery, proxied.http.replace("http", "ws", 1))
    assert len(plain.set_cookies) == 1 and not plain.set_cookies[0].endswith("Secure")
    await plain.aclose()

    # The polling handshake over https.
    stream = await trio.open_tcp_stream("127.0.0.1", int(https.rsplit(":", 1)[1]))
    tls = trio.SSLStream(stream, context, server_hostname="observer.example.org")
    await tls.send_all(b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\n"
                       b"Host: observer.example.org\r\nConnection: close\r\n\r\n")
    data = b""
    with trio.fail_after(5):
        while True:
            try:
                chunk = await tls.receive_some(65536)
            except trio.BrokenResourceError:
                break
            if not chunk:
                break
            data += chunk
    with trio.move_on_after(1):
        await tls.aclose()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert body.startswith(b"0{"), body
    cookies = [line.split(b":", 1)[1].strip().decode() for line in head.split(b"\r\n")
               if line.lower().startswith(b"set-cookie:")]
    assert len(cookies) == 1 and COOKIE_FIELD.match(cookies[0])
    assert cookies[0].endswith("; Secure"), cookies

    # The teacher page reloads over wss with its (Secure) cookie: the tokenless rehost works.
    await secure.aclose()
    again = await RawSio.open(nursery, wss, cookie=secure.cookie, ssl_context=context)
    assert again.set_cookies == []
    await again.emit("room/rehost", {"room_id": created["room_id"], "user_id": 1})
    _, update = await again.expect("rtc/config", "room/update")
    assert update["id"] == created["room_id"]
    await again.aclose()


# -- large polling messages and idle connections ------------------------------------------------
async def test_large_code_send_over_polling_through_nginx(proxied: Proxied) -> None:
    """A polling POST carries a whole message: 2 MiB of code, above nginx's 1 MiB default."""
    content = "x = 1  # padding\n" * (2 * 1024 * 1024 // 17)

    async def scenario() -> None:
        teacher = Plain(await ws_connect(proxied.http.replace("http", "ws", 1) + "/observer",
                                         open_timeout=5, max_size=None))
        room_id = (await teacher.ok("room/create", {"name": "Teacher"}))[0][1]["room_id"]
        student = Sio()
        await student.sio.connect(proxied.http, transports=["polling"], wait_timeout=5)
        joined = (await student.ok("room/join", {"room_id": room_id, "name": "Ann"}))[0][1]
        await teacher.expect("room/update")
        assert await teacher.ok("sharing/start", {"user_id": joined["user_id"]}) == []
        await student.expect("sharing/start")
        files = [{"filename": "big.py", "status": "CREATED", "content": content}]
        assert await student.ok("sharing/code_send", {"files": files}) == []
        got = await teacher.expect_one("sharing/code_send")
        assert got["files"][0]["content"] == content
        assert student.sio.transport() == "polling"
        await student.sio.disconnect()
        await teacher.ws.close()

    await in_thread(scenario)
    log = [line.split() for line in (proxied.tmp / "access.log").read_text().splitlines()]
    posts = [fields for fields in log if fields[0] == "POST"]
    assert posts and {fields[2] for fields in posts} == {"200"}, posts  # no 413


async def test_idle_connections_outlive_the_proxy_read_timeout(
        nursery: trio.Nursery, start_relay: StartRelay, tmp_path: Path) -> None:
    """The principle behind the README's timeout: the relay's pings keep an idle connection
    busy, so nginx never times it out while its read timeout is longer than the ping
    interval (here scaled down: 2 s timeout, pings every 0.5 s, 5 s of silence)."""
    relay = await start_relay(trusted_proxies=["127.0.0.1"], heartbeat_interval=0.5,
                              sio_ping_interval=0.5, sio_ping_timeout=1.0)
    block = readme_block()
    timeout = f"proxy_read_timeout {setting(block, 'proxy_read_timeout')};"
    proxied = await run_nginx(nursery, tmp_path, relay,
                              extra={timeout: "proxy_read_timeout 2s;"})

    async def scenario() -> None:
        teacher = Plain(await ws_connect(proxied.http.replace("http", "ws", 1) + "/observer",
                                         open_timeout=5))
        room_id = (await teacher.ok("room/create", {"name": "Teacher"}))[0][1]["room_id"]
        students = []
        for transports, name in ((["websocket"], "Ann"), (["polling"], "Bob")):
            student = Sio()
            await student.sio.connect(proxied.http, transports=transports, wait_timeout=5)
            await student.ok("room/join", {"room_id": room_id, "name": name})
            await teacher.expect("room/update")
            students.append(student)
        await asyncio.sleep(5)
        for student in students:
            assert student.sio.connected and student.disconnects == []
            assert await student.ok("message/to_mentor", {"content": "still here"}) == []
            await teacher.expect("message/to_mentor")
        assert teacher.close_code is None
        assert await teacher.ok("room/close", {}) == []
        await teacher.ws.close()

    await in_thread(scenario)


# -- several relay nodes, no sticky sessions ----------------------------------------------------
async def test_polling_lesson_through_nginx_in_front_of_two_nodes(
        nursery: trio.Nursery, redis_url: str, tmp_path: Path) -> None:  # noqa: F811
    """The README's upstream block with two relay nodes (round robin, no stickiness): a
    polling-only student's requests land on both nodes and the lesson loses nothing."""
    env = {"OBSERVER_TRUSTED_PROXIES": "127.0.0.1", "OBSERVER_CLUSTER_HANDOFF": "0"}
    nodes = [await start_node(nursery, redis_url, **env),
             await start_node(nursery, redis_url, **env)]
    try:
        proxied = await run_nginx(nursery, tmp_path, None,
                                  ports=([n.port for n in nodes], nodes[0].web_port))
        rounds = 15

        async def scenario() -> None:
            teacher = Plain(await ws_connect(proxied.http.replace("http", "ws", 1)
                                             + "/observer", open_timeout=5))
            room_id = (await teacher.ok("room/create", {"name": "Teacher"}))[0][1]["room_id"]
            assert await teacher.ok("steps/all", JAVA_STEPS) == []
            student = Sio()
            await student.sio.connect(proxied.http, transports=["polling"], wait_timeout=5)
            joined = (await student.ok("room/join", {"room_id": room_id, "name": "Ann"}))[0][1]
            uid = joined["user_id"]
            await teacher.expect("room/update")
            for i in range(rounds):
                assert await student.ok("message/to_mentor", {"content": f"q{i}"}) == []
                check_message(await teacher.expect_one("message/to_mentor"), None, uid, 1,
                              f"q{i}")
                assert await teacher.ok("message/to_client",
                                        {"user_id": uid, "content": f"a{i}"}) == []
                check_message(await student.expect_one("message/to_client"), None, 1, uid,
                              f"a{i}")
            assert await student.ok("steps/status/to_mentor", {"1": "HELP", "T": "NONE"}) == []
            assert await teacher.expect_one("steps/status/to_mentor") == {
                "user_id": uid, "steps": {"1": "HELP"}}
            assert student.sio.transport() == "polling"
            assert await teacher.ok("room/close", {}) == []
            assert await student.expect_one("room/closed") == {"message": "Room closed!"}
            await student.disconnected()
            await teacher.ws.close()

        await in_thread(scenario)
        log = (tmp_path / "access.log").read_text().splitlines()
        polls = [line.split() for line in log if "/socket.io/" in line and "sid=" in line]
        # After room/close the server ended the session (its 41 was the last packet), so
        # the client's own close packet and last long-poll may find it gone (400): only
        # those trailing requests may fail.
        statuses = [p[2] for p in polls]
        served = len(statuses)
        while served and statuses[served - 1] == "400":
            served -= 1
        assert len(statuses) - served <= 2 and set(statuses[:served]) == {"200"}, polls
        upstreams = {p[3] for p in polls[:served]}
        assert upstreams == {f"127.0.0.1:{n.port}" for n in nodes}, upstreams
    finally:
        for node in nodes:
            if node.process.returncode is None:
                node.process.terminate()


# -- the web port's pages through the same server block ------------------------------------------
async def test_web_port_pages_and_event_stream_through_nginx(proxied: Proxied) -> None:
    relay = proxied.relay
    assert relay is not None
    host, created = await relay.host()
    room_id, key = created["room_id"], created["stats_key"]
    port = proxied.http_port

    status, _, body = await Http.request(port, "GET", f"/roomstats/{room_id}?key={key}", [])
    assert status == 200 and f"Room # {room_id}".encode() in body
    assets = re.findall(rb'(?:src|href)="(/static/[^"]+)"', body)
    status, _, share = await Http.request(port, "GET", f"/share?room={room_id}&name=Ann&relay="
                                          "wss://observer.example.org/observer", [])
    assert status == 200, share
    assets += re.findall(rb'(?:src|href)="(/static/[^"]+)"', share)
    assert assets
    for asset in assets:
        status, _, _ = await Http.request(port, "GET", asset.decode(), [])
        assert status == 200, asset
    assert (await Http.request(port, "GET", "/metrics", []))[0] == 404
    status, _, health = await Http.request(port, "GET", "/healthz", [])
    assert status == 200 and json.loads(health)["status"] == "ok"

    # The server-sent events arrive at once and keep coming (proxy_buffering off).
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(f"GET /roomstats/{room_id}/events?key={key} HTTP/1.1\r\n"
                              f"Host: 127.0.0.1\r\n\r\n".encode())
        data = b""
        with trio.fail_after(3):
            while b"event: stats" not in data:
                data += await stream.receive_some(65536)
        assert data.startswith(b"HTTP/1.1 200") and b"text/event-stream" in data
        student, _ = await relay.student(room_id, "Ann")
        data = b""
        with trio.fail_after(3):  # the join's update, coalesced within a second
            while b'"name":"Ann"' not in data and b'"name": "Ann"' not in data:
                data += await stream.receive_some(65536)
    await student.aclose()
    await host.aclose()
