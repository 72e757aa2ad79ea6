"""What a failed Powabase call means: the notice a user sees, and whether an operator must act.

`error_kind(exc)` picks the `ErrorKind` (hence the user's words) by cause:

    connect error, any 5xx, 429                  UNAVAILABLE    try again in a few minutes
    401 / 402 / 403 / 404, a 3xx redirect,       MISCONFIGURED  the team has been told
      an `error` event with code not_found
    any other 4xx                                REJECTED       turned down
    UpstreamTimeoutError                         TIMEOUT        try again in a few minutes
    `error` event, `complete` not completed      RUN_FAILED     ask again
    stream broken off / oversize frame / junk    INTERRUPTED    ask again
    anything else                                INTERNAL       a bug on our side

`operator_reason(exc)` names the misconfiguration for the operator alert (``"http_401"``), or
returns None when no operator needs to act. Both are pure.
"""

from __future__ import annotations

from bot.errors import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamRunError,
    UpstreamStatusError,
    UpstreamTimeoutError,
)
from bot.state import ErrorKind, run_error_kind

# Answers meaning our own settings are wrong: the API key (401, 403), the account's billing
# (402) or the orchestration id / base URL (404). Retrying or rephrasing cannot help.
MISCONFIGURED_STATUSES = frozenset({401, 402, 403, 404})


def _misconfigured_status(status: int) -> bool:
    # A redirect means POWABASE_URL points at the wrong place (e.g. http:// for an https host).
    return status in MISCONFIGURED_STATUSES or 300 <= status < 400


def error_kind(exc: BaseException) -> ErrorKind:
    """Why an answer failed, by the class (and status) of the error that ended it."""
    match exc:
        case UpstreamStatusError(status=status) if _misconfigured_status(status):
            return ErrorKind.MISCONFIGURED
        case UpstreamStatusError(status=status) if status >= 500 or status == 429:
            return ErrorKind.UNAVAILABLE
        case UpstreamStatusError():
            return ErrorKind.REJECTED
        case UpstreamConnectError():
            return ErrorKind.UNAVAILABLE
        case UpstreamTimeoutError():
            return ErrorKind.TIMEOUT
        case UpstreamRunError(code=code):
            return run_error_kind(code)
        case UpstreamError():
            return ErrorKind.INTERRUPTED
        case _:
            return ErrorKind.INTERNAL


def operator_reason(exc: BaseException) -> str | None:
    """The alert reason (``"http_401"``, ``"run_error_not_found"``) when settings are wrong."""
    if error_kind(exc) is not ErrorKind.MISCONFIGURED:
        return None
    match exc:
        case UpstreamStatusError(status=status):
            return f"http_{status}"
        case UpstreamRunError(code=code):
            return f"run_error_{code}"
        case _:
            return None
