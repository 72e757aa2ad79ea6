"""The benchmark phases; each runs in a fresh world and returns a `PhaseResult`."""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.config import BenchConfig
from bench.details import RunDetails
from bench.expected import complete_written
from bench.measure import PREFIX_WORDS, WRITE_METHODS, Outcome, outcomes
from bench.scale import TimeScale
from bench.stats import summary
from bench.world import World, open_world
from sandbox.powabase import RunRecord

FINISH_POLL = 0.1


@dataclass
class PhaseResult:
    """What one phase measured; figures are computed from these in `bench.report`."""

    name: str
    description: str
    scale: float
    asked: int
    finished: int
    duration_s: float  # first question posted -> last Slack write of the phase
    ratelimited: int  # 429 answers the Slack stand-in gave in this phase
    outcomes: list[Outcome]
    bot_stats: dict[str, Any]  # the bot process's last stats (lag window, peak RSS)
    ready_stats: dict[str, Any]  # the same right after start-up, before any question
    floor_s: float  # the shortest duration Slack's limits allow for this phase's writes
    peak_upstream_streams: int
    redeliveries: int  # Socket Mode envelopes the stand-in had to send again (slow acks)
    harness_lag: dict[str, Any]  # loop lag of this (stand-in) process: is the harness keeping up?
    log_path: str
    notes: list[str] = field(default_factory=list)
    chaos: dict[str, Any] = field(default_factory=dict)  # the chaos phase's own findings


def peak_overlap(runs: Sequence[RunRecord]) -> int:
    """Most upstream streams open at the same moment (first to last event of each run)."""
    edges: list[tuple[float, int]] = []
    for run in runs:
        if run.events:
            edges.append((run.events[0][0], 1))
            edges.append((run.events[-1][0], -1))
    edges.sort(key=lambda e: (e[0], e[1]))  # a stream ending at t closes before one opening at t
    peak = current = 0
    for _t, step in edges:
        current += step
        peak = max(peak, current)
    return peak


def slack_floor(world: World, scale: TimeScale, answers: int) -> float:
    """Seconds Slack's limits force on this phase: one final edit per answer against the
    workspace chat.update bucket, each channel's posts against its chat.postMessage bucket,
    and the longest upstream stream (whichever is longest)."""
    limits = scale.standin_limits()
    edit_rate = limits.update_per_minute_per_workspace / 60
    edit_floor = max(0, answers - limits.update_burst) / edit_rate
    posts = Counter(
        str(c.args.get("channel"))
        for c in world.slack.calls_to("chat.postMessage")
        if c.status == 200 and c.error is None
    )
    post_floor = max(
        (
            max(0, n - limits.post_burst) / limits.post_per_second_per_channel
            for n in posts.values()
        ),
        default=0.0,
    )
    longest = max(
        (r.events[-1][0] - r.events[0][0] for r in world.powabase.runs if r.events), default=0.0
    )
    return max(edit_floor, post_floor, longest)


def _duration(world: World, t0: float) -> float:
    writes = [c.t for c in world.slack.calls if c.method in WRITE_METHODS]
    return max(writes, default=t0) - t0


async def _finish(
    world: World,
    description: str,
    scale: TimeScale,
    t0: float,
    stats: dict[str, Any],
    notes: list[str],
    *,
    prefix_words: int = PREFIX_WORDS,
) -> PhaseResult:
    """Stop the bot (it drains), then measure everything the stand-ins recorded (first text:
    the first `prefix_words` words of the answer shown, see `bench.measure.outcome`)."""
    asked = len(world.asked)
    if stats["finished"] < asked:
        notes.append(
            f"{asked - stats['finished']} of {asked} answers had not reached their final state "
            f"by the deadline ({stats['in_flight']} still in flight)"
        )
    raced = sum(1 for run in world.powabase.runs if complete_written(run))
    if raced:
        notes.append(
            f"{raced} upstream run(s) labelled 'cancelled' by the Powabase stand-in after it "
            "wrote `complete` (the bot closes the stream on `complete`); judged on Slack text"
        )
    harness = {"lag": summary(world.harness_lag.samples), "spikes": world.harness_lag.spikes()}
    final = await world.bot.stop()
    details = await RunDetails().fetch(world.powabase, world.powabase.runs)
    results = outcomes(
        world.slack, world.powabase.runs, world.asked, details=details, prefix_words=prefix_words
    )
    return PhaseResult(
        name=world.name,
        description=description,
        scale=scale.factor,
        asked=asked,
        finished=int(stats["finished"]),
        duration_s=_duration(world, t0),
        ratelimited=world.slack.ratelimited_count,
        outcomes=results,
        bot_stats={**stats, "after_stop": final},
        ready_stats=world.bot.ready,
        floor_s=slack_floor(world, scale, asked),
        peak_upstream_streams=peak_overlap(world.powabase.runs),
        redeliveries=sum(1 for d in world.slack.deliveries if d.retry_attempt > 0),
        harness_lag=harness,
        log_path=str(world.bot.log_path),
        notes=notes,
    )


