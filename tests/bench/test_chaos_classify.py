"""The chaos phase's verdict: a hanging or silent thread is never counted as handled."""

from __future__ import annotations

from bench.chaos import classify
from bench.measure import Outcome
from bot.render.answer import IN_LINE, PLACEHOLDER, STILL_WORKING, notice
from bot.state import ErrorKind
from sandbox.slack import StoredMessage


def _outcome(*, exact: bool) -> Outcome:
    return Outcome(
        index=0,
        channel="D0X",
        thread_ts="1.0",
        run_status="completed" if exact else "failed",
        first_text_latency=None,
        final_latency=None,
        writes=1,
        writes_ratelimited=0,
        naive_writes=None,
        answer_deltas=None,
        exact=exact,
        problem=None if exact else "message 1: text differs",
    )


def _reply(text: str, **extra: object) -> StoredMessage:
    return StoredMessage(channel="D0X", ts="2.0", text=text, bot_id="B0BOT", **extra)


def test_an_exact_answer_is_complete() -> None:
    """The exact rendered answer counts as complete."""
    assert classify(_outcome(exact=True), [_reply("The answer")]).result == "complete"


def test_a_notice_naming_its_cause_counts_as_a_notice() -> None:
    """A final reply with a failure notice counts as handled, with the cause it names."""
    found = classify(_outcome(exact=False), [_reply(notice(ErrorKind.TIMEOUT, partial=False))])
    assert (found.result, found.cause) == ("notice", "timeout")


def test_a_thread_with_no_reply_is_lost() -> None:
    """Silence is lost."""
    assert classify(_outcome(exact=False), []).result == "lost"


def test_a_placeholder_left_alone_is_lost() -> None:
    """Only the "Looking into it…" placeholder (or an in-line / still-working status) is lost."""
    for text in (PLACEHOLDER, IN_LINE, f"partial text\n\n{STILL_WORKING}"):
        assert classify(_outcome(exact=False), [_reply(text)]).result == "lost", text


def test_stale_partial_text_is_lost() -> None:
    """Partial text still ending in the typing indicator, with no notice, is lost."""
    assert classify(_outcome(exact=False), [_reply("The refund window is …")]).result == "lost"


def test_a_notice_beside_a_hanging_placeholder_is_lost() -> None:
    """A notice does not excuse another reply of the thread still showing the placeholder."""
    replies = [_reply(PLACEHOLDER), _reply(notice(ErrorKind.UNAVAILABLE, partial=False))]
    assert classify(_outcome(exact=False), replies).result == "lost"


def test_an_open_native_stream_is_lost() -> None:
    """A native stream never stopped still looks in progress to the user."""
    replies = [_reply(notice(ErrorKind.INTERRUPTED, partial=True), stream_state="streaming")]
    assert classify(_outcome(exact=False), replies).result == "lost"


def test_an_internal_error_notice_names_no_cause() -> None:
    """ "Something went wrong on my side" is not a cause the user can act on: lost."""
    replies = [_reply(notice(ErrorKind.INTERNAL, partial=False))]
    assert classify(_outcome(exact=False), replies).result == "lost"
