"""End to end over real sockets: real Bolt + slack_sdk against the Slack stand-in, real httpx
against the Powabase stand-in. What is asserted is what a Slack user would see."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from bot.service import Powabot
from tests.conftest import bot_settings
from tests.e2e.answers import ALICE, bot_replies

BOB = "U0BOB"
DM = "D0ALICE"
SUPPORT = "C0SUPPORT"


async def ask_and_wait(slack: Any, bot: Powabot, n: int = 1, **kwargs: Any) -> Any:
    before = bot.answerer.finished
    msg = await slack.user_says(**kwargs)
    await slack.wait_for(lambda: bot.answerer.finished >= before + n, timeout=20)
    return msg


def is_trace(message: Any) -> bool:
    blocks = message.blocks or []
    return any(b.get("type") == "container" for b in blocks) or bool(message.attachments)


async def test_dm_is_answered_in_a_thread_with_progressive_edits(
    slack: Any, powabase: Any, bot: Powabot
) -> None:
    """A DM gets a status at once, its first words as a post, edits as text streams, and a
    final answer in its thread."""
    powabase.context.delta_delay = 0.02  # an answer that takes about a second to stream
    msg = await ask_and_wait(
        slack, bot, user=ALICE, text="What is the refund window for an annual Pro plan?", channel=DM
    )
    replies = bot_replies(slack, DM, msg.ts)
    assert replies, "the user saw no reply"
    answer = replies[0]
    run = powabase.runs[-1]
    assert run.delegated_to == "billing-agent"
    # the thread's status said something first, before any answer text existed
    first_status = next(
        c for c in slack.calls_to("assistant.threads.setStatus") if c.args["thread_ts"] == msg.ts
    )
    first_post = next(
        c for c in slack.calls_to("chat.postMessage") if c.args["thread_ts"] == msg.ts
    )
    assert first_status.t < first_post.t and first_status.args["loading_messages"][0]
    # the first post carried the first words of the answer
    first_word = next(w for w in run.answer.split() if w.isalpha())
    assert first_word in first_post.args["text"]
    # edited progressively, paced by time: more than one edit, far fewer than deltas
    deltas = sum(1 for p in run.event_payloads if p.get("event") == "content_delta")
    assert 2 <= len(answer.edits) < deltas
    # the last edit carries the complete answer (its words, as mrkdwn)
    final_words = [w.strip("*_`.,:") for w in run.answer.split() if w.isalpha()]
    assert final_words and all(w in answer.text for w in final_words[:20])
    assert not answer.text.rstrip().endswith("…")


async def test_trace_is_posted_collapsed_after_the_answer(
    slack: Any, powabase: Any, bot: Powabot
) -> None:
    """After `complete` the thread gets the delegation trace, collapsed by default."""
    msg = await ask_and_wait(
        slack, bot, user=ALICE, text="How do I authenticate with an API key?", channel=DM
    )
    replies = bot_replies(slack, DM, msg.ts)
    trace = replies[-1]
    assert is_trace(trace) and len(replies) >= 2
    containers = [b for b in trace.blocks or [] if b.get("type") == "container"]
    assert containers and all(c["default_collapsed"] is True for c in containers)
    flat = str(trace.blocks) + str(trace.attachments) + trace.text
    assert "technical-agent" in flat or "technical specialist" in flat.lower()


async def test_mention_answered_in_thread_and_followup_reuses_session(
    slack: Any, powabase: Any, bot: Powabot
) -> None:
    """An @-mention is answered in its thread; the same user's follow-up continues the session."""
    mention = await ask_and_wait(
        slack,
        bot,
        user=ALICE,
        text="What does the Business plan include compared to Pro?",
        channel=SUPPORT,
        channel_type="channel",
        mention=True,
    )
    assert bot_replies(slack, SUPPORT, mention.ts)
    first_run = powabase.runs[-1]
    assert first_run.session_id
    await ask_and_wait(
        slack,
        bot,
        user=ALICE,
        text="And is SSO included in it?",
        channel=SUPPORT,
        channel_type="channel",
        thread_ts=mention.ts,
    )
    followup = powabase.runs[-1]
    assert followup is not first_run
    assert followup.session_id_sent == first_run.session_id
    assert len(bot_replies(slack, SUPPORT, mention.ts)) >= 4  # two answers + two traces


async def test_other_users_and_plain_channel_chatter_are_not_answered(
    slack: Any, powabase: Any, bot: Powabot
) -> None:
    """Only the asker's follow-ups continue a thread; top-level chatter is ignored."""
    mention = await ask_and_wait(
        slack,
        bot,
        user=ALICE,
        text="How do refunds work?",
        channel=SUPPORT,
        channel_type="channel",
        mention=True,
    )
    runs = len(powabase.runs)
    await slack.user_says(
        user=BOB, text="me too", channel=SUPPORT, channel_type="channel", thread_ts=mention.ts
    )
    await slack.user_says(user=BOB, text="lunch?", channel=SUPPORT, channel_type="channel")
    probe = await ask_and_wait(slack, bot, user=ALICE, text="What plans exist?", channel=DM)
    assert bot_replies(slack, DM, probe.ts)
    assert len(powabase.runs) == runs + 1  # only the probe was answered


