"""The bot's App Home tab: everyone's recent conversations, and the admins' settings form.

`app_home_opened` with tab "home" publishes the user's Home view (`views.publish`, a write
through the publisher's `SlackCaller`): their five most recent conversations, each linked to its
thread (`chat.getPermalink`, cached; an `app_redirect` link to the channel when Slack cannot
say), and, for a workspace admin or owner or a user in POWABOT_ADMINS, the settings form
(`bot.render.home`) with any escalation problem the support loop reports.

A click on Save (`powabot_settings_save`) is acknowledged at once; the clicking user's admin
rights are then checked with Slack again (nothing in the payload is trusted: a non-admin's
click, however crafted, saves nothing and is logged). The form's values are validated; what is
wrong comes back in the republished view, next to the field concerned, with what was typed;
valid settings are saved and the view says who saved them.
"""

from __future__ import annotations

import collections
import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import structlog
from pydantic import ValidationError
from slack_bolt.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck

from bot.errors import SlackDeliveryError, StoreError
from bot.render.home import (
    ACTION_CHANNELS,
    ACTION_DMS,
    ACTION_ESCALATION,
    ACTION_GROUPS,
    ACTION_PROMPTS,
    ACTION_SAVE,
    BLOCK_CHANNELS,
    BLOCK_DMS,
    BLOCK_ERRORS,
    BLOCK_GROUPS,
    BLOCK_PROMPTS,
    DMS_ON,
    ESCALATION_BLOCK,
    AdminPanel,
    ConversationLink,
    SettingsForm,
    home_view,
)
from bot.slack.access import TIER4_BURST, TIER4_PER_SECOND, SlackDirectory
from bot.slack.budget import Budget, BudgetBook
from bot.slack.calls import RateLimited, SlackCaller, Transient
from bot.store import SessionStore
from bot.workspace_settings import (
    CHANNEL_ID,
    FormError,
    WorkspaceSettings,
    WorkspaceSettingsBook,
    parse_prompts,
    parse_usergroups,
)

log = structlog.get_logger(__name__)

RECENT = 5  # conversations listed
PERMALINKS_KEPT = 10_000
CALL_WAIT = 5.0  # seconds a Home view may wait for its budget
SAVE_FAILED = "Could not save just now (the bot's database did not answer). Please try again."
SETTINGS_INVALID = "These settings cannot be saved: {detail}"

Problems = Callable[[str], list[str] | Awaitable[list[str]]]


@dataclass(frozen=True)
class SaveClick:
    """A click on Save, read at the edge: who clicked where, and the form's values."""

    team_id: str
    user_id: str
    values: Mapping[str, Any]

    @classmethod
    def read(cls, body: Mapping[str, Any]) -> SaveClick | None:
        user, team, view = body.get("user"), body.get("team"), body.get("view")
        user_id = user.get("id") if isinstance(user, dict) else None
        team_id = team.get("id") if isinstance(team, dict) else None
        if not team_id and isinstance(user, dict):
            team_id = user.get("team_id")
        if not (isinstance(user_id, str) and user_id and isinstance(team_id, str) and team_id):
            return None
        state = view.get("state") if isinstance(view, dict) else None
        values = state.get("values") if isinstance(state, dict) else None
        return cls(team_id, user_id, values if isinstance(values, dict) else {})


def _element(values: Mapping[str, Any], block_id: str, action_id: str) -> Mapping[str, Any] | None:
    block = values.get(block_id)
    element = block.get(action_id) if isinstance(block, dict) else None
    return element if isinstance(element, dict) else None


def _strings(value: object) -> tuple[str, ...]:
    return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else ()


def _text_value(element: Mapping[str, Any]) -> str:
    value = element.get("value")
    return value if isinstance(value, str) else ""  # Slack sends null for an empty input


def read_form(
    values: Mapping[str, Any], specialists: tuple[str, ...], current: SettingsForm
) -> SettingsForm:
    """The form as submitted (`view.state.values`); a field missing from it keeps `current`.
    Only the known specialists' escalation fields are read."""
    dms, channels = current.dms_enabled, current.mention_channels
    groups, prompts = current.usergroups, current.prompts
    if (e := _element(values, BLOCK_DMS, ACTION_DMS)) is not None:
        selected = e.get("selected_options")
        dms = isinstance(selected, list) and any(
            isinstance(o, dict) and o.get("value") == DMS_ON for o in selected
        )
    if (e := _element(values, BLOCK_CHANNELS, ACTION_CHANNELS)) is not None:
        channels = _strings(e.get("selected_conversations"))
    if (e := _element(values, BLOCK_GROUPS, ACTION_GROUPS)) is not None:
        groups = _text_value(e)
    if (e := _element(values, BLOCK_PROMPTS, ACTION_PROMPTS)) is not None:
        prompts = _text_value(e)
    escalation = dict(current.escalation_channels)
    for specialist in specialists:
        e = _element(values, ESCALATION_BLOCK + specialist, ACTION_ESCALATION)
        if e is not None:
            chosen = _strings(e.get("selected_conversations"))
            if chosen:
                escalation[specialist] = chosen[0]
            else:
                escalation.pop(specialist, None)
    return SettingsForm(
        dms_enabled=dms,
        mention_channels=channels,
        usergroups=groups,
        escalation_channels=escalation,
        prompts=prompts,
    )


