"""`/metrics` exports what an operator needs to watch powabot, with no team, channel or user ids."""

from __future__ import annotations

import re
from typing import Any

import aiohttp

from bot.service import Powabot
from tests.e2e.answers import ask

# Issue 11's list: the metric families an operator's dashboards and alerts are built on
# as the text format types them (histograms also expose _bucket, _sum and _count).
REQUIRED = {
    "powabot_answers_total": "counter",
    "powabot_answers_in_flight": "gauge",
    "powabot_slack_calls_total": "counter",
    "powabot_slack_ratelimited_total": "counter",
    "powabot_budget_wait_seconds": "histogram",
    "powabot_first_text_seconds": "histogram",
    "powabot_upstream_errors_total": "counter",
    "powabot_lease_takeovers_total": "counter",
    "powabot_budget_fallback_active": "gauge",
}
ALLOWED_LABELS = {"outcome", "method", "result", "kind", "source", "reason", "le"}


async def _metrics(bot: Powabot) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{bot.http_port}/metrics") as response,
    ):
        assert response.status == 200
        return await response.text()


async def test_metrics_after_an_answer_hold_every_required_series(
    slack: Any, powabase: Any, bot: Powabot
) -> None:
    """After one answer in Socket Mode, /metrics on PORT carries every series issue 11 names,
    the delivered answer and its Slack calls counted."""
    await ask(slack, bot, "D0METRICS", "What is the refund window for Pro annual?")
    text = await _metrics(bot)
    missing = [
        name for name, kind in REQUIRED.items() if f"# TYPE {name} {kind}" not in text.splitlines()
    ]
    assert not missing, missing
    assert re.search(r'^powabot_answers_total\{outcome="delivered"\} [1-9]', text, re.M)
    assert re.search(
        r'^powabot_slack_calls_total\{method="chat.postMessage",result="ok"\}', text, re.M
    )
    assert re.search(r"^powabot_first_text_seconds_count [1-9]", text, re.M)


async def test_metric_labels_never_carry_ids(slack: Any, powabase: Any, bot: Powabot) -> None:
    """Label names stay in a small fixed set (no team, channel, user or thread ids as labels)."""
    await ask(slack, bot, "D0LABELS", "Which plans include SSO?")
    text = await _metrics(bot)
    labels = {
        name
        for line in text.splitlines()
        if line.startswith("powabot_") and "{" in line
        for name in re.findall(r'(\w+)="', line.split("{", 1)[1])
    }
    assert labels <= ALLOWED_LABELS, labels - ALLOWED_LABELS
    assert "D0LABELS" not in text and "T0TEAM" not in text
