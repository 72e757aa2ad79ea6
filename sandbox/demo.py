"""`powabot demo`: the production bot against local Slack and Powabase stand-ins, narrated.

Everything the bot does here is the code `powabot run` runs; only the base URLs point at the
stand-ins in `sandbox/`. The Powabase stand-in is provisioned through `provisioning/` first, so
the answers come from the files in `seed-content/` that were just uploaded.

The demo is a tool of the source checkout, not part of the product: it lives beside the
stand-ins, `bot/` never imports it, and the image ships neither. `powabot demo` finds it
through the `powabot.commands` entry point in pyproject.toml (`python -m sandbox.demo` works
too, from the checkout's root).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO, cast

import httpx

from bot.logs import configure_logging
from bot.service import Powabot
from bot.settings import Settings
from provisioning.apply import provision
from provisioning.progress import NullProgress
from provisioning.spec import load_spec
from sandbox.powabase import PowabaseStandin
from sandbox.slack import SlackStandin

REPO = Path(__file__).resolve().parent.parent
TEAM_USER = "U0ALICE"
SUPPORT_CHANNEL = "C0SUPPORT"
DM = "D0ALICE"
ESCALATIONS = "C0ESCALATE"  # the support team's escalation channel
AGENT = "U0AGENT"  # a person on the support team
STOP_QUESTION = "Walk me through every step of migrating from the Starter plan to Pro."
SCRIPT: list[tuple[str, str]] = [
    ("dm", "What's the refund window if I cancel an annual Pro plan?"),
    ("mention", "How do I authenticate against your REST API?"),
    ("followup", "And what happens when I hit the rate limit?"),
]


@dataclass
class Turn:
    label: str
    question: str
    channel: str
    thread_ts: str = ""
    t_asked: float = 0.0
    lines: list[str] = field(default_factory=list)


def _short(text: str, width: int = 96) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _indent(text: str, prefix: str = "    │ ") -> str:
    return "\n".join(prefix + line for line in text.splitlines() or [""])


def _trace_text(message: Any) -> str:
    """What a reader sees of the trace message: its container children, else its fallback."""
    parts: list[str] = []
    for block in message.blocks or []:
        if block.get("type") == "container":
            title = block.get("title", "")
            title = title.get("text", "") if isinstance(title, dict) else title
            collapsed = "collapsed by default" if block.get("default_collapsed") else "expanded"
            parts.append(f"▸ {title}  ({collapsed}; click to open)")
            for child in block.get("child_blocks", []):
                parts.extend(_block_texts(child))
        else:
            parts.extend(_block_texts(block))
    if not parts:
        for attachment in message.attachments or []:
            parts.append(str(attachment.get("title", "")))
            parts.append(str(attachment.get("text", "")))
    return "\n".join(p for p in parts if p) or message.text


def _block_texts(block: dict[str, Any]) -> list[str]:
    out: list[str] = []
    text = block.get("text")
    if isinstance(text, dict):
        out.append(str(text.get("text", "")))
    elif isinstance(text, str):
        out.append(text)
    for element in block.get("elements", []) or []:
        if isinstance(element, dict) and "text" in element:
            value = element["text"]
            out.append(value if isinstance(value, str) else str(value.get("text", "")))
    for fld in block.get("fields", []) or []:
        out.append(str(fld.get("text", "")))
    return out


def _chunks(call: Any) -> list[dict[str, Any]]:
    chunks = call.args.get("chunks") or []
    return [c for c in chunks if isinstance(c, dict)]


def call_text(call: Any) -> str:
    """The answer text a write carries: `text`, or its `markdown_text` chunks."""
    texts = [str(c.get("text", "")) for c in _chunks(call) if c.get("type") == "markdown_text"]
    return "".join(texts) or str(call.args.get("text", ""))


def _card_lines(call: Any) -> list[str]:
    lines: list[str] = []
    for chunk in _chunks(call):
        if chunk.get("type") == "plan_update":
            lines.append(f"plan: {chunk.get('title', '')}")
        elif chunk.get("type") == "task_update":
            said = chunk.get("details") or chunk.get("output") or ""
            sources = chunk.get("sources") or []
            line = f"task card “{chunk.get('title')}” → {chunk.get('status')}"
            line += f": {said}" if said else ""
            line += f" [{len(sources)} source link(s)]" if sources else ""
            lines.append(line)
    return lines


class Narrator:
    """Prints each Slack write as the user would see it happen."""

    def __init__(self, slack: Any, out: TextIO) -> None:
        self.slack = slack
        self.out = out
        self.turn: Turn | None = None
        slack.on_call.append(self.on_call)

    def say(self, elapsed: float, what: str) -> None:
        print(f"  [{elapsed:6.2f}s] bot {what}", file=self.out)

    def on_call(self, call: Any) -> None:
        turn = self.turn
        if turn is None or call.status != 200 or call.error:
            return
        elapsed = call.t - turn.t_asked
        text = call_text(call)
        method = call.method
        if method == "chat.postMessage":
            is_trace = bool(call.args.get("blocks") or call.args.get("attachments")) and (
                "trace" in text.lower() or "delegat" in text.lower()
            )
            what = "posts the delegation trace" if is_trace else "posts"
            self.say(elapsed, f"{what}: {_short(text)}")
        elif method == "chat.update":
            self.say(elapsed, f"edits:  {_short(text)}")
        elif method == "assistant.threads.setStatus":
            shown = call.args.get("loading_messages") or []
            if shown:
                self.say(elapsed, f"status line: “{_short(str(shown[0]), 80)}” (no message)")
        elif method == "chat.postEphemeral":
            self.say(elapsed, f"tells only {call.args.get('user')}: {_short(text)}")
        elif method == "assistant.threads.setSuggestedPrompts":
            prompts = call.args.get("prompts") or []
            titles = ", ".join(f"“{p.get('title')}”" for p in prompts if isinstance(p, dict))
            self.say(elapsed, f"greets: “{call.args.get('title', '')}” with prompts {titles}")
        elif method == "agents.sessions.setStatus":
            status = call.args.get("status")
            stop = " (Slack shows Stop)" if status == "processing" else ""
            self.say(elapsed, f"agent session → {status}{stop}")
        elif method in ("chat.startStream", "chat.appendStream", "chat.stopStream"):
            verb = {
                "chat.startStream": "starts a native stream"
                + f" ({call.args.get('task_display_mode', 'timeline')} view)",
                "chat.appendStream": "streams",
                "chat.stopStream": "stops the stream",
            }[method]
            self.say(elapsed, verb + (f": {_short(text)}" if text.strip() else ""))
            for line in _card_lines(call):
                print(f"            {_short(line, 110)}", file=self.out)


async def _open_dm(slack: Any, narrator: Narrator, out: TextIO) -> None:
    """Alice opens the bot's DM (agent view): the greeting and suggested prompts."""
    print("  alice opens the bot's DM:", file=out)
    turn = Turn("open", "", DM)
    narrator.turn = turn
    turn.t_asked = time.monotonic()
    before = len(slack.calls_to("assistant.threads.setSuggestedPrompts"))
    await slack.app_home_opened(user=TEAM_USER, channel=DM)
    await slack.wait_for(
        lambda: len(slack.calls_to("assistant.threads.setSuggestedPrompts")) > before, timeout=10
    )
    narrator.turn = None
    print("", file=out)


