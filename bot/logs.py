"""structlog, configured once: key/value events, JSON in production, one event per line.

Our own events and the standard-library records of slack_bolt, slack_sdk, httpx and aiohttp go
through the same processors, and secrets are redacted last, after exceptions have been rendered
to text, so a token inside an exception message or a traceback is caught too.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from typing import Any, Literal

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

REDACTED = "[redacted]"

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
    # Passwords in URLs: postgresql://user:password@host/db.
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]+:)[^/\s@]+@"), rf"\1{REDACTED}@"),
)


def is_secret_key(name: object) -> bool:
    """True when an event key names a secret (exact name or a `_token`-like suffix)."""
    lowered = str(name).lower().replace("-", "_")
    return lowered in SECRET_KEYS or lowered.endswith(SECRET_KEY_SUFFIXES)


def redact_text(text: str) -> str:
    """`text` with every token, key, password or credential-bearing parameter replaced."""
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
            key: REDACTED if is_secret_key(key) else _redact_value(item)
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
        super().__init__(_STDERR)  # type: ignore[arg-type]


def _renderer(fmt: Literal["json", "console"] | str) -> Processor:
    if fmt == "json":
        return structlog.processors.JSONRenderer()
    if fmt == "console":
        return structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    raise ValueError(f"LOG_FORMAT must be 'json' or 'console', not {fmt!r}")


def configure_logging(fmt: str = "json", level: str = "info") -> None:
    """Send structlog events and stdlib records to stderr, rendered as `fmt`, secrets redacted.

    structlog events below `level` are dropped; stdlib records (third-party libraries) need at
    least WARNING, as before, so httpx and Bolt do not log every request.
    """
    renderer = _renderer(fmt)
    try:
        numeric = logging.getLevelNamesMapping()[level.upper()]
    except KeyError:
        raise ValueError(f"LOG_LEVEL {level!r} is not a logging level") from None
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
