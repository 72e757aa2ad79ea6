"""The replicas phase: three bot processes on one Postgres (issue 11).

Three real bot processes (`bench/bot_child.py`, Socket Mode, the Postgres store) share one
throwaway PostgreSQL cluster (`sandbox/pgcluster.py`) and the rate-limited stand-ins. The Slack
stand-in hands each envelope to a random one of the three connections and redelivers every event
once, in a new envelope, down another connection, as Slack may.

1. Load: `replicas_answers` questions at once → exactly one upstream run per question, every
   final answer exact, no 429 (one budget for all replicas, kept in Postgres).
2. Takeover: `replicas_kill_answers` more questions with slow upstream streams; once they are all
   streaming, one replica is SIGKILLed. Every answer must still end complete, in its own Slack
   message: the survivors take the dead replica's answers over when its leases expire. Measured
   for each answer the dead replica held (its `slack_answers` rows): kill → a survivor's first
   write to it, and kill → the moment its message first showed the final text.
Also reported: the database time per budget reservation, p50 / p99.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from bench.bot_launcher import BotProcess
from bench.config import BenchConfig
from bench.details import RunDetails
from bench.expected import expected_messages, native_text
from bench.figures import Figure
from bench.measure import Asked, Outcome, outcomes, writes_by_thread
from bench.scale import TimeScale
from bench.stats import percentile
from bench.world import SEED_CONTENT, ask_next, bot_env
from sandbox.pgcluster import PgCluster
from sandbox.powabase import PowabaseStandin
from sandbox.slack import SlackStandin

REPLICAS = 3
POLL = 0.25
RESUME_GOAL_S = 15.0  # "a surviving replica notices the expired lease within about 15 s"


@dataclass
class ReplicaFleet:
    """The stand-ins, the bot processes (some maybe killed) and the questions asked."""

    slack: SlackStandin
    powabase: PowabaseStandin
    bots: list[BotProcess]
    questions: list[str]
    dsn: str
    asked: list[Asked] = field(default_factory=list)
    details: RunDetails = field(default_factory=RunDetails)

    async def ask(self, *, user: str, channel: str, mention: bool) -> Asked:
        return await ask_next(self.slack, self.questions, self.asked, user, channel, mention)

    def measure(self, asked: Sequence[Asked]) -> list[Outcome]:
        return outcomes(self.slack, self.powabase.runs, asked, details=self.details.found)

    async def wait_exact(self, asked: Sequence[Asked], deadline: float) -> list[Outcome]:
        """Poll the Slack side until every answer of `asked` is exact, or the deadline."""
        while True:
            await self.details.fetch(self.powabase, self.powabase.runs)
            found = self.measure(asked)
            if all(o.exact for o in found) or time.monotonic() >= deadline:
                return found
            await asyncio.sleep(POLL)


@dataclass
class ReplicasResult:
    name: str
    description: str
    scale: float
    asked: int
    upstream_runs: int  # runs of the load part, one per question when nothing is answered twice
    load_outcomes: list[Outcome]
    kill_outcomes: list[Outcome]
    ratelimited: int
    taken_over: int  # answers the killed replica held
    takeover_s: list[float]  # kill -> last write of each of those answers (its final text)
    resumed_s: list[float]  # kill -> first write of a survivor to each of those answers
    db_ms: list[float]  # budget reservation times (ms) reported by the surviving replicas
    duplicates: int  # threads with more than one answer message
    notes: list[str] = field(default_factory=list)


def answer_messages(slack: SlackStandin, asked: Asked) -> int:
    """Bot messages in the thread that are answers (trace messages carry attachments/blocks)."""
    return sum(
        1
        for m in slack.thread(asked.channel, asked.thread_ts)
        if m.is_bot and not m.attachments and not m.blocks
    )


@contextlib.asynccontextmanager
async def fleet(
    cfg: BenchConfig, scale: TimeScale, workdir: Path, questions: list[str], delta_delay: float
) -> AsyncIterator[ReplicaFleet]:
    cluster = await asyncio.to_thread(PgCluster.start)
    try:
        dsn = await cluster.create_database("powabot_bench")
        slack = SlackStandin(
            rate_limits=scale.standin_limits(), socket_seed=cfg.chaos_seed, redeliver_once=True
        )
        powabase = PowabaseStandin(delta_delay=delta_delay)
        await slack.start()
        await powabase.start()
        bots: list[BotProcess] = []
        try:
            orchestration_id = powabase.seed_from(SEED_CONTENT)
            settings = {
                **bot_env(slack, powabase, orchestration_id),
                "POWABOT_STORE": dsn,
                "POWABOT_MAX_REPLICAS": str(REPLICAS),
                **scale.bot_settings(),
            }
            for n in range(REPLICAS):
                bots.append(
                    await BotProcess.start(
                        settings, scale.bot_budgets(), workdir / f"replica{n}-bot.log"
                    )
                )
            await poll_until(lambda: slack.hub.num_connections >= REPLICAS, 30)
            yield ReplicaFleet(slack, powabase, bots, questions, dsn)
        finally:
            for bot in bots:
                await bot.kill()
            await powabase.stop()
            await slack.stop()
    finally:
        await asyncio.to_thread(cluster.stop)


async def poll_until(done: Callable[[], bool], seconds: float, step: float = 0.05) -> bool:
    """Poll `done` until it holds or `seconds` pass; whether it held."""
    deadline = time.monotonic() + seconds
    while True:
        if done():
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(step)


def _ask_layout(i: int, per_channel: int) -> dict[str, Any]:
    if i % 2 == 0:
        return {"user": f"U0RP{i:04d}", "channel": f"D0RP{i:04d}", "mention": False}
    return {
        "user": f"U0RP{i:04d}",
        "channel": f"C0RP{(i // 2) // per_channel:03d}",
        "mention": True,
    }


async def replicas_phase(cfg: BenchConfig, workdir: Path, questions: list[str]) -> ReplicasResult:
    scale = cfg.load_scale()
    notes: list[str] = []
    async with fleet(cfg, scale, workdir, questions, scale.seconds(cfg.delta_delay)) as f:
        # 1. load
        for i in range(cfg.replicas_answers):
            await f.ask(**_ask_layout(i, cfg.per_channel))
        load = list(f.asked)
        budget = 60 + 10 * scale.seconds(2 * len(load) * 60 / 50 + len(load) * 2)
        load_outcomes = await f.wait_exact(load, time.monotonic() + budget)
        tags = {a.tag for a in load}
        # 2. takeover: slow streams, then SIGKILL one replica while they are all in flight
        f.powabase.context.delta_delay = cfg.replicas_kill_delta_delay
        before = len(f.powabase.runs)
        for i in range(cfg.replicas_kill_answers):
            await f.ask(**_ask_layout(cfg.replicas_answers + i, cfg.per_channel))
        kill_batch = f.asked[len(load) :]
        await poll_until(lambda: len(f.powabase.runs) - before >= len(kill_batch), 30)
        # the victim: the replica holding the most answers right now, and exactly which ones
        held = [int((await bot.stats())["in_flight"]) for bot in f.bots]
        victim = f.bots[held.index(max(held))]
        victim_threads = await _held_by(f, victim.proc.pid, kill_batch)
        t_kill = time.monotonic()
        await victim.kill()
        kill_outcomes = await f.wait_exact(kill_batch, time.monotonic() + 120)
        by_thread = writes_by_thread(f.slack)
        resumed = [
            min(later) - t_kill
            for thread in victim_threads
            if (later := [c.t for c in by_thread.get(thread, []) if c.t > t_kill])
        ]
        takeover = [
            t - t_kill
            for a in kill_batch
            if (a.channel, a.thread_ts) in victim_threads
            and (t := _final_text_at(f, a)) is not None
        ]
        runs_per_kill_question = Counter(
            token
            for run in f.powabase.runs[before:]
            for token in (w.strip("[]()") for w in run.message.split())
        )
        extra_runs = sum(
            max(
                0,
                runs_per_kill_question[a.tag]
                - (2 if (a.channel, a.thread_ts) in victim_threads else 1),
            )
            for a in kill_batch
        )
        if extra_runs:
            notes.append(
                f"{extra_runs} upstream run(s) beyond one per question (two if taken over)"
            )
        db_ms: list[float] = []
        for bot in f.bots:
            if bot is victim:
                continue
            stats = await bot.stats()
            db_ms += [1000 * s for s in stats.get("budget_db_s", [])]
        duplicates = sum(1 for a in f.asked if answer_messages(f.slack, a) > 1)
        upstream_runs = sum(  # recounted at the end: a late duplicate run counts too
            1
            for run in f.powabase.runs
            for token in {w.strip("[]()") for w in run.message.split()}
            if token in tags
        )
        ratelimited = f.slack.ratelimited_count
        if len(victim_threads) == 0:
            notes.append("the killed replica held no answer at the kill (nothing to take over)")
    what = (
        f"{REPLICAS} bot processes on one Postgres; {cfg.replicas_answers} questions at once, "
        f"then {cfg.replicas_kill_answers} slow ones and one replica SIGKILLed mid-answer; every "
        "event delivered twice, to different connections"
    )
    return ReplicasResult(
        name="replicas",
        description=what,
        scale=scale.factor,
        asked=len(load) + cfg.replicas_kill_answers,
        upstream_runs=upstream_runs,
        load_outcomes=load_outcomes,
        kill_outcomes=kill_outcomes,
        ratelimited=ratelimited,
        taken_over=len(victim_threads),
        takeover_s=takeover,
        resumed_s=resumed,
        db_ms=db_ms,
        duplicates=duplicates,
        notes=notes,
    )


async def _held_by(f: ReplicaFleet, pid: int, batch: Sequence[Asked]) -> set[tuple[str, str]]:
    """The threads of `batch` whose answer the replica with process id `pid` holds (its lease in
    `slack_answers`, sql/009: owner `host:pid:random`)."""
    conn = await asyncpg.connect(f.dsn)
    try:
        rows = await conn.fetch(
            "select channel_id, message_ts from public.slack_answers"
            " where status = 'running' and split_part(owner, ':', 2) = $1",
            str(pid),
        )
    finally:
        await conn.close()
    held = {(r["channel_id"], r["message_ts"]) for r in rows}
    return {(a.channel, a.thread_ts) for a in batch if (a.channel, a.thread_ts) in held}


def _final_text_at(f: ReplicaFleet, asked: Asked) -> float | None:
    """When the answer message of `asked` first showed its final text (its edit history), as
    the classic render or as natively streamed Markdown (the sources that follow not needed)."""
    runs = [r for r in f.powabase.runs if asked.tag in r.message]
    if not runs:
        return None
    expected, _trace = expected_messages(runs[-1])
    replies = [m for m in f.slack.thread(asked.channel, asked.thread_ts) if m.is_bot]
    if not expected or not replies:
        return None
    wants = {expected[0].text, native_text(runs[-1]).rstrip()}
    first = replies[0]
    times = [t for t, text in first.edits if text in wants or text.rstrip() in wants]
    if times:
        return min(times)
    return first.created if first.text in wants and not first.edits else None


def replicas_figures(r: ReplicasResult) -> list[Figure]:
    """The replicas phase's figures with their goals."""
    load = len(r.load_outcomes)
    load_exact = sum(1 for o in r.load_outcomes if o.exact)
    kill_exact = sum(1 for o in r.kill_outcomes if o.exact)
    resumed99 = percentile(r.resumed_s, 99)
    took50, took99 = percentile(r.takeover_s, 50), percentile(r.takeover_s, 99)
    db50, db99 = percentile(r.db_ms, 50), percentile(r.db_ms, 99)

    def seconds(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.1f} s"

    return [
        Figure("replicas_runs", r.name, "upstream runs for the questions asked at once",
               float(r.upstream_runs), f"{r.upstream_runs} for {load} questions", f"= {load}",
               r.upstream_runs == load),
        Figure("replicas_exact", r.name, "final answers exact (questions asked at once)",
               100.0 * load_exact / load if load else None, f"{load_exact}/{load}", "100 %",
               load_exact == load),
        Figure("replicas_429", r.name, "HTTP 429 received (3 replicas, one budget)",
               float(r.ratelimited), str(r.ratelimited), "0", r.ratelimited == 0),
        Figure("replicas_duplicates", r.name, "threads with more than one answer message",
               float(r.duplicates), str(r.duplicates), "0", r.duplicates == 0),
        Figure("replicas_kill_exact", r.name,
               f"answers complete after SIGKILL of a replica ({r.taken_over} it held)",
               100.0 * kill_exact / len(r.kill_outcomes) if r.kill_outcomes else None,
               f"{kill_exact}/{len(r.kill_outcomes)}", "100 %",
               kill_exact == len(r.kill_outcomes) and r.taken_over > 0),
        Figure("replicas_resumed_p99", r.name, "kill -> a survivor writes to each held answer, p99",
               resumed99, seconds(resumed99), f"≤ {RESUME_GOAL_S:g} s",
               None if resumed99 is None else resumed99 <= RESUME_GOAL_S),
        Figure("replicas_takeover", r.name, "kill -> final text of each held answer, p50 / p99",
               took99, f"{seconds(took50)} / {seconds(took99)}", "info", None),
        Figure("replicas_db_ms", r.name, "database time per budget reservation, p50 / p99",
               db99, "n/a" if db50 is None or db99 is None else f"{db50:.2f} / {db99:.2f} ms",
               "info", None),
    ]  # fmt: skip


def summary_figures(r: ReplicasResult) -> dict[str, Any]:
    load_exact = sum(1 for o in r.load_outcomes if o.exact)
    kill_exact = sum(1 for o in r.kill_outcomes if o.exact)
    return {
        "upstream_runs": r.upstream_runs,
        "load_asked": len(r.load_outcomes),
        "load_exact": load_exact,
        "kill_asked": len(r.kill_outcomes),
        "kill_exact": kill_exact,
        "taken_over": r.taken_over,
        "resumed_p50_s": percentile(r.resumed_s, 50),
        "resumed_p99_s": percentile(r.resumed_s, 99),
        "takeover_p50_s": percentile(r.takeover_s, 50),
        "takeover_p99_s": percentile(r.takeover_s, 99),
        "db_ms_p50": percentile(r.db_ms, 50),
        "db_ms_p99": percentile(r.db_ms, 99),
        "ratelimited": r.ratelimited,
        "duplicates": r.duplicates,
    }
