"""A reply always reaches the user: long 429 storms, a lost placeholder, a store outage, a run
that never ends, a final answer shorter than what was shown, and a shutdown mid-answer."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from bot.errors import StoreError
from bot.render.answer import FULL_ANSWER_MISSING, MAX_ANSWER_MESSAGES, TRUNCATED
from bot.service import Powabot
from bot.slack.budget import Budgets, TokenBucket
from bot.slack.publisher import AnswerStream, Publisher
from bot.state import AnswerState, Phase
from bot.store import make_store
from bot.store.base import SessionStore, ThreadKey
from tests.conftest import bot_settings, running_bot
from tests.e2e.answers import ALICE, ask, bot_replies, expected_text


async def test_a_429_storm_longer_than_the_retry_count_still_delivers_the_final_text(
    slack: Any, powabase: Any, tmp_path: Path
) -> None:
    """Twelve 429s in a row on chat.update: waited out, not counted as failures."""
    slack.inject("chat.update", status=429, headers={"Retry-After": "0"}, times=12)
    budgets = Budgets(edits_per_minute=1200)  # a 429 empties the bucket; refill fast here
    async with running_bot(slack, powabase, tmp_path, budgets=budgets) as bot:
        msg = await ask(slack, bot, "D0STORM", "What is the refund window for Pro annual?")
    assert sum(1 for c in slack.calls_to("chat.update") if c.status == 429) == 12
    (answer, *_trace) = bot_replies(slack, "D0STORM", msg.ts)
    assert answer.text == expected_text(powabase.runs[-1].answer)


async def test_a_refused_placeholder_does_not_cost_the_answer(
    slack: Any, powabase: Any, bot: Powabot
) -> None:
    """Slack refuses the thread status, then the placeholder post falls back on fails outright;
    the complete answer is posted at the end."""
    slack.inject("assistant.threads.setStatus", error="missing_scope")
    slack.inject("chat.postMessage", status=200, body={"ok": False, "error": "no_text"}, times=1)
    msg = await ask(slack, bot, "D0NOPH", "Which plans include SSO?")
    replies = bot_replies(slack, "D0NOPH", msg.ts)
    assert replies, "the user saw nothing"
    assert replies[0].text == expected_text(powabase.runs[-1].answer)


class BrokenSessions:
    """A store whose session table is unreachable while event claims still work."""

    backend = "broken"

    def __init__(self, inner: SessionStore) -> None:
        self.inner = inner

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    async def claim_event(self, event_id: str) -> bool:
        return await self.inner.claim_event(event_id)

    def __getattr__(self, name: str) -> Any:  # answers and their leases: the inner store's
        return getattr(self.inner, name)

    async def get_session(self, key: ThreadKey) -> Any:
        raise StoreError("connection refused")

    async def reserve_session(self, key: ThreadKey, agent_session_id: str, title: str) -> Any:
        raise StoreError("connection refused")

    async def set_agent_session_id(self, key: ThreadKey, agent_session_id: str) -> None:
        raise StoreError("connection refused")

    async def record_run(self, key: ThreadKey, **kwargs: Any) -> None:
        raise StoreError("connection refused")

    async def health(self) -> Any:
        return await self.inner.health()


async def test_a_session_store_outage_still_answers(
    slack: Any, powabase: Any, tmp_path: Path
) -> None:
    """Without the session table the question is still answered (in a fresh agent session)."""
    store = BrokenSessions(make_store(bot_settings(slack, powabase, tmp_path)))
    async with running_bot(slack, powabase, tmp_path, store=store) as bot:
        msg = await ask(slack, bot, "D0NOSTORE", "How do I create an API key?")
    (answer, *_trace) = bot_replies(slack, "D0NOSTORE", msg.ts)
    assert answer.text == expected_text(powabase.runs[-1].answer)


async def test_a_run_past_the_overall_deadline_ends_with_a_timeout_notice(
    slack: Any, powabase: Any, tmp_path: Path
) -> None:
    """Keepalives forever are not an answer: POWABOT_RUN_TIMEOUT ends the wait with a notice."""
    powabase.inject_run_fault("delay", delay=5.0)
    async with running_bot(slack, powabase, tmp_path, POWABOT_RUN_TIMEOUT=0.5) as bot:
        msg = await ask(slack, bot, "D0LATE", "How do refunds work?")
    (answer,) = bot_replies(slack, "D0LATE", msg.ts)
    assert "took too long" in answer.text


async def test_a_final_answer_shorter_than_the_shown_text_leaves_no_stale_message(
    slack: Any,
) -> None:
    """Streaming text spilled into a second message; the authoritative final fits in one."""
    client = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)
    publisher = Publisher(client, Budgets(edit_burst=20), min_interval=0.01)
    thread = await slack.user_says(user=ALICE, text="long one please", channel="D0SHRINK")
    stream = AnswerStream(publisher, slack.workspace.team_id, "D0SHRINK", thread.ts)
    state = AnswerState(question="long one please")
    await stream.start(state)
    paragraph = "All work and no play makes a dull answer. " * 40
    state.text = "\n\n".join([paragraph] * 6)  # well past one message
    stream.update()
    await slack.wait_for(lambda: len(bot_replies(slack, "D0SHRINK", thread.ts)) >= 2)
    state.text = "Short and final."
    state.phase = Phase.DONE
    await stream.finish()
    replies = bot_replies(slack, "D0SHRINK", thread.ts)
    assert [m.text for m in replies] == [expected_text("Short and final.")]
    assert len(slack.calls_to("chat.delete")) >= 1


async def test_stopping_the_bot_lets_an_answer_in_flight_finish(
    slack: Any, powabase: Any, tmp_path: Path
) -> None:
    """stop() takes no new questions but lets the one being answered reach its final text."""
    powabase.context.delta_delay = 0.02
    bot = Powabot(bot_settings(slack, powabase, tmp_path))
    await bot.start()
    await slack.wait_connected()
    msg = await slack.user_says(user=ALICE, text="What does the Team plan cost?", channel="D0STOP")
    await slack.wait_for(lambda: bool(bot.answerer.in_flight) and bool(powabase.runs))
    await slack.wait_for(lambda: bool(bot_replies(slack, "D0STOP", msg.ts)))
    await bot.stop()
    (answer, *_trace) = bot_replies(slack, "D0STOP", msg.ts)
    assert answer.text == expected_text(powabase.runs[-1].answer)
    assert bot.answerer.finished == 1


async def test_a_shutdown_cancelling_an_answer_mid_final_edit_still_delivers_it(
    slack: Any, powabase: Any, tmp_path: Path
) -> None:
    """Drain's grace runs out while the final edit waits out a 429: the edit still lands."""
    async with running_bot(slack, powabase, tmp_path) as bot:
        msg = await slack.user_says(user=ALICE, text="Which plans include SSO?", channel="D0LATE2")
        await slack.wait_for(lambda: bool(powabase.runs) and powabase.runs[-1].t_complete)
        done_at = powabase.runs[-1].t_complete
        slack.inject("chat.update", status=429, headers={"Retry-After": "1"}, times=2)
        await slack.wait_for(
            lambda: any(c.status == 429 and c.t > done_at for c in slack.calls_to("chat.update"))
        )
        await bot.drain(grace=0.0, final_grace=10.0)  # cancels the answer task at once
        assert bot.answerer.finished == 1
    (answer, *trace) = bot_replies(slack, "D0LATE2", msg.ts)
    assert answer.text == expected_text(powabase.runs[-1].answer)
    assert trace, "the delegation trace was dropped"


