"""Token buckets that model the Slack rate limits the bot must design around.

Buckets exist for five methods, each method with buckets of its own (Slack counts every
method separately):

- ``chat.postMessage``: per channel (about 1 per second, short bursts tolerated).
- ``chat.update``: per workspace (Tier 3, about 50 per minute, shared by every message).
- ``chat.appendStream``: per workspace (Tier 4, "100+ per minute").
- ``chat.startStream`` and ``chat.stopStream``: per workspace, one bucket each (Tier 2,
  "20+ per minute").

Set a streaming method's ``*_per_minute_per_workspace`` to ``None`` to leave it unlimited.
Every other method is not limited.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RateLimits:
    """How fast the stand-in lets the bot call each limited method before answering 429."""

    update_per_minute_per_workspace: float = 50
    update_burst: int = 10
    post_per_second_per_channel: float = 1
    post_burst: int = 3
    append_per_minute_per_workspace: float | None = 100
    append_burst: int = 20
    start_per_minute_per_workspace: float | None = 20
    start_burst: int = 4
    stop_per_minute_per_workspace: float | None = 20
    stop_burst: int = 4

    @staticmethod
    def retry_after(wait_seconds: float) -> int:
        """The whole number of seconds Slack puts in ``Retry-After`` for a given wait (>= 1)."""
        return max(1, math.ceil(wait_seconds))


class TokenBucket:
    """A bucket of ``capacity`` tokens refilled at ``rate`` tokens per second."""

    __slots__ = ("capacity", "rate", "tokens", "updated")

    def __init__(self, rate: float, capacity: int, now: float) -> None:
        if rate <= 0 or capacity < 1:
            raise ValueError(
                f"TokenBucket needs rate > 0 and capacity >= 1, got {rate}, {capacity}"
            )
        self.rate = rate
        self.capacity = float(capacity)
        self.tokens = float(capacity)
        self.updated = now

    def take(self, now: float) -> float:
        """Take one token; return 0.0 when taken, else the seconds until one is available."""
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class RateLimiter:
    """Decides, per Web API call, whether it is over its limit (O(1) per call)."""

    def __init__(
        self, limits: RateLimits | None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limits = limits
        self._clock = clock
        self._buckets: dict[tuple[str, str], TokenBucket] = {}

    def _spec(
        self, method: str, args: Mapping[str, Any], team: str
    ) -> tuple[str, float, int] | None:
        limits = self.limits
        if limits is None:
            return None
        if method == "chat.update":
            return team, limits.update_per_minute_per_workspace / 60, limits.update_burst
        if method == "chat.postMessage":
            channel = str(args.get("channel", ""))
            return channel, limits.post_per_second_per_channel, limits.post_burst
        streaming = {
            "chat.appendStream": (limits.append_per_minute_per_workspace, limits.append_burst),
            "chat.startStream": (limits.start_per_minute_per_workspace, limits.start_burst),
            "chat.stopStream": (limits.stop_per_minute_per_workspace, limits.stop_burst),
        }
        per_minute, burst = streaming.get(method, (None, 0))
        if per_minute is not None:
            return team, per_minute / 60, burst
        return None

    def check(self, method: str, args: Mapping[str, Any], team: str = "") -> int | None:
        """Consume a token for this call; return Retry-After seconds if refused, else None.
        ``team``: the workspace of the calling token (each workspace has its own limits)."""
        spec = self._spec(method, args, team)
        if spec is None:
            return None
        scope, rate, burst = spec
        now = self._clock()
        bucket = self._buckets.get((method, scope))
        if bucket is None:
            bucket = self._buckets[(method, scope)] = TokenBucket(rate, burst, now)
        wait = bucket.take(now)
        return None if wait == 0.0 else RateLimits.retry_after(wait)
