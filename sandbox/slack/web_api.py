"""Slack Web API methods as pure-ish handlers over the message store (no HTTP here).

Each handler takes the merged arguments and returns the response body; a Slack error is
raised as ``ApiError(code)`` and becomes HTTP 200 ``{"ok": false, "error": code}``.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sandbox.slack.events import Workspace, channel_type_of
from sandbox.slack.interactivity import with_block_ids
from sandbox.slack.store import MessageStore, StoredMessage, StreamMode

MAX_MARKDOWN_TEXT = 12_000  # per chat.*Stream call
MAX_TASK_TITLE = 256  # task_update title
MAX_LOADING_MESSAGES = 10  # assistant.threads.setStatus
MAX_PROMPTS = 4  # assistant.threads.setSuggestedPrompts
CHUNK_TYPES = frozenset({"markdown_text", "task_update", "plan_update", "blocks"})
TASK_STATUSES = frozenset({"pending", "in_progress", "complete", "error"})
TASK_DISPLAY_MODES = frozenset({"timeline", "plan"})
SESSION_STATUSES = frozenset({"active", "processing", "suspended", "closed"})
# What a write to a channel the bot can no longer use answers (see SlackStandin.channel_gone).
CHANNEL_GONE_ERRORS = frozenset({"not_in_channel", "channel_not_found", "is_archived"})
_USER_ID = re.compile(r"^[UW][A-Z0-9]+$")
# Arguments that are part of the message body; anything else the poster sends lands in `extra`.
_MESSAGE_ARGS = {"channel", "text", "blocks", "attachments", "thread_ts", "token", "team_id"}
_JSON_ARGS = (
    "blocks", "attachments", "chunks", "metadata", "prompts", "loading_messages", "files", "view"
)  # fmt: skip
MAX_VIEW_BLOCKS = 100  # a Home tab / modal holds at most 100 blocks
MAX_PRIVATE_METADATA = 3000


class ApiError(Exception):
    """A Slack method refused the call with this error code."""

    def __init__(self, code: str, messages: list[str] | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.messages = messages or []
        """What Slack adds under ``response_metadata.messages`` (``[ERROR] ...`` lines)."""

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ok": False, "error": self.code}
        if self.messages:
            out["response_metadata"] = {"messages": self.messages}
        return out


@dataclass
class ApiConfig:
    """Behaviour switches the handlers read at call time (tests may flip them mid-run)."""

    max_text_len: int = 4000
    streaming_enabled: bool = True
    stream_ttl: float = 300.0


@dataclass
class AssistantThread:
    """What the app set on one assistant thread via assistant.threads.* (the status clears when
    the app replies in the thread; ``status_history`` keeps every status the app set)."""

    status: str = ""
    loading_messages: list[str] | None = None
    title: str | None = None
    prompts: list[Any] | None = None
    prompts_title: str | None = None
    status_history: list[str] = field(default_factory=list)


@dataclass
class AgentSession:
    """One agent session (agents.sessions.setStatus, or chat.stopStream's session_status).

    ``title`` and ``initiator_user_id`` count only when the session is created, as in Slack."""

    status: str
    title: str | None = None
    initiator_user_id: str | None = None
    history: list[str] = field(default_factory=list)


@dataclass
class StoredFile:
    """One file of Slack's external upload flow, from files.getUploadURLExternal on."""

    id: str
    filename: str
    length: int  # what getUploadURLExternal was told (bytes)
    content: bytes | None = None  # what was POSTed to the upload URL
    title: str = ""
    shared_in: list[tuple[str, str | None]] = field(default_factory=list)  # (channel, thread)

    @property
    def text(self) -> str:
        """The uploaded bytes as UTF-8 text ("" before the upload)."""
        return (self.content or b"").decode("utf-8")

    def to_api(self, user: str) -> dict[str, Any]:
        markdown = self.filename.endswith(".md")
        return {
            "id": self.id,
            "name": self.filename,
            "title": self.title or self.filename,
            "size": len(self.content or b""),
            "mimetype": "text/markdown" if markdown else "application/octet-stream",
            "filetype": "markdown" if markdown else "binary",
            "user": user,
            "channels": sorted({channel for channel, _ in self.shared_in}),
        }


@dataclass
class HomeView:
    """A user's App Home tab as the app last published it (views.publish), with every earlier
    version in ``history`` (oldest first, the current one last)."""

    user: str
    view: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def id(self) -> str:
        return str(self.view["id"])

    @property
    def blocks(self) -> list[dict[str, Any]]:
        return list(self.view.get("blocks") or [])

    @property
    def text(self) -> str:
        """Every text the Home tab shows, joined by newlines (for asserting on content)."""
        return "\n".join(_texts(self.view.get("blocks") or []))


def _texts(node: object) -> list[str]:
    """All ``text`` strings in a block tree (section/header/context texts, button labels...)."""
    if isinstance(node, list):
        return [t for item in node for t in _texts(item)]
    if not isinstance(node, dict):
        return []
    out: list[str] = []
    for key, value in node.items():
        if key == "text" and isinstance(value, str):
            out.append(value)
        elif isinstance(value, dict | list):
            out.extend(_texts(value))
    return out


@dataclass
class UserGroup:
    """A user group (``@support``) of one workspace: usergroups.list / usergroups.users.list."""

    id: str
    handle: str
    users: list[str]
    team_id: str
    name: str = ""
    disabled: bool = False

    def to_api(self, *, include_users: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "team_id": self.team_id,
            "is_usergroup": True,
            "name": self.name or self.handle,
            "handle": self.handle,
            "description": "",
            "date_delete": 1 if self.disabled else 0,
            "user_count": len(self.users),
        }
        if include_users:
            out["users"] = list(self.users)
        return out


@dataclass
class OAuthGrant:
    """What a user approved on Slack's install page: the code oauth.v2.access exchanges once."""

    team_id: str
    team_name: str
    user: str
    scope: str
    redirect_uri: str | None = None
    enterprise_id: str | None = None
    enterprise_name: str | None = None
    is_enterprise_install: bool = False
    used: bool = False


def _decode_json_args(args: dict[str, Any]) -> None:
    for name in _JSON_ARGS:
        value = args.get(name)
        if isinstance(value, str) and value[:1] in ("[", "{"):
            try:
                args[name] = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ApiError("invalid_json") from exc


def _check_metadata(metadata: object) -> None:
    """Message metadata must be {"event_type": str, "event_payload": object}, as Slack wants."""
    if metadata is None:
        return
    if not isinstance(metadata, dict) or not isinstance(metadata.get("event_payload"), dict):
        raise ApiError("invalid_metadata_format")
    if not isinstance(metadata.get("event_type"), str) or not metadata["event_type"]:
        raise ApiError("invalid_metadata_format")


def _flag(value: object) -> bool:
    return value is True or str(value).lower() in ("1", "true")


def _view_problems(view: dict[str, Any]) -> list[str]:
    """What Slack's views.publish says about a malformed Home tab view (empty when fine)."""
    problems: list[str] = []
    if view.get("type") != "home":
        problems.append("[ERROR] must be 'home' [json-pointer:/view/type]")
    blocks = view.get("blocks")
    if not isinstance(blocks, list):
        problems.append("[ERROR] missing required field: blocks [json-pointer:/view]")
        return problems
    if len(blocks) > MAX_VIEW_BLOCKS:
        problems.append(
            f"[ERROR] must be at most {MAX_VIEW_BLOCKS} items [json-pointer:/view/blocks]"
        )
    for index, block in enumerate(blocks):
        if not isinstance(block, dict) or not _nonempty_str(block.get("type")):
            problems.append(
                f"[ERROR] missing required field: type [json-pointer:/view/blocks/{index}]"
            )
    if len(str(view.get("private_metadata") or "")) > MAX_PRIVATE_METADATA:
        problems.append(
            f"[ERROR] must be less than {MAX_PRIVATE_METADATA + 1} characters "
            "[json-pointer:/view/private_metadata]"
        )
    return problems


def _require(args: dict[str, Any], *names: str) -> None:
    for name in names:
        if not args.get(name):
            raise ApiError("invalid_arguments")


def _nonempty_str(value: object) -> bool:
    return isinstance(value, str) and bool(value)


def _valid_source(source: object) -> bool:
    return (
        isinstance(source, dict)
        and source.get("type") == "url"
        and isinstance(source.get("url"), str)
        and isinstance(source.get("text"), str)
    )


def _valid_chunk(chunk: object) -> bool:
    """One streaming chunk as Slack accepts it (markdown_text, task_update, plan_update, blocks)."""
    if not isinstance(chunk, dict) or chunk.get("type") not in CHUNK_TYPES:
        return False
    kind = chunk["type"]
    if kind == "markdown_text":
        return isinstance(chunk.get("text"), str)
    if kind == "plan_update":
        return isinstance(chunk.get("title"), str)
    if kind == "blocks":
        return isinstance(chunk.get("blocks"), list)
    title, sources = chunk.get("title"), chunk.get("sources")
    return (
        _nonempty_str(chunk.get("id"))
        and isinstance(title, str)
        and 1 <= len(title) <= MAX_TASK_TITLE
        and chunk.get("status") in TASK_STATUSES
        and all(isinstance(chunk.get(k, ""), str) for k in ("details", "output"))
        and (sources is None or (isinstance(sources, list) and all(map(_valid_source, sources))))
    )


@dataclass(frozen=True)
class StreamContent:
    """What one chat.*Stream call carries: markdown_text, or chunks (never both)."""

    markdown_text: str = ""
    chunks: tuple[dict[str, Any], ...] = ()

    @property
    def mode(self) -> StreamMode | None:
        """The content mode this call fixes or must match (None: it carries no content)."""
        if self.markdown_text:
            return "markdown"
        return "chunks" if self.chunks else None

    @property
    def text(self) -> str:
        parts = [c["text"] for c in self.chunks if c["type"] == "markdown_text"]
        return self.markdown_text + "".join(parts)


def _stream_content(args: dict[str, Any]) -> StreamContent:
    """Check a stream call's content the way Slack does (invalid_arguments, invalid_chunks,
    msg_too_long) and return it. An empty ``chunks`` list carries nothing (slack_sdk's
    chat_stream helper stops a stream with one)."""
    markdown_text, chunks = args.get("markdown_text"), args.get("chunks")
    if markdown_text is not None and not isinstance(markdown_text, str):
        raise ApiError("invalid_arguments")
    if markdown_text and chunks:
        raise ApiError("invalid_arguments")
    if chunks is not None and not (isinstance(chunks, list) and all(map(_valid_chunk, chunks))):
        raise ApiError("invalid_chunks")
    content = StreamContent(markdown_text or "", tuple(chunks or ()))
    if len(content.text) > MAX_MARKDOWN_TEXT:
        raise ApiError("msg_too_long")
    return content


class WebApi:
    """The Web API methods the bot uses, keyed by Slack method name."""

    def __init__(
        self,
        *,
        ws: Workspace,
        store: MessageStore,
        config: ApiConfig,
        socket_url: Callable[[], str],
        on_bot_message: Callable[[StoredMessage], None],
        channel_types: dict[str, str],
        upload_url: Callable[[str], str] = lambda file_id: f"http://127.0.0.1/upload/{file_id}",
        install: Callable[[OAuthGrant], tuple[Workspace, str]] | None = None,
    ) -> None:
        self.ws = ws
        self.caller = ws
        """The workspace whose bot token made the call being answered (set by `call`)."""
        self._install = install
        self.store = store
        self.config = config
        self._socket_url = socket_url
        self._on_bot_message = on_bot_message
        self.channel_types = channel_types
        self._upload_url = upload_url
        self.files: dict[str, StoredFile] = {}
        self._file_ids = itertools.count(1)
        self.ephemerals: list[StoredMessage] = []
        self.deleted: list[StoredMessage] = []
        self.assistant_threads: dict[tuple[str, str], AssistantThread] = {}
        self.agent_sessions: dict[tuple[str, str], AgentSession] = {}
        self.channels_gone: dict[str, str] = {}
        """channel → the error every write there answers (not_in_channel, is_archived, ...)."""
        self.users: dict[str, dict[str, Any]] = {
            ws.bot_user_id: {"id": ws.bot_user_id, "name": "powabot", "real_name": "powabot"}
        }
        self.home_views: dict[str, HomeView] = {}
        self._view_ids = itertools.count(1)
        self.usergroups: dict[str, UserGroup] = {}
        self.members: dict[str, set[str]] = {}
        """channel → its members, for channels a test declared (others: anyone is a member)."""
        self.oauth_codes: dict[str, OAuthGrant] = {}
        self.client_id = "0000000000.standin"
        self.client_secret = "standin-client-secret"
        self.methods: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "auth.test": self.auth_test,
            "apps.connections.open": self.connections_open,
            "chat.postMessage": self.post_message,
            "chat.update": self.update,
            "chat.delete": self.delete,
            "chat.postEphemeral": self.post_ephemeral,
            "conversations.replies": self.replies,
            "reactions.add": self.reactions_add,
            "reactions.remove": self.reactions_remove,
            "users.info": self.users_info,
            "usergroups.list": self.usergroups_list,
            "usergroups.users.list": self.usergroups_users,
            "views.publish": self.views_publish,
            "chat.getPermalink": self.get_permalink,
            "oauth.v2.access": self.oauth_access,
            "assistant.threads.setStatus": self.set_status,
            "assistant.threads.setTitle": self.set_title,
            "assistant.threads.setSuggestedPrompts": self.set_prompts,
            "agents.sessions.setStatus": self.set_session_status,
            "chat.startStream": self.start_stream,
            "chat.appendStream": self.append_stream,
            "chat.stopStream": self.stop_stream,
            "files.getUploadURLExternal": self.get_upload_url,
            "files.completeUploadExternal": self.complete_upload,
        }

    def call(
        self, method: str, args: dict[str, Any], caller: Workspace | None = None
    ) -> dict[str, Any]:
        """Answer one call; ``caller``: the workspace of the bot token used (default: the
        stand-in's own workspace)."""
        handler = self.methods.get(method)
        if handler is None:
            raise ApiError("unknown_method")
        _decode_json_args(args)
        self.caller = caller or self.ws
        try:
            return {"ok": True, **handler(args)}
        finally:
            self.caller = self.ws

    # --- helpers -----------------------------------------------------------------------------

    def channel_type(self, channel: str) -> str:
        return self.channel_types.get(channel) or channel_type_of(channel)

    def _check_length(self, text: str, limit: int) -> None:
        if len(text) > limit:
            raise ApiError("msg_too_long")

    def _check_channel(self, channel: str) -> str:
        """A write to ``channel``: refused when it is missing or gone (the bot was removed,
        the channel archived or deleted), as chat.postMessage and the rest refuse it."""
        if not channel:
            raise ApiError("channel_not_found")
        gone = self.channels_gone.get(channel)
        if gone is not None:
            raise ApiError(gone)
        return channel

    def _bot_message(self, args: dict[str, Any]) -> StoredMessage:
        channel = str(args.get("channel", ""))
        msg = self.store.get(channel, str(args.get("ts", "")))
        if msg is None:
            raise ApiError("message_not_found")
        if msg.bot_id != self.caller.bot_id:
            raise ApiError("cant_update_message")
        self._check_channel(channel)
        return msg

    def _stream_open(self, msg: StoredMessage) -> bool:
        """Is this message an open stream? One left open past stream_ttl has expired."""
        if msg.stream_state == "streaming":
            if time.monotonic() - msg.stream_started > self.config.stream_ttl:
                msg.stream_state = "expired"
        return msg.stream_state == "streaming"

    def _replied(self, channel: str, thread_ts: str | None) -> None:
        """Slack clears an assistant thread's status when the app replies in it."""
        state = self.assistant_threads.get((channel, thread_ts or ""))
        if state is not None:
            state.status = ""
            state.loading_messages = None

    # --- methods -----------------------------------------------------------------------------

    def auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        """Who the token is: the bot of the workspace that installed the app with it."""
        ws = self.caller
        out: dict[str, Any] = {
            "url": f"https://{ws.domain}.slack.com/",
            "team": ws.name,
            "user": "powabot",
            "team_id": ws.team_id,
            "user_id": ws.bot_user_id,
            "bot_id": ws.bot_id,
            "is_enterprise_install": ws.is_enterprise_install,
        }
        if ws.enterprise_id is not None:
            out["enterprise_id"] = ws.enterprise_id
        return out

    def connections_open(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"url": self._socket_url()}

    def post_message(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._check_channel(str(args.get("channel") or ""))
        text = str(args.get("text") or "")
        if not text and not args.get("blocks") and not args.get("attachments"):
            raise ApiError("no_text")
        self._check_length(text, self.config.max_text_len)
        _check_metadata(args.get("metadata"))
        msg = self.store.add(
            StoredMessage(
                channel=channel,
                ts=self.store.next_ts(),
                text=text,
                user=self.caller.bot_user_id,
                bot_id=self.caller.bot_id,
                thread_ts=args.get("thread_ts") or None,
                blocks=args.get("blocks"),
                attachments=args.get("attachments"),
                extra={k: v for k, v in args.items() if k not in _MESSAGE_ARGS},
                team=self.caller.team_id,
            )
        )
        self._replied(channel, msg.thread_ts)
        self._on_bot_message(msg)
        return {"channel": channel, "ts": msg.ts, "message": msg.to_api(self.caller.team_id)}

    def delete(self, args: dict[str, Any]) -> dict[str, Any]:
        msg = self._bot_message(args)
        self.store.remove(msg)
        self.deleted.append(msg)
        return {"channel": msg.channel, "ts": msg.ts}

    def update(self, args: dict[str, Any]) -> dict[str, Any]:
        msg = self._bot_message(args)
        if self._stream_open(msg):
            # Reported (not documented) answer for editing a message that is still streaming.
            raise ApiError("streaming_state_conflict")
        if "text" in args:
            text = str(args["text"] or "")
            self._check_length(text, self.config.max_text_len)
            msg.text = text
        if "blocks" in args:
            msg.blocks = args["blocks"]
        if "attachments" in args:
            msg.attachments = args["attachments"]
        msg.edits.append((time.monotonic(), msg.text))
        return {
            "channel": msg.channel,
            "ts": msg.ts,
            "text": msg.text,
            "message": msg.to_api(self.caller.team_id),
        }

    def post_ephemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        """A message only ``user`` sees, in ``channel`` (in the thread ``thread_ts``): refused
        when the user is not a member of a channel whose members a test declared."""
        _require(args, "channel", "user")
        channel, user = str(args["channel"]), str(args["user"])
        if not _USER_ID.match(user):
            raise ApiError("user_not_found")
        self._check_channel(channel)
        members = self.members.get(channel)
        if members is not None and user not in members:
            raise ApiError("user_not_in_channel")
        text = str(args.get("text") or "")
        if not text and not args.get("blocks") and not args.get("attachments"):
            raise ApiError("no_text")
        self._check_length(text, self.config.max_text_len)
        msg = StoredMessage(
            channel=channel,
            ts=self.store.next_ts(),
            text=text,
            user=self.caller.bot_user_id,
            bot_id=self.caller.bot_id,
            thread_ts=args.get("thread_ts") or None,
            blocks=args.get("blocks"),
            attachments=args.get("attachments"),
            extra={"recipient": user},
            team=self.caller.team_id,
        )
        self.ephemerals.append(msg)
        return {"message_ts": msg.ts}

    def replies(self, args: dict[str, Any]) -> dict[str, Any]:
        _require(args, "channel", "ts")
        channel, ts = str(args["channel"]), str(args["ts"])
        msg = self.store.get(channel, ts)
        if msg is None:
            raise ApiError("thread_not_found")
        messages = self.store.thread(channel, msg.thread_ts or ts)
        start = int(args.get("cursor") or 0)
        limit = max(1, min(int(args.get("limit") or 1000), 1000))
        page = messages[start : start + limit]
        more = start + limit < len(messages)
        metadata = str(args.get("include_all_metadata") or "").lower() in ("1", "true")
        return {
            "messages": [m.to_api(self.caller.team_id, metadata=metadata) for m in page],
            "has_more": more,
            "response_metadata": {"next_cursor": str(start + limit) if more else ""},
        }

    def _reaction_target(self, args: dict[str, Any]) -> tuple[StoredMessage, str]:
        _require(args, "channel", "timestamp", "name")
        msg = self.store.get(str(args["channel"]), str(args["timestamp"]))
        if msg is None:
            raise ApiError("message_not_found")
        return msg, str(args["name"])

    def reactions_add(self, args: dict[str, Any]) -> dict[str, Any]:
        msg, name = self._reaction_target(args)
        users = msg.reactions.setdefault(name, [])
        if self.caller.bot_user_id in users:
            raise ApiError("already_reacted")
        users.append(self.caller.bot_user_id)
        return {}

    def reactions_remove(self, args: dict[str, Any]) -> dict[str, Any]:
        msg, name = self._reaction_target(args)
        users = msg.reactions.get(name, [])
        if self.caller.bot_user_id not in users:
            raise ApiError("no_reaction")
        users.remove(self.caller.bot_user_id)
        if not users:
            del msg.reactions[name]
        return {}

    def users_info(self, args: dict[str, Any]) -> dict[str, Any]:
        user_id = str(args.get("user") or "")
        known = self.users.get(user_id)
        if known is None and not _USER_ID.match(user_id):
            raise ApiError("user_not_found")
        info = known or {"id": user_id, "name": f"user.{user_id.lower()}"}
        real_name = info.get("real_name") or f"User {user_id}"
        return {
            "user": {
                "id": user_id,
                "team_id": info.get("team_id") or self.caller.team_id,
                "name": info["name"],
                "real_name": real_name,
                "is_bot": bool(info.get("is_bot")) or user_id == self.caller.bot_user_id,
                "is_admin": bool(info.get("is_admin")),
                "is_owner": bool(info.get("is_owner")),
                "is_primary_owner": bool(info.get("is_primary_owner")),
                "is_restricted": False,
                "is_ultra_restricted": False,
                "deleted": False,
                "tz": info.get("tz", "Europe/Berlin"),
                "profile": {
                    "display_name": info.get("display_name", info["name"]),
                    "real_name": real_name,
                },
            }
        }

    def usergroups_list(self, args: dict[str, Any]) -> dict[str, Any]:
        """The caller's workspace's user groups (disabled ones only with include_disabled)."""
        include_users = _flag(args.get("include_users"))
        include_disabled = _flag(args.get("include_disabled"))
        groups = [
            g.to_api(include_users=include_users)
            for g in self.usergroups.values()
            if g.team_id == self.caller.team_id and (include_disabled or not g.disabled)
        ]
        return {"usergroups": groups}

    def usergroups_users(self, args: dict[str, Any]) -> dict[str, Any]:
        """usergroups.users.list: the member ids of one group of the caller's workspace."""
        _require(args, "usergroup")
        group = self.usergroups.get(str(args["usergroup"]))
        if group is None or group.team_id != self.caller.team_id:
            raise ApiError("no_such_subteam")
        if group.disabled and not _flag(args.get("include_disabled")):
            raise ApiError("no_such_subteam")
        return {"users": list(group.users)}

    def views_publish(self, args: dict[str, Any]) -> dict[str, Any]:
        """Publish ``view`` (type home) as ``user_id``'s App Home tab. Checked as Slack does:
        invalid_arguments with ``[ERROR] ...`` messages for a malformed view, hash_conflict
        when ``hash`` is not the current view's hash."""
        _require(args, "user_id")
        user = str(args["user_id"])
        if not _USER_ID.match(user):
            raise ApiError("user_not_found")
        view = args.get("view")
        if not isinstance(view, dict):
            raise ApiError("invalid_arguments", ["[ERROR] missing required field: view"])
        problems = _view_problems(view)
        if problems:
            raise ApiError("invalid_arguments", problems)
        current = self.home_views.get(user)
        wanted_hash = args.get("hash")
        if wanted_hash and (current is None or current.view["hash"] != wanted_hash):
            raise ApiError("hash_conflict")
        view_id = current.id if current is not None else f"V0STANDIN{next(self._view_ids):04d}"
        stored = self._stored_view(view, view_id, previous=current)
        if current is None:
            current = self.home_views[user] = HomeView(user, stored)
        current.view = stored
        current.history.append(stored)
        return {"view": stored}

    def _stored_view(
        self, view: dict[str, Any], view_id: str, previous: HomeView | None
    ) -> dict[str, Any]:
        ws = self.caller
        return {
            "id": view_id,
            "team_id": ws.team_id,
            "type": "home",
            "title": view.get("title"),
            "close": None,
            "submit": None,
            "blocks": with_block_ids(view.get("blocks"), view_id),
            "private_metadata": str(view.get("private_metadata") or ""),
            "callback_id": str(view.get("callback_id") or ""),
            "state": {"values": {}},
            "hash": f"{int(time.time())}.{next(self._view_ids):08x}",
            "clear_on_close": False,
            "notify_on_close": False,
            "root_view_id": view_id,
            "previous_view_id": None,
            "app_id": ws.app_id,
            "external_id": str(view.get("external_id") or ""),
            "app_installed_team_id": ws.team_id,
            "bot_id": ws.bot_id,
        }

    def get_permalink(self, args: dict[str, Any]) -> dict[str, Any]:
        """chat.getPermalink: the message's link; a reply's link names its thread."""
        channel, ts = str(args.get("channel") or ""), str(args.get("message_ts") or "")
        if not channel or not self.store.has_channel(channel):
            raise ApiError("channel_not_found")
        msg = self.store.get(channel, ts)
        if msg is None:
            raise ApiError("message_not_found")
        return {"channel": channel, "permalink": self.permalink(msg)}

    def permalink(self, msg: StoredMessage) -> str:
        base = f"https://{self.caller.domain}.slack.com/archives/{msg.channel}/p"
        link = base + msg.ts.replace(".", "")
        if msg.thread_ts is not None and msg.thread_ts != msg.ts:
            link += f"?thread_ts={msg.thread_ts}&cid={msg.channel}"
        return link

    def oauth_access(self, args: dict[str, Any]) -> dict[str, Any]:
        """oauth.v2.access: exchange a code (`SlackStandin.register_oauth_code`) for the bot
        token of the workspace that installed the app; a code works once."""
        if str(args.get("client_id") or "") != self.client_id:
            raise ApiError("invalid_client_id")
        if str(args.get("client_secret") or "") != self.client_secret:
            raise ApiError("bad_client_secret")
        grant = self.oauth_codes.get(str(args.get("code") or ""))
        if grant is None or grant.used:
            raise ApiError("invalid_code")
        redirect_uri = args.get("redirect_uri")
        if grant.redirect_uri is not None and redirect_uri != grant.redirect_uri:
            raise ApiError("bad_redirect_uri")
        if self._install is None:
            raise ApiError("internal_error")
        grant.used = True
        ws, token = self._install(grant)
        return {
            "access_token": token,
            "token_type": "bot",
            "scope": grant.scope,
            "bot_user_id": ws.bot_user_id,
            "app_id": ws.app_id,
            "team": None if grant.is_enterprise_install else {"id": ws.team_id, "name": ws.name},
            "enterprise": ws.enterprise,
            "is_enterprise_install": grant.is_enterprise_install,
            "authed_user": {"id": grant.user},
        }

    def _assistant(self, args: dict[str, Any], *, thread_required: bool = True) -> AssistantThread:
        _require(args, "channel_id", *(["thread_ts"] if thread_required else []))
        channel = self._check_channel(str(args["channel_id"]))
        key = (channel, str(args.get("thread_ts") or ""))
        return self.assistant_threads.setdefault(key, AssistantThread())

    def set_status(self, args: dict[str, Any]) -> dict[str, Any]:
        status, loading = args.get("status"), args.get("loading_messages")
        if not isinstance(status, str):  # "" is allowed: it clears the status
            raise ApiError("invalid_arguments")
        if loading is not None and not (
            isinstance(loading, list)
            and len(loading) <= MAX_LOADING_MESSAGES
            and all(isinstance(m, str) for m in loading)
        ):
            raise ApiError("invalid_arguments")
        state = self._assistant(args)
        state.status = status
        state.loading_messages = loading
        state.status_history.append(status)
        return {}

    def set_title(self, args: dict[str, Any]) -> dict[str, Any]:
        _require(args, "title")
        self._assistant(args).title = str(args["title"])
        return {}

    def set_prompts(self, args: dict[str, Any]) -> dict[str, Any]:
        """Up to 4 prompts {title, message}; thread_ts optional (agent view leaves it out)."""
        prompts, title = args.get("prompts"), args.get("title")
        if not (
            isinstance(prompts, list)
            and 1 <= len(prompts) <= MAX_PROMPTS
            and all(
                isinstance(p, dict)
                and _nonempty_str(p.get("title"))
                and _nonempty_str(p.get("message"))
                for p in prompts
            )
        ):
            raise ApiError("invalid_arguments")
        if title is not None and not isinstance(title, str):
            raise ApiError("invalid_arguments")
        state = self._assistant(args, thread_required=False)
        state.prompts = prompts
        state.prompts_title = title
        return {}

    def _session_status(self, channel: str, thread_ts: str, status: str) -> AgentSession:
        session = self.agent_sessions.get((channel, thread_ts))
        if session is None:
            session = self.agent_sessions[(channel, thread_ts)] = AgentSession(status)
        session.status = status
        session.history.append(status)
        return session

    def set_session_status(self, args: dict[str, Any]) -> dict[str, Any]:
        """agents.sessions.setStatus: creates the session on first use (title and initiator
        count then only), then moves it between active/processing/suspended/closed."""
        _require(args, "channel_id", "thread_ts", "status")
        status = str(args["status"])
        if status not in SESSION_STATUSES:
            raise ApiError("invalid_arguments")
        channel = self._check_channel(str(args["channel_id"]))
        key = (channel, str(args["thread_ts"]))
        new = key not in self.agent_sessions
        session = self._session_status(*key, status)
        if new:
            session.title = str(args.get("title") or "") or None
            session.initiator_user_id = str(args.get("initiator_user_id") or "") or None
        return {}

    def _absorb(self, msg: StoredMessage, content: StreamContent) -> None:
        """Lock the stream's content mode (or refuse a call of the other mode, which breaks the
        stream), then add the text and merge the chunks into the message."""
        mode = content.mode
        if mode is not None and msg.stream_mode not in (None, mode):
            msg.stream_state = "broken"
            raise ApiError("streaming_mode_mismatch")
        msg.stream_mode = msg.stream_mode or mode
        msg.text += content.text
        for chunk in content.chunks:
            if chunk["type"] == "markdown_text":
                continue
            msg.chunks.append(chunk)
            if chunk["type"] == "task_update":
                fields = {k: v for k, v in chunk.items() if k != "type"}
                msg.tasks[chunk["id"]] = {**msg.tasks.get(chunk["id"], {}), **fields}
            elif chunk["type"] == "plan_update":
                msg.plan_title = chunk["title"]
            else:
                msg.blocks = (msg.blocks or []) + chunk["blocks"]

    def start_stream(self, args: dict[str, Any]) -> dict[str, Any]:
        _require(args, "channel", "thread_ts")
        display_mode = args.get("task_display_mode")
        if display_mode is not None and display_mode not in TASK_DISPLAY_MODES:
            raise ApiError("invalid_arguments")
        content = _stream_content(args)
        channel = self._check_channel(str(args["channel"]))
        if not self.config.streaming_enabled:
            raise ApiError("channel_type_not_supported")
        if self.channel_type(channel) != "im":
            if not args.get("recipient_user_id"):
                raise ApiError("missing_recipient_user_id")
            if not args.get("recipient_team_id"):
                raise ApiError("missing_recipient_team_id")
        msg = StoredMessage(
            channel=channel,
            ts=self.store.next_ts(),
            user=self.caller.bot_user_id,
            bot_id=self.caller.bot_id,
            thread_ts=str(args["thread_ts"]),
            team=self.caller.team_id,
            stream_state="streaming",
            stream_started=time.monotonic(),
            task_display_mode=display_mode,
        )
        self._absorb(msg, content)
        self.store.add(msg)
        self._replied(channel, msg.thread_ts)
        return {"channel": channel, "ts": msg.ts}

    def _streaming_message(self, args: dict[str, Any]) -> tuple[StoredMessage, StreamContent]:
        _require(args, "channel", "ts")
        if "task_display_mode" in args:  # chosen at chat.startStream only
            raise ApiError("invalid_arguments")
        content = _stream_content(args)
        msg = self._bot_message(args)
        if not self._stream_open(msg):
            raise ApiError("message_not_in_streaming_state")
        return msg, content

    def append_stream(self, args: dict[str, Any]) -> dict[str, Any]:
        msg, content = self._streaming_message(args)
        self._absorb(msg, content)
        msg.edits.append((time.monotonic(), msg.text))
        return {"channel": msg.channel, "ts": msg.ts}

    def stop_stream(self, args: dict[str, Any]) -> dict[str, Any]:
        session_status = args.get("session_status")
        if session_status is not None and session_status not in SESSION_STATUSES:
            raise ApiError("invalid_arguments")
        msg, content = self._streaming_message(args)
        self._absorb(msg, content)
        if args.get("blocks") is not None:
            msg.blocks = args["blocks"]
        msg.stream_state = "stopped"
        msg.edits.append((time.monotonic(), msg.text))
        if session_status is not None:
            msg.session_status = session_status
            self._session_status(msg.channel, msg.thread_ts or "", session_status)
        return {"channel": msg.channel, "ts": msg.ts, "message": msg.to_api(self.caller.team_id)}

    def stop_streams_in(
        self, channel: str, thread_ts: str, ts: list[str] | None = None
    ) -> list[str]:
        """What a user's Stop click does to the app's open streams in a thread (all of them,
        or those in ``ts``): Slack stops them itself. Returns the ts of those it stopped."""
        stopped = []
        for msg in self.store.thread(channel, thread_ts):
            if msg.is_bot and (ts is None or msg.ts in ts) and self._stream_open(msg):
                msg.stream_state = "stopped"
                stopped.append(msg.ts)
        return stopped

    # --- files (the external upload flow; files.upload is retired) ----------------------------

    def get_upload_url(self, args: dict[str, Any]) -> dict[str, Any]:
        _require(args, "filename", "length")
        try:
            length = int(args["length"])
        except (TypeError, ValueError) as exc:
            raise ApiError("invalid_arguments") from exc
        if length <= 0:
            raise ApiError("invalid_arguments")
        file_id = f"F0STANDIN{next(self._file_ids):05d}"
        self.files[file_id] = StoredFile(file_id, str(args["filename"]), length)
        return {"upload_url": self._upload_url(file_id), "file_id": file_id}

    def receive_upload(self, file_id: str, content: bytes) -> bool:
        """The bytes POSTed to a file's upload URL; False for an unknown file."""
        stored = self.files.get(file_id)
        if stored is None:
            return False
        stored.content = content
        return True

    def complete_upload(self, args: dict[str, Any]) -> dict[str, Any]:
        _require(args, "files")
        wanted = args["files"]
        if not isinstance(wanted, list) or not all(
            isinstance(f, dict) and f.get("id") for f in wanted
        ):
            raise ApiError("invalid_arguments")
        found = [self.files.get(str(f["id"])) for f in wanted]
        files = [f for f in found if f is not None and f.content is not None]
        if len(files) != len(wanted):  # never asked for, or its bytes never arrived
            raise ApiError("file_not_found")
        channel = str(args.get("channel_id") or args.get("channels") or "")
        thread_ts = str(args.get("thread_ts") or "") or None
        if thread_ts and (not channel or "," in channel):
            raise ApiError("invalid_arguments")  # a thread needs exactly one channel
        for one in filter(None, channel.split(",")):
            self._check_channel(one)
        for entry, stored in zip(wanted, files, strict=True):
            stored.title = str(entry.get("title") or stored.filename)
        shown = [f.to_api(self.caller.bot_user_id) for f in files]
        if channel:
            for stored in files:
                stored.shared_in.append((channel, thread_ts))
            shown = [f.to_api(self.caller.bot_user_id) for f in files]
            msg = self.store.add(
                StoredMessage(
                    channel=channel,
                    ts=self.store.next_ts(),
                    text=str(args.get("initial_comment") or ""),
                    user=self.caller.bot_user_id,
                    bot_id=self.caller.bot_id,
                    thread_ts=thread_ts,
                    files=shown,
                    team=self.caller.team_id,
                )
            )
            self._replied(channel, thread_ts)
            self._on_bot_message(msg)
        return {"files": shown}
