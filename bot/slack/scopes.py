"""What powabot asks of a Slack app: the Web API methods it calls, the events it subscribes to,
and the bot scopes those need. Nothing else may be granted.

This is the one declaration behind the Slack app manifests in `deploy/` (their test checks
that every method the code calls and every event a listener handles is declared here, that
nothing declared is unused, and that each manifest subscribes and grants exactly this), and
what `powabot doctor` can compare a token's granted scopes with.

Scopes per method and event are from Slack's reference pages ("Required scopes" of
https://docs.slack.dev/reference/methods/<method> and .../events/<event>).
"""

from __future__ import annotations

# Every Web API method a bot token may call, with the bot scopes one call needs in the
# conversations powabot works in (DMs, public and private channels). A method powabot starts to
# call must be added here first; the manifest test fails on a method this table lacks.
METHOD_SCOPES: dict[str, frozenset[str]] = {
    "auth.test": frozenset(),
    # Socket Mode: called with the app-level token (xapp-, scope connections:write), which is
    # configured on the app's Basic Information page, not in the manifest's bot scopes.
    "apps.connections.open": frozenset(),
    "chat.postMessage": frozenset({"chat:write"}),
    "chat.update": frozenset({"chat:write"}),
    "chat.delete": frozenset({"chat:write"}),
    "chat.postEphemeral": frozenset({"chat:write"}),
    "chat.startStream": frozenset({"chat:write"}),
    "chat.appendStream": frozenset({"chat:write"}),
    "chat.stopStream": frozenset({"chat:write"}),
    "chat.getPermalink": frozenset(),
    # Accepts chat:write since 2026-03-05 (assistant:write before).
    "assistant.threads.setStatus": frozenset({"chat:write"}),
    "assistant.threads.setTitle": frozenset({"assistant:write"}),
    "assistant.threads.setSuggestedPrompts": frozenset({"assistant:write"}),
    # Agent sessions (Slack's Stop button): "a granular bot token bearing chat:write".
    "agents.sessions.setStatus": frozenset({"chat:write"}),
    "files.getUploadURLExternal": frozenset({"files:write"}),
    "files.completeUploadExternal": frozenset({"files:write"}),
    # Retired; bot.slack.files names its middle step (POST the bytes to the upload URL) after it.
    "files.upload": frozenset({"files:write"}),
    "conversations.replies": frozenset({"channels:history", "groups:history", "im:history"}),
    "conversations.history": frozenset({"channels:history", "groups:history", "im:history"}),
    "conversations.info": frozenset({"channels:read", "groups:read", "im:read"}),
    "users.info": frozenset({"users:read"}),
    "usergroups.list": frozenset({"usergroups:read"}),
    "usergroups.users.list": frozenset({"usergroups:read"}),
    "views.publish": frozenset(),  # "No scopes required" (the app's own Home tab)
    "reactions.add": frozenset({"reactions:write"}),
    "reactions.remove": frozenset({"reactions:write"}),
}

# Bot event subscriptions (as a manifest names them) and the scope each needs.
EVENT_SCOPES: dict[str, frozenset[str]] = {
    "app_mention": frozenset({"app_mentions:read"}),
    "message.im": frozenset({"im:history"}),
    "message.channels": frozenset({"channels:history"}),
    "message.groups": frozenset({"groups:history"}),
    "message.mpim": frozenset({"mpim:history"}),
    "app_home_opened": frozenset(),
    "assistant_thread_started": frozenset({"assistant:write"}),
    "assistant_thread_context_changed": frozenset(),  # "No scopes required"
    # The event page names no scope of its own; chat:write is what starts a session
    # (agents.sessions.setStatus), so an app receiving it holds that scope anyway.
    "agent_session_stopped": frozenset({"chat:write"}),
}

# --- what powabot uses ---------------------------------------------------------------------------

# The Web API methods bot/ calls.
METHODS: frozenset[str] = frozenset(
    {
        "auth.test",
        "apps.connections.open",
        "chat.postMessage",
        "chat.update",
        "chat.delete",
        # "There's nothing running to stop." (bot/slack/assistant.py)
        "chat.postEphemeral",
        # the bot's DM: greeting with suggested prompts, thread titles (bot/slack/assistant.py)
        "assistant.threads.setSuggestedPrompts",
        "assistant.threads.setTitle",
        # an answer's progress without a message edit (bot/slack/status.py)
        "assistant.threads.setStatus",
        # the thread's agent session: processing while an answer runs, Stop (bot/slack/sessions.py)
        "agents.sessions.setStatus",
        "chat.startStream",
        "chat.appendStream",
        "chat.stopStream",
        # an answer too long for its messages is attached in full (bot/slack/files.py)
        "files.getUploadURLExternal",
        "files.upload",
        "files.completeUploadExternal",
        # after an ambiguous post failure: did it land? (bot/slack/publisher.py)
        "conversations.replies",
        # App Home: each user's conversations, the admins' settings form (bot/slack/home.py);
        # admin rights, and who may ask by user group (bot/slack/access.py)
        "views.publish",
        "chat.getPermalink",
        "users.info",
        "usergroups.list",
        "usergroups.users.list",
    }
)

# The events a listener handles (`app.event(...)` in bot/slack/listeners.py and
# bot/slack/assistant.py), and the subscriptions that deliver each: `message` listens to DMs
# (answered) and to thread follow-ups in public and private channels; group DMs (mpim) are not
# served. `app_home_opened` (tab "messages") is how agent view (`features.agent_view`) says a
# user opened the bot's DM; the two `assistant_thread_*` events are the legacy assistant view's
# (`features.assistant_view`); `agent_session_stopped` is a click on Slack's Stop button.
SUBSCRIPTIONS: dict[str, tuple[str, ...]] = {
    "app_mention": ("app_mention",),
    "message": ("message.im", "message.channels", "message.groups"),
    "app_home_opened": ("app_home_opened",),
    "assistant_thread_started": ("assistant_thread_started",),
    "assistant_thread_context_changed": ("assistant_thread_context_changed",),
    "agent_session_stopped": ("agent_session_stopped",),
}

# Buttons (block actions): feedback and support under answers, Save in the App Home tab.
INTERACTIVITY = True


def bot_events() -> frozenset[str]:
    """The event subscriptions a manifest must list, and no more."""
    return frozenset(name for names in SUBSCRIPTIONS.values() for name in names)


def bot_scopes() -> frozenset[str]:
    """The bot scopes powabot needs: those of the methods it calls and the events it receives."""
    needed: set[str] = set()
    for method in METHODS:
        needed |= METHOD_SCOPES[method]
    for event in bot_events():
        needed |= EVENT_SCOPES[event]
    return frozenset(needed)