def _deadline(seconds: float) -> float:
    return time.monotonic() + seconds


def _world(
    cfg: BenchConfig,
    name: str,
    scale: TimeScale,
    workdir: Path,
    questions: list[str],
    *,
    delta_delay: float | None = None,
    scale_stall: bool = True,
    extra_settings: dict[str, str] | None = None,
    delta_size: int | None = None,
) -> contextlib.AbstractAsyncContextManager[World]:
    """`open_world` with this run's lag ticker and diagnosis settings; answer deltas come at the
    configured delay, scaled, unless `delta_delay` (wall seconds) is given."""
    return open_world(
        name,
        scale=scale,
        delta_delay=scale.seconds(cfg.delta_delay) if delta_delay is None else delta_delay,
        workdir=workdir,
        questions=questions,
        scale_stall=scale_stall,
        lag_interval=cfg.lag_interval,
        slow_callback=cfg.slow_callback,
        extra_settings=extra_settings,
        delta_size=delta_size,
    )


async def latency_phase(cfg: BenchConfig, workdir: Path, questions: list[str]) -> PhaseResult:
    """Figures 1-3: answers one after another (the next question when the last is final)."""
    scale = cfg.latency_scale()
    async with _world(cfg, "latency", scale, workdir, questions) as world:
        notes: list[str] = []
        world.harness_lag.reset()
        t0 = time.monotonic()
        stats = await world.bot.stats()
        for i in range(cfg.latency_answers):
            await world.ask(user=f"U0LAT{i % 3}", channel=f"D0LAT{i % 3}", mention=False)
            stats = await world.wait_finished(i + 1, _deadline(30 + scale.seconds(60)))
            if stats["finished"] < i + 1:
                notes.append(f"answer {i + 1} did not finish in time; stopped asking")
                break
        what = (
            f"{cfg.latency_answers} DM answers one after another, "
            f"{cfg.delta_delay:g} s between deltas"
        )
        return await _finish(world, what, scale, t0, stats, notes)


async def load_phase(
    cfg: BenchConfig, workdir: Path, questions: list[str], *, one_channel: bool
) -> PhaseResult:
    """Figure 4: every question posted at once, then wait for every final answer."""
    scale = cfg.load_scale()
    name = "one-channel" if one_channel else "load"
    count = cfg.one_channel_answers if one_channel else cfg.answers
    async with _world(cfg, name, scale, workdir, questions) as world:
        world.harness_lag.reset()
        t0 = time.monotonic()
        for i in range(count):
            if one_channel:
                await world.ask(user=f"U0ONE{i:04d}", channel="C0ONE", mention=True)
            elif i % 2 == 0:
                await world.ask(user=f"U0DM{i:04d}", channel=f"D0DM{i:04d}", mention=False)
            else:
                channel = f"C0CH{(i // 2) // cfg.per_channel:03d}"
                await world.ask(user=f"U0CH{i:04d}", channel=channel, mention=True)
        # generous: ten times the time the Slack limits force, plus a minute
        budget = 60 + 10 * scale.seconds(2 * count * 60 / 50 + count * 2)
        stats = await world.wait_finished(count, _deadline(budget), poll=FINISH_POLL)
        if one_channel:
            what = f"{count} answers asked at once, all @-mentions in one channel"
        else:
            dms = (count + 1) // 2
            channels = len({a.channel for a in world.asked}) - dms
            what = (
                f"{count} answers asked at once: {dms} DMs + {count - dms} @-mentions "
                f"in {channels} channels"
            )
        return await _finish(world, what, scale, t0, stats, [])


