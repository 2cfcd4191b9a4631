"""``observer-relay serve``: configuration, the two listeners, signals, exit status."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

import trio

from .app import run_node
from .backplane.redis import BackplaneUnavailable
from .config import Config, ConfigError, load_config, parse_port
from .gc_policy import freeze_survivors, tune_gc
from .logs import configure as configure_logging


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"observer-relay: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _port(text: str) -> int:
    try:
        return parse_port(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port: {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="observer-relay", description="Observer Relay server")
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="run the relay")
    serve.add_argument("--host", help="listen address (OBSERVER_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=_port, help="relay port (OBSERVER_PORT, default 8000)")
    serve.add_argument("--http-port", type=_port,
                       help="web port (OBSERVER_HTTP_PORT, default 8080)")
    key = sub.add_parser("space-key", help="print a ChatRoom space's key (§9.1)")
    key.add_argument("space", help="the space's name")
    return parser


def _space_key(space: str) -> None:
    """``observer-relay space-key SPACE``: the key clients of SPACE pass as ``key``."""
    from relay.spaces.names import is_valid_space_name, space_key

    secret = os.environ.get("OBSERVER_CHATROOM_SECRET", "")
    if not secret:
        print("observer-relay: error: OBSERVER_CHATROOM_SECRET is not set", file=sys.stderr)
        raise SystemExit(2)
    if not is_valid_space_name(space):
        print(f"observer-relay: error: not a space name: {space!r}", file=sys.stderr)
        raise SystemExit(2)
    print(space_key(secret, space))
    raise SystemExit(0)


async def _run(config: Config) -> None:
    tune_gc()
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            node = await nursery.start(run_node, config)
            gc_scope = trio.CancelScope()

            async def gc_policy() -> None:
                with gc_scope:
                    await freeze_survivors(lambda: len(node.connections))

            nursery.start_soon(gc_policy)
            host = config.host
            print(f"observer-relay relay listening on ws://{host}:{node.relay_port}",
                  flush=True)
            print(f"observer-relay web listening on http://{host}:{node.web_port}", flush=True)

            async def watch() -> None:
                async for _ in signals:
                    logging.getLogger("relay").info("shutting down")
                    await node.shutdown()
                    gc_scope.cancel()
                    return

            nursery.start_soon(watch)


def _leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.command == "space-key":
        _space_key(args.space)
    if args.command != "serve":
        build_parser().print_usage(sys.stderr)
        print("observer-relay: error: a command is required (serve or space-key)",
              file=sys.stderr)
        raise SystemExit(2)
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port),
                                   ("http_port", args.http_port)) if v is not None}
    try:
        config = load_config(os.environ, overrides)
    except ConfigError as exc:
        print(f"observer-relay: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(config.log_level, config.log_format)
    try:
        trio.run(_run, config)
    except KeyboardInterrupt:
        pass
    except Exception as exc:
        leaf = _leaf(exc)  # startup errors arrive wrapped in nursery exception groups
        if isinstance(leaf, OSError | BackplaneUnavailable):
            print(f"observer-relay: cannot start: {leaf}", file=sys.stderr)
            raise SystemExit(1) from None
        raise
    raise SystemExit(0)