async def test_own_messages_bots_and_edits_are_ignored(
    slack: Any, powabase: Any, bot: Powabot
) -> None:
    """Bot messages (ours and others') and message_changed/deleted never start an answer."""
    await slack.deliver(
        {"type": "message", "channel": DM, "channel_type": "im", "user": "UOTHERBOT",
         "bot_id": "B0OTHER", "text": "beep", "ts": "1.000001"}
    )  # fmt: skip
    await slack.deliver(
        {"type": "message", "subtype": "message_changed", "channel": DM, "channel_type": "im",
         "message": {"user": ALICE, "text": "edited", "ts": "1.000002"}, "ts": "1.000003"}
    )  # fmt: skip
    await slack.deliver(
        {"type": "message", "subtype": "message_deleted", "channel": DM, "channel_type": "im",
         "deleted_ts": "1.000002", "ts": "1.000004"}
    )  # fmt: skip
    probe = await ask_and_wait(
        slack, bot, user=ALICE, text="How do I reset my API key?", channel=DM
    )
    # The probe's own answer is echoed back as bot messages too, and ignored.
    assert len(powabase.runs) == 1
    assert powabase.runs[0].message == "How do I reset my API key?"
    assert bot_replies(slack, DM, probe.ts)


async def test_redelivered_envelope_gets_one_answer(
    slack: Any, powabase: Any, bot: Powabot
) -> None:
    """Slack redelivering the same event_id never produces a second answer."""
    msg = await ask_and_wait(slack, bot, user=ALICE, text="Can I get an invoice copy?", channel=DM)
    await slack.redeliver(msg.envelope_id)
    probe = await ask_and_wait(slack, bot, user=ALICE, text="Do you offer SSO?", channel=DM)
    assert [r.message for r in powabase.runs] == ["Can I get an invoice copy?", "Do you offer SSO?"]
    placeholders = [c for c in slack.calls_to("chat.postMessage") if c.args["thread_ts"] == msg.ts]
    assert (
        len([p for p in placeholders if not (p.args.get("blocks") or p.args.get("attachments"))])
        == 1
    )
    assert bot_replies(slack, DM, probe.ts)


async def test_powabase_500_leaves_a_clear_notice_and_bot_keeps_serving(
    slack: Any, powabase: Any, bot: Powabot
) -> None:
    """A Powabase 500 ends in a visible notice, and the next question is answered normally."""
    powabase.inject_run_fault("status", status=500)
    msg = await ask_and_wait(slack, bot, user=ALICE, text="Why was I charged twice?", channel=DM)
    replies = bot_replies(slack, DM, msg.ts)
    assert replies and ":warning:" in replies[-1].text
    assert "500" not in replies[-1].text  # the user gets words, not status codes
    ok = await ask_and_wait(slack, bot, user=ALICE, text="Why was I charged twice?", channel=DM)
    assert powabase.runs[-1].delegated_to == "billing-agent"
    assert ":warning:" not in bot_replies(slack, DM, ok.ts)[0].text


async def test_stream_dropped_mid_answer_keeps_partial_text_and_adds_notice(
    slack: Any, powabase: Any, bot: Powabot
) -> None:
    """A connection dropped mid-answer leaves the text that arrived plus a notice."""
    powabase.inject_run_fault("drop", after_deltas=4)
    msg = await ask_and_wait(
        slack, bot, user=ALICE, text="What is the refund window for Pro annual?", channel=DM
    )
    run = powabase.runs[-1]
    names = [p.get("event") for p in run.event_payloads]
    after_delegation = names.index("delegation_completed")
    streamed = "".join(
        p["delta"]
        for p in run.event_payloads[after_delegation:]
        if p.get("event") == "content_delta"
    )
    text = bot_replies(slack, DM, msg.ts)[0].text
    assert ":warning:" in text
    first_word = next(w for w in streamed.split() if w.isalpha())
    assert first_word in text
    assert len(bot_replies(slack, DM, msg.ts)) == 1  # no trace for an unfinished answer


async def test_error_event_and_unreachable_powabase_both_reply(
    slack: Any, powabase: Any, bot: Powabot, tmp_path: Path
) -> None:
    """An `error` event and an unreachable Powabase each end with a reply, never silence."""
    powabase.inject_run_fault("error_event")
    msg = await ask_and_wait(slack, bot, user=ALICE, text="Is there a free trial?", channel=DM)
    assert ":warning:" in bot_replies(slack, DM, msg.ts)[-1].text

    await bot.stop()
    down = Powabot(bot_settings(slack, powabase, tmp_path, POWABASE_URL="http://127.0.0.1:9"))
    await down.start()
    try:
        await slack.wait_connected()
        msg2 = await ask_and_wait(slack, down, user=ALICE, text="Hello?", channel=DM)
        notice = bot_replies(slack, DM, msg2.ts)[-1].text
        assert ":warning:" in notice and "reach" in notice.lower()
    finally:
        await down.stop()
        await bot.start()  # the fixture stops it again


