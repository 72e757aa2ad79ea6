"""Figures with goals and PASS/MISS, the printed table, and the JSON document."""

from __future__ import annotations

import dataclasses
import math
import os
import platform
from collections import Counter
from collections.abc import Sequence
from typing import Any

from bench.chaos import chaos_summary
from bench.config import BenchConfig
from bench.figures import Figure
from bench.measure import CLASSIC, NATIVE, NATIVE_THEN_CLASSIC
from bench.phases import FIRST_WORDS_CONFIGS, PhaseResult
from bench.stats import percentile, summary

# Goals in unscaled (real Slack) seconds; a phase run at time scale N divides them by N.
FIRST_TEXT_P50_S = 1.5
FIRST_TEXT_P99_S = 3.0
FINAL_EDIT_P50_S = 1.0
FINAL_EDIT_P99_S = 2.0
WRITE_RATIO_MAX = 0.33  # at most a third of the writes of "edit on every delta"
DURATION_OVER_FLOOR_MAX = 1.5
FIRST_WORDS_P50_S = 0.3  # first-words phase, default configuration
FIRST_WORDS_P90_S = 1.0
MAX_PROBLEMS_IN_JSON = 20


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f} s"


def _time_goal(real_limit: float, scale: float) -> tuple[float, str]:
    limit = real_limit / scale
    if scale == 1:
        return limit, f"≤ {real_limit:g} s"
    return limit, f"≤ {limit:.3g} s ({real_limit:g} s ÷ {scale:g})"


def _timed(key: str, r: PhaseResult, label: str, value: float | None, real: float) -> Figure:
    limit, goal = _time_goal(real, r.scale)
    passed = None if value is None else value <= limit
    return Figure(key, r.name, label, value, _seconds(value), goal, passed)


def latency_figures(r: PhaseResult) -> list[Figure]:
    first = [o.first_text_latency for o in r.outcomes if o.first_text_latency is not None]
    final = [o.final_latency for o in r.outcomes if o.final_latency is not None]
    done = [o for o in r.outcomes if o.naive_writes is not None]
    writes = sum(o.writes for o in done)
    naive = sum(o.naive_writes or 0 for o in done)
    per_answer = writes / len(done) if done else None
    ratio = writes / naive if naive else None
    naive_each = naive / len(done) if done else 0
    label = "first answer delta -> first Slack write showing answer text"
    return [
        _timed("first_text_p50", r, label + ", p50", percentile(first, 50), FIRST_TEXT_P50_S),
        _timed("first_text_p99", r, label + ", p99", percentile(first, 99), FIRST_TEXT_P99_S),
        _timed(
            "final_edit_p50",
            r,
            "`complete` -> final edit of the answer, p50",
            percentile(final, 50),
            FINAL_EDIT_P50_S,
        ),
        _timed(
            "final_edit_p99",
            r,
            "`complete` -> final edit of the answer, p99",
            percentile(final, 99),
            FINAL_EDIT_P99_S,
        ),
        Figure(
            "writes_per_answer",
            r.name,
            "Slack writes per answer (post+update+stream), mean",
            per_answer,
            "n/a" if per_answer is None else f"{per_answer:.1f} (per-delta: {naive_each:.1f})",
            "info",
            None,
        ),
        Figure(
            "writes_ratio",
            r.name,
            "writes / (one edit per delta + placeholder + trace)",
            ratio,
            "n/a" if ratio is None else f"{ratio:.3f} ({writes}/{naive})",
            f"≤ {WRITE_RATIO_MAX}",
            None if ratio is None else ratio <= WRITE_RATIO_MAX,
        ),
    ]


def _exact(key: str, r: PhaseResult) -> Figure:
    exact = sum(1 for o in r.outcomes if o.exact)
    pct = 100.0 * exact / r.asked if r.asked else None
    return Figure(
        key,
        r.name,
        "final Slack answer exactly the rendered upstream answer",
        pct,
        "n/a" if pct is None else f"{pct:.1f} % ({exact}/{r.asked})",
        "100 %",
        None if pct is None else exact == r.asked,
    )


def _ratelimited(key: str, r: PhaseResult) -> Figure:
    return Figure(
        key,
        r.name,
        "HTTP 429 received",
        float(r.ratelimited),
        str(r.ratelimited),
        "0",
        r.ratelimited == 0,
    )


