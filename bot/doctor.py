"""`powabot doctor`: checks, against the real services, that a deployment can work.

Every check has a name, a status (ok, failed, skipped) and a one-line detail; a failed one also
says, in one line, what to change. The checks:

- Slack: the bot token (`auth.test`), its granted scopes (the `x-oauth-scopes` header of that
  answer) against what powabot needs (`bot.slack.scopes.bot_scopes()`, exactly what the
  manifests in `deploy/` grant), the app token (`apps.connections.open`) in Socket Mode, the
  signing secret in HTTP mode;
- Powabase: reachable, the API key accepted, the orchestration found and holding entities;
- the store: reachable, migrated, and the shared Slack budget table (`public.slack_budget`)
  when the store is Postgres (direct or Supabase).

The three groups run concurrently and each network step is bounded by `step_seconds` (a dead host
cannot hang doctor); a failing check never stops the others. Secrets are never printed: every
detail is scrubbed of the configured secret values before it leaves this module.

Exit codes: 0 when every check passed or did not apply, 1 when any failed, 2 when the settings
themselves cannot be read (as for every command).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal
from urllib.parse import quote

import httpx
from slack_sdk.web.async_client import AsyncWebClient

from bot.errors import ConfigError, StoreError
from bot.logs import MIN_SECRET_LENGTH, REDACTED, secret_values
from bot.powabase.client import make_http_client
from bot.settings import Settings
from bot.slack.calls import RateLimited, translate
from bot.slack.scopes import bot_scopes
from bot.store import SessionStore, make_store
from bot.store.postgres import PostgresStore
from bot.store.supabase import SupabaseStore

OK = 0
FAILED = 1
CONFIG = 2

CHECK_TIMEOUT = 5.0  # seconds one network step may take before its check fails
# The shared Slack budget of several replicas (issue 11; created by sql/008_slack_budget.sql).
BUDGET_TABLE = "slack_budget"

Status = Literal["ok", "failed", "skipped"]
MARKS: dict[Status, str] = {"ok": "✓", "failed": "✗", "skipped": "–"}

BOT_TOKEN_FIX = (
    "set SLACK_BOT_TOKEN to the app's Bot User OAuth Token (xoxb-…) from OAuth & Permissions"
    " (reinstall the app if it was revoked)"
)
APP_TOKEN_FIX = (
    "set SLACK_APP_TOKEN to an app-level token (xapp-…) with connections:write"
    " (Basic Information → App-Level Tokens), or unset it to run in HTTP mode"
)
API_KEY_FIX = (
    "set POWABASE_API_KEY to the Powabase project's service-role key (the key `powabot provision`"
    " used)"
)
ORCHESTRATION_FIX = (
    "set POWABASE_ORCHESTRATION_ID to the id `powabot provision` prints (run it if the support"
    " team does not exist yet)"
)


@dataclass(frozen=True)
class Check:
    """One verdict: `name` is stable (JSON), `label` is what a person reads."""

    name: str
    label: str
    status: Status
    detail: str
    fix: str | None = None

    def line(self) -> str:
        fix = f" — {self.fix}" if self.fix else ""
        return f"{MARKS[self.status]} {self.label}: {self.detail}{fix}"


def _ok(name: str, label: str, detail: str) -> Check:
    return Check(name, label, "ok", detail)


def _failed(name: str, label: str, detail: str, fix: str) -> Check:
    return Check(name, label, "failed", detail, fix)


def _skipped(name: str, label: str, detail: str) -> Check:
    return Check(name, label, "skipped", detail)


@dataclass(frozen=True)
class DoctorReport:
    """Every check, in a fixed order, with the exit code and the two renderings."""

    mode: Literal["socket", "http"]
    checks: list[Check]

    @property
    def exit_code(self) -> int:
        return FAILED if any(c.status == "failed" for c in self.checks) else OK

    def check(self, name: str) -> Check:
        return next(c for c in self.checks if c.name == name)

    def lines(self) -> list[str]:
        """One line per check, then a summary line."""
        failed = sum(c.status == "failed" for c in self.checks)
        skipped = sum(c.status == "skipped" for c in self.checks)
        passed = len(self.checks) - failed - skipped
        summary = f"{passed} passed, {failed} failed, {skipped} not applicable or not run"
        verdict = "doctor found problems" if failed else "all good"
        return [*(c.line() for c in self.checks), f"{verdict}: {summary}"]

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.exit_code == OK,
            "exit_code": self.exit_code,
            "mode": self.mode,
            "checks": [asdict(c) for c in self.checks],
        }


def _scrubbed(checks: list[Check], settings: Settings) -> list[Check]:
    """The checks with every configured secret (as written or percent-encoded) replaced in
    their details; the fixes are this module's own words. Values shorter than the logs'
    MIN_SECRET_LENGTH are left alone, as in the logs (blanking "test" would blank words)."""
    values = [s for s in secret_values(settings) if len(s) >= MIN_SECRET_LENGTH]
    forms = {form for value in values for form in (value, quote(value, safe=""))}
    secrets = sorted(forms, key=len, reverse=True)

    def scrub(text: str) -> str:
        for secret in secrets:
            text = text.replace(secret, REDACTED)
        return text

    return [Check(c.name, c.label, c.status, scrub(c.detail), c.fix) for c in checks]


def _excerpt(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text[:limit] + ("…" if len(text) > limit else "")


def _failure_text(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer within the time limit"
    return f"{type(exc).__name__}: {_excerpt(str(exc))}" if str(exc) else type(exc).__name__


# --- Slack -----------------------------------------------------------------------------------


def _header(headers: object, name: str) -> str | None:
    if not isinstance(headers, Mapping):
        return None
    for key, value in headers.items():
        if str(key).lower() == name:
            return str(value)
    return None


def _slack_client(settings: Settings, token: str) -> AsyncWebClient:
    """A Slack client like the bot's (no proxy from the environment), one attempt per call."""
    client = AsyncWebClient(token=token, base_url=settings.SLACK_API_URL, retry_handlers=[])
    client.proxy = None
    return client


