"""Markdown → Slack mrkdwn, one construct per case, with literal expected output."""

from __future__ import annotations

import pytest

from bot.render.mrkdwn import to_mrkdwn
from bot.render.safety import defuse, plain

ZW = "\u200b"


@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        ("# Refunds", "*Refunds*"),
        ("## The **annual** plan", "*The annual plan*"),
        ("Setext\n======", "*Setext*"),
        ("**bold** and __bold__", "*bold* and *bold*"),
        ("*italic* and _italic_", "_italic_ and _italic_"),
        ("***both***", "_*both*_"),
        ("~~gone~~", "~gone~"),
        ("run `pip install x`", "run `pip install x`"),
        ("```python\nprint('hi')\n```", "```\nprint('hi')\n```"),
        ("    indented = True", "```\nindented = True\n```"),
        ("[the policy](https://ex.com/r?a=1&b=2)", "<https://ex.com/r?a=1&amp;b=2|the policy>"),
        ("[**bold** label](https://ex.com)", "<https://ex.com|bold label>"),
        ("<https://ex.com/a>", "<https://ex.com/a>"),
        ("<help@ex.com>", "<mailto:help@ex.com>"),
        ("see https://ex.com/docs now", "see https://ex.com/docs now"),
        ("[docs](/docs/refunds)", "docs (/docs/refunds)"),
        ("![logo](https://ex.com/logo.png)", "<https://ex.com/logo.png|logo>"),
        ("- one\n- two\n  - nested\n    - deeper", "• one\n• two\n    ◦ nested\n        ▪ deeper"),
        ("3. third\n4. fourth", "3. third\n4. fourth"),
        ("- item\n  continued", "• item\n  continued"),
        ("> quoted\n> more\n\n> > nested", "> quoted\n> more\n\n> > nested"),
        ("---", "────────────"),
        ("line one\nline two", "line one\nline two"),
        ("a < b && c > d", "a &lt; b &amp;&amp; c &gt; d"),
        ("`x<y>`", "`x&lt;y&gt;`"),
        ("<div>hi</div>", "&lt;div&gt;hi&lt;/div&gt;"),
        ("text <b>bold?</b>", "text &lt;b&gt;bold?&lt;/b&gt;"),
        ("AT&amp;T", "AT&amp;T"),
        ("[ref]\n\n[ref]: https://ex.com", "[ref]\n\n[ref]: https://ex.com"),
        ("```\nuse ``` inside\n```", f"```\nuse ``{ZW}` inside\n```"),
    ],
)
def test_construct_converts(markdown: str, expected: str) -> None:
    """Each Markdown construct the model uses comes out as the mrkdwn Slack renders."""
    assert to_mrkdwn(markdown) == expected


def test_table_becomes_aligned_monospace_block() -> None:
    """A GFM table is shown as an aligned code block (Slack has no tables), cells escaped."""
    markdown = "| Plan | Refund |\n|---|:-:|\n| Annual & co | 30 days |\n| Monthly | `none` |"
    assert to_mrkdwn(markdown) == (
        "```\n"
        "Plan        | Refund\n"
        "------------+--------\n"
        "Annual &amp; co | 30 days\n"
        "Monthly     | none\n"
        "```"
    )


def test_table_with_long_headers_stays_aligned() -> None:
    """Headers and cells of everyday length (a few words) line up with their separator."""
    markdown = (
        "| Plan and billing period | Full refund if requested within |\n|---|---|\n"
        "| Pro, annual | 30 days |"
    )
    lines = to_mrkdwn(markdown).splitlines()[1:-1]
    assert [line.index("|") for line in lines if "|" in line] == [24, 24]
    assert lines[1].index("+") == 24


def test_mixed_document() -> None:
    """Blocks are separated by one blank line and keep their order."""
    markdown = (
        "# Answer\n\nYou can get a **refund**.\n\n1. Open *Billing*\n2. Click ~~Cancel~~ Refund"
    )
    assert to_mrkdwn(markdown) == (
        "*Answer*\n\nYou can get a *refund*.\n\n1. Open _Billing_\n2. Click ~Cancel~ Refund"
    )


@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        ("<!channel> <!here> <!everyone>", "&lt;!channel&gt; &lt;!here&gt; &lt;!everyone&gt;"),
        ("<!subteam^S123|@support>", "&lt;!subteam^S123|@support&gt;"),
        ("hi <@U123ABC> in <#C42|general>", "hi &lt;@U123ABC&gt; in &lt;#C42|general&gt;"),
        ("@channel @HERE and @everyone!", f"@{ZW}channel @{ZW}HERE and @{ZW}everyone!"),
        ("`@here <!here>`", f"`@{ZW}here &lt;!here&gt;`"),
        ("```\n@channel\n```", f"```\n@{ZW}channel\n```"),
        ("[@here](https://ex.com)", f"<https://ex.com|@{ZW}here>"),
        ("[ping](!channel)", "ping (!channel)"),
        ("mail me@here.com or @heretic", "mail me@here.com or @heretic"),
    ],
)
def test_model_text_can_never_mention(markdown: str, expected: str) -> None:
    """Mass mentions, user/channel/group mentions and broadcast words in model text are inert."""
    assert to_mrkdwn(markdown) == expected


def test_defuse_breaks_any_leaked_mention_markup() -> None:
    """The final pass breaks mention syntax even if a bug let raw `<!` or `<@` through."""
    assert defuse("ok <https://ex.com|x> <!here> <@U1> <#C1> @channel") == (
        f"ok <https://ex.com|x> &lt;!here> &lt;@U1> &lt;#C1> @{ZW}channel"
    )


def test_plain_variant_breaks_mentions_without_escaping() -> None:
    """Plain-text fields keep `&` readable but still cannot mention anyone."""
    assert plain("Q&A <!here> @everyone") == f"Q&A <{ZW}!here> @{ZW}everyone"
