"""Presentation helpers for the stats page: symbols, HTML escaping, the summary line."""

from __future__ import annotations

import html
from typing import Any

from markupsafe import Markup

#: §8.1 step cell symbols.
SYMBOLS = {
    "NONE": "\u274c",  # ❌
    "IN_PROGRESS": "\u23f3",  # ⏳
    "HELP": "\u2757",  # ❗
    "DONE": "\u2611",  # ☑
    "ACCEPTED": "\u2705",  # ✅
}

#: Above this many steps the page writes step names vertically to keep columns narrow.
MANY_STEPS = 6

#: What each symbol means, for the legend under the table.
LEGEND = (
    ("NONE", "not started"),
    ("IN_PROGRESS", "in progress"),
    ("HELP", "needs help"),
    ("DONE", "done"),
    ("ACCEPTED", "accepted"),
)


def escape_output(value: Any) -> Any:
    """Jinja ``finalize`` hook: escape every output exactly as §0 defines HTML-escaping.

    Jinja's own autoescape writes ``'`` as ``&#39;``; the contract says ``&#x27;``
    (what :func:`html.escape` produces). Values already marked safe pass through.
    """
    if isinstance(value, Markup):
        return value
    if value is None:
        return Markup("")
    return Markup(html.escape(str(value), quote=True))


def needs_help(student: dict[str, Any]) -> bool:
    """A student whose signal, or any step status, is ``HELP``."""
    return student["signal"] == "HELP" or "HELP" in student["steps"].values()


def row_classes(student: dict[str, Any]) -> str:
    """CSS classes of a student's row (the page's JavaScript computes the same)."""
    classes = [student["status"]]
    if needs_help(student):
        classes.append("help")
    if student["percent"] == 100:
        classes.append("finished")
    return " ".join(classes)


def summary(stats: dict[str, Any]) -> dict[str, Any]:
    """Counts for the summary line above the table."""
    students = stats["students"]
    return {
        "students": len(students),
        "online": sum(1 for s in students if s["status"] == "online"),
        "help": sum(1 for s in students if needs_help(s)),
        "done": sum(1 for s in students if s["percent"] == 100),
        "has_exercises": any(step["type"] == "exercise" for step in stats["steps"]),
    }
