"""Event-loop lag: a ticker task that asks to wake every `interval` and records how late it was.

The lag of one tick is the time between when the sleep should have ended and when the task ran
again. Anything that holds the loop (a slow callback, a burst of parsing) shows up here, and it is
the same delay every other coroutine of the process suffers at that moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import time
from datetime import UTC, datetime
from typing import Any

SPIKES_KEPT = 5


class LagTicker:
    """Samples scheduling delay until stopped; `reset()` starts a new measuring window."""

    def __init__(self, interval: float = 0.02) -> None:
        if interval <= 0:
            raise ValueError(f"lag ticker interval must be > 0, got {interval}")
        self.interval = interval
        self.samples: list[float] = []
        self._spikes: list[tuple[float, float, float]] = []  # (lag, monotonic, wall) heap
        self._since = time.monotonic()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._tick(), name="bench-lag-ticker")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def reset(self) -> None:
        self.samples = []
        self._spikes = []
        self._since = time.monotonic()

    def spikes(self) -> list[dict[str, Any]]:
        """The largest lags of the window: when (seconds into it, UTC wall time) and how long."""
        return [
            {
                "lag_s": round(lag, 4),
                "at_s": round(t - self._since, 3),
                "wall": datetime.fromtimestamp(wall, UTC).isoformat(),
            }
            for lag, t, wall in sorted(self._spikes, reverse=True)
        ]

    async def _tick(self) -> None:
        while True:
            due = time.monotonic() + self.interval
            await asyncio.sleep(self.interval)
            now = time.monotonic()
            lag = max(0.0, now - due)
            self.samples.append(lag)
            entry = (lag, now, time.time())
            if len(self._spikes) < SPIKES_KEPT:
                heapq.heappush(self._spikes, entry)
            elif lag > self._spikes[0][0]:
                heapq.heapreplace(self._spikes, entry)
