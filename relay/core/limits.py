"""Failed joins per client IP over a sliding window (§4.3), as plain data.

The relay port's joins and the web port's stats lookups (§8) feed the same counter, so
that guessing room ids costs the same wherever it is tried. Every count and check takes
the time as an argument; ``expire`` drops the windows that emptied, so an address that
stops trying does not stay in memory until it tries again.
"""

from __future__ import annotations

from collections import deque

WINDOW = 60.0
#: The error codes that count as a failed join (§4.3).
COUNTED = frozenset({"room_not_found", "user_not_found", "bad_token"})


class JoinFailures:
    __slots__ = ("_windows", "limit", "window")

    def __init__(self, limit: int, window: float = WINDOW) -> None:
        self.limit = limit
        self.window = window
        self._windows: dict[str, deque[float]] = {}

    def __len__(self) -> int:
        """How many addresses have failures in the window (for tests and metrics)."""
        return len(self._windows)

    def count(self, ip: str, now: float) -> None:
        self._windows.setdefault(ip, deque()).append(now)

    def blocked(self, ip: str, now: float) -> bool:
        """At or above the limit within the window ending at ``now``."""
        window = self._windows.get(ip)
        if not window:
            return False
        self._trim(ip, window, now)
        return len(window) >= self.limit

    def expire(self, now: float) -> None:
        """Forget every address whose failures all left the window."""
        for ip, window in list(self._windows.items()):
            self._trim(ip, window, now)

    def _trim(self, ip: str, window: deque[float], now: float) -> None:
        cutoff = now - self.window
        while window and window[0] <= cutoff:
            window.popleft()
        if not window:
            del self._windows[ip]
