"""In-process checks of observer-peer's building blocks (no relay needed).

The end-to-end runs through the real relay live in test_peer_e2e.py; these cover what those
runs cannot provoke on purpose: offer glare (polite rollback), trickled browser-format
candidates arriving before the description, and the frame-counter code under damage.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aioice.ice
import numpy as np
import pytest
from aiortc import RTCIceServer
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import VideoFrame

from signaling.peer.ice import (
    CandidateError,
    build_configuration,
    filter_sdp_candidates,
    loopback_host_addresses,
    parse_remote_candidate,
)
from signaling.peer.media import FrameSource, PatternGenerator, StripLayout, decode_counter
from signaling.peer.session import NegotiatingPeer
from signaling.peer.transport import Event, PeerId, RoomInfo, Signaling

BROWSER_CANDIDATE = {
    "candidate": "candidate:842163049 1 udp 1677729535 127.0.0.1 50000 typ host generation 0",
    "sdpMid": "0",
    "sdpMLineIndex": 0,
}


@pytest.mark.parametrize("size", [(640, 360), (320, 180), (1280, 720)])
def test_counter_survives_render_and_decode(size: tuple[int, int]) -> None:
    gen = PatternGenerator(*size)
    for counter in (0, 1, 255, 4242, 2**24 - 1):
        assert decode_counter(gen.render(counter)) == counter


def test_damaged_counter_strip_is_rejected_not_misread() -> None:
    gen = PatternGenerator(640, 360)
    img = gen.render(1234)
    lay = StripLayout.for_size(640, 360)
    x = lay.left + 10 * lay.cell  # flip one payload bit
    patch = img[lay.top : lay.top + lay.cell, x : x + lay.cell]
    patch[...] = 255 - patch
    assert decode_counter(img) is None
    assert decode_counter(np.zeros((360, 640, 3), dtype=np.uint8)) is None


def test_parse_remote_candidate_formats() -> None:
    cand = parse_remote_candidate(BROWSER_CANDIDATE)
    assert cand is not None
    assert (cand.ip, cand.port, cand.type, cand.sdpMid, cand.sdpMLineIndex) == (
        "127.0.0.1",
        50000,
        "host",
        "0",
        0,
    )
    bare = parse_remote_candidate("a=" + str(BROWSER_CANDIDATE["candidate"]))
    assert bare is not None and bare.sdpMLineIndex == 0
    for end in (None, "", {"candidate": "", "sdpMid": "0"}):
        assert parse_remote_candidate(end) is None
    with pytest.raises(CandidateError):
        parse_remote_candidate({"candidate": "candidate:garbage"})
    with pytest.raises(CandidateError):
        parse_remote_candidate(42)


def test_filter_sdp_keeps_only_loopback_candidates() -> None:
    sdp = (
        "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
        "a=candidate:1 1 udp 2122260223 127.0.0.1 5000 typ host\r\n"
        "a=candidate:2 1 udp 2122260223 192.168.1.5 5001 typ host\r\n"
        "a=candidate:3 1 udp 2122260223 ::1 5002 typ host\r\n"
        "a=end-of-candidates\r\n"
    )
    filtered, dropped = filter_sdp_candidates(sdp)
    assert dropped == 2
    assert "127.0.0.1 5000" in filtered and "192.168" not in filtered and "::1" not in filtered
    assert filtered.endswith("a=end-of-candidates\r\n")


def test_build_configuration_from_rtc_config() -> None:
    config = build_configuration(
        [
            {"urls": ["stun:stun.example.org:3478"]},
            {"urls": "turn:turn.example.org:3478", "username": "1:2", "credential": "c"},
            {"urls": ["https://not-ice"]},
            "junk",
        ]
    )
    assert config.iceServers == [
        RTCIceServer(urls=["stun:stun.example.org:3478"]),
        RTCIceServer(urls=["turn:turn.example.org:3478"], username="1:2", credential="c"),
    ]
    assert build_configuration([]).iceServers == []


class LinkedSignaling(Signaling):
    """Delivers straight into the other side's queue: a relay reduced to a wire."""

    def __init__(self, name: str, inbox: asyncio.Queue[Event]) -> None:
        super().__init__("ws://in-process", asyncio.Queue())
        self.name = name
        self.remote: asyncio.Queue[Event] = inbox

    async def create(self, name: str | None) -> RoomInfo:
        raise NotImplementedError

    async def join(self, room: str, name: str | None) -> RoomInfo:
        raise NotImplementedError

    async def _read_loop(self) -> None:
        raise NotImplementedError

    async def request(self) -> None:
        raise NotImplementedError

    async def allow(self, peer: PeerId) -> None:
        raise NotImplementedError

    async def offer(self, peer: PeerId | None, sdp: str) -> None:
        self.remote.put_nowait(Event("offer", peer=self.name, sdp=sdp))

    async def answer(self, peer: PeerId | None, sdp: str) -> None:
        self.remote.put_nowait(Event("answer", peer=self.name, sdp=sdp))

    async def ice(self, peer: PeerId | None, candidate: Any) -> None:
        self.remote.put_nowait(Event("ice", peer=self.name, candidate=candidate))

    async def stop(self, peer: PeerId | None) -> None:
        self.remote.put_nowait(Event("stop", peer=self.name))