def load_figures(r: PhaseResult, prefix: str) -> list[Figure]:
    limit = DURATION_OVER_FLOOR_MAX * r.floor_s
    real = r.duration_s * r.scale
    return [
        _ratelimited(f"{prefix}_429", r),
        _exact(f"{prefix}_exact", r),
        Figure(
            f"{prefix}_duration",
            r.name,
            "total duration, first question -> last Slack write",
            r.duration_s,
            f"{r.duration_s:.1f} s (= {real:.0f} s unscaled)",
            f"≤ {limit:.1f} s ({DURATION_OVER_FLOOR_MAX:g} x floor {r.floor_s:.1f} s)",
            r.duration_s <= limit,
        ),
    ]


def stream_figures(r: PhaseResult, cfg: BenchConfig) -> list[Figure]:
    stats = r.bot_stats
    hwm_kb = stats.get("vmhwm_kb") or stats.get("ru_maxrss_kb")
    rss = hwm_kb / 1024 if hwm_kb else None
    idle_kb = r.ready_stats.get("vmrss_kb")
    lag = stats.get("lag") or {}
    p99 = lag.get("p99")
    lag_ms = None if p99 is None else p99 * 1000
    return [
        Figure(
            "streams_open_peak",
            r.name,
            "upstream streams open at the same moment",
            float(r.peak_upstream_streams),
            str(r.peak_upstream_streams),
            f"= {r.asked}",
            r.peak_upstream_streams >= r.asked,
        ),
        Figure(
            "streams_peak_rss",
            r.name,
            "bot process peak RSS (VmHWM)",
            rss,
            "n/a"
            if rss is None
            else f"{rss:.0f} MiB" + (f" (idle {idle_kb / 1024:.0f} MiB)" if idle_kb else ""),
            f"≤ {cfg.rss_goal_mib:g} MiB",
            None if rss is None else rss <= cfg.rss_goal_mib,
        ),
        Figure(
            "streams_lag_p99",
            r.name,
            f"bot event-loop lag p99 ({lag.get('n', 0)} ticks)",
            lag_ms,
            "n/a"
            if lag_ms is None
            else f"{lag_ms:.1f} ms (max {1000 * (lag.get('max') or 0):.0f} ms)",
            f"≤ {cfg.lag_goal_ms:g} ms",
            None if lag_ms is None else lag_ms <= cfg.lag_goal_ms,
        ),
        _ratelimited("streams_429", r),
        _exact("streams_exact", r),
    ]


def chaos_figures(r: PhaseResult) -> list[Figure]:
    """Complete / with a notice naming its cause / lost, under random faults (goal: 0 lost)."""
    found = chaos_summary(r)
    causes = ", ".join(f"{k} {v}" for k, v in sorted(found["causes"].items())) or "none"
    return [
        Figure(
            "chaos_complete",
            r.name,
            "answers complete (exact final text)",
            float(found["complete"]),
            f"{found['complete']}/{r.asked}",
            "info",
            None,
        ),
        Figure(
            "chaos_notice",
            r.name,
            "answers ending in a notice naming the cause",
            float(found["notice"]),
            f"{found['notice']}/{r.asked} ({causes})",
            "info",
            None,
        ),
        Figure(
            "chaos_lost",
            r.name,
            "answers lost (no answer and no notice)",
            float(found["lost"]),
            f"{found['lost']}/{r.asked}",
            "0",
            found["lost"] == 0 and len(r.outcomes) == r.asked,
        ),
    ]


def _never(value: float | None) -> str:
    if value is None:
        return "n/a"
    return "never shown" if math.isinf(value) else f"{value:.3f} s"