def _slack_failure(method: str, exc: Exception, api_url: str) -> tuple[str, str | None]:
    """(detail, a fix when the token itself is at fault, else None) for a failed Slack call."""
    failure = translate(method, exc)
    if isinstance(failure, RateLimited):
        return f"Slack rate-limited {method} (retry after {failure.retry_after:g} s)", None
    error = getattr(failure, "error", None)
    if error is not None:
        return f"Slack says {error}", error
    return f"Slack at {api_url} did not answer {method} properly: {failure}", None


def _network_fix(api_url: str) -> str:
    return f"check that this host reaches Slack at {api_url} (network, proxy, SLACK_API_URL)"


async def _check_bot_token(settings: Settings, step_seconds: float) -> tuple[Check, Check]:
    """The bot token check and the scopes check (which reads the same answer)."""
    name, label = "slack_bot_token", "bot token"
    manifest = (
        "deploy/slack-app-manifest.yaml"
        if settings.socket_mode
        else "deploy/slack-app-manifest.http.yaml"
    )
    if settings.SLACK_BOT_TOKEN is None and settings.oauth:
        return (  # each workspace installs the app: its token is in the installation store
            _ok(name, label, "OAuth install: each workspace's token comes from its install"),
            _skipped("slack_scopes", "scopes", "not checked: tokens per workspace (OAuth)"),
        )
    if settings.SLACK_BOT_TOKEN is None:
        return (
            _failed(name, label, "SLACK_BOT_TOKEN is not set", BOT_TOKEN_FIX),
            _skipped("slack_scopes", "scopes", "not checked: no bot token"),
        )
    client = _slack_client(settings, settings.SLACK_BOT_TOKEN.get_secret_value())
    try:
        async with asyncio.timeout(step_seconds):
            response = await client.auth_test()
    except Exception as exc:  # every failure is this check's verdict, not doctor's crash
        if isinstance(exc, TimeoutError):
            detail, code = f"Slack at {settings.SLACK_API_URL} did not answer auth.test", None
        else:
            detail, code = _slack_failure("auth.test", exc, settings.SLACK_API_URL)
        fix = BOT_TOKEN_FIX if code else _network_fix(settings.SLACK_API_URL)
        return (
            _failed(name, label, detail, fix),
            _skipped("slack_scopes", "scopes", "not checked: the bot token failed"),
        )
    data = response.data if isinstance(response.data, dict) else {}
    if not data.get("bot_id"):
        detail = f"a token of user {data.get('user', '?')}, not a bot token"
        return (
            _failed(name, label, detail, BOT_TOKEN_FIX),
            _skipped("slack_scopes", "scopes", "not checked: not a bot token"),
        )
    who = (
        f"{data.get('user', '?')} ({data.get('user_id', '?')}) in"
        f" {data.get('team', '?')} ({data.get('team_id', '?')})"
    )
    return _ok(name, label, who), _scopes_check(
        _header(response.headers, "x-oauth-scopes"), manifest
    )


