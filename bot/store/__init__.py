"""Session stores: where the Slack thread → Powabase session map lives."""

from __future__ import annotations

from bot.errors import StoreError
from bot.settings import Settings
from bot.store.base import ChatSession, SessionStore, StoreHealth, ThreadKey
from bot.store.sqlite import SqliteStore

__all__ = ["ChatSession", "SessionStore", "StoreHealth", "ThreadKey", "make_store"]


def make_store(settings: Settings) -> SessionStore:
    """Pick the backend from settings: Supabase when its URL and key are set, else POWABOT_STORE."""
    url = settings.POWABOT_STORE
    if url.startswith("sqlite:"):
        return SqliteStore(url)
    raise StoreError(f"POWABOT_STORE: unsupported store URL scheme in {url.split(':', 1)[0]!r}")
