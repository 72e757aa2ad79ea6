"""structlog, configured once: key/value events, JSON in production, one event per line."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

SECRET_KEYS = ("token", "secret", "apikey", "api_key", "authorization", "password", "key")


def redact_secrets(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    """Never let a token or key reach the logs, whatever a caller passes."""
    for name in list(event):
        lowered = name.lower()
        if any(s in lowered for s in SECRET_KEYS) and lowered not in ("event", "key_count"):
            event[name] = "[redacted]"
        elif isinstance(event[name], str) and event[name].startswith(("xoxb-", "xapp-", "xoxp-")):
            event[name] = "[redacted]"
    return event


def configure_logging(fmt: str = "json", level: str = "info") -> None:
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    numeric = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_secrets,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # Bolt and slack_sdk log through the standard library: keep them quiet and on stderr.
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr)
