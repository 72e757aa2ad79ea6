"""The publisher under pressure: 429 storms, a shared workspace budget, stalls, Slack 5xx.

Each test runs the real bot against the Slack stand-in and checks what the user ends up seeing.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.errors import SlackDeliveryError
from bot.service import Powabot
from bot.slack.budget import Budgets, TokenBucket
from bot.slack.calls import BACKOFF, MAX_ATTEMPTS
from bot.slack.publisher import Publisher
from bot.state import AnswerState, Phase
from sandbox.slack import RateLimits, SlackStandin
from tests.conftest import bot_settings, running_bot
from tests.e2e.answers import ALICE, ask, expected_text
from tests.fakes import FakeClock


def answer_message(slack: Any, channel: str, thread_ts: str) -> Any:
    return next(m for m in slack.thread(channel, thread_ts) if m.is_bot)


async def test_429_storm_on_edits_still_delivers_the_exact_final_text(
    slack: Any, powabase: Any, bot: Powabot
) -> None:
    """chat.update answering 429 + Retry-After repeatedly: the final text still arrives exactly."""
    powabase.context.delta_delay = 0.01
    slack.inject(
        "chat.update",
        status=429,
        headers={"Retry-After": "1"},
        body={"ok": False, "error": "ratelimited"},
        times=3,
    )
    msg = await ask(slack, bot, "D0STORM", "What is the refund window for Pro annual?")
    run = powabase.runs[-1]
    assert answer_message(slack, "D0STORM", msg.ts).text == expected_text(run.answer)
    assert sum(1 for c in slack.calls_to("chat.update") if c.status == 429) == 3


async def test_ratelimited_as_http_200_is_treated_like_429(
    slack: Any, powabase: Any, bot: Powabot
) -> None:
    """Slack's `{"ok": false, "error": "ratelimited"}` with HTTP 200 is retried, not dropped."""
    slack.inject("chat.update", status=200, body={"ok": False, "error": "ratelimited"}, times=2)
    msg = await ask(slack, bot, "D0RL200", "How do I create an API key?")
    assert answer_message(slack, "D0RL200", msg.ts).text == expected_text(powabase.runs[-1].answer)


async def test_transient_slack_errors_are_retried_for_the_final_edit(slack: Any) -> None:
    """A couple of Slack 5xx answers on the final chat.update do not cost the user the answer."""
    client = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)
    publisher = Publisher(client, min_interval=0.01)
    thread = await slack.user_says(user=ALICE, text="Which plans include SSO?", channel="D0FLAKY")
    stream = publisher.classic(slack.workspace.team_id, "D0FLAKY", thread.ts)
    state = AnswerState(question="Which plans include SSO?")
    await stream.start(state)
    state.text, state.phase = "SSO comes ", Phase.STREAMING
    stream.update()  # the first words are posted
    await slack.wait_for(lambda: bool(slack.bot_messages("D0FLAKY")))
    slack.inject("chat.update", status=503, times=2)  # only the final edit is left to meet them
    state.text, state.phase = "SSO comes with the Enterprise plan.", Phase.DONE
    await stream.finish()
    assert answer_message(slack, "D0FLAKY", thread.ts).text == expected_text(state.text)
    assert [c.status for c in slack.calls_to("chat.update")] == [503, 503, 200]


async def test_stalled_stream_shows_still_working(
    slack: Any, powabase: Any, tmp_path: Path
) -> None:
    """When Powabase goes quiet mid-answer, the message gently says it is still working."""
    powabase.inject_run_fault("stall", after_deltas=3, delay=1.5)
    async with running_bot(slack, powabase, tmp_path, POWABOT_STALL_NOTICE_AFTER=0.3) as bot:
        msg = await ask(slack, bot, "D0SLOW", "How do refunds work?")
    answer = answer_message(slack, "D0SLOW", msg.ts)
    assert any("still working" in text.lower() for _t, text in answer.edits)
    assert "still working" not in answer.text.lower()


@pytest.fixture
async def limited_slack() -> AsyncIterator[SlackStandin]:
    """A stand-in enforcing a tight chat.update budget: 60/min/workspace, burst 3."""
    standin = SlackStandin(
        rate_limits=RateLimits(update_per_minute_per_workspace=60, update_burst=3)
    )
    await standin.start()
    try:
        yield standin
    finally:
        await standin.stop()


