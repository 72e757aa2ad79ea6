"""Slack failure modes, one test per fault, over real sockets against the Slack stand-in.

Transient faults (a proxy's plain-text or HTML 5xx, 429 with an HTTP-date `Retry-After`,
`ratelimited` as HTTP 200, a connection reset) must cost the user nothing: the final text
arrives. Refusals that change what to do (`msg_too_long`, a gone channel, a bad token) must end
the way the issue asks: post instead of edit, fail fast, alert the operator without a retry storm.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from slack_sdk.web.async_client import AsyncWebClient
from structlog.testing import capture_logs

from bot.errors import SLACK_AUTH_FAILED, SLACK_CHANNEL_GONE, SlackDeliveryError
from bot.slack.native import NativeAnswerStream
from bot.slack.publisher import AnswerStream, Publisher
from bot.state import AnswerState, Phase
from sandbox.slack import ApiCall, SlackStandin
from tests.conftest import running_bot
from tests.e2e.answers import ALICE, ask, bot_replies, expected_text

ANSWER = "Refunds for annual Pro plans are issued within 30 days of purchase."


def injected(slack: SlackStandin, method: str) -> list[ApiCall]:
    return [c for c in slack.calls_to(method) if c.injected]


def publisher_for(slack: SlackStandin, **options: Any) -> Publisher:
    client = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)
    return Publisher(client, min_interval=0.01, **options)


async def open_stream(slack: SlackStandin, publisher: Publisher, channel: str) -> AnswerStream:
    asked = await slack.user_says(user=ALICE, text="How do refunds work?", channel=channel)
    stream = publisher.open(slack.workspace.team_id, channel, asked.ts, user_id=ALICE)
    assert isinstance(stream, AnswerStream)
    return stream


@pytest.mark.parametrize("fault", ["plain_5xx", "html_5xx"])
async def test_a_proxy_error_page_on_chat_update_is_retried_and_the_answer_arrives(
    slack: SlackStandin, powabase: Any, tmp_path: Path, fault: Any
) -> None:
    """Envoy's plain-text 503 or a load balancer's HTML 502 (no Slack JSON) is transient."""
    slack.inject("chat.update", fault=fault, times=2)
    async with running_bot(slack, powabase, tmp_path) as bot:
        msg = await ask(slack, bot, "D0PROXY", "What is the refund window for Pro annual?")
    (answer, *_trace) = bot_replies(slack, "D0PROXY", msg.ts)
    assert answer.text == expected_text(powabase.runs[-1].answer)
    assert len(injected(slack, "chat.update")) == 2


async def test_a_429_with_an_http_date_retry_after_is_waited_out(
    slack: SlackStandin, powabase: Any, tmp_path: Path
) -> None:
    """`Retry-After` as an HTTP date is honoured: edits pause until then, the answer arrives."""
    slack.inject("chat.update", fault="retry_after_date", retry_after=1.0)
    async with running_bot(slack, powabase, tmp_path) as bot:
        msg = await ask(slack, bot, "D0DATE", "How do I create an API key?")
    (answer, *_trace) = bot_replies(slack, "D0DATE", msg.ts)
    assert answer.text == expected_text(powabase.runs[-1].answer)
    (limited,) = injected(slack, "chat.update")
    later = [c.t for c in slack.calls_to("chat.update") if c.t > limited.t]
    assert later and min(later) - limited.t >= 0.8  # waited (about) the second asked for


async def test_ratelimited_as_http_200_pauses_edits_like_a_429(
    slack: SlackStandin, powabase: Any, tmp_path: Path
) -> None:
    """HTTP 200 `ratelimited` is a rate limit: the edit budget pauses (1 s), nothing is lost."""
    slack.inject("chat.update", error="ratelimited")
    async with running_bot(slack, powabase, tmp_path) as bot:
        msg = await ask(slack, bot, "D0RL200", "Which plans include SSO?")
    (answer, *_trace) = bot_replies(slack, "D0RL200", msg.ts)
    assert answer.text == expected_text(powabase.runs[-1].answer)
    (limited,) = injected(slack, "chat.update")
    later = [c.t for c in slack.calls_to("chat.update") if c.t > limited.t]
    # A transient failure would be retried within 0.75 s; a rate limit waits its second.
    assert later and min(later) - limited.t >= 0.8


async def test_a_connection_reset_mid_call_is_retried(
    slack: SlackStandin, powabase: Any, tmp_path: Path
) -> None:
    """The connection closed without an answer (twice: slack_sdk retries once itself)."""
    slack.inject("chat.update", fault="reset", times=2)
    async with running_bot(slack, powabase, tmp_path) as bot:
        msg = await ask(slack, bot, "D0RESET", "How do I rotate an API key?")
    (answer, *_trace) = bot_replies(slack, "D0RESET", msg.ts)
    assert answer.text == expected_text(powabase.runs[-1].answer)
    assert [c.error for c in injected(slack, "chat.update")] == ["connection_reset"] * 2


async def test_a_final_edit_refused_as_too_long_is_posted_as_a_new_message(
    slack: SlackStandin,
) -> None:
    """`msg_too_long` on the final chat.update: the answer is posted below, not lost."""
    publisher = publisher_for(slack)
    stream = await open_stream(slack, publisher, "D0LONG")
    state = AnswerState(question="How do refunds work?")
    placeholder = await stream.start(state)
    slack.inject("chat.update", error="msg_too_long")
    state.text, state.phase = ANSWER, Phase.DONE
    await stream.finish()
    replies = bot_replies(slack, "D0LONG", stream.thread_ts)
    assert replies[-1].text == expected_text(ANSWER)
    assert replies[-1].ts != placeholder
    assert [c.error for c in slack.calls_to("chat.update")] == ["msg_too_long"]


@pytest.mark.parametrize("error", sorted(SLACK_CHANNEL_GONE))
async def test_a_gone_channel_fails_the_placeholder_at_once(
    slack: SlackStandin, error: str
) -> None:
    """not_in_channel / channel_not_found / is_archived: start() raises, no retries."""
    slack.inject("chat.postMessage", error=error, times=5)
    stream = await open_stream(slack, publisher_for(slack), "C0GONE")
    with pytest.raises(SlackDeliveryError) as raised:
        await stream.start(AnswerState(question="How do refunds work?"))
    assert raised.value.channel_gone and not raised.value.auth_failed
    assert len(slack.calls_to("chat.postMessage")) == 1


async def test_a_gone_channel_fails_a_native_stream_without_a_classic_retry(
    slack: SlackStandin,
) -> None:
    """Native streaming refused with channel_not_found: no fallback post is tried either."""
    slack.inject("chat.startStream", error="channel_not_found")
    publisher = publisher_for(slack, native_streaming=True)
    asked = await slack.user_says(user=ALICE, text="Refunds?", channel="D0GONE")
    stream = publisher.open(
        slack.workspace.team_id, "D0GONE", asked.ts, user_id=ALICE, channel_type="im"
    )
    assert isinstance(stream, NativeAnswerStream)
    with pytest.raises(SlackDeliveryError) as raised:
        await stream.start(AnswerState(question="Refunds?"))
    assert raised.value.channel_gone
    assert slack.calls_to("chat.postMessage") == []


@pytest.mark.parametrize("error", ["invalid_auth", "token_revoked", "account_inactive"])
async def test_a_bad_token_raises_one_operator_alert_and_no_retry_storm(
    slack: SlackStandin, error: str
) -> None:
    """Every write refused for auth: each tried once, one error log for all, alert until fixed."""
    assert error in SLACK_AUTH_FAILED
    publisher = publisher_for(slack)
    slack.inject("chat.postMessage", error=error, times=100)
    answers = 5
    with capture_logs() as logs:
        for i in range(answers):
            stream = await open_stream(slack, publisher, f"D0AUTH{i}")
            state = AnswerState(question="How do refunds work?")
            with pytest.raises(SlackDeliveryError) as started:
                await stream.start(state)
            assert started.value.auth_failed
            state.text, state.phase = ANSWER, Phase.DONE
            with pytest.raises(SlackDeliveryError):
                await stream.finish()  # no placeholder: the final post is tried, once
    assert len(slack.calls_to("chat.postMessage")) == 2 * answers
    assert [a.reason for a in publisher.alerts.active] == [error]
    alerts = [e for e in logs if e["event"] == "operator_alert"]
    assert len(alerts) == 1 and alerts[0]["log_level"] == "error"
    slack.clear_faults()  # the operator fixed the token: the next write clears the alert
    await (await open_stream(slack, publisher, "D0FIXED")).start(AnswerState(question="Hi"))
    assert publisher.alerts.active == []


async def test_a_token_revoked_mid_answer_holds_progress_edits_until_the_final_one(
    slack: SlackStandin,
) -> None:
    """After the alert, progress edits are not tried at all; the final edit is tried once."""
    publisher = publisher_for(slack)
    stream = await open_stream(slack, publisher, "D0REVOKED")
    state = AnswerState(question="How do refunds work?")
    await stream.start(state)
    slack.inject("chat.update", error="token_revoked", times=100)
    state.text, state.phase = "Refunds", Phase.STREAMING
    stream.update()
    await slack.wait_for(lambda: bool(slack.calls_to("chat.update")))
    for words in ("Refunds are", "Refunds are issued", "Refunds are issued within"):
        state.text = words
        stream.update()
    state.text, state.phase = ANSWER, Phase.DONE
    with pytest.raises(SlackDeliveryError) as raised:
        await stream.finish()
    assert raised.value.auth_failed
    assert len(slack.calls_to("chat.update")) == 2  # the first progress edit and the final one


async def test_a_bad_token_through_the_whole_bot_alerts_once_without_a_storm(
    slack: SlackStandin, powabase: Any, tmp_path: Path
) -> None:
    """invalid_auth on every post: answers end, the operator is told once, calls stay few."""
    slack.inject("chat.postMessage", error="invalid_auth", times=1000)
    slack.inject("chat.startStream", error="invalid_auth", times=1000)
    answers = 3
    with capture_logs() as logs:
        async with running_bot(slack, powabase, tmp_path) as bot:
            for i in range(answers):
                await slack.user_says(user=ALICE, text="Which plans include SSO?", channel=f"D{i}")
            await slack.wait_for(lambda: bot.answerer.finished >= answers, timeout=30)
            assert bot.publisher.alerts.active
    assert len(slack.calls_to("chat.postMessage")) <= 3 * answers
    assert len(slack.calls_to("chat.update")) == 0
    assert len([e for e in logs if e["event"] == "operator_alert"]) == 1


async def test_a_token_revoked_mid_native_stream_tries_no_classic_fallback(
    slack: SlackStandin,
) -> None:
    """A native stream refused for auth: finish() reports it; no edit or post is attempted."""
    publisher = publisher_for(slack, native_streaming=True)
    asked = await slack.user_says(user=ALICE, text="Refunds?", channel="D0NATIVE")
    stream = publisher.open(
        slack.workspace.team_id, "D0NATIVE", asked.ts, user_id=ALICE, channel_type="im"
    )
    assert isinstance(stream, NativeAnswerStream)
    state = AnswerState(question="Refunds?", phase=Phase.WORKING)
    await stream.start(state)
    slack.inject("chat.appendStream", error="token_revoked", times=100)
    slack.inject("chat.stopStream", error="token_revoked", times=100)
    state.text, state.phase = "Refunds are issued ", Phase.STREAMING
    stream.update()
    await slack.wait_for(lambda: bool(slack.calls_to("chat.appendStream")))
    state.text, state.phase = ANSWER, Phase.DONE
    with pytest.raises(SlackDeliveryError) as raised:
        await stream.finish()
    assert raised.value.auth_failed
    assert [a.reason for a in publisher.alerts.active] == ["token_revoked"]
    assert slack.calls_to("chat.update") == [] and slack.calls_to("chat.postMessage") == []
    assert len(slack.calls_to("chat.appendStream")) == 1
