"""ICE plumbing: loopback-only mode, candidate parsing and RTCConfiguration building.

Measured on this machine (shared/reference/measured-here.md §3, §5): aioice never offers
127.0.0.1 on its own, and a browser started with --allow-loopback-in-peer-connection also offers
its LAN/IPv6 addresses.  Tests only ever talk over 127.0.0.1, so in loopback-only mode we force
aioice onto 127.0.0.1 and drop every remote candidate that is not 127.0.0.1.
"""

from __future__ import annotations

from typing import Any

import aioice.ice
from aiortc import RTCConfiguration, RTCIceCandidate, RTCIceServer
from aiortc.sdp import candidate_from_sdp

LOOPBACK = "127.0.0.1"


def loopback_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    return [LOOPBACK]


def force_loopback_host_addresses() -> None:
    """Make aioice gather only 127.0.0.1 host candidates (it skips loopback by default)."""
    aioice.ice.get_host_addresses = loopback_host_addresses  # type: ignore[assignment]


def candidate_address(line: str) -> str | None:
    """Connection address of an SDP candidate line (with or without `a=`/`candidate:`)."""
    text = line.strip()
    if text.startswith("a="):
        text = text[2:]
    if text.startswith("candidate:"):
        text = text[len("candidate:") :]
    bits = text.split()
    return bits[4] if len(bits) >= 8 else None


def filter_sdp_candidates(sdp: str, allowed: str = LOOPBACK) -> tuple[str, int]:
    """Drop `a=candidate` lines whose address is not `allowed`; return (sdp, dropped count)."""
    kept: list[str] = []
    dropped = 0
    for line in sdp.splitlines():
        if line.startswith("a=candidate:") and candidate_address(line) != allowed:
            dropped += 1
            continue
        kept.append(line)
    return "\r\n".join(kept) + "\r\n", dropped


class CandidateError(ValueError):
    """A remote candidate that cannot be parsed."""


def parse_remote_candidate(raw: Any) -> RTCIceCandidate | None:
    """Turn a relayed candidate into an RTCIceCandidate.

    Accepts the browser's `RTCIceCandidate.toJSON()` shape
    (`{"candidate": "candidate:...", "sdpMid": "0", "sdpMLineIndex": 0}`) or a bare candidate
    string.  Returns None for end-of-candidates (null, empty string, empty `candidate`), which
    aiortc does not need because it never waits for trickled candidates.
    """
    if raw is None:
        return None
    sdp_mid: str | None = None
    sdp_mline_index: int | None = None
    if isinstance(raw, str):
        line = raw
    elif isinstance(raw, dict):
        line = raw.get("candidate") or ""
        if not isinstance(line, str):
            raise CandidateError("candidate is not a string")
        mid = raw.get("sdpMid")
        sdp_mid = str(mid) if mid is not None else None
        index = raw.get("sdpMLineIndex")
        if isinstance(index, int) and not isinstance(index, bool):
            sdp_mline_index = index
    else:
        raise CandidateError(f"unsupported candidate type {type(raw).__name__}")
    line = line.strip()
    if line.startswith("a="):
        line = line[2:]
    if line.startswith("candidate:"):
        line = line[len("candidate:") :]
    if not line:
        return None
    try:
        candidate = candidate_from_sdp(line)
    except (AssertionError, ValueError, IndexError) as exc:
        raise CandidateError(f"unparsable candidate {line[:80]!r}") from exc
    if sdp_mid is None and sdp_mline_index is None:
        sdp_mline_index = 0
    candidate.sdpMid = sdp_mid
    candidate.sdpMLineIndex = sdp_mline_index
    return candidate


def build_configuration(ice_servers: Any) -> RTCConfiguration:
    """Map rtc/config `ice_servers` (browser RTCIceServer dicts) onto aiortc's configuration.

    Entries aiortc cannot use are skipped rather than fatal: a classroom relay may advertise
    servers only browsers understand, and loopback sessions need none.
    """
    servers: list[RTCIceServer] = []
    if isinstance(ice_servers, list):
        for entry in ice_servers:
            if not isinstance(entry, dict):
                continue
            urls = entry.get("urls")
            if isinstance(urls, str):
                urls = [urls]
            if not isinstance(urls, list):
                continue
            usable = [u for u in urls if isinstance(u, str) and u.split(":", 1)[0] in _SCHEMES]
            if not usable:
                continue
            username = entry.get("username")
            credential = entry.get("credential")
            servers.append(
                RTCIceServer(
                    urls=usable,
                    username=username if isinstance(username, str) else None,
                    credential=credential if isinstance(credential, str) else None,
                )
            )
    return RTCConfiguration(iceServers=servers)


_SCHEMES = {"stun", "stuns", "turn", "turns"}