class GatedLookups:
    """A store whose thread lookups wait for a gate: a follow-up is accepted but not yet
    answering when shutdown begins."""

    def __init__(self, inner: SessionStore) -> None:
        self.inner = inner
        self.backend = inner.backend
        self.gated = False
        self.waiting = asyncio.Event()
        self.gate = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def get_session(self, key: ThreadKey) -> Any:
        if self.gated:
            self.waiting.set()
            await self.gate.wait()
        return await self.inner.get_session(key)


async def test_a_follow_up_accepted_just_before_shutdown_is_still_answered(
    slack: Any, powabase: Any, tmp_path: Path
) -> None:
    """stop() waits for an event whose listener had not reached the answering step yet."""
    store = GatedLookups(make_store(bot_settings(slack, powabase, tmp_path)))
    async with running_bot(slack, powabase, tmp_path, store=store) as bot:
        first = await ask(slack, bot, "C0SUPPORT", "How do I rotate an API key?", mention=True)
        store.gated = True
        await slack.user_says(
            user=ALICE, text="And the old one?", channel="C0SUPPORT", channel_type="channel",
            thread_ts=first.ts,
        )  # fmt: skip
        await store.waiting.wait()
        stopping = asyncio.create_task(bot.stop())
        await slack.wait_for(lambda: slack.hub.num_connections == 0)  # intake closed
        store.gate.set()
        await stopping
    replies = bot_replies(slack, "C0SUPPORT", first.ts)
    assert len(powabase.runs) == 2
    assert any(r.text == expected_text(powabase.runs[-1].answer) for r in replies)


