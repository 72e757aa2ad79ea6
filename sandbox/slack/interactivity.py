"""Pure builders for Slack's interaction payloads: a user's click as ``block_actions``.

Shapes follow Slack's block_actions reference: ``container`` says where the element was
(``message`` with ``message_ts``/``channel_id``/``is_ephemeral``, or ``view`` with ``view_id``),
``actions`` holds the one element clicked. An ephemeral message's click carries no ``message``
(Slack does not send it), a view's click carries the ``view`` with its ``state`` and no
``channel`` / ``response_url``.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sandbox.slack.events import VERIFICATION_TOKEN, Workspace

# Element types whose click carries `selected_option` (the option whose value was chosen).
_SINGLE_OPTION = frozenset({"static_select", "external_select", "radio_buttons", "overflow"})
_MULTI_OPTION = frozenset({"multi_static_select", "multi_external_select", "checkboxes"})
_SELECTED = {
    "users_select": "selected_user",
    "conversations_select": "selected_conversation",
    "channels_select": "selected_channel",
    "multi_users_select": "selected_users",
    "multi_conversations_select": "selected_conversations",
    "multi_channels_select": "selected_channels",
}


@dataclass(frozen=True)
class Found:
    """An interactive element in a message's or view's blocks, and the block holding it."""

    block_id: str
    element: dict[str, Any]


def generated_block_id(seed: str, index: int) -> str:
    """What Slack fills in for a block posted without ``block_id`` (stable for one message)."""
    digest = hashlib.sha1(f"{seed}:{index}".encode()).digest()
    return base64.b32encode(digest).decode()[:5]


def with_block_ids(blocks: list[Any] | None, seed: str) -> list[Any]:
    """A copy of ``blocks`` in which every block has a ``block_id``, as Slack stores them."""
    out = copy.deepcopy(blocks or [])
    for index, block in enumerate(out):
        if isinstance(block, dict) and not block.get("block_id"):
            block["block_id"] = generated_block_id(seed, index)
    return out


def _elements(block: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for element in block.get("elements") or []:
        if isinstance(element, dict):
            yield element
    for key in ("accessory", "element"):
        element = block.get(key)
        if isinstance(element, dict):
            yield element


def find_element(blocks: list[Any], action_id: str, block_id: str | None = None) -> Found | None:
    """The element with ``action_id`` (in the block ``block_id`` when given), looking into
    actions / context_actions elements, section accessories, input elements and the child
    blocks of a ``container`` block."""
    for block in blocks:
        if not isinstance(block, dict):
            continue
        children = block.get("child_blocks")
        if isinstance(children, list):
            found = find_element(children, action_id, block_id)
            if found is not None:
                return found
        this_block = str(block.get("block_id") or "")
        if block_id is not None and this_block != block_id:
            continue
        for element in _elements(block):
            if element.get("action_id") == action_id:
                return Found(this_block, element)
    return None


def _option(element: dict[str, Any], value: str) -> dict[str, Any]:
    options = list(element.get("options") or [])
    for group in element.get("option_groups") or []:
        options.extend(group.get("options") or [])
    for option in options:
        if isinstance(option, dict) and option.get("value") == value:
            return dict(option)
    raise ValueError(f"{element.get('type')} {element.get('action_id')!r} has no option {value!r}")


def action(
    *,
    action_id: str,
    block_id: str,
    action_type: str,
    value: str | list[str] | None,
    element: dict[str, Any] | None,
    action_ts: str,
) -> dict[str, Any]:
    """One entry of ``actions``: what Slack reports for a click on this element.

    ``feedback_buttons``: ``value`` is the chosen button's value (or ``"positive"`` /
    ``"negative"`` for that button), and the action carries that button's value and text.
    Buttons default to the element's own value; selects report ``selected_option(s)`` /
    ``selected_user`` / ...; ``plain_text_input`` the typed ``value``."""
    out: dict[str, Any] = {"action_id": action_id, "block_id": block_id, "type": action_type}
    el = element or {}
    if action_type == "feedback_buttons":
        out.update(_feedback_choice(el, value))
    elif action_type in ("button", "icon_button", "workflow_button"):
        chosen = el.get("value") if value is None else value
        if chosen is not None:
            out["value"] = chosen
        if "text" in el:
            out["text"] = el["text"]
        if "style" in el:
            out["style"] = el["style"]
    elif action_type in _SINGLE_OPTION:
        if not isinstance(value, str):
            raise ValueError(f"a {action_type} click needs value=<the option's value>")
        out["selected_option"] = _option(el, value) if el else {"value": value}
    elif action_type in _MULTI_OPTION:
        values = [value] if isinstance(value, str) else list(value or [])
        out["selected_options"] = [_option(el, v) if el else {"value": v} for v in values]
    elif action_type in _SELECTED:
        out[_SELECTED[action_type]] = value
    elif value is not None:
        out["value"] = value
    out["action_ts"] = action_ts
    return out


def _feedback_choice(element: dict[str, Any], value: str | list[str] | None) -> dict[str, Any]:
    if not isinstance(value, str):
        raise ValueError("a feedback_buttons click needs value= (the chosen button's value)")
    if not element:
        return {"value": value}
    for side in ("positive", "negative"):
        button = element.get(f"{side}_button") or {}
        if value in (side, button.get("value")):
            return {"value": button.get("value"), "text": button.get("text")}
    raise ValueError(f"feedback_buttons {element.get('action_id')!r} has no button {value!r}")


def trigger_id() -> str:
    """A trigger id shaped like Slack's (``<digits>.<digits>.<hex>``), valid once."""
    return f"{secrets.randbelow(10**13)}.{secrets.randbelow(10**13)}.{secrets.token_hex(16)}"


def block_actions_payload(
    *,
    ws: Workspace,
    user: dict[str, Any],
    container: dict[str, Any],
    actions: list[dict[str, Any]],
    channel: dict[str, str] | None = None,
    message: dict[str, Any] | None = None,
    view: dict[str, Any] | None = None,
    state: dict[str, Any] | None = None,
    response_url: str | None = None,
) -> dict[str, Any]:
    """The whole ``block_actions`` payload (what Bolt's ``body`` holds)."""
    payload: dict[str, Any] = {
        "type": "block_actions",
        "user": user,
        "api_app_id": ws.app_id,
        "token": VERIFICATION_TOKEN,
        "container": container,
        "trigger_id": trigger_id(),
        "team": {"id": ws.team_id, "domain": ws.domain},
        "enterprise": ws.enterprise,
        "is_enterprise_install": ws.is_enterprise_install,
    }
    if ws.enterprise_id is not None:
        payload["team"]["enterprise_id"] = ws.enterprise_id
        payload["team"]["enterprise_name"] = ws.enterprise_name or ws.enterprise_id
    if channel is not None:
        payload["channel"] = channel
    if message is not None:
        payload["message"] = message
    if view is not None:
        payload["view"] = view
    if state is not None:
        payload["state"] = state
    if response_url is not None:
        payload["response_url"] = response_url
    payload["actions"] = actions
    return payload
