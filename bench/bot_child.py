"""Runs INSIDE the bot's child process: the production `Powabot` in a process of its own.

The parent side (which starts, drives and stops this process) is `bench/bot_launcher.py`.

    python -m bench.bot_child --budgets '{"edits_per_minute": 500, ...}' --lag-interval 0.02

Settings come from the environment exactly as in production (the parent sets SLACK_*,
POWABASE_* and POWABOT_* for the stand-ins). The process prints one JSON line
``{"ready": true, ...}`` once Socket Mode is connecting, then answers one JSON line per command
read from stdin: ``stats``, ``reset_lag`` (start a new lag window) and ``stop`` (drain the
bot, print final stats, exit). Logs go to stderr as JSON lines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
from pathlib import Path
from typing import Any

from bench.lag import LagTicker
from bench.stats import summary
from bot.logs import configure_logging, secret_values
from bot.service import Powabot
from bot.settings import Settings
from bot.slack.budget import Budgets


def memory_kb() -> dict[str, int]:
    """Current and peak resident set size of this process, in KiB."""
    out: dict[str, int] = {"ru_maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                out[f"{name.lower()}_kb"] = int(rest.split()[0])
    return out


def _stats(bot: Powabot, ticker: LagTicker) -> dict[str, Any]:
    timings = getattr(bot.publisher.budgets, "timings", None)  # the shared budget's round trips
    return {
        "finished": bot.answerer.finished,
        "budget_db_s": list(timings) if timings is not None else [],
        "in_flight": len(bot.answerer.in_flight),
        "tasks": len(asyncio.all_tasks()),
        "lag": summary(ticker.samples),
        "lag_spikes": ticker.spikes(),
        **memory_kb(),
    }


def _say(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def _stdin_lines() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def serve(
    settings: Settings, budgets: dict[str, Any], lag_interval: float, slow_callback: float
) -> None:
    if slow_callback > 0:  # diagnosis: asyncio logs every callback that holds the loop longer
        loop = asyncio.get_running_loop()
        loop.set_debug(True)
        loop.slow_callback_duration = slow_callback
    bot = Powabot(settings, budgets=Budgets(**budgets))
    ticker = LagTicker(lag_interval)
    ticker.start()
    await bot.start()
    _say({"ready": True, **_stats(bot, ticker)})
    reader = await _stdin_lines()
    try:
        while True:
            raw = await reader.readline()
            command = raw.decode().strip()
            if command in ("", "stop"):
                break
            if command == "reset_lag":
                ticker.reset()
            elif command != "stats":
                _say({"error": f"unknown command {command!r} (stats, reset_lag, stop)"})
                continue
            _say(_stats(bot, ticker))
    finally:
        final = _stats(bot, ticker)
        await bot.stop()
        await ticker.stop()
        _say({"stopped": True, **final, "finished": bot.answerer.finished})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bot_child")
    parser.add_argument("--budgets", required=True, help="JSON keyword arguments for Budgets")
    parser.add_argument("--lag-interval", type=float, default=0.02)
    parser.add_argument("--log-level", default="info")
    parser.add_argument(
        "--slow-callback",
        type=float,
        default=0.0,
        help="diagnosis: asyncio debug mode, log callbacks holding the loop this long (s)",
    )
    args = parser.parse_args(argv)
    try:
        budgets = json.loads(args.budgets)
    except json.JSONDecodeError as exc:
        parser.error(f"--budgets is not JSON: {exc}")
    settings = Settings(_env_file=None)
    configure_logging("json", args.log_level, secrets=secret_values(settings))
    asyncio.run(serve(settings, budgets, args.lag_interval, args.slow_callback))


if __name__ == "__main__":
    main()
