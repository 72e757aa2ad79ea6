"""Rate budgets: idle buckets are forgotten, busy and paused ones never."""

from __future__ import annotations

from bot.slack.budget import MAX_IDLE_BUCKETS, Budgets


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
