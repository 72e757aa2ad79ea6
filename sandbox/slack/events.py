"""Pure builders for the payloads Slack sends an app: events, envelopes, HTTP signatures."""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Any

from sandbox.slack.store import StoredMessage

VERIFICATION_TOKEN = "standin-verification-token"  # the deprecated `token` in every payload


@dataclass(frozen=True)
class Workspace:
    """The identifiers that appear in every payload the stand-in sends."""

    team_id: str
    app_id: str
    bot_user_id: str
    bot_id: str
    name: str = "Stand-in Workspace"
    domain: str = "standin"
    enterprise_id: str | None = None
    enterprise_name: str | None = None
    is_enterprise_install: bool = False

    @property
    def enterprise(self) -> dict[str, str] | None:
        """``{"id", "name"}`` of the Enterprise Grid org the workspace belongs to, else None."""
        if self.enterprise_id is None:
            return None
        return {"id": self.enterprise_id, "name": self.enterprise_name or self.enterprise_id}


def channel_type_of(channel: str) -> str:
    """Slack's channel_type guessed from the id prefix (D → im, G → group, else channel)."""
    if channel.startswith("D"):
        return "im"
    if channel.startswith("G"):
        return "group"
    return "channel"


def event_callback(event: dict[str, Any], *, ws: Workspace, event_id: str) -> dict[str, Any]:
    """The Events API outer payload (``type: event_callback``) wrapping one event."""
    payload: dict[str, Any] = {
        "token": VERIFICATION_TOKEN,
        "team_id": ws.team_id,
        "api_app_id": ws.app_id,
        "event": event,
        "type": "event_callback",
        "event_id": event_id,
        "event_time": int(time.time()),
        "authorizations": [
            {
                "enterprise_id": ws.enterprise_id,
                "team_id": ws.team_id,
                "user_id": ws.bot_user_id,
                "is_bot": True,
                "is_enterprise_install": ws.is_enterprise_install,
            }
        ],
        "is_ext_shared_channel": False,
    }
    if ws.enterprise_id is not None:
        payload["enterprise_id"] = ws.enterprise_id
    return payload


def envelope(
    payload: dict[str, Any],
    *,
    envelope_id: str,
    retry_attempt: int = 0,
    retry_reason: str = "",
    kind: str = "events_api",
) -> dict[str, Any]:
    """A Socket Mode envelope: ``events_api`` around an event_callback payload, or
    ``interactive`` around a block_actions payload (neither accepts a response payload)."""
    return {
        "envelope_id": envelope_id,
        "type": kind,
        "accepts_response_payload": False,
        "retry_attempt": retry_attempt,
        "retry_reason": retry_reason,
        "payload": payload,
    }


def user_event(
    *,
    ws: Workspace,
    user: str,
    text: str,
    channel: str,
    channel_type: str,
    ts: str,
    thread_ts: str | None,
    mention: bool,
    client_msg_id: str,
) -> dict[str, Any]:
    """A user's message as Slack delivers it: ``app_mention`` or ``message`` with channel_type."""
    event: dict[str, Any] = {
        "type": "app_mention" if mention else "message",
        "user": user,
        "text": text,
        "ts": ts,
        "event_ts": ts,
        "channel": channel,
        "team": ws.team_id,
        "client_msg_id": client_msg_id,
    }
    if not mention:
        event["channel_type"] = channel_type
    if thread_ts is not None:
        event["thread_ts"] = thread_ts
    return event


def bot_message_event(
    message: StoredMessage, *, ws: Workspace, channel_type: str
) -> dict[str, Any]:
    """The ``message`` event Slack sends back to the app for a message its bot posted."""
    event = message.to_api(ws.team_id)
    event.update(
        {
            "channel": message.channel,
            "channel_type": channel_type,
            "event_ts": message.ts,
            "app_id": ws.app_id,
            "bot_profile": {"id": ws.bot_id, "app_id": ws.app_id, "team_id": ws.team_id},
        }
    )
    return event


def slack_signature(signing_secret: str, timestamp: int, body: bytes) -> str:
    """``x-slack-signature`` for an HTTP-mode request: v0= HMAC-SHA256 of ``v0:{ts}:{body}``."""
    base = f"v0:{timestamp}:".encode() + body
    digest = hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()
    return f"v0={digest}"


def agent_session_stopped_event(
    *, channel: str, thread_ts: str, user: str, streaming_message_ts: list[str], event_ts: str
) -> dict[str, Any]:
    """``agent_session_stopped``: the user clicked Stop on the thread's agent session;
    ``streaming_message_ts`` lists the app's streams Slack stopped for it (may be empty)."""
    return {
        "type": "agent_session_stopped",
        "channel": channel,
        "thread_ts": thread_ts,
        "user": user,
        "streaming_message_ts": list(streaming_message_ts),
        "event_ts": event_ts,
    }


def app_home_opened_event(*, user: str, channel: str, tab: str, event_ts: str) -> dict[str, Any]:
    """``app_home_opened``: the user opened the app's Messages tab (agent view) or Home tab."""
    return {
        "type": "app_home_opened",
        "user": user,
        "channel": channel,
        "tab": tab,
        "event_ts": event_ts,
    }


def assistant_thread_event(
    kind: str,
    *,
    user: str,
    channel: str,
    thread_ts: str,
    context: dict[str, Any],
    event_ts: str,
) -> dict[str, Any]:
    """``assistant_thread_started`` / ``assistant_thread_context_changed`` (legacy assistant
    view): ``context`` holds what the user is viewing (channel_id, team_id, enterprise_id)."""
    return {
        "type": kind,
        "assistant_thread": {
            "user_id": user,
            "context": context,
            "channel_id": channel,
            "thread_ts": thread_ts,
        },
        "event_ts": event_ts,
    }
