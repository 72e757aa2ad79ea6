"""Slack failure modes, one test per fault, over real sockets against the Slack stand-in.

Transient faults (a proxy's plain-text or HTML 5xx, a text/plain HTTP 200, 429 with an
HTTP-date `Retry-After`, `ratelimited` as HTTP 200, a connection reset) must cost the user
nothing: the final text arrives. They are injected on the final edit, the one write that must
happen (a fault on a progress edit would be papered over by the next one). Refusals that change
what to do (edits refused, a gone channel, a bad token) must end the way the issue asks: post
instead of edit and leave no stale copy, fail fast, alert the operator without a retry storm.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from slack_sdk.web.async_client import AsyncWebClient
from structlog.testing import capture_logs

from bot.errors import SLACK_AUTH_FAILED, SLACK_CHANNEL_GONE, SlackDeliveryError
from bot.render.answer import ANSWER_BELOW
from bot.slack.native import NativeAnswerStream
from bot.slack.publisher import AnswerStream, Publisher
from bot.state import AnswerState, Phase
from sandbox.slack import ApiCall, SlackStandin
from tests.conftest import running_bot
from tests.e2e.answers import ALICE, ask, bot_replies, expected_text
from tests.fakes import FakeClock

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


async def first_words_posted(
    slack: SlackStandin, stream: AnswerStream, state: AnswerState, words: str = "Refunds "
) -> str:
    """Start the answer (the thread's status) and let its first words be posted; their ts."""
    assert await stream.start(state) is None
    state.text, state.phase = words, Phase.STREAMING
    stream.update()
    await slack.wait_for(lambda: bool(bot_replies(slack, stream.channel, stream.thread_ts)))
    (first,) = bot_replies(slack, stream.channel, stream.thread_ts)
    return str(first.ts)


async def finish_with_faults_on_the_final_edit(
    slack: SlackStandin, publisher: Publisher, channel: str, **fault: Any
) -> tuple[AnswerStream, str]:
    """Post the first words, then inject `fault` into chat.update and finish: only the final
    edit (the one that must happen) meets the fault. Returns the stream and the message's ts."""
    stream = await open_stream(slack, publisher, channel)
    state = AnswerState(question="How do refunds work?")
    first = await first_words_posted(slack, stream, state)
    slack.inject("chat.update", **fault)
    state.text, state.phase = ANSWER, Phase.DONE
    await stream.finish()
    return stream, first


@pytest.mark.parametrize("fault", ["plain_5xx", "html_5xx"])
async def test_a_proxy_error_page_on_the_final_edit_is_retried_and_the_answer_arrives(
    slack: SlackStandin, fault: Any
) -> None:
    """Envoy's plain-text 503 or a load balancer's HTML 502 (no Slack JSON) is transient."""
    stream, placeholder = await finish_with_faults_on_the_final_edit(
        slack, publisher_for(slack), "D0PROXY", fault=fault, times=2
    )
    (answer,) = bot_replies(slack, "D0PROXY", stream.thread_ts)
    assert (answer.ts, answer.text) == (placeholder, expected_text(ANSWER))
    assert len(injected(slack, "chat.update")) == 2


async def test_a_text_plain_http_200_on_the_final_edit_is_retried(slack: SlackStandin) -> None:
    """An HTTP 200 whose body is a proxy's text/plain page (slack_sdk's own check trips over
    it) is transient, not a final failure: the answer arrives."""
    stream, placeholder = await finish_with_faults_on_the_final_edit(
        slack, publisher_for(slack), "D0PLAIN", fault="plain_200", times=2
    )
    (answer,) = bot_replies(slack, "D0PLAIN", stream.thread_ts)
    assert (answer.ts, answer.text) == (placeholder, expected_text(ANSWER))
    assert [c.status for c in slack.calls_to("chat.update")] == [200, 200, 200]
    assert len(injected(slack, "chat.update")) == 2


async def test_a_429_with_an_http_date_retry_after_is_waited_out(slack: SlackStandin) -> None:
    """`Retry-After` as an HTTP date 5 s ahead holds the final edit for those 5 s (on a fake
    clock; an unread date would wait the 1 s default), then the answer arrives."""
    clock = FakeClock()
    slack.on_call.append(lambda call: clock.at.append(clock.now))
    publisher = publisher_for(slack, clock=clock, sleep=clock.sleep)
    with capture_logs() as logs:
        stream, placeholder = await finish_with_faults_on_the_final_edit(
            slack, publisher, "D0DATE", fault="retry_after_date", retry_after=5.0
        )
    (answer,) = bot_replies(slack, "D0DATE", stream.thread_ts)
    assert (answer.ts, answer.text) == (placeholder, expected_text(ANSWER))
    limited, landed = slack.calls_to("chat.update")
    assert (limited.status, landed.status) == (429, 200)
    waited = clock.at[slack.calls.index(landed)] - clock.at[slack.calls.index(limited)]
    assert waited >= 4.5
    (noted,) = [e for e in logs if e["event"] == "slack_ratelimited"]
    assert 4.5 <= noted["retry_after"] <= 6.0


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


async def test_a_connection_reset_on_the_final_edit_is_retried(slack: SlackStandin) -> None:
    """The connection closed without an answer (twice: slack_sdk retries once itself): the
    final edit is tried again and lands."""
    stream, placeholder = await finish_with_faults_on_the_final_edit(
        slack, publisher_for(slack), "D0RESET", fault="reset", times=2
    )
    (answer,) = bot_replies(slack, "D0RESET", stream.thread_ts)
    assert (answer.ts, answer.text) == (placeholder, expected_text(ANSWER))
    assert [c.error for c in injected(slack, "chat.update")] == ["connection_reset"] * 2


async def test_a_final_edit_refused_as_too_long_is_posted_and_the_placeholder_removed(
    slack: SlackStandin,
) -> None:
    """`msg_too_long` on the final chat.update: the answer is posted below, and the message
    above it is deleted (a half answer must not hang there)."""
    stream, placeholder = await finish_with_faults_on_the_final_edit(
        slack, publisher_for(slack), "D0LONG", error="msg_too_long"
    )
    (answer,) = bot_replies(slack, "D0LONG", stream.thread_ts)
    assert answer.text == expected_text(ANSWER) and answer.ts != placeholder
    assert [c.error for c in slack.calls_to("chat.update")] == ["msg_too_long"]
    assert [c.args["ts"] for c in slack.calls_to("chat.delete")] == [placeholder]


async def test_a_too_long_message_that_cannot_be_deleted_is_shortened_to_a_pointer(
    slack: SlackStandin,
) -> None:
    """When the refused message cannot be deleted either, it is edited down to a short
    "(answer below)" line, so no half answer stays above the answer."""
    slack.inject("chat.delete", error="cant_delete_message")
    stream, placeholder = await finish_with_faults_on_the_final_edit(
        slack, publisher_for(slack), "D0KEEP", error="msg_too_long"
    )
    pointer, answer = bot_replies(slack, "D0KEEP", stream.thread_ts)
    assert (pointer.ts, pointer.text) == (placeholder, ANSWER_BELOW)
    assert answer.text == expected_text(ANSWER)


@pytest.mark.parametrize("error", ["edit_window_closed", "cant_update_message", "msg_too_long"])
async def test_edits_refused_for_good_leave_one_answer_and_no_stale_copies(
    slack: SlackStandin, powabase: Any, tmp_path: Path, error: str
) -> None:
    """Every chat.update refused mid-answer: progress stops after the first refusal, the final
    answer is posted once, the first words' message is deleted; the user sees the answer and
    the trace."""
    powabase.context.delta_delay = 0.01  # many progress renders while the answer streams
    slack.inject("chat.update", error=error, times=1000)
    async with running_bot(slack, powabase, tmp_path) as bot:
        msg = await ask(slack, bot, "D0NOEDIT", "What is the refund window for Pro annual?")
    replies = bot_replies(slack, "D0NOEDIT", msg.ts)
    (answer, trace) = replies
    assert answer.text == expected_text(powabase.runs[-1].answer)
    assert trace.blocks or trace.attachments
    assert len(slack.calls_to("chat.update")) == 1  # the first refusal ends all editing
    assert len(slack.calls_to("chat.postMessage")) == 3  # first words, answer, trace
    assert len(slack.calls_to("chat.delete")) == 1


async def test_a_channel_gone_mid_answer_stops_writes_and_fails_the_finish_at_once(
    slack: SlackStandin,
) -> None:
    """`channel_not_found` on a progress edit: `channel_gone` turns True, no further write is
    tried, and finish() raises it without a retry."""
    publisher = publisher_for(slack)
    stream = await open_stream(slack, publisher, "C0ARCHIVED")
    state = AnswerState(question="How do refunds work?")
    await first_words_posted(slack, stream, state)
    slack.inject("chat.update", error="channel_not_found", times=100)
    slack.inject("chat.postMessage", error="channel_not_found", times=100)
    state.text = "Refunds are "
    stream.update()
    await slack.wait_for(lambda: stream.channel_gone)
    for words in ("Refunds are issued", "Refunds are issued within"):
        state.text = words
        stream.update()
    state.text, state.phase = ANSWER, Phase.DONE
    with pytest.raises(SlackDeliveryError) as raised:
        await stream.finish()
    assert raised.value.channel_gone and raised.value.error == "channel_not_found"
    assert len(slack.calls_to("chat.update")) == 1
    assert len(slack.calls_to("chat.postMessage")) == 1  # the first words only


async def test_a_channel_gone_mid_native_stream_is_exposed_and_fails_the_finish(
    slack: SlackStandin,
) -> None:
    """`not_in_channel` on an append: the native stream says `channel_gone`, tries nothing
    else, and finish() raises it."""
    publisher = publisher_for(slack, native_streaming=True)
    asked = await slack.user_says(user=ALICE, text="Refunds?", channel="D0KICKED")
    stream = publisher.open(
        slack.workspace.team_id, "D0KICKED", asked.ts, user_id=ALICE, channel_type="im"
    )
    assert isinstance(stream, NativeAnswerStream)
    state = AnswerState(question="Refunds?", phase=Phase.WORKING)
    await stream.start(state)
    slack.inject("chat.appendStream", error="not_in_channel", times=100)
    state.text, state.phase = "Refunds ", Phase.STREAMING
    stream.update()  # the stream starts with the first words
    await slack.wait_for(lambda: bool(slack.calls_to("chat.startStream")))
    state.text = "Refunds are issued "
    stream.update()
    await slack.wait_for(lambda: stream.channel_gone)
    state.text, state.phase = ANSWER, Phase.DONE
    with pytest.raises(SlackDeliveryError) as raised:
        await stream.finish()
    assert raised.value.channel_gone
    assert len(slack.calls_to("chat.appendStream")) == 1
    assert slack.calls_to("chat.stopStream") == [] and slack.calls_to("chat.update") == []


@pytest.mark.parametrize("error", sorted(SLACK_CHANNEL_GONE))
async def test_a_gone_channel_fails_the_start_at_once(slack: SlackStandin, error: str) -> None:
    """not_in_channel / channel_not_found / is_archived on the thread's first status: start()
    raises, no retries, no placeholder tried."""
    slack.inject("assistant.threads.setStatus", error=error, times=5)
    stream = await open_stream(slack, publisher_for(slack), "C0GONE")
    with pytest.raises(SlackDeliveryError) as raised:
        await stream.start(AnswerState(question="How do refunds work?"))
    assert raised.value.channel_gone and not raised.value.auth_failed
    assert len(slack.calls_to("assistant.threads.setStatus")) == 1
    assert slack.calls_to("chat.postMessage") == []


async def test_a_gone_channel_fails_a_native_stream_without_a_classic_retry(
    slack: SlackStandin,
) -> None:
    """The first status of a native answer refused with channel_not_found: start() raises, and
    neither a stream nor a fallback post is tried."""
    slack.inject("assistant.threads.setStatus", error="channel_not_found")
    publisher = publisher_for(slack, native_streaming=True)
    asked = await slack.user_says(user=ALICE, text="Refunds?", channel="D0GONE")
    stream = publisher.open(
        slack.workspace.team_id, "D0GONE", asked.ts, user_id=ALICE, channel_type="im"
    )
    assert isinstance(stream, NativeAnswerStream)
    with pytest.raises(SlackDeliveryError) as raised:
        await stream.start(AnswerState(question="Refunds?"))
    assert raised.value.channel_gone
    assert slack.calls_to("chat.postMessage") == [] and slack.calls_to("chat.startStream") == []


@pytest.mark.parametrize("error", ["invalid_auth", "token_revoked", "account_inactive"])
async def test_a_bad_token_raises_one_operator_alert_and_no_retry_storm(
    slack: SlackStandin, error: str
) -> None:
    """Every write refused for auth: each tried once, one error log for all, alert until fixed."""
    assert error in SLACK_AUTH_FAILED
    publisher = publisher_for(slack)
    slack.inject("assistant.threads.setStatus", error=error, times=100)
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
                await stream.finish()  # no message yet: the final post is tried, once
    assert len(slack.calls_to("assistant.threads.setStatus")) == answers
    assert len(slack.calls_to("chat.postMessage")) == answers
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
    await first_words_posted(slack, stream, state, "Refunds ")
    slack.inject("chat.update", error="token_revoked", times=100)
    state.text = "Refunds are "
    stream.update()
    await slack.wait_for(lambda: bool(slack.calls_to("chat.update")))
    for words in ("Refunds are issued", "Refunds are issued within"):
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
    slack.inject("assistant.threads.setStatus", error="invalid_auth", times=1000)
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
    state.text, state.phase = "Refunds ", Phase.STREAMING
    stream.update()  # the stream starts with the first words
    await slack.wait_for(lambda: bool(slack.calls_to("chat.startStream")))
    state.text = "Refunds are issued "
    stream.update()
    await slack.wait_for(lambda: bool(slack.calls_to("chat.appendStream")))
    state.text, state.phase = ANSWER, Phase.DONE
    with pytest.raises(SlackDeliveryError) as raised:
        await stream.finish()
    assert raised.value.auth_failed
    assert [a.reason for a in publisher.alerts.active] == ["token_revoked"]
    assert slack.calls_to("chat.update") == [] and slack.calls_to("chat.postMessage") == []
    assert len(slack.calls_to("chat.appendStream")) == 1


@pytest.mark.parametrize("first", ["placeholder", "final"])
async def test_a_post_whose_answer_was_lost_on_the_way_back_is_not_posted_twice(
    slack: SlackStandin, first: str
) -> None:
    """The answer's first post (a placeholder, or the final answer itself) lands but its answer
    is lost (connection reset after Slack applied it): the thread is searched by the post's
    metadata (a failed search is retried) before posting again, so the user ends with exactly
    one answer message, the final one."""
    if first == "placeholder":
        slack.inject("assistant.threads.setStatus", error="missing_scope")
    slack.inject("chat.postMessage", fault="reset_after_apply")
    slack.inject("conversations.replies", fault="plain_5xx")
    publisher = publisher_for(slack)
    stream = await open_stream(slack, publisher, "D0LOSTREPLY")
    state = AnswerState(question="How do refunds work?")
    placeholder = await stream.start(state)
    assert (placeholder is None) == (first == "final")
    state.text, state.phase = ANSWER, Phase.DONE
    await stream.finish()
    (answer,) = bot_replies(slack, "D0LOSTREPLY", stream.thread_ts)
    assert answer.text == expected_text(ANSWER)
    assert placeholder is None or answer.ts == placeholder
    assert answer.extra["metadata"]["event_payload"]["answer_id"] == stream.answer_id
    assert len(slack.calls_to("chat.postMessage")) == 1
    assert [c.status for c in slack.calls_to("conversations.replies")] == [503, 200]