async def test_unknown_events_do_not_disturb_the_answer(
    slack: Any, powabase: Any, bot: Powabot
) -> None:
    """Events the bot does not know (hook_result, model_fallback…) are ignored."""
    powabase.inject_run_fault("unknown_events")
    msg = await ask_and_wait(slack, bot, user=ALICE, text="Which plans include SSO?", channel=DM)
    replies = bot_replies(slack, DM, msg.ts)
    assert replies and ":warning:" not in replies[0].text and is_trace(replies[-1])


async def test_http_mode_answers_a_signed_event(slack: Any, powabase: Any, tmp_path: Path) -> None:
    """Without an app token the bot serves Slack's Events API over HTTP and answers."""
    settings = bot_settings(
        slack, powabase, tmp_path, SLACK_APP_TOKEN=None, SLACK_SIGNING_SECRET="sig-secret", PORT=0
    )
    http_bot = Powabot(settings)
    await http_bot.start()
    try:
        url = f"http://127.0.0.1:{http_bot.http_port}/slack/events"
        event = {"type": "message", "channel": DM, "channel_type": "im", "user": ALICE,
                 "text": "How much is the Pro plan?", "ts": "1700000001.000100"}  # fmt: skip
        assert await slack.deliver_http(url, "wrong-secret", event) == 401
        assert await slack.deliver_http(url, "sig-secret", event) == 200
        await slack.wait_for(lambda: http_bot.answerer.finished >= 1, timeout=20)
        assert bot_replies(slack, DM, "1700000001.000100")
        # health, readiness and metrics share the port with the events endpoint
        base = f"http://127.0.0.1:{http_bot.http_port}"
        async with aiohttp.ClientSession() as session:
            for path, expected in (("/healthz", '"ok"'), ("/readyz", '"ready": true'),
                                   ("/metrics", "powabot_answers_total")):  # fmt: skip
                async with session.get(base + path) as response:
                    assert response.status == 200 and expected in await response.text(), path
    finally:
        await http_bot.stop()


async def test_trace_falls_back_to_attachments_when_blocks_are_refused(
    slack: Any, powabase: Any, bot: Powabot
) -> None:
    """A workspace that rejects the container block still gets the trace, as an attachment."""
    armed: list[bool] = []

    def refuse_next_post(call: Any) -> None:
        if call.method == "chat.postMessage" and not armed:
            armed.append(True)  # the answer was posted; refuse the next post (the trace)
            slack.inject("chat.postMessage", body={"ok": False, "error": "invalid_blocks"})

    slack.on_call.append(refuse_next_post)
    msg = await ask_and_wait(slack, bot, user=ALICE, text="How do refunds work?", channel=DM)
    trace = bot_replies(slack, DM, msg.ts)[-1]
    assert trace.attachments and not trace.blocks
    assert "billing-agent" in str(trace.attachments)


async def test_a_mentioned_question_keeps_its_line_breaks(
    slack: Any, powabase: Any, bot: Powabot
) -> None:
    """A pasted error log reaches Powabase line by line, without the bot's mention."""
    await ask_and_wait(
        slack,
        bot,
        user=ALICE,
        text="My webhook fails with:\n```\nHTTP 401\ninvalid signature\n```\nwhy?",
        channel=SUPPORT,
        channel_type="channel",
        mention=True,
    )
    sent = powabase.runs[-1].message
    assert sent == "My webhook fails with:\n```\nHTTP 401\ninvalid signature\n```\nwhy?"


async def test_a_file_without_text_gets_a_gentle_reply_and_powabase_is_not_asked(
    slack: Any, powabase: Any, bot: Powabot
) -> None:
    """A screenshot dropped into the DM with no words: the user is told to type the question."""
    from sandbox.slack.store import StoredMessage

    before = bot.answerer.finished
    msg = slack.store.add(StoredMessage(channel=DM, ts=slack.store.next_ts(), text="", user=ALICE))
    event = {
        "type": "message",
        "subtype": "file_share",
        "user": ALICE,
        "text": "",
        "ts": msg.ts,
        "event_ts": msg.ts,
        "channel": DM,
        "channel_type": "im",
        "team": slack.workspace.team_id,
        "files": [{"id": "F0SHOT", "name": "error.png", "mimetype": "image/png"}],
    }
    await slack.deliver(event)
    await slack.wait_for(lambda: bot.answerer.finished > before)
    (reply,) = bot_replies(slack, DM, msg.ts)
    assert "type your question" in reply.text
    assert powabase.runs == []
