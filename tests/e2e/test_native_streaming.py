"""Native chat streaming through the whole bot (on by default), and its fallbacks to the classic
post + update path."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.service import Powabot
from bot.settings import Settings
from tests.conftest import bot_settings, running_bot
from tests.e2e.answers import bot_replies

ALICE = "U0ALICE"
DM = "D0ALICE"


@pytest.fixture
async def native_bot(slack: Any, powabase: Any, tmp_path: Path) -> AsyncIterator[Powabot]:
    instance = Powabot(bot_settings(slack, powabase, tmp_path, POWABOT_NATIVE_STREAMING=True))
    await instance.start()
    try:
        await slack.wait_connected()
        yield instance
    finally:
        await instance.stop()


async def ask(slack: Any, bot: Powabot, text: str) -> Any:
    before = bot.answerer.finished
    msg = await slack.user_says(user=ALICE, text=text, channel=DM)
    await slack.wait_for(lambda: bot.answerer.finished > before, timeout=20)
    return msg


def words(text: str) -> list[str]:
    return [w for w in text.replace("*", " ").replace("`", " ").split() if w.isalpha()]


def test_native_streaming_is_the_default() -> None:
    """Without POWABOT_NATIVE_STREAMING the product streams natively."""
    assert Settings.model_fields["POWABOT_NATIVE_STREAMING"].default is True


async def test_dm_answer_streams_natively_without_chat_update(
    slack: Any, powabase: Any, native_bot: Powabot
) -> None:
    """A DM answer arrives via start/append/stopStream, opened by the specialist's task card;
    no Tier-3 chat.update is spent."""
    msg = await ask(slack, native_bot, "What is the refund window for an annual Pro plan?")
    assert slack.calls_to("chat.startStream") and slack.calls_to("chat.stopStream")
    assert slack.calls_to("chat.appendStream")
    assert slack.calls_to("chat.update") == []
    answer = bot_replies(slack, DM, msg.ts)[0]
    assert answer.stream_state == "stopped"
    run = powabase.runs[-1]
    assert all(w in answer.text for w in words(run.answer)[:25])
    first_chunks = slack.calls_to("chat.startStream")[0].args["chunks"]
    assert first_chunks[0]["type"] == "task_update"


async def test_classic_path_when_native_streaming_is_off(
    slack: Any, powabase: Any, tmp_path: Path
) -> None:
    """POWABOT_NATIVE_STREAMING=false: the answer is posted and edited, never streamed."""
    async with running_bot(slack, powabase, tmp_path, POWABOT_NATIVE_STREAMING=False) as bot:
        msg = await ask(slack, bot, "How do I create an API key?")
    assert [c for c in slack.calls if "Stream" in c.method] == []
    replies = bot_replies(slack, DM, msg.ts)
    assert replies and all(m.stream_state is None for m in replies)
    assert all(w in replies[0].text for w in words(powabase.runs[-1].answer)[:25])


async def test_refused_streaming_falls_back_to_post_and_update(
    slack: Any, powabase: Any, native_bot: Powabot
) -> None:
    """When the workspace refuses chat streaming, the answer still arrives by post + update."""
    slack.streaming_enabled = False
    msg = await ask(slack, native_bot, "How do I create an API key?")
    replies = bot_replies(slack, DM, msg.ts)
    assert replies and slack.calls_to("chat.update")
    assert [c.error for c in slack.calls_to("chat.startStream")] == ["channel_type_not_supported"]
    run = powabase.runs[-1]
    assert all(w in replies[0].text for w in words(run.answer)[:25])


async def test_native_stream_failure_still_leaves_a_notice(
    slack: Any, powabase: Any, native_bot: Powabot
) -> None:
    """A dropped upstream stream ends the native message with a visible notice."""
    powabase.inject_run_fault("drop", after_deltas=3)
    msg = await ask(slack, native_bot, "What is the refund window for Pro annual?")
    answer = bot_replies(slack, DM, msg.ts)[0]
    assert ":warning:" in answer.text or "⚠" in answer.text
    assert answer.stream_state == "stopped"
