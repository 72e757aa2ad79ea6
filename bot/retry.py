"""The one retry/backoff helper: `Retry-After` parsing and jittered exponential delays.

Both Slack (publisher, native streaming) and Powabase (the streaming client) wait with these, so
every retry in powabot follows one rule: the server's `Retry-After` wins (clamped), otherwise the
delay doubles per attempt, spread by jitter so answers failing together do not retry together.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

# A `Retry-After` longer than this is treated as this long: a proxy's "come back in an hour"
# must not park an answer for an hour (the caller's own deadline decides when to give up).
MAX_RETRY_AFTER = 60.0


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` value (delay-seconds or HTTP-date); None if unusable.

    A date in the past gives 0; the result is never negative, never NaN or infinite.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def clamp_retry_after(
    value: str | None,
    *,
    default: float = 1.0,
    maximum: float = MAX_RETRY_AFTER,
    now: datetime | None = None,
) -> float:
    """`Retry-After` as seconds within [0, maximum]; `default` when missing or unreadable."""
    seconds = parse_retry_after(value, now)
    return min(default if seconds is None else seconds, maximum)


def retry_delay(
    attempt: int,
    *,
    backoff: float,
    max_delay: float,
    retry_after: float | None = None,
    jitter: float | None = None,
) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based), at most ``max_delay``.

    The server's `Retry-After` wins when given; otherwise ``backoff`` doubles per attempt, spread
    by ``jitter`` (0..1, 0.5 = exactly nominal; None = random) so many answers failing together
    do not retry together.
    """
    if retry_after is not None:
        return min(retry_after, max_delay)
    spread = random.random() if jitter is None else jitter
    return min(backoff * 2.0 ** (attempt - 1) * (0.5 + spread), max_delay)
