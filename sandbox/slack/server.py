"""SlackStandin: one aiohttp server speaking Slack's Web API and Socket Mode on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import structlog
from aiohttp import web
from yarl import URL

from sandbox.serving import LoopbackServer
from sandbox.slack.events import (
    Workspace,
    agent_session_stopped_event,
    app_home_opened_event,
    assistant_thread_event,
    bot_message_event,
    envelope,
    event_callback,
    slack_signature,
    user_event,
)
from sandbox.slack.faults import Chaos, Fault, Injection, Reply, default_status
from sandbox.slack.ratelimit import RateLimiter, RateLimits
from sandbox.slack.socket_mode import MAX_CONNECTIONS, Delivery, SocketModeHub
from sandbox.slack.store import MessageStore, StoredMessage
from sandbox.slack.web_api import (
    CHANNEL_GONE_ERRORS,
    AgentSession,
    ApiConfig,
    ApiError,
    AssistantThread,
    StoredFile,
    WebApi,
)

log = structlog.get_logger(__name__)
_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
# What real Slack names in the `x-oauth-scopes` header of every Web API answer: the token's
# scopes. For the bot token, those of an app installed from deploy/slack-app-manifest.yaml
# (`SlackStandin.granted_scopes` changes them); for the app-level token, connections:write.
INSTALLED_BOT_SCOPES = (
    "app_mentions:read",
    "assistant:write",
    "channels:history",
    "chat:write",
    "files:write",
    "groups:history",
    "im:history",
)
APP_TOKEN_SCOPES = ("connections:write",)


@dataclass
class ApiCall:
    """One Web API call as the stand-in saw and answered it."""

    method: str
    args: dict[str, Any]
    status: int
    error: str | None
    t: float  # time.monotonic() when the request arrived
    response: dict[str, Any] = field(default_factory=dict)
    injected: bool = False


@dataclass(frozen=True)
class SentEvent:
    """An event the stand-in delivered over Socket Mode (what a test may need to match on)."""

    event: dict[str, Any]
    event_id: str
    envelope_id: str


@dataclass(frozen=True)
class UserMessage:
    """What user_says() stored and delivered."""

    channel: str
    ts: str
    thread_ts: str | None
    event_id: str
    envelope_id: str


class SlackStandin(LoopbackServer):
    """A local Slack for the unchanged bot: Web API under ``api_url``, Socket Mode at /link."""

    def __init__(
        self,
        *,
        team_id: str = "T0TEAM",
        bot_user_id: str = "UBOT",
        bot_id: str = "BBOT",
        app_id: str = "A0APP",
        bot_token: str = "xoxb-standin",
        app_token: str = "xapp-standin",
        ack_timeout: float = 3.0,
        rate_limits: RateLimits | None = None,
        streaming_enabled: bool = True,
        max_text_len: int = 4000,
        echo_bot_messages: bool = True,
        stream_ttl: float = 300.0,
        max_retries: int = 3,
        max_socket_connections: int = MAX_CONNECTIONS,
        socket_seed: int | None = None,
        redeliver_once: bool = False,
    ) -> None:
        self.workspace = Workspace(team_id, app_id, bot_user_id, bot_id)
        self.bot_token = bot_token
        self.app_token = app_token
        self.granted_scopes: tuple[str, ...] = INSTALLED_BOT_SCOPES
        self.echo_bot_messages = echo_bot_messages
        self.config = ApiConfig(max_text_len, streaming_enabled, stream_ttl)
        self.limiter = RateLimiter(rate_limits)
        self.store = MessageStore()
        self.calls: list[ApiCall] = []
        self.on_call: list[Callable[[ApiCall], None]] = []
        self.ratelimited_count = 0
        self._calls_by_method: dict[str, list[ApiCall]] = {}
        self._injections: dict[str, list[Injection]] = {}
        self._chaos: Chaos | None = None
        self._channel_types: dict[str, str] = {}
        self._event_ids = itertools.count(1)
        self._changed = asyncio.Event()
        self.hub = SocketModeHub(
            app_id=app_id,
            ack_timeout=ack_timeout,
            max_retries=max_retries,
            on_change=self._notify,
            max_connections=max_socket_connections,
            seed=socket_seed,
            redeliver_once=redeliver_once,
        )
        self.api = WebApi(
            ws=self.workspace,
            store=self.store,
            config=self.config,
            socket_url=self._socket_url,
            on_bot_message=self._echo,
            channel_types=self._channel_types,
            upload_url=self._upload_url,
        )
        self._session: aiohttp.ClientSession | None = None
        self._port = 0

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._handle_api)
        app.router.add_post("/upload/v1/{file_id}", self._handle_upload)
        app.router.add_get("/link", self.hub.handle)
        app.router.add_get("/link/", self.hub.handle)
        self._port = await self.serve(app)
        self._session = aiohttp.ClientSession()
        log.info("slack_standin_started", port=self._port)

    async def stop(self) -> None:
        await self.hub.close()
        if self._session is not None:
            await self._session.close()
        await self.close_server()
        self._session = None

    @property
    def api_url(self) -> str:
        if not self._port:
            raise RuntimeError("SlackStandin.api_url read before start()")
        return f"http://127.0.0.1:{self._port}/api/"

    def _upload_url(self, file_id: str) -> str:
        return f"http://127.0.0.1:{self._port}/upload/v1/{file_id}"

    def _socket_url(self) -> str:
        ticket = self.hub.issue_ticket()
        return f"ws://127.0.0.1:{self._port}/link/?ticket={ticket}&app_id={self.workspace.app_id}"

    # --- switches and state a test reads -------------------------------------------------------

    @property
    def streaming_enabled(self) -> bool:
        return self.config.streaming_enabled

    @streaming_enabled.setter
    def streaming_enabled(self, value: bool) -> None:
        self.config.streaming_enabled = value

    @property
    def stream_ttl(self) -> float:
        """Seconds a stream stays open; older ones answer message_not_in_streaming_state."""
        return self.config.stream_ttl

    @stream_ttl.setter
    def stream_ttl(self, value: float) -> None:
        self.config.stream_ttl = value

    def channel_gone(self, channel: str, error: str = "not_in_channel") -> None:
        """From now on every write to ``channel`` is refused with ``error``: not_in_channel
        (the bot was removed), is_archived, or channel_not_found (deleted)."""
        if error not in CHANNEL_GONE_ERRORS:
            raise ValueError(f"channel_gone: {error!r} is not one of {sorted(CHANNEL_GONE_ERRORS)}")
        self.api.channels_gone[channel] = error

    def channel_back(self, channel: str) -> None:
        """Undo `channel_gone`: the bot can write to ``channel`` again."""
        self.api.channels_gone.pop(channel, None)

    @property
    def acked(self) -> set[str]:
        return self.hub.acked

    @property
    def deliveries(self) -> list[Delivery]:
        return self.hub.deliveries

    @property
    def ephemerals(self) -> list[StoredMessage]:
        return self.api.ephemerals

    @property
    def assistant_threads(self) -> dict[tuple[str, str], AssistantThread]:
        """By (channel, thread_ts); prompts set without a thread are under (channel, "")."""
        return self.api.assistant_threads

    @property
    def agent_sessions(self) -> dict[tuple[str, str], AgentSession]:
        """Agent sessions by (channel, thread_ts), from agents.sessions.setStatus / stopStream."""
        return self.api.agent_sessions

    @property
    def files(self) -> dict[str, StoredFile]:
        """Files by id, from files.getUploadURLExternal on (content once uploaded)."""
        return self.api.files

    def add_user(self, user_id: str, *, name: str, real_name: str = "", tz: str = "UTC") -> None:
        """Give users.info a specific answer for one user (others get a generated profile)."""
        self.api.users[user_id] = {"id": user_id, "name": name, "real_name": real_name, "tz": tz}

    def calls_to(self, method: str) -> list[ApiCall]:
        return list(self._calls_by_method.get(method, []))

    def message(self, channel: str, ts: str) -> StoredMessage:
        msg = self.store.get(channel, ts)
        if msg is None:
            raise KeyError(f"no message {ts!r} in channel {channel!r}")
        return msg

    def thread(self, channel: str, thread_ts: str) -> list[StoredMessage]:
        return self.store.thread(channel, thread_ts)

    def bot_messages(self, channel: str | None = None) -> list[StoredMessage]:
        return self.store.bot_messages(channel)

    def inject(
        self,
        method: str,
        *,
        status: int | None = None,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        times: int = 1,
        error: str | None = None,
        fault: Fault | None = None,
        delay: float = 0.0,
        retry_after: float = 1.0,
    ) -> None:
        """Answer the next ``times`` calls of ``method`` with this response instead.

        - ``error="code"``: HTTP ``status`` (200) with ``{"ok": false, "error": "code"}``
          (``invalid_auth``, ``not_in_channel``, ``msg_too_long``, ``ratelimited``, ...).
        - ``status`` without a body: 429 answers ``ratelimited`` (with ``Retry-After: 1``
          unless given), anything else answers ``internal_error``.
        - ``fault`` (see `sandbox.slack.faults`): ``"plain_5xx"`` (Envoy's text/plain 503),
          ``"html_5xx"`` (an HTML 502), ``"retry_after_date"`` (429 whose ``Retry-After`` is
          an HTTP date ``retry_after`` seconds ahead), ``"reset"`` (the connection is closed
          without an answer), ``"slow"`` (answered normally after ``delay`` seconds),
          ``"plain_200"`` (HTTP 200 with a text/plain body), ``"reset_after_apply"`` (the call
          takes effect, then the connection is closed without the answer).
        - ``method="files.upload"`` injects into the POSTs to upload URLs.
        - ``delay``: seconds to wait before answering (any injection).
        """
        if times < 1:
            raise ValueError(f"inject({method!r}) needs times >= 1, got {times}")
        if fault == "slow" and delay <= 0:
            raise ValueError("inject(fault='slow') needs delay > 0")
        code = status if status is not None else default_status(fault)
        default_error = "ratelimited" if code == 429 else "internal_error"
        hdrs = dict(headers or {})
        if code == 429 and fault is None:
            hdrs.setdefault("Retry-After", "1")
        answer = body or {"ok": False, "error": error or default_error}
        injection = Injection(code, answer, hdrs, times, fault, delay, retry_after)
        self._injections.setdefault(method, []).append(injection)

    def chaos(
        self,
        rate: float | None,
        *,
        seed: int | None = None,
        methods: set[str] | frozenset[str] | None = None,
        kinds: tuple[str, ...] | None = None,
        slow: float = 0.5,
        retry_after: float = 1.0,
    ) -> Chaos | None:
        """Fail each write call (or each call of ``methods``) with probability ``rate``.

        The fault is drawn at random from ``kinds`` (default: every transient kind, see
        `sandbox.slack.faults.CHAOS_KINDS`: 429 with seconds or an HTTP date, ratelimited as
        HTTP 200, Envoy's plain-text 503, an HTML 502, a connection reset, a slow answer).
        Seeded, so a run can be repeated. Explicit `inject()`s still go first. ``rate=None``
        (or 0) turns chaos off. Returns the `Chaos`, whose ``counts`` say what was served.
        """
        if not rate:
            self._chaos = None
            return None
        options: dict[str, Any] = {"seed": seed, "slow": slow, "retry_after": retry_after}
        if methods is not None:
            options["methods"] = frozenset(methods)
        if kinds is not None:
            options["kinds"] = kinds
        self._chaos = Chaos(rate, **options)
        return self._chaos

    def clear_faults(self) -> None:
        """Forget every pending `inject()` and stop any `chaos()`: Slack is healthy again."""
        self._injections.clear()
        self._chaos = None

    # --- Web API -------------------------------------------------------------------------------

    async def _handle_api(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        method = request.match_info["method"]
        try:
            args = await _read_args(request)
        except ValueError:
            args, reply = {}, Reply(200, {"ok": False, "error": "invalid_json"})
        else:
            token = _token(request, args)
            injection = self._next_injection(method)
            if injection is not None and injection.delay > 0:
                await asyncio.sleep(injection.delay)
            injected = injection.reply() if injection is not None else None
            reply = injected or self._answer(method, args, token)
            if injection is not None and injection.fault == "reset_after_apply":
                reply = Reply(reply.status, reply.body, injected=True, reset=True)
        call = ApiCall(method, args, reply.status, reply.error, started, reply.body, reply.injected)
        return await self._record_and_answer(request, call, reply)

    async def _record_and_answer(
        self, request: web.Request, call: ApiCall, reply: Reply
    ) -> web.StreamResponse:
        """Record `call` (calls, 429 count, `on_call` hooks, waiters) and send `reply`."""
        self.calls.append(call)
        self._calls_by_method.setdefault(call.method, []).append(call)
        if reply.status == 429:
            self.ratelimited_count += 1
        for hook in self.on_call:
            hook(call)
        self._notify()
        if reply.reset:
            return await _reset(request)
        if reply.raw is not None:
            return web.Response(
                status=reply.status, text=reply.raw, content_type=reply.content_type
            )
        return web.json_response(reply.body, status=reply.status, headers=reply.headers)

    async def _handle_upload(self, request: web.Request) -> web.StreamResponse:
        """An upload URL: the file's bytes, raw or as a multipart form's file part."""
        started = time.monotonic()
        file_id = request.match_info["file_id"]
        content = await _upload_body(request)
        injection = self._next_injection("files.upload")
        injected = injection.reply() if injection is not None else None
        if injected is not None:
            reply = injected
        elif self.api.receive_upload(file_id, content):
            reply = Reply(200, {}, raw=f"OK - {len(content)}", content_type="text/plain")
        else:
            reply = Reply(404, {}, raw="Not Found", content_type="text/plain")
        args = {"file_id": file_id, "size": len(content)}
        error = None if reply.status == 200 and not reply.injected else reply.error
        call = ApiCall("files.upload", args, reply.status, error, started, {}, reply.injected)
        return await self._record_and_answer(request, call, reply)

    def _next_injection(self, method: str) -> Injection | None:
        queue = self._injections.get(method)
        if queue:
            injection = queue[0]
            injection.remaining -= 1
            if injection.remaining == 0:
                queue.pop(0)
            return injection
        return self._chaos.draw(method) if self._chaos is not None else None

    def _answer(self, method: str, args: dict[str, Any], token: str | None) -> Reply:
        if method not in self.api.methods:
            return Reply(200, {"ok": False, "error": "unknown_method"})
        auth_error = self._auth_error(method, token)
        if auth_error is not None:
            return Reply(200, {"ok": False, "error": auth_error})
        retry_after = self.limiter.check(method, args)
        if retry_after is not None:
            log.debug("slack_standin_ratelimited", method=method, retry_after=retry_after)
            body = {"ok": False, "error": "ratelimited"}
            return Reply(429, body, {"Retry-After": str(retry_after)})
        scopes = APP_TOKEN_SCOPES if method == "apps.connections.open" else self.granted_scopes
        try:
            return Reply(200, self.api.call(method, args), {"x-oauth-scopes": ",".join(scopes)})
        except ApiError as exc:
            return Reply(200, {"ok": False, "error": exc.code})

    def _auth_error(self, method: str, token: str | None) -> str | None:
        if not token:
            return "not_authed"
        expected = self.app_token if method == "apps.connections.open" else self.bot_token
        if token == expected:
            return None
        if token in (self.app_token, self.bot_token):
            return "not_allowed_token_type"
        return "invalid_auth"

    # --- events --------------------------------------------------------------------------------

    def _new_event_id(self) -> str:
        return f"Ev0STANDIN{next(self._event_ids):06d}"

    def _payload(self, event: dict[str, Any], event_id: str | None) -> dict[str, Any]:
        return event_callback(event, ws=self.workspace, event_id=event_id or self._new_event_id())

    async def deliver(
        self, event: dict[str, Any], *, event_id: str | None = None, retry_attempt: int = 0
    ) -> str:
        """Send any event over Socket Mode (queued until a connection opens); return envelope_id."""
        envelope_id = str(uuid.uuid4())
        reason = "timeout" if retry_attempt else ""
        payload = self._payload(event, event_id)
        await self.hub.send(
            envelope(
                payload, envelope_id=envelope_id, retry_attempt=retry_attempt, retry_reason=reason
            )
        )
        return envelope_id

    async def redeliver(self, envelope_id: str) -> None:
        """Send an envelope again (same envelope_id and event_id) with retry_attempt + 1."""
        await self.hub.resend(envelope_id, "timeout")

    async def disconnect_all(self, reason: str = "refresh_requested") -> None:
        await self.hub.disconnect_all(reason)

    async def user_says(
        self,
        *,
        user: str,
        text: str,
        channel: str,
        channel_type: str = "im",
        thread_ts: str | None = None,
        mention: bool = False,
    ) -> UserMessage:
        """A user posts: stored in the channel, delivered as ``message`` or ``app_mention``."""
        if mention:
            text = f"<@{self.workspace.bot_user_id}> {text}"
        else:
            self._channel_types[channel] = channel_type
        msg = self.store.add(
            StoredMessage(
                channel=channel, ts=self.store.next_ts(), text=text, user=user, thread_ts=thread_ts
            )
        )
        event = user_event(
            ws=self.workspace,
            user=user,
            text=text,
            channel=channel,
            channel_type=channel_type,
            ts=msg.ts,
            thread_ts=thread_ts,
            mention=mention,
            client_msg_id=str(uuid.uuid4()),
        )
        event_id = self._new_event_id()
        envelope_id = await self.deliver(event, event_id=event_id)
        return UserMessage(channel, msg.ts, thread_ts, event_id, envelope_id)

    async def _send_event(self, event: dict[str, Any]) -> SentEvent:
        event_id = self._new_event_id()
        envelope_id = await self.deliver(event, event_id=event_id)
        return SentEvent(event, event_id, envelope_id)

    async def agent_session_stopped(
        self,
        *,
        channel: str,
        thread_ts: str,
        user: str,
        streaming_message_ts: list[str] | None = None,
    ) -> SentEvent:
        """The user clicks Stop on the thread's agent session. Slack stops the app's open
        streams there itself (all of them, or those in ``streaming_message_ts``) and names
        them in the event; the session's status is left to the app."""
        stopped = self.api.stop_streams_in(channel, thread_ts, streaming_message_ts)
        self._notify()
        event = agent_session_stopped_event(
            channel=channel,
            thread_ts=thread_ts,
            user=user,
            streaming_message_ts=stopped,
            event_ts=self.store.next_ts(),
        )
        return await self._send_event(event)

    async def app_home_opened(self, *, user: str, channel: str, tab: str = "messages") -> SentEvent:
        """The user opens the app: ``tab="messages"`` is the bot's DM ``channel`` (what agent
        view sends instead of assistant_thread_started), ``"home"`` the Home tab."""
        if tab not in ("messages", "home"):
            raise ValueError(f"app_home_opened: tab must be 'messages' or 'home', not {tab!r}")
        self._channel_types.setdefault(channel, "im")
        event = app_home_opened_event(
            user=user, channel=channel, tab=tab, event_ts=self.store.next_ts()
        )
        return await self._send_event(event)

    async def assistant_thread_started(
        self,
        *,
        user: str,
        channel: str,
        thread_ts: str,
        context: dict[str, Any] | None = None,
    ) -> SentEvent:
        """Legacy assistant view: the user opens a new assistant thread in the bot's DM.
        ``context``: what the user is viewing, e.g. ``{"channel_id": "C1", "team_id":
        "T0TEAM", "enterprise_id": None}`` (empty when none)."""
        return await self._assistant_thread(
            "assistant_thread_started", user, channel, thread_ts, context
        )

    async def assistant_thread_context_changed(
        self,
        *,
        user: str,
        channel: str,
        thread_ts: str,
        context: dict[str, Any] | None = None,
    ) -> SentEvent:
        """Legacy assistant view: the user moves to another channel with the thread open."""
        return await self._assistant_thread(
            "assistant_thread_context_changed", user, channel, thread_ts, context
        )

    async def _assistant_thread(
        self,
        kind: str,
        user: str,
        channel: str,
        thread_ts: str,
        context: dict[str, Any] | None,
    ) -> SentEvent:
        self._channel_types.setdefault(channel, "im")
        event = assistant_thread_event(
            kind,
            user=user,
            channel=channel,
            thread_ts=thread_ts,
            context=dict(context or {}),
            event_ts=self.store.next_ts(),
        )
        return await self._send_event(event)

    def _echo(self, message: StoredMessage) -> None:
        """Slack sends the app a ``message`` event for its own posts; so do we (switchable)."""
        if not self.echo_bot_messages:
            return
        channel_type = self.api.channel_type(message.channel)
        event = bot_message_event(message, ws=self.workspace, channel_type=channel_type)
        env = envelope(self._payload(event, None), envelope_id=str(uuid.uuid4()))
        self.hub.spawn(self.hub.send(env))

    async def deliver_http(
        self,
        url: str,
        signing_secret: str,
        event: dict[str, Any],
        *,
        event_id: str | None = None,
        retry_num: int | None = None,
        timestamp: int | None = None,
    ) -> int:
        """POST a signed event_callback to an HTTP-mode app on this machine; return the status."""
        if URL(url).host not in _LOCAL_HOSTS:
            raise ValueError(f"deliver_http only posts to this machine, not {url!r}")
        if self._session is None:
            raise RuntimeError("SlackStandin.deliver_http called before start()")
        body = json.dumps(self._payload(event, event_id)).encode()
        ts = int(time.time()) if timestamp is None else timestamp
        headers = {
            "Content-Type": "application/json",
            "X-Slack-Request-Timestamp": str(ts),
            "X-Slack-Signature": slack_signature(signing_secret, ts, body),
        }
        if retry_num is not None:
            headers.update(
                {"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": "http_timeout"}
            )
        async with self._session.post(url, data=body, headers=headers) as resp:
            await resp.read()
            return resp.status

    # --- waiting -------------------------------------------------------------------------------

    def _notify(self) -> None:
        self._changed.set()

    async def wait_connected(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109 (public API)
        try:
            await asyncio.wait_for(self.hub.connected.wait(), timeout)
        except TimeoutError:
            raise TimeoutError(
                f"no Socket Mode connection within {timeout}s "
                f"(apps.connections.open calls: {len(self.calls_to('apps.connections.open'))})"
            ) from None

    async def wait_for(
        self,
        predicate: Callable[[], bool],
        timeout: float = 10.0,  # noqa: ASYNC109 (public API)
    ) -> None:
        """Wait until predicate() is true, re-checking on every change (and every 50 ms)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            self._changed.clear()
            if predicate():
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(self._timeout_message(predicate, timeout))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.05))

    def _timeout_message(self, predicate: Callable[[], bool], timeout: float) -> str:
        last = [f"{c.method}->{c.status}/{c.error or 'ok'}" for c in self.calls[-5:]]
        name = getattr(predicate, "__qualname__", repr(predicate))
        return (
            f"wait_for({name}) still false after {timeout}s: {len(self.calls)} API calls "
            f"(last: {', '.join(last) or 'none'}), {len(self.deliveries)} envelopes sent, "
            f"{len(self.acked)} acked, {self.hub.num_connections} connections"
        )


async def _reset(request: web.Request) -> web.StreamResponse:
    """Close the connection without an answer (what a proxy or a crashed upstream does)."""
    transport = request.transport
    if transport is not None:
        transport.close()
    raise asyncio.CancelledError  # aiohttp drops the request quietly; nothing is written


async def _upload_body(request: web.Request) -> bytes:
    """The uploaded file: the raw body, or the first file part of a multipart form."""
    if not request.content_type.startswith("multipart/"):
        return await request.read()
    reader = await request.multipart()
    async for part in reader:
        if isinstance(part, aiohttp.BodyPartReader) and (part.filename or part.name == "file"):
            return bytes(await part.read())
    return b""


def _token(request: web.Request, args: dict[str, Any]) -> str | None:
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        args.pop("token", None)
        return header.removeprefix("Bearer ").strip()
    token = args.pop("token", None)
    return str(token) if token else None


async def _read_args(request: web.Request) -> dict[str, Any]:
    """Merge query string, form body and JSON body, as Slack does (ValueError on bad JSON)."""
    args: dict[str, Any] = dict(request.query)
    if request.method != "POST" or not request.can_read_body:
        return args
    if request.content_type == "application/json":
        raw = await request.read()
        if raw.strip():
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("JSON body is not an object")
            args.update(body)
    elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.post()
        args.update({k: v for k, v in form.items() if isinstance(v, str)})
    return args
