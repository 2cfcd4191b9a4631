"""Coalescing of ``contact`` frames (§9.10).

A ``contact`` carries the whole directory, so sending one to every logged-in session after
every change would make a burst of N logins cost N² frames of size O(N). The pacer keeps one
window for the whole directory: the first change after a quiet period is announced at once;
changes within ``window`` seconds of the last ``contact`` wait until the window ends (the
shell calls ``Directory.tick`` at ``next_deadline()``) and then share one ``contact``, which
shows the state at that moment. Every logged-in session receives every broadcast, so all of
them are always equally up to date and one window suffices: each session gets at most one
``contact`` per window, and a change is announced at most ``window`` seconds after it
happened.

A login that changes nothing for anyone else (the same name again) makes only its own
session *owed* a ``contact``; it is served by the same window.
"""

from __future__ import annotations


class ContactPacer:
    """When the next ``contact`` is due, and to whom (everyone, or a few owed sessions)."""

    __slots__ = ("_everyone", "_last", "_owed", "window")

    def __init__(self, window: float) -> None:
        self.window = window
        self._last: float | None = None  # when the last contact was emitted
        self._everyone = False  # the directory changed since then
        self._owed: dict[str, None] = {}  # sessions owed one although nothing changed

    def changed(self) -> None:
        """The directory changed: every logged-in session needs a new ``contact``."""
        self._everyone = True

    def owe(self, session: str) -> None:
        """This session needs a ``contact`` although the directory did not change."""
        self._owed[session] = None

    @property
    def pending(self) -> bool:
        return self._everyone or bool(self._owed)

    def deadline(self) -> float | None:
        """When ``tick`` should run next, or ``None`` when nothing waits."""
        if not self.pending:
            return None
        return 0.0 if self._last is None else self._last + self.window

    def due(self, now: float) -> bool:
        """Whether a pending ``contact`` may go out at ``now``.

        A ``now`` earlier than the last emission means the wall clock stepped back; the
        window is then treated as over, so a clock step can delay a ``contact`` by at most
        one window instead of by the size of the step.
        """
        if not self.pending:
            return False
        last = self._last
        return last is None or now >= last + self.window or now < last

    def take(self) -> tuple[bool, list[str]]:
        """Clear what is pending: (everyone?, the owed sessions in the order owed)."""
        everyone, owed = self._everyone, list(self._owed)
        self._everyone = False
        self._owed.clear()
        return everyone, owed

    def sent(self, now: float) -> None:
        """A ``contact`` went out at ``now``: the next window starts."""
        self._last = now

    def state(self) -> tuple[float | None, bool, tuple[str, ...]]:
        """The whole pacing state, for replay checks."""
        return self._last, self._everyone, tuple(self._owed)
