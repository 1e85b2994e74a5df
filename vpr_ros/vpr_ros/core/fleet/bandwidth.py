"""A byte budget per second for what a robot sends to its fleet (token bucket), ROS-free."""

from __future__ import annotations

__all__ = ["TokenBucket"]


class TokenBucket:
    """``rate`` bytes/s refill up to ``burst`` bytes; ``rate <= 0`` means no limit.

    Broadcasts wait for tokens (:meth:`try_spend`); answers a peer is waiting for spend anyway
    (:meth:`spend`, the balance may go negative) so a verification never stalls on the budget, and
    the debt delays the next broadcasts instead: over any window the average stays at ``rate``.
    Times are monotonic seconds passed in by the caller (testable without sleeping).
    """

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = float(rate)
        self.burst = max(float(burst), 0.0)
        self._tokens = self.burst
        self._last = now

    @property
    def unlimited(self) -> bool:
        return self.rate <= 0

    def available(self, now: float) -> float:
        """Bytes that may be sent now (negative while in debt)."""
        if self.unlimited:
            return float("inf")
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        return self._tokens

    def try_spend(self, n: int, now: float) -> bool:
        """Spend ``n`` bytes if the bucket holds them (or ``n`` exceeds the burst and it is full)."""
        tokens = self.available(now)
        if tokens >= min(n, self.burst):  # a message larger than the burst goes out on a full bucket
            self._tokens -= n
            return True
        return False

    def spend(self, n: int, now: float) -> None:
        """Spend ``n`` bytes unconditionally."""
        if not self.unlimited:
            self.available(now)
            self._tokens -= n
