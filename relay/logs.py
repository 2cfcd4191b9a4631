"""What an operator sees on standard error (§1.1), with the standard ``logging`` module.

Lines carry their facts as fields (``extra={...}``): the text format appends them as
``key=value``, the JSON format (``OBSERVER_LOG_FORMAT=json``) writes one object per line
with ``ts``, ``level``, ``logger``, ``msg`` and the fields. What is logged is chosen so that
no line ever holds content: never chat texts, code, SDP, candidates, topic values, tokens,
keys or device cookies — only ids, codes, addresses and durations. Libraries that log
their arguments at DEBUG (the Redis client, the HTTP client) are kept at WARNING.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Any

#: Attributes every ``LogRecord`` has; anything else on a record came from ``extra``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName"}
#: Loggers that would print request arguments or payloads at DEBUG.
QUIET = ("coredis", "anyio", "httpx", "httpcore", "hpack", "hypercorn", "quart", "asyncio")


def fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = fields(record)
        if extra:
            head, newline, rest = line.partition("\n")  # (a traceback goes after the fields)
            line = head + " " + " ".join(f"{k}={v}" for k, v in extra.items()) + newline + rest
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = dt.datetime.fromtimestamp(record.created, dt.UTC)
        out: dict[str, Any] = {
            "ts": stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z",
            "level": record.levelname, "logger": record.name, "msg": record.getMessage()}
        for key, value in fields(record).items():
            out[key] = value if isinstance(value, str | int | float | bool | None) else str(value)
        if record.exc_info:
            out["traceback"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def configure(level: str, fmt: str = "text") -> None:
    """Send every log line to standard error, in the configured format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in QUIET:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
