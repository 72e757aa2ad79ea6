"""Several workspaces: Slack's OAuth install flow and each workspace's own bot token.

Off unless SLACK_CLIENT_ID, SLACK_CLIENT_SECRET and SLACK_STATE_SECRET are set (then HTTP mode
only, no SLACK_BOT_TOKEN: `bot.settings` checks). With them, Bolt serves the install flow next
to `/slack/events`:

* GET `/slack/install` redirects to Slack's authorize page, asking for exactly the bot scopes
  powabot needs (`bot.slack.scopes.bot_scopes()`), with a one-time `state` (and Bolt's state
  cookie, so the callback must come back to the same browser);
* GET `/slack/oauth_redirect?code=…&state=…` checks the state, exchanges the code
  (oauth.v2.access) and stores the installation: its bot token, team and, on Enterprise Grid,
  enterprise (an org-wide install has no team).

Installations live in the session store's database (slack_sdk's SQLAlchemy tables
`slack_installations`, `slack_bots`, `slack_oauth_states`, created at start when missing):
SQLite through aiosqlite, Postgres through asyncpg. The Supabase store speaks REST only, so
OAuth needs POWABOT_STORE to name the database instead (`installations_url` says so).

The state: slack_sdk's state store keeps a random one-time value with its expiry; we sign it
with SLACK_STATE_SECRET (`SignedStateStore`), so a forged or altered state is refused before
the database is asked, and a replayed one is refused because it was consumed.

Which token writes: every Slack call powabot makes goes through `bot.slack.calls.SlackCaller`,
which uses the token in `SLACK_TOKEN` when one is set. `use_workspace_token`, a global Bolt
middleware, sets it to the token Bolt authorized the request with, so every listener and every
task it starts (asyncio copies context variables) writes as that workspace's bot. An answer
taken over from another replica has no request: `Installations.token_for` finds its token.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from slack_bolt.async_app import AsyncApp, AsyncBoltContext
from slack_bolt.authorization.async_authorize import AsyncInstallationStoreAuthorize
from slack_bolt.oauth.async_oauth_settings import AsyncOAuthSettings
from slack_bolt.response import BoltResponse
from slack_sdk.oauth.installation_store.sqlalchemy import AsyncSQLAlchemyInstallationStore
from slack_sdk.oauth.state_store.async_state_store import AsyncOAuthStateStore
from slack_sdk.oauth.state_store.sqlalchemy import AsyncSQLAlchemyOAuthStateStore
from sqlalchemy import and_, desc, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bot.errors import ConfigError, StartupError
from bot.settings import Settings
from bot.slack.calls import SLACK_TOKEN
from bot.slack.scopes import bot_scopes

log = structlog.get_logger(__name__)

INSTALL_PATH = "/slack/install"
REDIRECT_PATH = "/slack/oauth_redirect"
STATE_EXPIRATION = 600  # seconds between the install page and Slack's callback
SIGNATURE_LENGTH = 32  # hex characters of the state's HMAC-SHA256 kept in the state
POSTGRES_SCHEMES = ("postgres://", "postgresql://")
TABLES = ("slack_installations", "slack_bots", "slack_oauth_states")

TokenFor = Callable[[str], Awaitable[str | None]]


def installations_url(settings: Settings) -> str:
    """The SQLAlchemy URL of the session store's database, for the installation tables."""
    if settings.SUPABASE_URL or settings.SUPABASE_SERVICE_ROLE_KEY:
        raise ConfigError(
            [
                "OAuth install (SLACK_CLIENT_ID) keeps installations in SQL, which the Supabase"
                " store (REST only) cannot: set POWABOT_STORE to the database's"
                " postgresql://… URL (or sqlite:///path.db) and unset SUPABASE_URL and"
                " SUPABASE_SERVICE_ROLE_KEY"
            ]
        )
    url = settings.POWABOT_STORE
    if url.startswith("sqlite:///"):
        return "sqlite+aiosqlite:///" + url.removeprefix("sqlite:///")
    if url.startswith(POSTGRES_SCHEMES):
        return "postgresql+asyncpg://"  # connections come from asyncpg itself (`_engine`)
    raise ConfigError(
        ["POWABOT_STORE: OAuth install needs sqlite:///path.db or postgresql://… to keep installs"]
    )


def _engine(settings: Settings) -> AsyncEngine:
    url = installations_url(settings)
    if url.startswith("sqlite"):
        return create_async_engine(url)
    import asyncpg

    dsn = settings.POWABOT_STORE

    async def connect() -> Any:
        # asyncpg reads the libpq URL itself (sslmode=…, as the session store does);
        # SQLAlchemy's URL would hand sslmode to asyncpg.connect(), which refuses it.
        return await asyncpg.connect(dsn)

    return create_async_engine(url, async_creator=connect, pool_pre_ping=True)


def _sign(secret: bytes, value: str) -> str:
    return hmac.new(secret, value.encode(), hashlib.sha256).hexdigest()[:SIGNATURE_LENGTH]


