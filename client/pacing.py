"""How fast the realtime client may send, so that it never outruns the server's limits.

The server counts, per sending device, message sends (REST and WebSocket together: `send_device`,
1,200 per 60 s by default) and, per connection, every frame received (`ws_frame`, 6,000 per 60 s,
acknowledgements included); past either it refuses with `rate_limited` (docs/operations.md). A
client that meets the limit keeps being refused until the window ends, and every refusal it
answers with a resend makes it worse (issue 13, F1): so the client paces itself below both, with
a token bucket each. A bucket of `burst` tokens refilled at `per_s` lets through at most
`burst + 60 * per_s` in any 60 s, which the defaults keep below the server's limits with room to
spare for REST sends and clock differences.

Pure: the clock is an argument.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Rate:
    """At most `burst` at once, `per_s` on average."""

    per_s: float
    burst: float

    def most_in(self, seconds: float) -> float:
        """The most a bucket of this rate lets through in any interval of `seconds`."""
        return self.burst + self.per_s * seconds


# Message sends per device: at most 1,150 in any minute (the server allows 1,200).
SEND_RATE = Rate(per_s=15.0, burst=250.0)
# Frames per connection: at most 5,800 in any minute (the server allows 6,000).
FRAME_RATE = Rate(per_s=80.0, burst=1000.0)


@dataclass
class TokenBucket:
    rate: Rate
    _tokens: float | None = field(default=None, repr=False)  # full at first use
    _updated: float = field(default=0.0, repr=False)

    def delay(self, now: float) -> float:
        """Seconds to wait before one more may go (0: now)."""
        tokens = self._refill(now)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate.per_s

    def take(self, now: float) -> None:
        """Spend one token (the caller waited `delay` first)."""
        self._tokens = self._refill(now) - 1.0

    def _refill(self, now: float) -> float:
        if self._tokens is None:
            self._tokens, self._updated = self.rate.burst, now
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(self.rate.burst, self._tokens + elapsed * self.rate.per_s)
        self._updated = now
        return self._tokens
