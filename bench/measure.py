"""Per-answer measurements read from what the two stand-ins recorded (pure functions).

Everything is timed on the stand-ins' side with `time.monotonic()`: when the Powabase stand-in
wrote the first answer `content_delta` / the `complete` event, and when the Slack stand-in
received each Web API call. Both stand-ins live in the benchmark's parent process, so the two
clocks are the same clock.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bench.expected import complete_written, expected_messages, messages_problem
from sandbox.powabase import RunRecord
from sandbox.slack import ApiCall, SlackStandin, StoredMessage

WRITE_METHODS = frozenset(
    {"chat.postMessage", "chat.update", "chat.startStream", "chat.appendStream", "chat.stopStream"}
)
# Methods whose arguments name the thread; the others name the message (`ts`) they change.
THREAD_METHODS = frozenset({"chat.postMessage", "chat.startStream"})
PREFIX_WORDS = 3


@dataclass(frozen=True)
class Asked:
    """One question the benchmark asked, and where."""

    index: int
    tag: str  # unique token inside the question text, to find its upstream run
    text: str
    user: str
    channel: str
    thread_ts: str
    t_asked: float


@dataclass
class Outcome:
    """What happened to one question."""

    index: int
    channel: str
    thread_ts: str
    run_status: str | None
    first_text_latency: float | None  # first answer content_delta -> first write showing text
    final_latency: float | None  # `complete` -> last write of the answer's messages
    writes: int  # Slack write calls for this answer (including refused ones)
    writes_ratelimited: int
    naive_writes: int | None  # one write per answer delta + placeholder + trace messages
    answer_deltas: int | None
    exact: bool
    problem: str | None = None


def normalise(text: str) -> str:
    return " ".join(text.split())


def visible_text(args: Mapping[str, Any]) -> str:
    """Every string a write call puts on screen: `text`, `markdown_text`, and block/attachment
    text fields (blocks arrive as lists, or as JSON strings when form-encoded)."""
    parts: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str):
            parts.append(value)
        elif isinstance(value, dict):
            for key, inner in value.items():
                if key in ("text", "markdown_text", "title", "subtitle") or not isinstance(
                    inner, str
                ):
                    walk(inner)
        elif isinstance(value, list):
            for inner in value:
                walk(inner)

    for key in ("text", "markdown_text", "blocks", "attachments", "chunks"):
        if key in args:
            walk(args[key])
    return normalise(" ".join(parts))


def answer_prefix(answer: str) -> str:
    """The first few words of the upstream answer: seeing them means answer text is on screen."""
    return " ".join(answer.split()[:PREFIX_WORDS])


def answer_deltas(run: RunRecord) -> int:
    """`content_delta` events of the answer itself (after the last delegation's report)."""
    names = [name for _t, name in run.events]
    start = max((i for i, n in enumerate(names) if n == "delegation_completed"), default=-1)
    return sum(1 for n in names[start + 1 :] if n == "content_delta")


def writes_by_thread(slack: SlackStandin) -> dict[tuple[str, str], list[ApiCall]]:
    """Every write call, grouped by the (channel, thread_ts) it belongs to."""
    grouped: dict[tuple[str, str], list[ApiCall]] = defaultdict(list)
    for call in slack.calls:
        if call.method not in WRITE_METHODS:
            continue
        channel = str(call.args.get("channel", ""))
        if call.method in THREAD_METHODS:
            thread = str(call.args.get("thread_ts") or "")
        else:
            msg = slack.store.get(channel, str(call.args.get("ts", "")))
            thread = (msg.thread_ts or msg.ts) if msg is not None else ""
        grouped[(channel, thread)].append(call)
    return grouped


def runs_by_tag(runs: Iterable[RunRecord], tags: Iterable[str]) -> dict[str, RunRecord]:
    """The upstream run of each question, found by the unique tag in its message."""
    wanted = set(tags)
    found: dict[str, RunRecord] = {}
    for run in runs:
        for word in run.message.split():
            token = word.strip("[]()")
            if token in wanted:
                found[token] = run
    return found


def _call_ts(call: ApiCall) -> str:
    if call.method in THREAD_METHODS:
        return str(call.response.get("ts", ""))
    return str(call.args.get("ts", ""))


def outcome(
    asked: Asked,
    run: RunRecord | None,
    calls: Sequence[ApiCall],
    replies: Sequence[StoredMessage],
) -> Outcome:
    """Measure one answer from its run record, its thread's write calls and its bot replies."""
    writes = len(calls)
    limited = sum(1 for c in calls if c.status == 429 or c.error == "ratelimited")
    base: dict[str, Any] = {
        "index": asked.index,
        "channel": asked.channel,
        "thread_ts": asked.thread_ts,
    }
    if run is None:
        return Outcome(
            **base,
            run_status=None,
            first_text_latency=None,
            final_latency=None,
            writes=writes,
            writes_ratelimited=limited,
            naive_writes=None,
            answer_deltas=None,
            exact=False,
            problem="no upstream run was started for this question",
        )
    expected, trace = expected_messages(run)
    deltas = answer_deltas(run)
    ok_calls = [c for c in calls if c.status == 200 and c.error is None]
    first_text = None
    prefix = normalise(answer_prefix(run.answer))
    if prefix and run.t_first_content_delta is not None:
        shown = [c.t for c in ok_calls if prefix in visible_text(c.args)]
        if shown:
            first_text = max(0.0, min(shown) - run.t_first_content_delta)
    answer_ts = {m.ts for m in replies[: len(expected)]}
    final = None
    touched = [c.t for c in ok_calls if _call_ts(c) in answer_ts]
    if touched and run.t_complete is not None:
        final = max(0.0, max(touched) - run.t_complete)
    if run.status == "completed" or complete_written(run):
        problem = messages_problem(replies, expected)
    else:
        last = [name for _t, name in run.events[-3:]]
        problem = (
            f"upstream run ended {run.status!r} after {len(run.events)} events "
            f"(last: {', '.join(last) or 'none'})"
        )
    return Outcome(
        **base,
        run_status=run.status,
        first_text_latency=first_text,
        final_latency=final,
        writes=writes,
        writes_ratelimited=limited,
        naive_writes=deltas + 1 + len(trace),
        answer_deltas=deltas,
        exact=problem is None,
        problem=problem,
    )


def outcomes(
    slack: SlackStandin, runs: Sequence[RunRecord], asked: Sequence[Asked]
) -> list[Outcome]:
    """Measure every asked question."""
    by_thread = writes_by_thread(slack)
    by_tag = runs_by_tag(runs, (a.tag for a in asked))
    result = []
    for a in asked:
        replies = [m for m in slack.thread(a.channel, a.thread_ts) if m.is_bot]
        calls = by_thread.get((a.channel, a.thread_ts), [])
        result.append(outcome(a, by_tag.get(a.tag), calls, replies))
    return result
