"""Request/response helpers shared by the stand-in's handlers: JSON errors, bodies, pagination."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from aiohttp import web


class ApiError(Exception):
    """An error answer `{"error": message}` with an HTTP status; the middleware renders it."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra

    def response(self) -> web.Response:
        return web.json_response({"error": self.message, **self.extra}, status=self.status)


async def read_json(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 naming what is wrong with it."""
    raw = await request.read()
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object")
    return body


def text_field(body: dict[str, Any], key: str, *, required: bool = False, default: str = "") -> str:
    """A string field of a body; 400 when it is required and missing, or not a string."""
    value = body.get(key)
    if value is None:
        if required:
            raise ApiError(400, f"'{key}' is required")
        return default
    if not isinstance(value, str):
        raise ApiError(400, f"'{key}' must be a string")
    if required and not value.strip():
        raise ApiError(400, f"'{key}' must not be empty")
    return value


def dict_field(body: dict[str, Any], key: str) -> dict[str, Any]:
    value = body.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ApiError(400, f"'{key}' must be a JSON object")
    return value


def _int_param(request: web.Request, key: str, default: int) -> int:
    raw = request.query.get(key)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ApiError(400, f"query parameter '{key}' must be an integer") from exc
    if value < 0:
        raise ApiError(400, f"query parameter '{key}' must not be negative")
    return value


def page(
    request: web.Request, key: str, items: Sequence[dict[str, Any]], default_limit: int | None = 50
) -> dict[str, Any]:
    """List answer `{key: [...], "total", "limit", "offset"}`, filtered by `?q=` on the name.

    With ``default_limit=None`` the list is unpaginated unless the caller passes limit/offset.
    """
    query = request.query.get("q", "").lower()
    found = [item for item in items if query in str(item.get("name", "")).lower()]
    if default_limit is None and "limit" not in request.query and "offset" not in request.query:
        return {key: found, "total": len(found)}
    limit = _int_param(request, "limit", default_limit or 50)
    offset = _int_param(request, "offset", 0)
    return {
        key: found[offset : offset + limit],
        "total": len(found),
        "limit": limit,
        "offset": offset,
    }