async def test_two_concurrent_answers_share_one_workspace_budget_without_429(
    limited_slack: SlackStandin, powabase: Any, tmp_path: Path
) -> None:
    """Two answers streaming at once stay inside the workspace budget and both end exact."""
    powabase.context.delta_delay = 0.03
    settings = bot_settings(limited_slack, powabase, tmp_path, POWABOT_EDIT_INTERVAL=0.2)
    bot = Powabot(settings, budgets=Budgets(edits_per_minute=60, edit_burst=3))
    await bot.start()
    try:
        await limited_slack.wait_connected()
        first, second = await asyncio.gather(
            limited_slack.user_says(
                user=ALICE, text="What is the refund window for Pro annual?", channel="D0ONE"
            ),
            limited_slack.user_says(
                user="U0BOB", text="How do I rotate an API key?", channel="D0TWO"
            ),
        )
        await limited_slack.wait_for(lambda: bot.answerer.finished >= 2, timeout=30)
        by_question = {r.message: r.answer for r in powabase.runs}
        one = answer_message(limited_slack, "D0ONE", first.ts)
        two = answer_message(limited_slack, "D0TWO", second.ts)
        assert one.text == expected_text(by_question["What is the refund window for Pro annual?"])
        assert two.text == expected_text(by_question["How do I rotate an API key?"])
        assert limited_slack.ratelimited_count == 0
        updates = [c.t for c in limited_slack.calls_to("chat.update")]
        # both answers were edited while streaming, and the shared budget spaced the edits
        assert len(one.edits) >= 2 and len(two.edits) >= 2
        assert len(updates) <= 3 + 1 + (updates[-1] - updates[0]) * 1.0
    finally:
        await bot.stop()


async def test_first_words_are_not_kept_waiting_behind_a_refused_progress_edit(
    slack: Any,
) -> None:
    """With the workspace budget low, progress-only edits of a placeholder wait; the first
    answer text goes now.

    Slack refuses the thread status here, so progress shows on a placeholder message. The
    bucket's clock stands still, so it never refills: a progress edit refused for budget would
    wait for good; the first words must not wait with it.
    """
    from bot.slack.publisher import AnswerStream
    from bot.state import Activity, ActivityKind

    class WatchedBucket(TokenBucket):
        refused = 0

        def try_take(self, reserve: float = 0.0) -> bool:
            ok = super().try_take(reserve)
            WatchedBucket.refused += not ok
            return ok

    client = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)
    budgets = Budgets(edits_per_minute=1, edit_burst=3, final_reserve=0.5)  # reserve 1.5
    budgets._edits[slack.workspace.team_id] = WatchedBucket(1 / 60, 3, clock=lambda: 0.0)
    publisher = Publisher(client, budgets, min_interval=0.01)
    thread = await slack.user_says(user=ALICE, text="How do refunds work?", channel="D0FIRST")
    stream = AnswerStream(publisher, slack.workspace.team_id, "D0FIRST", thread.ts)
    state = AnswerState(question="How do refunds work?")
    slack.inject("assistant.threads.setStatus", error="missing_scope")
    assert await stream.start(state) is not None  # the placeholder

    def shown() -> str:
        return next(m for m in slack.thread("D0FIRST", thread.ts) if m.is_bot).text

    state.phase = Phase.WORKING
    state.activity = Activity(ActivityKind.DELEGATING, agent="billing-agent")
    stream.update()  # 3 tokens: sent, 2 left
    await slack.wait_for(lambda: "billing" in shown(), timeout=5)
    state.activity = Activity(ActivityKind.SEARCHING, agent="billing-agent", query="refunds")
    stream.update()  # 2 tokens < 1 + reserve: refused, the flusher waits for budget
    await slack.wait_for(lambda: WatchedBucket.refused == 1, timeout=5)
    state.activity = None
    state.phase = Phase.STREAMING
    state.text = "Refunds are issued within 14 days."
    stream.update()
    await slack.wait_for(lambda: "14 days" in shown(), timeout=3)
    assert len(slack.calls_to("chat.update")) == 2  # the refused progress edit was skipped
    state.phase = Phase.DONE
    await stream.finish()
    assert "14 days" in shown()


