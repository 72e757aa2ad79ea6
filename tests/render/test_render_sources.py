"""An answer's sources as Slack shows them: classic mrkdwn, native Markdown, task cards, a block."""

from __future__ import annotations

import re

import pytest

from bot.powabase.sources import Source
from bot.render.sources import (
    CONTEXT_ELEMENTS,
    CONTEXT_TEXT_CHARS,
    sources_block,
    sources_markdown,
    sources_mrkdwn,
    task_sources,
)

REFUNDS = "https://docs.lumora.example/billing/refunds-faq"
SOURCES = [
    Source("Refunds FAQ", "billing-kb", REFUNDS),
    Source("Feature matrix", "product-kb", None),
    Source("Technical knowledge base", None, None),
]
HOSTILE = [
    "<!channel> refunds",
    "@here read this",
    "<@U123> and <#C42>",
    "<https://evil.example|Refunds FAQ>",
    "[Refunds FAQ](https://evil.example)",
    "billing.powabase.ai",
    "*bold* _x_ `code` ~s~ & <b>",
    "[Click](javascript:alert(1)) <javascript:alert(1)|Click>",
]


def test_golden_classic_line() -> None:
    """Classic messages get one mrkdwn line: linked titles, KB names, titles without links."""
    assert sources_mrkdwn(SOURCES) == (
        f"*Sources:* <{REFUNDS}|Refunds FAQ> (Billing KB) · Feature matrix (Product KB)"
        " · Technical knowledge base"
    )


def test_golden_native_markdown() -> None:
    """Native streaming gets the same line as Markdown links."""
    assert sources_markdown(SOURCES) == (
        f"**Sources:** [Refunds FAQ]({REFUNDS}) (Billing KB) · Feature matrix (Product KB)"
        " · Technical knowledge base"
    )


def test_golden_task_card_sources() -> None:
    """Task cards get only the sources that have a link, as url entries."""
    assert task_sources(SOURCES) == [{"type": "url", "url": REFUNDS, "text": "Refunds FAQ"}]


def test_golden_context_block() -> None:
    """The block form is one context block holding the classic line."""
    assert sources_block(SOURCES) == {
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": sources_mrkdwn(SOURCES)}],
    }


def test_no_sources_render_nothing() -> None:
    """An answer without sources shows no "Sources:" line, card entry or block."""
    assert sources_mrkdwn([]) == sources_markdown([]) == ""
    assert task_sources([]) == [] and sources_block([]) is None
    assert sources_mrkdwn([Source(" \n", None, None)]) == ""


@pytest.mark.parametrize("title", HOSTILE)
def test_hostile_titles_cannot_ping_or_inject_classic_markup(title: str) -> None:
    """A title's mentions, broadcasts and link syntax show as text in the classic line."""
    line = sources_mrkdwn([Source(title, "billing-kb", REFUNDS)])
    assert not re.search(r"<[!@#]", line) and not re.search(r"(?<!\w)@(here|channel)\b", line)
    assert line.count("<") == 1 and line.count(f"<{REFUNDS}") == 1  # the one real link
    assert "<https://evil" not in line


@pytest.mark.parametrize("title", HOSTILE)
def test_hostile_titles_cannot_ping_or_inject_native_markup(title: str) -> None:
    """In Markdown a title's brackets, mentions and tags are escaped or broken, never a link."""
    text = sources_markdown([Source(title, "billing-kb", REFUNDS)])
    assert not re.search(r"<[!@#]", text) and not re.search(r"(?<!\w)@(here|channel)\b", text)
    assert "](https://evil.example)" not in text.replace("\\]", "")
    assert "<https://evil" not in text and text.count(REFUNDS) == 1


def test_hostile_titles_in_task_cards_are_plain_text() -> None:
    """Task card texts keep the title readable but break mention syntax."""
    texts = [s["text"] for s in task_sources([Source(t, None, REFUNDS) for t in HOSTILE])]
    assert len(texts) == len(HOSTILE)
    assert not any(re.search(r"<[!@#]", t) or re.search(r"@(here|channel)\b", t) for t in texts)


def test_a_title_naming_another_host_shows_the_link_beside_it() -> None:
    """A title that reads as a different host than its link never hides the link behind it."""
    deceptive = [Source("billing.powabase.ai", None, "https://evil.example/x")]
    assert sources_mrkdwn(deceptive) == (
        "*Sources:* billing.powabase.ai (<https://evil.example/x>)"
    )
    assert sources_markdown(deceptive) == (
        "**Sources:** billing.powabase.ai (<https://evil.example/x>)"
    )


def test_links_are_escaped_for_their_markup() -> None:
    """``&``, ``|`` and parentheses in a URL cannot end or split the link."""
    source = [Source("Guide", None, "https://d.example/a_(b)?x=1&y=|2")]
    assert sources_mrkdwn(source) == "*Sources:* <https://d.example/a_(b)?x=1&amp;y=%7C2|Guide>"
    assert sources_markdown(source) == "**Sources:** [Guide](https://d.example/a_%28b%29?x=1&y=|2)"


def test_a_source_made_by_hand_with_a_bad_url_is_not_linked() -> None:
    """Even a Source built elsewhere with a javascript: URL renders as plain text."""
    source = [Source("Click", None, "javascript:alert(1)")]
    assert sources_mrkdwn(source) == "*Sources:* Click"
    assert sources_markdown(source) == "**Sources:** Click"
    assert task_sources(source) == []


def test_long_sources_split_the_block_within_slack_limits() -> None:
    """Five long-linked sources overflow one element: the block splits, each element in bounds."""
    long = [
        Source("T" * 120 + str(n), "billing-kb", "https://d.example/" + "p" * 480 + str(n))
        for n in range(5)
    ]
    block = sources_block(long)
    assert block is not None and block["type"] == "context"
    elements = block["elements"]
    assert len(elements) == 6 <= CONTEXT_ELEMENTS and elements[0]["text"] == "*Sources:*"
    assert all(len(e["text"]) <= CONTEXT_TEXT_CHARS for e in elements)
