"""The running bot: clients built once, the Bolt app, and its Socket Mode or HTTP front door."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import httpx
import structlog
from aiohttp import web
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.conversation import Answerer
from bot.powabase.client import PowabaseClient, make_http_client
from bot.settings import Settings
from bot.slack import listeners
from bot.slack.budget import Budgets
from bot.slack.publisher import Publisher
from bot.store import SessionStore, make_store

log = structlog.get_logger(__name__)

SLACK_CALL_TIMEOUT = 30.0  # seconds, slack_sdk's own default per call
SLACK_MAX_CONNECTIONS = 200  # Slack answers fast; this only bounds a burst of final edits


def _secret(value: Any) -> str:
    return value.get_secret_value() if value is not None else ""


class Powabot:
    """Owns every long-lived resource; `start()` connects, `stop()` drains and closes."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: SessionStore | None = None,
        http: httpx.AsyncClient | None = None,
        budgets: Budgets | None = None,
    ) -> None:
        self.settings = settings
        self.store = store or make_store(settings)
        self.http = http or make_http_client(
            settings.powabase_url,
            _secret(settings.POWABASE_API_KEY),
            idle_timeout=settings.POWABOT_UPSTREAM_TIMEOUT,
        )
        self.slack = AsyncWebClient(
            token=_secret(settings.SLACK_BOT_TOKEN), base_url=settings.SLACK_API_URL
        )
        self.slack.proxy = None
        self.publisher = Publisher(
            self.slack,
            budgets or Budgets(edits_per_minute=settings.POWABOT_WORKSPACE_EDITS_PER_MINUTE),
            min_interval=settings.POWABOT_EDIT_INTERVAL,
            native_streaming=settings.POWABOT_NATIVE_STREAMING,
        )
        self.answerer = Answerer(
            store=self.store,
            powabase=PowabaseClient(self.http, settings.POWABASE_ORCHESTRATION_ID or ""),
            publisher=self.publisher,
            stall_after=settings.POWABOT_STALL_NOTICE_AFTER,
            run_timeout=settings.POWABOT_RUN_TIMEOUT,
        )
        self.app = AsyncApp(
            client=self.slack,
            signing_secret=_secret(settings.SLACK_SIGNING_SECRET) or None,
            request_verification_enabled=not settings.socket_mode,
            process_before_response=False,
        )
        listeners.register(self.app, self.answerer)
        self._socket: AsyncSocketModeHandler | None = None
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._stopping = False
        self.http_port: int | None = None

    async def start(self) -> None:
        await self.store.open()
        # One keep-alive connection pool for every Slack call (slack_sdk otherwise opens a new
        # session, hence a new TLS handshake, per call: a first edit would pay for it).
        self.slack.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=SLACK_CALL_TIMEOUT),
            connector=aiohttp.TCPConnector(limit=SLACK_MAX_CONNECTIONS),
        )
        if self.settings.socket_mode:
            self._socket = AsyncSocketModeHandler(
                self.app, _secret(self.settings.SLACK_APP_TOKEN), web_client=self.slack
            )
            self._socket.client.proxy = None
            await self._socket.connect_async()
            log.info("bot_started", mode="socket", api_url=self.settings.SLACK_API_URL)
        else:
            web_app = self.app.web_app(path="/slack/events")
            web_app.middlewares.append(self._refuse_while_stopping)
            web_app.router.add_get("/healthz", self._healthz)
            self._runner = web.AppRunner(web_app)
            await self._runner.setup()
            site = web.TCPSite(self._runner, host="0.0.0.0", port=self.settings.PORT)
            await site.start()
            self._site = site
            self.http_port = int(self._runner.addresses[0][1])  # PORT=0 picks a free one
            log.info("bot_started", mode="http", port=self.http_port)

    @web.middleware
    async def _refuse_while_stopping(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """While stopping, Slack events get a 503 (Slack retries them, e.g. on another replica)."""
        if self._stopping and request.path != "/healthz":
            return web.Response(status=503, text="stopping")
        return await handler(request)

    async def _healthz(self, _request: web.Request) -> web.Response:
        health = await self.store.health()
        ok = health.reachable and health.migrated
        return web.json_response({"ok": ok, "store": health.backend}, status=200 if ok else 503)

    async def drain(self, grace: float = 30.0, final_grace: float = 15.0) -> None:
        """Let in-flight answers finish (each ends with a final Slack edit).

        Answers still running after `grace` are cancelled: each then ends its reply with a
        "stopped" notice, which gets `final_grace` more seconds to reach Slack.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        if self.answerer.in_flight:
            log.info("draining_answers", count=len(self.answerer.in_flight))
        # Loop: an event accepted just before intake closed may join while we wait.
        while self.answerer.in_flight and loop.time() < deadline:
            await asyncio.wait(set(self.answerer.in_flight), timeout=deadline - loop.time())
        late = set(self.answerer.in_flight)
        for task in late:
            task.cancel()
        if late:
            log.warning("answers_cancelled_at_shutdown", count=len(late))
            await asyncio.wait(late, timeout=final_grace)
        await self.publisher.settle(final_grace)

    async def stop(self) -> None:
        """Stop taking questions, let answers in flight finish, then close everything."""
        self._stopping = True
        if self._socket is not None:
            # Closing (not just disconnecting) also ends auto-reconnect for good; envelopes not
            # yet acked stay with Slack, which redelivers them.
            with contextlib.suppress(Exception):
                await self._socket.close_async()
        if self._site is not None:
            await self._site.stop()
        # One turn of the loop: listeners Bolt already scheduled start and register themselves.
        await asyncio.sleep(0)
        await self.drain()
        if self._runner is not None:
            await self._runner.cleanup()
        await self.http.aclose()
        if self.slack.session is not None:
            await self.slack.session.close()
        await self.store.close()
        log.info("bot_stopped")
