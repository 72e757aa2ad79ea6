"""The command line: configuration problems are one clear message and exit code 2."""

from __future__ import annotations

import ast
import io
import logging
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

import bot.cli
from bot.cli import main

REPO = Path(__file__).resolve().parents[2]


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

    from sandbox.demo import run_demo

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
    assert text.count("posts the delegation trace") == 3  # the stopped answer has none
    assert "task card “Billing specialist” → complete" in text
    assert "bot stops the stream: **Sources:**" in text
    assert "alice clicks Stop" in text and "_Stopped._" in text and ": cancelled)" in text
    assert "negative rating → hand-over to a person → resolved: yes" in text
    assert "follow-up continued the thread's Powabase session: yes" in text
    assert "first content_delta leaving Powabase → first Slack edit carrying text" in text


def _imported_modules(path: Path) -> set[str]:
    """Every module an `import` / `from … import` in `path` names, at any depth."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") in (
            "import_module",
            "__import__",
        ):
            names.update(a.value for a in node.args if isinstance(a, ast.Constant))
    return names


def test_the_product_imports_no_stand_in_or_tool() -> None:
    """Nothing under bot/ imports sandbox/, tests/ or bench/, so the product runs without them."""
    offenders = {
        f"{path.relative_to(REPO)}: {name}"
        for path in sorted((REPO / "bot").rglob("*.py"))
        for name in _imported_modules(path)
        if name.split(".")[0] in ("sandbox", "tests", "bench")
    }
    assert offenders == set()


def test_demo_without_a_source_checkout_says_so(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the stand-ins are not installed (the image), `powabot demo` exits 2 with a hint."""
    missing = EntryPoint("demo", "powabot_absent_tools.demo:main", "powabot.commands")
    monkeypatch.setattr(bot.cli, "entry_points", lambda **_: [missing])
    assert main(["demo"]) == 2
    err = capsys.readouterr().err
    assert "source checkout" in err and "pip install -e ." in err
    assert "Traceback" not in err


def test_demo_is_found_through_the_installed_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    """`powabot demo --interactive` reaches the checkout's demo with its own arguments."""
    seen: list[list[str]] = []
    monkeypatch.setattr("sandbox.demo.main", lambda argv: seen.append(argv) or 0)
    assert main(["demo", "--interactive"]) == 0
    assert seen == [["--interactive"]]
