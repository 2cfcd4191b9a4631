"""§8.6 pages over real HTTP: headers, relay URL resolution, escaping, assets (no browser)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from stats_web.share_pages import BadRelay, default_relay, parse_relay
from tests.support import Relay

ASSETS = Path(__file__).resolve().parent.parent / "stats_web" / "static" / "share"


def _csp(response: httpx.Response) -> dict[str, str]:
    policy = response.headers["content-security-policy"]
    return {part.split()[0]: part for part in (p.strip() for p in policy.split(";")) if part}


async def _get(server: Relay, path: str, **params: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.web) as http:
        return await http.get(path, params=params)


@pytest.mark.parametrize("path", ["/share", "/view"])
async def test_pages_default_relay_and_headers(relay: Relay, path: str) -> None:
    response = await _get(relay, path)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["referrer-policy"] == "no-referrer"
    relay_url = f"ws://127.0.0.1:{relay.server.relay_port}/observer"
    assert f'data-relay="{relay_url}"' in response.text
    csp = _csp(response)
    assert csp["connect-src"] == f"connect-src 'self' ws://127.0.0.1:{relay.server.relay_port}"
    assert csp["script-src"] == "script-src 'self'"
    assert csp["default-src"] == "default-src 'none'"
    assert 'id="status"' in response.text
    # Nothing external: every src/href is local (or the empty data: favicon).
    for ref in re.findall(r'(?:src|href)="([^"]*)"', response.text):
        assert ref.startswith("/static/share/") or ref == "data:,", ref


async def test_share_prefills_escaped_query(relay: Relay) -> None:
    response = await _get(relay, "/share", room="12345678", name='<b>"Ann"</b>', loopback="1")
    text = response.text
    assert 'id="room" name="room" value="12345678"' in text
    assert 'value="&lt;b&gt;&quot;Ann&quot;&lt;/b&gt;"' in text
    assert "<b>\"Ann\"" not in text
    assert 'data-loopback="1"' in text
    for selector in ('id="share"', 'id="name"', 'id="preview"'):
        assert selector in text


async def test_view_prefills_credentials(relay: Relay) -> None:
    response = await _get(relay, "/view", room="12345678", user_id="1", token="abc_DEF-123")
    text = response.text
    assert 'value="12345678"' in text and 'value="abc_DEF-123"' in text
    assert 'id="remote"' in text and 'id="requests"' in text
    assert "<title>Room 12345678 · Observer Relay</title>" in text


async def test_relay_parameter_goes_into_page_and_csp(relay: Relay) -> None:
    response = await _get(relay, "/view", relay="wss://relay.example.org/observer")
    assert response.status_code == 200
    assert 'data-relay="wss://relay.example.org/observer"' in response.text
    assert _csp(response)["connect-src"] == "connect-src 'self' wss://relay.example.org"


@pytest.mark.parametrize("bad", [
    "javascript:alert(1)", "http://127.0.0.1:1/observer", "ws://user:pw@127.0.0.1:1/",
    "ws://127.0.0.1:1/a\"b", "ws://exa mple.org/", "ws://127.0.0.1:99999/",
])
async def test_bad_relay_parameter_is_refused(relay: Relay, bad: str) -> None:
    response = await _get(relay, "/share", relay=bad)
    assert response.status_code == 400
    assert "Bad relay address" in response.text
    assert _csp(response)["connect-src"] == "connect-src 'none'"
    assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("name", ["rtc.js", "share.js", "view.js", "share.css"])
async def test_assets_served_without_external_urls(relay: Relay, name: str) -> None:
    response = await _get(relay, f"/static/share/{name}")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    kind = "text/css" if name.endswith(".css") else "text/javascript"
    assert response.headers["content-type"].startswith(kind)
    assert response.text == (ASSETS / name).read_text()
    assert not re.search(r"https?://", response.text)


def test_relay_url_helpers() -> None:
    assert default_relay("127.0.0.1:8080", "http", 8000).url == "ws://127.0.0.1:8000/observer"
    assert default_relay("[::1]:8080", "http", 8000).url == "ws://[::1]:8000/observer"
    assert default_relay("Teach.Example.org", "https", 443).origin == "wss://teach.example.org:443"
    assert parse_relay("ws://h:1").url == "ws://h:1/observer"
    assert parse_relay(" WS://H:1/x/observer ").origin == "ws://h:1"
    with pytest.raises(BadRelay):
        parse_relay("ws://")
    with pytest.raises(BadRelay):
        default_relay("bad host:1", "http", 8000)
