"""Rate budgets: idle buckets are forgotten, busy and paused ones never."""

from __future__ import annotations

from bot.slack.budget import MAX_IDLE_BUCKETS, Budgets, TokenBucket


def test_a_long_running_bot_forgets_idle_channel_buckets_but_keeps_a_paused_one() -> None:
    """Memory stays bounded over many channels; a bucket Slack paused keeps its pause."""
    budgets = Budgets()
    paused = budgets.posts("C0HOT")
    paused.pause(60)  # Slack said 429 here: forgetting it would lift the pause
    for i in range(MAX_IDLE_BUCKETS + 5):
        budgets.posts(f"C{i:06d}")  # looked up, never spent: full, hence idle
    assert len(budgets._posts) < MAX_IDLE_BUCKETS
    assert budgets.posts("C0HOT") is paused
    assert not paused.try_take()


async def test_a_paused_bucket_waits_out_the_pause_on_its_own_clock() -> None:
    """take() after a 429 pause waits for the pause to end, then for one token (fake clock)."""
    now = [0.0]

    async def sleep(seconds: float) -> None:
        now[0] += seconds

    bucket = TokenBucket(2.0, 4.0, clock=lambda: now[0], sleep=sleep)
    bucket.pause(30.0)
    assert not bucket.try_take()
    await bucket.take()
    assert 30.5 <= now[0] <= 30.6  # the pause, then half a second for one token at 2/s
