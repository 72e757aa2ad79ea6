"""The benchmark's "first write showing answer text" sees answer text however Slack got it."""

from __future__ import annotations

from typing import Any

from bench.expected import native_problem
from bench.measure import (
    CLASSIC,
    NATIVE,
    NATIVE_THEN_CLASSIC,
    answer_prefix,
    delivery,
    first_text_time,
)
from bot.render.answer import answer_markdown
from bot.render.mrkdwn import to_mrkdwn
from sandbox.powabase import RunRecord
from sandbox.slack import ApiCall, StoredMessage
from sandbox.slack.store import StreamState

ANSWER = "Here is what our **billing documentation** says about refunds."


def _call(method: str, t: float, ts: str = "2.0", **args: Any) -> ApiCall:
    """A successful write call; thread methods answer with the new message's ts."""
    if method in ("chat.postMessage", "chat.startStream"):
        return ApiCall(method, {"channel": "D0X", **args}, 200, None, t, {"ok": True, "ts": ts})
    return ApiCall(method, {"channel": "D0X", "ts": ts, **args}, 200, None, t, {"ok": True})


def test_a_post_carrying_the_first_word_counts() -> None:
    """A chat.postMessage whose text starts the answer shows it (mrkdwn and trailing marks too)."""
    calls = [_call("chat.postMessage", 1.0, text="Here …")]
    assert first_text_time(calls, answer_prefix(ANSWER, 1), since=0.5) == 1.0


def test_an_update_counts_but_a_status_line_does_not() -> None:
    """A placeholder without answer words is not answer text; the edit that adds them is."""
    calls = [
        _call("chat.postMessage", 1.0, text=":hourglass_flowing_sand: Looking into it…"),
        _call("chat.update", 2.0, text="Here is what our *billing documentation* …"),
    ]
    assert first_text_time(calls, answer_prefix(ANSWER, 3), since=0.5) == 2.0


def test_a_stream_start_carrying_markdown_chunks_counts() -> None:
    """chat.startStream's markdown_text chunks show answer text; its task cards do not."""
    card = {"type": "task_update", "id": "t1", "title": "Here we go", "status": "in_progress"}
    text = {"type": "markdown_text", "text": "Here is what our **billing "}
    only_card = [_call("chat.startStream", 1.0, thread_ts="1.0", chunks=[card])]
    assert first_text_time(only_card, answer_prefix(ANSWER, 1), since=0.5) is None
    calls = [_call("chat.startStream", 1.0, thread_ts="1.0", chunks=[card, text])]
    assert first_text_time(calls, answer_prefix(ANSWER, 3), since=0.5) == 1.0


def test_appends_count_once_together_they_show_the_words() -> None:
    """Words split over several appendStream calls show when the append completing them lands."""
    calls = [
        _call("chat.startStream", 1.0, thread_ts="1.0", chunks=[]),
        _call("chat.appendStream", 2.0, chunks=[{"type": "markdown_text", "text": "Here is "}]),
        _call("chat.appendStream", 3.0, markdown_text="what our"),
    ]
    assert first_text_time(calls, answer_prefix(ANSWER, 1), since=0.5) == 2.0
    assert first_text_time(calls, answer_prefix(ANSWER, 3), since=0.5) == 3.0


def test_text_before_the_first_delta_is_not_the_answer() -> None:
    """A write earlier than the first answer delta cannot be showing the answer."""
    calls = [_call("chat.postMessage", 1.0, text="Here is what you asked")]
    assert first_text_time(calls, answer_prefix(ANSWER, 1), since=1.5) is None


def test_delivery_tells_native_fallback_and_classic_apart() -> None:
    """A stream kept to its stop is native, one edited classically a fallback, none classic."""
    start = _call("chat.startStream", 1.0, thread_ts="1.0", chunks=[])
    stop = _call("chat.stopStream", 2.0)
    trace = _call("chat.postMessage", 3.0, ts="3.0", text="Delegation trace", blocks=[{}])
    assert delivery([start, stop, trace]) == (NATIVE, 0)
    assert delivery([start, stop, _call("chat.update", 3.0, text="Here")]) == (
        NATIVE_THEN_CLASSIC,
        0,
    )
    refused = ApiCall("chat.startStream", {}, 429, "ratelimited", 1.0)
    assert delivery([refused, _call("chat.postMessage", 1.1, text="Here")]) == (CLASSIC, 1)


def _run(answer: str) -> RunRecord:
    run = RunRecord("orch_1", "How do refunds work?", None, run_id="run_1", status="completed")
    run.answer = answer
    run.event_payloads = [
        {"event": "start", "run_id": "run_1", "session_id": "s_1"},
        {"event": "content_delta", "delta": answer},
        {"event": "complete", "run_id": "run_1", "session_id": "s_1", "content": answer,
         "status": "completed", "usage": {}, "error": None},
    ]  # fmt: skip
    return run


def test_a_native_answer_is_exact_only_as_the_streamed_markdown_and_stopped() -> None:
    """A natively streamed answer must show the safe Markdown, with its stream stopped."""
    run = _run(ANSWER)
    markdown = answer_markdown(ANSWER)

    def shown(text: str, state: StreamState) -> StoredMessage:
        return StoredMessage("D0X", "2.0", text, bot_id="B0BOT", stream_state=state)

    assert native_problem(shown(markdown + "\n", "stopped"), run) is None
    assert native_problem(shown(markdown, "streaming"), run) is not None
    assert native_problem(shown(markdown[:-10], "stopped"), run) is not None
    assert native_problem(shown(to_mrkdwn(ANSWER), "stopped"), run) is not None