async def _stop_turn(
    slack: Any, bot: Powabot, powabase: Any, narrator: Narrator, out: TextIO
) -> Turn:
    """Alice asks, and presses Stop while the answer streams."""
    turn = Turn("dm", STOP_QUESTION, DM)
    powabase.context.delta_delay = 0.3  # a slow answer: there is time to press Stop
    print(f"  alice, in a new DM thread: “{turn.question}” — then presses Stop", file=out)
    done_before = bot.answerer.finished
    narrator.turn = turn
    turn.t_asked = time.monotonic()
    runs_before = len(powabase.runs)
    msg = await slack.user_says(user=TEAM_USER, text=turn.question, channel=DM)
    turn.thread_ts = msg.ts

    def first_delta() -> float | None:
        if len(powabase.runs) <= runs_before:
            return None
        return cast(float | None, powabase.runs[-1].t_first_content_delta)

    await slack.wait_for(lambda: first_delta() is not None, timeout=60)
    t_delta = first_delta() or 0.0

    def text_shown() -> bool:
        return any(
            call_text(c).strip() and c.args.get("channel") == DM and c.t >= t_delta
            for c in slack.calls
        )

    await slack.wait_for(text_shown, timeout=30)
    elapsed = time.monotonic() - turn.t_asked
    print(f"  [{elapsed:6.2f}s] alice clicks Stop (agent_session_stopped)", file=out)
    await slack.agent_session_stopped(channel=DM, thread_ts=msg.ts, user=TEAM_USER)
    await slack.wait_for(lambda: bot.answerer.finished > done_before, timeout=30)
    narrator.turn = None
    return turn


