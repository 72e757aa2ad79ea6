"""The chaos phase: answers while both stand-ins inject faults at random (issue 14).

The Slack stand-in fails a share of write calls with 429 storms (`Retry-After` in seconds and as
an HTTP date, and `ratelimited` with HTTP 200), Envoy's plain-text 503, an HTML 502, connection
resets and slow answers; the Powabase stand-in fails a share of runs with a 5xx (JSON or plain
text), a stall longer than the bot's upstream timeout, or a mid-stream drop. Every question then
ends in one of three ways, read from what Slack finally shows in its thread:

* complete — the exact rendered answer (as in the load phases);
* notice — a reply carrying one of the bot's failure notices; the notice's cause is recorded;
* lost — neither (a placeholder left hanging, a reply with stale or missing text, or silence).

The goal is 0 lost.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.config import BenchConfig
from bench.measure import Asked, Outcome, notice_kind
from bench.phases import FINISH_POLL, PhaseResult, _deadline, _finish, _world
from bot.render.answer import AFTER_PREVIOUS, IN_LINE, PLACEHOLDER, STILL_WORKING, TYPING
from bot.state import ErrorKind
from sandbox.slack import StoredMessage

SLACK_SLOW_S = 0.5  # a "slow" Slack answer takes this long (unscaled wall seconds)
UPSTREAM_TIMEOUT_S = 3.0  # the bot's POWABOT_UPSTREAM_TIMEOUT in this phase (wall seconds)
STALL_S = 4.5  # an upstream stall: longer than the timeout above, so it ends in a notice


@dataclass(frozen=True)
class ChaosOutcome:
    index: int
    channel: str
    thread_ts: str
    result: str  # "complete" | "notice" | "lost"
    cause: str | None  # the ErrorKind named by the notice
    problem: str | None  # why a lost answer counts as lost


# What a reply shows only while an answer is still on its way: any of these left in a thread
# once everything settled is a user looking at an answer that never comes.
IN_PROGRESS = (PLACEHOLDER, IN_LINE, AFTER_PREVIOUS, STILL_WORKING)


def hanging(replies: Sequence[StoredMessage]) -> str | None:
    """Why the thread still looks unfinished (a placeholder, an "in line" or "still working"
    status, a typing indicator, an open native stream), or None."""
    for reply in replies:
        for marker in IN_PROGRESS:
            if marker in reply.text:
                return f"a reply still shows {marker!r}"
        if reply.text.endswith(TYPING):
            return "a reply still ends with the typing indicator"
        if reply.stream_state == "streaming":
            return "a native stream was never stopped"
    return None


def classify(outcome: Outcome, replies: Sequence[StoredMessage]) -> ChaosOutcome:
    """complete / notice (with its cause) / lost, for one question.

    Complete: the exact rendered answer (`Outcome.exact`). Notice: the thread's last reply that
    carries a notice names a cause the user can act on, and nothing in the thread still looks
    in progress. Anything else is lost, including a notice for a bug on our side (INTERNAL),
    which names no cause.
    """
    base: dict[str, Any] = {
        "index": outcome.index,
        "channel": outcome.channel,
        "thread_ts": outcome.thread_ts,
    }
    if outcome.exact and outcome.run_status is not None:
        return ChaosOutcome(**base, result="complete", cause=None, problem=None)
    if not replies:
        return ChaosOutcome(**base, result="lost", cause=None, problem="no reply at all")
    stuck = hanging(replies)
    kinds = [kind for kind in (notice_kind(r.text) for r in replies) if kind is not None]
    if stuck is None and kinds and kinds[-1] is not ErrorKind.INTERNAL:
        return ChaosOutcome(**base, result="notice", cause=kinds[-1].value, problem=None)
    if stuck is not None:
        problem = stuck
    elif kinds:
        problem = "the notice names no cause (internal error)"
    else:
        problem = outcome.problem or f"last reply shows {replies[-1].text[:80]!r}"
    return ChaosOutcome(**base, result="lost", cause=None, problem=problem)


def chaos_outcomes(
    result: PhaseResult, asked: Sequence[Asked], replies: dict[int, list[StoredMessage]]
) -> list[ChaosOutcome]:
    by_index = {o.index: o for o in result.outcomes}
    return [classify(by_index[a.index], replies.get(a.index, [])) for a in asked]


async def chaos_phase(cfg: BenchConfig, workdir: Path, questions: list[str]) -> PhaseResult:
    """`cfg.chaos_answers` questions asked at once under random Slack and Powabase faults."""
    scale = cfg.load_scale()
    extra = {"POWABOT_UPSTREAM_TIMEOUT": repr(UPSTREAM_TIMEOUT_S)}
    async with _world(cfg, "chaos", scale, workdir, questions, extra_settings=extra) as world:
        slack_chaos = world.slack.chaos(
            cfg.chaos_slack_rate,
            seed=cfg.chaos_seed,
            slow=SLACK_SLOW_S,
            retry_after=1.0,
        )
        world.powabase.faults.chaos(
            rate=cfg.chaos_powabase_rate, seed=cfg.chaos_seed, stall=STALL_S
        )
        world.harness_lag.reset()
        t0 = time.monotonic()
        count = cfg.chaos_answers
        for i in range(count):
            if i % 2 == 0:
                await world.ask(user=f"U0CX{i:04d}", channel=f"D0CX{i:04d}", mention=False)
            else:
                channel = f"C0CX{(i // 2) // cfg.per_channel:03d}"
                await world.ask(user=f"U0CX{i:04d}", channel=channel, mention=True)
        budget = 120 + 10 * scale.seconds(2 * count * 60 / 50 + count * 2)
        stats = await world.wait_finished(count, _deadline(budget), poll=FINISH_POLL)
        what = (
            f"{count} answers at once (half DMs); Slack faults on {cfg.chaos_slack_rate:.0%} "
            f"of writes, Powabase faults on {cfg.chaos_powabase_rate:.0%} of runs "
            f"(seed {cfg.chaos_seed})"
        )
        result = await _finish(world, what, scale, t0, stats, [])
        replies = {
            a.index: [m for m in world.slack.thread(a.channel, a.thread_ts) if m.is_bot]
            for a in world.asked
        }
        result.chaos = {
            "outcomes": chaos_outcomes(result, world.asked, replies),
            "slack_faults": dict(slack_chaos.counts) if slack_chaos is not None else {},
            "powabase_faults": dict(world.powabase.faults.chaos_drawn),
        }
        return result


def chaos_summary(result: PhaseResult) -> dict[str, Any]:
    """Counts for the table and the JSON: results, causes, faults served, lost examples."""
    found: list[ChaosOutcome] = result.chaos.get("outcomes", [])
    results = Counter(o.result for o in found)
    return {
        "complete": results["complete"],
        "notice": results["notice"],
        "lost": results["lost"],
        "causes": dict(Counter(o.cause for o in found if o.cause)),
        "slack_faults": result.chaos.get("slack_faults", {}),
        "powabase_faults": result.chaos.get("powabase_faults", {}),
        "lost_examples": [
            {"index": o.index, "channel": o.channel, "thread_ts": o.thread_ts, "why": o.problem}
            for o in found
            if o.result == "lost"
        ][:20],
    }
