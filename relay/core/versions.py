"""Student plugin version comparison (protocol §6.1 and Appendix C "Plugin version").

Plugin builds carry suffixes such as ``-beta`` or a ``v`` prefix; only the leading numeric
part is meaningful, and anything we cannot read must never nag a student with a false
"outdated" alert.
"""

from __future__ import annotations

import re

__all__ = ["is_outdated", "parse_plugin_version"]

# ASCII digits only: ``\d`` would also accept e.g. Arabic-Indic digits.
_VERSION_RE = re.compile(r"[0-9]+(?:\.[0-9]+)*")


def parse_plugin_version(s: str) -> tuple[int, ...] | None:
    """Return the leading ``digits(.digits)*`` of ``s`` (after one optional ``v``/``V``).

    ``None`` means "no version": the string does not start with a digit.
    """
    if s[:1] in ("v", "V"):
        s = s[1:]
    match = _VERSION_RE.match(s)
    if match is None:
        return None
    return tuple(int(part) for part in match.group().split("."))


def is_outdated(client: str, newest: str) -> bool:
    """True when ``client`` is strictly older than ``newest`` (lexicographic list order).

    An empty ``newest`` disables the check; an unreadable version on either side never
    triggers, because a wrong warning is worse than a missing one.
    """
    if not newest:
        return False
    newest_v = parse_plugin_version(newest)
    client_v = parse_plugin_version(client)
    if newest_v is None or client_v is None:
        return False
    return client_v < newest_v
