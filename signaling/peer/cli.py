"""`observer-peer`: a headless aiortc WebRTC peer for exercising the relay's signaling.

    observer-peer host --url ws://127.0.0.1:8000/observer --create --count 30 --snapshot f.png
    observer-peer student --url ws://127.0.0.1:8000/observer --room 12345678 --name Ann
    observer-peer host --url ws://127.0.0.1:8000/ws --dialect ws --create
    observer-peer student --url ws://127.0.0.1:8000/ws --dialect ws --room abc123 --name Ann

stdout carries one machine-readable line per step (`room …`, `request user …`,
`first-frame user … latency_ms …`, `progress …`, `done …`); diagnostics go to stderr.
Exit status: 0 only when media actually flowed, 1 otherwise, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from signaling.peer.ice import force_loopback_host_addresses
from signaling.peer.media import MIN_HEIGHT, MIN_WIDTH
from signaling.peer.roles import HostRunner, Options, Runner, StudentRunner


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(p) for p in text.lower().split("x", 1))
    except ValueError as exc:
        raise argparse.ArgumentTypeError("expected WIDTHxHEIGHT, e.g. 640x360") from exc
    if w < MIN_WIDTH or h < MIN_HEIGHT or w % 2 or h % 2:
        raise argparse.ArgumentTypeError(f"even sizes of at least {MIN_WIDTH}x{MIN_HEIGHT}")
    return w, h


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", required=True, help="relay endpoint, ws://HOST:PORT/observer or /ws")
    p.add_argument(
        "--dialect",
        choices=("observer", "ws"),
        default=None,
        help="signaling dialect (default: ws when the URL path is /ws, else observer)",
    )
    p.add_argument("--name", help="display name (ws dialect: username)")
    p.add_argument("--duration", type=_positive_float, help="stop after S seconds")
    p.add_argument(
        "--loopback-only",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="gather only 127.0.0.1 candidates and drop other remote ones (default: on)",
    )
    p.add_argument(
        "--ice-server",
        action="append",
        default=[],
        metavar="URL",
        help="STUN/TURN URL used when the relay sends no rtc/config (ws dialect); repeatable",
    )
    p.add_argument("--progress", type=_positive_float, default=1.0, help="seconds between lines")
    p.add_argument(
        "--no-reconnect", action="store_true", help="observer: do not resume after a drop"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log more to stderr")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="observer-peer",
        description="Headless WebRTC screen-sharing peer (aiortc) for Observer Relay.",
    )
    roles = parser.add_subparsers(dest="role", required=True, metavar="{student,host}")

    student = roles.add_parser("student", help="join a room and share a synthetic screen")
    _common(student)
    student.add_argument("--room", required=True, help="room id to join")
    student.add_argument("--size", type=_size, default=(640, 360), help="frame size WxH")
    student.add_argument("--fps", type=_positive_float, default=30.0, help="frames per second")

    host = roles.add_parser("host", help="create or rehost a room and receive screens")
    _common(host)
    target = host.add_mutually_exclusive_group(required=True)
    target.add_argument("--create", action="store_true", help="create a new room")
    target.add_argument("--room", help="rehost this room (needs --user-id and --token)")
    host.add_argument("--user-id", type=int, help="host user id for --room (normally 1)")
    host.add_argument("--token", help="host token for --room")
    host.add_argument(
        "--count",
        type=_positive_int,
        help="stop after N decoded frames (summed over all students); exit 0 needs N",
    )
    host.add_argument("--snapshot", metavar="PNG", help="save the last received frame here")
    host.add_argument(
        "--accept",
        choices=("all", "first"),
        default="all",
        help="allow every rtc/request, or only the first student's",
    )
    return parser


def parse_options(argv: list[str] | None = None) -> Options:
    parser = build_parser()
    a = parser.parse_args(argv)
    dialect = a.dialect or ("ws" if a.url.rstrip("/").endswith("/ws") else "observer")
    if not a.url.startswith(("ws://", "wss://")):
        parser.error("--url must be a ws:// or wss:// URL")
    opts = Options(
        role=a.role,
        url=a.url,
        dialect=dialect,
        room=a.room,
        name=a.name,
        count=getattr(a, "count", None),
        duration=a.duration,
        loopback_only=a.loopback_only,
        progress=a.progress,
        ice_servers=list(a.ice_server),
        reconnect=not a.no_reconnect,
        verbose=a.verbose,
    )
    if a.role == "student":
        opts.width, opts.height = a.size
        opts.fps = a.fps
    else:
        opts.create = a.create
        opts.user_id = a.user_id
        opts.token = a.token
        opts.snapshot = a.snapshot
        opts.accept = a.accept
        if not a.create:
            if dialect == "ws":
                parser.error("the ws dialect cannot rehost; use --create")
            if a.user_id is None or a.token is None:
                parser.error("--room needs --user-id and --token to rehost")
    return opts


async def _run(opts: Options) -> int:
    runner: Runner = HostRunner(opts) if opts.role == "host" else StudentRunner(opts)
    return await runner.run()


def main() -> None:
    """Console entry point; exits with the run's status."""
    opts = parse_options()
    logging.basicConfig(
        level=logging.INFO if opts.verbose else logging.WARNING,
        stream=sys.stderr,
        format="observer-peer: %(name)s: %(message)s",
    )
    if opts.loopback_only:
        force_loopback_host_addresses()
    try:
        status = asyncio.run(_run(opts))
    except KeyboardInterrupt:
        status = 1
    sys.exit(status)


if __name__ == "__main__":
    main()
