"""The feedback buttons under a finished answer, the text blocks above them, and the thanks."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bot.render import render_answer
from bot.render.feedback import (
    ESCALATE_ACTION,
    FEEDBACK_ACTION,
    RESET_ACTION,
    mrkdwn_sections,
    rating_of,
    thanks,
)
from bot.state import AnswerState, ErrorKind, Phase

ANSWER = "Refunds: **30 days** for annual plans. See [policy](https://ex.com/r)."


def done(text: str, *, run_id: str | None = "orch_run_1") -> AnswerState:
    return AnswerState(text=text, phase=Phase.DONE, run_id=run_id)


def actions(message: Any) -> dict[str, Any]:
    """The context_actions block a message ends with (fails if there is none)."""
    assert message.blocks, "no blocks"
    block: dict[str, Any] = message.blocks[-1]
    assert block["type"] == "context_actions"
    return block


def section_texts(message: Any) -> list[str]:
    return [b["text"]["text"] for b in message.blocks if b["type"] == "section"]


def test_finished_answer_ends_with_feedback_and_new_conversation() -> None:
    """A finished answer's message shows its text and, under it, Helpful / Not helpful and
    New conversation, with the action ids and values the click handlers read."""
    (message,) = render_answer(done(ANSWER))
    assert message.text == "Refunds: *30 days* for annual plans. See <https://ex.com/r|policy>."
    assert section_texts(message) == [message.text]
    feedback, reset = actions(message)["elements"]
    assert feedback["type"] == "feedback_buttons" and feedback["action_id"] == FEEDBACK_ACTION
    assert feedback["positive_button"]["value"] == "good"
    assert feedback["negative_button"]["value"] == "bad"
    assert feedback["positive_button"]["text"] == {"type": "plain_text", "text": "Helpful"}
    assert reset["type"] == "icon_button" and reset["action_id"] == RESET_ACTION
    assert reset["value"] == "reset" and reset["text"]["text"] == "New conversation"


def test_only_the_last_message_of_a_long_answer_gets_the_buttons() -> None:
    """A long answer is rated once: the buttons sit under its last message only."""
    long = "\n\n".join(f"Paragraph {n}: " + "refund policy details " * 40 for n in range(12))
    messages = render_answer(done(long))
    assert len(messages) > 1
    assert all(m.blocks is None for m in messages[:-1])
    assert actions(messages[-1])["elements"][0]["action_id"] == FEEDBACK_ACTION
    assert "\n".join(section_texts(messages[-1])) == messages[-1].text


@pytest.mark.parametrize(
    "state",
    [
        pytest.param(
            AnswerState(text="Refunds take", phase=Phase.STREAMING, run_id="r"), id="streaming"
        ),
        pytest.param(done(""), id="empty answer"),
        pytest.param(done(ANSWER, run_id=None), id="no run id"),
    ],
)
def test_unfinished_or_unrecorded_answers_have_no_buttons(state: AnswerState) -> None:
    """Nothing to rate while the answer streams, when it is empty, or when it has no run."""
    assert all(m.blocks is None for m in render_answer(state))


@pytest.mark.parametrize("kind", [ErrorKind.INTERRUPTED, ErrorKind.STOPPED])
def test_failed_or_stopped_answers_have_no_buttons(kind: ErrorKind) -> None:
    """A partial answer (cut off, or stopped by the user) is not offered for rating."""
    state = AnswerState(text="Half an answer", phase=Phase.STREAMING, run_id="orch_run_1")
    state.fail(kind, "detail", 1.0)
    assert all(m.blocks is None for m in render_answer(state))


def test_long_last_message_stays_within_slack_block_limits() -> None:
    """A last message past 3,000 characters becomes several sections Slack accepts (each at
    most 3,000 characters, cut at line breaks, the whole text kept) and the message's blocks
    stay well under Slack's count and size limits."""
    line = "check the refund form, then submit it to billing. "
    markdown = "\n".join(f"Step {n}: " + line * 16 for n in range(4))
    (message,) = render_answer(done(markdown))
    assert len(message.text) > 3000
    texts = section_texts(message)
    assert len(texts) == 2 and all(0 < len(t) <= 3000 for t in texts)
    assert "\n".join(texts) == message.text
    assert message.blocks is not None and len(message.blocks) <= 50
    assert len(json.dumps(message.blocks, ensure_ascii=False)) < 12_000


def test_code_block_across_a_section_cut_is_closed_and_reopened() -> None:
    """A code block that straddles a section cut still shows as code in both sections."""
    code = "\n".join(f"curl -X POST https://api.example.com/v1/refunds/{n}" for n in range(60))
    mrkdwn = "Run these:\n```\n" + code + "\n```\nDone."
    pieces = mrkdwn_sections(mrkdwn)
    assert len(pieces) == 2
    assert all(len(p) <= 3000 and p.count("```") == 2 for p in pieces)
    assert pieces[1].startswith("```\ncurl") and pieces[1].endswith("```\nDone.")
    kept = "".join(pieces).replace("```", "").replace("\n", "")
    assert kept == mrkdwn.replace("```", "").replace("\n", "")


def test_one_endless_line_is_cut_between_whole_characters() -> None:
    """A line without spaces longer than a section is cut, never inside an emoji."""
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"
    line = family * 700  # 3,500 characters, no space
    pieces = mrkdwn_sections(line)
    assert len(pieces) == 2 and "".join(pieces) == line
    assert all(len(p) <= 3000 and p.startswith("\U0001f468") for p in pieces)


def test_positive_thanks_is_just_thanks() -> None:
    """A positive rating is thanked in one short line and offers nothing more."""
    message = thanks(1, "1700000000.000200")
    assert message.text == "Thanks for the feedback!" and message.blocks is None


def test_negative_thanks_offers_a_person_for_that_answer() -> None:
    """A negative rating is thanked and offers "Talk to a person" for exactly that answer."""
    message = thanks(-1, "1700000000.000200")
    assert message.text.startswith("Thanks for the feedback!")
    assert message.blocks is not None
    (button,) = [e for b in message.blocks if b["type"] == "actions" for e in b["elements"]]
    assert button["action_id"] == ESCALATE_ACTION
    assert button["value"] == "1700000000.000200"
    assert button["text"]["text"] == "Talk to a person"


def test_only_the_two_button_values_count_as_ratings() -> None:
    """A forged or unknown value is not a rating."""
    assert (rating_of("good"), rating_of("bad")) == (1, -1)
    assert rating_of("great") is None and rating_of(None) is None and rating_of(1) is None
