"""SlackStandin: one aiohttp server speaking Slack's Web API and Socket Mode on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import itertools
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Required, TypedDict, Unpack
from urllib.parse import urlencode

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
from sandbox.slack.interactivity import action, block_actions_payload, find_element, with_block_ids
from sandbox.slack.ratelimit import RateLimiter, RateLimits
from sandbox.slack.socket_mode import MAX_CONNECTIONS, Delivery, SocketModeHub
from sandbox.slack.store import MessageStore, StoredMessage
from sandbox.slack.web_api import (
    CHANNEL_GONE_ERRORS,
    AgentSession,
    ApiConfig,
    ApiError,
    AssistantThread,
    HomeView,
    OAuthGrant,
    StoredFile,
    UserGroup,
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
    "usergroups:read",
    "users:read",
)
APP_TOKEN_SCOPES = ("connections:write",)
_NO_TOKEN_METHODS = frozenset({"oauth.v2.access"})  # authenticated by client id + secret
_REDACTED_ARGS = ("client_secret",)
MAX_RESPONSE_URL_USES = 5  # Slack: a response_url takes up to 5 responses within 30 minutes


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


@dataclass
class ActionResponse:
    """One POST the app made to a click's ``response_url`` (Bolt's ``respond``), and what
    Slack did with it: ``replaced`` / ``deleted`` the clicked message, or posted ``posted``
    (an ephemeral to the clicking user, or an ``in_channel`` message)."""

    body: dict[str, Any]
    user: str
    channel: str
    message_ts: str
    status: int = 200
    posted: StoredMessage | None = None
    replaced: bool = False
    deleted: bool = False


@dataclass
class _ResponseUrl:
    user: str
    channel: str
    message_ts: str
    thread_ts: str | None
    ephemeral: bool
    uses: int = 0


@dataclass(frozen=True)
class UserMessage:
    """What user_says() stored and delivered."""

    channel: str
    ts: str
    thread_ts: str | None
    event_id: str
    envelope_id: str


class ClickArgs(TypedDict, total=False):
    """What a click names (`SlackStandin.block_actions`'s arguments)."""

    user: Required[str]
    action_id: Required[str]
    channel: str | None
    message_ts: str | None
    value: str | list[str] | None
    block_id: str | None
    action_type: str
    view_state: dict[str, Any] | None
    team: str | None
    view_id: str | None
    crafted: bool


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
        self.workspaces: dict[str, Workspace] = {team_id: self.workspace}
        """Every workspace the app is installed in, by team id (the own one first)."""
        self._tokens: dict[str, Workspace] = {bot_token: self.workspace}
        self.clicks: list[dict[str, Any]] = []
        """Every block_actions payload sent (Socket Mode or HTTP), in order."""
        self.action_responses: list[ActionResponse] = []
        self._response_urls: dict[str, _ResponseUrl] = {}
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
            install=self._install_grant,
        )
        self._session: aiohttp.ClientSession | None = None
        self._port = 0

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._handle_api)
        app.router.add_post("/upload/v1/{file_id}", self._handle_upload)
        app.router.add_post("/actions/{key}", self._handle_response_url)
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

    def sent_payload(self, envelope_id: str) -> dict[str, Any]:
        """The payload (event_callback or block_actions) of an envelope the stand-in sent."""
        return dict(self.hub.envelope(envelope_id)["payload"])

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

    def add_user(
        self,
        user_id: str,
        *,
        name: str,
        real_name: str = "",
        tz: str = "UTC",
        is_admin: bool = False,
        is_owner: bool = False,
        is_primary_owner: bool = False,
        team: str | None = None,
    ) -> None:
        """Give users.info a specific answer for one user (others get a generated profile,
        not an admin). A workspace owner is an admin too, as in Slack."""
        self.api.users[user_id] = {
            "id": user_id,
            "name": name,
            "real_name": real_name,
            "tz": tz,
            "is_admin": is_admin or is_owner or is_primary_owner,
            "is_owner": is_owner or is_primary_owner,
            "is_primary_owner": is_primary_owner,
            "team_id": self._ws(team).team_id,
        }

    def bot_not_in(self, channel: str) -> None:
        """The bot is not a member of ``channel``: writes there answer ``not_in_channel``
        (same as ``channel_gone(channel)``; `channel_back` undoes it)."""
        self.channel_gone(channel, "not_in_channel")

    def set_members(self, channel: str, users: list[str] | set[str]) -> None:
        """Declare who is in ``channel``: chat.postEphemeral to anyone else answers
        ``user_not_in_channel``. Channels never declared accept every user."""
        self.api.members[channel] = set(users)
        self.store.touch(channel)

    def add_usergroup(
        self,
        group_id: str,
        handle: str,
        users: list[str],
        *,
        name: str = "",
        team: str | None = None,
        disabled: bool = False,
    ) -> UserGroup:
        """A user group (``@handle``) for usergroups.list / usergroups.users.list."""
        group = UserGroup(group_id, handle, list(users), self._ws(team).team_id, name, disabled)
        self.api.usergroups[group_id] = group
        return group

    @property
    def usergroups(self) -> dict[str, UserGroup]:
        return self.api.usergroups

    @property
    def home_views(self) -> dict[str, HomeView]:
        """Each user's App Home tab as last published (views.publish), with its history."""
        return self.api.home_views

    def permalink(self, channel: str, ts: str) -> str:
        """What chat.getPermalink answers for this message (KeyError when there is none)."""
        return self.api.permalink(self.message(channel, ts))

    # --- several workspaces (OAuth installs) ---------------------------------------------------

    def _ws(self, team: str | None) -> Workspace:
        if team is None:
            return self.workspace
        ws = self.workspaces.get(team)
        if ws is None:
            raise ValueError(f"the app is not installed in workspace {team!r}")
        return ws

    def install_workspace(
        self,
        team_id: str,
        *,
        name: str | None = None,
        domain: str | None = None,
        bot_user_id: str | None = None,
        bot_id: str | None = None,
        enterprise_id: str | None = None,
        enterprise_name: str | None = None,
        is_enterprise_install: bool = False,
    ) -> str:
        """Install the app in another workspace; return that workspace's bot token, which
        the Web API then accepts (auth.test answers with this workspace and its bot user).
        Installing again returns the same token."""
        for token, known in self._tokens.items():
            if known.team_id == team_id:
                return token
        suffix = team_id[1:] if team_id[:1] in ("T", "E") else team_id
        ws = Workspace(
            team_id,
            self.workspace.app_id,
            bot_user_id or f"UB{suffix}",
            bot_id or f"BB{suffix}",
            name=name or f"Workspace {team_id}",
            domain=domain or team_id.lower(),
            enterprise_id=enterprise_id,
            enterprise_name=enterprise_name,
            is_enterprise_install=is_enterprise_install,
        )
        token = f"xoxb-{team_id.lower()}-{uuid.uuid4().hex[:24]}"
        self.workspaces[team_id] = ws
        self._tokens[token] = ws
        self.api.users[ws.bot_user_id] = {
            "id": ws.bot_user_id,
            "name": "powabot",
            "real_name": "powabot",
            "is_bot": True,
            "team_id": team_id,
        }
        return token

    def token_for(self, team_id: str) -> str:
        """The bot token the app holds for an installed workspace."""
        for token, ws in self._tokens.items():
            if ws.team_id == team_id:
                return token
        raise KeyError(f"the app is not installed in workspace {team_id!r}")

    def uninstall_workspace(self, team_id: str) -> None:
        """Revoke the workspace's token (its calls answer ``invalid_auth``)."""
        if team_id == self.workspace.team_id:
            raise ValueError("the stand-in's own workspace cannot be uninstalled")
        self._tokens = {t: ws for t, ws in self._tokens.items() if ws.team_id != team_id}
        self.workspaces.pop(team_id, None)

    def oauth_client(self, client_id: str, client_secret: str) -> None:
        """The app's client id and secret oauth.v2.access accepts (defaults:
        ``0000000000.standin`` / ``standin-client-secret``)."""
        self.api.client_id = client_id
        self.api.client_secret = client_secret

    @property
    def client_id(self) -> str:
        return self.api.client_id

    @property
    def client_secret(self) -> str:
        return self.api.client_secret

    def register_oauth_code(
        self,
        code: str,
        team_id: str,
        *,
        team_name: str | None = None,
        user: str = "U0INSTALLER",
        scope: str | None = None,
        redirect_uri: str | None = None,
        enterprise_id: str | None = None,
        enterprise_name: str | None = None,
        is_enterprise_install: bool = False,
    ) -> None:
        """A user of ``team_id`` approved the install: oauth.v2.access will exchange ``code``
        (once) for the workspace's bot token. ``redirect_uri``: the one the exchange must
        name (as in Slack, when the authorize URL carried one)."""
        self.api.oauth_codes[code] = OAuthGrant(
            team_id=team_id,
            team_name=team_name or f"Workspace {team_id}",
            user=user,
            scope=scope or ",".join(self.granted_scopes),
            redirect_uri=redirect_uri,
            enterprise_id=enterprise_id,
            enterprise_name=enterprise_name,
            is_enterprise_install=is_enterprise_install,
        )

    def _install_grant(self, grant: OAuthGrant) -> tuple[Workspace, str]:
        token = self.install_workspace(
            grant.team_id,
            name=grant.team_name,
            enterprise_id=grant.enterprise_id,
            enterprise_name=grant.enterprise_name,
            is_enterprise_install=grant.is_enterprise_install,
        )
        return self._tokens[token], token

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
            _basic_auth(request, args)
            injection = self._next_injection(method)
            if injection is not None and injection.delay > 0:
                await asyncio.sleep(injection.delay)
            injected = injection.reply() if injection is not None else None
            reply = injected or self._answer(method, args, token)
            if injection is not None and injection.fault == "reset_after_apply":
                reply = Reply(reply.status, reply.body, injected=True, reset=True)
        shown = {k: ("(redacted)" if k in _REDACTED_ARGS else v) for k, v in args.items()}
        call = ApiCall(
            method, shown, reply.status, reply.error, started, reply.body, reply.injected
        )
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
        auth_error = None if method in _NO_TOKEN_METHODS else self._auth_error(method, token)
        if auth_error is not None:
            return Reply(200, {"ok": False, "error": auth_error})
        caller = self._tokens.get(token or "")
        team = caller.team_id if caller is not None else self.workspace.team_id
        retry_after = self.limiter.check(method, args, team)
        if retry_after is not None:
            log.debug("slack_standin_ratelimited", method=method, retry_after=retry_after)
            body = {"ok": False, "error": "ratelimited"}
            return Reply(429, body, {"Retry-After": str(retry_after)})
        scopes = APP_TOKEN_SCOPES if method == "apps.connections.open" else self.granted_scopes
        try:
            body = self.api.call(method, args, caller)
        except ApiError as exc:
            return Reply(200, exc.body())
        return Reply(200, body, {"x-oauth-scopes": ",".join(scopes)})

    def _auth_error(self, method: str, token: str | None) -> str | None:
        if not token:
            return "not_authed"
        app_level = method == "apps.connections.open"
        if app_level and token == self.app_token:
            return None
        if not app_level and token in self._tokens:
            return None
        if token == self.app_token or token in self._tokens:
            return "not_allowed_token_type"
        return "invalid_auth"

    # --- events --------------------------------------------------------------------------------

    def _new_event_id(self) -> str:
        return f"Ev0STANDIN{next(self._event_ids):06d}"

    def _payload(
        self, event: dict[str, Any], event_id: str | None, ws: Workspace | None = None
    ) -> dict[str, Any]:
        return event_callback(
            event, ws=ws or self.workspace, event_id=event_id or self._new_event_id()
        )

    async def deliver(
        self,
        event: dict[str, Any],
        *,
        event_id: str | None = None,
        retry_attempt: int = 0,
        team: str | None = None,
    ) -> str:
        """Send any event over Socket Mode (queued until a connection opens); return envelope_id.
        ``team``: the installed workspace it happens in (default: the stand-in's own)."""
        envelope_id = str(uuid.uuid4())
        reason = "timeout" if retry_attempt else ""
        payload = self._payload(event, event_id, self._ws(team))
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
        team: str | None = None,
    ) -> UserMessage:
        """A user posts: stored in the channel, delivered as ``message`` or ``app_mention``.
        ``team``: an installed workspace (`install_workspace`) it happens in."""
        ws = self._ws(team)
        if mention:
            text = f"<@{ws.bot_user_id}> {text}"
        else:
            self._channel_types[channel] = channel_type
        msg = self.store.add(
            StoredMessage(
                channel=channel,
                ts=self.store.next_ts(),
                text=text,
                user=user,
                thread_ts=thread_ts,
                team=team,
            )
        )
        event = user_event(
            ws=ws,
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
        envelope_id = await self.deliver(event, event_id=event_id, team=team)
        return UserMessage(channel, msg.ts, thread_ts, event_id, envelope_id)

    async def _send_event(self, event: dict[str, Any], team: str | None = None) -> SentEvent:
        event_id = self._new_event_id()
        envelope_id = await self.deliver(event, event_id=event_id, team=team)
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

    async def app_home_opened(
        self, *, user: str, channel: str, tab: str = "messages", team: str | None = None
    ) -> SentEvent:
        """The user opens the app: ``tab="messages"`` is the bot's DM ``channel`` (what agent
        view sends instead of assistant_thread_started), ``"home"`` the Home tab (the event
        then carries the ``view`` the app last published for the user, as Slack sends it)."""
        if tab not in ("messages", "home"):
            raise ValueError(f"app_home_opened: tab must be 'messages' or 'home', not {tab!r}")
        self._ws(team)
        self._channel_types.setdefault(channel, "im")
        event = app_home_opened_event(
            user=user, channel=channel, tab=tab, event_ts=self.store.next_ts()
        )
        home = self.home_views.get(user)
        if tab == "home" and home is not None:
            event["view"] = home.view
        return await self._send_event(event, team)

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
        ws = self.workspaces.get(message.team or "", self.workspace)
        event = bot_message_event(message, ws=ws, channel_type=channel_type)
        env = envelope(self._payload(event, None, ws), envelope_id=str(uuid.uuid4()))
        self.hub.spawn(self.hub.send(env))

    # --- interactivity (a user's click) ---------------------------------------------------------

    def block_actions(
        self,
        *,
        user: str,
        action_id: str,
        channel: str | None = None,
        message_ts: str | None = None,
        value: str | list[str] | None = None,
        block_id: str | None = None,
        action_type: str = "button",
        view_state: dict[str, Any] | None = None,
        team: str | None = None,
        view_id: str | None = None,
        crafted: bool = False,
    ) -> dict[str, Any]:
        """The ``block_actions`` payload Slack sends when ``user`` clicks the element
        ``action_id`` of the message ``channel``/``message_ts`` (a stored message, or an
        ephemeral shown to ``user``) or, without ``message_ts``, of the user's App Home tab.

        The element must be in the message's (or Home tab's) blocks, unless ``crafted``
        (a payload nobody could click: ``action_type``/``block_id`` as given). Its type, block
        id, text and value come from the blocks; ``value`` picks a feedback button
        (``"positive"``/``"negative"`` or its value) or a select's option, or overrides a
        button's value. ``view_state``: ``state.values`` (``{block_id: {action_id: {...}}}``).
        Raises ValueError for a message, Home tab or element that does not exist."""
        ws = self._ws(team)
        known = self.api.users.get(user, {})
        name = str(known.get("name") or f"user.{user.lower()}")
        parts: dict[str, Any] = {
            "ws": ws,
            "user": {"id": user, "username": name, "name": name, "team_id": ws.team_id},
        }
        if message_ts is not None:
            if channel is None:
                raise ValueError("click on a message needs channel= as well as message_ts=")
            blocks = self._message_click(parts, user, channel, message_ts, view_state)
        else:
            blocks = self._home_click(parts, user, view_id, view_state)
        found = find_element(blocks, action_id, block_id)
        if found is None and not crafted:
            where = f"message {message_ts!r} in {channel!r}" if message_ts else "the Home tab"
            raise ValueError(f"no element {action_id!r} (block {block_id!r}) in {where}")
        element = found.element if found is not None else None
        parts["actions"] = [
            action(
                action_id=action_id,
                block_id=found.block_id if found is not None else (block_id or "crafted"),
                action_type=str(element["type"]) if element is not None else action_type,
                value=value,
                element=element,
                action_ts=self.store.next_ts(),
            )
        ]
        return block_actions_payload(**parts)

    def _message_click(
        self,
        parts: dict[str, Any],
        user: str,
        channel: str,
        message_ts: str,
        view_state: dict[str, Any] | None,
    ) -> list[Any]:
        msg = self.store.get(channel, message_ts)
        ephemeral = msg is None
        if msg is None:
            msg = next(
                (m for m in self.ephemerals if m.channel == channel and m.ts == message_ts), None
            )
            if msg is None:
                raise ValueError(f"click on message {message_ts!r} in {channel!r}: no such message")
            if msg.recipient != user:
                raise ValueError(
                    f"click on an ephemeral message shown to {msg.recipient!r}, not {user!r}"
                )
        blocks = with_block_ids(msg.blocks, f"{channel}:{message_ts}")
        container: dict[str, Any] = {
            "type": "message",
            "message_ts": message_ts,
            "channel_id": channel,
            "is_ephemeral": ephemeral,
        }
        if msg.thread_ts is not None and msg.thread_ts != msg.ts:
            container["thread_ts"] = msg.thread_ts
        parts["container"] = container
        parts["channel"] = {"id": channel, "name": _channel_name(channel)}
        if not ephemeral:  # Slack leaves the message out of an ephemeral's click
            message = msg.to_api(parts["ws"].team_id)
            if msg.blocks is not None:
                message["blocks"] = blocks
            parts["message"] = message
        parts["state"] = {"values": dict(view_state or {})}
        key = uuid.uuid4().hex
        self._response_urls[key] = _ResponseUrl(
            user, channel, message_ts, msg.thread_ts, ephemeral=ephemeral
        )
        parts["response_url"] = f"http://127.0.0.1:{self._port}/actions/{key}"
        return blocks

    def _home_click(
        self,
        parts: dict[str, Any],
        user: str,
        view_id: str | None,
        view_state: dict[str, Any] | None,
    ) -> list[Any]:
        home = self.home_views.get(user)
        if home is None:
            raise ValueError(f"click in the Home tab of {user!r}: no Home tab was published")
        if view_id is not None and view_id != home.id:
            raise ValueError(f"click in view {view_id!r}: {user!r}'s Home tab is {home.id!r}")
        view = json.loads(json.dumps(home.view))
        view["state"] = {"values": dict(view_state or {})}
        parts["container"] = {"type": "view", "view_id": home.id}
        parts["view"] = view
        return home.blocks

    def _clicked(self, click: ClickArgs) -> dict[str, Any]:
        """A click's payload (`block_actions`), recorded in `clicks`."""
        payload = self.block_actions(**click)
        self.clicks.append(payload)
        return payload

    async def click(self, **click: Unpack[ClickArgs]) -> SentEvent:
        """``user`` clicks an element (arguments and checks as `block_actions`): the payload
        goes over Socket Mode in an ``interactive`` envelope (acked by Bolt; not redelivered
        when it is not, as Slack shows the user an error instead). ``SentEvent.event`` is the
        payload."""
        payload = self._clicked(click)
        envelope_id = str(uuid.uuid4())
        await self.hub.send(envelope(payload, envelope_id=envelope_id, kind="interactive"))
        return SentEvent(payload, "", envelope_id)

    async def click_http(
        self,
        url: str,
        signing_secret: str,
        *,
        timestamp: int | None = None,
        **click: Unpack[ClickArgs],
    ) -> int:
        """The same click, POSTed to an HTTP-mode app as Slack does: a form with
        ``payload=<json>``, signed with ``signing_secret`` (a wrong one is a forgery; an old
        ``timestamp`` a replay). Returns the HTTP status the app answered."""
        payload = self._clicked(click)
        return await self.post_interactive_http(url, signing_secret, payload, timestamp=timestamp)

    async def post_interactive_http(
        self,
        url: str,
        signing_secret: str,
        payload: dict[str, Any],
        *,
        timestamp: int | None = None,
    ) -> int:
        """POST any interaction payload (e.g. a recorded ``slack.clicks[i]``, replayed or
        tampered with) as a signed ``payload=`` form; return the app's HTTP status."""
        body = urlencode({"payload": json.dumps(payload)}).encode()
        return await self._post_signed(
            url, signing_secret, body, "application/x-www-form-urlencoded", timestamp
        )

    async def _post_signed(
        self,
        url: str,
        signing_secret: str,
        body: bytes,
        content_type: str,
        timestamp: int | None,
        extra_headers: dict[str, str] | None = None,
    ) -> int:
        if URL(url).host not in _LOCAL_HOSTS:
            raise ValueError(f"the stand-in only posts to this machine, not {url!r}")
        if self._session is None:
            raise RuntimeError("SlackStandin posted over HTTP before start()")
        ts = int(time.time()) if timestamp is None else timestamp
        headers = {
            "Content-Type": content_type,
            "X-Slack-Request-Timestamp": str(ts),
            "X-Slack-Signature": slack_signature(signing_secret, ts, body),
            **(extra_headers or {}),
        }
        async with self._session.post(url, data=body, headers=headers) as resp:
            await resp.read()
            return resp.status

    async def _handle_response_url(self, request: web.Request) -> web.StreamResponse:
        """A click's ``response_url``: the app's answer replaces or deletes the clicked
        message, or posts an ephemeral (default) / in_channel message. Up to 5 uses."""
        entry = self._response_urls.get(request.match_info["key"])
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return web.json_response({"ok": False, "error": "invalid_payload"}, status=400)
        if entry is None:
            return web.json_response({"ok": False, "error": "expired_url"}, status=404)
        entry.uses += 1
        if entry.uses > MAX_RESPONSE_URL_USES:
            return web.json_response({"ok": False, "error": "used_url"}, status=404)
        response = ActionResponse(body, entry.user, entry.channel, entry.message_ts)
        self._apply_response(entry, body, response)
        self.action_responses.append(response)
        self._notify()
        return web.json_response({"ok": True})

    def _apply_response(
        self, entry: _ResponseUrl, body: dict[str, Any], response: ActionResponse
    ) -> None:
        original = self.store.get(entry.channel, entry.message_ts) or next(
            (m for m in self.ephemerals if m.channel == entry.channel and m.ts == entry.message_ts),
            None,
        )
        if body.get("delete_original") and original is not None:
            if entry.ephemeral:
                self.api.ephemerals.remove(original)
            else:
                self.store.remove(original)
            response.deleted = True
        elif body.get("replace_original") and original is not None:
            original.text = str(body.get("text") or "")
            original.blocks = body.get("blocks")
            original.edits.append((time.monotonic(), original.text))
            response.replaced = True
        else:
            posted = StoredMessage(
                channel=entry.channel,
                ts=self.store.next_ts(),
                text=str(body.get("text") or ""),
                user=self.workspace.bot_user_id,
                bot_id=self.workspace.bot_id,
                thread_ts=body.get("thread_ts") or entry.thread_ts,
                blocks=body.get("blocks"),
            )
            if body.get("response_type") == "in_channel":
                self.store.add(posted)
                self._echo(posted)
            else:
                posted.extra["recipient"] = entry.user
                self.api.ephemerals.append(posted)
            response.posted = posted

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
        body = json.dumps(self._payload(event, event_id)).encode()
        headers = {}
        if retry_num is not None:
            headers = {"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": "http_timeout"}
        return await self._post_signed(
            url, signing_secret, body, "application/json", timestamp, headers
        )

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


def _channel_name(channel: str) -> str:
    """The ``channel.name`` of an interaction payload (DMs are "directmessage" in Slack)."""
    if channel.startswith("D"):
        return "directmessage"
    if channel.startswith("G"):
        return "privategroup"
    return channel.lower()


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


def _basic_auth(request: web.Request, args: dict[str, Any]) -> None:
    """``Authorization: Basic`` (how slack_sdk sends oauth.v2.access's client id and secret)."""
    header = request.headers.get("Authorization", "")
    if not header.startswith("Basic "):
        return
    try:
        decoded = base64.b64decode(header.removeprefix("Basic ").strip()).decode()
    except (binascii.Error, UnicodeDecodeError):
        return
    client_id, _, client_secret = decoded.partition(":")
    args.setdefault("client_id", client_id)
    args.setdefault("client_secret", client_secret)


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
