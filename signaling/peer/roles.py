"""The two roles: a student sharing a synthetic screen, a host receiving and measuring it.

Everything (signaling frames, peer-connection state changes, the deadline, signals, "enough
frames") arrives on one asyncio queue and is handled by one loop, one event at a time; that
keeps the negotiation free of interleavings and makes every way of ending the run go through
the same shutdown path.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import traceback
from dataclasses import dataclass, field

from aiortc import RTCConfiguration
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import VideoFrame

from signaling.peer.ice import build_configuration
from signaling.peer.media import FrameSource, decode_counter
from signaling.peer.session import NegotiatingPeer
from signaling.peer.transport import (
    Event,
    ObserverSignaling,
    PeerId,
    RoomInfo,
    Signaling,
    SignalingError,
    WsSignaling,
    log,
)


@dataclass
class Options:
    role: str
    url: str
    dialect: str = "observer"
    room: str | None = None
    name: str | None = None
    create: bool = False
    user_id: int | None = None
    token: str | None = None
    count: int | None = None
    duration: float | None = None
    snapshot: str | None = None
    loopback_only: bool = True
    accept: str = "all"
    width: int = 640
    height: int = 360
    fps: float = 30.0
    progress: float = 1.0
    ice_servers: list[str] = field(default_factory=list)
    reconnect: bool = True
    verbose: bool = False


def out(line: str) -> None:
    """One machine-readable progress line on stdout."""
    print(line, flush=True)


class Runner:
    """Shared lifecycle: set up signaling, run the event loop, shut down, compute the status."""

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self.signaling = self._make_signaling()
        self.end_reason = ""
        self.signaling_lost = False  # no point sending rtc/stop over a dead channel

    def _make_signaling(self) -> Signaling:
        o = self.opts
        if o.dialect == "ws":
            servers = [{"urls": [u]} for u in o.ice_servers]
            return WsSignaling(o.url, self.events, verbose=o.verbose, ice_servers=servers)
        return ObserverSignaling(
            o.url, self.events, verbose=o.verbose, reconnect_attempts=6 if o.reconnect else 0
        )

    def configuration(self) -> RTCConfiguration:
        servers = self.signaling.ice_servers
        if not servers and self.opts.ice_servers:
            servers = [{"urls": [u]} for u in self.opts.ice_servers]
        return build_configuration(servers)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.events.put_nowait, Event("interrupt"))
        if self.opts.duration is not None:
            loop.call_later(self.opts.duration, self.events.put_nowait, Event("deadline"))
        try:
            await self.setup()
        except SignalingError as exc:
            log(str(exc))
            await self.signaling.close()
            return 1
        ticker = asyncio.create_task(self._progress_loop())
        try:
            while True:
                event = await self.events.get()
                try:
                    finished = await self.handle(event)
                except SignalingError as exc:
                    log(f"signaling: {exc}")
                    finished = False
                except Exception:
                    log(f"error while handling {event.kind}:\n{traceback.format_exc()}")
                    finished = False
                if finished:
                    self.end_reason = self.end_reason or event.kind
                    break
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            await self.shutdown()
        return self.status()

    async def _progress_loop(self) -> None:
        while True:
            await asyncio.sleep(self.opts.progress)
            self.progress()

    async def setup(self) -> None:
        raise NotImplementedError

    async def handle(self, event: Event) -> bool:
        """Handle one event; True ends the run."""
        raise NotImplementedError

    def progress(self) -> None:
        raise NotImplementedError

    async def shutdown(self) -> None:
        raise NotImplementedError

    def status(self) -> int:
        raise NotImplementedError


def _rate(count: int, first: float | None, last: float | None) -> float:
    if count < 2 or first is None or last is None or last <= first:
        return 0.0
    return (count - 1) / (last - first)


class StudentRunner(Runner):
    """Join, ask to share, and on `allow` offer the synthetic screen (polite side)."""

    def __init__(self, opts: Options) -> None:
        super().__init__(opts)
        self.source = FrameSource(opts.width, opts.height, opts.fps)
        self.peer: NegotiatingPeer | None = None
        self.connected = False
        self.connected_at: float | None = None
        self.stopped_by_host = False

    async def setup(self) -> None:
        assert self.opts.room is not None
        info = await self.signaling.join(self.opts.room, self.opts.name)
        if info.user_id is not None:
            out(f"joined room {info.room} user {info.user_id} token {info.token}")
        else:
            out(f"joined room {info.room}")
        await self._request()

    async def _request(self) -> None:
        await self.signaling.request()
        out("requested")

    def _sharing(self) -> bool:
        return self.peer is not None and self.peer.state in ("new", "connecting", "connected")

    async def _start_peer(self) -> NegotiatingPeer:
        if self.peer is not None:
            await self.peer.close()
        self.peer = NegotiatingPeer(
            None,
            polite=self.signaling.polite,
            configuration=self.configuration(),
            signaling=self.signaling,
            events=self.events,
            loopback_only=self.opts.loopback_only,
            track_factory=self.source.track,
            verbose=self.opts.verbose,
        )
        return self.peer

    async def handle(self, event: Event) -> bool:
        kind = event.kind
        if kind == "allow":
            out("allowed")
            peer = await self._start_peer()
            await peer.make_offer()
        elif kind in ("offer", "answer"):
            if self.peer is None:
                if kind == "answer":
                    log("ignoring an answer: no offer was made")
                    return False
                await self._start_peer()  # the host started the negotiation
            assert self.peer is not None
            await self.peer.handle_description(kind, event.sdp)
        elif kind == "ice":
            if self.peer is not None:
                await self.peer.add_candidate(event.candidate)
        elif kind == "stop":
            out("stopped by host")
            self.stopped_by_host = True
            return True
        elif kind == "pc-state":
            out(f"state {event.detail}")
            if event.detail == "connected" and not self.connected:
                self.connected = True
                self.connected_at = time.monotonic()
            elif event.detail in ("failed", "closed"):
                self.end_reason = f"connection {event.detail}"
                return True
        elif kind == "error":
            code, _, failed = event.detail.partition(" ")
            if code == "peer_offline":
                log("the host is offline; will request again when it is back")
            elif failed in ("rtc/request", "rtc/offer", "rtc/answer") and code != "rate_limited":
                # Nothing will change by waiting: fail now instead of at --duration.
                self.end_reason = f"relay refused {failed} ({code})"
                return True
        elif kind == "host-back":
            # The teacher was offline: possibly a new host process whose WebRTC side knows
            # nothing of us, while our old connection still looks "connected" until ICE
            # consent expires. Ask again; the host's allow replaces the old connection.
            await self._request()
        elif kind in ("reconnected", "resync"):
            # rtc/* relays are not buffered by the relay, so a request or allow may be lost.
            if not self._sharing():
                await self._request()
        elif kind == "closed":
            log(f"signaling ended: {event.detail}")
            self.end_reason = event.detail
            self.signaling_lost = True
            return True
        elif kind in ("deadline", "interrupt"):
            return True
        return False

    def progress(self) -> None:
        if self.peer is None:
            return
        src = self.source
        fps = _rate(src.frames_sent, src.first_sent_at, src.last_sent_at)
        out(f"progress sent {src.frames_sent} fps {fps:.1f} state {self.peer.state}")

    async def shutdown(self) -> None:
        if self.peer is not None:
            if not self.stopped_by_host and not self.signaling_lost:
                with contextlib.suppress(SignalingError):
                    await asyncio.wait_for(self.signaling.stop(None), 2)
            await self.peer.close()
        await self.signaling.close()
        src = self.source
        fps = _rate(src.frames_sent, src.first_sent_at, src.last_sent_at)
        out(
            f"done sent {src.frames_sent} fps {fps:.1f} "
            f"connected {'yes' if self.connected else 'no'} reason {self.end_reason or '-'}"
        )

    def status(self) -> int:
        return 0 if self.connected and self.source.frames_sent > 0 else 1


@dataclass
class PeerStats:
    """What the host measured for one student."""

    requested_at: float | None = None
    latency: float | None = None
    frames: int = 0
    first_at: float | None = None
    last_at: float | None = None
    first_counter: int | None = None
    last_counter: int | None = None
    skipped: int = 0
    unreadable: int = 0
    last_frame: VideoFrame | None = None
    size: str = ""


class HostRunner(Runner):
    """Create or rehost a room, allow requests, answer offers, count and decode frames."""

    def __init__(self, opts: Options) -> None:
        super().__init__(opts)
        self.sessions: dict[PeerId, NegotiatingPeer] = {}
        self.stats: dict[PeerId, PeerStats] = {}
        self.consumers: set[asyncio.Task[None]] = set()
        self.accepted: list[PeerId] = []
        self.done_signalled = False

    async def setup(self) -> None:
        o = self.opts
        info: RoomInfo
        if o.create:
            info = await self.signaling.create(o.name)
        else:
            assert o.room is not None and o.user_id is not None and o.token is not None
            info = await self.signaling.rehost(o.room, o.user_id, o.token)
        line = f"room {info.room}"
        if info.user_id is not None:
            line += f" user {info.user_id} token {info.token}"
        if info.stats_key:
            line += f" stats_key {info.stats_key}"
        out(line)

    def total_frames(self) -> int:
        return sum(s.frames for s in self.stats.values())

    async def _drop_session(self, peer: PeerId) -> None:
        session = self.sessions.pop(peer, None)
        if session is not None:
            await session.close()

    async def handle(self, event: Event) -> bool:
        kind, peer = event.kind, event.peer
        if kind == "request" and peer is not None:
            if self.opts.accept == "first" and self.accepted and peer not in self.accepted:
                out(f"ignored request user {peer}")
                return False
            if peer not in self.accepted:
                self.accepted.append(peer)
            stats = self.stats.setdefault(peer, PeerStats())
            stats.requested_at = time.monotonic()
            await self._drop_session(peer)  # a repeated request starts over
            out(f"request user {peer}")
            await self.signaling.allow(peer)
        elif kind in ("offer", "answer") and peer is not None:
            session = self.sessions.get(peer)
            if session is None:
                if kind == "answer":
                    log(f"ignoring an answer from {peer}: no session")
                    return False
                if self.opts.accept == "first" and self.accepted and peer not in self.accepted:
                    log(f"ignoring an offer from {peer}: not accepted")
                    return False
                session = self._new_session(peer)
            await session.handle_description(kind, event.sdp)
        elif kind == "ice" and peer is not None:
            session = self.sessions.get(peer)
            if session is not None:
                await session.add_candidate(event.candidate)
        elif kind in ("stop", "peer-left") and peer is not None:
            if peer in self.sessions:
                out(f"stopped user {peer}")
            await self._drop_session(peer)
        elif kind == "pc-state" and peer is not None:
            out(f"state user {peer} {event.detail}")
            if event.detail in ("failed", "closed"):
                await self._drop_session(peer)
        elif kind == "done":
            return True
        elif kind == "closed":
            log(f"signaling ended: {event.detail}")
            self.end_reason = event.detail
            self.signaling_lost = True
            return True
        elif kind in ("deadline", "interrupt"):
            return True
        return False

    def _new_session(self, peer: PeerId) -> NegotiatingPeer:
        stats = self.stats.setdefault(peer, PeerStats())
        if stats.requested_at is None:
            stats.requested_at = time.monotonic()  # offer without a request: measure from it
        session = NegotiatingPeer(
            peer,
            polite=self.signaling.polite,
            configuration=self.configuration(),
            signaling=self.signaling,
            events=self.events,
            loopback_only=self.opts.loopback_only,
            on_track=lambda track: self._on_track(peer, track),
            verbose=self.opts.verbose,
        )
        self.sessions[peer] = session
        return session

    def _on_track(self, peer: PeerId, track: MediaStreamTrack) -> None:
        if track.kind != "video":
            return
        task = asyncio.create_task(self._consume(peer, track), name=f"consume-{peer}")
        self.consumers.add(task)
        task.add_done_callback(self.consumers.discard)

    async def _consume(self, peer: PeerId, track: MediaStreamTrack) -> None:
        stats = self.stats.setdefault(peer, PeerStats())
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            now = time.monotonic()
            if not isinstance(frame, VideoFrame):
                continue
            stats.frames += 1
            stats.last_frame = frame
            if stats.first_at is None:
                stats.first_at = now
                stats.size = f"{frame.width}x{frame.height}"
                if stats.requested_at is not None and stats.latency is None:
                    stats.latency = now - stats.requested_at
                lat = f"{stats.latency * 1000:.1f}" if stats.latency is not None else "-"
                out(f"first-frame user {peer} latency_ms {lat} size {stats.size}")
            stats.last_at = now
            self._track_counter(stats, frame)
            count = self.opts.count
            if count is not None and not self.done_signalled and self.total_frames() >= count:
                self.done_signalled = True
                self.events.put_nowait(Event("done"))

    @staticmethod
    def _track_counter(stats: PeerStats, frame: VideoFrame) -> None:
        counter = decode_counter(frame.to_ndarray(format="rgb24"))
        if counter is None:
            stats.unreadable += 1
            return
        if stats.first_counter is None:
            stats.first_counter = counter
        elif stats.last_counter is not None and counter > stats.last_counter + 1:
            stats.skipped += counter - stats.last_counter - 1
        stats.last_counter = counter

    def _describe(self, peer: PeerId, s: PeerStats) -> str:
        fps = _rate(s.frames, s.first_at, s.last_at)
        return (
            f"user {peer} frames {s.frames} fps {fps:.1f} counter {s.last_counter} "
            f"skipped {s.skipped} unreadable {s.unreadable}"
        )

    def progress(self) -> None:
        for peer, s in self.stats.items():
            if s.frames:
                out(f"progress {self._describe(peer, s)}")

    async def shutdown(self) -> None:
        for peer in list(self.sessions):
            if not self.signaling_lost:
                with contextlib.suppress(SignalingError, TimeoutError):
                    await asyncio.wait_for(self.signaling.stop(peer), 2)
            await self._drop_session(peer)
        for task in list(self.consumers):
            task.cancel()
        await asyncio.gather(*self.consumers, return_exceptions=True)
        await self.signaling.close()
        self._save_snapshot()
        for peer, s in self.stats.items():
            lat = f"{s.latency * 1000:.1f}" if s.latency is not None else "-"
            out(f"summary {self._describe(peer, s)} latency_ms {lat} size {s.size or '-'}")
        best = min((s.latency for s in self.stats.values() if s.latency is not None), default=None)
        fps_values = [_rate(s.frames, s.first_at, s.last_at) for s in self.stats.values()]
        out(
            f"done frames {self.total_frames()} fps {max(fps_values, default=0.0):.1f} "
            f"latency_ms {f'{best * 1000:.1f}' if best is not None else '-'} "
            f"peers {sum(1 for s in self.stats.values() if s.frames)}"
        )

    def _save_snapshot(self) -> None:
        path = self.opts.snapshot
        if not path:
            return
        candidates = [s for s in self.stats.values() if s.last_frame is not None]
        if not candidates:
            log("no frame received; snapshot not written")
            return
        s = max(candidates, key=lambda st: st.frames)
        assert s.last_frame is not None
        try:
            s.last_frame.to_image().save(path)
        except (OSError, ValueError) as exc:
            log(f"cannot write snapshot {path}: {exc}")
            return
        out(f"snapshot {path} size {s.size} counter {s.last_counter}")

    def status(self) -> int:
        need = max(1, self.opts.count or 1)
        return 0 if self.total_frames() >= need else 1
