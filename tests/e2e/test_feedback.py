"""Feedback on every answer, end to end: the buttons under classic and native answers, a click
stored as a rating and thanked in private, and `powabot feedback export` reading it back."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from bot.cli import main
from bot.export import COLUMNS
from bot.render.feedback import (
    ESCALATE_ACTION,
    FEEDBACK_ACTION,
    NOT_FOUND,
    RESET_ACTION,
    THANKS,
)
from bot.service import Powabot
from bot.store.base import ExportRow
from tests.conftest import bot_settings, running_bot
from tests.e2e.answers import ALICE, ask, bot_replies

BOB = "U0BOB"
DM = "D0ALICE"
SUPPORT = "C0SUPPORT"
QUESTION = "What is the refund window for an annual Pro plan?"


def actions_block(message: Any) -> dict[str, Any] | None:
    """The context_actions block of a message, if it has one."""
    for block in message.blocks or []:
        if block.get("type") == "context_actions":
            return dict(block)
    return None


def rated_message(slack: Any, channel: str, thread_ts: str) -> Any:
    """The answer's message that carries the feedback buttons (exactly one per answer)."""
    rated = [m for m in bot_replies(slack, channel, thread_ts) if actions_block(m) is not None]
    assert len(rated) == 1, f"expected one message with feedback buttons, got {len(rated)}"
    return rated[0]


async def rate(
    slack: Any, bot: Powabot, *, user: str, channel: str, message: Any, value: str
) -> Any:
    """`user` clicks Helpful ("good") or Not helpful ("bad"); returns once the bot handled it
    and the ephemeral it sent (the newest one to that user)."""
    before = bot.feedback.handled
    await slack.click(
        user=user, channel=channel, message_ts=message.ts, action_id=FEEDBACK_ACTION, value=value
    )
    await slack.wait_for(lambda: bot.feedback.handled > before, timeout=10)
    mine = [e for e in slack.ephemerals if e.recipient == user]
    assert mine, f"{user} was told nothing"
    return mine[-1]


async def ratings(bot: Powabot) -> list[ExportRow]:
    return await bot.store.feedback_export()


async def test_classic_answer_ends_with_feedback_and_a_click_is_stored_and_thanked(
    slack: Any, powabase: Any, bot: Powabot
) -> None:
    """A classic answer ends with Helpful / Not helpful and New conversation; a Helpful click
    is stored with the answer's run, question and specialist, and only the clicker is thanked,
    in the answer's thread."""
    msg = await ask(slack, bot, DM, QUESTION)
    answer = rated_message(slack, DM, msg.ts)
    block = actions_block(answer)
    assert block is not None
    assert [e["action_id"] for e in block["elements"]] == [FEEDBACK_ACTION, RESET_ACTION]
    assert answer.text and answer.text in "\n".join(
        b["text"]["text"] for b in answer.blocks if b["type"] == "section"
    )

    thanks = await rate(slack, bot, user=ALICE, channel=DM, message=answer, value="good")
    assert thanks.text == THANKS and thanks.thread_ts == msg.ts and not thanks.blocks
    (stored,) = await ratings(bot)
    run = powabase.runs[-1]
    assert (stored.rater_id, stored.rating, stored.asker_id) == (ALICE, 1, ALICE)
    assert stored.run_id == run.run_id and stored.question == QUESTION
    assert stored.specialists == ("billing-agent",)


async def test_a_second_click_replaces_the_first_and_each_user_rates_once(
    slack: Any, powabase: Any, bot: Powabot
) -> None:
    """In a channel thread, Alice changing her mind replaces her rating; Bob's rating of the
    same answer is kept beside it."""
    msg = await ask(slack, bot, SUPPORT, QUESTION, mention=True)
    answer = rated_message(slack, SUPPORT, msg.ts)
    await rate(slack, bot, user=ALICE, channel=SUPPORT, message=answer, value="good")
    await rate(slack, bot, user=ALICE, channel=SUPPORT, message=answer, value="bad")
    await rate(slack, bot, user=BOB, channel=SUPPORT, message=answer, value="good")
    stored = {(r.rater_id, r.rating) for r in await ratings(bot)}
    assert stored == {(ALICE, -1), (BOB, 1)}


async def test_a_negative_rating_offers_a_person_for_that_answer(
    slack: Any, powabase: Any, bot: Powabot
) -> None:
    """Not helpful is thanked with a "Talk to a person" button that names the rated answer."""
    msg = await ask(slack, bot, DM, QUESTION)
    answer = rated_message(slack, DM, msg.ts)
    reply = await rate(slack, bot, user=ALICE, channel=DM, message=answer, value="bad")
    assert reply.text.startswith("Thanks for the feedback!") and reply.thread_ts == msg.ts
    buttons = [e for b in reply.blocks or [] if b["type"] == "actions" for e in b["elements"]]
    assert [(b["action_id"], b["value"], b["text"]["text"]) for b in buttons] == [
        (ESCALATE_ACTION, answer.ts, "Talk to a person")
    ]


async def test_a_click_after_a_restart_still_counts(
    slack: Any, powabase: Any, tmp_path: Path
) -> None:
    """A click on an answer given before the bot restarted is stored and thanked like any."""
    async with running_bot(slack, powabase, tmp_path) as first:
        msg = await ask(slack, first, DM, QUESTION)
    answer = rated_message(slack, DM, msg.ts)
    async with running_bot(slack, powabase, tmp_path) as second:
        reply = await rate(slack, second, user=ALICE, channel=DM, message=answer, value="good")
        assert reply.text == THANKS
        assert [(r.rater_id, r.rating) for r in await ratings(second)] == [(ALICE, 1)]


