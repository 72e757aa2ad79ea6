"""Small fakes shared by several test modules."""

from __future__ import annotations

import asyncio


class FakeClock:
    """Time that moves only when something sleeps: retries and pacing run without waiting.

    Pass the instance as a `clock` and its `sleep` as the matching sleep.
    """

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []
        self.at: list[float] = []  # readings a test notes (e.g. on every stand-in call)

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += max(seconds, 0.0)
        await asyncio.sleep(0)