async def streams_phase(cfg: BenchConfig, workdir: Path, questions: list[str]) -> PhaseResult:
    """Figure 5: many long-lived streams at once; the bot's peak RSS and event-loop lag.

    Upstream pacing is NOT scaled here (streams must stay open for real seconds); Slack rates
    and the bot's budgets are, so the final edits drain in reasonable time.
    """
    scale = cfg.load_scale()
    async with _world(
        cfg,
        "streams",
        scale,
        workdir,
        questions,
        delta_delay=cfg.stream_delta_delay,
        scale_stall=False,
        # the phase measures holding every stream open at once: lift the in-flight cap
        # (POWABOT_MAX_IN_FLIGHT, default 200) above the number asked
        extra_settings={"POWABOT_MAX_IN_FLIGHT": str(cfg.streams + 100)},
    ) as world:
        await world.bot.request("reset_lag")
        world.harness_lag.reset()
        t0 = time.monotonic()
        for i in range(cfg.streams):
            await world.ask(user=f"U0ST{i:04d}", channel=f"D0ST{i:04d}", mention=False)
        longest = 70 * max(cfg.stream_delta_delay, 0.01)
        budget = 120 + longest + 10 * scale.seconds(cfg.streams * 60 / 50)
        stats = await world.wait_finished(cfg.streams, _deadline(budget), poll=0.25)
        what = (
            f"{cfg.streams} DM answers at once, {cfg.stream_delta_delay:g} wall s between "
            "deltas (upstream not scaled)"
        )
        return await _finish(world, what, scale, t0, stats, [])


# The two configurations of the first-words phase: the shipped default (native streaming on,
# POWABOT_NATIVE_STREAMING unset) and the classic path (post + chat.update).
FIRST_WORDS_CONFIGS: dict[str, dict[str, str]] = {
    "first-words": {},
    "first-words-classic": {"POWABOT_NATIVE_STREAMING": "false"},
}
FIRST_WORDS_PREFIX = 1  # "first answer text": the answer's first word is on screen


async def first_words_phase(
    cfg: BenchConfig, workdir: Path, questions: list[str], *, name: str
) -> PhaseResult:
    """First words first, under load: `cfg.first_words_answers` LLM-paced answers (a few
    characters every few tens of ms) asked at once by as many users in one workspace, half in
    DMs and half by @-mention, `first_words_per_channel` per channel; Slack's real rates by
    default. `name` is one of FIRST_WORDS_CONFIGS (the bot's settings for the run).

    First text is the first write after which the answer's first word is on screen.
    """
    scale = cfg.first_words_scale()
    count = cfg.first_words_answers
    async with _world(
        cfg,
        name,
        scale,
        workdir,
        questions,
        delta_delay=scale.seconds(cfg.first_words_delta_delay),
        extra_settings=FIRST_WORDS_CONFIGS[name],
        delta_size=cfg.first_words_delta_chars,
    ) as world:
        world.harness_lag.reset()
        t0 = time.monotonic()
        for i in range(count):  # DMs and @-mentions alternate
            if i % 2 == 0:
                await world.ask(user=f"U0FW{i:04d}", channel=f"D0FW{i:04d}", mention=False)
            else:
                channel = f"C0FW{(i // 2) // cfg.first_words_per_channel:03d}"
                await world.ask(user=f"U0FW{i:04d}", channel=channel, mention=True)
        budget = 60 + 10 * scale.seconds(2 * count * 60 / 50 + count * 2)
        stats = await world.wait_finished(count, _deadline(budget), poll=FINISH_POLL)
        dms = (count + 1) // 2
        channels = len({a.channel for a in world.asked}) - dms
        native = "classic path (POWABOT_NATIVE_STREAMING=false)"
        if not FIRST_WORDS_CONFIGS[name]:
            native = "default configuration (POWABOT_NATIVE_STREAMING unset)"
        what = (
            f"{native}: {count} answers asked at once by {count} users, {dms} DMs + "
            f"{count - dms} @-mentions in {channels} channels; deltas of "
            f"{cfg.first_words_delta_chars} characters every {cfg.first_words_delta_delay:g} s"
        )
        notes = [
            f"deltas of {cfg.first_words_delta_chars} characters: the bench swaps the Powabase "
            "stand-in's splitter in this process (stopgap, see bench.world.delta_chars)"
        ]
        return await _finish(world, what, scale, t0, stats, notes, prefix_words=FIRST_WORDS_PREFIX)
