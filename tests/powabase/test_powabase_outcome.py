"""A Powabase failure picks the user's notice by cause, and names what an operator must fix."""

from __future__ import annotations

import pytest

from bot.errors import (
    SlackDeliveryError,
    UpstreamConnectError,
    UpstreamRunError,
    UpstreamStatusError,
    UpstreamStreamError,
    UpstreamTimeoutError,
)
from bot.powabase.outcome import error_kind, operator_reason
from bot.state import ErrorKind


def status(code: int) -> UpstreamStatusError:
    return UpstreamStatusError(code, "body", "/api/orchestrations/o/run/stream")


@pytest.mark.parametrize("code", [500, 501, 502, 503, 504, 429])
def test_overload_and_server_errors_say_try_again_later(code: int) -> None:
    """5xx and 429 are Powabase's trouble, not the question's: "try again in a few minutes"."""
    assert error_kind(status(code)) is ErrorKind.UNAVAILABLE
    assert operator_reason(status(code)) is None


@pytest.mark.parametrize("code", [401, 402, 403, 404, 301, 308])
def test_our_own_settings_refused_are_misconfiguration(code: int) -> None:
    """A refused key, lapsed billing, unknown orchestration or redirect: the operator is told."""
    assert error_kind(status(code)) is ErrorKind.MISCONFIGURED
    assert operator_reason(status(code)) == f"http_{code}"


@pytest.mark.parametrize("code", [400, 409, 413, 422])
def test_other_client_errors_are_turned_down(code: int) -> None:
    """Any other 4xx is about this request: "turned down", no operator alert."""
    assert error_kind(status(code)) is ErrorKind.REJECTED
    assert operator_reason(status(code)) is None


def test_unknown_orchestration_as_an_error_event_is_misconfiguration() -> None:
    """An `error` event with code not_found (HTTP 200 before `start`) means a wrong id."""
    exc = UpstreamRunError("Orchestration not found", "not_found")
    assert error_kind(exc) is ErrorKind.MISCONFIGURED
    assert operator_reason(exc) == "run_error_not_found"


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (UpstreamConnectError("refused"), ErrorKind.UNAVAILABLE),
        (UpstreamTimeoutError("silent"), ErrorKind.TIMEOUT),
        (UpstreamRunError("provider down", "provider_error"), ErrorKind.RUN_FAILED),
        (UpstreamRunError("run ended with status 'cancelled'"), ErrorKind.RUN_FAILED),
        (UpstreamStreamError("frame too long"), ErrorKind.INTERRUPTED),
        (SlackDeliveryError("chat.update", "fatal_error"), ErrorKind.INTERNAL),
        (KeyError("bug"), ErrorKind.INTERNAL),
    ],
)
def test_every_other_failure_has_its_own_kind(exc: BaseException, kind: ErrorKind) -> None:
    """Connect errors, timeouts, run failures, broken streams and bugs each map to one kind."""
    assert error_kind(exc) is kind
    assert operator_reason(exc) is None
