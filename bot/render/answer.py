"""The answer as Slack thread messages, and the one-line status, from an `AnswerState`.

Message 0 is the placeholder the publisher posts at once and then edits; later messages carry the
rest of a long answer. Every message is mrkdwn text, so the full ~3,500 characters are available
(a section block would cap at 3,000). The last message of a finished answer (with a run id) also
carries that text as section blocks followed by the feedback and "New conversation" buttons
(`bot.render.feedback`); its `text` stays the same.

Decorations (typing indicator, "still working" note, failure notice) only ever touch the last
message, and every message keeps room for the longest of them, so the split of the answer text is
the same in every phase: finishing or failing never reshuffles earlier messages.

An answer gets at most ``MAX_ANSWER_MESSAGES`` messages: past that the last one ends with the
``TRUNCATED`` note (what happened and what to do). That last message always keeps room for the
note, so the cut, like every other split, never changes text already shown.
"""

from __future__ import annotations

from bot.render.feedback import answer_blocks, rateable
from bot.render.labels import agent_object, agent_subject, shorten
from bot.render.links import guard_markdown
from bot.render.message import SlackMessage
from bot.render.mrkdwn import to_mrkdwn
from bot.render.safety import escape, plain
from bot.render.split import is_grapheme_boundary, split_markdown
from bot.state import Activity, ActivityKind, AnswerState, ErrorKind, Phase

PLACEHOLDER = ":hourglass_flowing_sand: Looking into it…"
IN_LINE = ":hourglass: You're in line — I'll start on this in a moment."
AFTER_PREVIOUS = ":hourglass: I'll answer this right after your previous question."
TYPING = " …"
STILL_WORKING = "_Still working on it, thanks for your patience…_"
PARTIAL = "What you see above is partial."
EMPTY_ANSWER = (
    ":grey_question: I couldn't put an answer together for that. Please try rephrasing your "
    "question, or contact the support team."
)

# What happened, and what the user can do about it. Never the raw error detail.
NOTICES: dict[ErrorKind, tuple[str, str]] = {
    ErrorKind.UNAVAILABLE: (
        "I'm having trouble reaching the support system right now.",
        "Please try again in a few minutes, or contact the support team if it's urgent.",
    ),
    ErrorKind.MISCONFIGURED: (
        "I'm not set up correctly right now; the team has been told.",
        "Until it's fixed, please contact the support team directly.",
    ),
    ErrorKind.REJECTED: (
        "The support system turned this request down, so I can't answer it.",
        "Please try rephrasing your question; if that doesn't help, contact the support team.",
    ),
    ErrorKind.RUN_FAILED: (
        "Something went wrong while the answer was being prepared.",
        "Please ask again; if it keeps failing, contact the support team.",
    ),
    ErrorKind.INTERRUPTED: (
        "The answer was cut off before it finished.",
        "Please ask again to get the full answer.",
    ),
    ErrorKind.TIMEOUT: (
        "The support system took too long to answer.",
        "Please try again in a few minutes; if it keeps happening, contact the support team.",
    ),
    ErrorKind.SHUTDOWN: (
        "I'm restarting and couldn't finish this answer.",
        "Please ask again in a minute.",
    ),
    ErrorKind.BUSY: (
        "I'm very busy right now and can't take this question.",
        "Please try again in a few minutes, or contact the support team if it's urgent.",
    ),
    ErrorKind.STOPPED: ("Stopped.", ""),  # not a failure: see `notice`
    ErrorKind.NO_QUESTION: (
        "I can only read text for now, and this message had none.",
        "Please type your question in words.",
    ),
    ErrorKind.INTERNAL: (
        "Something went wrong on my side.",
        "Please ask again; if it keeps happening, contact the support team.",
    ),
}

_ICONS = {
    ActivityKind.THINKING: ":thinking_face:",
    ActivityKind.DELEGATING: ":busts_in_silhouette:",
    ActivityKind.SEARCHING: ":mag:",
    ActivityKind.TOOL: ":hammer_and_wrench:",
    ActivityKind.SYNTHESIZING: ":memo:",
}
QUERY_LIMIT = 80