def first_words_figures(r: PhaseResult) -> list[Figure]:
    """First word on screen (p50, p90, p99, max), complete and exact, 429s, notices and how the
    answers were delivered. Goals apply to the default configuration; the classic one's figures
    are information. An answer whose first word never showed counts as infinitely late."""
    key = r.name.replace("-", "_")
    goals = not FIRST_WORDS_CONFIGS.get(r.name)
    late = [
        o.first_text_latency if o.first_text_latency is not None else math.inf for o in r.outcomes
    ]
    shown = sum(1 for v in late if not math.isinf(v))
    label = "first answer delta -> first word of the answer on screen"
    out: list[Figure] = []
    for pct, real in ((50, FIRST_WORDS_P50_S), (90, FIRST_WORDS_P90_S), (99, None), (100, None)):
        value = percentile(late, pct)
        name = "max" if pct == 100 else f"p{pct}"
        display = _never(value) + (f" ({shown}/{r.asked} shown)" if pct == 50 else "")
        if real is None:
            goal, passed = "info", None
        else:
            limit, goal = _time_goal(real, r.scale)
            passed = None if value is None else value <= limit
            if not goals:
                goal, passed = f"info (default: {goal})", None
        out.append(
            Figure(
                f"{key}_first_text_{name}", r.name, f"{label}, {name}", value, display, goal, passed
            )
        )
    exact = sum(1 for o in r.outcomes if o.exact)
    unsourced = sum(1 for o in r.outcomes if o.exact and o.sources is False)
    notices = Counter(o.notice for o in r.outcomes if o.notice)
    ways = Counter(o.delivery for o in r.outcomes)
    refused = sum(o.starts_refused for o in r.outcomes)
    delivered = (
        f"native {ways[NATIVE]}, native then classic {ways[NATIVE_THEN_CLASSIC]}, "
        f"classic {ways[CLASSIC]} (chat.startStream refused {refused}x)"
    )
    return [
        *out,
        Figure(
            f"{key}_exact",
            r.name,
            "answers complete and exact",
            float(exact),
            f"{exact}/{r.asked}" + (f" ({unsourced} without their sources)" if unsourced else ""),
            f"= {r.asked}" if goals else "info",
            (exact == r.asked) if goals else None,
        ),
        Figure(
            f"{key}_429",
            r.name,
            "HTTP 429 received",
            float(r.ratelimited),
            str(r.ratelimited),
            "0" if goals else "info",
            (r.ratelimited == 0) if goals else None,
        ),
        Figure(
            f"{key}_notices",
            r.name,
            "answers ending with a notice",
            float(sum(notices.values())),
            f"{sum(notices.values())}/{r.asked}"
            + (
                f" ({', '.join(f'{k} {v}' for k, v in sorted(notices.items()))})" if notices else ""
            ),
            "info",
            None,
        ),
        Figure(
            f"{key}_delivery",
            r.name,
            "answers delivered by native stream / fallen back to classic",
            float(ways[NATIVE]),
            delivered,
            "info",
            None,
        ),
    ]


def figures(results: dict[str, PhaseResult], cfg: BenchConfig) -> list[Figure]:
    out: list[Figure] = []
    if "latency" in results:
        out += latency_figures(results["latency"])
    if "load" in results:
        out += load_figures(results["load"], "load")
    if "one-channel" in results:
        out += load_figures(results["one-channel"], "one_channel")
    if "streams" in results:
        out += stream_figures(results["streams"], cfg)
    if "chaos" in results:
        out += chaos_figures(results["chaos"])
    for name in FIRST_WORDS_CONFIGS:
        if name in results:
            out += first_words_figures(results[name])
    return out


def phase_json(r: PhaseResult) -> dict[str, Any]:
    first = [o.first_text_latency for o in r.outcomes if o.first_text_latency is not None]
    final = [o.final_latency for o in r.outcomes if o.final_latency is not None]
    problems = [
        {"index": o.index, "channel": o.channel, "thread_ts": o.thread_ts, "problem": o.problem}
        for o in r.outcomes
        if not o.exact
    ]
    return {
        "scale": r.scale,
        "asked": r.asked,
        "finished": r.finished,
        "duration_s": r.duration_s,
        "floor_s": r.floor_s,
        "ratelimited": r.ratelimited,
        "redeliveries": r.redeliveries,
        "harness": r.harness_lag,
        "peak_upstream_streams": r.peak_upstream_streams,
        "first_text_latency_s": summary(first),
        "final_latency_s": summary(final),
        "writes": summary([float(o.writes) for o in r.outcomes]),
        "writes_ratelimited": sum(o.writes_ratelimited for o in r.outcomes),
        "delivery": dict(Counter(o.delivery or "unknown" for o in r.outcomes)),
        "notices": dict(Counter(o.notice for o in r.outcomes if o.notice)),
        "bot": r.bot_stats,
        "bot_ready": r.ready_stats,
        "not_exact": len(problems),
        "problems": problems[:MAX_PROBLEMS_IN_JSON],
        "notes": r.notes,
        "log": r.log_path,
        **({"chaos": chaos_summary(r)} if r.chaos else {}),
    }


