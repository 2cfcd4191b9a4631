"""§8.6 browser pages for screen sharing: ``/share`` (student) and ``/view`` (teacher).

Both pages are plain HTML with scripts and a stylesheet from ``static/share/`` (no build step,
nothing external). They speak the plain JSON framing (§3.1) straight to the relay port. The
relay URL is the ``relay`` query parameter when given (it must be a ``ws://`` or ``wss://`` URL),
otherwise ``ws://<page host>:<relay port>/observer``; the server validates it, renders it into the
page and allows exactly its origin in the Content-Security-Policy's ``connect-src``.

Query parameters only prefill the forms; the page scripts read everything else from
``data-*`` attributes on ``<body>``. ``loopback=1`` makes the pages keep only 127.0.0.1 ICE
candidates (used by the tests, which must stay on loopback).
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from string import Template
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from quart import Blueprint, Response, request, url_for

if TYPE_CHECKING:
    from quart_trio import QuartTrio

    from relay.ports import WebHost

HTML = "text/html; charset=utf-8"
RELAY_PATH = "/observer"
#: Host names we are willing to put into a URL and a CSP header: DNS names, IPv4, bracketed IPv6.
_HOST_RE = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})|\[[0-9A-Fa-f:.]{2,45}\])$")
_TRUE = {"1", "true", "yes", "on"}


class BadRelay(ValueError):
    """The ``relay`` query parameter is not a usable WebSocket URL."""


@dataclass(frozen=True, slots=True)
class RelayTarget:
    url: str  #: what the page connects to
    origin: str  #: scheme://host:port, the CSP source expression


def _host_literal(hostname: str) -> str:
    """``hostname`` as it is written in a URL (IPv6 gets its brackets back)."""
    literal = f"[{hostname}]" if ":" in hostname else hostname
    if not _HOST_RE.match(literal):
        raise BadRelay(f"unsupported host name {hostname!r}")
    return literal.lower()


def default_relay(host_header: str, scheme: str, relay_port: int) -> RelayTarget:
    """``ws://<page host>:<relay port>/observer`` (``wss`` when the page itself is https)."""
    hostname = urlsplit(f"//{host_header}").hostname or "127.0.0.1"
    ws_scheme = "wss" if scheme == "https" else "ws"
    origin = f"{ws_scheme}://{_host_literal(hostname)}:{relay_port}"
    return RelayTarget(origin + RELAY_PATH, origin)


def parse_relay(raw: str) -> RelayTarget:
    """Validate a ``relay`` query parameter; keep its path, drop query and fragment."""
    text = raw.strip()
    if len(text) > 512:
        raise BadRelay("the relay URL is too long")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise BadRelay(str(exc)) from exc
    if parts.scheme.lower() not in ("ws", "wss"):
        raise BadRelay("the relay URL must start with ws:// or wss://")
    if not parts.hostname or parts.username is not None or parts.password is not None:
        raise BadRelay("the relay URL needs a host and no credentials")
    scheme = parts.scheme.lower()
    origin = f"{scheme}://{_host_literal(parts.hostname)}"
    if port is not None:
        origin += f":{port}"
    path = parts.path or RELAY_PATH
    if not re.fullmatch(r"/[A-Za-z0-9._~/%-]*", path):
        raise BadRelay("unsupported characters in the relay URL path")
    return RelayTarget(origin + path, origin)


def content_security_policy(relay_origin: str | None) -> str:
    """Own scripts and styles only; network access only to this origin and the relay."""
    connect = f"'self' {relay_origin}" if relay_origin else "'none'"
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "media-src 'self' blob: mediastream:; "
        f"connect-src {connect}; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


def _attr(value: object) -> str:
    return html.escape(str(value), quote=True)


def _query(name: str, limit: int = 200) -> str:
    value = request.args.get(name, "")
    return value.strip()[:limit]


_HEAD = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>$title · Observer Relay</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="$css">
<script type="module" src="$script"></script>
</head>
"""

SHARE_PAGE = Template(_HEAD + """\
<body class="share-page" data-relay="$relay" data-loopback="$loopback">
<header class="topbar">
  <div class="brand"><span class="logo" aria-hidden="true"></span>Observer Relay</div>
  <div class="topbar-title">Share your screen</div>
  <span id="conn" class="pill" data-state="offline">not connected</span>
</header>
<main class="share-layout">
  <section class="card intro">
    <h1>Show your screen to the teacher</h1>
    <p class="lead">Type the room number from your teacher and your name, then press
      <b>Share screen</b>. Your browser asks what to show; nothing is sent until the teacher
      accepts.</p>
    <form id="join" class="form" novalidate>
      <label for="room">Room number</label>
      <input id="room" name="room" value="$room" inputmode="numeric" autocomplete="off"
             placeholder="e.g. 48213377" maxlength="12" required>
      <label for="name">Your name</label>
      <input id="name" name="name" value="$name" autocomplete="nickname"
             placeholder="e.g. Ann" maxlength="32" required>
      <div class="actions">
        <button id="share" type="submit" class="primary">Share screen</button>
        <button id="stop" type="button" class="secondary" hidden>Stop sharing</button>
      </div>
    </form>
    <div class="status-box">
      <div class="status-line">Status: <output id="status" data-state="idle"
        aria-live="polite">not sharing</output></div>
      <p id="detail" class="detail">Press “Share screen” when you are ready.</p>
    </div>
    <ol id="steps" class="steps">
      <li data-step="capture">Choose a screen</li>
      <li data-step="join">Join the room</li>
      <li data-step="allow">Teacher accepts</li>
      <li data-step="live">Sharing</li>
    </ol>
  </section>
  <section class="card preview-card">
    <h2>Your shared screen</h2>
    <div class="screen">
      <video id="preview" autoplay muted playsinline></video>
      <div id="preview-empty" class="screen-empty">Nothing is shared.</div>
    </div>
    <p class="hint">This preview is only on your computer. The teacher sees it after
      accepting your request; you can stop at any time.</p>
  </section>