def _scopes_check(header: str | None, manifest: str) -> Check:
    """The granted scopes against what powabot needs: a missing one fails, extra ones are noted."""
    name, label = "slack_scopes", "scopes"
    if header is None:
        return _skipped(name, label, "Slack's auth.test answer named no scopes (x-oauth-scopes)")
    granted = {s.strip() for s in header.split(",") if s.strip()}
    needed = bot_scopes()
    missing = sorted(needed - granted)
    if missing:
        return _failed(
            name,
            label,
            f"missing {', '.join(missing)}",
            f"add {'it' if len(missing) == 1 else 'them'} under OAuth & Permissions → Bot Token"
            f" Scopes and reinstall the app (or recreate it from {manifest})",
        )
    detail = f"all {len(needed)} granted ({', '.join(sorted(needed))})"
    extra = sorted(granted - needed)
    if extra:
        detail += f"; also granted, not needed: {', '.join(extra)}"
    return _ok(name, label, detail)


async def _check_app_token(settings: Settings, step_seconds: float) -> Check:
    name, label = "slack_app_token", "app token"
    if settings.SLACK_APP_TOKEN is None:
        return _skipped(name, label, "not used in HTTP mode (SLACK_APP_TOKEN not set)")
    # apps.connections.open with the app-level token; the bot token's client is not needed.
    client = _slack_client(settings, "")
    try:
        async with asyncio.timeout(step_seconds):
            response = await client.apps_connections_open(
                app_token=settings.SLACK_APP_TOKEN.get_secret_value()
            )
    except Exception as exc:  # every failure is this check's verdict, not doctor's crash
        if isinstance(exc, TimeoutError):
            detail = f"Slack at {settings.SLACK_API_URL} did not answer apps.connections.open"
            return _failed(name, label, detail, _network_fix(settings.SLACK_API_URL))
        detail, code = _slack_failure("apps.connections.open", exc, settings.SLACK_API_URL)
        return _failed(
            name, label, detail, APP_TOKEN_FIX if code else _network_fix(settings.SLACK_API_URL)
        )
    data = response.data if isinstance(response.data, dict) else {}
    if not data.get("url"):
        return _failed(
            name,
            label,
            "Slack's apps.connections.open answered without a URL",
            _network_fix(settings.SLACK_API_URL),
        )
    return _ok(name, label, "Socket Mode: Slack hands out connections for this app")


def _check_signing_secret(settings: Settings) -> Check:
    name, label = "slack_signing_secret", "signing secret"
    if settings.socket_mode:
        return _skipped(name, label, "not used in Socket Mode")
    if settings.SLACK_SIGNING_SECRET is None:
        return _failed(
            name,
            label,
            "HTTP mode (SLACK_APP_TOKEN not set) needs SLACK_SIGNING_SECRET, which is not set",
            "set SLACK_SIGNING_SECRET to the app's Signing Secret (Basic Information → App"
            " Credentials), or set SLACK_APP_TOKEN to run in Socket Mode",
        )
    return _ok(name, label, "set (HTTP mode: requests to /slack/events are verified with it)")


