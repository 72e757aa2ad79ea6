"""The answer messages and status line in every phase, built from real stream events."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from bot.render import SlackMessage, render_answer, status_text
from bot.state import AnswerState, ErrorKind

ZW = "\u200b"
Build = Callable[..., AnswerState]
START = {"event": "start", "run_id": "orch_run_1", "session_id": "orch_sess_1"}
SEARCH = {
    "event": "tool_call",
    "tool_name": "knowledge_base_search",
    "arguments": {"query": "refund   window\nannual"},
    "call_id": "c1",
}
BILLING = {
    "event": "delegation_started",
    "agent": "billing-agent",
    "task": "Refund window?",
    "child_execution_id": "x1",
}
DONE_BILLING = {
    "event": "delegation_completed",
    "agent": "billing-agent",
    "child_execution_id": "x1",
}


def delta(text: str) -> dict[str, str]:
    return {"event": "content_delta", "delta": text}


def test_placeholder_before_anything_arrives() -> None:
    """The first message tells the user we heard them."""
    state = AnswerState()
    assert render_answer(state) == [SlackMessage(":hourglass_flowing_sand: Looking into it…")]
    assert status_text(state) == "Looking into it…"


@pytest.mark.parametrize(
    ("frames", "line", "status"),
    [
        ([START], ":thinking_face: Reading your question…", "Reading your question…"),
        (
            [START, BILLING],
            ":busts_in_silhouette: Asking the billing specialist…",
            "Asking the billing specialist…",
        ),
        (
            [START, {**BILLING, "agent": "shipping-bot"}],
            ":busts_in_silhouette: Asking shipping-bot…",
            "Asking shipping-bot…",
        ),
        (
            [START, BILLING, SEARCH],
            ":mag: Billing specialist is searching the knowledge base for “refund window annual”…",
            "Billing specialist is searching the knowledge base for “refund window annual”…",
        ),
        (
            [START, SEARCH],
            ":mag: Searching the knowledge base for “refund window annual”…",
            "Searching the knowledge base for “refund window annual”…",
        ),
        (
            [START, BILLING, {**SEARCH, "tool_name": "lookup_order"}],
            ":hammer_and_wrench: Billing specialist is using lookup_order…",
            "Billing specialist is using lookup_order…",
        ),
        (
            [START, BILLING, DONE_BILLING],
            ":memo: Putting the answer together…",
            "Putting the answer together…",
        ),
    ],
)
def test_working_shows_what_the_coordinator_does(
    build: Build, frames: list[dict[str, object]], line: str, status: str
) -> None:
    """Before text arrives the placeholder names the current step in plain words."""
    state = build(frames)
    assert render_answer(state) == [SlackMessage(line)]
    assert status_text(state) == status


def test_activity_from_model_is_escaped_and_mention_safe(build: Build) -> None:
    """A search query written by the model cannot ping or inject markup in the status."""
    state = build([START, BILLING, {**SEARCH, "arguments": {"query": "<!channel> @here & co"}}])
    assert render_answer(state)[0].text == (
        ":mag: Billing specialist is searching the knowledge base for "
        f"“&lt;!channel&gt; @{ZW}here &amp; co”…"
    )
    assert status_text(state) == (
        f"Billing specialist is searching the knowledge base for “<{ZW}!channel> @{ZW}here & co”…"
    )


def test_stalled_working_adds_a_gentle_note(build: Build) -> None:
    """When nothing has arrived for a while the user is told we are still on it."""
    state = build([START, BILLING])
    state.mark_stalled()
    assert render_answer(state) == [
        SlackMessage(
            ":busts_in_silhouette: Asking the billing specialist…\n"
            "_Still working on it, thanks for your patience…_"
        )
    ]


def test_streaming_text_has_a_typing_indicator(
    build: Build, delegation: Callable[..., list[dict[str, Any]]]
) -> None:
    """Streaming text is converted and ends with a subtle indicator."""
    state = build([START, *delegation("billing-agent", "x1"), delta("You have **30 days**")])
    assert render_answer(state) == [SlackMessage("You have *30 days* …")]
    assert status_text(state) == "Writing the answer…"


def test_streaming_inside_code_puts_indicator_after_the_fence(build: Build) -> None:
    """An indicator never lands inside or on the same line as a closing code fence."""
    state = build([START, delta("Run:\n\n```bash\ncurl -X POST")])
    assert render_answer(state)[0].text == "Run:\n\n```\ncurl -X POST\n```\n…"


def test_stalled_streaming_replaces_indicator_with_note(build: Build) -> None:
    """A stalled stream shows the text so far and a still-working note."""
    state = build([START, delta("Refunds take")])
    state.mark_stalled()
    assert render_answer(state) == [
        SlackMessage("Refunds take\n\n_Still working on it, thanks for your patience…_")
    ]


def test_done_shows_final_text_without_indicator(build: Build) -> None:
    """After `complete` the message holds exactly the final converted answer."""
    state = build(
        [
            START,
            delta("draft"),
            {
                "event": "complete",
                "content": "Refunds: **30 days**. See [policy](https://ex.com/r).",
                "status": "completed",
            },
        ]
    )
    assert [m.text for m in render_answer(state)] == [
        "Refunds: *30 days*. See <https://ex.com/r|policy>."
    ]
    assert status_text(state) == ""


def test_done_with_empty_answer_still_says_something(build: Build) -> None:
    """An empty final answer does not leave the placeholder or an empty message behind."""
    state = build([START, {"event": "complete", "content": "", "status": "completed"}])
    assert render_answer(state)[0].text.startswith(":grey_question: I couldn't put an answer")


NOTICE_START = {
    ErrorKind.UNAVAILABLE: ":warning: I'm having trouble reaching the support system",
    ErrorKind.MISCONFIGURED: ":warning: I'm not set up correctly right now; the team has been",
    ErrorKind.REJECTED: ":warning: The support system turned this request down",
    ErrorKind.RUN_FAILED: ":warning: Something went wrong while the answer was being prepared.",
    ErrorKind.INTERRUPTED: ":warning: The answer was cut off before it finished.",
    ErrorKind.TIMEOUT: ":warning: The support system took too long to answer.",
    ErrorKind.SHUTDOWN: ":warning: I'm restarting and couldn't finish this answer.",
    ErrorKind.BUSY: ":warning: I'm very busy right now and can't take this question.",
    ErrorKind.NO_QUESTION: ":warning: I can only read text for now, and this message had none.",
    ErrorKind.INTERNAL: ":warning: Something went wrong on my side.",
    ErrorKind.STOPPED: "_Stopped._",
}


FAILURES = [k for k in ErrorKind if k not in (ErrorKind.NO_QUESTION, ErrorKind.STOPPED)]


@pytest.mark.parametrize("kind", FAILURES)
def test_each_failure_keeps_partial_text_and_explains(build: Build, kind: ErrorKind) -> None:
    """A failed answer keeps what arrived, says it is partial, and says what to do next."""
    state = build([START, delta("Refunds are possible within")])
    state.fail(kind, "Traceback: secret-token-123 HTTP 500", 200.0)
    (message,) = render_answer(state)
    text, notice = message.text.split("\n\n")
    assert text == "Refunds are possible within"
    assert notice.startswith(NOTICE_START[kind])
    assert "What you see above is partial." in notice
    assert "ask again" in notice.lower() or "contact the support team" in notice
    assert "secret" not in message.text and "500" not in message.text


def test_a_stopped_answer_keeps_its_text_and_just_says_stopped(build: Build) -> None:
    """Stopped by the user: what arrived stays, then "Stopped." with no warning or advice."""
    state = build([START, delta("Refunds are possible within")])
    state.fail(ErrorKind.STOPPED, "stopped by the user", 200.0)
    (message,) = render_answer(state)
    assert message.text == "Refunds are possible within\n\n_Stopped._"


@pytest.mark.parametrize("kind", list(ErrorKind))
def test_each_failure_without_text_is_just_the_notice(kind: ErrorKind) -> None:
    """A failure before any text replaces the placeholder with the notice alone."""
    state = AnswerState()
    state.fail(kind, "detail", 1.0)
    (message,) = render_answer(state)
    assert message.text.startswith(NOTICE_START[kind])
    assert "partial" not in message.text


def test_interrupted_notice_literal(build: Build) -> None:
    """The cut-off notice reads as one clear sentence group."""
    state = build([START, delta("Half an answer")])
    state.fail(ErrorKind.INTERRUPTED, "stream ended", 200.0)
    assert render_answer(state) == [
        SlackMessage(
            "Half an answer\n\n:warning: The answer was cut off before it finished. "
            "What you see above is partial. Please ask again to get the full answer."
        )
    ]


def test_error_event_and_failed_complete_are_run_failures(build: Build) -> None:
    """Both ways Powabase reports a failed run show the run-failed notice, not the raw error."""
    for last in (
        {"event": "error", "error": {"message": "provider exploded: key sk-abc"}},
        {"event": "complete", "status": "failed", "error": "provider exploded: key sk-abc"},
    ):
        (message,) = render_answer(build([START, last]))
        assert message.text.startswith(NOTICE_START[ErrorKind.RUN_FAILED])
        assert "sk-abc" not in message.text


def test_mass_mentions_in_answer_are_neutralised(build: Build) -> None:
    """Model text cannot ping the channel, a group or a user, in any phase."""
    text = "Heads up <!channel> <!here|here> <!subteam^S1> <@U42> <#C1> @everyone"
    expected = (
        "Heads up &lt;!channel&gt; &lt;!here|here&gt; &lt;!subteam^S1&gt; &lt;@U42&gt; "
        f"&lt;#C1&gt; @{ZW}everyone"
    )
    streaming = build([START, delta(text)])
    assert render_answer(streaming)[0].text == expected + " …"
    done = build([START, delta(text), {"event": "complete", "status": "completed"}])
    assert render_answer(done)[0].text == expected


def test_long_answer_splits_and_notice_fits(build: Build) -> None:
    """A long failed answer is several messages, each within the limit, notice on the last."""
    paragraphs = [
        f"Paragraph {n}. " + "The refund policy explains things. " * 10 for n in range(12)
    ]
    state = build([START, delta("\n\n".join(paragraphs))])
    state.fail(ErrorKind.TIMEOUT, "silent", 300.0)
    messages = render_answer(state, max_chars=1500)
    assert len(messages) > 3
    assert all(len(m.text) <= 1500 for m in messages)
    assert messages[-1].text.endswith("contact the support team.")
    assert all(":warning:" not in m.text for m in messages[:-1])
    joined = "\n\n".join(m.text for m in messages)
    assert all(f"Paragraph {n}." in joined for n in range(12))


def test_finishing_does_not_reshuffle_earlier_messages(build: Build) -> None:
    """The split while streaming equals the final split except for the last message."""
    body = "\n\n".join(f"Step {n}: " + "do the thing carefully. " * 15 for n in range(10))
    streaming = build([START, delta(body)])
    done = build([START, delta(body), {"event": "complete", "status": "completed"}])
    before = render_answer(streaming, max_chars=1200)
    after = render_answer(done, max_chars=1200)
    assert len(before) == len(after) > 2
    assert [m.text for m in before[:-1]] == [m.text for m in after[:-1]]
    assert before[-1].text == after[-1].text + " …"


def test_too_small_limit_is_refused() -> None:
    """A max_chars that cannot hold a notice is a clear error naming the argument."""
    with pytest.raises(ValueError, match="max_chars"):
        render_answer(AnswerState(), max_chars=100)


def test_streaming_hides_an_unclosed_bold_or_code_span_until_it_closes() -> None:
    """Mid-stream, a half-written `**bold` or `code` span is held back instead of shown raw."""
    from bot.render.answer import hold_back_open_span

    assert hold_back_open_span("Refunds take **30 da") == "Refunds take "
    assert hold_back_open_span("Use `lum_live") == "Use "
    assert hold_back_open_span("Refunds take **30 days** here") == "Refunds take **30 days** here"
    assert hold_back_open_span("```\ncode **x") == "```\ncode **x"
    assert hold_back_open_span("a **b**\nnext **c") == "a **b**\nnext "