def _with_action(message: Any, action_id: str) -> bool:
    return action_id in str(message.blocks or [])


async def _escalation_turn(
    slack: Any, bot: Powabot, narrator: Narrator, out: TextIO, answered: Turn
) -> bool:
    """Alice rates the #support answer "Not helpful", asks for a person; the support team
    resolves it. Whether every step happened."""
    replies = [m for m in slack.thread(answered.channel, answered.thread_ts) if m.is_bot]
    rated = [m for m in replies if _with_action(m, "powabot_feedback")]
    if not rated:
        print("    (no feedback buttons!)", file=out)
        return False
    turn = Turn("escalate", "", answered.channel, answered.thread_ts)
    narrator.turn = turn
    turn.t_asked = time.monotonic()
    print("  alice clicks “Not helpful” under that answer:", file=out)
    before = bot.feedback.handled
    await slack.click(
        user=TEAM_USER,
        channel=answered.channel,
        message_ts=rated[-1].ts,
        action_id="powabot_feedback",
        action_type="feedback_buttons",
        value="negative",
    )
    await slack.wait_for(lambda: bot.feedback.handled > before, timeout=10)
    offers = [e for e in slack.ephemerals if _with_action(e, "powabot_escalate")]
    if not offers:
        return False
    print("  alice clicks “Talk to a person”:", file=out)
    before = bot.support.handled
    await slack.click(
        user=TEAM_USER,
        channel=answered.channel,
        message_ts=offers[-1].ts,
        action_id="powabot_escalate",
    )
    await slack.wait_for(lambda: bot.support.handled > before, timeout=10)
    handed = [m for m in slack.bot_messages(ESCALATIONS) if _with_action(m, "powabot_resolve")]
    if not handed:
        return False
    print("    What the support team sees in #escalations:", file=out)
    print(_indent(_trace_text(handed[-1])), file=out)
    print("  a support agent answers alice in her thread, then clicks “Mark resolved”:", file=out)
    before = bot.support.handled
    await slack.click(
        user=AGENT, channel=ESCALATIONS, message_ts=handed[-1].ts, action_id="powabot_resolve"
    )
    await slack.wait_for(lambda: bot.support.handled > before, timeout=10)
    narrator.turn = None
    resolved = slack.message(ESCALATIONS, handed[-1].ts)
    print(f"    #escalations now shows: {_short(resolved.text)}\n", file=out)
    return "Resolved" in resolved.text


async def _ask(slack: Any, bot: Powabot, turn: Turn, narrator: Narrator, wait: float) -> None:
    done_before = bot.answerer.finished
    narrator.turn = turn
    turn.t_asked = time.monotonic()
    if turn.label == "dm":
        msg = await slack.user_says(user=TEAM_USER, text=turn.question, channel=turn.channel)
        turn.thread_ts = msg.ts
    elif turn.label == "mention":
        msg = await slack.user_says(
            user=TEAM_USER,
            text=turn.question,
            channel=turn.channel,
            channel_type="channel",
            mention=True,
        )
        turn.thread_ts = msg.ts
    else:
        await slack.user_says(
            user=TEAM_USER,
            text=turn.question,
            channel=turn.channel,
            channel_type="channel",
            thread_ts=turn.thread_ts,
        )
    await slack.wait_for(lambda: bot.answerer.finished > done_before, timeout=wait)
    narrator.turn = None


