"""Shutdown that fits the platform: `powabot run` as a real process against the stand-ins.

POWABOT_SHUTDOWN_GRACE bounds the whole stop (answers still running when it is nearly over get
the restart notice before it ends; answers waiting in line get it at once); a second SIGTERM
or SIGINT exits at once; closing connections that hang does not stretch the stop past the grace;
a SIGTERM while start-up waits for Slack exits within 2 s; a token Slack refuses ends the start
with one clear line and a non-zero exit code.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from bot.render.answer import IN_LINE, notice
from bot.service import Powabot
from bot.state import ErrorKind
from bot.store.sqlite import SqliteStore
from sandbox.powabase import PowabaseStandin
from sandbox.slack import SlackStandin
from tests.conftest import REPO, SCRUBBED_PREFIXES, bot_settings
from tests.e2e.answers import ask, bot_replies, expected_text

RESTARTING = notice(ErrorKind.SHUTDOWN, partial=False)
QUESTION = "What is the refund window for Pro annual?"


class BotRun:
    """One `python -m bot run` child; stderr (its log) goes to a file."""

    def __init__(self, proc: asyncio.subprocess.Process, log_path: Path) -> None:
        self.proc = proc
        self.log_path = log_path

    @property
    def stderr(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: signal.Signals) -> float:
        """Send `sig`; returns when it was sent (loop time)."""
        self.proc.send_signal(sig)
        return asyncio.get_running_loop().time()

    async def exited_by(self, deadline: float) -> int:
        """The exit code, if the process ends before `deadline` (loop time); else fail."""
        remaining = deadline - asyncio.get_running_loop().time()
        try:
            return await asyncio.wait_for(self.proc.wait(), max(remaining, 0.01))
        except TimeoutError:
            pytest.fail(f"powabot run still running at the deadline; log:\n{self.stderr[-3000:]}")


def bot_env(slack: SlackStandin, powabase: PowabaseStandin, tmp_path: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(SCRUBBED_PREFIXES)}
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy"):
        env.pop(name, None)
    env.update(
        NO_PROXY="127.0.0.1,localhost",
        PYTHONPATH=str(REPO),
        SLACK_BOT_TOKEN=slack.bot_token,
        SLACK_APP_TOKEN=slack.app_token,
        SLACK_API_URL=slack.api_url,
        POWABASE_URL=powabase.url,
        POWABASE_API_KEY=powabase.api_key,
        POWABASE_ORCHESTRATION_ID=powabase.orchestration_id,
        POWABOT_STORE=f"sqlite:///{tmp_path / 'sessions.db'}",
        POWABOT_EDIT_INTERVAL="0.05",
        POWABOT_NATIVE_STREAMING="false",  # classic, as tests/conftest.py's bot_settings
        LOG_FORMAT="json",
        PORT="0",
    )
    env.update(extra)
    return env


@contextlib.asynccontextmanager
async def powabot_run(
    slack: SlackStandin, powabase: PowabaseStandin, tmp_path: Path, **extra: str
) -> AsyncIterator[BotRun]:
    log_path = tmp_path / "powabot-run.log"
    with log_path.open("wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            "run",
            cwd=str(tmp_path),  # no developer `.env` is read
            env=bot_env(slack, powabase, tmp_path, **extra),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=log_file,
        )
        try:
            yield BotRun(proc, log_path)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


def first_post_text(slack: SlackStandin, thread_ts: str) -> str:
    posts = [c for c in slack.calls_to("chat.postMessage") if c.args.get("thread_ts") == thread_ts]
    return str(posts[0].args["text"]) if posts else ""


async def test_the_grace_bounds_shutdown_and_every_unfinished_answer_is_told(
    slack: SlackStandin, powabase: PowabaseStandin, tmp_path: Path
) -> None:
    """SIGTERM with grace 6 s: a short answer completes, a stuck one and a queued one get the
    restart notice (the queued one at once), and the process is gone when the grace ends."""
    grace = 6.0
    powabase.context.delta_delay = 0.03  # the short answer takes a second or two
    powabase.inject_run_fault("delay", delay=120.0)  # the first run stays silent
    settings = {"POWABOT_SHUTDOWN_GRACE": str(grace), "POWABOT_MAX_IN_FLIGHT": "2"}
    async with powabot_run(slack, powabase, tmp_path, **settings) as bot:
        await slack.wait_connected(timeout=20)
        stuck = await slack.user_says(user="U0STUCK", text=QUESTION, channel="D0STUCK")
        await slack.wait_for(lambda: len(powabase.runs) == 1, timeout=10)
        short = await slack.user_says(user="U0SHORT", text=QUESTION, channel="D0SHORT")
        await slack.wait_for(lambda: len(powabase.runs) == 2, timeout=10)
        queued = await slack.user_says(user="U0QUEUE", text=QUESTION, channel="D0QUEUE")
        await slack.wait_for(lambda: first_post_text(slack, queued.ts) == IN_LINE, timeout=10)
        assert powabase.runs[1].t_complete is None, "the short answer ended before the SIGTERM"
        sent = bot.signal(signal.SIGTERM)
        loop = asyncio.get_running_loop()

        def says_restarting(channel: str, ts: str) -> bool:
            return any(RESTARTING in m.text for m in bot_replies(slack, channel, ts))

        await slack.wait_for(lambda: says_restarting("D0QUEUE", queued.ts), timeout=1.5)
        await slack.wait_for(lambda: says_restarting("D0STUCK", stuck.ts), timeout=grace)
        told_at = loop.time()
        code = await bot.exited_by(sent + grace + 0.5)  # + the interpreter's own exit
    assert told_at < sent + grace
    assert code == 0, bot.stderr[-2000:]
    (answer, *_trace) = bot_replies(slack, "D0SHORT", short.ts)
    assert answer.text == expected_text(powabase.runs[1].answer)
    assert len(powabase.runs) == 2  # the queued question never reached Powabase


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_a_second_signal_exits_at_once(
    slack: SlackStandin, powabase: PowabaseStandin, tmp_path: Path, sig: signal.Signals
) -> None:
    """While the first SIGTERM (or Ctrl-C's SIGINT) drains a stuck answer, a second one ends
    the process now."""
    powabase.inject_run_fault("delay", delay=120.0)
    async with powabot_run(slack, powabase, tmp_path, POWABOT_SHUTDOWN_GRACE="60") as bot:
        await slack.wait_connected(timeout=20)
        await slack.user_says(user="U0STUCK", text=QUESTION, channel="D0STUCK")
        await slack.wait_for(lambda: bool(powabase.runs), timeout=10)
        bot.signal(sig)
        await slack.wait_for(lambda: slack.hub.num_connections == 0, timeout=5)  # draining
        sent = bot.signal(sig)
        code = await bot.exited_by(sent + 1.0)
    assert code == 128 + sig.value
    assert f"second {sig.name} during shutdown: exiting now" in bot.stderr


class StoreThatNeverCloses(SqliteStore):
    """A store whose close() never returns (a wedged database connection pool)."""

    async def close(self) -> None:
        await super().close()
        await asyncio.Event().wait()


async def test_a_close_that_hangs_does_not_stretch_the_stop_past_the_grace(
    slack: SlackStandin, powabase: PowabaseStandin, tmp_path: Path
) -> None:
    """The store's close() never returns: stop() still ends within POWABOT_SHUTDOWN_GRACE,
    closes everything else, and names what it abandoned."""
    grace = 2.0
    store = StoreThatNeverCloses(f"sqlite:///{tmp_path / 'sessions.db'}")
    settings = bot_settings(slack, powabase, tmp_path, POWABOT_SHUTDOWN_GRACE=grace)
    bot = Powabot(settings, store=store)
    with capture_logs() as logs:
        await bot.start()
        try:
            await slack.wait_connected()
            await ask(slack, bot, "D0CLOSE", QUESTION)  # every connection in use
        finally:
            loop = asyncio.get_running_loop()
            began = loop.time()
            await asyncio.wait_for(bot.stop(), grace + 5)
            took = loop.time() - began
    assert took < grace + 0.3
    (abandoned,) = [e for e in logs if e["event"] == "close_abandoned"]
    assert abandoned["what"] == ["store"]
    assert bot.slack.session is not None and bot.slack.session.closed
    assert bot.http.is_closed


async def test_a_sigterm_while_start_up_waits_for_slack_exits_within_two_seconds(
    slack: SlackStandin, powabase: PowabaseStandin, tmp_path: Path
) -> None:
    """Slack failing apps.connections.open keeps start-up retrying; SIGTERM still ends it."""
    slack.inject("apps.connections.open", status=503, times=1000)
    async with powabot_run(slack, powabase, tmp_path) as bot:
        await slack.wait_for(lambda: bool(slack.calls_to("apps.connections.open")), timeout=20)
        sent = bot.signal(signal.SIGTERM)
        code = await bot.exited_by(sent + 2.0)
    assert code == 0, bot.stderr[-2000:]
    assert slack.hub.num_connections == 0


@pytest.mark.parametrize(
    ("setting", "line"),
    [
        (
            {"SLACK_APP_TOKEN": "xapp-1-wrong"},
            "powabot: Slack refused the app token (invalid_auth): check SLACK_APP_TOKEN",
        ),
        (
            {"SLACK_APP_TOKEN": "xoxb-standin"},  # the bot token where the app token belongs
            "powabot: Slack refused the app token (not_allowed_token_type): check SLACK_APP_TOKEN",
        ),
        (
            {"SLACK_BOT_TOKEN": "xoxb-revoked"},
            "powabot: Slack refused the bot token (invalid_auth): check SLACK_BOT_TOKEN",
        ),
    ],
)
async def test_a_refused_token_exits_non_zero_with_one_clear_line(
    slack: SlackStandin,
    powabase: PowabaseStandin,
    tmp_path: Path,
    setting: dict[str, Any],
    line: str,
) -> None:
    """A token Slack refuses is not retried forever: one line says which one, exit code 1."""
    async with powabot_run(slack, powabase, tmp_path, **setting) as bot:
        code = await bot.exited_by(asyncio.get_running_loop().time() + 20)
    human = [entry for entry in bot.stderr.splitlines() if not entry.startswith("{")]
    assert code == 1
    assert human == [line]
    assert "Traceback" not in bot.stderr
