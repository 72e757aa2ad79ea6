"""Splitting long answers: size limits, code fences, graphemes, and streaming stability."""

from __future__ import annotations

import random
from itertools import pairwise

import pytest

from bot.render import render_answer
from bot.render.mrkdwn import to_mrkdwn
from bot.render.split import Piece, is_grapheme_boundary, split_markdown
from bot.state import AnswerState

FAMILY = "👨\u200d👩\u200d👧\u200d👦"
FLAG = "🇩🇪"
THUMB = "👍🏽"
KEYCAP = "1\ufe0f\u20e3"
ACCENT = "e\u0301"


def chunks_of(source: str, budget: int) -> tuple[list[Piece], list[str]]:
    pieces = split_markdown(source, budget, to_mrkdwn)
    return pieces, [to_mrkdwn(p.markdown(source)) for p in pieces]


def assert_covers(source: str, pieces: list[Piece]) -> None:
    assert pieces[0].start == 0
    assert pieces[-1].end == len(source)
    for before, after in pairwise(pieces):
        assert before.end == after.start
    assert "".join(source[p.start : p.end] for p in pieces) == source


def test_short_answer_is_one_piece() -> None:
    """An answer under the budget is sent whole."""
    pieces, chunks = chunks_of("Hello **there**.", 200)
    assert pieces == [Piece(0, 16)]
    assert chunks == ["Hello *there*."]


def test_splits_at_paragraph_boundaries() -> None:
    """Paragraphs are packed together and a message ends where a paragraph ends."""
    source = "\n\n".join(f"Paragraph {n}: " + "lorem ipsum " * 8 for n in range(1, 5))
    pieces, chunks = chunks_of(source, 260)
    assert_covers(source, pieces)
    assert chunks == [
        "Paragraph 1: "
        + "lorem ipsum " * 7
        + "lorem ipsum\n\nParagraph 2: "
        + "lorem ipsum " * 7
        + "lorem ipsum",
        "Paragraph 3: "
        + "lorem ipsum " * 7
        + "lorem ipsum\n\nParagraph 4: "
        + "lorem ipsum " * 7
        + "lorem ipsum",
    ]


def test_code_block_that_fits_is_never_cut() -> None:
    """A code block that fits a message on its own moves to the next message whole."""
    code = "```python\n" + "".join(f"total += {n}\n" for n in range(12)) + "```"
    source = "Intro " + "text " * 30 + "\n\n" + code + "\n\nOutro."
    pieces, chunks = chunks_of(source, 250)
    assert_covers(source, pieces)
    assert chunks[0] == "Intro " + "text " * 29 + "text"
    assert chunks[1].startswith("```\ntotal += 0\n")
    assert "total += 11\n```" in chunks[1]
    assert all(p.reopen == "" and p.close == "" for p in pieces)


def test_long_code_block_is_closed_and_reopened_with_its_language() -> None:
    """A code block longer than a message is cut at line ends, each part a balanced block."""
    lines = [f"print('row {n:03d}')  # a fairly long comment to fill space" for n in range(80)]
    source = "Here you go:\n\n```python\n" + "\n".join(lines) + "\n```\n\nDone."
    budget = 600
    pieces, chunks = chunks_of(source, budget)
    assert_covers(source, pieces)
    assert len(chunks) >= 6
    for chunk in chunks:
        assert len(chunk) <= budget
        assert chunk.count("```") % 2 == 0
    inner = [p for p in pieces if p.reopen]
    assert inner and all(p.reopen == "```python\n" for p in inner)
    assert all(p.close == "```" for p in pieces[1:-1])
    shown = "\n".join(chunks)
    positions = [shown.index(f"print('row {n:03d}')") for n in range(80)]
    assert positions == sorted(positions)
    assert chunks[-1].endswith("Done.")


def test_single_long_line_splits_at_spaces() -> None:
    """A paragraph without line breaks is cut between words, never inside one."""
    source = " ".join(f"word{n:03d}" for n in range(300))
    pieces, chunks = chunks_of(source, 400)
    assert_covers(source, pieces)
    assert all(len(c) <= 400 for c in chunks)
    assert all(source[p.end - 1] == " " for p in pieces[:-1])


