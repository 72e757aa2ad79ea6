"""structlog, configured once: key/value events, JSON in production, one event per line.

Our own events and the standard-library records of slack_bolt, slack_sdk, httpx and aiohttp go
through the same processors, and secrets are redacted last, after exceptions have been rendered
to text, so a token inside an exception message or a traceback is caught too.

Two layers: the configured secret values themselves (registered by `configure_logging(settings)`,
in every encoding they travel in), and patterns for credentials we were never told about.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, quote_plus, unquote, unquote_plus, urlsplit

import structlog
from pydantic import BaseModel, SecretStr
from structlog.typing import EventDict, Processor, WrappedLogger

REDACTED = "[redacted]"

# Configured secrets shorter than this are not redacted by value: a value like "test" or "1234"
# would also blank out every ordinary word or number containing it, making logs unreadable, and
# a secret that short protects nothing anyway. Real Slack tokens, signing secrets and API keys
# are 32+ characters; the key=value patterns below still catch short ones where they are named.
MIN_SECRET_LENGTH = 8

# Keys whose values are secrets, compared case-insensitively after "-" → "_".
SECRET_KEYS = frozenset(
    {
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "bot_token",
        "app_token",
        "user_token",
        "api_key",
        "apikey",
        "x_api_key",
        "authorization",
        "proxy_authorization",
        "cookie",
        "set_cookie",
        "password",
        "passwd",
        "secret",
        "client_secret",
        "signing_secret",
        "service_role_key",
        "service_key",
        "anon_key",
        "secret_key",
        "private_key",
        "dsn",
    }
)
# Keys ending like this are secrets too ("SLACK_BOT_TOKEN", "POWABASE_API_KEY"). A suffix needs
# the separator, so "tokens_used" or "max_tokens" are left alone.
SECRET_KEY_SUFFIXES = ("_token", "_secret", "_password", "_api_key", "_apikey", "_role_key")

_KEY_NAME = (
    r"(?:[a-z0-9]+[_-])*(?:token|api[_-]?key|authorization|cookie|password|passwd|secret"
    r"|service[_-]role[_-]key)"
)
_VALUE = r"[^\s\"'&,;}\])\\]+"
_NOT_YET_REDACTED = r"(?!(?:(?:bearer|basic)\s+)?\[redacted\])"

# (pattern, replacement) pairs applied to every string in an event, in order.
_VALUE_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Slack tokens: xoxb-, xoxp-, xoxa-, xoxe-, xoxe.xoxp-, xapp- ...
    (re.compile(r"(?<![A-Za-z0-9])x(?:ox[a-z]|app)(?:\.xox[a-z])?-[A-Za-z0-9-]*"), REDACTED),
    # JWTs (Supabase anon and service-role keys among them).
    (re.compile(r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), REDACTED),
    # Supabase's newer opaque secret keys.
    (re.compile(r"(?<![A-Za-z0-9])sb_secret_[A-Za-z0-9_-]+"), REDACTED),
    # Authorization header values.
    (re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=-]{6,}"), rf"\1\2{REDACTED}"),
    # token=..., "apikey": "...", x-api-key: ... in free text, headers, reprs and query strings.
    (
        re.compile(
            rf"(?i)(?<![a-z0-9_-])({_KEY_NAME}[\"']?\s*[=:]\s*[\"']?){_NOT_YET_REDACTED}"
            rf"(?:(?:bearer|basic)\s+)?{_VALUE}"
        ),
        rf"\1{REDACTED}",
    ),
    # Short query parameters that often carry credentials: ?key=, &sig=, &code=.
    (
        re.compile(rf"(?i)([?&;](?:key|sig|signature|code)=){_NOT_YET_REDACTED}{_VALUE}"),
        rf"\1{REDACTED}",
    ),
    # Passwords in URLs: postgresql://user:password@host/db, up to the last "@" of the word, so
    # a password holding "/", "@" or ":" is hidden whole (at worst a bit of the host with it).
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]+:)[^\s\"'<>]+@"), rf"\1{REDACTED}@"),
)


def url_passwords(url: str) -> set[str]:
    """The passwords inside a URL or DSN, however it is written.

    `scheme://user:password@host/…` where the password may itself contain `/`, `@`, `:` or `%`
    (read up to the last `@` of the authority as libpq does, and the way urlsplit does), and
    `?password=…` query parameters (libpq / asyncpg accept both).
    """
    found: set[str] = set()
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme:
        return found
    before_query = rest.split("?", 1)[0].split("#", 1)[0]
    userinfo, at, _host = before_query.rpartition("@")
    if at and ":" in userinfo:
        found.add(userinfo.split(":", 1)[1])
    try:
        parts = urlsplit(url)
        if parts.password:
            found.add(parts.password)
        found.update(v for k, v in parse_qsl(parts.query) if k.lower() == "password")
    except ValueError:
        pass
    return {p for p in found if p}


def secret_values(settings: BaseModel) -> set[str]:
    """Every secret a settings object holds: each SecretStr field, and URL passwords (DSNs)."""
    values: set[str] = set()
    for name in type(settings).model_fields:
        value = getattr(settings, name, None)
        if isinstance(value, SecretStr):
            values.add(value.get_secret_value())
        elif value is not None and "://" in str(value):
            values.update(url_passwords(str(value)))
    return values


def _spellings(secret: str) -> set[str]:
    """`secret` as it may appear in text: raw, percent-encoded, decoded, JSON- or repr-escaped."""
    forms = {secret, secret.strip()}
    for form in list(forms):
        forms.update(
            {
                quote(form, safe=""),
                quote(form),
                quote_plus(form),
                unquote(form),
                unquote_plus(form),
                json.dumps(form)[1:-1],
                repr(form)[1:-1],
            }
        )
    return forms


_secret_pattern: re.Pattern[str] | None = None


def register_secrets(values: Iterable[str | SecretStr | None]) -> None:
    """Redact these values (and their encodings) wherever they appear; replaces the last set.

    Values shorter than MIN_SECRET_LENGTH (after stripping) are ignored, see there.
    """
    global _secret_pattern
    forms: set[str] = set()
    for value in values:
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        if raw is None or len(raw.strip()) < MIN_SECRET_LENGTH:
            continue
        forms.update(f for f in _spellings(raw) if len(f) >= MIN_SECRET_LENGTH)
    if not forms:
        _secret_pattern = None
        return
    # Longest first, so a secret containing another is replaced whole. Case-insensitive for
    # percent-encodings (%2F and %2f); for a long random value it costs nothing.
    ordered = sorted(forms, key=len, reverse=True)
    _secret_pattern = re.compile("|".join(re.escape(f) for f in ordered), re.IGNORECASE)


def is_secret_key(name: object) -> bool:
    """True when an event key names a secret (exact name or a `_token`-like suffix)."""
    lowered = str(name).lower().replace("-", "_")
    return lowered in SECRET_KEYS or lowered.endswith(SECRET_KEY_SUFFIXES)


def redact_text(text: str) -> str:
    """`text` with every token, key, password or credential-bearing parameter replaced."""
    if _secret_pattern is not None:
        text = _secret_pattern.sub(REDACTED, text)
    for pattern, replacement in _VALUE_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _redact_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {
            _redact_value(key): REDACTED if is_secret_key(key) else _redact_value(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact_value(item) for item in value]
    # Anything else would be rendered through repr() anyway; do it here so it can be scrubbed.
    to_text = getattr(value, "__structlog__", None)
    return redact_text(to_text() if callable(to_text) else repr(value))


def redact_secrets(_logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
    """Never let a token or key reach the logs, whatever a caller or a library passes."""
    return {
        key: REDACTED if is_secret_key(key) else _redact_value(value)
        for key, value in event.items()
    }


class _Stderr:
    """Whatever `sys.stderr` is at write time (tests and tools swap it after configuration)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


