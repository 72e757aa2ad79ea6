"""The one budget interface (`reserve` / `push`) on the in-process token bucket."""

from __future__ import annotations

from bot.slack.budget import TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


async def test_progress_is_refused_at_the_reserve_and_a_final_waits_its_turn() -> None:
    """max_wait 0 with a reserve refuses while the reserve would be touched (nothing taken);
    a caller that may wait gets the next token, after waiting for it."""
    clock = Clock()
    bucket = TokenBucket(1.0, 3.0, clock=clock, sleep=clock.sleep)
    assert await bucket.reserve(max_wait=0, reserve=1.0) == 0.0
    assert await bucket.reserve(max_wait=0, reserve=1.0) == 0.0
    assert await bucket.reserve(max_wait=0, reserve=1.0) is None
    assert bucket.level == 1.0  # the refusal took nothing
    assert await bucket.reserve(max_wait=0) == 0.0
    assert await bucket.reserve(max_wait=0.5) is None  # the next token is 1 s away
    assert await bucket.reserve(max_wait=5) == 0.0
    assert clock.now == 1.0


async def test_a_push_holds_every_caller_back_until_it_ends() -> None:
    """After push(30) (a 429), nothing is granted before 30 s plus one token's refill."""
    clock = Clock()
    bucket = TokenBucket(2.0, 4.0, clock=clock, sleep=clock.sleep)
    await bucket.push(30.0)
    assert await bucket.reserve(max_wait=0) is None
    assert await bucket.reserve(max_wait=10) is None
    assert await bucket.reserve(max_wait=60) == 0.0
    assert 30.5 <= clock.now <= 30.6
