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
from sandbox.slack.store import MessageStore, StoredMessage

MAX_MARKDOWN_TEXT = 12_000  # per chat.*Stream call
_USER_ID = re.compile(r"^[UW][A-Z0-9]+$")
# Arguments that are part of the message body; anything else the poster sends lands in `extra`.
_MESSAGE_ARGS = {"channel", "text", "blocks", "attachments", "thread_ts", "token", "team_id"}
_JSON_ARGS = (
    "blocks", "attachments", "chunks", "metadata", "prompts", "loading_messages", "files"
)  # fmt: skip


class ApiError(Exception):
    """A Slack method refused the call with this error code."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@dataclass
class ApiConfig:
    """Behaviour switches the handlers read at call time (tests may flip them mid-run)."""

    max_text_len: int = 4000
    streaming_enabled: bool = True
    stream_ttl: float = 300.0


@dataclass
class AssistantThread:
    """What the app set on one assistant thread via assistant.threads.*."""

    status: str = ""
    loading_messages: list[str] | None = None
    title: str | None = None
    prompts: list[Any] | None = None
    status_history: list[str] = field(default_factory=list)


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


def _require(args: dict[str, Any], *names: str) -> None:
    for name in names:
        if not args.get(name):
            raise ApiError("invalid_arguments")


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
    ) -> None:
        self.ws = ws
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
        self.users: dict[str, dict[str, Any]] = {
            ws.bot_user_id: {"id": ws.bot_user_id, "name": "powabot", "real_name": "powabot"}
        }
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
            "assistant.threads.setStatus": self.set_status,
            "assistant.threads.setTitle": self.set_title,
            "assistant.threads.setSuggestedPrompts": self.set_prompts,
            "chat.startStream": self.start_stream,
            "chat.appendStream": self.append_stream,
            "chat.stopStream": self.stop_stream,
            "files.getUploadURLExternal": self.get_upload_url,
            "files.completeUploadExternal": self.complete_upload,
        }

    def call(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        handler = self.methods.get(method)
        if handler is None:
            raise ApiError("unknown_method")
        _decode_json_args(args)
        return {"ok": True, **handler(args)}

    # --- helpers -----------------------------------------------------------------------------

    def channel_type(self, channel: str) -> str:
        return self.channel_types.get(channel) or channel_type_of(channel)

    def _check_length(self, text: str, limit: int) -> None:
        if len(text) > limit:
            raise ApiError("msg_too_long")

    def _bot_message(self, args: dict[str, Any]) -> StoredMessage:
        msg = self.store.get(str(args.get("channel", "")), str(args.get("ts", "")))
        if msg is None:
            raise ApiError("message_not_found")
        if msg.bot_id != self.ws.bot_id:
            raise ApiError("cant_update_message")
        return msg

    def _replied(self, channel: str, thread_ts: str | None) -> None:
        """Slack clears an assistant thread's status when the app replies in it."""
        state = self.assistant_threads.get((channel, thread_ts or ""))
        if state is not None:
            state.status = ""

    # --- methods -----------------------------------------------------------------------------

    def auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "url": "https://standin.slack.com/",
            "team": "Stand-in Workspace",
            "user": "powabot",
            "team_id": self.ws.team_id,
            "user_id": self.ws.bot_user_id,
            "bot_id": self.ws.bot_id,
            "is_enterprise_install": False,
        }

    def connections_open(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"url": self._socket_url()}

    def post_message(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = str(args.get("channel") or "")
        if not channel:
            raise ApiError("channel_not_found")
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
                user=self.ws.bot_user_id,
                bot_id=self.ws.bot_id,
                thread_ts=args.get("thread_ts") or None,
                blocks=args.get("blocks"),
                attachments=args.get("attachments"),
                extra={k: v for k, v in args.items() if k not in _MESSAGE_ARGS},
            )
        )
        self._replied(channel, msg.thread_ts)
        self._on_bot_message(msg)
        return {"channel": channel, "ts": msg.ts, "message": msg.to_api(self.ws.team_id)}

    def delete(self, args: dict[str, Any]) -> dict[str, Any]:
        msg = self._bot_message(args)
        self.store.remove(msg)
        self.deleted.append(msg)
        return {"channel": msg.channel, "ts": msg.ts}

    def update(self, args: dict[str, Any]) -> dict[str, Any]:
        msg = self._bot_message(args)
        if msg.stream_state == "streaming":
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
            "message": msg.to_api(self.ws.team_id),
        }

    def post_ephemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        _require(args, "channel", "user")
        text = str(args.get("text") or "")
        self._check_length(text, self.config.max_text_len)
        msg = StoredMessage(
            channel=str(args["channel"]),
            ts=self.store.next_ts(),
            text=text,
            bot_id=self.ws.bot_id,
            thread_ts=args.get("thread_ts") or None,
            blocks=args.get("blocks"),
            extra={"recipient": args["user"]},
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
            "messages": [m.to_api(self.ws.team_id, metadata=metadata) for m in page],
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
        if self.ws.bot_user_id in users:
            raise ApiError("already_reacted")
        users.append(self.ws.bot_user_id)
        return {}

    def reactions_remove(self, args: dict[str, Any]) -> dict[str, Any]:
        msg, name = self._reaction_target(args)
        users = msg.reactions.get(name, [])
        if self.ws.bot_user_id not in users:
            raise ApiError("no_reaction")
        users.remove(self.ws.bot_user_id)
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
                "team_id": self.ws.team_id,
                "name": info["name"],
                "real_name": real_name,
                "is_bot": user_id == self.ws.bot_user_id,
                "deleted": False,
                "tz": info.get("tz", "Europe/Berlin"),
                "profile": {
                    "display_name": info.get("display_name", info["name"]),
                    "real_name": real_name,
                },
            }
        }

    def _assistant(self, args: dict[str, Any]) -> AssistantThread:
        _require(args, "channel_id", "thread_ts")
        key = (str(args["channel_id"]), str(args["thread_ts"]))
        return self.assistant_threads.setdefault(key, AssistantThread())

    def set_status(self, args: dict[str, Any]) -> dict[str, Any]:
        state = self._assistant(args)
        state.status = str(args.get("status") or "")
        state.loading_messages = args.get("loading_messages")
        state.status_history.append(state.status)
        return {}

    def set_title(self, args: dict[str, Any]) -> dict[str, Any]:
        self._assistant(args).title = str(args.get("title") or "")
        return {}

    def set_prompts(self, args: dict[str, Any]) -> dict[str, Any]:
        self._assistant(args).prompts = args.get("prompts")
        return {}

    def _absorb_stream_input(self, msg: StoredMessage, args: dict[str, Any]) -> None:
        """Add markdown_text and markdown_text chunks to the text; keep other chunks."""
        chunks = [c for c in args.get("chunks") or [] if isinstance(c, dict)]
        parts = [str(args.get("markdown_text") or "")]
        parts += [str(c.get("text") or "") for c in chunks if c.get("type") == "markdown_text"]
        for part in parts:
            self._check_length(part, MAX_MARKDOWN_TEXT)
        msg.chunks += [c for c in chunks if c.get("type") != "markdown_text"]
        msg.text += "".join(parts)

    def start_stream(self, args: dict[str, Any]) -> dict[str, Any]:
        _require(args, "channel", "thread_ts")
        channel = str(args["channel"])
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
            user=self.ws.bot_user_id,
            bot_id=self.ws.bot_id,
            thread_ts=str(args["thread_ts"]),
            stream_state="streaming",
            stream_started=time.monotonic(),
        )
        self._absorb_stream_input(msg, args)
        self.store.add(msg)
        self._replied(channel, msg.thread_ts)
        return {"channel": channel, "ts": msg.ts}

    def _streaming_message(self, args: dict[str, Any]) -> StoredMessage:
        _require(args, "channel", "ts")
        msg = self._bot_message(args)
        expired = time.monotonic() - msg.stream_started > self.config.stream_ttl
        if msg.stream_state != "streaming" or expired:
            raise ApiError("message_not_in_streaming_state")
        return msg

    def append_stream(self, args: dict[str, Any]) -> dict[str, Any]:
        msg = self._streaming_message(args)
        self._absorb_stream_input(msg, args)
        msg.edits.append((time.monotonic(), msg.text))
        return {"channel": msg.channel, "ts": msg.ts}

    def stop_stream(self, args: dict[str, Any]) -> dict[str, Any]:
        msg = self._streaming_message(args)
        self._absorb_stream_input(msg, args)
        if args.get("blocks") is not None:
            msg.blocks = args["blocks"]
        msg.stream_state = "stopped"
        msg.edits.append((time.monotonic(), msg.text))
        return {"channel": msg.channel, "ts": msg.ts, "message": msg.to_api(self.ws.team_id)}

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
        for entry, stored in zip(wanted, files, strict=True):
            stored.title = str(entry.get("title") or stored.filename)
        shown = [f.to_api(self.ws.bot_user_id) for f in files]
        if channel:
            for stored in files:
                stored.shared_in.append((channel, thread_ts))
            shown = [f.to_api(self.ws.bot_user_id) for f in files]
            msg = self.store.add(
                StoredMessage(
                    channel=channel,
                    ts=self.store.next_ts(),
                    text=str(args.get("initial_comment") or ""),
                    user=self.ws.bot_user_id,
                    bot_id=self.ws.bot_id,
                    thread_ts=thread_ts,
                    files=shown,
                )
            )
            self._replied(channel, thread_ts)
            self._on_bot_message(msg)
        return {"files": shown}
