"""Logging: one event per line, stdlib records rendered alike, no secret in the output."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from bot.logs import configure_logging, redact_text

SLACK_BOT = "xoxb-1111-2222-AbCdEfGhIjKl"
SLACK_APP = "xapp-1-A0123-4567-deadbeef"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoic2VydmljZV9yb2xlIn0.c2lnbmF0dXJlLXZhbHVl"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Put structlog and the stdlib root logger back as they were, so no test inherits ours."""
    saved_config = structlog.get_config()
    root = logging.getLogger()
    saved_handlers = list(root.handlers)
    saved_level = root.level
    try:
        yield
    finally:
        for handler in list(root.handlers):
            if handler not in saved_handlers:
                root.removeHandler(handler)
        root.setLevel(saved_level)
        structlog.configure(**saved_config)


def _json_lines(err: str) -> list[dict[str, Any]]:
    lines = err.splitlines()
    assert lines, "nothing was logged"
    return [json.loads(line) for line in lines]


def _assert_no_secret(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text


def test_slack_token_in_the_message_is_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    """A Slack token written into the event text never reaches stderr."""
    configure_logging("json", "info")
    structlog.get_logger("t").info(f"connecting with {SLACK_BOT}")
    err = capsys.readouterr().err
    _assert_no_secret(err, SLACK_BOT, "xoxb-1111")
    [line] = _json_lines(err)
    assert line["event"] == "connecting with [redacted]"
    assert line["level"] == "info"


def test_secrets_in_values_and_secret_keys_are_redacted_but_counters_survive(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Secret-named keys and token-shaped values are wiped; `tokens_used` and friends are kept."""
    configure_logging("json", "info")
    structlog.get_logger("t").info(
        "call_made",
        detail=f"socket mode with {SLACK_APP}",
        token="plain-looking-value",
        SLACK_SIGNING_SECRET="abc123",
        headers={"apikey": "gateway-key", "Authorization": f"Bearer {JWT}"},
        url="https://db.example/rest/v1/t?apikey=qwerty123&select=*",
        dsn_shown="postgresql://bot:hunter2@db:5432/powabot",
        cause=ValueError(f"rejected {SLACK_BOT}"),
        tokens_used=1234,
        max_tokens=4096,
        channel="C123",
    )
    err = capsys.readouterr().err
    _assert_no_secret(
        err, SLACK_APP, SLACK_BOT, JWT, "plain-looking-value", "abc123", "gateway-key"
    )
    _assert_no_secret(err, "qwerty123", "hunter2")
    [line] = _json_lines(err)
    assert line["token"] == "[redacted]"
    assert line["SLACK_SIGNING_SECRET"] == "[redacted]"
    assert line["headers"] == {"apikey": "[redacted]", "Authorization": "[redacted]"}
    assert line["detail"] == "socket mode with [redacted]"
    assert line["url"] == "https://db.example/rest/v1/t?apikey=[redacted]&select=*"
    assert line["dsn_shown"] == "postgresql://bot:[redacted]@db:5432/powabot"
    assert line["cause"] == "ValueError('rejected [redacted]')"
    assert line["tokens_used"] == 1234 and line["max_tokens"] == 4096
    assert line["channel"] == "C123"


def test_token_in_an_exception_message_and_traceback_is_redacted(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`log.exception` renders the traceback, then redacts it, and still emits a single line."""
    configure_logging("json", "info")
    log = structlog.get_logger("t")
    try:
        raise RuntimeError(f"Slack refused {SLACK_BOT}\nand the second line says Bearer {JWT}")
    except RuntimeError:
        log.exception("answer_crashed")
    err = capsys.readouterr().err
    _assert_no_secret(err, SLACK_BOT, JWT)
    [line] = _json_lines(err)
    assert line["event"] == "answer_crashed"
    assert "Traceback (most recent call last)" in line["exception"]
    assert "RuntimeError: Slack refused [redacted]" in line["exception"]


def test_stdlib_library_records_come_out_as_redacted_json(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """slack_bolt / slack_sdk records are JSON lines with level, logger name and no token."""
    configure_logging("json", "info")
    logging.getLogger("slack_bolt").warning("token %s was rejected", SLACK_BOT)
    try:
        raise ConnectionError(f"handshake failed for {SLACK_APP}")
    except ConnectionError:
        logging.getLogger("slack_sdk.socket_mode").exception("socket mode\nreconnecting")
    err = capsys.readouterr().err
    _assert_no_secret(err, SLACK_BOT, SLACK_APP)
    bolt, sdk = _json_lines(err)
    assert bolt["event"] == "token [redacted] was rejected"
    assert (bolt["level"], bolt["logger"]) == ("warning", "slack_bolt")
    assert "timestamp" in bolt
    assert sdk["event"] == "socket mode\nreconnecting"
    assert (sdk["level"], sdk["logger"]) == ("error", "slack_sdk.socket_mode")
    assert "ConnectionError: handshake failed for [redacted]" in sdk["exception"]


def test_library_chatter_below_warning_stays_out(capsys: pytest.CaptureFixture[str]) -> None:
    """httpx's per-request INFO lines are not logged, while our own info events are."""
    configure_logging("json", "info")
    logging.getLogger("httpx").info("HTTP Request: POST https://example/api 200 OK")
    structlog.get_logger("t").info("answer_started")
    events = [line["event"] for line in _json_lines(capsys.readouterr().err)]
    assert events == ["answer_started"]


def test_multi_line_messages_are_one_json_line_each(capsys: pytest.CaptureFixture[str]) -> None:
    """Newlines inside messages never split an event across lines in JSON mode."""
    configure_logging("json", "debug")
    log = structlog.get_logger("t")
    log.debug("first\nsecond\r\nthird")
    log.warning("upstream_failed", error="line one\nline two")
    logging.getLogger("aiohttp.server").error("bad request:\n%s", "GET / HTTP/1.1\r\nHost: x")
    lines = _json_lines(capsys.readouterr().err)
    assert [line["event"] for line in lines] == [
        "first\nsecond\r\nthird",
        "upstream_failed",
        "bad request:\nGET / HTTP/1.1\r\nHost: x",
    ]


def test_configuring_twice_does_not_duplicate_library_lines(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Re-running configure_logging replaces its stdlib handler instead of adding another."""
    configure_logging("json", "info")
    configure_logging("json", "info")
    logging.getLogger("slack_bolt").warning("once")
    assert len(_json_lines(capsys.readouterr().err)) == 1


def test_console_format_is_redacted_too(capsys: pytest.CaptureFixture[str]) -> None:
    """The human-readable format hides the same secrets, exceptions included."""
    configure_logging("console", "info")
    log = structlog.get_logger("t")
    log.info("starting", api_key="k-12345", note=f"with {SLACK_BOT}")
    logging.getLogger("slack_bolt").warning("bolt saw %s", SLACK_APP)
    try:
        raise RuntimeError(f"bad {SLACK_BOT}")
    except RuntimeError:
        log.exception("crashed")
    err = capsys.readouterr().err
    _assert_no_secret(err, SLACK_BOT, SLACK_APP, "k-12345")
    assert "starting" in err and "api_key=[redacted]" in err
    assert "bolt saw [redacted]" in err
    assert "RuntimeError: bad [redacted]" in err
    assert not err.lstrip().startswith("{")


def test_unknown_format_or_level_is_a_clear_error() -> None:
    """A typo in LOG_FORMAT or LOG_LEVEL names the setting instead of failing obscurely."""
    with pytest.raises(ValueError, match="LOG_FORMAT"):
        configure_logging("xml", "info")
    with pytest.raises(ValueError, match="LOG_LEVEL"):
        configure_logging("json", "loud")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("refresh xoxe-1-abc and xoxe.xoxp-1-def", "refresh [redacted] and [redacted]"),
        ("legacy xoxa-2-abc, user xoxp-9-xyz", "legacy [redacted], user [redacted]"),
        (f"key {JWT} end", "key [redacted] end"),
        ("Authorization: Bearer sk_live_abcdef", "Authorization: Bearer [redacted]"),
        ("{'apikey': 'gw-1234'}", "{'apikey': '[redacted]'}"),
        ('{"x-api-key": "k1", "n": 1}', '{"x-api-key": "[redacted]", "n": 1}'),
        ("GET /cb?code=oauth123&state=s", "GET /cb?code=[redacted]&state=s"),
        ("/v1/t?select=*&access_token=t0k", "/v1/t?select=*&access_token=[redacted]"),
        ("SUPABASE_SERVICE_ROLE_KEY=sb_secret_Ab1", "SUPABASE_SERVICE_ROLE_KEY=[redacted]"),
        ("password: hunter2", "password: [redacted]"),
        (
            "tokens_used=12 max_tokens: 40 token_count=3",
            "tokens_used=12 max_tokens: 40 token_count=3",
        ),
        ("channel C123 thread 1712345678.000100", "channel C123 thread 1712345678.000100"),
    ],
)
def test_redact_text_hides_credentials_and_keeps_ordinary_text(text: str, expected: str) -> None:
    """Each credential shape is replaced in place; ordinary words and numbers are untouched."""
    assert redact_text(text) == expected