def _first_text_latency(slack: Any, run: Any, thread_ts: str, channel: str) -> float | None:
    """Seconds from the first answer content_delta leaving Powabase to the first Slack edit
    carrying answer text (an edit that contains the start of that delta)."""
    if run.t_first_content_delta is None:
        return None
    names = [p.get("event") for p in run.event_payloads]
    start = names.index("delegation_completed") if "delegation_completed" in names else 0
    first_delta = next(
        (
            p.get("delta", "")
            for p in run.event_payloads[start:]
            if p.get("event") == "content_delta" and p.get("delta", "").strip()
        ),
        "",
    )
    words = [w for w in first_delta.split() if w.isalnum()][:1]
    writes = [
        c
        for c in slack.calls
        if c.method in ("chat.update", "chat.postMessage", "chat.startStream", "chat.appendStream")
    ]
    for call in writes:
        if call.t < run.t_first_content_delta or call.args.get("channel") != channel:
            continue
        text = call_text(call)
        if not words or all(w in text for w in words):
            return float(call.t - run.t_first_content_delta)
    return None


async def run_demo(*, interactive: bool = False, out: TextIO = sys.stdout) -> int:
    configure_logging("console", "warning")
    print("powabot demo", file=out)
    print(
        "  Slack and Powabase are LOCAL STAND-INS on 127.0.0.1 (sandbox/), not the real services."
        "\n  The bot is the production code (slack_bolt AsyncApp over Socket Mode, httpx + SSE);"
        "\n  only SLACK_API_URL and POWABASE_URL point at the stand-ins.\n",
        file=out,
    )
    slack = SlackStandin()
    powabase = PowabaseStandin(delta_delay=0.06, step_delay=0.7)
    await slack.start()
    await powabase.start()
    tmp = tempfile.TemporaryDirectory(prefix="powabot-demo-")
    bot: Powabot | None = None
    try:
        t0 = time.monotonic()
        spec = load_spec(root=REPO)
        async with httpx.AsyncClient(
            base_url=powabase.url,
            headers={"apikey": powabase.api_key, "Authorization": f"Bearer {powabase.api_key}"},
            trust_env=False,
        ) as client:
            result = await provision(client, spec, progress=NullProgress(), poll_interval=0.01)
        if not result.ok or not result.orchestration_id:
            print("provisioning the stand-in failed:", file=out)
            for failed in result.failed_sources:
                print(f"  {failed.describe()}", file=out)
            return 1
        print(
            f"1. Provisioned the Powabase stand-in with `powabot provision`'s code in "
            f"{time.monotonic() - t0:.2f}s: {result.created} resources created, "
            f"{result.uploaded} sources uploaded from seed-content/.\n"
            f"   POWABASE_ORCHESTRATION_ID={result.orchestration_id}\n",
            file=out,
        )
        settings = Settings(
            _env_file=None,
            SLACK_BOT_TOKEN=slack.bot_token,
            SLACK_APP_TOKEN=slack.app_token,
            SLACK_API_URL=slack.api_url,
            POWABASE_URL=powabase.url,
            POWABASE_API_KEY=powabase.api_key,
            POWABASE_ORCHESTRATION_ID=result.orchestration_id,
            POWABOT_STORE=f"sqlite:///{Path(tmp.name) / 'powabot.db'}",
            LOG_FORMAT="console",
            PORT=0,  # health and metrics on a free port: the demo never collides with a bot
            POWABOT_ESCALATION_CHANNEL=ESCALATIONS,
        )
        bot = Powabot(settings)
        await bot.start()
        await slack.wait_connected()
        print("2. The bot is connected over Socket Mode. The conversation:\n", file=out)
        narrator = Narrator(slack, out)
        latencies: list[float] = []
        if interactive:
            await _interactive(slack, bot, narrator, out)
        else:
            turns: list[Turn] = []
            await _open_dm(slack, narrator, out)
            for label, question in SCRIPT:
                channel = "D0ALICE" if label == "dm" else SUPPORT_CHANNEL
                turn = Turn(label, question, channel)
                if label == "followup":
                    turn.thread_ts = turns[-1].thread_ts
                where = {
                    "dm": "in a DM to the bot",
                    "mention": "in #support, @-mentioning the bot",
                    "followup": "in the same #support thread (follow-up)",
                }[label]
                print(f"  alice, {where}: “{question}”", file=out)
                await _ask(slack, bot, turn, narrator, wait=60)
                turns.append(turn)
                _print_thread(slack, turn, out)
                run = powabase.runs[-1]
                latency = _first_text_latency(slack, run, turn.thread_ts, turn.channel)
                if latency is not None:
                    latencies.append(latency)
                print(
                    f"    (routed to {run.delegated_to}; Powabase session {run.session_id})\n",
                    file=out,
                )
            runs = list(powabase.runs)
            same = runs[-1].session_id_sent == runs[-2].session_id
            escalated = await _escalation_turn(slack, bot, narrator, out, turns[-1])
            stop_turn = await _stop_turn(slack, bot, powabase, narrator, out)
            _print_thread(slack, stop_turn, out)
            stopped = powabase.runs[-1]
            print(f"    (Powabase run {stopped.run_id}: {stopped.status})\n", file=out)
            print("3. What was measured:", file=out)
            print(
                f"  follow-up continued the thread's Powabase session: {'yes' if same else 'NO'}",
                file=out,
            )
            if latencies:
                print(
                    "  first content_delta leaving Powabase → first Slack edit carrying text: "
                    + ", ".join(f"{x * 1000:.0f} ms" for x in latencies)
                    + f" (median {statistics.median(latencies) * 1000:.0f} ms)",
                    file=out,
                )
            writes = ("chat.postMessage", "chat.update", "chat.startStream", "chat.appendStream")
            calls = [c for c in slack.calls if c.method in (*writes, "chat.stopStream")]
            print(
                f"  Slack write calls: {len(calls)} for {len(turns)} answers; 429s: "
                f"{sum(1 for c in slack.calls if c.status == 429)}",
                file=out,
            )
            print(
                f"  negative rating → hand-over to a person → resolved: "
                f"{'yes' if escalated else 'NO'}",
                file=out,
            )
            if not same or not escalated:
                return 1
        print("\nDemo finished: Slack and Powabase were local stand-ins.", file=out)
        return 0
    finally:
        if bot is not None:
            await bot.stop()
        await powabase.stop()
        await slack.stop()
        tmp.cleanup()