_STDERR = _Stderr()


class _StdlibHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The one root handler this module installs; replaced, never duplicated, on reconfigure."""

    def __init__(self) -> None:
        super().__init__(_STDERR)


def _renderer(fmt: Literal["json", "console"] | str) -> Processor:
    if fmt == "json":
        return structlog.processors.JSONRenderer()
    if fmt == "console":
        return structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    raise ValueError(f"LOG_FORMAT must be 'json' or 'console', not {fmt!r}")


def configure_logging(
    fmt: str | BaseModel = "json",
    level: str = "info",
    *,
    secrets: Iterable[str | SecretStr | None] | None = None,
) -> None:
    """Send structlog events and stdlib records to stderr, rendered as `fmt`, secrets redacted.

    `configure_logging(settings)` takes the format and level from the settings and redacts
    every secret they hold (see `secret_values`); `configure_logging(fmt, level, secrets=…)`
    names the values directly. Without either, the secrets registered before stay registered.

    structlog events below `level` are dropped; stdlib records (third-party libraries) need at
    least WARNING, as before, so httpx and Bolt do not log every request.
    """
    if isinstance(fmt, BaseModel):
        settings = fmt
        fmt, level = (
            str(getattr(settings, "LOG_FORMAT", "json")),
            str(getattr(settings, "LOG_LEVEL", "info")),
        )
        secrets = [*secret_values(settings), *(secrets or ())]
    renderer = _renderer(fmt)
    try:
        numeric = logging.getLevelNamesMapping()[level.upper()]
    except KeyError:
        raise ValueError(f"LOG_LEVEL {level!r} is not a logging level") from None
    if secrets is not None:
        register_secrets(secrets)
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    # Exceptions and stacks become text first, then everything is redacted, then rendered.
    finishing: list[Processor] = [
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        redact_secrets,
        renderer,
    ]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            timestamper,
            *finishing,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        # One write per event (message and newline together), to whatever stderr is now.
        logger_factory=structlog.WriteLoggerFactory(file=_STDERR),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )

    handler = _StdlibHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.contextvars.merge_contextvars,
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                timestamper,
            ],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *finishing],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StdlibHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(max(numeric, logging.WARNING))
