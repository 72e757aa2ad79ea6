"""Benchmark sizes and pacing; `quick()` is the tiny preset the smoke test and `--quick` use."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from bench.scale import TimeScale

PHASES = ("latency", "load", "one-channel", "streams", "chaos", "first-words", "replicas")


@dataclass(frozen=True)
class BenchConfig:
    """Everything one benchmark run needs to know; times are in unscaled (real Slack) seconds."""

    latency_answers: int = 30  # sequential answers for figures 1-3
    latency_time_scale: float = 1.0  # light-load latency is measured at Slack's real rates
    delta_delay: float = 0.08  # seconds between answer deltas (about 40 tokens/s)
    answers: int = 200  # concurrent answers, spread over DMs and channels (figure 4)
    per_channel: int = 5  # answers per channel in the spread layout (half of them are DMs)
    one_channel_answers: int = 40  # concurrent answers all in one channel (figure 4 variant)
    streams: int = 500  # concurrent long-lived streams (figure 5)
    stream_delta_delay: float = 1.0  # wall seconds between deltas: streams live ~20-60 s
    time_scale: float = 10.0  # speed-up of every Slack rate and bot pacing in the load phases
    budget_headroom: float = 1.0  # bot budgets as a share of Slack's rates (experiment knob)
    chaos_answers: int = 100  # answers asked at once under random faults (chaos phase)
    chaos_slack_rate: float = 0.15  # share of Slack write calls that fail at random
    chaos_powabase_rate: float = 0.2  # share of upstream runs that fail at random
    chaos_seed: int = 14
    first_words_answers: int = 40  # LLM-paced answers asked at once in one workspace
    first_words_per_channel: int = 2  # @-mentions per channel (half the answers; the rest DMs)
    first_words_delta_chars: int = 4  # characters per answer delta ...
    first_words_delta_delay: float = 0.03  # ... every this many (unscaled) seconds
    first_words_time_scale: float = 1.0  # Slack's real rates by default
    replicas_answers: int = 200  # questions at once to 3 bot processes on one Postgres
    replicas_kill_answers: int = 30  # slow questions in flight when one replica is killed
    replicas_kill_delta_delay: float = 0.3  # wall seconds between their deltas (~20 s streams)
    phases: tuple[str, ...] = PHASES
    lag_interval: float = 0.02  # the bot's lag ticker period
    slow_callback: float = 0.0  # diagnosis: > 0 runs the bot's loop in asyncio debug mode
    rss_goal_mib: float = 256.0
    lag_goal_ms: float = 100.0

    def __post_init__(self) -> None:
        counts = (
            *("latency_answers", "answers", "one_channel_answers", "streams", "per_channel"),
            *("first_words_answers", "first_words_per_channel", "first_words_delta_chars"),
        )
        for name in (*counts, "chaos_answers", "replicas_answers", "replicas_kill_answers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.budget_headroom <= 1:
            raise ValueError(f"budget_headroom must be in (0, 1], got {self.budget_headroom}")
        for name in ("latency_time_scale", "time_scale", "first_words_time_scale", "lag_interval"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("delta_delay", "stream_delta_delay", "first_words_delta_delay"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("chaos_slack_rate", "chaos_powabase_rate"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        unknown = [p for p in self.phases if p not in PHASES]
        if unknown:
            raise ValueError(f"unknown phase(s) {unknown}; choose from {', '.join(PHASES)}")

    def latency_scale(self) -> TimeScale:
        return TimeScale(self.latency_time_scale, self.budget_headroom)

    def load_scale(self) -> TimeScale:
        return TimeScale(self.time_scale, self.budget_headroom)

    def first_words_scale(self) -> TimeScale:
        return TimeScale(self.first_words_time_scale, self.budget_headroom)

    def replace(self, **changes: object) -> BenchConfig:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def quick() -> BenchConfig:
    """A run of well under a minute: every figure measured, none of them meaningful."""
    return BenchConfig(
        latency_answers=5,
        latency_time_scale=20.0,
        answers=10,
        one_channel_answers=6,
        streams=10,
        stream_delta_delay=0.05,
        chaos_answers=12,
        first_words_answers=6,
        first_words_time_scale=20.0,
        replicas_answers=12,
        replicas_kill_answers=6,
        replicas_kill_delta_delay=0.15,
        time_scale=20.0,
    )
