"""Native streaming by Slack's rules: chunks mode only, recipients in channel threads, task
cards per delegation (a plan with several specialists), at most 12,000 characters per call, and
what happens when Slack ends, refuses or limits a stream (the classic path carries on, nothing
lost, nothing shown twice). Also Stop on a streamed answer.

The stand-in enforces the mode lock (`streaming_mode_mismatch`), chunk validation
(`invalid_chunks`), `task_display_mode` at start only, the recipient rule, the tiers and the
expiry; the tests run the real bot (or the real `Publisher` and slack_sdk) against it over
sockets.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import pytest

from bot.powabase.sources import Source
from bot.render.answer import TRUNCATED, answer_markdown
from bot.render.sources import sources_markdown
from bot.slack.native import START_BURST, STREAM_MAX_AGE
from bot.state import ErrorKind
from sandbox.slack import SlackStandin, StoredMessage
from tests.conftest import running_bot
from tests.e2e.answers import ALICE, bot_replies, expected_text
from tests.e2e.native_answers import (
    ANSWER,
    appends,
    chunks_of,
    expected,
    ok,
    open_answer,
    publisher_for,
    stream_calls,
)

BOB = "U0BOB"
DM = "D0ALICE"
CHANNEL = "C0SUPPORT"
REFUND = "What is the refund window for an annual Pro plan?"
MAX_CALL_TEXT = 12_000
SOURCES = "\n\n**Sources:**"


async def ask(slack: Any, bot: Any, text: str, *, channel: str = DM, user: str = ALICE) -> Any:
    """`user` asks in a DM (or @-mentions the bot in a C channel); returns once it is answered."""
    before = bot.answerer.finished
    if channel.startswith("C"):
        msg = await slack.user_says(
            user=user, text=text, channel=channel, channel_type="channel", mention=True
        )
    else:
        msg = await slack.user_says(user=user, text=text, channel=channel)
    await slack.wait_for(lambda: bot.answerer.finished > before, timeout=30)
    return msg


def streamed(slack: SlackStandin, channel: str, thread_ts: str) -> StoredMessage:
    """The bot's one streamed message in a thread."""
    (msg,) = [m for m in slack.thread(channel, thread_ts) if m.is_bot and m.stream_state]
    return msg


def answer_part(text: str) -> str:
    """A streamed message's answer, without the sources line the stop may add."""
    assert text.count(SOURCES) <= 1
    return text.split(SOURCES)[0].rstrip()


def task_history(msg: StoredMessage, card: str) -> list[dict[str, Any]]:
    """Every task_update chunk Slack accepted for one card, in order."""
    return [c for c in msg.chunks if c.get("type") == "task_update" and c.get("id") == card]


def expected_classic(answer: str) -> str:
    """The start of a classic answer's first message (a sources line may follow)."""
    return expected_text(answer).rstrip()


def chunks_mode_only(slack: Any) -> None:
    """No stream call used the `markdown_text` argument, and Slack refused none for its mode."""
    calls = stream_calls(slack)
    assert calls
    assert [c.method for c in calls if "markdown_text" in c.args] == []
    assert [c for c in calls if c.error == "streaming_mode_mismatch"] == []


# --- chunks mode, recipients ----------------------------------------------------------------


async def test_a_dm_answer_streams_in_chunks_mode_only(
    slack: Any, powabase: Any, tmp_path: Path
) -> None:
    """A DM answer streams text and cards as chunks (never the markdown_text argument), Slack
    refuses nothing, no chat.update is spent, and the final text is the answer exactly."""
    async with running_bot(slack, powabase, tmp_path, POWABOT_NATIVE_STREAMING=True) as bot:
        msg = await ask(slack, bot, REFUND)
    chunks_mode_only(slack)
    assert [c.error for c in stream_calls(slack) if c.error] == []
    reply = streamed(slack, DM, msg.ts)
    assert reply.stream_mode == "chunks" and reply.stream_state == "stopped"
    assert answer_part(reply.text) == answer_markdown(powabase.runs[-1].answer).rstrip()
    assert slack.calls_to("chat.update") == []


