"""`python -m bench`: run the streaming benchmark and print its table (see bench/README.md)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path

from bench.config import PHASES, BenchConfig, quick
from bench.report import header, table
from bench.run import run_bench
from bot.logs import configure_logging

PROXY_VARS = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy", "all_proxy")


def parse_args(argv: list[str] | None) -> tuple[BenchConfig, argparse.Namespace]:
    p = argparse.ArgumentParser(
        prog="python -m bench", description="powabot streaming benchmark (local stand-ins only)"
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes, high time scale (smoke)")
    p.add_argument("--latency-answers", type=int, help="sequential answers (figures 1-3)")
    p.add_argument("--answers", type=int, help="concurrent answers, spread (figure 4)")
    p.add_argument("--one-channel-answers", type=int, help="concurrent answers in one channel")
    p.add_argument("--streams", type=int, help="concurrent long-lived streams (figure 5)")
    p.add_argument("--chaos-answers", type=int, help="concurrent answers under random faults")
    p.add_argument("--chaos-seed", type=int, help="seed of the chaos phase's fault draws")
    p.add_argument(
        "--first-words-answers", type=int, help="LLM-paced answers at once (first-words phase)"
    )
    p.add_argument("--first-words-time-scale", type=float, help="speed-up of the first-words phase")
    p.add_argument(
        "--first-words-delta-chars", type=int, help="characters per delta (first-words phase)"
    )
    p.add_argument(
        "--first-words-delta-delay",
        type=float,
        help="unscaled seconds between deltas (first-words phase)",
    )
    p.add_argument("--time-scale", type=float, help="speed-up of load and streams phases")
    p.add_argument("--latency-time-scale", type=float, help="speed-up of the latency phase")
    p.add_argument(
        "--budget-headroom",
        type=float,
        help="experiment: run the bot's rate budgets at this share (0-1] of Slack's limits",
    )
    p.add_argument("--delta-delay", type=float, help="real seconds between deltas (phases 1-4)")
    p.add_argument("--stream-delta-delay", type=float, help="wall seconds between deltas (5)")
    p.add_argument(
        "--slow-callback",
        type=float,
        help="diagnosis: asyncio debug mode in the bot, logging callbacks that hold its loop "
        "longer than this many seconds (slows the bot; figures are then not comparable)",
    )
    p.add_argument("--phases", help=f"comma-separated subset of {','.join(PHASES)}")
    p.add_argument("--json", type=Path, help="also write every figure and detail here")
    p.add_argument("--workdir", type=Path, help="where bot logs and session databases go")
    args = p.parse_args(argv)
    cfg = quick() if args.quick else BenchConfig()
    names = {
        "latency_answers": args.latency_answers,
        "answers": args.answers,
        "one_channel_answers": args.one_channel_answers,
        "streams": args.streams,
        "chaos_answers": args.chaos_answers,
        "chaos_seed": args.chaos_seed,
        "first_words_answers": args.first_words_answers,
        "first_words_time_scale": args.first_words_time_scale,
        "first_words_delta_chars": args.first_words_delta_chars,
        "first_words_delta_delay": args.first_words_delta_delay,
        "time_scale": args.time_scale,
        "latency_time_scale": args.latency_time_scale,
        "delta_delay": args.delta_delay,
        "stream_delta_delay": args.stream_delta_delay,
        "budget_headroom": args.budget_headroom,
        "slow_callback": args.slow_callback,
    }
    changes: dict[str, object] = {k: v for k, v in names.items() if v is not None}
    if args.phases:
        changes["phases"] = tuple(p.strip() for p in args.phases.split(",") if p.strip())
    try:
        return cfg.replace(**changes), args
    except ValueError as exc:
        p.error(str(exc))
        raise  # unreachable: error() exits


def main(argv: list[str] | None = None) -> int:
    cfg, args = parse_args(argv)
    for name in PROXY_VARS:  # traffic stays on 127.0.0.1
        os.environ.pop(name, None)
    os.environ["NO_PROXY"] = "127.0.0.1,localhost"
    configure_logging("console", "error")  # the stand-ins' own logs would drown the table
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="powabot-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"running phases {', '.join(cfg.phases)}; logs in {workdir}", file=sys.stderr)
    report = asyncio.run(run_bench(cfg, workdir))
    print(header(cfg, report.results, report.wall_s))
    if report.replicas is not None:
        print(f"  replicas (x{report.replicas.scale:g}): {report.replicas.description}")
        print(f"    logs: {workdir}/replica*-bot.log")
        for note in report.replicas.notes:
            print(f"    note: {note}")
    print()
    print(table(report.figures))
    if args.json:
        args.json.write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
        print(f"\nJSON written to {args.json}")
    return 0 if all(f.passed is not False for f in report.figures) else 1


if __name__ == "__main__":
    sys.exit(main())
