"""Parsing of the teacher's ``files_to_ignore`` text (protocol §6.3).

The seed server deduplicated through a set, so its output order was random; the protocol
keeps its filtering rules but fixes the order to "first appearance", which is what this module
implements so that snapshots and tests are deterministic.
"""

from __future__ import annotations

import string

__all__ = ["parse_files_to_ignore"]

# Only ASCII letters and digits: ``str.isalnum`` would also admit other scripts, which the
# seed's ``[A-Za-z0-9...]`` regular expression never did.
_FIRST_CHARS = frozenset(string.ascii_letters + string.digits + "*./_[]-$")


def parse_files_to_ignore(text: str) -> dict[str, list[str]]:
    """Split ``text`` into ``{"names", "dirs", "extensions"}`` exactly as §6.3 describes."""
    names: list[str] = []
    dirs: list[str] = []
    extensions: list[str] = []
    seen_lines: set[str] = set()

    for raw in text.split("\n"):
        # A '#' anywhere drops the whole line (not just a trailing comment), as in the seed.
        if "#" in raw:
            continue
        line = raw.strip()
        if line in seen_lines:
            continue
        seen_lines.add(line)
        if not line or line[0] not in _FIRST_CHARS or line.count("/") > 1 or "*$" in line:
            continue

        if line.startswith("/") or line.endswith("/"):
            target, value = dirs, line.replace("*", "").replace("/", "")
        elif "*." in line:
            target, value = extensions, line.replace("*.", "")
        else:
            target, value = names, line
        if value and value not in target:
            target.append(value)

    return {"names": names, "dirs": dirs, "extensions": extensions}
