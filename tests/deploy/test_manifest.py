"""The Slack app manifests in deploy/ against the code: every event a listener handles is
subscribed, every Web API method the code calls is covered by a granted scope, and nothing is
granted that no code needs.

What the code uses is read from its source (no Slack needed): listener registrations
(`app.event("...")`, `app.action(...)`, ...) and Web API calls (a string naming a Slack method, as
`caller.call("chat.update", ...)` passes it, or an `AsyncWebClient` method such as
`client.auth_test`). The set of Slack method names comes from slack_sdk's own client.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
import slack_sdk.web.async_client
import yaml

from bot.slack import scopes

REPO = Path(__file__).resolve().parents[2]
BOT = REPO / "bot"
DECLARATION = BOT / "slack" / "scopes.py"  # names every method on purpose: not a call site
SOCKET = REPO / "deploy" / "slack-app-manifest.yaml"
HTTP = REPO / "deploy" / "slack-app-manifest.http.yaml"
MANIFESTS = pytest.mark.parametrize("path", [SOCKET, HTTP], ids=["socket-mode", "http-mode"])

# Bolt listener kinds that need interactivity (payloads posted to the interactivity URL).
INTERACTIVE_KINDS = frozenset(
    {
        "action",
        "block_action",
        "attachment_action",
        "dialog_submission",
        "dialog_cancellation",
        "dialog_suggestion",
        "options",
        "block_suggestion",
        "shortcut",
        "global_shortcut",
        "message_shortcut",
        "view",
        "view_submission",
        "view_closed",
    }
)


def _sdk_methods() -> dict[str, str]:
    """slack_sdk's AsyncWebClient: Python method → Web API method (`auth_test` → `auth.test`)."""
    tree = ast.parse(Path(slack_sdk.web.async_client.__file__).read_text(encoding="utf-8"))
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.AsyncFunctionDef):
            continue
        for call in ast.walk(node):
            if (
                isinstance(call, ast.Call)
                and isinstance(call.func, ast.Attribute)
                and call.func.attr == "api_call"
                and call.args
                and isinstance(call.args[0], ast.Constant)
                and isinstance(call.args[0].value, str)
            ):
                names[node.name] = call.args[0].value
                break
    return names


SDK = _sdk_methods()
WEB_API = frozenset(SDK.values())


def methods_called(source: str) -> set[str]:
    """The Web API methods a module calls: string literals naming one, and client methods."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and node.value in WEB_API:
            found.add(str(node.value))
        elif isinstance(node, ast.Attribute) and node.attr in SDK:
            found.add(SDK[node.attr])
    return found


def listeners(source: str) -> list[tuple[str, Any]]:
    """`(kind, first argument)` of each Bolt listener registered in a module."""
    found: list[tuple[str, Any]] = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        kind, receiver = node.func.attr, node.func.value
        on_app = isinstance(receiver, ast.Name) and receiver.id == "app"
        if kind == "event" and node.args:
            argument = node.args[0]
            if isinstance(argument, ast.Dict):  # app.event({"type": "message", ...})
                keys = [k.value for k in argument.keys if isinstance(k, ast.Constant)]
                argument = argument.values[keys.index("type")]
            if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                found.append(("event", argument.value))
        elif on_app and kind == "message":
            found.append(("event", "message"))
        elif on_app and (kind in INTERACTIVE_KINDS or kind == "command"):
            found.append((kind, None))
    return found


def _code() -> dict[Path, str]:
    return {
        path: path.read_text(encoding="utf-8")
        for path in sorted(BOT.rglob("*.py"))
        if path != DECLARATION
    }


def _manifest(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path.name} is not a YAML mapping"
    return data


@MANIFESTS
def test_manifest_has_the_sections_slack_requires(path: Path) -> None:
    """Each manifest parses and has the app's name, a bot user, bot scopes, events and mode."""
    m = _manifest(path)
    assert m["display_information"]["name"]
    assert len(m["display_information"]["description"]) <= 140  # Slack's limits
    assert 175 <= len(m["display_information"].get("long_description", "x" * 175)) <= 4000
    assert m["features"]["bot_user"]["display_name"]
    assert m["oauth_config"]["scopes"]["bot"]
    assert m["settings"]["event_subscriptions"]["bot_events"]
    assert isinstance(m["settings"]["socket_mode_enabled"], bool)
    assert "user" not in m["oauth_config"]["scopes"]  # powabot acts as its bot only


@MANIFESTS
def test_manifest_opens_the_bots_dm_as_an_agent(path: Path) -> None:
    """Agent view is on (Slack's default since mid-2026) with the DM's Messages tab writable, and
    the legacy assistant view is not declared beside it (Slack switches an app from one to the
    other)."""
    features = _manifest(path)["features"]
    description = features["agent_view"]["agent_description"]
    assert isinstance(description, str) and 0 < len(description.strip()) <= 140
    assert "assistant_view" not in features
    home = features["app_home"]
    assert home["messages_tab_enabled"] is True
    assert home["messages_tab_read_only_enabled"] is False