async def test_a_channel_thread_answer_streams_natively_to_the_asker(
    slack: Any, powabase: Any, tmp_path: Path
) -> None:
    """A mention's answer streams in its thread with recipient_user_id / recipient_team_id."""
    async with running_bot(slack, powabase, tmp_path, POWABOT_NATIVE_STREAMING=True) as bot:
        msg = await ask(slack, bot, REFUND, channel=CHANNEL)
    (start,) = slack.calls_to("chat.startStream")
    assert start.error is None
    assert start.args["recipient_user_id"] == ALICE
    assert start.args["recipient_team_id"] == slack.workspace.team_id
    assert start.args["thread_ts"] == msg.ts
    chunks_mode_only(slack)
    reply = streamed(slack, CHANNEL, msg.ts)
    assert reply.stream_state == "stopped"
    assert answer_part(reply.text) == answer_markdown(powabase.runs[-1].answer).rstrip()
    assert slack.calls_to("chat.update") == []


# --- task cards -----------------------------------------------------------------------------


async def test_a_delegation_shows_as_a_task_card_from_search_to_done(
    slack: Any, powabase: Any, tmp_path: Path
) -> None:
    """One delegation is one card: in progress with the search it runs, then complete with its
    duration, in a timeline."""
    powabase.context.step_delay = 0.2  # the specialist takes a moment: its progress shows
    async with running_bot(slack, powabase, tmp_path, POWABOT_NATIVE_STREAMING=True) as bot:
        msg = await ask(slack, bot, REFUND)
    reply = streamed(slack, DM, msg.ts)
    assert reply.task_display_mode == "timeline"
    assert list(reply.tasks) == ["task-1"]
    history = task_history(reply, "task-1")
    statuses = [c["status"] for c in history]
    assert "in_progress" in statuses
    assert statuses.index("in_progress") < statuses.index("complete")
    searching = [c["details"] for c in history if c.get("details", "").startswith("Searching")]
    assert searching and searching[-1].startswith("Searching the billing knowledge base for “")
    card = reply.tasks["task-1"]
    assert card["title"] == "Billing specialist"
    assert card["status"] == "complete"
    assert re.fullmatch(r"Done in \d+\.\d s \(1 search\)\.", card["output"]), card["output"]


async def test_two_specialists_show_as_a_plan_with_two_cards(
    slack: Any, powabase: Any, tmp_path: Path
) -> None:
    """With two specialists planned the stream starts as a plan titled for both, one card each,
    both complete at the end."""
    powabase.ask_specialists(["billing-agent", "technical-agent"])
    async with running_bot(slack, powabase, tmp_path, POWABOT_NATIVE_STREAMING=True) as bot:
        msg = await ask(slack, bot, "Refund window for Pro, and how do I rotate an API key?")
    start = slack.calls_to("chat.startStream")[0]
    assert start.args["task_display_mode"] == "plan"
    assert chunks_of(start, "plan_update") == [
        {"type": "plan_update", "title": "Asking 2 specialists"}
    ]
    reply = streamed(slack, DM, msg.ts)
    assert reply.task_display_mode == "plan" and reply.plan_title == "Asking 2 specialists"
    assert {k: (v["title"], v["status"]) for k, v in reply.tasks.items()} == {
        "task-1": ("Billing specialist", "complete"),
        "task-2": ("Technical specialist", "complete"),
    }
    assert answer_part(reply.text) == answer_markdown(powabase.runs[-1].answer).rstrip()