def document(
    cfg: BenchConfig, results: dict[str, PhaseResult], figs: Sequence[Figure], wall_s: float
) -> dict[str, Any]:
    return {
        "config": dataclasses.asdict(cfg),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "wall_s": wall_s,
        "scales": {
            "latency": cfg.latency_scale().describe(),
            "load": cfg.load_scale().describe(),
            "first_words": cfg.first_words_scale().describe(),
        },
        "figures": [{**dataclasses.asdict(f), "result": f.result} for f in figs],
        "phases": {name: phase_json(r) for name, r in results.items()},
    }


def table(figs: Sequence[Figure]) -> str:
    rows = [("#", "phase", "figure", "measured", "goal", "result")]
    rows += [(str(i), f.phase, f.label, f.display, f.goal, f.result) for i, f in enumerate(figs, 1)]
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(widths[c]) for c, cell in enumerate(row)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _per_minute(rate: float | None) -> str:
    return "unlimited" if rate is None else f"{rate:g}/min"


def header(cfg: BenchConfig, results: dict[str, PhaseResult], wall_s: float) -> str:
    latency = cfg.latency_scale()
    load = cfg.load_scale()
    lim = load.standin_limits()
    lines = [
        f"powabot streaming benchmark — {os.cpu_count()} CPUs, wall time {wall_s:.0f} s",
        "process model: Slack + Powabase stand-ins and the measuring code in this process; "
        "the real bot (Socket Mode) in a child process, so RSS and loop lag are the bot's alone",
        f"time scale: latency phase x{latency.factor:g}, load/streams phases x{load.factor:g} "
        f"(Slack stand-in: chat.update {lim.update_per_minute_per_workspace:g}/min burst "
        f"{lim.update_burst}, chat.postMessage {lim.post_per_second_per_channel:g}/s/channel "
        f"burst {lim.post_burst}; bot budgets and POWABOT_EDIT_INTERVAL scaled alike)",
        "time goals are real-Slack seconds divided by the phase's time scale",
    ]
    if any(name in results for name in FIRST_WORDS_CONFIGS):
        fw = cfg.first_words_scale()
        lim = fw.standin_limits()
        lines.append(
            f"first-words phases x{fw.factor:g}: Slack stand-in chat.update "
            f"{lim.update_per_minute_per_workspace:g}/min burst {lim.update_burst}, "
            f"chat.postMessage {lim.post_per_second_per_channel:g}/s/channel burst "
            f"{lim.post_burst}, chat.startStream {_per_minute(lim.start_per_minute_per_workspace)} "
            f"burst {lim.start_burst}, chat.appendStream "
            f"{_per_minute(lim.append_per_minute_per_workspace)} burst {lim.append_burst}, "
            f"chat.stopStream {_per_minute(lim.stop_per_minute_per_workspace)} burst "
            f"{lim.stop_burst} (per workspace)"
        )
    if cfg.budget_headroom != 1:
        lines.append(
            f"EXPERIMENT: bot budgets at {cfg.budget_headroom:g} x Slack's rates "
            "(not the shipped defaults)"
        )
    for r in results.values():
        extra = f", {r.redeliveries} Socket Mode redeliveries" if r.redeliveries else ""
        lines.append(f"  {r.name} (x{r.scale:g}): {r.description}")
        lines.append(f"    {r.finished}/{r.asked} answers finished{extra}; bot log {r.log_path}")
        lag = r.harness_lag["lag"]
        if lag["p99"] is not None:
            lines.append(
                f"    stand-in process loop lag p99 {1000 * lag['p99']:.0f} ms, "
                f"max {1000 * lag['max']:.0f} ms (high values delay what the stand-ins record)"
            )
        if r.chaos:
            found = chaos_summary(r)
            lines.append(f"    Slack faults served: {found['slack_faults'] or 'none'}")
            lines.append(f"    Powabase faults drawn: {found['powabase_faults'] or 'none'}")
            lines += [f"    lost: {e}" for e in found["lost_examples"][:5]]
        lines += [f"    note: {n}" for n in r.notes]
    return "\n".join(lines)
