"""The running bot: clients built once, the Bolt app, and its Socket Mode or HTTP front door.

Both modes serve `/healthz` (liveness), `/readyz` (503 with the reasons while starting or
stopping, the store unreachable or not migrated, Socket Mode disconnected, or an operator alert
open) and `/metrics` (Prometheus) on PORT; HTTP mode serves Slack's `/slack/events` next to them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import httpx
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST as METRICS_TYPE
from prometheus_client import REGISTRY, generate_latest
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.alerts import OperatorAlerts
from bot.conversation import Answerer
from bot.errors import StartupError
from bot.leases import Leases
from bot.metrics import ANSWERS_QUEUED, ANSWERS_RUNNING, OPERATOR_ALERTS_OPEN
from bot.powabase.client import open_powabase
from bot.settings import Settings
from bot.slack import listeners
from bot.slack.access import Access, SlackDirectory
from bot.slack.assistant import Assistant
from bot.slack.budget import Budgets
from bot.slack.feedback import register_feedback
from bot.slack.home import Home, register_home
from bot.slack.oauth import Installations
from bot.slack.publisher import Publisher
from bot.slack.shared_budget import make_budgets
from bot.slack.startup import check_bot_token, open_socket_url
from bot.slack.support import Support
from bot.store import SessionStore, make_store
from bot.workspace_settings import WorkspaceSettingsBook, specialists

log = structlog.get_logger(__name__)

SLACK_CALL_TIMEOUT = 30.0  # seconds, slack_sdk's own default per call
SLACK_MAX_CONNECTIONS = 200  # Slack answers fast; this only bounds a burst of final edits
# Shutdown budget (POWABOT_SHUTDOWN_GRACE, default 25 s: under Kubernetes' 30 s default grace).
NOTICE_RESERVE = 5.0  # seconds (at most 20 % of the grace) kept for the restart notices
CLOSE_RESERVE = 1.0  # seconds (at most 10 % of the grace) kept for closing connections
CLOSE_FLOOR = 0.05  # seconds closing gets even when the drain used up the grace
READY_CHECK_TIMEOUT = 2.0  # a /readyz store probe slower than this counts as unreachable
OPS_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def close_reserve(grace: float) -> float:
    """Seconds of a `grace`-second shutdown kept for closing connections."""
    return min(CLOSE_RESERVE, grace * 0.1)


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
        self.powabase = open_powabase(settings, http=http)
        self.http = self.powabase.http
        self.slack = AsyncWebClient(
            token=_secret(settings.SLACK_BOT_TOKEN) or None, base_url=settings.SLACK_API_URL
        )
        self.slack.proxy = None
        self.alerts = OperatorAlerts()  # one per process: Slack and Powabase faults, /readyz
        self.publisher = Publisher(
            self.slack,
            make_budgets(settings, self.store, budgets),
            min_interval=settings.POWABOT_EDIT_INTERVAL,
            native_streaming=settings.POWABOT_NATIVE_STREAMING,
            alerts=self.alerts,
        )
        # Greeting, suggested prompts, thread titles, viewed channels (the bot's DM surface).
        self.assistant = Assistant.build(settings, self.publisher.caller, self.publisher.budgets)
        # Per-workspace settings admins edit in App Home: where and for whom the bot answers.
        self.workspace_settings = WorkspaceSettingsBook(self.store)
        directory = SlackDirectory(
            self.publisher.caller, self.publisher.budgets, admins=settings.POWABOT_ADMINS
        )
        self.access = Access(self.workspace_settings, directory)
        self.assistant.workspace_prompts = self.workspace_settings.prompts
        # Escalation to a person and fresh starts (bot.slack.support); its problems (an
        # escalation channel the bot is not in) show in the admins' App Home.
        self.support = Support.build(
            settings, self.store, self.publisher.caller, self.publisher.budgets
        )
        self.home = Home(
            store=self.store,
            settings=self.workspace_settings,
            directory=directory,
            caller=self.publisher.caller,
            budgets=self.publisher.budgets,
            specialists=specialists(),
            default_escalation=settings.POWABOT_ESCALATION_CHANNEL,
            problems=self.support.problems,
        )
        # Several workspaces (OAuth install): each request and answer uses its workspace's token.
        self.installations = Installations(settings) if settings.oauth else None
        self.answerer = Answerer(
            store=self.store,
            powabase=self.powabase,
            publisher=self.publisher,
            alerts=self.alerts,
            leases=Leases(self.store, lease=settings.POWABOT_LEASE_SECONDS),
            max_in_flight=settings.POWABOT_MAX_IN_FLIGHT,
            max_queued=settings.POWABOT_MAX_QUEUED,
            stall_after=settings.POWABOT_STALL_NOTICE_AFTER,
            run_timeout=settings.POWABOT_RUN_TIMEOUT,
            assistant=self.assistant,
            token_for=self.installations.token_for if self.installations else None,
        )
        self.app = AsyncApp(
            client=self.slack,
            signing_secret=_secret(settings.SLACK_SIGNING_SECRET) or None,
            request_verification_enabled=not settings.socket_mode,
            process_before_response=False,
            oauth_settings=self.installations.oauth_settings if self.installations else None,
        )
        if self.installations is not None:
            self.installations.attach(self.app)
        register_home(self.app, self.home)  # before listeners: the DM's app_home_opened takes all
        listeners.register(
            self.app, self.answerer, self.assistant, self.support, access=self.access
        )
        self.feedback = register_feedback(  # the buttons under each answer
            self.app, self.store, self.publisher.caller, self.publisher.budgets
        )
        self._socket: AsyncSocketModeHandler | None = None
        self._runner: web.AppRunner | None = None
        self._accepting = False  # Slack events are taken (started, not stopping)
        self._stopping = False
        self.http_port: int | None = None  # where /healthz, /readyz, /metrics (and events) are

    async def start(self) -> None:
        """Serve health on PORT, open the store, check the Slack tokens, then take events.

        Raises StartupError when Slack refuses a token; cancelling it (SIGTERM during start-up)
        leaves nothing running that `stop()` would not close.
        """
        self._stopping = False
        self.answerer.draining = False
        await self._serve()
        await self.store.open()
        # One keep-alive connection pool for every Slack call (slack_sdk otherwise opens a new
        # session, hence a new TLS handshake, per call: a first edit would pay for it).
        if self.slack.session is None or self.slack.session.closed:
            self.slack.session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=SLACK_CALL_TIMEOUT),
                connector=aiohttp.TCPConnector(limit=SLACK_MAX_CONNECTIONS),
            )
        if self.installations is not None:
            await self.installations.open()  # tokens are checked per install, not here
        else:
            await check_bot_token(self.slack)
        if self.settings.socket_mode:
            app_token = _secret(self.settings.SLACK_APP_TOKEN)
            url = await open_socket_url(self.slack, app_token)
            self._socket = AsyncSocketModeHandler(self.app, app_token, web_client=self.slack)
            self._socket.client.proxy = None
            self._socket.client.wss_uri = url  # checked just now: connect without asking again
            await self._socket.connect_async()  # type: ignore[no-untyped-call]
        self._accepting = True
        # Answers whose replica died (or, with SQLite, this process before a crash) get finished.
        self.answerer.leases.start(self.answerer.take_over, self.answerer.room)
        log.info(
            "bot_started",
            mode="socket" if self.settings.socket_mode else "http",
            port=self.http_port,
            api_url=self.settings.SLACK_API_URL,
            max_in_flight=self.settings.POWABOT_MAX_IN_FLIGHT,
        )

    async def _serve(self) -> None:
        """The HTTP server on PORT: health and metrics always; Slack's events in HTTP mode."""
        if self._runner is not None:
            return
        if self.settings.socket_mode:
            web_app = web.Application()
        else:
            web_app = self.app.web_app(path="/slack/events")
            web_app.middlewares.append(self._refuse_unless_accepting)
        web_app.router.add_get("/healthz", self._healthz)
        web_app.router.add_get("/readyz", self._readyz)
        web_app.router.add_get("/metrics", self._metrics)
        # Open requests get at most the close reserve once shutdown closes the server.
        closing = close_reserve(self.settings.POWABOT_SHUTDOWN_GRACE)
        runner = web.AppRunner(web_app, shutdown_timeout=closing, access_log=None)
        await runner.setup()
        self._runner = runner
        site = web.TCPSite(runner, host="0.0.0.0", port=self.settings.PORT)
        try:
            await site.start()
        except OSError as exc:
            raise StartupError(
                f"cannot listen on PORT {self.settings.PORT} ({exc.strerror or exc}): "
                "set PORT to a free port"
            ) from None
        self.http_port = int(runner.addresses[0][1])  # PORT=0 picks a free one

    @web.middleware
    async def _refuse_unless_accepting(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Before start-up ends and while stopping, Slack events get a 503 (Slack retries them,
        e.g. on another replica); health and metrics are always served."""
        if not self._accepting and request.path not in OPS_PATHS:
            return web.Response(status=503, text="stopping" if self._stopping else "starting")
        return await handler(request)

    async def _healthz(self, _request: web.Request) -> web.Response:
        """Liveness: the event loop answers. No dependency checks (a store blip must not get
        every replica restarted); readiness says whether to send work."""
        return web.json_response({"ok": True})

    async def readiness(self) -> list[str]:
        """Why this replica should not get work right now; empty when ready."""
        reasons: list[str] = []
        if self._stopping:
            reasons.append("stopping")
        elif not self._accepting:
            reasons.append("starting")
        try:
            health = await asyncio.wait_for(self.store.health(), READY_CHECK_TIMEOUT)
        except Exception as exc:  # a probe must answer whatever the store does
            reasons.append(f"store_unreachable: {type(exc).__name__}")
        else:
            if not health.reachable:
                reasons.append("store_unreachable")
            elif not health.migrated:
                reasons.append("store_not_migrated")
        if self._accepting and self._socket is not None:
            if not await self._socket.client.is_connected():
                reasons.append("slack_socket_disconnected")
        reasons += [f"operator_alert: {a.source} {a.reason}" for a in self.alerts.active]
        return reasons

    async def _readyz(self, _request: web.Request) -> web.Response:
        reasons = await self.readiness()
        body = {
            "ready": not reasons,
            "reasons": reasons,
            "mode": "socket" if self.settings.socket_mode else "http",
            "store": self.store.backend,
            "answers_running": self.answerer.admission.active,
            "answers_queued": self.answerer.admission.queued,
        }
        return web.json_response(body, status=503 if reasons else 200)

    async def _metrics(self, _request: web.Request) -> web.Response:
        ANSWERS_RUNNING.set(self.answerer.admission.active)
        ANSWERS_QUEUED.set(self.answerer.admission.queued)
        OPERATOR_ALERTS_OPEN.set(len(self.alerts.active))
        return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": METRICS_TYPE})

    async def drain(self, grace: float = 20.0, final_grace: float = 5.0) -> None:
        """Let in-flight answers finish (each ends with a final Slack edit).

        Answers still waiting for their turn get the restart notice at once. Answers still
        running after `grace` are cancelled: each then ends its reply with that notice, and all
        of them together get `final_grace` more seconds to reach Slack.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        released = self.answerer.release_waiting()
        if self.answerer.in_flight:
            log.info("draining_answers", count=len(self.answerer.in_flight), released=released)
        # Loop: an event accepted just before intake closed may join while we wait.
        while self.answerer.in_flight and loop.time() < deadline:
            await asyncio.wait(set(self.answerer.in_flight), timeout=deadline - loop.time())
        late = set(self.answerer.in_flight)
        for task in late:
            task.cancel()
        final = loop.time() + final_grace
        if late:
            log.warning("answers_cancelled_at_shutdown", count=len(late))
            await asyncio.wait(late, timeout=final_grace)
        await self.publisher.settle(max(0.0, final - loop.time()))

    async def stop(self, grace: float | None = None) -> None:
        """Stop taking questions, let answers in flight finish, then close everything.

        The whole stop takes at most `grace` seconds (POWABOT_SHUTDOWN_GRACE): answers get
        most of it, the restart notices to the rest go out in the last `NOTICE_RESERVE` (at
        most a fifth of it), and the last `CLOSE_RESERVE` closes the connections.
        """
        grace = self.settings.POWABOT_SHUTDOWN_GRACE if grace is None else grace
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        closing = close_reserve(grace)
        notices = min(NOTICE_RESERVE, grace * 0.2)
        self._stopping = True
        self._accepting = False
        log.info(
            "bot_stopping",
            grace=grace,
            running=self.answerer.admission.active,
            queued=self.answerer.admission.queued,
        )
        if self._socket is not None:
            # Closing (not just disconnecting) also ends auto-reconnect for good; envelopes not
            # yet acked stay with Slack, which redelivers them.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    self._socket.close_async(),  # type: ignore[no-untyped-call]
                    timeout=closing,
                )
            self._socket = None
        # One turn of the loop: listeners Bolt already scheduled start and register themselves.
        await asyncio.sleep(0)
        answers = max(0.0, deadline - closing - notices - loop.time())
        await self.drain(grace=answers, final_grace=notices)
        await self._release_leases(within=deadline - closing - loop.time())
        await self._close(within=max(deadline - loop.time(), CLOSE_FLOOR))
        log.info("bot_stopped", overran=round(max(0.0, loop.time() - deadline), 3))

    async def _release_leases(self, within: float) -> None:
        """No more renewals or takeovers here. Answers delivered while the store failed are
        told finished first (else another replica would run them again). Then, with a shared
        store, answers still held (the drain could not finish them; each cancelled one
        released its own already) go to the other replicas now instead of when their leases
        expire. With SQLite they stay open: the next start takes them over."""
        leases = self.answerer.leases
        await leases.stop()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(within, CLOSE_FLOOR)):
                untold = await leases.flush_finished()
                if untold:
                    log.error("answers_finish_unrecorded_at_stop", count=untold)
                if self.store.shared and leases.held:
                    await leases.release_all()

    async def _close(self, within: float) -> None:
        """Close every connection this instance opened (each only if it was opened), all at
        once, for at most `within` seconds: what has not closed by then is abandoned (named in
        the log) so that the process can exit within its grace."""
        closing: dict[str, Awaitable[object]] = {}
        if self._runner is not None:
            runner, self._runner = self._runner, None
            closing["http_server"] = runner.cleanup()
        closing["powabase_http"] = self.http.aclose()
        if self.slack.session is not None:
            closing["slack_session"] = self.slack.session.close()
        closing["store"] = self.store.close()
        if self.installations is not None:
            closing["installations"] = self.installations.close()
        tasks = {asyncio.ensure_future(step): name for name, step in closing.items()}
        done, late = await asyncio.wait(tasks, timeout=within)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                exc = task.exception()
                log.warning("close_failed", what=tasks[task], error_type=type(exc).__name__)
        if late:
            for task in late:
                task.cancel()
            await asyncio.wait(late, timeout=CLOSE_FLOOR)  # let them take the cancel
            log.warning(
                "close_abandoned", what=sorted(tasks[t] for t in late), within=round(within, 3)
            )
