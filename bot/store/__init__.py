"""Session stores: where the Slack thread → Powabase session map lives."""

from __future__ import annotations

from bot.errors import StoreError
from bot.settings import Settings
from bot.store.base import ChatSession, SessionStore, StoreHealth, ThreadKey
from bot.store.postgres import PostgresStore
from bot.store.sqlite import SqliteStore
from bot.store.supabase import SupabaseStore

__all__ = ["ChatSession", "SessionStore", "StoreHealth", "ThreadKey", "make_store"]

POSTGRES_SCHEMES = ("postgres://", "postgresql://")


def make_store(settings: Settings) -> SessionStore:
    """Pick the backend from settings.

    Supabase when SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY are both set; else Postgres when
    POWABOT_STORE is a postgres:// or postgresql:// URL; else SQLite (sqlite:///path.db).
    """
    if settings.SUPABASE_URL and settings.SUPABASE_SERVICE_ROLE_KEY:
        return SupabaseStore(str(settings.SUPABASE_URL), settings.SUPABASE_SERVICE_ROLE_KEY)
    url = settings.POWABOT_STORE
    if url.startswith(POSTGRES_SCHEMES):
        return PostgresStore(url)
    if url.startswith("sqlite:"):
        return SqliteStore(url)
    raise StoreError(
        "POWABOT_STORE: unsupported store URL scheme"
        f" {url.split(':', 1)[0]!r} (use sqlite:///path.db or postgresql://…)"
    )
