"""One WebRTC connection to one remote peer, negotiated with the "perfect negotiation" pattern.

Roles come from `rtc/config.polite` (students polite, the host impolite).  The impolite side
ignores an offer that collides with its own; the polite side gives way.  aiortc has no
`setLocalDescription({type: "rollback"})`, so the polite side emulates the rollback by
replacing its RTCPeerConnection with a fresh one (same tracks, same frame counter) before
accepting the remote offer.  aiortc gathers all candidates inside setLocalDescription and
embeds them in the SDP, so nothing is trickled out; trickled remote candidates are accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from aiortc import RTCConfiguration, RTCIceCandidate, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from signaling.peer.ice import (
    LOOPBACK,
    CandidateError,
    filter_sdp_candidates,
    parse_remote_candidate,
)
from signaling.peer.transport import Event, PeerId, Signaling, log


class NegotiatingPeer:
    """RTCPeerConnection wrapper holding the perfect-negotiation flags for one remote peer."""

    def __init__(
        self,
        key: PeerId | None,
        *,
        polite: bool,
        configuration: RTCConfiguration,
        signaling: Signaling,
        events: asyncio.Queue[Event],
        loopback_only: bool,
        track_factory: Callable[[], MediaStreamTrack] | None = None,
        on_track: Callable[[MediaStreamTrack], None] | None = None,
        verbose: bool = False,
    ) -> None:
        self.key = key
        self.polite = polite
        self.configuration = configuration
        self.signaling = signaling
        self.events = events
        self.loopback_only = loopback_only
        self.track_factory = track_factory
        self.on_track = on_track
        self.verbose = verbose
        self.making_offer = False
        self.ignore_offer = False
        self.closed = False
        self._pending: list[RTCIceCandidate] = []
        self._generation = 0
        self.pc = self._new_pc()

    @property
    def state(self) -> str:
        return self.pc.connectionState

    def _new_pc(self) -> RTCPeerConnection:
        pc = RTCPeerConnection(self.configuration)
        generation = self._generation

        @pc.on("connectionstatechange")
        def _on_state() -> None:
            # A replaced (rolled back) connection must not report its own shutdown.
            if generation == self._generation and not self.closed:
                self.events.put_nowait(Event("pc-state", peer=self.key, detail=pc.connectionState))

        @pc.on("track")
        def _on_track(track: MediaStreamTrack) -> None:
            if generation == self._generation and self.on_track is not None:
                self.on_track(track)

        if self.track_factory is not None:
            pc.addTrack(self.track_factory())
        return pc

    async def make_offer(self) -> None:
        """Create and send an offer (the student does this when its host allows sharing)."""
        self.making_offer = True
        try:
            await self.pc.setLocalDescription(await self.pc.createOffer())
        finally:
            self.making_offer = False
        local = self.pc.localDescription
        await self.signaling.offer(self.key, local.sdp)

    async def handle_description(self, kind: str, sdp: str) -> None:
        """Apply a remote offer or answer following the perfect-negotiation rules."""
        if self.loopback_only:
            sdp, dropped = filter_sdp_candidates(sdp, LOOPBACK)
            if dropped and self.verbose:
                log(f"dropped {dropped} non-loopback candidate(s) from the remote {kind}")
        if kind == "offer":
            collision = self.making_offer or self.pc.signalingState != "stable"
            self.ignore_offer = not self.polite and collision
            if self.ignore_offer:
                log("ignoring a colliding offer (impolite side)")
                return
            if collision:
                log("offer collision: rolling back (polite side)")
                await self._rollback()
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            await self._flush_pending()
            await self.pc.setLocalDescription(await self.pc.createAnswer())
            await self.signaling.answer(self.key, self.pc.localDescription.sdp)
        elif kind == "answer":
            if self.pc.signalingState != "have-local-offer":
                log(f"ignoring an answer in signaling state {self.pc.signalingState}")
                return
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
            await self._flush_pending()
        else:
            raise ValueError(f"unknown description type {kind!r}")

    async def add_candidate(self, raw: object) -> None:
        """Accept one trickled remote candidate; end-of-candidates and bad ones are dropped."""
        try:
            candidate = parse_remote_candidate(raw)
        except CandidateError as exc:
            log(f"ignoring remote candidate: {exc}")
            return
        if candidate is None:
            return
        if self.loopback_only and candidate.ip != LOOPBACK:
            if self.verbose:
                log(f"dropped non-loopback remote candidate {candidate.ip}")
            return
        if self.pc.remoteDescription is None:
            # Candidates may overtake the description on the wire; keep them until it lands.
            self._pending.append(candidate)
            return
        await self._add(candidate)

    async def _add(self, candidate: RTCIceCandidate) -> None:
        try:
            await self.pc.addIceCandidate(candidate)
        except Exception as exc:  # aioice refuses candidates after end-of-candidates, etc.
            if not self.ignore_offer and self.verbose:
                log(f"remote candidate not added: {exc}")

    async def _flush_pending(self) -> None:
        pending, self._pending = self._pending, []
        for candidate in pending:
            await self._add(candidate)

    async def _rollback(self) -> None:
        old = self.pc
        self._generation += 1
        self.pc = self._new_pc()
        with contextlib.suppress(Exception):
            await old.close()

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._generation += 1
        with contextlib.suppress(Exception):
            await self.pc.close()