async def check_slack(settings: Settings, *, step_seconds: float = CHECK_TIMEOUT) -> list[Check]:
    """Bot token, scopes, app token (Socket Mode), signing secret (HTTP mode)."""
    (bot, scopes), app = await asyncio.gather(
        _check_bot_token(settings, step_seconds), _check_app_token(settings, step_seconds)
    )
    return [bot, scopes, app, _check_signing_secret(settings)]


# --- Powabase --------------------------------------------------------------------------------


def _body_text(response: httpx.Response) -> str:
    """What an error answer says: Powabase's `error` / the gateway's `message`, else the text."""
    try:
        body = response.json()
    except ValueError:
        return _excerpt(response.text) or "(empty body)"
    if isinstance(body, dict):
        for key in ("error", "message"):
            if isinstance(body.get(key), str):
                return _excerpt(body[key])
    return _excerpt(response.text)


async def check_powabase(settings: Settings, *, step_seconds: float = CHECK_TIMEOUT) -> list[Check]:
    """Powabase reachable, the API key accepted, the orchestration found with its entities."""
    reach = ("powabase_reachable", "Powabase")
    key = ("powabase_api_key", "API key")
    orch = ("powabase_orchestration", "orchestration")
    orch_id = settings.POWABASE_ORCHESTRATION_ID
    key_unset = (
        _failed(*key, "POWABASE_API_KEY is not set", API_KEY_FIX)
        if settings.POWABASE_API_KEY is None
        else None
    )
    orch_unset = (
        _failed(*orch, "POWABASE_ORCHESTRATION_ID is not set", ORCHESTRATION_FIX)
        if not orch_id
        else None
    )

    def rest(key_check: Check, orch_check: Check) -> list[Check]:
        return [key_unset or key_check, orch_unset or orch_check]

    if not settings.POWABASE_URL:
        return [
            _failed(
                *reach,
                "POWABASE_URL is not set",
                "set POWABASE_URL to the Powabase project URL",
            ),
            *rest(
                _skipped(*key, "not checked: no Powabase URL"),
                _skipped(*orch, "not checked: no Powabase URL"),
            ),
        ]
    base = settings.powabase_url
    api_key = settings.POWABASE_API_KEY.get_secret_value() if settings.POWABASE_API_KEY else ""
    path = f"/api/orchestrations/{quote(orch_id, safe='')}" if orch_id else "/api/orchestrations"
    async with make_http_client(base, api_key, idle_timeout=step_seconds) as http:
        try:
            async with asyncio.timeout(step_seconds):
                response = await http.get(path, params=None if orch_id else {"limit": 1})
        except (httpx.HTTPError, TimeoutError) as exc:
            return [
                _failed(
                    *reach,
                    f"cannot reach {base}: {_failure_text(exc)}",
                    "check POWABASE_URL and that this host reaches it (network, proxy, TLS)",
                ),
                *rest(
                    _skipped(*key, "not checked: Powabase unreachable"),
                    _skipped(*orch, "not checked: Powabase unreachable"),
                ),
            ]
        status = response.status_code
        said = _body_text(response)
        if status in (401, 403):
            return [
                _ok(*reach, f"answering at {base}"),
                *rest(
                    _failed(*key, f"Powabase refused it (HTTP {status}: {said})", API_KEY_FIX),
                    _skipped(*orch, "not checked: the API key was refused"),
                ),
            ]
        if status == 404 and orch_id:
            return [
                _ok(*reach, f"answering at {base}"),
                _ok(*key, "accepted"),
                _failed(*orch, f"{orch_id} not found (HTTP 404: {said})", ORCHESTRATION_FIX),
            ]
        if status >= 300 or not _is_json_object(response):
            what = (
                f"HTTP {status}: {said}"
                if status >= 300
                else f"an answer that is not the Powabase API ({_content_type(response)})"
            )
            return [
                _failed(
                    *reach,
                    f"{base}{path} gave {what}",
                    "check that POWABASE_URL is the Powabase project URL and that Powabase is up",
                ),
                *rest(
                    _skipped(*key, "not checked: Powabase did not answer properly"),
                    _skipped(*orch, "not checked: Powabase did not answer properly"),
                ),
            ]
        reached = [_ok(*reach, f"answering at {base}"), key_unset or _ok(*key, "accepted")]
        if not orch_id:
            return [*reached, orch_unset or _skipped(*orch, "not checked")]
        return [*reached, await _entities_check(http, orch_id, response.json(), step_seconds)]