async def test_feedback_on_a_deleted_conversation_is_dropped_with_a_log_line(
    slack: Any, powabase: Any, bot: Powabot, tmp_path: Path
) -> None:
    """When the conversation was deleted from the store, a click stores nothing, logs
    `feedback_dropped`, and the clicker is told the conversation cannot be found."""
    msg = await ask(slack, bot, DM, QUESTION)
    answer = rated_message(slack, DM, msg.ts)
    with sqlite3.connect(tmp_path / "sessions.db") as db:  # what an admin's cleanup does
        db.execute("pragma foreign_keys = on")
        assert db.execute("delete from chat_sessions where slack_thread_ts = ?", (msg.ts,)).rowcount
    with capture_logs() as logs:
        reply = await rate(slack, bot, user=ALICE, channel=DM, message=answer, value="good")
    assert reply.text == NOT_FOUND and not reply.blocks
    dropped = [e for e in logs if e["event"] == "feedback_dropped"]
    assert dropped and "deleted" in dropped[0]["reason"]
    assert await ratings(bot) == []


async def test_native_answer_gets_the_buttons_in_its_stop_and_a_click_counts(
    slack: Any, powabase: Any, tmp_path: Path
) -> None:
    """A natively streamed answer gets the feedback buttons with chat.stopStream, and a
    click on the streamed message is stored and thanked."""
    async with running_bot(slack, powabase, tmp_path, POWABOT_NATIVE_STREAMING=True) as bot:
        msg = await ask(slack, bot, DM, QUESTION)
        (stop,) = slack.calls_to("chat.stopStream")
        assert [b["type"] for b in stop.args["blocks"]] == ["context_actions"]
        answer = rated_message(slack, DM, msg.ts)
        assert answer.stream_state == "stopped"
        reply = await rate(slack, bot, user=ALICE, channel=DM, message=answer, value="good")
        assert reply.text == THANKS
        assert [(r.rater_id, r.rating) for r in await ratings(bot)] == [(ALICE, 1)]


def export(*args: str) -> tuple[int, str]:
    """`powabot feedback export ARGS` as a user runs it; its exit code and stdout."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["feedback", "export", *args])
    return code, out.getvalue()


async def test_export_prints_every_rating_in_both_formats_and_since_filters(
    slack: Any, powabase: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After two ratings in Slack, the export (store settings only) prints both as JSON Lines
    and as CSV with the expected columns; --since a later day prints none."""
    async with running_bot(slack, powabase, tmp_path) as bot:
        first = await ask(slack, bot, DM, QUESTION)
        second = await ask(slack, bot, DM, "How do I authenticate with an API key?")
        for msg, value in ((first, "good"), (second, "bad")):
            answer = rated_message(slack, DM, msg.ts)
            await rate(slack, bot, user=ALICE, channel=DM, message=answer, value=value)
    monkeypatch.setenv("POWABOT_STORE", f"sqlite:///{tmp_path / 'sessions.db'}")
    monkeypatch.chdir(tmp_path)

    code, out = await asyncio.to_thread(export, "--format", "jsonl")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [tuple(r) for r in rows] == [COLUMNS, COLUMNS]
    assert [(r["question"], r["rating"]) for r in rows] == [
        (QUESTION, "good"),
        ("How do I authenticate with an API key?", "bad"),
    ]
    assert rows[0]["specialists"] == ["billing-agent"] and rows[0]["answer"]
    assert all(r["run_id"] and r["asker"] == r["rater"] == ALICE for r in rows)

    code, out = await asyncio.to_thread(export)
    header, *lines = list(csv.reader(io.StringIO(out)))
    assert code == 0 and tuple(header) == COLUMNS and len(lines) == 2

    tomorrow = datetime.now(UTC).date() + timedelta(days=1)
    code, out = await asyncio.to_thread(export, "--since", tomorrow.isoformat())
    assert code == 0 and list(csv.reader(io.StringIO(out))) == [list(COLUMNS)]


async def test_http_mode_refuses_a_forged_or_replayed_click(
    slack: Any, powabase: Any, tmp_path: Path
) -> None:
    """In HTTP mode a click with a wrong signature or an old timestamp is refused (401) and
    stores nothing; the same click signed now is stored."""
    settings = bot_settings(
        slack, powabase, tmp_path, SLACK_APP_TOKEN=None, SLACK_SIGNING_SECRET="sig-secret"
    )
    http_bot = Powabot(settings)
    await http_bot.start()
    try:
        url = f"http://127.0.0.1:{http_bot.http_port}/slack/events"
        event = {"type": "message", "channel": DM, "channel_type": "im", "user": ALICE,
                 "text": QUESTION, "ts": "1700000001.000100"}  # fmt: skip
        assert await slack.deliver_http(url, "sig-secret", event) == 200
        await slack.wait_for(lambda: http_bot.answerer.finished >= 1, timeout=20)
        answer = rated_message(slack, DM, "1700000001.000100")
        click = {"user": ALICE, "channel": DM, "message_ts": answer.ts,
                 "action_id": FEEDBACK_ACTION, "value": "good"}  # fmt: skip
        assert await slack.click_http(url, "wrong-secret", **click) == 401
        stale = int(datetime.now(UTC).timestamp()) - 600
        assert await slack.click_http(url, "sig-secret", timestamp=stale, **click) == 401
        assert await ratings(http_bot) == []
        assert await slack.click_http(url, "sig-secret", **click) == 200
        await slack.wait_for(lambda: http_bot.feedback.handled >= 1, timeout=10)
        (row,) = await ratings(http_bot)
        assert row.rating == 1 and row.rater_id == ALICE
    finally:
        await http_bot.stop()
