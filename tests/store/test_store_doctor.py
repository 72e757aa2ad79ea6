"""run_doctor reports which store is active, whether it is reachable and migrated."""

from __future__ import annotations

import socket
from pathlib import Path

from bot.doctor import run_doctor
from bot.settings import load_settings
from sandbox.postgrest import PostgrestStandin, make_jwt


async def test_sqlite_store_passes(tmp_path: Path) -> None:
    """A fresh SQLite store is reachable and migrated: exit code 0."""
    settings = load_settings(_env_file=None, POWABOT_STORE=f"sqlite:///{tmp_path / 'b.db'}")
    code, lines = await run_doctor(settings)
    assert code == 0
    assert lines[0].startswith("• store: sqlite at sqlite:///")
    assert lines[1:] == ["✓ store reachable", "✓ store migrated"]


async def test_unmigrated_postgres_fails_with_a_hint(bootstrapped_db: str) -> None:
    """A reachable Postgres without the migrations fails, saying what is missing and what to do."""
    code, lines = await run_doctor(load_settings(_env_file=None, POWABOT_STORE=bootstrapped_db))
    assert code == 1
    assert lines[1] == "✓ store reachable"
    assert lines[2].startswith("✗ store not migrated:")
    assert "chat_sessions" in lines[2] and "sql/0*.sql" in lines[2]


async def test_unreachable_postgres_fails_without_password() -> None:
    """An unreachable Postgres fails with exit code 1 and never prints the password."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"postgresql://bot:s3cret-pw@127.0.0.1:{port}/powabot"
    code, lines = await run_doctor(load_settings(_env_file=None, POWABOT_STORE=url))
    assert code == 1
    assert lines[0] == f"• store: postgres at 127.0.0.1:{port}/powabot"
    assert lines[1].startswith("✗ store unreachable:")
    assert all("s3cret-pw" not in line for line in lines)


async def test_migrated_supabase_passes_without_showing_the_key(
    postgrest: PostgrestStandin, jwt_secret: str
) -> None:
    """Supabase settings select the Supabase store; a migrated project passes; no key printed."""
    key = make_jwt(jwt_secret, "service_role")
    settings = load_settings(
        _env_file=None, SUPABASE_URL=postgrest.url, SUPABASE_SERVICE_ROLE_KEY=key
    )
    code, lines = await run_doctor(settings)
    assert (code, lines) == (
        0,
        [f"• store: supabase at {postgrest.url}", "✓ store reachable", "✓ store migrated"],
    )
    assert all(key not in line for line in lines)
