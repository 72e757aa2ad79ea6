"""Keep model-written text from pinging anyone or injecting Slack markup.

Two layers, both pure:

* :func:`escape` is applied to every piece of model text as it is placed into mrkdwn. It escapes
  ``&``, ``<`` and ``>`` (Slack's three control characters), which turns ``<!channel>``,
  ``<!here>``, ``<!subteam^…>``, ``<@U…>`` and ``<#C…>`` into harmless visible text, and it puts a
  ZERO WIDTH SPACE (U+200B) after the ``@`` of the bare words ``@channel``, ``@here`` and
  ``@everyone`` (any case), so Slack cannot read them as broadcasts even with ``link_names``.
* :func:`defuse` runs over every finished mrkdwn string we send. Our own markup never starts a
  ``<`` with ``!``, ``@`` or ``#``, so anything of that shape is a leak and gets broken up too.

:func:`plain` is the variant for ``plain_text`` fields and status lines, where HTML-style escaping
would show up literally: it breaks mention syntax with a zero-width space instead.
"""

from __future__ import annotations

import re

ZWSP = "\u200b"

_BROADCAST = re.compile(r"(?<!\w)@(?=(?:channel|here|everyone)(?!\w))", re.IGNORECASE)
_MENTION_OPEN = re.compile(r"<(?=[!@#])")


def neutralise_broadcasts(text: str) -> str:
    """``@here`` → ``@\u200bhere`` (also ``@channel``, ``@everyone``, any case); idempotent."""
    return _BROADCAST.sub("@" + ZWSP, text)


def escape(text: str) -> str:
    """Model text → mrkdwn-safe text: Slack's three escapes plus broadcast-word neutralising."""
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return neutralise_broadcasts(escaped)


def escape_url(url: str) -> str:
    """A URL placed inside ``<url|label>``: escape ``&``, and keep ``|``/``<``/``>`` out of it."""
    return url.replace("&", "&amp;").replace("<", "%3C").replace(">", "%3E").replace("|", "%7C")


def defuse(mrkdwn: str) -> str:
    """Last line of defence over finished mrkdwn: no ``<!…>``, ``<@…>``, ``<#…>``, no broadcasts."""
    return neutralise_broadcasts(_MENTION_OPEN.sub("&lt;", mrkdwn))


def plain(text: str) -> str:
    """Model text for ``plain_text`` / status strings: break mention syntax without escaping."""
    return neutralise_broadcasts(_MENTION_OPEN.sub("<" + ZWSP, text))
