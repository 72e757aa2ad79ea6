"""Operator alerts: faults no retry can fix, which a person has to (a revoked Slack token, a
wrong Powabase API key or orchestration id).

An alert is logged at error level once per burst (not once per answer), counted in the
`powabot_operator_alerts_total{source,reason}` metric, and keeps readiness red (`/readyz` 503)
until a later call through the same source succeeds (`clear`) or the alert goes stale.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from bot.metrics import OPERATOR_ALERTS

log = structlog.get_logger(__name__)


BURST = 300.0  # seconds: one error log per source and reason in this window
STALE_AFTER = 900.0  # an alert nobody re-raised for this long no longer holds readiness


@dataclass
class Alert:
    source: str  # "slack" or "powabase"
    reason: str  # e.g. "invalid_auth", "http_401"
    detail: str
    first_at: float
    last_at: float
    count: int = 1


class OperatorAlerts:
    """The process's open operator alerts; `active` is what `/readyz` reports."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, *, burst: float = BURST):
        self._clock = clock
        self._burst = burst
        self._alerts: dict[str, Alert] = {}  # by source: one open alert per dependency
        self._logged: dict[tuple[str, str], float] = {}

    def alert(self, source: str, reason: str, detail: str = "") -> None:
        """Record a fault only an operator can fix; logs at most once per burst."""
        now = self._clock()
        OPERATOR_ALERTS.labels(source=source, reason=reason).inc()
        current = self._alerts.get(source)
        if current is not None and current.reason == reason:
            current.last_at = now
            current.count += 1
            current.detail = detail or current.detail
        else:
            self._alerts[source] = Alert(source, reason, detail, now, now)
        logged = self._logged.get((source, reason))
        if logged is None or now - logged >= self._burst:
            self._logged[(source, reason)] = now
            log.error("operator_alert", source=source, reason=reason, detail=detail)

    def clear(self, source: str) -> None:
        """A call through `source` worked again: its alert is over."""
        if self._alerts.pop(source, None) is not None:
            log.info("operator_alert_cleared", source=source)

    @property
    def active(self) -> list[Alert]:
        now = self._clock()
        return [a for a in self._alerts.values() if now - a.last_at < STALE_AFTER]

    def blocked(self, source: str) -> Alert | None:
        """The open alert for `source`, if any (callers skip work that cannot succeed)."""
        return next((a for a in self.active if a.source == source), None)
