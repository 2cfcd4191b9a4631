"""Per-connection token bucket and flood tracking (§2.2)."""

from __future__ import annotations


class RateLimiter:
    __slots__ = ("burst", "close_after", "flood_start", "last_drop", "last_error", "rate",
                 "stamp", "tokens")

    def __init__(self, rate: float, burst: float, close_after: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.close_after = close_after
        self.tokens = burst
        self.stamp = now
        self.flood_start: float | None = None
        self.last_drop = -1e18
        self.last_error = -1e18

    def take(self, now: float) -> bool:
        """Charge one message; False means drop it."""
        tokens = self.tokens + (now - self.stamp) * self.rate
        self.stamp = now
        if tokens > self.burst:
            tokens = self.burst
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            return True
        self.tokens = tokens
        return False

    def drop(self, now: float) -> tuple[bool, bool]:
        """Record a drop: (send the rate_limited error now, close with 4008 now)."""
        if self.flood_start is None or now - self.last_drop >= 1.0:
            self.flood_start = now
        self.last_drop = now
        tell = now - self.last_error >= 1.0
        if tell:
            self.last_error = now
        return tell, now - self.flood_start >= self.close_after
