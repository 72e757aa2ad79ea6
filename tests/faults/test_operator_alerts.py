"""What an operator sees: alerts for faults only they can fix, readiness, metrics, and logs
that say whether each answer reached its user. Real bot, real sockets, stand-ins.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import aiohttp
import pytest
from structlog.testing import capture_logs

from bot.service import Powabot
from sandbox.powabase import PowabaseStandin
from sandbox.slack import SlackStandin
from tests.conftest import running_bot
from tests.e2e.answers import ask, bot_replies, expected_text

QUESTION = "What is the refund window for Pro annual?"
NOT_SET_UP = "I'm not set up correctly right now; the team has been told."


async def fetch(bot: Powabot, path: str) -> tuple[int, str]:
    """GET `path` from the bot's own HTTP server (health, readiness, metrics)."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{bot.http_port}{path}") as response,
    ):
        return response.status, await response.text()


def metric(text: str, name: str, **labels: str) -> float:
    """One sample's value from Prometheus text output (0 when absent)."""
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            return float(match.group(2))
    return 0.0


async def test_a_refused_powabase_key_alerts_once_turns_readiness_red_and_counts(
    slack: SlackStandin, powabase: PowabaseStandin, tmp_path: Path
) -> None:
    """Three answers refused with 401: three notices, one alert log, /readyz 503 and the metric;
    the next answer that works clears the alert and readiness is green again."""
    labels = {"source": "powabase", "reason": "http_401"}
    with capture_logs() as logs:
        async with running_bot(slack, powabase, tmp_path) as bot:
            assert (await fetch(bot, "/readyz"))[0] == 200
            before = metric(
                (await fetch(bot, "/metrics"))[1], "powabot_operator_alerts_total", **labels
            )
            powabase.inject_run_fault("status", status=401, times=3)
            notices = []
            for i in range(3):
                msg = await ask(slack, bot, f"D0KEY{i}", QUESTION)
                notices += [m.text for m in bot_replies(slack, f"D0KEY{i}", msg.ts)]
            status, body = await fetch(bot, "/readyz")
            metrics = (await fetch(bot, "/metrics"))[1]
            healthy = (await fetch(bot, "/healthz"))[0]
            fixed = await ask(slack, bot, "D0KEYOK", QUESTION)
            after_fix = await fetch(bot, "/readyz")
    assert len(notices) == 3 and all(NOT_SET_UP in text for text in notices)
    assert status == 503 and healthy == 200  # not ready, but alive: no restart storm
    assert "operator_alert: powabase http_401" in json.loads(body)["reasons"]
    assert metric(metrics, "powabot_operator_alerts_total", **labels) == before + 3
    alerts = [e for e in logs if e["event"] == "operator_alert"]
    assert len(alerts) == 1 and alerts[0]["log_level"] == "error"
    (answer, *_trace) = bot_replies(slack, "D0KEYOK", fixed.ts)
    assert answer.text == expected_text(powabase.runs[-1].answer)
    assert after_fix[0] == 200, after_fix[1]


async def test_a_placeholder_refused_as_not_in_channel_sends_nothing_to_powabase(
    slack: SlackStandin, powabase: PowabaseStandin, tmp_path: Path
) -> None:
    """not_in_channel on the thread's first status: not even the first question there reaches
    Powabase, nothing is posted, one log line each."""
    # Refused after 0.1 s, as a real Slack round trip: a run begun alongside would be asked.
    slack.inject("assistant.threads.setStatus", error="not_in_channel", times=2, delay=0.1)
    with capture_logs() as logs:
        async with running_bot(slack, powabase, tmp_path) as bot:
            await ask(slack, bot, "C0GONE", QUESTION, mention=True)
            await ask(slack, bot, "C0GONE", "Which plans include SSO?", mention=True)
    assert not powabase.runs
    assert not slack.bot_messages("C0GONE")
    skipped = [e for e in logs if e["event"] == "answer_skipped_channel_unreachable"]
    assert len(skipped) == 2 and {e["error"] for e in skipped} == {"not_in_channel"}
    assert not [e for e in logs if e["event"] in ("answer_delivered", "answer_lost")]


