"""Stop, from the user's side, end to end: a message that is only "stop", or Slack's Stop button
(`agent_session_stopped`), ends the asking user's running answer with what arrived plus
"Stopped." instead of being answered; with nothing running the user is told so privately.
Real Bolt and slack_sdk against the Slack stand-in, the real answerer against Powabase's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from bot.slack.assistant import NOTHING_TO_STOP
from bot.slack.listeners import is_stop
from tests.conftest import running_bot
from tests.e2e.answers import ALICE, bot_replies

BOB = "U0BOB"
DM = "D0ALICE"
SUPPORT = "C0SUPPORT"
QUESTION = "What's the refund window for the Pro plan if I paid annually?"
SLOW = 0.05  # seconds between deltas: an answer takes seconds, long enough to be stopped


def shown(slack: Any, channel: str, thread_ts: str) -> str:
    """All the bot shows in a thread, as one text."""
    return "\n".join(m.text for m in bot_replies(slack, channel, thread_ts))


async def running_answer(slack: Any, powabase: Any, channel: str, thread_ts: str) -> Any:
    """Wait until the answer in that thread shows text and is still streaming; its run."""
    await slack.wait_for(lambda: bool(shown(slack, channel, thread_ts).strip()), timeout=20)
    run = powabase.runs[-1]
    assert run.status == "running", "the answer ended before the test could stop it"
    return run


def ephemerals_to(slack: Any, user: str) -> list[Any]:
    return [m for m in slack.ephemerals if m.extra.get("recipient") == user]


@pytest.mark.parametrize("native", [False, True], ids=["classic", "native"])
async def test_stop_in_the_dm_ends_the_running_answer(
    slack: Any, powabase: Any, tmp_path: Path, native: bool
) -> None:
    """ "stop" sent in the DM (outside the answer's thread) ends the running answer with what
    arrived plus "Stopped.", closes its Powabase run, and is not itself asked."""
    powabase.context.delta_delay = SLOW
    async with running_bot(slack, powabase, tmp_path, POWABOT_NATIVE_STREAMING=native) as bot:
        asked = await slack.user_says(user=ALICE, text=QUESTION, channel=DM)
        run = await running_answer(slack, powabase, DM, asked.ts)
        await slack.user_says(user=ALICE, text="stop", channel=DM)
        await slack.wait_for(lambda: bot.answerer.finished >= 1, timeout=20)
        await run.done.wait()
    assert len(powabase.runs) == 1  # "stop" was not sent to Powabase as a question
    assert run.status == "cancelled" and run.t_complete is None  # it ended early
    assert "Stopped." in shown(slack, DM, asked.ts)
    assert not slack.ephemerals


async def test_stop_in_the_answers_thread_with_mention_and_punctuation(
    slack: Any, powabase: Any, tmp_path: Path
) -> None:
    """ "<@bot> STOP!" in the answer's DM thread stops that answer."""
    powabase.context.delta_delay = SLOW
    async with running_bot(slack, powabase, tmp_path) as bot:
        asked = await slack.user_says(user=ALICE, text=QUESTION, channel=DM)
        await running_answer(slack, powabase, DM, asked.ts)
        mention = f"<@{slack.workspace.bot_user_id}> STOP!"
        await slack.user_says(user=ALICE, text=mention, channel=DM, thread_ts=asked.ts)
        await slack.wait_for(lambda: bot.answerer.finished >= 1, timeout=20)
    assert len(powabase.runs) == 1
    assert "Stopped." in shown(slack, DM, asked.ts)


async def test_stop_with_nothing_running_is_told_only_to_that_user(
    slack: Any, powabase: Any, tmp_path: Path
) -> None:
    """ "Stop." with no answer running gets "There's nothing running to stop." as a message only
    the user sees; nothing is asked or posted."""
    async with running_bot(slack, powabase, tmp_path) as bot:
        said = await slack.user_says(user=ALICE, text="Stop.", channel=DM)
        await slack.wait_for(lambda: bool(slack.ephemerals), timeout=10)
        assert bot.answerer.finished == 0
    (told,) = slack.ephemerals
    assert told.text == NOTHING_TO_STOP
    assert told.extra["recipient"] == ALICE and told.channel == DM
    assert told.thread_ts is None  # the "stop" was top-level: so is the reply
    assert not powabase.runs and not slack.bot_messages(DM)
    assert said.ts not in {m.thread_ts for m in slack.bot_messages()}


async def test_stop_in_a_channel_thread_is_the_asking_users_alone(
    slack: Any, powabase: Any, tmp_path: Path
) -> None:
    """In a channel thread, another user's "stop" neither stops the answer nor gets a reply;
    the asking user's plain "stop" (no mention) stops it."""
    powabase.context.delta_delay = SLOW
    with capture_logs() as logs:
        async with running_bot(slack, powabase, tmp_path) as bot:
            asked = await slack.user_says(
                user=ALICE, text=QUESTION, channel=SUPPORT, channel_type="channel", mention=True
            )
            await running_answer(slack, powabase, SUPPORT, asked.ts)
            await slack.user_says(
                user=BOB, text="stop", channel=SUPPORT, channel_type="channel", thread_ts=asked.ts
            )
            await slack.wait_for(
                lambda: any(e["event"] == "stop_requested" for e in logs), timeout=10
            )
            assert powabase.runs[-1].status == "running"  # Bob's stop left it alone
            await slack.user_says(
                user=ALICE,
                text="stop",
                channel=SUPPORT,
                channel_type="channel",
                thread_ts=asked.ts,
            )
            await slack.wait_for(lambda: bot.answerer.finished >= 1, timeout=20)
    assert "Stopped." in shown(slack, SUPPORT, asked.ts)
    assert len(powabase.runs) == 1
    assert not ephemerals_to(slack, BOB)
    stops = [e for e in logs if e["event"] == "stop_requested"]
    assert [e["stopped"] for e in stops] == [False, True]


async def test_slacks_stop_button_ends_the_answer_and_a_late_one_does_nothing(
    slack: Any, powabase: Any, tmp_path: Path
) -> None:
    """`agent_session_stopped` for the thread ends the running answer with "Stopped."; the same
    click after the answer ended changes nothing the user sees and says nothing."""
    powabase.context.delta_delay = SLOW
    with capture_logs() as logs:
        async with running_bot(slack, powabase, tmp_path) as bot:
            asked = await slack.user_says(user=ALICE, text=QUESTION, channel=DM)
            await running_answer(slack, powabase, DM, asked.ts)
            await slack.agent_session_stopped(channel=DM, thread_ts=asked.ts, user=ALICE)
            await slack.wait_for(lambda: bot.answerer.finished >= 1, timeout=20)
            final = shown(slack, DM, asked.ts)
            await slack.agent_session_stopped(channel=DM, thread_ts=asked.ts, user=ALICE)
            await slack.wait_for(
                lambda: sum(e["event"] == "stop_requested" for e in logs) >= 2, timeout=10
            )
    assert "Stopped." in final
    assert shown(slack, DM, asked.ts) == final
    assert not slack.ephemerals
    assert [e["stopped"] for e in logs if e["event"] == "stop_requested"] == [True, False]


async def test_stop_inside_a_sentence_is_a_question(
    slack: Any, powabase: Any, tmp_path: Path
) -> None:
    """A question that merely contains "stop" is answered like any other."""
    async with running_bot(slack, powabase, tmp_path) as bot:
        await slack.user_says(
            user=ALICE, text="How do I stop my subscription from renewing?", channel=DM
        )
        await slack.wait_for(lambda: bot.answerer.finished >= 1, timeout=20)
    assert len(powabase.runs) == 1 and not slack.ephemerals


@pytest.mark.parametrize(
    ("text", "stop"),
    [
        ("stop", True),
        ("Stop.", True),
        ("STOP!", True),
        ("  stop!! ", True),
        ("<@U0BOT> stop", True),
        ("<@U0BOT|powabot>  Stop.", True),
        ("stop?", False),
        ("please stop", False),
        ("stop it", False),
        ("<@U0OTHER> stop", False),
        ("stopped", False),
        ("", False),
    ],
)
def test_only_the_word_stop_is_a_stop(text: str, stop: bool) -> None:
    """Only "stop" (any case, trailing "." or "!", after the bot's own mention) asks to stop."""
    assert is_stop(text, "U0BOT") is stop
