"""One benchmark world: fresh Slack and Powabase stand-ins plus the bot in a child process."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.bot_launcher import REPO, BotProcess
from bench.lag import LagTicker
from bench.measure import Asked
from bench.scale import TimeScale
from sandbox.powabase import PowabaseStandin
from sandbox.powabase import runs as powabase_runs
from sandbox.slack import SlackStandin

SEED_CONTENT = REPO / "seed-content"
EVAL_FILE = SEED_CONTENT / "eval.yaml"


def load_questions(path: Path = EVAL_FILE) -> list[str]:
    """The routing evaluation questions of the seed content (the benchmark asks these)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot read the benchmark questions: {exc}") from exc
    items = data.get("questions") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise ValueError(f"{path}: expected a top-level `questions:` list")
    questions = [str(q["question"]) for q in items if isinstance(q, dict) and q.get("question")]
    if not questions:
        raise ValueError(f"{path}: `questions` holds no `question:` entries")
    return questions


async def ask_next(
    slack: SlackStandin,
    questions: list[str],
    asked: list[Asked],
    user: str,
    channel: str,
    mention: bool,
) -> Asked:
    """Post the next evaluation question (tagged with its index, so its upstream run can be
    found) as `user`, a DM or an @-mention in a channel; append it to `asked` and return it."""
    index = len(asked)
    tag = f"bq{index:05d}"
    text = f"{questions[index % len(questions)]} [{tag}]"
    channel_type = "channel" if mention else "im"
    t_asked = asyncio.get_running_loop().time()
    said = await slack.user_says(
        user=user, text=text, channel=channel, channel_type=channel_type, mention=mention
    )
    question = Asked(index, tag, text, user, channel, said.ts, t_asked)
    asked.append(question)
    return question


def split_chars(text: str, chars: int) -> list[str]:
    """`text` cut into pieces of `chars` characters (the last one shorter) that concatenate to
    exactly `text`: the deltas of a model streaming a few characters at a time."""
    return [text[i : i + chars] for i in range(0, len(text), chars)]


@contextlib.contextmanager
def delta_chars(chars: int | None) -> Iterator[None]:
    """While open, the Powabase stand-in's answer deltas carry `chars` characters each (None:
    its own split, a few words per delta).

    STOPGAP: the stand-in has no knob for the size of a delta yet, so this swaps its splitter
    (`sandbox.powabase.runs.split_deltas`, which the run handler looks up per run) in this
    process, where the stand-in runs; the original is put back on exit.
    """
    if chars is None:
        yield
        return
    original = powabase_runs.split_deltas

    def pieces(text: str, words: int = 0) -> list[str]:
        return split_chars(text, chars)

    powabase_runs.split_deltas = pieces
    try:
        yield
    finally:
        powabase_runs.split_deltas = original


@dataclass
class World:
    """The stand-ins, the bot process, and the questions asked so far."""

    name: str
    slack: SlackStandin
    powabase: PowabaseStandin
    bot: BotProcess
    questions: list[str]
    harness_lag: LagTicker
    asked: list[Asked] = field(default_factory=list)

    async def ask(self, *, user: str, channel: str, mention: bool) -> Asked:
        """Post the next evaluation question as `user` (a DM, or an @-mention in a channel)."""
        return await ask_next(self.slack, self.questions, self.asked, user, channel, mention)

    async def wait_finished(
        self,
        count: int,
        deadline: float,
        *,
        poll: float = 0.1,
        on_poll: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll the bot until `count` answers reached their final state or `deadline` (loop
        time) passes; returns the last stats (check `finished`)."""
        loop = asyncio.get_running_loop()
        while True:
            stats = await self.bot.stats()
            if on_poll is not None:
                on_poll(stats)
            if stats["finished"] >= count or loop.time() >= deadline:
                return stats
            await asyncio.sleep(poll)


def bot_env(
    slack: SlackStandin, powabase: PowabaseStandin, orchestration_id: str
) -> dict[str, str]:
    """The environment of a bot process wired to the two stand-ins (JSON logs, any free PORT)."""
    return {
        "SLACK_BOT_TOKEN": slack.bot_token,
        "SLACK_APP_TOKEN": slack.app_token,
        "SLACK_API_URL": slack.api_url,
        "POWABASE_URL": powabase.url,
        "POWABASE_API_KEY": powabase.api_key,
        "POWABASE_ORCHESTRATION_ID": orchestration_id,
        "LOG_FORMAT": "json",
        "PORT": "0",  # health and metrics on a free port
    }


@contextlib.asynccontextmanager
async def open_world(
    name: str,
    *,
    scale: TimeScale,
    delta_delay: float,
    workdir: Path,
    questions: list[str],
    scale_stall: bool = True,
    lag_interval: float = 0.02,
    slow_callback: float = 0.0,
    extra_settings: dict[str, str] | None = None,
    delta_size: int | None = None,
) -> AsyncIterator[World]:
    """Start both stand-ins and the bot (Socket Mode) wired to them; tear all down after.
    Answer deltas carry `delta_size` characters each when given (see `delta_chars`)."""
    with delta_chars(delta_size):
        async with _open_world(
            name,
            scale=scale,
            delta_delay=delta_delay,
            workdir=workdir,
            questions=questions,
            scale_stall=scale_stall,
            lag_interval=lag_interval,
            slow_callback=slow_callback,
            extra_settings=extra_settings,
        ) as world:
            yield world


@contextlib.asynccontextmanager
async def _open_world(
    name: str,
    *,
    scale: TimeScale,
    delta_delay: float,
    workdir: Path,
    questions: list[str],
    scale_stall: bool,
    lag_interval: float,
    slow_callback: float,
    extra_settings: dict[str, str] | None,
) -> AsyncIterator[World]:
    slack = SlackStandin(rate_limits=scale.standin_limits())
    powabase = PowabaseStandin(delta_delay=delta_delay)
    await slack.start()
    try:
        await powabase.start()
        try:
            orchestration_id = powabase.seed_from(SEED_CONTENT)
            settings = {
                **bot_env(slack, powabase, orchestration_id),
                "POWABOT_STORE": f"sqlite:///{workdir / f'{name}-sessions.db'}",
                **scale.bot_settings(scale_stall=scale_stall),
                **(extra_settings or {}),
            }
            bot = await BotProcess.start(
                settings,
                scale.bot_budgets(),
                workdir / f"{name}-bot.log",
                lag_interval=lag_interval,
                slow_callback=slow_callback,
            )
            ticker = LagTicker(lag_interval)
            ticker.start()
            try:
                await slack.wait_connected(timeout=30)
                yield World(name, slack, powabase, bot, questions, ticker)
            finally:
                await ticker.stop()
                await bot.kill()
        finally:
            await powabase.stop()
    finally:
        await slack.stop()
