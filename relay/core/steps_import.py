"""Pure parts of ``steps/import`` (protocol §6.7 and Appendix C "Markdown import"/"Imports").

Everything here is deterministic and free of I/O so it can be tested exhaustively; the network
side lives in :mod:`relay.server.notion_fetch`. All user-visible failures are raised as
:class:`ImportFailure`, whose ``message`` becomes both the ERROR alert and the
``import_failed`` error text.
"""

from __future__ import annotations

import html
import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias
from urllib.parse import urlsplit

__all__ = [
    "MAX_TASKS",
    "MAX_TASK_BYTES",
    "AllowedBase",
    "ImportFailure",
    "markdown_to_tasks",
    "notion_blocks_to_tasks",
    "notion_page_id",
    "parse_allowed_bases",
    "validate_tasks",
]

MAX_TASKS = 100
MAX_TASK_BYTES = 256 * 1024

_DEFAULT_PORTS = {"http": 80, "https": 443}
_CODE_OPEN = '<pre class="ql-syntax">'
_CODE_CLOSE = "</pre>"


class ImportFailure(Exception):
    """An import failed; ``message`` is short English meant for the teacher."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _escape(text: str) -> str:
    # html.escape(quote=True) maps & < > " ' to exactly the entities §0 prescribes.
    return html.escape(text, quote=True)


# --------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------

_SEPARATOR_RE = re.compile(r"-{3,}")
# Only U+0020 after the hashes: the rule says "#{1,6} + space + text".
_HEADING_RE = re.compile(r"#{1,6} (.*)", re.DOTALL)


@dataclass
class _Code:
    lines: list[str]


_Item: TypeAlias = str | _Code  # a plain input line outside code, or a fenced code block


def _is_blank(item: _Item) -> bool:
    return isinstance(item, str) and not item.strip()


def _render_markdown_item(item: _Item) -> str:
    if isinstance(item, _Code):
        return _CODE_OPEN + _escape("\n".join(item.lines)) + _CODE_CLOSE
    stripped = item.strip()
    if not stripped:
        return "<br>"
    heading = _HEADING_RE.fullmatch(stripped)
    if heading is not None:
        return "<h3>" + _escape(heading.group(1).rstrip("# ").strip()) + "</h3>"
    return _escape(item.rstrip()) + "<br>"


def markdown_to_tasks(md: str) -> list[str]:
    """Convert teacher Markdown to task HTML strings; may return ``[]``.

    Deliberately tiny (no inline markup): the output is shown in a rich-text editor, so only
    structure that survives that editor (headings, code blocks, line breaks) is produced.
    """
    lines = md.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    tasks: list[list[_Item]] = [[]]
    code: _Code | None = None
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("```"):
            if code is None:
                code = _Code([])
                tasks[-1].append(code)
            else:
                code = None
        elif code is not None:
            code.lines.append(line)  # code keeps its whitespace, trailing included
        elif _SEPARATOR_RE.fullmatch(stripped):
            tasks.append([])
        else:
            tasks[-1].append(line)

    result: list[str] = []
    for items in tasks:
        start, end = 0, len(items)
        while start < end and _is_blank(items[start]):
            start += 1
        while end > start and _is_blank(items[end - 1]):
            end -= 1
        if start < end:
            result.append("".join(_render_markdown_item(item) for item in items[start:end]))
    return result


# --------------------------------------------------------------------------------------------
# Notion URL and allowlist
# --------------------------------------------------------------------------------------------

_LABEL = r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
_HOST_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_HEX32_RE = re.compile(r"[0-9a-fA-F]{32}")
_FORBIDDEN_URL_CHARS = re.compile(r"[\x00-\x20\x7f]")


@dataclass(frozen=True)
class AllowedBase:
    """One ``OBSERVER_NOTION_BASE_URLS`` entry; ``host`` excludes the ``*.`` of a wildcard."""

    scheme: str
    host: str
    port: int
    wildcard: bool = False

    def matches(self, scheme: str, host: str, port: int) -> bool:
        if scheme != self.scheme or port != self.port:
            return False
        if self.wildcard:
            # "*.example" admits any subdomain, never the bare domain itself; an IP literal
            # is not a subdomain of anything (127.0.0.1 must not match "*.0.0.1").
            return host.endswith("." + self.host) and not _is_ip(host)
        return host == self.host


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _valid_host(host: str) -> bool:
    if ":" in host:  # urlsplit strips the brackets of an IPv6 literal
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return False
        return True
    return _HOST_RE.fullmatch(host) is not None


def _format_origin(scheme: str, host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    if port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{shown}"
    return f"{scheme}://{shown}:{port}"


def _parse_allowed_base(entry: str) -> AllowedBase:
    text = entry.strip()
    if not text or _FORBIDDEN_URL_CHARS.search(text):
        raise ValueError(f"invalid Notion base URL {entry!r}")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"invalid Notion base URL {entry!r}: {exc}") from None
    if parts.scheme not in _DEFAULT_PORTS:
        raise ValueError(f"Notion base URL {entry!r} must use http or https")
    if "@" in parts.netloc or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"Notion base URL {entry!r} must have the form scheme://host[:port]")
    host = (parts.hostname or "").lower()
    wildcard = host.startswith("*.")
    if wildcard:
        host = host[2:]
    if not _valid_host(host) or (wildcard and ":" in host):
        raise ValueError(f"Notion base URL {entry!r} has an invalid host")
    if port == 0:
        raise ValueError(f"Notion base URL {entry!r} has an invalid port")
    return AllowedBase(
        parts.scheme, host, _DEFAULT_PORTS[parts.scheme] if port is None else port, wildcard
    )


def parse_allowed_bases(entries: Sequence[str]) -> list[AllowedBase]:
    """Validate allowlist entries ``scheme://host[:port]`` (``*.`` host prefix allowed).

    Raises ``ValueError`` on the first malformed entry so configuration fails at start-up
    rather than on the first import. A single trailing ``/`` is tolerated.
    """
    return [_parse_allowed_base(entry) for entry in entries]


def notion_page_id(url: str, allowed_bases: Sequence[str | AllowedBase]) -> tuple[str, str]:
    """Return ``(origin, page_uuid)`` for an allowed Notion page URL.

    The origin is rebuilt from the validated parts (never copied from the input), so the
    request can only ever go to an allowlisted scheme/host/port.
    """
    bases = [b if isinstance(b, AllowedBase) else _parse_allowed_base(b) for b in allowed_bases]
    if _FORBIDDEN_URL_CHARS.search(url):
        raise ImportFailure("The URL is malformed")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ImportFailure("The URL is malformed") from None
    if not parts.scheme or not parts.netloc:
        raise ImportFailure("The URL is malformed")
    if "@" in parts.netloc:
        raise ImportFailure("The URL must not contain a user name or password")
    host = (parts.hostname or "").lower()
    if not _valid_host(host):
        raise ImportFailure("The URL is malformed")
    scheme = parts.scheme.lower()
    default_port = _DEFAULT_PORTS.get(scheme)
    effective_port = default_port if port is None else port
    if effective_port is None or not any(b.matches(scheme, host, effective_port) for b in bases):
        raise ImportFailure("The URL is not an allowed Notion address")

    segments = [segment for segment in parts.path.split("/") if segment]
    candidate = segments[-1][-32:] if segments else ""
    if not _HEX32_RE.fullmatch(candidate):
        raise ImportFailure("The URL does not contain a Notion page id")
    h = candidate.lower()
    page_uuid = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
    return _format_origin(scheme, host, effective_port), page_uuid


# --------------------------------------------------------------------------------------------
# Notion blocks
# --------------------------------------------------------------------------------------------


def _block_object(record: object) -> dict[str, Any] | None:
    """``record.value``, or ``record.value.value`` when the former has no ``type``.

    Notion wraps blocks one level deeper in newer API responses; both shapes are accepted.
    """
    if not isinstance(record, dict):
        return None
    value = record.get("value")
    if not isinstance(value, dict):
        return None
    if "type" not in value:
        value = value.get("value")
        if not isinstance(value, dict):
            return None
    return value


def _title(block: Mapping[str, Any]) -> list[Any] | None:
    properties = block.get("properties")
    if not isinstance(properties, dict):
        return None
    title = properties.get("title")
    return title if isinstance(title, list) else None


def _title_text(runs: list[Any]) -> str:
    parts: list[str] = []
    for run in runs:
        if isinstance(run, str):
            parts.append(run)
        elif isinstance(run, list) and run and isinstance(run[0], str):
            parts.append(run[0])  # [text, formatting...]: formatting is dropped
    return _escape("".join(parts))


def _children(block: Mapping[str, Any]) -> list[str]:
    content = block.get("content")
    if not isinstance(content, list):
        return []
    return [child for child in content if isinstance(child, str)]


def notion_blocks_to_tasks(page_id: str, blocks: Mapping[str, Any]) -> list[str]:
    """Turn a merged ``recordMap.block`` map into task HTML strings (empty tasks dropped).

    Traversal is depth-first pre-order from the page block's children, iterative so deep
    nesting cannot exhaust the Python stack. Each block id is visited at most once, which
    both breaks cycles and stops a hostile answer from expanding a shared subtree
    exponentially.
    """
    page = _block_object(blocks.get(page_id))
    if page is None:
        return []

    tasks: list[str] = []
    current: list[str] = []
    visited = {page_id}
    stack = list(reversed(_children(page)))
    while stack:
        block_id = stack.pop()
        if block_id in visited:
            continue
        visited.add(block_id)
        block = _block_object(blocks.get(block_id))
        if block is None:
            continue
        block_type = block.get("type")
        if not isinstance(block_type, str):
            block_type = ""
        if block_type == "page":
            continue  # sub-pages are separate documents: neither shown nor entered

        title = _title(block)
        text = _title_text(title) if title is not None else ""
        if block_type == "divider":
            tasks.append("".join(current))
            current = []
        elif "header" in block_type:
            current.append(f"<h3>{text}</h3>")
        elif block_type == "code":
            current.append(_CODE_OPEN + text + _CODE_CLOSE)
        elif title is not None:
            current.append(text + "<br>")
        stack.extend(reversed(_children(block)))

    tasks.append("".join(current))
    return [task for task in tasks if task]


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def validate_tasks(tasks: Sequence[str]) -> list[dict[str, str]]:
    """Check the §6.7 limits and number the tasks as import-draft steps ``"1"``, ``"2"``, …."""
    if not tasks:
        raise ImportFailure("No tasks were found")
    if len(tasks) > MAX_TASKS:
        raise ImportFailure(f"There are more than {MAX_TASKS} tasks")
    for number, task in enumerate(tasks, start=1):
        if len(task.encode("utf-8")) > MAX_TASK_BYTES:
            raise ImportFailure(f"Task {number} is larger than {MAX_TASK_BYTES // 1024} KiB")
    return [
        {"name": str(number), "content": task, "language": "html", "type": "exercise"}
        for number, task in enumerate(tasks, start=1)
    ]
