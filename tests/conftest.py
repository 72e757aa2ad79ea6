"""Shared fixtures: a clean environment, the two stand-ins on 127.0.0.1, and the real bot."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

# Postgres fixtures (one throwaway cluster for the run) for every suite that needs them.
pytest_plugins = ["tests.postgres"]

REPO = Path(__file__).resolve().parent.parent
SEED_CONTENT = REPO / "seed-content"
SCRUBBED_PREFIXES = ("SLACK_", "POWABASE_", "POWABOT_", "SUPABASE_")
PROXY_VARS = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy", "all_proxy")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test sees the developer's Slack/Powabase settings or proxies (traffic stays local)."""
    for name in list(os.environ):
        if name.startswith(SCRUBBED_PREFIXES) or name in PROXY_VARS:
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    yield
    # structlog's configuration is process-wide: a test that configured it (or used
    # capture_logs, which configures it too) must not change what the next test's code logs.
    structlog.reset_defaults()


@pytest.fixture
async def slack() -> AsyncIterator[Any]:
    from sandbox.slack import SlackStandin

    standin = SlackStandin()
    await standin.start()
    try:
        yield standin
    finally:
        await standin.stop()


@pytest.fixture
async def powabase() -> AsyncIterator[Any]:
    from sandbox.powabase import PowabaseStandin

    standin = PowabaseStandin(delta_delay=0.002)
    await standin.start()
    standin.orchestration_id = standin.seed_from(SEED_CONTENT)
    try:
        yield standin
    finally:
        await standin.stop()


def bot_settings(slack: Any, powabase: Any, tmp_path: Path, **extra: Any) -> Any:
    from bot.settings import Settings

    values: dict[str, Any] = {
        "SLACK_BOT_TOKEN": slack.bot_token,
        "SLACK_APP_TOKEN": slack.app_token,
        "SLACK_API_URL": slack.api_url,
        "POWABASE_URL": powabase.url,
        "POWABASE_API_KEY": powabase.api_key,
        "POWABASE_ORCHESTRATION_ID": powabase.orchestration_id,
        "POWABOT_STORE": f"sqlite:///{tmp_path / 'sessions.db'}",
        "POWABOT_EDIT_INTERVAL": 0.05,
        # The classic path unless a test asks for native streaming (the product's default is
        # native; tests/e2e/test_native_streaming.py covers it and checks that default).
        "POWABOT_NATIVE_STREAMING": False,
        "LOG_FORMAT": "console",
        "PORT": 0,  # health and metrics on a free port (both modes serve them)
    }
    values.update(extra)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@contextlib.asynccontextmanager
async def running_bot(
    slack: Any,
    powabase: Any,
    tmp_path: Path,
    *,
    store: Any = None,
    budgets: Any = None,
    **settings: Any,
) -> AsyncIterator[Any]:
    """The production bot in Socket Mode, connected to the stand-ins; stopped on the way out."""
    from bot.service import Powabot

    instance = Powabot(
        bot_settings(slack, powabase, tmp_path, **settings), store=store, budgets=budgets
    )
    await instance.start()
    try:
        await slack.wait_connected()
        yield instance
    finally:
        await instance.stop()


@pytest.fixture
async def bot(slack: Any, powabase: Any, tmp_path: Path) -> AsyncIterator[Any]:
    """The production bot in Socket Mode, its only difference from production the base URLs."""
    async with running_bot(slack, powabase, tmp_path) as instance:
        yield instance
