"""The escalation message and its resolved edit (pure): what the support team sees, mention-safe,
and the answer's trace found among the bot's messages in the user's thread."""

from __future__ import annotations

from typing import Any

from bot.render.escalation import (
    RESOLVE_ACTION,
    EscalationView,
    render_escalation,
    render_resolved,
    sources_line,
    trace_containers,
)


def view(**changes: Any) -> EscalationView:
    values: dict[str, Any] = {
        "escalation_id": 7,
        "requested_by": "U0ALICE",
        "asker": "U0ALICE",
        "channel_id": "C0SUPPORT",
        "thread_ts": "100.000001",
        "in_dm": False,
        "via_button": True,
        "question": "What is the refund window?",
        "answer": "**30 days** for annual plans.",
        "sources": ("Refunds FAQ (billing-kb) <https://docs.example/refunds>",),
        "specialists": ("billing-agent",),
        "run_id": "orch_run_1",
        "link": "https://standin.slack.com/archives/C0SUPPORT/p100000001",
    }
    values.update(changes)
    return EscalationView(**values)


def container(title: str = "Delegation trace") -> dict[str, Any]:
    return {
        "type": "container",
        "title": {"type": "plain_text", "text": title},
        "default_collapsed": True,
        "child_blocks": [{"type": "context", "elements": [{"type": "mrkdwn", "text": "x"}]}],
    }


def test_the_message_carries_the_whole_context_and_a_resolve_button() -> None:
    """Who asked, the question, the answer (as mrkdwn), the sources as links, the thread's link
    and a "Mark resolved" button naming the escalation."""
    message = render_escalation(view(trace=(container(),)))
    blocks = message.blocks or []
    shown = str(blocks)
    assert message.text == "<@U0ALICE> asked for a person: What is the refund window?"
    assert "*Question*\\n>What is the refund window?" in shown
    assert "*Answer given*\\n>*30 days* for annual plans." in shown
    assert "<https://docs.example/refunds|Refunds FAQ (billing-kb)>" in shown
    assert (
        "<https://standin.slack.com/archives/C0SUPPORT/p100000001|Open the conversation>" in shown
    )
    assert [b["type"] for b in blocks][-2:] == ["container", "actions"]
    (button,) = blocks[-1]["elements"]
    assert (button["action_id"], button["value"]) == (RESOLVE_ACTION, "7")


def test_user_and_model_text_cannot_ping_anyone() -> None:
    """A question or answer holding <!channel>, @here or a user mention shows as text; the
    only mention is the asker's."""
    message = render_escalation(
        view(question="<!channel> help @here", answer="ask <@U0BOSS> or <!subteam^S1>")
    )
    shown = message.text + str(message.blocks)
    assert "<!channel>" not in shown and "<@U0BOSS>" not in shown and "<!subteam" not in shown
    assert "@here" not in shown  # a zero-width space breaks the broadcast word
    assert "&lt;!channel&gt;" in shown


def test_a_dm_conversation_asks_for_a_direct_reply_without_a_link() -> None:
    """The bot's DM is invisible to the team: they are asked to reply to the user directly."""
    shown = str(render_escalation(view(in_dm=True)).blocks)
    assert "reply to them directly" in shown and "archives" not in shown


def test_without_a_link_the_channel_and_thread_are_named() -> None:
    """When Slack gave no permalink the message still says where the conversation is."""
    shown = str(render_escalation(view(link=None)).blocks)
    assert "<#C0SUPPORT>" in shown and "100.000001" in shown


def test_a_long_answer_is_shortened_within_slacks_limits() -> None:
    """A very long answer is cut (with "…") and no section exceeds 3,000 characters."""
    message = render_escalation(view(answer="word " * 5000, question="q " * 5000))
    sections = [b["text"]["text"] for b in message.blocks or [] if b["type"] == "section"]
    assert all(len(t) <= 3000 for t in sections)
    assert any(t.endswith("…") for t in sections)


def test_resolved_drops_the_button_and_says_who() -> None:
    """The resolved edit keeps the context, loses the button, and names the resolver."""
    posted = render_escalation(view())
    resolved = render_resolved(posted.text, posted.blocks, "U0AGENT")
    blocks = resolved.blocks or []
    assert RESOLVE_ACTION not in str(blocks)
    assert blocks[-1]["elements"][0]["text"] == ":white_check_mark: Resolved by <@U0AGENT>"
    assert blocks[:-1] == (posted.blocks or [])[:-1]
    assert render_resolved("x", None, "U0AGENT").blocks  # nothing reported: still says it


def test_the_answers_trace_is_the_one_after_it_not_the_next_answers() -> None:
    """Among the bot's messages in the thread, the trace taken is the one posted after the
    answer; an answer without a trace gets none (not the next answer's)."""
    feedback = {"type": "context_actions", "elements": []}
    thread = [
        {"ts": "1.0", "blocks": [feedback]},  # answer 1 (no trace)
        {"ts": "2.0", "blocks": [{"type": "section"}]},  # answer 2, first message
        {"ts": "2.1", "blocks": [feedback]},  # answer 2, last message
        {"ts": "2.2", "blocks": [container()]},  # answer 2's trace
        {"ts": "2.3", "blocks": [container("Delegation trace (2/2)")]},
        {"ts": "3.0", "blocks": [feedback]},
        {"ts": "3.1", "blocks": [container()]},
    ]
    assert trace_containers(thread, "1.0") == ()
    assert len(trace_containers(thread, "2.0")) == 2
    assert len(trace_containers(thread, "3.0")) == 1
    assert trace_containers(thread, "9.0") == ()


def test_sources_without_a_link_are_named_and_others_linked() -> None:
    """A source line with a web URL becomes a link; any other stays (escaped) text."""
    line = sources_line(["A <b> (kb)", "B (kb) <https://x.example/b>", "C <javascript:x>"])
    assert line == (
        "*Sources:* A &lt;b&gt; (kb) · <https://x.example/b|B (kb)> · C &lt;javascript:x&gt;"
    )
    assert sources_line([]) == ""
