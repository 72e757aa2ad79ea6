"""Logging: one event per line, stdlib records rendered alike, no secret in the output."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
import structlog

from bot.logs import configure_logging, redact_text, register_secrets, url_passwords
from bot.settings import Settings

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
        register_secrets([])


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


# Configured secrets that match none of the patterns, so only value redaction can catch them.
# The DSN password holds every character that breaks naive URL parsing.
DSN_PASSWORD = "p/ss@w:rd%41-Lx9q"
SECRETS = {
    "SLACK_BOT_TOKEN": "xoxb-5550001-Bz8QwErTyUiOp",
    "SLACK_APP_TOKEN": "xapp-1-A0SOCKET-77-c0ffee42",
    "SLACK_SIGNING_SECRET": "8f14e45fceea167a5a36dedd4bea2543",
    "POWABASE_API_KEY": "pbk_live_Q3xv9Zk2mT8wL4rN",
    "SUPABASE_SERVICE_ROLE_KEY": "srk.Zp8Qr7Tv6Wx5Yz4A.Opaque",
}


def _configured_settings() -> Settings:
    """Settings as a mounted-secrets deployment gives them: padded, with trailing newlines."""
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        **{name: f"  {value}\n" for name, value in SECRETS.items()},
        SUPABASE_URL="https://project.supabase.example",  # type: ignore[arg-type]
        POWABOT_STORE=f"postgresql://bot:{quote(DSN_PASSWORD, safe='')}@db.internal:5432/powabot\n",
    )


def _every_spelling(secret: str) -> set[str]:
    return {secret, quote(secret, safe=""), quote(secret), quote_plus(secret)}


def _log_every_shape(secret: str) -> None:
    """Log `secret` the ways code and libraries actually leak one."""
    log = structlog.get_logger("t")
    log.info(f"connecting with {secret}")
    log.info("call_failed", detail=f"rejected {secret}", body={"echo": secret}, items=[secret])
    headers = {"Authorization": f"Bearer {secret}", "apikey": secret, "X-Trace": secret}
    log.warning("request_failed", sent=str(headers), headers_seen=headers)
    log.info(
        "store_target", target=f"postgresql://bot:{secret}@db:5432/x", enc=quote(secret, safe="")
    )
    log.info("query", url=f"https://h.example/cb?state=1&sig={quote_plus(secret)}")
    try:
        raise ConnectionError(f"handshake with {secret} failed; headers={headers!r}")
    except ConnectionError:
        log.exception("answer_crashed")
    logging.getLogger("httpx").warning("upstream said %r for %s", headers, secret)
    try:
        raise ValueError(f"bad dsn postgresql://bot:{quote(secret, safe='')}@db/x")
    except ValueError:
        logging.getLogger("asyncpg").exception("pool failed")


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_no_configured_secret_reaches_the_log_in_any_shape(
    fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every configured secret, logged raw, encoded, in headers, DSNs and tracebacks, is hidden."""
    settings = _configured_settings()
    settings = settings.model_copy(update={"LOG_FORMAT": fmt})
    configure_logging(settings)
    secrets = [*SECRETS.values(), DSN_PASSWORD, quote(DSN_PASSWORD, safe="")]
    for secret in secrets:
        _log_every_shape(secret)
    err = capsys.readouterr().err
    for secret in secrets:
        for spelling in _every_spelling(secret):
            assert spelling not in err, f"{spelling!r} leaked"
    assert err.count("answer_crashed") == len(secrets)
    assert "Traceback (most recent call last)" in err
    assert "[redacted]" in err


def test_secrets_are_stripped_at_load_and_redacted_as_stripped() -> None:
    """A key with a trailing newline is used without it, and that exact value is redacted."""
    settings = _configured_settings()
    assert settings.POWABASE_API_KEY is not None
    assert settings.POWABASE_API_KEY.get_secret_value() == SECRETS["POWABASE_API_KEY"]
    assert settings.POWABOT_STORE.endswith("/powabot")
    configure_logging(settings)
    assert redact_text(f"key={SECRETS['POWABASE_API_KEY']}\n") == "key=[redacted]\n"
    assert redact_text(f"k {SECRETS['SLACK_SIGNING_SECRET'].upper()}") == "k [redacted]"


@pytest.mark.parametrize("value", ["", "   ", "\n"])
def test_a_blank_secret_is_refused_at_load(value: str) -> None:
    """An empty or whitespace-only secret is a settings error, never a blank credential."""
    with pytest.raises(ValueError, match="SLACK_SIGNING_SECRET"):
        Settings(_env_file=None, SLACK_SIGNING_SECRET=value)  # type: ignore[call-arg]


def test_a_secret_with_a_line_break_inside_is_refused_without_echoing_it() -> None:
    """Two lines in a mounted secret file are an error that does not show the value."""
    from bot.errors import ConfigError
    from bot.settings import load_settings

    with pytest.raises(ConfigError) as caught:
        load_settings(None, _env_file=None, POWABASE_API_KEY="first-half\nsecond-half")
    assert "POWABASE_API_KEY" in str(caught.value)
    assert "first-half" not in str(caught.value)


def test_short_secrets_do_not_blank_out_ordinary_text() -> None:
    """A configured value under 8 characters is not redacted by value (it would hit words)."""
    register_secrets(["team", "  1234567\n", None, "longenough-secret"])
    text = "the team said 1234567 and longenough-secret"
    assert redact_text(text) == "the team said 1234567 and [redacted]"


@pytest.mark.parametrize(
    ("url", "password"),
    [
        ("postgresql://bot:p/ss@w:rd@db:5432/x", "p/ss@w:rd"),
        ("postgresql://bot:p%2Fss%40w%3Ard@db:5432/x", "p%2Fss%40w%3Ard"),
        ("postgres://db.example/x?user=bot&password=s3cr%40t!", "s3cr@t!"),
        ("sqlite:////data/powabot.db", None),
        ("https://project.supabase.example", None),
    ],
)
def test_url_passwords_finds_the_password_however_it_is_written(
    url: str, password: str | None
) -> None:
    """A DSN's password is found whole even with `/`, `@`, `:` or `%` in it."""
    found = url_passwords(url)
    assert (password in found) if password else not found


def test_a_password_with_slash_and_at_is_hidden_in_an_unconfigured_dsn() -> None:
    """Without any configured secret, a DSN's password holding `/` or `@` is still hidden."""
    assert redact_text("dsn postgresql://bot:p/ss@w:rd@db:5432/x ok") == (
        "dsn postgresql://bot:[redacted]@db:5432/x ok"
    )