def _is_json_object(response: httpx.Response) -> bool:
    try:
        return isinstance(response.json(), dict)
    except ValueError:
        return False


def _content_type(response: httpx.Response) -> str:
    content_type: str = response.headers.get("content-type", "no content type")
    return content_type.split(";")[0]


async def _entities_check(
    http: httpx.AsyncClient, orch_id: str, orchestration: dict[str, Any], step_seconds: float
) -> Check:
    """The orchestration found: how many entities (agents) it has; none is a failure."""
    name, label = "powabase_orchestration", "orchestration"
    title = f"{orchestration.get('name') or orch_id} ({orch_id})"
    path = f"/api/orchestrations/{quote(orch_id, safe='')}/entities"
    try:
        async with asyncio.timeout(step_seconds):
            response = await http.get(path)
        response.raise_for_status()
        body = response.json()
    except (httpx.HTTPError, TimeoutError, ValueError) as exc:
        return _failed(
            name,
            label,
            f"{title} found, but listing its entities failed: {_failure_text(exc)}",
            "check that Powabase is up; run `powabot doctor` again",
        )
    entities = body.get("entities") if isinstance(body, dict) else None
    if not isinstance(entities, list):
        return _failed(
            name,
            label,
            f"{title} found, but {path} did not list entities",
            "check that POWABASE_URL is the Powabase project URL",
        )
    if not entities:
        return _failed(
            name,
            label,
            f"{title} has no entities: no agent would answer",
            "run `powabot provision` to add the support team's agents to it",
        )
    count = len(entities)
    return _ok(name, label, f"{title} with {count} entit{'y' if count == 1 else 'ies'}")


# --- the store -------------------------------------------------------------------------------

STORE_CHECK = ("store_reachable", "store")
MIGRATIONS_CHECK = ("store_migrated", "migrations")
BUDGET_CHECK = ("budget_table", "budget table")


def _store_location(settings: Settings) -> str:
    """Where the store lives, without credentials."""
    store_url = settings.POWABOT_STORE
    if settings.SUPABASE_URL and settings.SUPABASE_SERVICE_ROLE_KEY:
        return str(settings.SUPABASE_URL).rstrip("/")
    if store_url.startswith(("postgres://", "postgresql://")):
        return PostgresStore(store_url).target
    return store_url


async def check_store(settings: Settings, *, step_seconds: float = CHECK_TIMEOUT) -> list[Check]:
    """The store reachable, migrated, and (Postgres, Supabase) the shared budget table there."""
    try:
        store = make_store(settings)
    except StoreError as exc:
        return [
            _failed(
                *STORE_CHECK, str(exc), "set POWABOT_STORE to sqlite:///path.db or postgresql://…"
            ),
            _skipped(*MIGRATIONS_CHECK, "not checked: no store"),
            _skipped(*BUDGET_CHECK, "not checked: no store"),
        ]
    where = f"{store.backend} at {_store_location(settings)}"
    try:
        return await _store_checks(store, where, step_seconds)
    finally:
        await store.close()


