"""Stop: the user ends an answer mid-way; what arrived stays, "Stopped." follows, the run ends.

Driven through the real bot (Bolt, slack_sdk, httpx) against both stand-ins; `Answerer.stop` is
what the Stop button (`agent_session_stopped`) and a "stop" message in the thread call.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from tests.conftest import running_bot
from tests.e2e.answers import ALICE, bot_replies

BOB = "U0BOB"
DM = "D0ALICE"


def _stopped_status(tmp_path: Path) -> list[str]:
    with sqlite3.connect(tmp_path / "sessions.db") as db:
        return [row[0] for row in db.execute("select last_run_status from chat_sessions")]


async def _mid_answer(slack: Any, powabase: Any, channel: str, **kw: Any) -> Any:
    """Ask, then wait until some of the answer text shows in Slack."""
    msg = await slack.user_says(
        user=ALICE, text="How do refunds work for annual plans?", channel=channel, **kw
    )
    await slack.wait_for(lambda: powabase.runs and powabase.runs[-1].t_first_content_delta)
    await slack.wait_for(
        lambda: any(m.text.strip() for m in bot_replies(slack, channel, msg.ts)), timeout=10
    )
    return msg


async def test_stop_mid_answer_keeps_the_text_and_says_stopped(
    slack: Any, powabase: Any, tmp_path: Path
) -> None:
    """A stopped DM answer ends with what arrived plus "Stopped.", and its run is cancelled."""
    powabase.context.delta_delay = 0.05  # several seconds of answer
    async with running_bot(slack, powabase, tmp_path) as bot:
        msg = await _mid_answer(slack, powabase, DM)
        before = bot.answerer.finished
        assert await bot.answerer.stop(slack.workspace.team_id, DM, msg.ts, ALICE)
        await slack.wait_for(lambda: bot.answerer.finished > before, timeout=10)
        await slack.wait_for(lambda: powabase.runs[-1].status == "cancelled", timeout=5)
        (reply,) = bot_replies(slack, DM, msg.ts)
        assert reply.text.rstrip().endswith("_Stopped._")
        assert reply.text.split("_Stopped._")[0].strip()  # the text that arrived stays
        assert ":warning:" not in reply.text
    assert "stopped" in _stopped_status(tmp_path)


async def test_stop_by_someone_else_or_after_the_answer_changes_nothing(
    slack: Any, powabase: Any, tmp_path: Path
) -> None:
    """Another user's stop leaves the answer running; a stop after completion does nothing."""
    powabase.context.delta_delay = 0.02
    async with running_bot(slack, powabase, tmp_path) as bot:
        team = slack.workspace.team_id
        msg = await _mid_answer(slack, powabase, DM)
        assert not await bot.answerer.stop(team, DM, msg.ts, BOB)
        await slack.wait_for(lambda: powabase.runs[-1].status == "completed", timeout=20)
        await slack.wait_for(lambda: bot.answerer.finished >= 1, timeout=10)
        reply = bot_replies(slack, DM, msg.ts)[0]  # then the trace
        shown = reply.text
        assert "Stopped" not in shown
        assert not await bot.answerer.stop(team, DM, msg.ts, ALICE)
        assert not await bot.answerer.stop(team, DM, None, ALICE)
        assert bot_replies(slack, DM, msg.ts)[0].text == shown


async def test_stop_in_a_channel_thread_and_by_dm_channel(
    slack: Any, powabase: Any, tmp_path: Path
) -> None:
    """A mention's answer stops by its thread; a DM answer stops by the DM channel alone."""
    powabase.context.delta_delay = 0.05
    async with running_bot(slack, powabase, tmp_path) as bot:
        team = slack.workspace.team_id
        msg = await _mid_answer(slack, powabase, "C0SUPPORT", channel_type="channel", mention=True)
        assert await bot.answerer.stop(team, "C0SUPPORT", msg.ts, ALICE)
        await slack.wait_for(lambda: bot.answerer.finished >= 1, timeout=10)
        assert bot_replies(slack, "C0SUPPORT", msg.ts)[0].text.rstrip().endswith("_Stopped._")
        dm = await _mid_answer(slack, powabase, DM)
        assert await bot.answerer.stop(team, DM, None, ALICE)
        await slack.wait_for(lambda: bot.answerer.finished >= 2, timeout=10)
        assert bot_replies(slack, DM, dm.ts)[0].text.rstrip().endswith("_Stopped._")
