"""Autobahn's results as a summary table and as ``docs/conformance.md``.

Kept apart from the runner so that the document's shape and the explanations of known
non-OK cases live in one place, next to each other.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

BEHAVIORS = ["OK", "NON-STRICT", "INFORMATIONAL", "FAILED", "UNIMPLEMENTED"]

_UTF8_PER_MESSAGE = (
    "By design of the frame reader (`relay/transport/wsread.py`): text is validated once per "
    "message, after reassembly, so the connection fails with 1007 when the message's last "
    "frame arrives, not at the fragment that breaks the UTF-8. RFC 6455 §8.1 allows either; "
    "Autobahn calls the missing fail-fast NON-STRICT. The close code is the same, and the "
    "bounds (size, 1,000 frames) still cap what is held meanwhile.")
_UTF8_WHOLE_FRAME = (
    "By design of the frame reader: one frame arrives in three pieces with pauses between, "
    "and the reader judges a payload only once its whole frame is there (it never decodes "
    "part of a frame), so 1007 comes with the last piece. RFC 6455 §8.1 allows it; Autobahn "
    "calls the missing fail-fast NON-STRICT.")

#: Why a case that is not plain OK comes out as it does, by case-id prefix (the longest
#: matching prefix wins). Each names where the behaviour comes from.
NOTES: dict[str, str] = {
    "6.4.1.": _UTF8_PER_MESSAGE,
    "6.4.2.": _UTF8_PER_MESSAGE,
    "6.4.3.": _UTF8_WHOLE_FRAME,
    "6.4.4.": _UTF8_WHOLE_FRAME,
    "7.1.6.": "Informational by the case's own design (implementation-defined order). The "
              "256 KiB echo was partly written when the close arrived and is completed (a "
              "frame is never cut), but the echo of 'Hello World!' queued behind it is "
              "dropped: `WebSocketConnection` answers a peer's close at once and `close()` "
              "without `flush` clears the queue. RFC 6455 §5.5.1 allows that.",
    "7.13.": "RFC 6455 §7.4.2 defines no code above 4999, so the reader treats a close with "
             "5000 or 65535 as a protocol error and fails the connection with 1002 (as "
             "wsproto does). Autobahn leaves the behaviour undefined.",
}


@dataclass(frozen=True, slots=True)
class Outcome:
    """One case's verdict, as Autobahn's index and case report give it."""

    case: str
    behavior: str
    behavior_close: str
    close_code: int | None  # what the server sent
    close_reason: str
    description: str
    expectation: str
    result: str

    @classmethod
    def from_report(cls, case: str, entry: dict[str, Any], detail: dict[str, Any]
                    ) -> Outcome:
        return cls(case, str(entry.get("behavior", "?")), str(entry.get("behaviorClose", "?")),
                   entry.get("remoteCloseCode"), str(detail.get("remoteCloseReason") or ""),
                   _one_line(detail.get("description")), _one_line(detail.get("expectation")),
                   _one_line(detail.get("result")))

    @property
    def key(self) -> tuple[int, ...]:
        return tuple(int(part) for part in self.case.split("."))

    @property
    def section(self) -> int:
        return self.key[0]

    def note(self) -> str:
        matches = [prefix for prefix in NOTES if (self.case + ".").startswith(prefix)]
        return NOTES[max(matches, key=len)] if matches else "Not yet explained."


def _one_line(text: object) -> str:
    """Autobahn's texts have line breaks and ``<br>`` tags; a Markdown list item has neither."""
    return " ".join(str(text or "").replace("<br>", " ").split())


def summarize(outcomes: list[Outcome], accepted: set[str]) -> tuple[str, list[Outcome]]:
    """A plain-text table of counts per section, and the cases not accepted."""
    lines = [f"{'section':>7} " + " ".join(f"{b:>13}" for b in BEHAVIORS)]
    for section, counts in _counts(outcomes).items():
        lines.append(f"{section:>7} " + " ".join(f"{counts[b]:>13}" for b in BEHAVIORS))
    bad = [o for o in outcomes if o.behavior not in accepted]
    return "\n".join(lines), bad


def _counts(outcomes: list[Outcome]) -> dict[int | str, Counter[str]]:
    by_section: dict[int | str, Counter[str]] = {}
    for outcome in outcomes:
        by_section.setdefault(outcome.section, Counter())[outcome.behavior] += 1
    by_section["all"] = Counter(o.behavior for o in outcomes)
    return by_section


def render(outcomes: list[Outcome], accepted: set[str], *, today: str, version: str,
           bounds: tuple[int, int], server_errors: list[str], appendix: str) -> str:
    """The Markdown document; every case that is not plain OK is listed and explained.

    ``bounds`` are the echo server's (message bytes, frames); ``appendix`` is Markdown
    added at the end.
    """
    verdict = ("every case is OK, NON-STRICT or INFORMATIONAL"
               if all(o.behavior in accepted for o in outcomes) and not server_errors
               else "SOME CASES ARE NOT ACCEPTED (see below)")
    out = [
        "# WebSocket conformance (Autobahn|Testsuite)",
        "",
        "Generated by `make conformance` (`conformance/run.py`); do not edit by hand.",
        "",
        f"- Date: {today}",
        f"- Autobahn|Testsuite {version} (Python 2.7), mode `fuzzingclient`",
        "- Server: `conformance/echo.py`, the relay's own transport (`relay.transport`: "
        "HTTP upgrade, `WebSocketConnection`, `wsread.FrameReader`, `wsframe`) echoing text "
        f"and binary messages; for section 9 the message size limit is raised to "
        f"{bounds[0] // 1024 // 1024} MiB and the frame bound to {bounds[1]:,} (the relay's "
        "defaults, 4 MiB and 1,000 frames, are checked in the last section)",
        "- `WebSocketConnection.handle_binary()` is not given the payload (no endpoint takes "
        "binary messages), so the echo server's `FrameReader` subclass keeps binary payloads "
        "for it; everything else is the relay's code path",
        "- Cases 1.* to 10.*; 12.* and 13.* (permessage-deflate) are excluded: the relay "
        "does not negotiate compression",
        f"- Verdict: {verdict}",
        "",
        "| Section | " + " | ".join(BEHAVIORS) + " |",
        "|---|" + "---:|" * len(BEHAVIORS),
    ]
    for section, counts in _counts(outcomes).items():
        out.append(f"| {section} | " + " | ".join(str(counts[b]) for b in BEHAVIORS) + " |")
    others = [o for o in outcomes if o.behavior != "OK" or o.behavior_close != "OK"]
    out += ["", "## Cases that are not plain OK", ""]
    if not others:
        out.append("None: every case is OK, and so is its closing behaviour.")
    for o in others:
        out += [
            f"### {o.case}: {o.behavior} (close: {o.behavior_close}, "
            f"server close code {o.close_code})",
            "",
            f"- Case: {o.description}",
            f"- Expected: {o.expectation}",
            f"- Autobahn says: {o.result}",
            f"- Why: {o.note()}",
            "",
        ]
    if server_errors:
        out += ["## Unexpected exceptions in the echo server", ""]
        out += [f"- `{error}`" for error in server_errors] + [""]
    return "\n".join(out).rstrip() + "\n\n" + appendix