async def test_the_final_write_deadline_counts_from_its_turn_not_from_the_queue(
    slack: Any,
) -> None:
    """Three final posts queued behind a slow bucket each meet a 429; none is given up."""
    client = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)
    publisher = Publisher(client, reliable_deadline=0.3)
    bucket = TokenBucket(rate=4.0, capacity=1)  # a turn every 0.25 s
    slack.inject("chat.postMessage", status=429, headers={"Retry-After": "0"}, times=3)
    await asyncio.gather(
        *(
            publisher.caller.call_reliably(
                "chat.postMessage", bucket, channel="D0Q", text=f"final {i}"
            )
            for i in range(3)
        )
    )
    assert sorted(m.text for m in slack.bot_messages("D0Q")) == ["final 0", "final 1", "final 2"]


async def finish_a_truncated_answer(slack: Any, channel: str) -> tuple[AnswerStream, str]:
    """Deliver an answer too long for its messages; then attach the full answer as a file."""
    client = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)
    publisher = Publisher(client, Budgets(edit_burst=20), min_interval=0.01)
    thread = await slack.user_says(user=ALICE, text="Everything, please", channel=channel)
    stream = publisher.classic(slack.workspace.team_id, channel, thread.ts)
    state = AnswerState(question="Everything, please")
    await stream.start(state)
    paragraph = "Every detail of the refund policy, spelled out once more. " * 10
    state.text = "\n\n".join(f"{n}. {paragraph}" for n in range(80))  # about 50,000 characters
    state.phase = Phase.DONE
    await stream.finish()
    assert stream.truncated
    await stream.attach_full_answer(state.text, "Full answer")
    return stream, state.text


async def test_a_truncated_answer_gets_its_full_text_as_a_file_despite_a_flaky_upload(
    slack: Any,
) -> None:
    """The upload URL answers a proxy's 503 once: the bytes are sent again and the file with
    the whole answer is shared in the thread, right under the note."""
    slack.inject("files.upload", fault="plain_5xx")
    stream, full = await finish_a_truncated_answer(slack, "D0FILE")
    *answer, shared = bot_replies(slack, "D0FILE", stream.thread_ts)
    assert len(answer) == MAX_ANSWER_MESSAGES and answer[-1].text.endswith(TRUNCATED)
    (entry,) = shared.files
    assert slack.files[entry["id"]].text == full and entry["title"] == "Full answer"
    assert [c.status for c in slack.calls_to("files.upload")] == [503, 200]


async def test_a_full_answer_that_cannot_be_attached_is_owned_up_to(slack: Any) -> None:
    """The upload is refused for good: no file, and a line under the note says the full answer
    could not be attached (the note must not promise a file that is not there)."""
    slack.inject("files.upload", status=403, times=10)
    stream, _full = await finish_a_truncated_answer(slack, "D0NOFILE")
    *answer, owned_up = bot_replies(slack, "D0NOFILE", stream.thread_ts)
    assert answer[-1].text.endswith(TRUNCATED)
    assert owned_up.text == FULL_ANSWER_MISSING and not owned_up.files
    assert slack.calls_to("files.completeUploadExternal") == []
