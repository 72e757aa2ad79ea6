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

from bench.expected import (
    complete_written,
    expected_messages,
    messages_problem,
    native_problem,
    replay,
)
from bot.render.answer import NOTICES
from bot.state import ErrorKind
from sandbox.powabase import RunRecord
from sandbox.slack import ApiCall, SlackStandin, StoredMessage

WRITE_METHODS = frozenset(
    {"chat.postMessage", "chat.update", "chat.startStream", "chat.appendStream", "chat.stopStream"}
)
# Methods whose arguments name the thread; the others name the message (`ts`) they change.
THREAD_METHODS = frozenset({"chat.postMessage", "chat.startStream"})
# Methods that add Markdown to a native stream's message rather than replace its text.
STREAM_METHODS = frozenset({"chat.startStream", "chat.appendStream", "chat.stopStream"})
PREFIX_WORDS = 3
FORMATTING = "*_~`"  # Markdown and mrkdwn emphasis around a word: not part of the word
# How an answer reached Slack (`Outcome.delivery`).
NATIVE = "native"  # a native stream from start to stop
NATIVE_THEN_CLASSIC = "native, then classic"  # a stream that a classic message carried on
CLASSIC = "classic"  # no stream was opened (not tried, or chat.startStream refused)


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
    sources: bool | None = None  # an exact answer shows its sources line (None: it has none)
    notice: str | None = None  # the ErrorKind of a failure notice the thread shows, if any
    delivery: str | None = None  # NATIVE / NATIVE_THEN_CLASSIC / CLASSIC
    starts_refused: int = 0  # chat.startStream calls Slack refused (429 included)


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


def streamed_text(args: Mapping[str, Any]) -> str:
    """The Markdown one chat.*Stream call adds to its message: `markdown_text`, then the text of
    its `markdown_text` chunks, joined as Slack joins them (task cards are not answer text)."""
    parts = [str(args.get("markdown_text") or "")]
    chunks = args.get("chunks")
    if isinstance(chunks, list):
        parts += [
            str(c.get("text") or "")
            for c in chunks
            if isinstance(c, dict) and c.get("type") == "markdown_text"
        ]
    return "".join(parts)


def words(text: str) -> list[str]:
    """The words of `text`, without the emphasis markers around them (`**Bold**` → `Bold`), so
    Markdown (native streams) and mrkdwn (classic messages) read the same."""
    found = (w.strip(FORMATTING) for w in text.split())
    return [w for w in found if w]


def answer_prefix(answer: str, count: int = PREFIX_WORDS) -> list[str]:
    """The first `count` words of the upstream answer: seeing them means answer text is shown."""
    return words(answer)[:count]


def shows(text: str, prefix: Sequence[str]) -> bool:
    """`text` shows the words of `prefix` one after another."""
    if not prefix:
        return False
    found = words(text)
    n = len(prefix)
    first = prefix[0]
    return any(
        found[i] == first and found[i : i + n] == list(prefix) for i in range(len(found) - n + 1)
    )


def first_text_time(calls: Sequence[ApiCall], prefix: Sequence[str], since: float) -> float | None:
    """When the first of the successful write `calls` (in the order Slack applied them) left a
    message showing `prefix`, not before `since`; None when none did.

    What each message shows is followed call by call: chat.postMessage and chat.update set it
    (text, blocks, attachments), chat.startStream sets it to the Markdown it carries (in
    `markdown_text` or in `markdown_text` chunks), chat.appendStream and chat.stopStream add
    theirs. So answer words that a stream delivers over several appends count once complete.
    """
    shown: dict[str, str] = {}
    for call in calls:
        ts = _call_ts(call)
        if call.method == "chat.startStream":
            shown[ts] = streamed_text(call.args)
        elif call.method in STREAM_METHODS:
            shown[ts] = shown.get(ts, "") + streamed_text(call.args)
        else:
            shown[ts] = visible_text(call.args)
        if call.t >= since and shows(shown[ts], prefix):
            return call.t
    return None


def _answer_post(args: Mapping[str, Any]) -> bool:
    return bool(args.get("text")) and not args.get("blocks") and not args.get("attachments")


def notice_kind(text: str) -> ErrorKind | None:
    """The failure notice a reply shows, by the notice's first sentence."""
    for kind, (what, _todo) in NOTICES.items():
        if what in text:
            return kind
    return None


