"""Every Prometheus metric powabot exports, in one place (`/metrics` serves the default registry).

Labels stay low-cardinality: methods, outcomes, kinds, reasons; never team, channel or user ids.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# Answers
ANSWERS = Counter(
    "powabot_answers",
    "Answers by how they ended: delivered (Slack accepted the final text), lost (it did not), "
    "skipped (the channel is gone or the bot token is refused: nothing asked upstream), "
    "abandoned (the channel went away mid-answer: the run was cancelled, nothing more written), "
    "handed_over (this replica stopped: another one finishes it)",
    ["outcome"],
)
ANSWERS_IN_FLIGHT = Gauge(
    "powabot_answers_in_flight", "Answers this replica is working on (running or waiting)"
)
ANSWERS_RUNNING = Gauge("powabot_answers_running", "Answers holding a slot (POWABOT_MAX_IN_FLIGHT)")
ANSWERS_QUEUED = Gauge("powabot_answers_queued", "Answers waiting in line for a slot")
FIRST_TEXT_SECONDS = Histogram(
    "powabot_first_text_seconds",
    "First upstream answer delta -> first Slack write showing answer text",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0),
)
UPSTREAM_ERRORS = Counter(
    "powabot_upstream_errors", "Powabase runs that failed, by notice kind", ["kind"]
)
LEASE_TAKEOVERS = Counter(
    "powabot_lease_takeovers", "Answers this replica took over from a replica that stopped"
)

# Slack calls and budgets
SLACK_CALLS = Counter(
    "powabot_slack_calls", "Slack Web API calls by method and result", ["method", "result"]
)
SLACK_RATELIMITED = Counter(
    "powabot_slack_ratelimited", "Slack answers of 429 / ratelimited, by method", ["method"]
)
BUDGET_WAIT_SECONDS = Histogram(
    "powabot_budget_wait_seconds",
    "Time a Slack write waited for its rate budget",
    buckets=(0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0),
)
BUDGET_DB_SECONDS = Histogram(
    "powabot_budget_db_seconds",
    "Time one shared-budget reservation took in Postgres (the statement, round trip included)",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5),
)
BUDGET_FALLBACK_ACTIVE = Gauge(
    "powabot_budget_fallback_active",
    "1 while the shared budget in Postgres is unreachable and a local share is used",
)

# Operators
OPERATOR_ALERTS = Counter(
    "powabot_operator_alerts",
    "Faults an operator must fix (bad Slack token, bad Powabase key or orchestration id)",
    ["source", "reason"],
)
OPERATOR_ALERTS_OPEN = Gauge("powabot_operator_alerts_open", "Operator alerts open right now")
