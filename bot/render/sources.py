"""The documents an answer rests on, as Slack shows them (pure: sources in, text or blocks out).

One line, in the order the sources came, e.g. (classic mrkdwn)::

    *Sources:* <https://docs.lumora.example/billing/refunds-faq|Refunds FAQ> (Billing KB) · \
Feature matrix (Product KB)

A source without a URL is its title; one whose title names another host than its URL (the
rule of :mod:`bot.render.links`) shows the URL beside the title instead of hiding it behind it.
Titles are model/upstream text: escaped for mrkdwn (mentions and ``<!channel>`` become visible
text), backslash-escaped for Markdown, mention syntax broken in plain text. No sources → nothing
(an empty string, an empty list, no block).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bot.powabase.sources import KB_CHARS, TITLE_CHARS, Source, clean_text, kb_words
from bot.render.links import deceives, guard_markdown, is_linkable
from bot.render.safety import defuse, escape, escape_url, plain

LABEL = "Sources:"
SEPARATOR = " · "
CONTEXT_TEXT_CHARS = 3000  # one context block element's text
CONTEXT_ELEMENTS = 10
TASK_SOURCE_TEXT = 150  # a task card source's text (Slack documents no limit: stay short)
# What could turn a title into Markdown markup (emphasis, code, a link, an HTML tag) in line.
_MARKDOWN_SPECIAL = frozenset("\\`*_~[]<>")


def kb_label(knowledge_base: str) -> str:
    """ "billing-kb" → "Billing KB" (plain text)."""
    return f"{kb_words(knowledge_base)} KB"


def sources_mrkdwn(sources: Sequence[Source]) -> str:
    """``*Sources:* a · b`` in Slack mrkdwn, or "" when there are none."""
    items = [_mrkdwn_item(s) for s in sources]
    items = [i for i in items if i]
    return defuse(f"*{LABEL}* " + SEPARATOR.join(items)) if items else ""


def sources_markdown(sources: Sequence[Source]) -> str:
    """``**Sources:** a · b`` in Markdown (native streaming's ``markdown_text``), or ""."""
    items = [_markdown_item(s) for s in sources]
    items = [i for i in items if i]
    if not items:
        return ""
    return plain(guard_markdown(f"**{LABEL}** " + SEPARATOR.join(items)))


def task_sources(sources: Sequence[Source]) -> list[dict[str, str]]:
    """The sources with a URL, as a task card's ``sources``: ``{"type": "url", "url", "text"}``."""
    out: list[dict[str, str]] = []
    for source in sources:
        title = _title(source)
        if source.url and title and is_linkable(source.url):
            text = clean_text(title, TASK_SOURCE_TEXT)
            out.append({"type": "url", "url": source.url, "text": plain(text)})
    return out


def sources_block(sources: Sequence[Source]) -> dict[str, Any] | None:
    """A Block Kit context block with the sources line (one element when it fits in one, else
    the label and one element per source), or None when there are none."""
    line = sources_mrkdwn(sources)
    if not line:
        return None
    if len(line) <= CONTEXT_TEXT_CHARS:
        texts = [line]
    else:
        items = [i for i in (_mrkdwn_item(s) for s in sources) if i]
        texts = [f"*{LABEL}*", *items][:CONTEXT_ELEMENTS]
        texts = [defuse(t)[:CONTEXT_TEXT_CHARS] for t in texts]
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": t} for t in texts]}


def _title(source: Source) -> str:
    return clean_text(source.title, TITLE_CHARS)


def _kb_suffix(source: Source) -> str:
    kb = clean_text(source.knowledge_base, KB_CHARS) if source.knowledge_base else ""
    return f" ({kb_label(kb)})" if kb else ""


def _mrkdwn_item(source: Source) -> str:
    title = _title(source)
    if not title:
        return ""
    suffix = escape(_kb_suffix(source))
    url = source.url
    if not url or not is_linkable(url) or not url.lower().startswith(("http://", "https://")):
        return escape(title) + suffix
    if deceives(title, url):
        return f"{escape(title)} (<{escape_url(url)}>){suffix}"
    return f"<{escape_url(url)}|{escape(title)}>{suffix}"


def _markdown_item(source: Source) -> str:
    title = _title(source)
    if not title:
        return ""
    suffix = _markdown_text(_kb_suffix(source))
    url = source.url
    if not url or not url.lower().startswith(("http://", "https://")):
        return _markdown_text(title) + suffix
    target = _markdown_url(url)
    if deceives(title, url):
        return f"{_markdown_text(title)} (<{target}>){suffix}"
    return f"[{_markdown_text(title)}]({target}){suffix}"


def _markdown_text(text: str) -> str:
    """Plain text that Markdown shows as written: its special characters backslash-escaped."""
    return "".join("\\" + ch if ch in _MARKDOWN_SPECIAL else ch for ch in text)


def _markdown_url(url: str) -> str:
    """A URL as a Markdown link target: the characters that would end or break it encoded."""
    for char, code in (("(", "%28"), (")", "%29"), ("<", "%3C"), (">", "%3E"), (" ", "%20")):
        url = url.replace(char, code)
    return url