def _print_thread(slack: Any, turn: Turn, out: TextIO) -> None:
    bot_msgs = [m for m in slack.thread(turn.channel, turn.thread_ts) if m.is_bot]
    answer_msgs = [m for m in bot_msgs if m.created >= turn.t_asked]
    if not answer_msgs:
        print("    (no reply!)", file=out)
        return
    *answer, trace = answer_msgs if len(answer_msgs) > 1 else (*answer_msgs, None)
    print("    What alice sees in the thread — the answer:", file=out)
    for message in answer:
        print(_indent(message.text), file=out)
    if trace is not None:
        print("    …and the delegation trace:", file=out)
        print(_indent(_trace_text(trace)), file=out)


async def _interactive(slack: Any, bot: Powabot, narrator: Narrator, out: TextIO) -> None:
    print("  Type a question (empty line or Ctrl-D to stop); each starts a DM thread.", file=out)
    loop = asyncio.get_running_loop()
    while True:
        print("  you> ", end="", file=out, flush=True)
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line.strip():
            return
        turn = Turn("dm", line.strip(), "D0YOU")
        await _ask(slack, bot, turn, narrator, wait=120)
        _print_thread(slack, turn, out)


def main(argv: list[str] | None = None) -> int:
    """`powabot demo [--interactive]` (and `python -m sandbox.demo`): the exit status."""
    parser = argparse.ArgumentParser(
        prog="powabot demo",
        description="Play a short conversation against local Slack and Powabase stand-ins.",
    )
    parser.add_argument("--interactive", action="store_true", help="type your own questions")
    args = parser.parse_args(argv)
    try:
        return asyncio.run(run_demo(interactive=args.interactive))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