async def _glare_session() -> tuple[list[int | None], list[str], list[str]]:
    student_q: asyncio.Queue[Event] = asyncio.Queue()
    host_q: asyncio.Queue[Event] = asyncio.Queue()
    source = FrameSource(320, 180, 30)
    counters: list[int | None] = []
    got_enough = asyncio.Event()

    async def consume(track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            assert isinstance(frame, VideoFrame)
            counters.append(decode_counter(frame.to_ndarray(format="rgb24")))
            if len(counters) >= 15:
                got_enough.set()

    tasks: list[asyncio.Task[Any]] = []
    student = NegotiatingPeer(
        "host",
        polite=True,
        configuration=build_configuration([]),
        signaling=LinkedSignaling("student", host_q),
        events=student_q,
        loopback_only=True,
        track_factory=source.track,
    )
    host = NegotiatingPeer(
        "student",
        polite=False,
        configuration=build_configuration([]),
        signaling=LinkedSignaling("host", student_q),
        events=host_q,
        loopback_only=True,
        on_track=lambda t: tasks.append(asyncio.ensure_future(consume(t))),
    )
    host.pc.addTransceiver("video", direction="recvonly")
    # A trickled candidate that overtakes the description must be kept, not lost or fatal.
    await host.add_candidate(BROWSER_CANDIDATE)
    await student.add_candidate({"candidate": "", "sdpMid": "0"})  # end-of-candidates

    states: dict[str, list[str]] = {"student": [], "host": []}

    async def drive(name: str, peer: NegotiatingPeer, inbox: asyncio.Queue[Event]) -> None:
        while True:
            event = await inbox.get()
            if event.kind in ("offer", "answer"):
                await peer.handle_description(event.kind, event.sdp)
            elif event.kind == "ice":
                await peer.add_candidate(event.candidate)
            elif event.kind == "pc-state":
                states[name].append(event.detail)

    # Glare: both sides offer before either offer is delivered.
    await asyncio.gather(student.make_offer(), host.make_offer())
    drivers = [
        asyncio.ensure_future(drive("student", student, student_q)),
        asyncio.ensure_future(drive("host", host, host_q)),
    ]
    try:
        await asyncio.wait_for(got_enough.wait(), 20)
    finally:
        for task in drivers + tasks:
            task.cancel()
        await student.close()
        await host.close()
        await asyncio.gather(*drivers, *tasks, return_exceptions=True)
    return counters, states["student"], states["host"]


def test_glare_polite_student_rolls_back_and_media_flows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aioice.ice, "get_host_addresses", loopback_host_addresses)
    counters, student_states, host_states = asyncio.run(_glare_session())
    assert "connected" in student_states and "connected" in host_states
    decoded = [c for c in counters if c is not None]
    assert len(decoded) >= 12
    assert decoded == sorted(decoded)
