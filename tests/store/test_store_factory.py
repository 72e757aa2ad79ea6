"""make_store picks the backend the settings ask for."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.errors import StoreError
from bot.settings import load_settings
from bot.store import make_store
from bot.store.postgres import PostgresStore
from bot.store.sqlite import SqliteStore
from bot.store.supabase import SupabaseStore


def test_supabase_wins_when_url_and_key_are_set(tmp_path: Path) -> None:
    """With SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY set, the bot uses Supabase."""
    settings = load_settings(
        _env_file=None,
        SUPABASE_URL="https://proj.example.co",
        SUPABASE_SERVICE_ROLE_KEY="service-key",
        POWABOT_STORE="postgresql://db/powabot",
    )
    store = make_store(settings)
    assert isinstance(store, SupabaseStore)
    assert store.url == "https://proj.example.co"


@pytest.mark.parametrize("scheme", ["postgres", "postgresql"])
def test_postgres_urls_select_the_postgres_store(scheme: str) -> None:
    """A postgres:// or postgresql:// POWABOT_STORE selects the Postgres-direct store."""
    settings = load_settings(_env_file=None, POWABOT_STORE=f"{scheme}://bot:pw@db:5432/powabot")
    store = make_store(settings)
    assert isinstance(store, PostgresStore)
    assert store.target == "db:5432/powabot"


def test_sqlite_is_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without Supabase or Postgres settings the embedded SQLite store is used."""
    monkeypatch.chdir(tmp_path)
    assert isinstance(make_store(load_settings(_env_file=None)), SqliteStore)


def test_unknown_scheme_is_a_clear_error() -> None:
    """An unsupported POWABOT_STORE names the setting and the scheme."""
    settings = load_settings(_env_file=None, POWABOT_STORE="mysql://db/powabot")
    with pytest.raises(StoreError, match=r"POWABOT_STORE.*'mysql'"):
        make_store(settings)