</main>
<footer class="footer">Relay <code id="relay-url">$relay</code></footer>
</body>
</html>
""")

VIEW_PAGE = Template(_HEAD + """\
<body class="view-page" data-relay="$relay" data-loopback="$loopback">
<header class="topbar">
  <div class="brand"><span class="logo" aria-hidden="true"></span>Observer Relay</div>
  <div class="topbar-title">Teacher view · Room <span id="room-label">$room_label</span></div>
  <span id="conn" class="pill" data-state="offline">not connected</span>
</header>
<main class="view-layout">
  <aside class="card side">
    <form id="creds" class="form compact" novalidate>
      <label for="room">Room</label>
      <input id="room" name="room" value="$room" inputmode="numeric" autocomplete="off"
             maxlength="12" required>
      <label for="user_id">Teacher id</label>
      <input id="user_id" name="user_id" value="$user_id" inputmode="numeric"
             autocomplete="off" maxlength="6" required>
      <label for="token">Token</label>
      <input id="token" name="token" value="$token" type="password" autocomplete="off"
             maxlength="64" required>
      <div class="actions">
        <button id="connect" type="submit" class="primary">Open room</button>
      </div>
    </form>
    <div class="status-line">Status: <output id="status" data-state="idle"
      aria-live="polite">not connected</output></div>
    <h2>Requests <span id="request-count" class="count">0</span></h2>
    <ul id="requests" class="requests">
      <li class="empty">No student is asking to share yet.</li>
    </ul>
    <h2>Students <span id="student-count" class="count">0</span></h2>
    <ul id="students" class="students"><li class="empty">Nobody has joined yet.</li></ul>
  </aside>
  <section class="card stage">
    <div class="stage-head">
      <h2 id="watching">No screen shared</h2>
      <span id="stream-info" class="stream-info"></span>
      <button id="fullscreen" type="button" class="secondary" disabled>Full screen</button>
      <button id="stop" type="button" class="danger" hidden>Stop viewing</button>
    </div>
    <div id="screen" class="screen big">
      <video id="remote" autoplay muted playsinline></video>
      <div id="remote-empty" class="screen-empty">Allow a request to see the student's screen
        here.</div>
    </div>
    <ul id="log" class="log" aria-live="polite"></ul>
  </section>
</main>
<footer class="footer">Relay <code id="relay-url">$relay</code></footer>
</body>
</html>
""")

ERROR_PAGE = Template("""<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Bad relay address · Observer Relay</title>
<link rel="stylesheet" href="$css"></head>
<body class="error-page"><main class="card narrow"><h1>Bad relay address</h1>
<p>$message</p><p>Remove the <code>relay</code> parameter to use this server's relay.</p>
</main></body>
</html>
""")


def register(app: QuartTrio, host: WebHost) -> None:
    """Add ``GET /share`` and ``GET /view`` to ``app`` (assets live in ``static/share/``)."""
    pages = Blueprint("share_pages", __name__)

    def asset(name: str) -> str:
        return url_for("static", filename=f"share/{name}")

    def respond(body: str, status: int, relay_origin: str | None) -> Response:
        response = Response(body, status, content_type=HTML)
        response.headers["Content-Security-Policy"] = content_security_policy(relay_origin)
        response.headers["Referrer-Policy"] = "no-referrer"  # /view's URL carries a token
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Permissions-Policy"] = "display-capture=(self)"
        return response

    def relay_target() -> RelayTarget:
        raw = request.args.get("relay")
        if raw:
            return parse_relay(raw)
        return default_relay(request.host, request.scheme, host.relay_port)

    def bad_relay(error: BadRelay) -> Response:
        body = ERROR_PAGE.substitute(css=_attr(asset("share.css")), message=_attr(error))
        return respond(body, 400, None)

    def loopback() -> str:
        return "1" if request.args.get("loopback", "").lower() in _TRUE else "0"

    @pages.get("/share")
    async def share() -> Response:
        try:
            target = relay_target()
        except BadRelay as error:
            return bad_relay(error)
        body = SHARE_PAGE.substitute(
            title="Share your screen", css=_attr(asset("share.css")),
            script=_attr(asset("share.js")), relay=_attr(target.url), loopback=loopback(),
            room=_attr(_query("room", 12)), name=_attr(_query("name", 32)))
        return respond(body, 200, target.origin)

    @pages.get("/view")
    async def view() -> Response:
        try:
            target = relay_target()
        except BadRelay as error:
            return bad_relay(error)
        room = _query("room", 12)
        body = VIEW_PAGE.substitute(
            title=_attr(f"Room {room}" if room else "Teacher view"), css=_attr(asset("share.css")),
            script=_attr(asset("view.js")), relay=_attr(target.url), loopback=loopback(),
            room=_attr(room), room_label=_attr(room or "–"),
            user_id=_attr(_query("user_id", 6) or "1"), token=_attr(_query("token", 64)))
        return respond(body, 200, target.origin)

    app.register_blueprint(pages)
