"""Hostile model output: links that would deceive, mentions, and answers too long for Slack.

Golden tables give, for each model Markdown input, the exact Slack mrkdwn the classic path posts
and the exact ``markdown_text`` native streaming sends. The end-to-end tests run the real bot
against the stand-ins with a knowledge base whose passage *is* the hostile answer.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from bot.render import render_answer
from bot.render.answer import MAX_ANSWER_MESSAGES, TRUNCATED
from bot.render.mrkdwn import to_mrkdwn
from bot.slack.native import safe_markdown
from bot.state import MAX_TEXT_CHARS, AnswerState, Phase
from sandbox.powabase import PowabaseStandin
from sandbox.slack import SlackStandin
from tests.conftest import running_bot
from tests.e2e.answers import ask, bot_replies

ZW = "\u200b"
DM = "D0ALICE"
QUESTION = "What is the refund window?"
SLACK_TEXT_LIMIT = 4000  # where Slack (and the stand-in) answers msg_too_long

# (model Markdown, classic mrkdwn, native markdown_text)
DECEPTIVE = [
    (
        "[https://billing.powabase.ai/reset](https://evil.example/steal)",
        "https://billing.powabase.ai/reset (<https://evil.example/steal>)",
        f"[https://billing.powabase.ai/reset]{ZW}(https://evil.example/steal)",
    ),
    (
        "[billing.powabase.ai](https://evil.example/steal)",
        "billing.powabase.ai (<https://evil.example/steal>)",
        f"[billing.powabase.ai]{ZW}(https://evil.example/steal)",
    ),
    (
        "[www.powabase.ai/billing](https://evil.example)",
        "www.powabase.ai/billing (<https://evil.example>)",
        f"[www.powabase.ai/billing]{ZW}(https://evil.example)",
    ),
    (
        "[ <billing.powabase.ai>. ](https://evil.example)",
        "&lt;billing.powabase.ai&gt;. (<https://evil.example>)",
        f"[ <billing.powabase.ai>. ]{ZW}(https://evil.example)",
    ),
    (
        "[BILLING.Powabase.AI](https://evil.example)",
        "BILLING.Powabase.AI (<https://evil.example>)",
        f"[BILLING.Powabase.AI]{ZW}(https://evil.example)",
    ),
    (
        "[https://billing.powabase.ai@evil.example](https://evil.example/steal)",
        "https://billing.powabase.ai@evil.example (<https://evil.example/steal>)",
        f"[https://billing.powabase.ai@evil.example]{ZW}(https://evil.example/steal)",
    ),
    (
        "[billing.powabase.ai](https://billing.powabase.ai@evil.example/)",
        "billing.powabase.ai (<https://billing.powabase.ai@evil.example/>)",
        f"[billing.powabase.ai]{ZW}(https://billing.powabase.ai@evil.example/)",
    ),
    (  # Cyrillic "і" in the label
        "[b\u0456lling.powabase.ai](https://billing.powabase.ai/)",
        "b\u0456lling.powabase.ai (<https://billing.powabase.ai/>)",
        f"[b\u0456lling.powabase.ai]{ZW}(https://billing.powabase.ai/)",
    ),
    (  # punycode of a look-alike host as the target
        "[billing.powabase.ai](https://xn--blling-3ve.powabase.ai/)",
        "billing.powabase.ai (<https://xn--blling-3ve.powabase.ai/>)",
        f"[billing.powabase.ai]{ZW}(https://xn--blling-3ve.powabase.ai/)",
    ),
    (  # invisible characters inside the label's host
        "[billing\u200b.powabase\u00ad.ai](https://evil.example)",
        "billing\u200b.powabase\u00ad.ai (<https://evil.example>)",
        f"[billing\u200b.powabase\u00ad.ai]{ZW}(https://evil.example)",
    ),
    (
        "[billing\uff0epowabase\uff0eai](https://evil.example)",
        "billing\uff0epowabase\uff0eai (<https://evil.example>)",
        f"[billing\uff0epowabase\uff0eai]{ZW}(https://evil.example)",
    ),
    (
        "[see billing.powabase.ai now](https://evil.example)",
        "see billing.powabase.ai now (<https://evil.example>)",
        f"[see billing.powabase.ai now]{ZW}(https://evil.example)",
    ),
    (
        "[help@powabase.ai](mailto:help@evil.example)",
        "help@powabase.ai (<mailto:help@evil.example>)",
        f"[help@powabase.ai]{ZW}(mailto:help@evil.example)",
    ),
    (
        "![billing.powabase.ai](https://evil.example/x.png)",
        "billing.powabase.ai (<https://evil.example/x.png>)",
        f"![billing.powabase.ai]{ZW}(https://evil.example/x.png)",
    ),
    (  # Slack's own link syntax written by the model
        "<https://evil.example/steal|billing.powabase.ai>",
        "billing.powabase.ai (<https://evil.example/steal>)",
        f"<{ZW}https://evil.example/steal|billing.powabase.ai>",
    ),
    (
        "<https://evil.example/steal|see billing.powabase.ai>",
        "&lt;https://evil.example/steal|see billing.powabase.ai&gt;",
        f"<{ZW}https://evil.example/steal|see billing.powabase.ai>",
    ),
    (
        "[billing.powabase.ai](javascript:alert(1))",
        "[billing.powabase.ai](javascript:alert(1))",
        f"[billing.powabase.ai]{ZW}(javascript:alert(1))",
    ),
    (
        "[x](data:text/html;base64,PHNjcmlwdD4=)",
        "[x](data:text/html;base64,PHNjcmlwdD4=)",
        f"[x]{ZW}(data:text/html;base64,PHNjcmlwdD4=)",
    ),
    ("<javascript:alert(1)>", "&lt;javascript:alert(1)&gt;", f"<{ZW}javascript:alert(1)>"),
    (  # a space in an <...> target: native breaks it before the rest of the target streams in
        "[billing.powabase.ai](<https://billing.powabase.ai .evil.example>)",
        "billing.powabase.ai (<https://billing.powabase.ai%20.evil.example>)",
        f"[billing.powabase.ai]{ZW}(<https://billing.powabase.ai .evil.example>)",
    ),
    (
        "[billing.powabase.ai]\n\n[billing.powabase.ai]: https://evil.example",
        "[billing.powabase.ai]\n\n[billing.powabase.ai]: https://evil.example",
        f"[billing.powabase.ai]\n\n[billing.powabase.ai]{ZW}: https://evil.example",
    ),
]

BENIGN = [
    (
        "[reset your password](https://billing.powabase.ai/reset)",
        "<https://billing.powabase.ai/reset|reset your password>",
        "[reset your password](https://billing.powabase.ai/reset)",
    ),
    (
        "[billing.powabase.ai/reset](https://Billing.Powabase.AI./reset)",
        "<https://Billing.Powabase.AI./reset|billing.powabase.ai/reset>",
        "[billing.powabase.ai/reset](https://Billing.Powabase.AI./reset)",
    ),
    (
        "[www.powabase.ai](https://powabase.ai/)",
        "<https://powabase.ai/|www.powabase.ai>",
        "[www.powabase.ai](https://powabase.ai/)",
    ),
    (
        "[https://billing.powabase.ai/reset](https://billing.powabase.ai/reset)",
        "<https://billing.powabase.ai/reset>",
        "[https://billing.powabase.ai/reset](https://billing.powabase.ai/reset)",
    ),
    (
        "[bücher.de](https://xn--bcher-kva.de/)",
        "<https://xn--bcher-kva.de/|bücher.de>",
        "[bücher.de](https://xn--bcher-kva.de/)",
    ),
    (
        "[help@powabase.ai](mailto:help@powabase.ai)",
        "<mailto:help@powabase.ai|help@powabase.ai>",
        "[help@powabase.ai](mailto:help@powabase.ai)",
    ),
    (
        "<https://billing.powabase.ai/reset|reset>",
        "<https://billing.powabase.ai/reset|reset>",
        "<https://billing.powabase.ai/reset|reset>",
    ),
    (
        "<https://billing.powabase.ai/reset>",
        "<https://billing.powabase.ai/reset>",
        "<https://billing.powabase.ai/reset>",
    ),
    (
        "[Section 2.1](https://docs.powabase.ai/guide#2.1)",
        "<https://docs.powabase.ai/guide#2.1|Section 2.1>",
        "[Section 2.1](https://docs.powabase.ai/guide#2.1)",
    ),
]

MENTIONS = [
    (
        "[@here](https://powabase.ai)",
        f"<https://powabase.ai|@{ZW}here>",
        f"[@{ZW}here](https://powabase.ai)",
    ),
    (
        "<https://evil.example/steal|@channel>",
        f"<https://evil.example/steal|@{ZW}channel>",
        f"<https://evil.example/steal|@{ZW}channel>",
    ),
    (
        "<!channel> <!here> @channel @Everyone",
        f"&lt;!channel&gt; &lt;!here&gt; @{ZW}channel @{ZW}Everyone",
        f"<{ZW}!channel> <{ZW}!here> @{ZW}channel @{ZW}Everyone",
    ),
    (
        "<!subteam^S1|@support> <@U42> <#C1|general>",
        "&lt;!subteam^S1|@support&gt; &lt;@U42&gt; &lt;#C1|general&gt;",
        f"<{ZW}!subteam^S1|@support> <{ZW}@U42> <{ZW}#C1|general>",
    ),
]

GOLDEN = DECEPTIVE + BENIGN + MENTIONS


@pytest.mark.parametrize(("markdown", "mrkdwn", "native"), GOLDEN)
def test_classic_mrkdwn_golden(markdown: str, mrkdwn: str, native: str) -> None:
    """The classic path posts exactly this mrkdwn: no link hides a target its label belies."""
    assert to_mrkdwn(markdown) == mrkdwn
    (message,) = render_answer(AnswerState(text=markdown, phase=Phase.DONE))
    assert message.text == mrkdwn


@pytest.mark.parametrize(("markdown", "mrkdwn", "native"), GOLDEN)
def test_native_markdown_golden(markdown: str, mrkdwn: str, native: str) -> None:
    """Native streaming sends exactly this Markdown: deceptive links broken, benign ones kept."""
    assert safe_markdown(markdown) == native


@pytest.mark.parametrize(("markdown", "mrkdwn", "native"), DECEPTIVE)
def test_no_deceptive_case_leaves_a_hidden_link(markdown: str, mrkdwn: str, native: str) -> None:
    """No deceptive case becomes a labelled link in classic mrkdwn: every target is visible."""
    assert not re.search(r"<(?:https?|mailto):[^>|]*\|", mrkdwn)


# --- end to end ---------------------------------------------------------------------------------


def seed_answer(powabase: Any, tmp_path: Path, body: str) -> None:
    """Give the stand-in an orchestration whose billing passage (so its answer) holds ``body``."""
    domain = tmp_path / "seed" / "billing"
    domain.mkdir(parents=True)
    (domain / "guide.md").write_text(
        f"# Billing guide\n\n## Refund window\n\nThe refund window applies.\n\n{body}\n",
        encoding="utf-8",
    )
    powabase.orchestration_id = powabase.seed_from(tmp_path / "seed")
    powabase.context.delta_delay = 0.0


def is_trace(message: Any) -> bool:
    return bool(message.attachments) or any(
        b.get("type") == "container" for b in message.blocks or []
    )


HOSTILE_BODY = (
    "Reset it at [https://billing.powabase.ai/reset](https://evil.example/steal) or "
    "<https://evil.example/steal|billing.powabase.ai> today, @channel. "
    "Or [reset your password](https://billing.powabase.ai/reset)."
)


async def test_deceptive_links_reach_slack_only_with_their_target_shown(
    slack: SlackStandin, powabase: PowabaseStandin, tmp_path: Path
) -> None:
    """Over real sockets, a hostile answer is posted with every deceptive link's target visible,
    the benign link kept, and the broadcast defused."""
    seed_answer(powabase, tmp_path, HOSTILE_BODY)
    async with running_bot(slack, powabase, tmp_path) as bot:
        msg = await ask(slack, bot, DM, QUESTION)
    answer = powabase.runs[-1].answer
    assert HOSTILE_BODY in answer
    text = bot_replies(slack, DM, msg.ts)[0].text
    assert text == render_answer(AnswerState(text=answer, phase=Phase.DONE))[0].text
    assert (
        "Reset it at https://billing.powabase.ai/reset (<https://evil.example/steal>) or "
        "billing.powabase.ai (<https://evil.example/steal>) today, @\u200bchannel. "
        "Or <https://billing.powabase.ai/reset|reset your password>."
    ) in text
    assert "<https://evil.example/steal|" not in text


async def test_native_streaming_never_shows_a_deceptive_link(
    slack: SlackStandin, powabase: PowabaseStandin, tmp_path: Path
) -> None:
    """Over real sockets with native streaming, every append keeps the deceptive links broken,
    and the message ends as the guarded Markdown of the whole answer."""
    seed_answer(powabase, tmp_path, HOSTILE_BODY)
    async with running_bot(slack, powabase, tmp_path, POWABOT_NATIVE_STREAMING=True) as bot:
        msg = await ask(slack, bot, DM, QUESTION)
    assert slack.calls_to("chat.startStream") and not slack.calls_to("chat.update")
    (reply,) = [m for m in bot_replies(slack, DM, msg.ts) if not is_trace(m)]
    answer = powabase.runs[-1].answer
    shown = reply.text.split("\n\n**Sources:**")[0]  # the sources line follows
    assert shown.rstrip() == safe_markdown(answer).rstrip()
    assert f"[https://billing.powabase.ai/reset]{ZW}(https://evil.example/steal)" in reply.text
    assert f"<{ZW}https://evil.example/steal|billing.powabase.ai>" in reply.text
    for _, shown in reply.edits:
        assert "](https://evil.example" not in shown and "<https://evil.example" not in shown


def huge_body(chars: int) -> str:
    paragraphs = []
    total = n = 0
    while total < chars:
        n += 1
        paragraph = f"Part {n}: the refund window rules for this case. " * 8
        paragraphs.append(paragraph.strip())
        total += len(paragraph) + 2
    return "\n\n".join(paragraphs)


def the_full_answer_file(slack: SlackStandin, message: Any) -> str:
    """The text of the one file shared with `message` (a file share in the thread)."""
    (shared,) = message.files
    stored = slack.files[shared["id"]]
    assert stored.length == len(stored.content or b"") and stored.filename.endswith(".md")
    return stored.text


async def test_a_huge_answer_is_at_most_five_messages_and_says_it_was_cut(
    slack: SlackStandin, powabase: PowabaseStandin, tmp_path: Path
) -> None:
    """A 300,000-character answer reaches the thread as at most 5 messages, each within Slack's
    limit, exactly the answer's text up to the cut, then the note; the full answer follows as
    a Markdown file (then the trace)."""
    seed_answer(powabase, tmp_path, huge_body(301_000))
    async with running_bot(slack, powabase, tmp_path) as bot:
        msg = await ask(slack, bot, DM, QUESTION)
    answer = powabase.runs[-1].answer
    assert len(answer) >= 300_000
    replies = bot_replies(slack, DM, msg.ts)
    texts = [m.text for m in replies if not is_trace(m) and not m.files]
    assert len(texts) == MAX_ANSWER_MESSAGES
    assert len(replies) - len(texts) == 2 and is_trace(replies[-1])
    assert the_full_answer_file(slack, replies[-2]) == answer[:MAX_TEXT_CHARS]  # what is kept
    assert all(len(text) <= SLACK_TEXT_LIMIT for text in texts)
    assert texts[-1].endswith(TRUNCATED)
    expected = render_answer(AnswerState(text=answer, phase=Phase.DONE))
    assert texts == [m.text for m in expected]


async def test_a_huge_native_answer_is_capped_too(
    slack: SlackStandin, powabase: PowabaseStandin, tmp_path: Path
) -> None:
    """With native streaming, a 300,000-character answer stops at the cap with the same note,
    and the full answer follows as a file."""
    seed_answer(powabase, tmp_path, huge_body(301_000))
    async with running_bot(slack, powabase, tmp_path, POWABOT_NATIVE_STREAMING=True) as bot:
        msg = await ask(slack, bot, DM, QUESTION)
    (reply, shared) = [m for m in bot_replies(slack, DM, msg.ts) if not is_trace(m)]
    answer = powabase.runs[-1].answer
    assert the_full_answer_file(slack, shared) == answer[:MAX_TEXT_CHARS]
    shown = reply.text.split("\n\n**Sources:**")[0]  # the sources line follows
    assert shown.rstrip() == safe_markdown(answer).rstrip()
    assert shown.rstrip().endswith(TRUNCATED) and len(reply.text) < 20_000
    assert len(slack.calls_to("chat.appendStream")) < 20