class SignedStateStore(AsyncOAuthStateStore):
    """One-time OAuth states (kept in `inner` until consumed or expired), signed with the
    state secret: `<state>.<signature>`. A state we did not issue fails the signature check
    without touching the database; one already used (or expired) is not in it any more."""

    def __init__(self, inner: AsyncSQLAlchemyOAuthStateStore, secret: str) -> None:
        self.inner = inner
        self._secret = secret.encode()
        self._logger = logging.getLogger(__name__)

    @property
    def logger(self) -> logging.Logger:
        return self._logger

    async def async_issue(self, *args: Any, **kwargs: Any) -> str:
        state = str(await self.inner.async_issue())
        return f"{state}.{_sign(self._secret, state)}"

    async def async_consume(self, state: str) -> bool:
        value, _, signature = (state or "").rpartition(".")
        if not value or not hmac.compare_digest(signature, _sign(self._secret, value)):
            log.warning("oauth_state_refused", reason="bad_signature")
            return False
        if not await self.inner.async_consume(value):
            log.warning("oauth_state_refused", reason="unknown_used_or_expired")
            return False
        return True


class Installations:
    """The installation and state stores in the session store's database, and Bolt's OAuth
    settings using them. `open()` creates the tables when missing; `close()` disposes."""

    def __init__(self, settings: Settings) -> None:
        if not settings.oauth:
            raise ConfigError(["OAuth install needs SLACK_CLIENT_ID, _SECRET and _STATE_SECRET"])
        assert settings.SLACK_CLIENT_ID is not None  # checked by settings.oauth
        assert settings.SLACK_CLIENT_SECRET is not None
        assert settings.SLACK_STATE_SECRET is not None
        self.client_id = settings.SLACK_CLIENT_ID
        self.engine = _engine(settings)
        self.postgres = not settings.POWABOT_STORE.startswith("sqlite")
        self.store = AsyncSQLAlchemyInstallationStore(client_id=self.client_id, engine=self.engine)
        self.states = AsyncSQLAlchemyOAuthStateStore(
            expiration_seconds=STATE_EXPIRATION, engine=self.engine
        )
        bolt_logger = logging.getLogger("slack_bolt")
        self.oauth_settings = AsyncOAuthSettings(
            client_id=self.client_id,
            client_secret=settings.SLACK_CLIENT_SECRET.get_secret_value(),
            scopes=sorted(bot_scopes()),
            install_path=INSTALL_PATH,
            install_page_rendering_enabled=False,  # straight to Slack's authorize page
            redirect_uri_path=REDIRECT_PATH,
            installation_store=self.store,
            installation_store_bot_only=True,  # powabot acts as its bot only, no user tokens
            state_store=SignedStateStore(
                self.states, settings.SLACK_STATE_SECRET.get_secret_value()
            ),
            state_expiration_seconds=STATE_EXPIRATION,
        )
        # Bolt's own authorize for events (found by enterprise and team, org-wide installs
        # included), with auth.test answers cached per token: else one auth.test per event (a
        # reinstall brings a new token, so nothing stale is served).
        self.oauth_settings.authorize = AsyncInstallationStoreAuthorize(
            logger=bolt_logger,
            installation_store=self.store,
            client_id=self.client_id,
            bot_only=True,
            cache_enabled=True,
        )

    async def open(self) -> None:
        """Create the installation tables when missing (and, on Postgres, keep them away from
        the web app's roles: RLS on, no policy, so only the owner, the bot, reads tokens)."""
        try:
            await self.store.create_tables()  # type: ignore[no-untyped-call]
            await self.states.create_tables()  # type: ignore[no-untyped-call]
            if self.postgres:
                async with self.engine.begin() as conn:
                    for table in TABLES:
                        await conn.execute(text(f"alter table {table} enable row level security"))
        except (SQLAlchemyError, OSError) as exc:
            raise StartupError(
                f"cannot create the Slack installation tables ({type(exc).__name__}): check"
                " that POWABOT_STORE's database is reachable and its user may create tables"
            ) from None
        log.info("oauth_installations_ready", backend="postgres" if self.postgres else "sqlite")

    async def close(self) -> None:
        await self.engine.dispose()

    def attach(self, app: AsyncApp) -> None:
        """Every request's listeners (and the tasks they start) write with its token."""
        app.middleware(use_workspace_token)

    async def token_for(self, team_id: str, enterprise_id: str | None = None) -> str | None:
        """The bot token serving workspace `team_id`: its own install (found by team alone,
        whatever its enterprise), else its enterprise's org-wide install (`enterprise_id`, or
        the only org-wide install there is). None when the app is not installed there."""
        bots = self.store.bots
        c = bots.c
        newest = desc(c.installed_at)
        mine = and_(c.client_id == self.client_id, c.bot_token.is_not(None))
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(c.bot_token).where(mine, c.team_id == team_id).order_by(newest).limit(1)
                )
            ).first()
            if row is not None:
                return str(row[0])
            org = and_(mine, c.is_enterprise_install.is_(True))
            if enterprise_id is not None:
                org = and_(org, c.enterprise_id == enterprise_id)
            query = select(c.enterprise_id, c.bot_token).where(org).order_by(newest)
            rows = (await conn.execute(query)).all()
        enterprises = {r[0] for r in rows}
        return str(rows[0][1]) if len(enterprises) == 1 else None


async def use_workspace_token(
    context: AsyncBoltContext, next_: Callable[[], Awaitable[BoltResponse]]
) -> BoltResponse:
    """Bolt global middleware: Slack calls made for this request use its workspace's token.

    Not reset on the way out: Bolt runs the listeners after the whole middleware chain has
    returned, in the same task (each HTTP request has its own task, so nothing leaks to the
    next request); the listeners' tasks copy it when they start."""
    SLACK_TOKEN.set(context.bot_token)
    return await next_()
