"""Sources: every delegated answer ends with the documents it rests on (read from the run detail).

Classic path: the final answer is not held back; the sources head the trace message posted right
under it. Native path: the stream's stop carries them (text and the task card's source links).
A run detail that is missing, slow or odd leaves the answer intact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.conftest import running_bot
from tests.e2e.answers import ALICE, ask, bot_replies, expected_text

DM = "D0ALICE"
REFUND = "What is the refund window for an annual Pro plan?"


async def test_classic_answer_is_followed_by_its_sources(
    slack: Any, powabase: Any, tmp_path: Path
) -> None:
    """The answer stays exact; the message under it starts with the documents, linked."""
    async with running_bot(slack, powabase, tmp_path) as bot:
        msg = await ask(slack, bot, DM, REFUND)
        answer, trace = bot_replies(slack, DM, msg.ts)
        assert answer.text == expected_text(powabase.runs[-1].answer)
        first_line = trace.text.splitlines()[0]
        assert first_line.startswith("*Sources:*")
        assert "docs.lumora.example/billing/" in first_line and "(Billing KB)" in first_line
        assert trace.blocks and trace.blocks[0]["type"] == "context"
        assert len(slack.calls_to("chat.update")) <= 3  # no edit spent on the sources


async def test_two_specialists_name_documents_from_both(
    slack: Any, powabase: Any, tmp_path: Path
) -> None:
    """An answer from two specialists lists documents of both knowledge bases, at most 5."""
    powabase.ask_specialists(["billing-agent", "technical-agent"])
    async with running_bot(slack, powabase, tmp_path) as bot:
        msg = await ask(slack, bot, DM, "How do refunds work, and how do I rotate an API key?")
        trace = bot_replies(slack, DM, msg.ts)[-1]
        line = trace.text.splitlines()[0]
        assert "(Billing KB)" in line and "(Technical KB)" in line
        assert line.count(" · ") <= 4


async def test_missing_or_odd_run_detail_never_breaks_the_answer(
    slack: Any, powabase: Any, tmp_path: Path
) -> None:
    """A 404 names the knowledge base searched; an odd detail does the same; answers stay exact."""
    async with running_bot(slack, powabase, tmp_path) as bot:
        for fault in ("not_found", "odd_shape"):
            powabase.inject_detail_fault(fault)
            msg = await ask(slack, bot, DM, REFUND)
            answer, trace = bot_replies(slack, DM, msg.ts)
            assert answer.text == expected_text(powabase.runs[-1].answer)
            line = trace.text.splitlines()[0]
            assert line == "*Sources:* Billing knowledge base", fault


async def test_native_answer_ends_with_its_sources_in_the_stream(
    slack: Any, powabase: Any, tmp_path: Path
) -> None:
    """Native: the stop adds the sources line and links them on the specialist's card; the
    trace under it does not repeat them."""
    async with running_bot(slack, powabase, tmp_path, POWABOT_NATIVE_STREAMING=True) as bot:
        before = bot.answerer.finished
        msg = await slack.user_says(user=ALICE, text=REFUND, channel=DM)
        await slack.wait_for(lambda: bot.answerer.finished > before, timeout=20)
        answer, trace = bot_replies(slack, DM, msg.ts)
        assert answer.stream_state == "stopped"
        assert answer.text.rstrip().splitlines()[-1].startswith("**Sources:**")
        card = answer.tasks["task-1"]
        assert card["status"] == "complete"
        assert any("docs.lumora.example/billing/" in s["url"] for s in card["sources"])
        assert "Sources" not in trace.text
