"""The store suite's own setup: no proxy, Slack or store settings leak into a test.

The Postgres fixtures (`pg_cluster`, `migrated_db`, `bootstrapped_db`, `postgrest`,
`authenticator_dsn`, `jwt_secret`, `new_database`) live in tests/postgres.py, shared by every
suite so one throwaway cluster serves the whole run.
"""

from __future__ import annotations

import os

import pytest

from sandbox.pgcluster import SQL_DIR

__all__ = ["SQL_DIR"]

_PROXY_AND_SLACK_ENV = ("HTTPS_PROXY", "HTTP_PROXY", "http_proxy", "https_proxy", "ALL_PROXY")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _PROXY_AND_SLACK_ENV:
        monkeypatch.delenv(name, raising=False)
    for name in list(os.environ):
        if name.startswith(("SLACK_", "SUPABASE_", "POWABOT_")):
            monkeypatch.delenv(name, raising=False)