@pytest.mark.parametrize("upstream", ["streaming", "silent"])
async def test_a_channel_archived_mid_answer_cancels_the_run_and_writes_nothing_more(
    slack: SlackStandin, powabase: PowabaseStandin, tmp_path: Path, upstream: str
) -> None:
    """is_archived on a progress edit, whether the run keeps streaming or has gone silent: the
    Powabase run is cancelled within a second or two, no further Slack write is tried, and one
    line says the answer was abandoned (not delivered, not lost)."""
    if upstream == "streaming":
        powabase.context.delta_delay = 0.05  # an answer that would stream for several seconds
        slack.inject("chat.update", error="is_archived", times=1000)  # the first words land
    else:  # silent by the time Slack's refusal of the first edit arrives
        powabase.inject_run_fault("stall", after_deltas=3, delay=30.0)
        slack.inject("chat.update", error="is_archived", times=1000, delay=0.3)
    with capture_logs() as logs:
        async with running_bot(slack, powabase, tmp_path) as bot:
            msg = await slack.user_says(
                user="U0ARCH", text=QUESTION, channel="C0ARCH", channel_type="channel",
                mention=True,
            )  # fmt: skip
            await slack.wait_for(lambda: bot.answerer.finished >= 1, timeout=5)
            (run,) = powabase.runs
            if upstream == "streaming":  # a silent server notices the hang-up only when it writes
                await slack.wait_for(run.done.is_set, timeout=5)
                assert run.status == "cancelled"
    assert run.t_complete is None
    writes = [
        c for c in slack.calls if c.args.get("channel") == "C0ARCH" and c.method.startswith("chat.")
    ]
    refused = next(i for i, c in enumerate(writes) if c.error == "is_archived")
    assert writes[refused + 1 :] == []  # nothing tried after the first refusal
    assert writes[0].args["thread_ts"] == msg.ts
    (abandoned,) = [e for e in logs if e["event"] == "answer_abandoned_channel_unreachable"]
    assert abandoned["log_level"] == "warning"
    assert not [e for e in logs if e["event"] in ("answer_delivered", "answer_lost")]


async def test_a_refused_bot_token_on_the_placeholder_sends_nothing_to_powabase(
    slack: SlackStandin, powabase: PowabaseStandin, tmp_path: Path
) -> None:
    """invalid_auth on the thread's first status: the operator alert is open, /readyz says so,
    and no question, not even the first, is sent to Powabase while Slack refuses the token."""
    slack.inject("assistant.threads.setStatus", error="invalid_auth", times=100, delay=0.1)
    slack.inject("chat.postMessage", error="invalid_auth", times=100, delay=0.1)
    async with running_bot(slack, powabase, tmp_path) as bot:
        for i in (0, 1, 2):
            await ask(slack, bot, f"D0AUTH{i}", QUESTION)
        status, body = await fetch(bot, "/readyz")
    assert not powabase.runs
    assert status == 503 and "operator_alert: slack invalid_auth" in json.loads(body)["reasons"]


async def test_an_answer_slack_never_accepted_is_logged_as_lost_with_the_reason(
    slack: SlackStandin, powabase: PowabaseStandin, tmp_path: Path
) -> None:
    """Every edit refused: the log says the answer was lost and why, never that it was
    delivered; an answer that lands is logged as delivered with its figures."""
    powabase.context.delta_delay = 0.01  # the first words are posted before the answer ends
    slack.inject("chat.update", error="restricted_action", times=1000)
    with capture_logs() as logs:
        async with running_bot(slack, powabase, tmp_path) as bot:
            await ask(slack, bot, "D0LOST", QUESTION)
            slack.clear_faults()
            await ask(slack, bot, "D0LANDS", QUESTION)
    (lost,) = [e for e in logs if e["event"] == "answer_lost"]
    assert lost["log_level"] == "error"
    assert lost["method"] == "chat.update" and lost["slack_error"] == "restricted_action"
    assert lost["reason"] == "chat.update: restricted_action"
    assert lost["phase"] == "done" and lost["chars"] > 0 and "slack_calls" in lost
    (delivered,) = [e for e in logs if e["event"] == "answer_delivered"]
    assert delivered["phase"] == "done" and delivered["error"] is None
    assert delivered["chars"] > 0 and delivered["slack_calls"] >= 2


async def test_health_readiness_and_metrics_are_served_in_socket_mode(
    slack: SlackStandin, powabase: PowabaseStandin, tmp_path: Path
) -> None:
    """Socket Mode serves /healthz, /readyz and /metrics on PORT; readiness turns red when
    shutdown begins and counts delivered answers in the metrics."""
    async with running_bot(slack, powabase, tmp_path) as bot:
        await ask(slack, bot, "D0OPS", QUESTION)
        ready = await fetch(bot, "/readyz")
        metrics = (await fetch(bot, "/metrics"))[1]
        bot._stopping = True  # what stop() sets first
        stopping = await fetch(bot, "/readyz")
        bot._stopping = False
    assert ready[0] == 200 and json.loads(ready[1])["ready"] is True
    assert metric(metrics, "powabot_answers_total", outcome="delivered") >= 1
    assert "powabot_answers_running" in metrics
    assert stopping[0] == 503 and "stopping" in json.loads(stopping[1])["reasons"]