async def test_a_plan_shows_pending_cards_then_each_specialists_progress(
    slack: SlackStandin,
) -> None:
    """Two specialists planned: the stream opens as a plan with both cards pending; each card
    then runs and completes with its own duration and search count."""
    answer = await open_answer(slack, "D0PLAN")
    answer.plan("billing-agent", "technical-agent")
    await slack.wait_for(lambda: len(answer.tasks()) == 2, timeout=5)
    (start,) = slack.calls_to("chat.startStream")
    assert start.args["task_display_mode"] == "plan"
    assert [c["status"] for c in chunks_of(start, "task_update")] == ["pending", "pending"]
    assert answer.message.plan_title == "Asking 2 specialists"
    first = answer.delegate("billing-agent", "refund window", at=100.0, planned=True)
    answer.delegation_done(first, "billing-agent", at=101.4)
    second = answer.delegate("technical-agent", "rotate API key", at=101.5, planned=True)
    await slack.wait_for(lambda: answer.tasks()["task-2"].get("status") == "in_progress", timeout=5)
    assert answer.tasks()["task-2"]["details"] == (
        "Searching the technical knowledge base for “rotate API key”…"
    )
    answer.delegation_done(second, "technical-agent", at=104.0)
    await answer.done(ANSWER)
    assert {k: (v["status"], v.get("output")) for k, v in answer.tasks().items()} == {
        "task-1": ("complete", "Done in 1.4 s (1 search)."),
        "task-2": ("complete", "Done in 2.5 s (1 search)."),
    }
    assert answer.message.text == ANSWER
    assert [c for c in stream_calls(slack) if "task_display_mode" in c.args] == [start]
    assert [c.error for c in stream_calls(slack) if c.error] == []


async def test_a_failed_delegation_ends_its_card_in_error(slack: SlackStandin) -> None:
    """A specialist that did not finish shows its card in error; the answer still arrives."""
    answer = await open_answer(slack, "D0CARDERR")
    n = answer.delegate(at=100.0)
    answer.delegation_done(n, at=103.0, status="failed")
    await answer.done(ANSWER)
    assert answer.tasks()["task-1"]["status"] == "error"
    assert answer.message.text == ANSWER


# --- 12,000 characters per call -------------------------------------------------------------


