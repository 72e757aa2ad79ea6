"""Doctor's store checks: which store is active, whether it is reachable and migrated, and
whether the shared Slack budget table is there (Postgres direct or through Supabase)."""

from __future__ import annotations

import socket
from pathlib import Path

import asyncpg

from bot.doctor import BUDGET_TABLE, Check, check_store, run_doctor
from bot.settings import load_settings
from sandbox.postgrest import PostgrestStandin, make_jwt

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"
# A stand-in for what sql/008_slack_budget.sql creates: doctor only looks for the table.
CREATE_BUDGET = f"create table if not exists public.{BUDGET_TABLE} (key text primary key)"


def verdicts(checks: list[Check]) -> list[tuple[str, str]]:
    return [(c.label, c.status) for c in checks]


async def _execute(dsn: str, *statements: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def test_sqlite_store_passes(tmp_path: Path) -> None:
    """A fresh SQLite store is reachable and migrated; the shared budget does not apply."""
    settings = load_settings(_env_file=None, POWABOT_STORE=f"sqlite:///{tmp_path / 'b.db'}")
    checks = await check_store(settings)
    assert verdicts(checks) == [
        ("store", "ok"),
        ("migrations", "ok"),
        ("budget table", "skipped"),
    ]
    assert checks[0].line().startswith("✓ store: sqlite at sqlite:///")
    assert checks[2].line() == "– budget table: not applicable (SQLite: in-process budget)"


async def test_unmigrated_postgres_fails_with_a_hint(bootstrapped_db: str) -> None:
    """A reachable Postgres without the migrations fails, saying what is missing and what to do."""
    checks = await check_store(load_settings(_env_file=None, POWABOT_STORE=bootstrapped_db))
    assert verdicts(checks)[:2] == [("store", "ok"), ("migrations", "failed")]
    line = checks[1].line()
    assert line.startswith("✗ migrations: not migrated:")
    assert "chat_sessions" in line and "— apply sql/0*.sql with psql, in order" in line


async def test_postgres_without_migration_007_fails_naming_it(bootstrapped_db: str) -> None:
    """A Postgres with every column but no session-id lock (007) fails, naming 007 and the fix."""
    migrations = sorted(SQL_DIR.glob("[0-9][0-9][0-9]_*.sql"))
    await _execute(
        bootstrapped_db, *(p.read_text() for p in migrations if not p.name.startswith("007"))
    )
    checks = await check_store(load_settings(_env_file=None, POWABOT_STORE=bootstrapped_db))
    assert verdicts(checks)[:2] == [("store", "ok"), ("migrations", "failed")]
    assert "migration 007" in checks[1].detail and "sql/0*.sql" in (checks[1].fix or "")


async def test_fully_migrated_postgres_with_budget_table_passes(migrated_db: str) -> None:
    """A Postgres with every migration and the shared budget table passes every store check."""
    await _execute(migrated_db, CREATE_BUDGET)
    checks = await check_store(load_settings(_env_file=None, POWABOT_STORE=migrated_db))
    assert verdicts(checks) == [("store", "ok"), ("migrations", "ok"), ("budget table", "ok")]
    assert checks[2].line() == (
        f"✓ budget table: public.{BUDGET_TABLE} present: replicas share one Slack budget"
    )


async def test_postgres_without_budget_table_fails_naming_it(migrated_db: str) -> None:
    """Without public.slack_budget the budget check fails, naming the table and the migration."""
    await _execute(migrated_db, f"drop table if exists public.{BUDGET_TABLE} cascade")
    checks = await check_store(load_settings(_env_file=None, POWABOT_STORE=migrated_db))
    assert verdicts(checks)[1:] == [("migrations", "failed"), ("budget table", "failed")]
    assert BUDGET_TABLE in checks[1].detail  # not migrated: /readyz says so too
    assert checks[2].line() == (
        f"✗ budget table: public.{BUDGET_TABLE} is missing: replicas cannot share one Slack"
        " budget — apply sql/008_slack_budget.sql (or every sql/0*.sql, in order) with psql"
    )


async def test_unreachable_postgres_fails_without_password() -> None:
    """An unreachable Postgres fails doctor (exit 1) and the password is never printed."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"postgresql://bot:s3cret-pw@127.0.0.1:{port}/powabot"
    report = await run_doctor(load_settings(_env_file=None, POWABOT_STORE=url))
    assert report.exit_code == 1
    store = report.check("store_reachable")
    assert store.status == "failed"
    assert store.detail.startswith(f"postgres at 127.0.0.1:{port}/powabot unreachable:")
    assert report.check("store_migrated").status == "skipped"
    assert all("s3cret-pw" not in line for line in report.lines())


async def test_migrated_supabase_passes_without_showing_the_key(
    postgrest: PostgrestStandin, migrated_db: str, jwt_secret: str
) -> None:
    """Supabase settings select the Supabase store; migrated with the budget table it passes,
    and the service-role key is never printed."""
    await _execute(migrated_db, CREATE_BUDGET)
    key = make_jwt(jwt_secret, "service_role")
    settings = load_settings(
        _env_file=None, SUPABASE_URL=postgrest.url, SUPABASE_SERVICE_ROLE_KEY=key
    )
    report = await run_doctor(settings)
    checks = [report.check(n) for n in ("store_reachable", "store_migrated", "budget_table")]
    assert verdicts(checks) == [("store", "ok"), ("migrations", "ok"), ("budget table", "ok")]
    assert checks[0].detail == f"supabase at {postgrest.url} reachable"
    assert all(key not in line for line in report.lines())


async def test_supabase_without_budget_table_fails_naming_it(
    postgrest: PostgrestStandin, migrated_db: str, jwt_secret: str
) -> None:
    """Through Supabase too, a missing public.slack_budget fails the budget check (and the
    migrations check, which names it)."""
    await _execute(migrated_db, f"drop table if exists public.{BUDGET_TABLE} cascade")
    key = make_jwt(jwt_secret, "service_role")
    settings = load_settings(
        _env_file=None, SUPABASE_URL=postgrest.url, SUPABASE_SERVICE_ROLE_KEY=key
    )
    checks = await check_store(settings)
    assert verdicts(checks) == [
        ("store", "ok"),
        ("migrations", "failed"),
        ("budget table", "failed"),
    ]
    assert BUDGET_TABLE in checks[1].detail
    assert "sql/008_slack_budget.sql" in (checks[2].fix or "")


async def test_postgres_without_the_support_loop_migrations_fails_naming_them(
    bootstrapped_db: str,
) -> None:
    """A Postgres migrated only up to 009 fails the migrations check, naming the tables of
    010-013 (answers, escalations, history, settings) and the Slack rating columns."""
    migrations = sorted(SQL_DIR.glob("[0-9][0-9][0-9]_*.sql"))
    await _execute(bootstrapped_db, *(p.read_text() for p in migrations if p.name < "010"))
    checks = await check_store(load_settings(_env_file=None, POWABOT_STORE=bootstrapped_db))
    assert verdicts(checks)[:2] == [("store", "ok"), ("migrations", "failed")]
    detail = checks[1].detail
    for missing in (
        "answer_log",
        "escalations",
        "chat_session_history",
        "workspace_settings",
        "chat_feedback.answer_log_id",
    ):
        assert missing in detail
    assert "sql/0*.sql" in (checks[1].fix or "")