def test_socket_mode_manifest_needs_no_public_url() -> None:
    """The Socket Mode manifest enables Socket Mode and points Slack at no URL."""
    settings = _manifest(SOCKET)["settings"]
    assert settings["socket_mode_enabled"] is True
    assert "request_url" not in settings["event_subscriptions"]
    assert "request_url" not in settings.get("interactivity", {})


def test_http_mode_manifest_sends_events_to_the_bots_endpoint() -> None:
    """The HTTP-mode manifest has Socket Mode off and Slack posting to https://…/slack/events."""
    settings = _manifest(HTTP)["settings"]
    assert settings["socket_mode_enabled"] is False
    url = settings["event_subscriptions"]["request_url"]
    assert url.startswith("https://") and url.endswith("/slack/events")
    interactivity = settings.get("interactivity", {})
    if interactivity.get("is_enabled"):
        assert interactivity["request_url"] == url  # Bolt serves both on one path


def test_the_two_manifests_differ_only_in_how_slack_reaches_the_bot() -> None:
    """Apart from Socket Mode and the request URLs, both manifests ask for the same app."""

    def essentials(path: Path) -> dict[str, Any]:
        m = _manifest(path)
        m["settings"].pop("socket_mode_enabled")
        m["settings"]["event_subscriptions"].pop("request_url", None)
        m["settings"].get("interactivity", {}).pop("request_url", None)
        return m

    assert essentials(SOCKET) == essentials(HTTP)


def test_every_event_a_listener_handles_is_declared_and_nothing_more() -> None:
    """The events bot/ registers listeners for are exactly those bot/slack/scopes.py declares."""
    handled = {
        arg for source in _code().values() for kind, arg in listeners(source) if kind == "event"
    }
    # the scan sees the listeners of listeners.py and assistant.py
    assert {"app_mention", "message", "app_home_opened", "agent_session_stopped"} <= handled
    assert handled == set(scopes.SUBSCRIPTIONS)
    for event, subscriptions in scopes.SUBSCRIPTIONS.items():
        assert all(s == event or s.startswith(f"{event}.") for s in subscriptions), event


def test_interactivity_is_on_exactly_when_a_listener_needs_it() -> None:
    """Interactivity is declared (and enabled in both manifests) iff bot/ handles such payloads."""
    kinds = {kind for source in _code().values() for kind, _ in listeners(source)}
    assert bool(kinds & INTERACTIVE_KINDS) is scopes.INTERACTIVITY
    assert "command" not in kinds, "slash commands need `features.slash_commands` in both"
    for path in (SOCKET, HTTP):
        enabled = _manifest(path)["settings"].get("interactivity", {}).get("is_enabled", False)
        assert enabled is scopes.INTERACTIVITY, path.name


def test_every_web_api_method_the_code_calls_is_declared_and_nothing_more() -> None:
    """The Slack methods bot/ calls are exactly those declared, each with its scopes known."""
    called = {
        method: sorted(
            str(p.relative_to(REPO)) for p, s in _code().items() if method in methods_called(s)
        )
        for method in set().union(*(methods_called(s) for s in _code().values()))
    }
    assert {"auth.test", "chat.postMessage", "chat.update"} <= set(called)
    unknown = {m: where for m, where in called.items() if m not in scopes.METHOD_SCOPES}
    assert not unknown, f"add these methods and their scopes to METHOD_SCOPES: {unknown}"
    undeclared = {m: where for m, where in called.items() if m not in scopes.METHODS}
    assert not undeclared, f"called but not in scopes.METHODS: {undeclared}"
    assert set(scopes.METHODS) <= set(called), "declared in scopes.METHODS but never called"
    assert set(scopes.METHOD_SCOPES) <= WEB_API  # no typo in the table


@MANIFESTS
def test_manifest_subscribes_to_exactly_the_events_the_listeners_need(path: Path) -> None:
    """Every event a listener handles is delivered, and no other event is subscribed."""
    events = _manifest(path)["settings"]["event_subscriptions"]["bot_events"]
    assert len(events) == len(set(events))
    assert set(events) == scopes.bot_events()


@MANIFESTS
def test_manifest_grants_exactly_the_scopes_the_code_needs(path: Path) -> None:
    """Each method called and event received is covered by a granted scope; no scope is spare."""
    granted = _manifest(path)["oauth_config"]["scopes"]["bot"]
    assert len(granted) == len(set(granted))
    for method in scopes.METHODS:
        assert scopes.METHOD_SCOPES[method] <= set(granted), method
    for event in scopes.bot_events():
        assert scopes.EVENT_SCOPES[event] <= set(granted), event
    assert set(granted) == scopes.bot_scopes()


def test_the_scan_finds_calls_and_listeners_in_any_form() -> None:
    """A new call (by name or client method) or a new listener is seen, so the checks can fail."""
    source = (
        "async def f(app, client, caller):\n"
        "    await client.users_info(user='U1')\n"
        "    await caller.call('reactions.add', bucket, name='eyes')\n"
        "    await client.api_call('conversations.replies', params={})\n"
        "    app.action('feedback')(handler)\n"
        "    app.event({'type': 'reaction_added'})(handler)\n"
        "    log.info('chat.update is slow')\n"
    )
    assert methods_called(source) == {"users.info", "reactions.add", "conversations.replies"}
    assert sorted(listeners(source)) == [("action", None), ("event", "reaction_added")]