def long_text(chars: int) -> str:
    line = "Refunds for annual plans are prorated by the unused months of the term.\n"
    return (line * (chars // len(line) + 1))[:chars].rstrip() + "\n\nThat is all."


async def test_a_long_answer_arrives_in_appends_of_at_most_12000_characters(
    slack: SlackStandin,
) -> None:
    """An answer longer than one call's 12,000 characters goes out in several appends, each
    within the limit, and the message ends with exactly the answer."""
    text = long_text(14_500)
    answer = await open_answer(slack, "D0LONG")
    await answer.say("Refunds for annual ")
    await answer.done(text)
    texts = [
        "".join(c["text"] for c in chunks_of(call, "markdown_text")) for call in stream_calls(slack)
    ]
    assert all(len(t) <= MAX_CALL_TEXT for t in texts)
    assert len([c for c in appends(slack) if chunks_of(c, "markdown_text")]) >= 2
    assert answer.message.text == answer_markdown(text)
    assert [c.error for c in slack.calls if c.error] == []
    assert slack.calls_to("chat.update") == [] and slack.calls_to("chat.postMessage") == []


async def test_an_answer_longer_than_slack_shows_ends_with_the_truncation_note(
    slack: SlackStandin,
) -> None:
    """An answer past what one message may hold is cut at a word, with the note, every call
    within 12,000 characters."""
    text = long_text(40_000)
    answer = await open_answer(slack, "D0HUGE")
    await answer.say("Refunds for annual ")
    await answer.done(text)
    texts = [
        "".join(c["text"] for c in chunks_of(call, "markdown_text")) for call in stream_calls(slack)
    ]
    assert all(len(t) <= MAX_CALL_TEXT for t in texts)
    assert answer.message.text.rstrip().endswith(TRUNCATED.rstrip())
    assert answer.message.text == answer_markdown(text)
    assert answer.stream.truncated
    assert [c.error for c in slack.calls if c.error] == []


# --- a stream Slack ends, or the bot ends before Slack does ----------------------------------


async def test_a_stream_slack_expired_continues_as_an_edit_of_the_same_message(
    slack: SlackStandin,
) -> None:
    """Slack ends a stream mid-answer (message_not_in_streaming_state): the same message is
    edited to the whole answer, which shows exactly once."""
    slack.stream_ttl = 0.3
    answer = await open_answer(slack, "D0EXPIRE")
    await answer.say("The refund window ")
    opened = answer.message.stream_started
    await slack.wait_for(lambda: time.monotonic() - opened > 0.35, timeout=5)
    answer.write("The refund window for an annual Pro plan ")
    await slack.wait_for(lambda: bool(ok(slack.calls_to("chat.update"))), timeout=5)
    assert appends(slack)[-1].error == "message_not_in_streaming_state"
    await answer.done(ANSWER)
    (reply,) = answer.replies()
    assert reply.ts == answer.stream.ts
    assert reply.text == expected(answer.state)
    assert reply.text.count("The refund window") == 1


async def test_a_stream_slack_expired_before_the_final_text_ends_with_the_whole_answer(
    slack: SlackStandin,
) -> None:
    """Slack ends the stream before the final text goes out: the same message is edited to the
    whole answer, nothing is posted twice."""
    slack.stream_ttl = 0.3
    answer = await open_answer(slack, "D0EXPIRE2")
    await answer.say("The refund window ")
    opened = answer.message.stream_started
    await slack.wait_for(lambda: time.monotonic() - opened > 0.35, timeout=5)
    await answer.done(ANSWER)
    (reply,) = answer.replies()
    assert reply.ts == answer.stream.ts
    assert reply.text == expected(answer.state)
    assert reply.text.count("The refund window") == 1
    assert slack.calls_to("chat.postMessage") == []


async def test_a_final_text_that_rewrites_the_streamed_words_is_edited_in_once(
    slack: SlackStandin,
) -> None:
    """The run's final text differs from what streamed (not just longer): the stream stops and
    the same message is edited to the final text, shown once."""
    answer = await open_answer(slack, "D0REWRITE")
    await answer.say("The refund windw for an ")
    await answer.done(ANSWER)
    (reply,) = answer.replies()
    assert reply.ts == answer.stream.ts and reply.stream_state == "stopped"
    assert reply.text == expected(answer.state)
    assert "windw" not in reply.text
    assert [c.error for c in slack.calls if c.error] == []


async def test_a_stream_near_slacks_expiry_is_stopped_and_continued_classically(
    slack: SlackStandin,
) -> None:
    """A stream older than the bot's limit (under Slack's 5 minutes) is stopped by the bot and
    the rest edited into the same message: Slack refuses nothing, the answer shows once."""
    offset = [0.0]

    def clock() -> float:
        return time.monotonic() + offset[0]

    answer = await open_answer(slack, "D0AGED", publisher=publisher_for(slack, clock=clock))
    await answer.say("The refund window ")
    offset[0] += STREAM_MAX_AGE + 1  # the stream is old now (the stand-in's ttl is 5 minutes)
    answer.write("The refund window for an annual Pro plan ")
    await slack.wait_for(lambda: bool(slack.calls_to("chat.update")), timeout=5)
    await answer.done(ANSWER)
    (reply,) = answer.replies()
    assert reply.ts == answer.stream.ts and reply.stream_state == "stopped"
    assert reply.text == expected(answer.state)
    assert reply.text.count("The refund window") == 1
    assert [c.error for c in slack.calls if c.error] == []
    methods = [c.method for c in slack.calls]
    assert methods.index("chat.stopStream") < methods.index("chat.update")


async def test_a_streams_first_message_is_announced_once_as_native(slack: SlackStandin) -> None:
    """`on_posted` (the takeover record) hears the stream's ts once, as native, when it opens."""
    heard: list[tuple[str, bool]] = []

    async def posted(ts: str, native: bool) -> None:
        heard.append((ts, native))

    answer = await open_answer(slack, "D0POSTED")
    answer.stream.on_posted = posted
    await answer.say("The refund window ")
    await answer.done(ANSWER)
    assert heard == [(answer.message.ts, True)]


@pytest.mark.parametrize("words_first", [True, False], ids=["words-first", "final-at-once"])
@pytest.mark.parametrize(
    "refusal",
    [{"status": 429, "headers": {"Retry-After": "30"}}, {"body": {"ok": True}}],
    ids=["start-429", "start-without-ts"],
)
async def test_a_classic_fallbacks_message_is_announced_once(
    slack: SlackStandin, refusal: dict[str, Any], words_first: bool
) -> None:
    """A stream that could not start: the classic message carrying the answer is announced to
    `on_posted` once (not native), whether its first words or the final answer opened it, so
    a takeover finishes that message instead of posting another."""
    heard: list[tuple[str, bool]] = []

    async def posted(ts: str, native: bool) -> None:
        heard.append((ts, native))

    slack.inject("chat.startStream", **refusal)
    answer = await open_answer(slack, "D0POSTED2")
    answer.stream.on_posted = posted
    if words_first:  # the classic stream posts them (or, with no stream at all, the final)
        answer.write("The refund window ")
        await slack.wait_for(lambda: bool(slack.calls_to("chat.startStream")), timeout=5)
        if "status" in refusal:
            await slack.wait_for(lambda: bool(answer.replies()), timeout=5)
    await answer.done(ANSWER)
    (reply,) = answer.replies()
    assert reply.text == expected(answer.state)
    assert heard == [(reply.ts, False)]


# --- sources ----------------------------------------------------------------------------------

FAQ_URL = "https://docs.lumora.example/billing/refunds-faq"


def refunds_faq() -> Source:
    return Source("Refunds FAQ", "billing-kb", FAQ_URL)


async def test_sources_known_at_the_stop_end_the_message_and_the_last_card(
    slack: SlackStandin,
) -> None:
    """Sources found before the stream stops: the stop adds the sources line after the answer
    and puts them on the specialist's card."""
    answer = await open_answer(slack, "D0SOURCES")
    n = answer.delegate(at=100.0)
    await answer.say("The refund window for an annual Pro plan ")
    answer.delegation_done(n, at=101.0)
    answer.state.sources = [refunds_faq()]
    await answer.done(ANSWER)
    assert answer.message.text == f"{ANSWER}\n\n{sources_markdown([refunds_faq()])}"
    assert answer.tasks()["task-1"]["sources"] == [
        {"type": "url", "url": FAQ_URL, "text": "Refunds FAQ"}
    ]
    assert [c.error for c in slack.calls if c.error] == []


# --- refused cards and chunks ---------------------------------------------------------------


async def test_a_refused_task_card_turns_cards_off_and_the_text_still_arrives(
    slack: SlackStandin,
) -> None:
    """appendStream refuses a task_update (invalid_chunks): no card is sent again, and the
    answer text arrives exactly, in the same stream."""
    answer = await open_answer(slack, "D0NOCARDS")
    n = answer.delegate(at=100.0)
    await slack.wait_for(lambda: "task-1" in answer.tasks(), timeout=5)
    slack.inject("chat.appendStream", error="invalid_chunks", times=1)
    answer.delegation_done(n, at=101.0)
    await slack.wait_for(lambda: bool(appends(slack)), timeout=5)
    await answer.say("The refund window for an annual Pro plan ")
    await answer.done(ANSWER)
    refused = appends(slack)[0]
    assert refused.error == "invalid_chunks" and chunks_of(refused, "task_update")
    later = [c for c in stream_calls(slack) if c.t > refused.t]
    assert later and all(not chunks_of(c, "task_update") for c in later)
    assert answer.message.text == ANSWER and answer.message.stream_state == "stopped"
    assert slack.calls_to("chat.update") == [] and slack.calls_to("chat.postMessage") == []


async def test_a_refused_card_on_the_stop_still_stops_with_the_text(slack: SlackStandin) -> None:
    """stopStream refuses the final cards (invalid_chunks): it is sent again without them and
    the message ends with the answer and the closing notice."""
    answer = await open_answer(slack, "D0STOPCARD")
    n = answer.delegate(at=100.0)
    await answer.say("The refund window for an annual Pro plan ")
    slack.inject("chat.stopStream", error="invalid_chunks", times=1)
    answer.delegation_done(n, at=101.0)
    await answer.done(ANSWER)
    stops = slack.calls_to("chat.stopStream")
    assert [c.error for c in stops] == ["invalid_chunks", None]
    assert answer.message.text == ANSWER and answer.message.stream_state == "stopped"
    assert answer.replies() == [answer.message]


async def test_a_card_refused_at_the_start_loses_no_text(slack: SlackStandin) -> None:
    """startStream refuses the first card (invalid_chunks): the answer still arrives exactly,
    in one message."""
    slack.inject("chat.startStream", error="invalid_chunks", times=1)
    answer = await open_answer(slack, "D0STARTCARD")
    n = answer.delegate(at=100.0)
    await slack.wait_for(lambda: bool(slack.calls_to("chat.startStream")), timeout=5)
    answer.delegation_done(n, at=101.0)
    answer.write("The refund window for an annual Pro plan ")
    await answer.done(ANSWER)
    (reply,) = answer.replies()
    assert reply.text.rstrip() == expected(answer.state).rstrip()
    assert reply.stream_state != "streaming"


async def test_a_refused_append_through_the_bot_loses_no_text(
    slack: Any, powabase: Any, tmp_path: Path
) -> None:
    """Through the whole bot: one appendStream refused for its chunks, the answer is exact."""
    powabase.context.step_delay = 0.05
    slack.inject("chat.appendStream", error="invalid_chunks", times=1)
    async with running_bot(slack, powabase, tmp_path, POWABOT_NATIVE_STREAMING=True) as bot:
        msg = await ask(slack, bot, REFUND)
    assert [c.error for c in appends(slack)].count("invalid_chunks") == 1
    reply = bot_replies(slack, DM, msg.ts)[0]
    assert reply.stream_state == "stopped"
    assert answer_part(reply.text) == answer_markdown(powabase.runs[-1].answer).rstrip()


# --- startStream refused or out of budget ---------------------------------------------------


async def test_a_channel_refusing_streams_gets_a_classic_answer(
    slack: Any, powabase: Any, tmp_path: Path
) -> None:
    """startStream refused with channel_type_not_supported: the answer is posted and edited."""
    slack.inject("chat.startStream", error="channel_type_not_supported", times=5)
    async with running_bot(slack, powabase, tmp_path, POWABOT_NATIVE_STREAMING=True) as bot:
        msg = await ask(slack, bot, REFUND, channel=CHANNEL)
    replies = bot_replies(slack, CHANNEL, msg.ts)
    assert replies and all(m.stream_state is None for m in replies)
    assert replies[0].text.startswith(expected_classic(powabase.runs[-1].answer))


async def test_many_answers_at_once_beyond_the_start_budget_all_complete(
    slack: Any, powabase: Any, tmp_path: Path
) -> None:
    """More answers start together than the startStream budget allows: the rest go classic at
    once, Slack answers no 429, and every answer completes exactly."""
    count = int(START_BURST) + 3
    powabase.context.delta_delay = 0.01
    async with running_bot(slack, powabase, tmp_path, POWABOT_NATIVE_STREAMING=True) as bot:
        before = bot.answerer.finished
        asked = await asyncio.gather(
            *(slack.user_says(user=ALICE, text=REFUND, channel=f"D0MANY{i}") for i in range(count))
        )
        await slack.wait_for(lambda: bot.answerer.finished >= before + count, timeout=40)
    answer = powabase.runs[-1].answer
    assert {r.answer for r in powabase.runs} == {answer}
    assert slack.ratelimited_count == 0
    starts = ok(slack.calls_to("chat.startStream"))
    assert 1 <= len(starts) <= START_BURST
    native = classic = 0
    for msg in asked:
        first = bot_replies(slack, msg.channel, msg.ts)[0]
        assert first.stream_state != "streaming"
        if first.stream_state == "stopped":
            native += 1
            assert answer_part(first.text) == answer_markdown(answer).rstrip()
        else:
            classic += 1
            assert first.text.startswith(expected_classic(answer))
    assert native == len(starts) and classic == count - len(starts)


# --- Stop -----------------------------------------------------------------------------------


async def _streaming_answer(slack: Any, powabase: Any, bot: Any) -> Any:
    """Ask in the DM, and return once some answer text shows in the stream."""
    msg = await slack.user_says(user=ALICE, text=REFUND, channel=DM)
    await slack.wait_for(
        lambda: any(
            m.stream_state == "streaming" and m.text.strip() for m in bot_replies(slack, DM, msg.ts)
        ),
        timeout=10,
    )
    return msg


async def test_a_stop_ends_the_stream_with_what_arrived_and_cancels_the_run(
    slack: Any, powabase: Any, tmp_path: Path
) -> None:
    """Stop mid-answer: the streamed message ends with the text that arrived plus "Stopped.",
    and the Powabase run is cancelled."""
    powabase.context.delta_delay = 0.05
    async with running_bot(slack, powabase, tmp_path, POWABOT_NATIVE_STREAMING=True) as bot:
        msg = await _streaming_answer(slack, powabase, bot)
        before = bot.answerer.finished
        assert await bot.answerer.stop(slack.workspace.team_id, DM, msg.ts, ALICE)
        await slack.wait_for(lambda: bot.answerer.finished > before, timeout=10)
        await slack.wait_for(lambda: powabase.runs[-1].done.is_set(), timeout=5)
    assert powabase.runs[-1].status == "cancelled"
    reply = streamed(slack, DM, msg.ts)
    assert reply.stream_state == "stopped"
    assert reply.text.rstrip().endswith("_Stopped._")
    arrived = reply.text.rstrip()[: -len("_Stopped._")].rstrip()
    assert arrived and _full_answer(powabase).startswith(arrived)
    assert ":warning:" not in reply.text
    assert slack.calls_to("chat.update") == []


async def test_a_stop_while_a_specialist_works_ends_the_stream_with_stopped(
    slack: SlackStandin,
) -> None:
    """Stopped while only a task card shows: the stream stops with "Stopped." and the card
    no longer shows as running."""
    answer = await open_answer(slack, "D0STOPCARDONLY")
    answer.delegate(at=100.0)
    await slack.wait_for(lambda: "task-1" in answer.tasks(), timeout=5)
    answer.state.fail(ErrorKind.STOPPED, "stopped by the user", 101.0)
    answer.stream.update()
    await answer.stream.finish()
    (reply,) = answer.replies()
    assert reply.stream_state == "stopped"
    assert reply.text.strip() == "_Stopped._"
    assert answer.tasks()["task-1"]["status"] != "in_progress"


def _full_answer(powabase: Any) -> str:
    """What the stand-in would have answered (a cancelled run records none)."""
    from sandbox.powabase import model

    ctx = powabase.context
    orch = ctx.store.orchestrations[powabase.orchestration_id]
    return answer_markdown(model.answer(ctx.store, orch, REFUND, []).final)


async def test_a_stop_after_the_answer_or_by_someone_else_changes_nothing(
    slack: Any, powabase: Any, tmp_path: Path
) -> None:
    """Another user's stop leaves the streamed answer running to the end; a stop after it
    finished writes nothing."""
    powabase.context.delta_delay = 0.02
    async with running_bot(slack, powabase, tmp_path, POWABOT_NATIVE_STREAMING=True) as bot:
        team = slack.workspace.team_id
        before = bot.answerer.finished
        msg = await _streaming_answer(slack, powabase, bot)
        assert not await bot.answerer.stop(team, DM, msg.ts, BOB)
        await slack.wait_for(lambda: bot.answerer.finished > before, timeout=20)
        reply = streamed(slack, DM, msg.ts)
        shown, calls = reply.text, len(slack.calls)
        assert "Stopped" not in shown
        assert answer_part(shown) == answer_markdown(powabase.runs[-1].answer).rstrip()
        assert not await bot.answerer.stop(team, DM, msg.ts, ALICE)
        assert not await bot.answerer.stop(team, DM, None, ALICE)
        assert streamed(slack, DM, msg.ts).text == shown
        assert len(slack.calls) == calls
    assert powabase.runs[-1].status == "completed"
