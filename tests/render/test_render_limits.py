"""Bounded output: one answer is at most a few Slack messages, and so is its trace."""

from __future__ import annotations

import json

import pytest

from bot.render import render_answer, render_trace
from bot.render.answer import (
    MAX_ANSWER_MESSAGES,
    NATIVE_MAX_CHARS,
    PARTIAL,
    TRUNCATED,
    answer_markdown,
)
from bot.render.trace import MAX_TRACE_MESSAGES
from bot.state import AnswerState, Delegation, ErrorKind, Phase, ToolStep

SLACK_LIMIT = 3500  # what render_answer is asked to stay under (Slack refuses near 4,000)


def huge_answer(chars: int = 300_000) -> str:
    """Numbered plain paragraphs (mrkdwn renders them unchanged) of about ``chars`` characters."""
    paragraphs: list[str] = []
    total = n = 0
    while total < chars:
        n += 1
        paragraph = f"Paragraph {n}. " + "Refunds for annual plans follow the policy. " * 6
        paragraphs.append(paragraph.strip())
        total += len(paragraph) + 2
    return "\n\n".join(paragraphs)


def shown_text(texts: list[str]) -> str:
    """The answer text the messages show, without the truncation note."""
    joined = "\n\n".join(texts)
    assert joined.endswith(f"\n\n{TRUNCATED}")
    return joined.removesuffix(f"\n\n{TRUNCATED}")


def test_a_huge_answer_is_capped_with_a_note_saying_what_to_do() -> None:
    """300,000 characters become at most 5 messages within Slack's limit; the last one says the
    answer was cut and what the user can do, and the text up to the cut is exactly the answer's."""
    text = huge_answer()
    messages = render_answer(AnswerState(text=text, phase=Phase.DONE))
    assert len(messages) == MAX_ANSWER_MESSAGES
    assert all(len(m.text) <= SLACK_LIMIT for m in messages)
    assert all(TRUNCATED not in m.text for m in messages[:-1])
    assert messages[-1].text.endswith(TRUNCATED)
    assert "truncated" in TRUNCATED and "the full answer is in the file attached" in TRUNCATED
    shown = shown_text([m.text for m in messages])
    assert len(shown) > 10_000 and text.startswith(shown)
    assert text[len(shown) : len(shown) + 2] == "\n\n"  # cut at a paragraph, nothing half-shown


def test_the_cap_never_reshuffles_messages_as_the_answer_streams_in() -> None:
    """While the answer grows past the cap, every message but the last is already final, the
    last one only gains text, and once cut the messages stay exactly as they are."""
    text = huge_answer(40_000)
    final = [m.text for m in render_answer(AnswerState(text=text, phase=Phase.DONE))]
    for end in range(1, len(text), 577):
        state = AnswerState(text=text[:end], phase=Phase.STREAMING)
        shown = [m.text for m in render_answer(state)]
        for i, message in enumerate(shown):
            body = message.removesuffix(" …")
            if i < len(shown) - 1:
                assert body == final[i]
            else:  # the last message may still hand text on to a next one
                assert "\n\n".join(final[i:]).startswith(body.removesuffix(f"\n\n{TRUNCATED}"))
        if shown[-1].endswith(TRUNCATED):
            assert shown == final


def test_a_capped_answer_that_fails_keeps_the_note_and_the_notice() -> None:
    """A run that fails after the cut ends with the truncation note and then the failure notice,
    still within Slack's limit."""
    state = AnswerState(text=huge_answer(), phase=Phase.STREAMING)
    state.fail(ErrorKind.INTERRUPTED, "dropped", 10.0)
    messages = render_answer(state)
    assert len(messages) == MAX_ANSWER_MESSAGES
    assert all(len(m.text) <= SLACK_LIMIT for m in messages)
    last = messages[-1].text
    assert last.index(TRUNCATED) < last.index(":warning:") and PARTIAL in last


def test_an_answer_that_fits_has_no_note() -> None:
    """An answer of a few messages is shown whole, without any truncation note."""
    text = huge_answer(9_000)
    messages = render_answer(AnswerState(text=text, phase=Phase.DONE))
    assert 1 < len(messages) < MAX_ANSWER_MESSAGES
    assert "\n\n".join(m.text for m in messages) == text


def test_native_markdown_is_capped_append_only() -> None:
    """Native streaming's Markdown stops near NATIVE_MAX_CHARS with the note, and the capped
    text never changes as the answer keeps growing (append-only streaming stays valid)."""
    text = huge_answer()
    capped = answer_markdown(text)
    assert len(capped) <= NATIVE_MAX_CHARS + len(TRUNCATED) + 8
    assert capped.endswith(f"\n\n{TRUNCATED}\n")
    kept = capped.removesuffix(f"\n\n{TRUNCATED}\n")
    assert text.startswith(kept) and len(kept) > NATIVE_MAX_CHARS - 400
    for end in (NATIVE_MAX_CHARS + 1, NATIVE_MAX_CHARS + 50, 100_000):
        assert answer_markdown(text[:end]) == capped
    shorter = answer_markdown(text[: NATIVE_MAX_CHARS - 10])
    assert capped.startswith(shorter[: shorter.rfind(" ") + 1])


def test_native_cut_inside_code_closes_the_block() -> None:
    """A cut inside a code block closes it, so the note shows as text and not as code."""
    capped = answer_markdown("Intro\n\n```python\n" + "x = 1\n" * 5000)
    kept = capped.removesuffix(f"\n\n{TRUNCATED}\n")
    assert kept.endswith("\n```") and kept.count("```") == 2


@pytest.mark.parametrize("style", ["container", "attachment"])
def test_the_trace_stays_bounded_however_many_specialists_ran(style: str) -> None:
    """50 specialists with 100 long searches each still give a few trace messages within
    Slack's limits, and say how many runs were left out."""
    state = AnswerState(phase=Phase.DONE)
    for n in range(50):
        delegation = Delegation(f"agent-{n}", "t" * 1000, f"x{n}", 0.0, 1.0, "completed")
        delegation.tool_calls = [
            ToolStep("knowledge_base_search", f"c{i}", "q" * 1000, "p" * 1000, 5.0)
            for i in range(100)
        ]
        state.delegations.append(delegation)
    messages = render_trace(state, style)  # type: ignore[arg-type]
    assert 1 <= len(messages) <= MAX_TRACE_MESSAGES[style]  # type: ignore[index]
    payload = json.dumps([m.blocks or m.attachments for m in messages], ensure_ascii=False)
    assert "more specialist runs not shown" in payload
    for message in messages:
        assert len(json.dumps(message.blocks or message.attachments, ensure_ascii=False)) < 16_000