def notice(kind: ErrorKind, *, partial: bool) -> str:
    """The failure notice for ``kind``; ``partial`` says text above it was kept."""
    what, todo = NOTICES[kind]
    if kind is ErrorKind.STOPPED:  # the user asked for it: no warning, nothing to do
        return f"_{what}_"
    return f":warning: {what} {PARTIAL + ' ' if partial else ''}{todo}"


# Room every message keeps for whatever may be appended to the last one.
RESERVE = max(
    len(TYPING) + 1,
    len(STILL_WORKING) + 2,
    *(len(notice(kind, partial=True)) + 2 for kind in ErrorKind),
)
# At most this many messages per answer; the last one then ends with TRUNCATED (and keeps the
# room for it, so the cut never reshuffles what is above it).
MAX_ANSWER_MESSAGES = 5
TRUNCATED = (
    ":scissors: _This answer was too long to show in Slack, so it is truncated here_ — "
    "the full answer is in the file attached just below."
)
# When that file could not be attached, this line follows it, so the note does not lie.
FULL_ANSWER_MISSING = (
    ":warning: I couldn't attach the full answer as a file after all. Ask me about one part "
    "at a time (name the step or section you need) to see the rest."
)
# What a message Slack refused to edit (too long) shows when it cannot be deleted either.
ANSWER_BELOW = "_(answer below)_"
MIN_MAX_CHARS = RESERVE + len(TRUNCATED) + 2 + 200
# Native streaming sends Markdown into one message: about as much as MAX_ANSWER_MESSAGES show.
NATIVE_MAX_CHARS = MAX_ANSWER_MESSAGES * 3000


def activity_text(activity: Activity | None) -> str:
    """What the orchestration is doing, as a plain sentence (not escaped)."""
    if activity is None:
        return "Looking into it…"
    kind, agent = activity.kind, activity.agent
    if kind is ActivityKind.THINKING:
        return "Reading your question…"
    if kind is ActivityKind.DELEGATING:
        return f"Asking {agent_object(agent)}…"
    if kind is ActivityKind.SYNTHESIZING:
        return "Putting the answer together…"
    if kind is ActivityKind.SEARCHING:
        doing = "searching the knowledge base"
        if activity.query:
            doing += f" for “{shorten(activity.query, QUERY_LIMIT)}”"
    else:
        doing = f"using {shorten(activity.tool or 'a tool', 40)}"
    if agent:
        return f"{agent_subject(agent)} is {doing}…"
    return f"{doing[:1].upper()}{doing[1:]}…"


def status_text(state: AnswerState) -> str:
    """The one-line activity (plain text) for assistant.threads.setStatus; "" once finished."""
    if state.finished:
        return ""
    if state.phase is Phase.STREAMING:
        return "Writing the answer…"
    if state.phase is Phase.WAITING:
        if state.after_previous:
            return "Waiting for your previous question…"
        return "You're in line…" if state.queued else "Looking into it…"
    return plain(activity_text(state.activity))


def render_answer(state: AnswerState, *, max_chars: int = 3500) -> list[SlackMessage]:
    """The answer as thread messages; index 0 is the placeholder that gets edited."""
    if max_chars < MIN_MAX_CHARS:
        raise ValueError(f"render_answer: max_chars must be ≥ {MIN_MAX_CHARS}, got {max_chars}")
    has_text = bool(state.text.strip())
    if not has_text and not state.finished:  # also a stream whose first delta was whitespace
        return [SlackMessage(_status_line(state))]
    text = state.text if state.finished else hold_back_open_span(state.text)
    chunks, truncated = answer_chunks(text, max_chars - RESERVE) if has_text else ([], False)
    if truncated:
        chunks[-1] += f"\n\n{TRUNCATED}"
    if state.phase is Phase.DONE:
        chunks = chunks or [EMPTY_ANSWER]
    elif state.phase is Phase.FAILED:
        kind = state.error.kind if state.error else ErrorKind.INTERNAL
        tail = notice(kind, partial=has_text)
        chunks = [*chunks[:-1], f"{chunks[-1]}\n\n{tail}"] if chunks else [tail]
    elif truncated:
        pass  # what is shown is final: no typing indicator or "still working" under the cut
    elif state.stalled:
        chunks[-1] += f"\n\n{STILL_WORKING}"
    else:
        chunks[-1] += ("\n" + TYPING.strip()) if chunks[-1].endswith("```") else TYPING
    messages = [SlackMessage(chunk) for chunk in chunks]
    if rateable(state):  # rate it, or start over
        messages[-1] = SlackMessage(chunks[-1], blocks=answer_blocks(chunks[-1]))
    return messages


