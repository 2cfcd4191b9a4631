"""The relay's own message bounds (protocol §2.1), checked with Autobahn's section 9.

The main run raises the bounds so that section 9 can pass. This second pass serves with
what a relay connection gets by default and runs cases 9.1 to 9.4, each one message of
known size and frame count. What is required comes from the protocol, not from the code
under test: a message over 4 MiB (§1.3's default) or 1,000 frames (§2.1) is refused with
close code 1009 (Autobahn reports the case FAILED, since it wanted an echo), any other is
echoed (OK).
"""

from __future__ import annotations

from dataclasses import dataclass

from conformance.report import Outcome

CASES = ["9.1.*", "9.2.*", "9.3.*", "9.4.*"]
MiB = 1024 * 1024
PROTOCOL_MAX_SIZE = 4 * MiB  # OBSERVER_MAX_MESSAGE_SIZE's default (§1.3)
PROTOCOL_MAX_FRAMES = 1000  # §2.1
_SIZES = [MiB // 16, MiB // 4, MiB, 4 * MiB, 8 * MiB, 16 * MiB]  # 9.1.n and 9.2.n
_FRAGMENTS = [64, 256, 1024, 4096, 16384, 65536, MiB // 4, MiB, 4 * MiB]  # 9.3.n, 9.4.n


def autobahn_message(case: str) -> tuple[int, int]:
    """(bytes, frames) of the message Autobahn sends in ``case`` (9.1.* to 9.4.*)."""
    _, group, n = (int(part) for part in case.split("."))
    if group in (1, 2):
        return _SIZES[n - 1], 1
    size, fragment = 4 * MiB, _FRAGMENTS[n - 1]
    if size <= fragment:
        return size, 1
    # Autobahn's fragmenting loop ends with an empty frame when the size divides evenly.
    return size, size // fragment + (1 if size % fragment == 0 else 0)


@dataclass(frozen=True, slots=True)
class LimitCheck:
    case: str
    size: int
    frames: int
    refused: bool  # what the bounds require
    outcome: Outcome

    @property
    def passed(self) -> bool:
        if self.refused:
            return self.outcome.close_code == 1009
        return self.outcome.behavior == "OK"


def check(outcomes: list[Outcome]) -> list[LimitCheck]:
    checks = []
    for outcome in outcomes:
        size, frames = autobahn_message(outcome.case)
        refused = size > PROTOCOL_MAX_SIZE or frames > PROTOCOL_MAX_FRAMES
        checks.append(LimitCheck(outcome.case, size, frames, refused, outcome))
    return checks


def render(checks: list[LimitCheck]) -> str:
    out = [
        "## The relay's own bounds (§2.1)",
        "",
        "A second pass serves with what a relay connection gets by default (`Config()`'s "
        "message size, `FrameReader`'s frame bound) and runs cases 9.1 to 9.4. The protocol "
        f"requires a message over {PROTOCOL_MAX_SIZE // MiB} MiB (§1.3) or "
        f"{PROTOCOL_MAX_FRAMES:,} frames (§2.1) to be refused with 1009 (Autobahn then "
        "reports FAILED: it wanted an echo), and any other to be echoed.",
        "",
        "| Case | Bytes | Frames | Required | Server's close | Autobahn | Verdict |",
        "|---|---:|---:|---|---|---|---|",
    ]
    for c in checks:
        o = c.outcome
        closed = f"{o.close_code} {o.close_reason}".strip() if o.close_code else "-"
        out.append(f"| {c.case} | {c.size:,} | {c.frames:,} | "
                   f"{'1009' if c.refused else 'echo'} | {closed} | {o.behavior} | "
                   f"{'as required' if c.passed else 'NOT AS REQUIRED'} |")
    return "\n".join(out) + "\n"