def delivery(calls: Sequence[ApiCall]) -> tuple[str, int]:
    """How the answer of a thread reached Slack (NATIVE, NATIVE_THEN_CLASSIC or CLASSIC) and
    how many chat.startStream calls Slack refused, from the thread's write calls.

    A stream carried on classically is one that a chat.update edited (the bot adopts the
    streamed message), or one followed by a new answer message (chat.postMessage with text and
    no blocks or attachments: the trace messages carry those)."""
    starts = [c for c in calls if c.method == "chat.startStream"]
    refused = sum(1 for c in starts if c.status != 200 or c.error is not None)
    ok = [c for c in calls if c.status == 200 and c.error is None]
    opened = [c for c in ok if c.method == "chat.startStream"]
    if not opened:
        return CLASSIC, refused
    streams = {_call_ts(c) for c in opened}
    t_open = opened[0].t
    carried_on = any(
        (c.method == "chat.update" and _call_ts(c) in streams)
        or (c.method == "chat.postMessage" and c.t > t_open and _answer_post(c.args))
        for c in ok
    )
    return (NATIVE_THEN_CLASSIC if carried_on else NATIVE), refused


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
    *,
    detail: Any = None,
    prefix_words: int = PREFIX_WORDS,
) -> Outcome:
    """Measure one answer from its run record, its thread's write calls and its bot replies
    (`detail`: the run's detail, whose sources the answer should end with).

    First text: the first write after which one of the answer's messages shows the first
    `prefix_words` words of the upstream answer (see `first_text_time`)."""
    writes = len(calls)
    limited = sum(1 for c in calls if c.status == 429 or c.error == "ratelimited")
    kinds = [k for k in (notice_kind(m.text) for m in replies) if k is not None]
    how, refused = delivery(calls)
    base: dict[str, Any] = {
        "index": asked.index,
        "channel": asked.channel,
        "thread_ts": asked.thread_ts,
        "notice": kinds[-1].value if kinds else None,
        "delivery": how,
        "starts_refused": refused,
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
    expected, trace = expected_messages(run, detail)
    deltas = answer_deltas(run)
    ok_calls = [c for c in calls if c.status == 200 and c.error is None]
    first_text = None
    t_delta = run.t_first_content_delta
    prefix = answer_prefix(run.answer, prefix_words)
    if prefix and t_delta is not None:
        shown_at = first_text_time(ok_calls, prefix, t_delta)
        if shown_at is not None:
            first_text = max(0.0, shown_at - t_delta)
    edited = {_call_ts(c) for c in ok_calls if c.method == "chat.update"}
    native = bool(replies) and replies[0].stream_state is not None and replies[0].ts not in edited
    count = 1 if native else len(expected)
    answer_ts = {m.ts for m in replies[:count]}
    final = None
    touched = [c.t for c in ok_calls if _call_ts(c) in answer_ts]
    if touched and run.t_complete is not None:
        final = max(0.0, max(touched) - run.t_complete)
    sources = None
    if run.status == "completed" or complete_written(run):
        problem, sources = answer_problem(run, detail, replies, native=native)
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
        sources=sources,
    )


def answer_problem(
    run: RunRecord, detail: Any, replies: Sequence[StoredMessage], *, native: bool
) -> tuple[str | None, bool | None]:
    """What differs between the thread's answer and the expected one (None: exact), and
    whether the exact answer shows its sources (None: the run names none).

    A message the bot streamed natively to its end shows Markdown; any other (classic, or a
    stream the classic path took over with chat.update) shows the classic render. The answer
    is expected with the sources `detail` names; one shown without them (the bot's look-up
    failed or came late) is exact too, when everything else is."""

    def problem(with_detail: Any) -> str | None:
        if native:
            return native_problem(replies[0], run, with_detail)
        return messages_problem(replies, expected_messages(run, with_detail)[0])

    found = problem(detail)
    if detail is None or not replay(run, detail).sources:
        return found, None
    if found is None:
        return None, True
    return (found, None) if problem(None) is not None else (None, False)


def outcomes(
    slack: SlackStandin,
    runs: Sequence[RunRecord],
    asked: Sequence[Asked],
    *,
    details: Mapping[str, Any] | None = None,
    prefix_words: int = PREFIX_WORDS,
) -> list[Outcome]:
    """Measure every asked question (`details`: run details by run id, see `bench.details`)."""
    by_thread = writes_by_thread(slack)
    by_tag = runs_by_tag(runs, (a.tag for a in asked))
    result = []
    for a in asked:
        replies = [m for m in slack.thread(a.channel, a.thread_ts) if m.is_bot]
        calls = by_thread.get((a.channel, a.thread_ts), [])
        run = by_tag.get(a.tag)
        detail = (details or {}).get(run.run_id) if run is not None else None
        found = outcome(a, run, calls, replies, detail=detail, prefix_words=prefix_words)
        result.append(found)
    return result