def is_truncated(state: AnswerState, *, max_chars: int = 3500) -> bool:
    """Whether :func:`render_answer` cuts this answer short (and shows ``TRUNCATED``)."""
    if not state.text.strip():
        return False
    text = state.text if state.finished else hold_back_open_span(state.text)
    return answer_chunks(text, max_chars - RESERVE)[1]


def hold_back_open_span(markdown: str) -> str:
    """Mid-stream, leave out a last-line tail whose ``**``/``__``/``~~``/`` ` `` has not closed.

    Otherwise the half-written span shows as raw ``**bold…`` until its closing marker arrives.
    Text inside an open code fence is left alone: the converter closes the fence itself.
    """
    if markdown.count("```") % 2:
        return markdown
    line_start = markdown.rfind("\n") + 1
    line = markdown[line_start:]
    cut = len(line)
    for marker in ("**", "__", "~~"):
        if line.count(marker) % 2:
            cut = min(cut, line.rfind(marker))
    if line.replace("```", "").count("`") % 2:
        cut = min(cut, line.rfind("`"))
    return markdown[: line_start + cut]


def answer_chunks(markdown: str, budget: int) -> tuple[list[str], bool]:
    """The answer text converted and split into ≤ ``budget``-character mrkdwn chunks, at most
    ``MAX_ANSWER_MESSAGES`` of them; and whether the text was cut short to fit them.

    The last possible chunk always keeps room for ``TRUNCATED``, so the cut is stable: chunks
    never change once text follows them, and the last one stops growing once it overflows."""
    pieces = split_markdown(
        markdown,
        budget,
        to_mrkdwn,
        max_pieces=MAX_ANSWER_MESSAGES,
        last_budget=budget - len(TRUNCATED) - 2,
    )
    truncated = pieces[-1].end < len(markdown)
    return [to_mrkdwn(piece.markdown(markdown)) or "…" for piece in pieces], truncated


def _status_line(state: AnswerState) -> str:
    if state.phase is Phase.WAITING and state.after_previous:
        line = AFTER_PREVIOUS
    elif state.phase is Phase.WAITING and state.queued:
        line = IN_LINE
    elif state.phase is Phase.WAITING or state.activity is None:
        line = PLACEHOLDER
    else:
        line = f"{_ICONS[state.activity.kind]} {escape(activity_text(state.activity))}"
    return f"{line}\n{STILL_WORKING}" if state.stalled else line


def answer_markdown(markdown: str, *, max_chars: int = NATIVE_MAX_CHARS) -> str:
    """The answer as Markdown for native streaming (Slack renders it): links that could deceive
    broken into text (:func:`bot.render.links.guard_markdown`), mention syntax broken, and past
    ``max_chars`` cut after the last whitespace and ended with ``TRUNCATED``.

    Append-only as the text grows: native streaming sends text up to its last whitespace, and the
    cut is the last whitespace of the first ``max_chars`` characters, so everything already sent
    is kept as it was, and once chosen the cut never moves.
    """
    if len(markdown) <= max_chars:
        return plain(guard_markdown(markdown))
    head = markdown[:max_chars]
    cut = max(head.rfind(" "), head.rfind("\n")) + 1
    if cut == 0:  # one endless word: nothing of it was sent yet
        cut = max_chars
        while cut > 0 and not is_grapheme_boundary(markdown, cut):
            cut -= 1
    kept = markdown[:cut]
    fence = _open_fence(kept)
    if fence:  # close the code block the cut left open, so the note shows as text
        kept += ("" if kept.endswith("\n") else "\n") + fence
    return plain(guard_markdown(kept)) + f"\n\n{TRUNCATED}\n"


def _open_fence(markdown: str) -> str:
    """The fence (```` ``` ```` or ``~~~`` run) of a code block still open at the end, or ""."""
    fence = ""
    for line in markdown.split("\n"):
        body = line.strip()
        run = body[: len(body) - len(body.lstrip(body[:1]))] if body[:1] in ("`", "~") else ""
        if not fence and len(run) >= 3:
            fence = run
        elif fence and run.startswith(fence) and body == run:
            fence = ""
    return fence