def fake_clock_publisher(slack: Any, clock: FakeClock, **options: Any) -> Publisher:
    client = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)
    return Publisher(client, min_interval=0.01, clock=clock, sleep=clock.sleep, **options)


async def test_a_5xx_storm_on_a_final_write_backs_off_doubling_then_gives_up(
    slack: Any,
) -> None:
    """Proxy 503s on a write that must happen: jittered doubling backoff, then given up after
    MAX_ATTEMPTS (on a fake clock: nothing really sleeps)."""
    clock = FakeClock()
    publisher = fake_clock_publisher(slack, clock)
    roomy = TokenBucket(100.0, 100.0, clock, clock.sleep)  # the budget never makes anyone wait
    slack.inject("chat.postMessage", fault="plain_5xx", times=MAX_ATTEMPTS)
    started = time.monotonic()
    with pytest.raises(SlackDeliveryError):
        await publisher.caller.call_reliably("chat.postMessage", roomy, channel="D0", text="x")
    assert len(slack.calls_to("chat.postMessage")) == MAX_ATTEMPTS
    assert len(clock.slept) == MAX_ATTEMPTS - 1
    for attempt, slept in enumerate(clock.slept):
        nominal = BACKOFF * 2**attempt
        assert 0.5 * nominal <= slept <= 1.5 * nominal
    assert time.monotonic() - started < 2.0


async def test_a_429_storm_on_a_final_write_is_waited_out_until_the_deadline(
    slack: Any,
) -> None:
    """Retry-After 30 again and again: each wait honoured in full, given up at the 100 s
    deadline (the 429s are not counted as failures; on a fake clock, no real waiting)."""
    clock = FakeClock()
    publisher = fake_clock_publisher(slack, clock, reliable_deadline=100.0)
    slack.inject("chat.update", status=429, headers={"Retry-After": "30"}, times=50)
    began = clock.now
    with pytest.raises(SlackDeliveryError) as raised:
        await publisher.caller.call_reliably(
            "chat.update", publisher.budgets.edits("T0"), channel="D0", ts="1.0", text="x"
        )
    assert raised.value.error == "ratelimited"
    assert len(slack.calls_to("chat.update")) == 4  # at 0, 30, 60 and 90 s: 120 is too late
    assert 90.0 <= clock.now - began < 100.0


async def test_edits_of_one_message_are_paced_on_the_injected_clock(slack: Any) -> None:
    """The first words are posted at once, then the edits of that message keep `min_interval`
    apart on the publisher's clock: with a fake clock, 5-second pacing costs no real waiting."""
    clock = FakeClock()
    at: dict[int, float] = {}
    slack.on_call.append(lambda call: at.setdefault(id(call), clock.now))
    publisher = Publisher(
        AsyncWebClient(token=slack.bot_token, base_url=slack.api_url),
        min_interval=5.0,
        clock=clock,
        sleep=clock.sleep,
    )
    thread = await slack.user_says(user=ALICE, text="How do refunds work?", channel="D0PACE")
    stream = publisher.classic(slack.workspace.team_id, "D0PACE", thread.ts)
    state = AnswerState(question="How do refunds work?")
    started = time.monotonic()
    await stream.start(state)
    state.phase = Phase.STREAMING
    words = "Refunds for annual plans are issued within thirty days".split()

    def writes() -> list[Any]:
        return slack.calls_to("chat.postMessage") + slack.calls_to("chat.update")

    for count in range(1, len(words) + 1):
        done = len(writes())
        state.text = " ".join(words[:count]) + " "
        stream.update()
        await slack.wait_for(lambda n=done: len(writes()) > n, timeout=5)
    state.phase = Phase.DONE
    await stream.finish()
    (posted,) = slack.calls_to("chat.postMessage")
    assert posted.args["text"].startswith("Refunds")  # the first word, posted
    stamps = [at[id(c)] for c in writes()]
    gaps = [later - earlier for earlier, later in itertools.pairwise(stamps)]
    assert len(stamps) == len(words) + 1  # every word, then the final edit
    assert all(gap >= 5.0 for gap in gaps)
    assert time.monotonic() - started < 5.0  # nine edits 5 s apart would take 40 s for real
    assert answer_message(slack, "D0PACE", thread.ts).text == expected_text(state.text)