@pytest.mark.parametrize("cluster", [FAMILY, FLAG, THUMB, KEYCAP, ACCENT])
def test_graphemes_survive_hard_cuts(cluster: str) -> None:
    """With no space to cut at, cuts fall between whole emoji / flags / accented letters."""
    source = cluster * 400
    pieces, chunks = chunks_of(source, 300)
    assert_covers(source, pieces)
    assert len(pieces) > 1
    for piece in pieces:
        assert (piece.end - piece.start) % len(cluster) == 0
    assert all(len(c) <= 300 for c in chunks)


def test_grapheme_boundary_rules() -> None:
    """The boundary check keeps ZWJ sequences, flag pairs, modifiers and marks together."""
    assert not is_grapheme_boundary(FAMILY, 1)  # before a ZWJ
    assert not is_grapheme_boundary(FAMILY, 2)  # after a ZWJ
    assert not is_grapheme_boundary(FLAG + FLAG, 1)
    assert is_grapheme_boundary(FLAG + FLAG, 2)
    assert not is_grapheme_boundary(FLAG + FLAG, 3)
    assert not is_grapheme_boundary(THUMB, 1)
    assert not is_grapheme_boundary(ACCENT, 1)
    assert not is_grapheme_boundary("a\r\nb", 2)
    assert is_grapheme_boundary("ab", 1)


def test_budget_too_small_is_refused() -> None:
    """A nonsensical budget is a clear error, not an endless loop."""
    with pytest.raises(ValueError, match="budget"):
        split_markdown("text", 10)


def _long_answer() -> str:
    rng = random.Random(7)
    words = "refund annual plan billing invoice **bold** _note_ `code` & < > @here".split()
    parts: list[str] = []
    for n in range(14):
        kind = n % 4
        if kind == 0:
            parts.append(" ".join(rng.choice(words) for _ in range(60)))
        elif kind == 1:
            parts.append("\n".join(f"- item {n}.{i} " + rng.choice(words) for i in range(8)))
        elif kind == 2:
            body = "\n".join(f"x_{n}_{i} = compute({i})  # step {i}" for i in range(25))
            parts.append(f"```python\n{body}\n```")
        else:
            parts.append(f"## Section {n}\n\n" + " ".join(rng.choice(words) for _ in range(40)))
    return "\n\n".join(parts)


def test_streaming_split_is_stable() -> None:
    """While text streams in, messages before the last never change and never disappear."""
    from bot.powabase.events import ContentDeltaEvent

    text = _long_answer()
    state = AnswerState(started_at=0.0)
    rng = random.Random(11)
    previous: list[str] = []
    pos = 0
    now = 0.0
    seen_counts = set()
    while pos < len(text):
        step = rng.randint(1, 24)
        now += 0.05
        state.apply(ContentDeltaEvent(event="content_delta", delta=text[pos : pos + step]), now)
        pos += step
        current = [m.text for m in render_answer(state, max_chars=1200)]
        assert len(current) >= len(previous)
        assert current[: len(previous) - 1] == previous[:-1]
        assert all(len(t) <= 1200 for t in current)
        seen_counts.add(len(current))
        previous = current
    assert max(seen_counts) >= 5


def test_stable_when_closing_markup_shrinks_the_tail() -> None:
    """Closing `**…**`, `<url>` or `&amp;` shortens the rendered tail; the split still holds."""
    unit = "Some **bold** and <https://ex.com/a> if a < b & c > d, AT&amp;T `x` ~~old~~. "
    text = "\n\n".join(unit * 3 for _ in range(6))
    for budget in range(300, 400, 20):
        previous: list[str] = []
        for end in range(1, len(text) + 1):
            current = [
                to_mrkdwn(p.markdown(text[:end]))
                for p in split_markdown(text[:end], budget, to_mrkdwn)
            ]
            assert len(current) >= len(previous), (budget, end)
            assert current[: len(previous) - 1] == previous[:-1], (budget, end)
            previous = current