async def _store_checks(store: SessionStore, where: str, step_seconds: float) -> list[Check]:
    unreachable_fix = (
        "check POWABOT_STORE (or SUPABASE_URL / SUPABASE_SERVICE_ROLE_KEY) and that the database"
        " is up and reachable from this host"
    )
    try:
        async with asyncio.timeout(step_seconds):
            await store.open()
            health = await store.health()
    except (StoreError, TimeoutError) as exc:
        reason = _failure_text(exc) if isinstance(exc, TimeoutError) else str(exc)
        return [
            _failed(*STORE_CHECK, f"{where} unreachable: {reason}", unreachable_fix),
            _skipped(*MIGRATIONS_CHECK, "not checked: store unreachable"),
            _skipped(*BUDGET_CHECK, "not checked: store unreachable"),
        ]
    if not health.reachable:
        return [
            _failed(*STORE_CHECK, f"{where} unreachable: {health.detail}", unreachable_fix),
            _skipped(*MIGRATIONS_CHECK, "not checked: store unreachable"),
            _skipped(*BUDGET_CHECK, "not checked: store unreachable"),
        ]
    checks = [_ok(*STORE_CHECK, f"{where} reachable")]
    if health.migrated:
        checks.append(_ok(*MIGRATIONS_CHECK, "every table and column the bot needs is there"))
    elif store.backend == "sqlite":
        checks.append(
            _failed(
                *MIGRATIONS_CHECK,
                f"not migrated: {health.detail}",
                "point POWABOT_STORE at a new file: powabot creates its SQLite tables itself",
            )
        )
    else:
        checks.append(
            _failed(
                *MIGRATIONS_CHECK,
                f"not migrated: {health.detail}",
                "apply sql/0*.sql with psql, in order (each file is safe to re-run)",
            )
        )
    checks.append(await _budget_check(store, step_seconds))
    return checks


async def _budget_check(store: SessionStore, step_seconds: float) -> Check:
    name, label = BUDGET_CHECK
    if not isinstance(store, PostgresStore | SupabaseStore):
        return _skipped(name, label, "not applicable (SQLite: in-process budget)")
    try:
        async with asyncio.timeout(step_seconds):
            present = await store.has_table(BUDGET_TABLE)
    except (StoreError, TimeoutError) as exc:
        reason = _failure_text(exc) if isinstance(exc, TimeoutError) else str(exc)
        return _failed(
            name, label, f"could not look for public.{BUDGET_TABLE}: {reason}", "run doctor again"
        )
    if not present:
        return _failed(
            name,
            label,
            f"public.{BUDGET_TABLE} is missing: replicas cannot share one Slack budget",
            "apply sql/008_slack_budget.sql (or every sql/0*.sql, in order) with psql",
        )
    return _ok(name, label, f"public.{BUDGET_TABLE} present: replicas share one Slack budget")


# --- running it ------------------------------------------------------------------------------


async def run_doctor(settings: Settings, *, step_seconds: float = CHECK_TIMEOUT) -> DoctorReport:
    """Run every check (Slack, Powabase and the store at once); never raises for a failed one."""
    slack, powabase, store = await asyncio.gather(
        check_slack(settings, step_seconds=step_seconds),
        check_powabase(settings, step_seconds=step_seconds),
        check_store(settings, step_seconds=step_seconds),
    )
    mode: Literal["socket", "http"] = "socket" if settings.socket_mode else "http"
    return DoctorReport(mode, _scrubbed([*slack, *powabase, *store], settings))


def main(output: Literal["text", "json"] = "text") -> int:
    """`powabot doctor [--output json]`: the report on stdout, the exit code returned."""
    from bot.logs import configure_logging
    from bot.settings import load_settings

    try:
        settings = load_settings("doctor")
    except ConfigError as exc:
        print(f"powabot: {exc}", file=sys.stderr)
        if output == "json":
            payload = {"ok": False, "exit_code": CONFIG, "configuration_errors": exc.problems}
            print(json.dumps(payload, indent=2))
        return CONFIG
    # Logs go to stderr (stdout holds the report), secrets redacted; only warnings and up.
    level = "debug" if settings.LOG_LEVEL == "debug" else "warning"
    configure_logging(settings.LOG_FORMAT, level, secrets=secret_values(settings))
    report = asyncio.run(run_doctor(settings))
    if output == "json":
        print(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
    else:
        print("\n".join(report.lines()))
    return report.exit_code