def _not_channels(channels: tuple[str, ...] | list[str]) -> str | None:
    bad = [c for c in channels if not CHANNEL_ID.fullmatch(c)]
    return f"Pick channels only ({', '.join(bad)} is not one)." if bad else None


class Home:
    """Builds and publishes Home views; validates and saves the admins' settings."""

    def __init__(
        self,
        *,
        store: SessionStore,
        settings: WorkspaceSettingsBook,
        directory: SlackDirectory,
        caller: SlackCaller,
        budgets: BudgetBook,
        specialists: tuple[str, ...],
        default_escalation: str | None = None,
        problems: Problems | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.directory = directory
        self.caller = caller
        self.budgets = budgets
        self.specialists = specialists
        self.default_escalation = default_escalation
        self.problems = problems
        self._permalinks: collections.OrderedDict[tuple[str, str], str] = collections.OrderedDict()
        self.handled = 0  # Home events and Save clicks handled to the end (tests wait on it)

    def _bucket(self, kind: str, team_id: str) -> Budget:
        return self.budgets.bucket(f"{kind}:{team_id}", TIER4_PER_SECOND, TIER4_BURST)

    # --- what the view shows ------------------------------------------------------------------

    async def conversations(self, team_id: str, user_id: str) -> list[ConversationLink]:
        try:
            sessions = await self.store.recent_sessions(team_id, user_id, RECENT)
        except StoreError as exc:
            log.error("home_conversations_unreadable", team=team_id, error=str(exc))
            return []
        return [
            ConversationLink(
                title=s.title,
                url=await self.permalink(team_id, s.key.channel_id, s.key.thread_ts),
                updated_at=s.updated_at,
            )
            for s in sessions
        ]

    async def permalink(self, team_id: str, channel_id: str, thread_ts: str) -> str:
        """The thread's permalink (cached: they never change), else a link to its channel."""
        key = (channel_id, thread_ts)
        if key in self._permalinks:
            return self._permalinks[key]
        bucket = self._bucket("permalink", team_id)
        try:
            if await self.caller.acquire(bucket, max_wait=CALL_WAIT):
                data = await self.caller.read(
                    "chat.getPermalink", bucket, channel=channel_id, message_ts=thread_ts
                )
                url = data.get("permalink")
                if isinstance(url, str) and url.startswith("https://"):
                    self._permalinks[key] = url
                    while len(self._permalinks) > PERMALINKS_KEPT:
                        self._permalinks.popitem(last=False)
                    return url
        except (RateLimited, Transient, SlackDeliveryError) as exc:
            error = exc.error if isinstance(exc, SlackDeliveryError) else type(exc).__name__
            log.info("permalink_unavailable", channel=channel_id, error=error)
        query = urlencode({"team": team_id, "channel": channel_id})
        return f"https://slack.com/app_redirect?{query}"

    async def _problems(self, team_id: str) -> tuple[str, ...]:
        if self.problems is None:
            return ()
        try:
            found = self.problems(team_id)
            if inspect.isawaitable(found):
                found = await found
            return tuple(str(p) for p in found)
        except Exception:  # the Home view must show whatever the support loop does
            log.exception("home_problems_failed", team=team_id)
            return ()

    async def panel(
        self,
        team_id: str,
        *,
        form: SettingsForm | None = None,
        errors: Mapping[str, str] | None = None,
        saved_by: str | None = None,
    ) -> AdminPanel:
        current = await self.settings.get(team_id)
        return AdminPanel(
            form=form or SettingsForm.of(current),
            specialists=self.specialists,
            errors=dict(errors or {}),
            saved_by=saved_by,
            problems=await self._problems(team_id),
            default_escalation=self.default_escalation,
            allowed_usergroups=tuple(current.allowed_usergroups or ()),
        )

    async def view(
        self, team_id: str, user_id: str, *, admin: AdminPanel | None = None
    ) -> dict[str, Any]:
        return home_view(await self.conversations(team_id, user_id), admin)

    async def publish(
        self, team_id: str, user_id: str, view: dict[str, Any], *, reliably: bool = False
    ) -> bool:
        """views.publish: tried once (an open), or until Slack takes it (after a Save)."""
        bucket = self._bucket("views", team_id)
        try:
            if reliably:
                await self.caller.call_reliably("views.publish", bucket, user_id=user_id, view=view)
                return True
            if not await self.caller.acquire(bucket, max_wait=CALL_WAIT):
                log.info("home_publish_skipped", reason="budget")
                return False
            await self.caller.call("views.publish", bucket, user_id=user_id, view=view)
        except (RateLimited, Transient, SlackDeliveryError) as exc:
            error = exc.error if isinstance(exc, SlackDeliveryError) else type(exc).__name__
            log.warning("home_publish_failed", team=team_id, user=user_id, error=error)
            return False
        return True

    # --- events ------------------------------------------------------------------------------

    async def opened(self, team_id: str, user_id: str) -> None:
        """The user opened the Home tab: their conversations, and the form for an admin."""
        admin = (
            await self.panel(team_id) if await self.directory.is_admin(team_id, user_id) else None
        )
        await self.publish(team_id, user_id, await self.view(team_id, user_id, admin=admin))

    async def save(self, click: SaveClick) -> bool:
        """Check the clicking user is an admin, validate the form, save; True when saved."""
        team_id, user_id = click.team_id, click.user_id
        if not await self.directory.is_admin(team_id, user_id):
            log.warning("settings_save_refused", team=team_id, user=user_id, reason="not_admin")
            return False
        self.settings.forget(team_id)  # validate against what is stored now
        current = SettingsForm.of(await self.settings.get(team_id))
        form = read_form(click.values, self.specialists, current)
        settings, errors = await self.validate(team_id, form)
        if settings is not None:
            try:
                await self.settings.save(team_id, settings, updated_by=user_id)
            except StoreError as exc:
                log.error("settings_save_failed", team=team_id, error=str(exc))
                errors = {BLOCK_ERRORS: SAVE_FAILED}
        if errors:
            log.info("settings_form_rejected", team=team_id, user=user_id, fields=sorted(errors))
            panel = await self.panel(team_id, form=form, errors=errors)
        else:
            panel = await self.panel(team_id, saved_by=user_id)
        view = await self.view(team_id, user_id, admin=panel)
        await self.publish(team_id, user_id, view, reliably=True)
        return not errors

    async def validate(
        self, team_id: str, form: SettingsForm
    ) -> tuple[WorkspaceSettings | None, dict[str, str]]:
        """The settings a form holds, or what is wrong with it by block id."""
        errors: dict[str, str] = {}
        prompts = []
        try:
            prompts = parse_prompts(form.prompts)
        except FormError as exc:
            errors[BLOCK_PROMPTS] = str(exc)
        groups: list[str] = []
        try:
            ids, handles = parse_usergroups(form.usergroups)
            groups = await self.directory.check_groups(team_id, ids, handles)
        except FormError as exc:
            errors[BLOCK_GROUPS] = str(exc)
        if message := _not_channels(form.mention_channels):
            errors[BLOCK_CHANNELS] = message
        for specialist, channel in form.escalation_channels.items():
            if specialist in self.specialists and (message := _not_channels([channel])):
                errors[ESCALATION_BLOCK + specialist] = message
        if errors:
            return None, errors
        try:
            settings = WorkspaceSettings(
                dms_enabled=form.dms_enabled,
                mention_channels=list(form.mention_channels),
                allowed_usergroups=groups,
                escalation_channels={
                    s: c for s, c in form.escalation_channels.items() if s in self.specialists
                },
                suggested_prompts=prompts,
            )
        except ValidationError as exc:
            detail = "; ".join(str(e["msg"]) for e in exc.errors())
            return None, {BLOCK_ERRORS: SETTINGS_INVALID.format(detail=detail)}
        return settings, {}


async def _home_tab(event: dict[str, Any]) -> bool:
    """Bolt matcher: the Home tab (tab "messages" is the DM: `bot.slack.assistant`'s)."""
    return event.get("tab") == "home"


def register_home(app: AsyncApp, home: Home) -> None:
    """Wire the Home tab and the Save button into `app`. Register it before
    `bot.slack.assistant.register`, whose `app_home_opened` listener takes every tab."""

    @app.event("app_home_opened", matchers=[_home_tab])
    async def on_home_opened(body: dict[str, Any], event: dict[str, Any]) -> None:
        try:
            user, team = event.get("user"), body.get("team_id")
            if isinstance(user, str) and user and isinstance(team, str) and team:
                await home.opened(team, user)
        finally:
            home.handled += 1

    @app.action(ACTION_SAVE)
    async def on_save(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        try:
            click = SaveClick.read(body)
            if click is None:
                log.warning("settings_save_unreadable")
                return
            await home.save(click)
        finally:
            home.handled += 1
