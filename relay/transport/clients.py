"""Who a request comes from: its client IP behind trusted proxies, and its device cookie.

**Client IP (§1.3).** Behind a reverse proxy every TCP peer is the proxy, which would make
the per-IP limits (failed joins, connections, rooms) global. A request whose TCP peer is
one of ``OBSERVER_TRUSTED_PROXIES`` takes its client IP from ``X-Forwarded-For``: the last
entry that is not itself a trusted proxy (entries further left were written by the client
and prove nothing), and its scheme from ``X-Forwarded-Proto``. Anyone else's
``X-Forwarded-For`` is ignored.

**Device cookie (§4.6).** Browser clients written for the seed server know no tokens; the
relay recognises the browser instead. The cookie's value is never logged, never put in a
payload and never stored: the core (and the cluster's log) sees only a digest of it, which
is all the core needs (it compares them for equality).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import secrets
from collections.abc import Mapping, Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

COOKIE = "observer_device"
_VALUE = re.compile(r"[A-Za-z0-9_-]{22}")
MAX_AGE = 31536000


def parse_networks(entries: Sequence[str]) -> list[Network]:
    """``OBSERVER_TRUSTED_PROXIES`` entries: addresses or CIDR blocks (ValueError if not)."""
    return [ipaddress.ip_network(entry.strip(), strict=False) for entry in entries]


def _trusted(address: str, trusted: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in trusted)


def client_address(peer: str, headers: Mapping[str, str], trusted: Sequence[Network]
                   ) -> tuple[str, bool]:
    """(client IP, whether the client spoke HTTPS to the proxy) of a request from ``peer``."""
    if not trusted or not _trusted(peer, trusted):
        return peer, False
    client = peer
    forwarded = headers.get("x-forwarded-for", "")
    for entry in reversed([e.strip() for e in forwarded.split(",") if e.strip()]):
        client = entry
        if not _trusted(entry, trusted):
            break
    try:
        client = str(ipaddress.ip_address(client))  # one spelling per address
    except ValueError:
        client = peer  # not an address: the proxy's word is all we have
    proto = headers.get("x-forwarded-proto", "").split(",")[-1].strip().lower()
    return client, proto == "https"


def device_cookie(headers: Mapping[str, str]) -> str | None:
    """The well-formed ``observer_device`` cookie the request carries, if any."""
    for part in headers.get("cookie", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE and _VALUE.fullmatch(value):
            return value
    return None


def new_device_cookie() -> str:
    return secrets.token_urlsafe(16)  # 16 CSPRNG bytes: 22 base64url characters


def set_cookie(value: str, secure: bool) -> tuple[str, str]:
    field = f"{COOKIE}={value}; Path=/; Max-Age={MAX_AGE}; HttpOnly; SameSite=Lax"
    return ("Set-Cookie", field + "; Secure" if secure else field)


def device_id(cookie: str) -> str:
    """What the core sees of a cookie: a digest (the same on every node)."""
    return hashlib.sha256(b"observer-device:" + cookie.encode()).hexdigest()[:32]
