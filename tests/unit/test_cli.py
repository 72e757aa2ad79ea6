"""The command line: configuration problems are one clear message and exit code 2."""

from __future__ import annotations

import io
import logging

import pytest

from bot.cli import main


def test_run_without_settings_names_every_missing_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    """`powabot run` with nothing configured exits 2 and lists each missing variable."""
    monkeypatch.chdir(str(tmp_path))
    assert main(["run"]) == 2
    err = capsys.readouterr().err
    for name in (
        "SLACK_BOT_TOKEN",
        "POWABASE_URL",
        "POWABASE_API_KEY",
        "POWABASE_ORCHESTRATION_ID",
        "SLACK_APP_TOKEN",
    ):
        assert name in err
    assert "Traceback" not in err


def test_invalid_and_missing_values_are_reported_together(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    """A malformed PORT and a missing token appear in the same message."""
    monkeypatch.chdir(str(tmp_path))
    monkeypatch.setenv("PORT", "eighty")
    monkeypatch.setenv("LOG_FORMAT", "xml")
    assert main(["run"]) == 2
    err = capsys.readouterr().err
    assert "PORT" in err and "LOG_FORMAT" in err and "SLACK_BOT_TOKEN" in err


def test_dotenv_file_is_read(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    """Settings come from `.env` in the working directory too."""
    from pathlib import Path

    monkeypatch.chdir(str(tmp_path))
    Path(".env").write_text("SLACK_BOT_TOKEN=xoxb-from-dotenv\n")
    assert main(["run"]) == 2
    err = capsys.readouterr().err
    assert "SLACK_BOT_TOKEN" not in err and "POWABASE_URL" in err


async def test_demo_plays_the_conversation_and_says_it_used_stand_ins() -> None:
    """`powabot demo` answers a DM, a mention and a follow-up, and says what is simulated."""
    import structlog

    from bot.demo import run_demo

    out = io.StringIO()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        assert await run_demo(out=out) == 0
    finally:  # the demo configures logging for itself; leave none of it behind
        structlog.reset_defaults()
        root.handlers[:] = handlers
        root.setLevel(level)
    text = out.getvalue()
    assert "LOCAL STAND-INS" in text
    assert text.count("posts the delegation trace") == 3
    assert "follow-up continued the thread's Powabase session: yes" in text
    assert "first content_delta leaving Powabase → first Slack edit carrying text" in text
